"""Training the paper's way (P §5): PaperSGD, batch 128, the lr/10-on-plateau schedule,
centre-crop validation every epoch, the ten-view test at the end, exact resume. The trainer's
state, and the checkpoint that saves and restores it, live here alone; the files of a run are
those of :mod:`alexnet2012.runfolder`."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet2012 import checkpoint as checkpoints
from alexnet2012 import devices, distributed, paper, preempt
from alexnet2012.config import TrainConfig, build_model, build_optimizer, build_schedule
from alexnet2012.data import EvalStreams, TrainStream, cache_info
from alexnet2012.data.stats import load_stats
from alexnet2012.evaluate import evaluate
from alexnet2012.losswatch import LossWatch
from alexnet2012.progress import Progress
from alexnet2012.resume import check_same_data, resumed_config
from alexnet2012.runfolder import CHECKPOINT, DROPS, RESULTS, RunFolder, epoch_of
from alexnet2012.schedule import Decision
from alexnet2012.step import TrainStep

NEW_EPOCH = {"loss": 0.0, "steps": 0, "seconds": 0.0}  # the epoch so far: nothing yet


class Trainer:
    """One training run in its folder: fresh, or resumed from its checkpoint. Under torchrun,
    one replica of it (``world``); replica 0 alone writes the folder and talks."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        checkpoint: dict[str, Any] | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        world: distributed.World | None = None,
    ):
        self.world = world = world or distributed.environment()
        if not world.main:
            progress, log = False, lambda line: None
        self.config, self.progress, self.log = config, progress, log
        config.replicas = world.size
        self.folder = RunFolder(config.out)
        self.cache = cache_info(config.cache)
        if checkpoint is not None:  # before the checks of settings against the data
            check_same_data(checkpoint, self.folder, config.cache, self.cache)
        config.check(self.cache)
        self.dev = torch.device(config.devices[0])
        self.backends = devices.configure_backends(config.devices, config.tf32)
        if checkpoint is None and world.main:
            self.folder.check_new(config)
        distributed.start(world, devices.any_cuda(config.devices))
        if world.size > 1 and self.dev.type == "cuda":
            torch.cuda.set_device(self.dev)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.cache.num_classes)
        if world.size > 1:  # the same initial weights, each replica's own dropout masks
            torch.manual_seed(distributed.rank_seed(config.seed, world.rank))
        self.optimizer = build_optimizer(config, self.model)
        self.step = TrainStep(
            distributed.wrap(self.model, config.devices),
            self.optimizer,
            accumulate=config.accumulate,
            bf16=config.bf16,
            compile=config.compile,
        )
        self._train: TrainStream | None = None  # the loaders of run(), made there
        self._evals: EvalStreams | None = None
        self.schedule = build_schedule(config)
        if world.main:
            self.folder.remove_leftovers(self.log)
            self.folder.check_room(self.checkpoint_bytes(), resumed=checkpoint is not None)
        if checkpoint is None and world.main:
            self.folder.start(config, self.cache, self.backends, self.log)
        self.epoch, self.batch, self.elapsed = 1, 0, 0.0
        self.partial = dict(NEW_EPOCH)
        self.drop_log: list[dict[str, Any]] = []
        self.finished, self.stop_reason = False, ""
        if checkpoint is not None:
            self._restore(checkpoint)

    @classmethod
    def resume(
        cls,
        out: str,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
        **overrides: Any,
    ) -> Trainer:
        """The run in ``out``, from its checkpoint (:func:`alexnet2012.resume.resumed_config`)."""
        config, checkpoint, changed = resumed_config(out, overrides)
        saved = config.replicas
        run = cls(config, checkpoint=checkpoint, progress=progress, log=log)
        changed |= saved != run.world.size or run.folder.recorded("backends") != run.backends
        if checkpoint is not None and changed and run.world.main:
            run.folder.write_config(config, run.cache, run.backends)  # the report reads them
        return run

    def checkpoint_bytes(self) -> int:
        """This run's checkpoint size: the weights and PaperSGD's velocity (one per weight), plus
        a margin for the counters, RNG states, settings and zip records."""
        return 2 * checkpoints.storage_bytes(self.model.state_dict()) + checkpoints.MARGIN

    def save(self) -> None:
        """Write the checkpoint: everything needed to continue exactly from here (replica 0
        writes the weights once and every replica's RNG state), and the class names and mean
        image (RGB, [0,1]) with which it alone classifies an image (``scripts/classify.py``)."""
        rngs = distributed.gather(checkpoints.rng_state())
        if not self.world.main:
            return
        mean = load_stats(Path(self.config.cache)).mean_image
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "elapsed_s": self.elapsed,
            "partial": dict(self.partial),
            "drop_log": list(self.drop_log),
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "rng": rngs[0],
            "config": asdict(self.config),
            "num_classes": self.cache.num_classes,
            "wnids": self.cache.wnids,
            "class_names": [list(n) for n in self.cache.class_names],
            "mean_image": torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)),
            **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
        }
        checkpoints.save_checkpoint(self.folder / CHECKPOINT, state)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Go on where :meth:`save` left ``ckpt``. With as many replicas, exactly; with another
        number, the same images from there on but new dropout seeds (the report says so)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.epoch, self.batch, self.elapsed = ckpt["epoch"], ckpt["batch"], ckpt["elapsed_s"]
        self.partial, self.drop_log = ckpt["partial"], ckpt["drop_log"]
        self.finished, self.stop_reason = ckpt["finished"], ckpt["stop_reason"]
        rank, size, saved = self.world.rank, self.world.size, ckpt["config"].get("replicas", 1)
        checkpoints.set_rng_state(ckpt["rng_ranks"][rank] if size == saved > 1 else ckpt["rng"])
        if size != saved:
            torch.manual_seed(distributed.rank_seed(self.config.seed, rank, self.epoch, self.batch))
            self.config.deviations.append(
                f"resumed at epoch {self.epoch}, batch {self.batch} on {size} "
                f"replica{'s' if size > 1 else ''} instead of {saved}: the same images in the "
                "same order, other dropout masks than a run never interrupted"
            )
        lines = self.folder.metric_lines()
        kept = [line for line in lines if epoch_of(line) < self.epoch]
        if kept != lines and self.world.main:  # drop epochs logged after this checkpoint
            self.folder.write_metrics(kept)
        where = "finished" if self.finished else f"epoch {self.epoch}, batch {self.batch}"
        self.log(f"resumed from {self.folder / CHECKPOINT} ({where})")

    def run(self) -> dict[str, Any]:
        """Train until the schedule stops or the epoch limit, then test; returns the results.
        An epoch: its batches, one SGD step each (the losses checked every 20 batches; a
        checkpoint every ``checkpoint_minutes``, or on a signal, to stop), validation, the
        schedule's decision, a checkpoint."""
        c, images = self.config, self.config.batch_size
        if not self.finished:
            self._open_train_stream()
        self._evals = EvalStreams(
            c.cache,
            crop=c.input_size,
            workers=c.workers,
            device=str(self.dev),
            shard=self.world.shard,
        )
        preempt.defer(True)  # a signal: the replicas stop together at a batch, saved
        try:
            while not self.finished:
                lr, lighting = self.schedule.lr, self._lighting()
                batches = self._train.epoch(self.epoch, self.batch)
                total = len(batches) + self.batch
                replay = functools.partial(self._train.epoch, self.epoch)  # a bad step's inputs
                watch = LossWatch(replay, self.partial["loss"], self.partial["steps"])
                desc = f"epoch {self.epoch}/{c.epochs}"
                with Progress(
                    desc, total * images, initial=self.batch * images, enabled=self.progress
                ) as bar:
                    last_save, started = time.monotonic(), time.perf_counter()
                    self.model.train()
                    for x, y in batches:
                        watch.add(self.batch, self.step(x, y))
                        self.batch += 1
                        bar.update(images)
                        due = time.monotonic() - last_save >= 60 * c.checkpoint_minutes
                        # one agreement: all replicas save, or stop on a signal, after one batch
                        flags = distributed.agree(float(due), float(preempt.requested()))
                        due, stop = (f > 0 for f in flags)
                        save = (due or stop) and self.batch < total  # else after validation
                        if save or self.batch % 20 == 0 or self.batch == total:
                            recent = distributed.check_losses(watch, self.epoch)
                            bar.postfix(f"loss={recent:.3f}, lr={lr:g}")
                        if save:
                            started = self._keep_position(watch, started)
                            self.save()
                            last_save = time.monotonic()
                            if stop:
                                preempt.stop_at(f"epoch {self.epoch}, batch {self.batch}")
                    distributed.check_losses(watch, self.epoch)
                    self._keep_position(watch, started)
                val = self.validate()
                decision = self.schedule.step(self.epoch, val["top1"])
                self._record_epoch(lr, val, decision)
                for group in self.optimizer.param_groups:
                    group["lr"] = decision.lr_for(group)
                if decision.stop:
                    self.finished, self.stop_reason = True, decision.reason
                    self.log(f"training stops: {decision.reason}")
                self.epoch, self.batch, self.partial = self.epoch + 1, 0, dict(NEW_EPOCH)
                self.save()
                preempt.stop_if_agreed(f"the end of epoch {self.epoch - 1}")  # all stop, or none
                if not self.finished and self._lighting() != lighting:  # e.g. [C]'s epoch 67
                    self.log(f"lighting noise from epoch {self.epoch}: {self._lighting()}")
                    self._open_train_stream()
            if self._train is not None:
                self._train.close()  # its workers are not needed for the test
            return self.test()
        finally:
            for loaders in (self._train, self._evals):
                if loaders is not None:
                    loaders.close()
            self._train = self._evals = None

    def _keep_position(self, watch: LossWatch, started: float) -> float:
        """Add the time since ``started`` (the devices' work done) and the epoch's losses so far
        to the run's position, as a checkpoint keeps it; returns the time now."""
        devices.synchronize(self.config.devices)
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        self.partial = {
            "loss": distributed.mean(watch.total),  # the same on every replica
            "steps": watch.steps,
            "seconds": self.partial["seconds"] + seconds,
        }
        return time.perf_counter()

    def _record_epoch(self, lr: float, val: dict[str, float], decision: Decision) -> None:
        """The epoch trained at ``lr`` in the log, metrics.jsonl and (an lr drop) drops.json."""
        steps, seconds = self.partial["steps"], self.partial["seconds"]
        line = {
            "epoch": self.epoch,
            "lr": lr,
            "train_loss": self.partial["loss"] / max(1, steps),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": steps * self.config.batch_size / max(seconds, 1e-9),
            "epoch_time_s": seconds,
            "elapsed_s": self.elapsed,
        }
        self.log(
            f"epoch {self.epoch}: train loss {line['train_loss']:.4f}, val top-1 "
            f"{100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}%, "
            f"{line['images_per_s']:.1f} img/s"
        )
        if decision.dropped:
            self.drop_log.append(
                {
                    "epoch": self.epoch + 1,
                    "old_lr": lr,
                    "new_lr": decision.lr,
                    "val_error": val["top1"],
                    "reason": decision.reason,
                }
            )
            self.log(f"lr drop: {decision.reason}")
        if self.world.main:
            self.folder.write_metrics(self.folder.metric_lines() + [json.dumps(line)])
            self.folder.write_json(DROPS, self.drop_log)

    def _lighting(self) -> str:  # the coming epoch's: the run's, unless the recipe turned it off
        return self.config.lighting if self.schedule.colour_noise else "none"

    def _open_train_stream(self) -> None:
        """Loader workers for the epochs from here on, with the coming epoch's lighting."""
        if self._train is not None:
            self._train.close()
        c = self.config
        self._train = TrainStream(
            c.cache,
            batch_size=c.batch_size,
            crop=c.input_size,
            seed=c.seed,
            start_epoch=self.epoch,
            start_batch=self.batch,
            workers=c.workers,
            device=str(self.dev),
            lighting=self._lighting(),
            last_epoch=c.epochs,
            shard=self.world.shard,
            crop_chunk=paper.RECIPES[c.recipe].crop_chunk,
        )

    def validate(self, views: int = 1, split: str = "val") -> dict[str, float]:
        """Top-1/top-5 error on ``split`` from ``views`` (1 or 10) views; ten-view batches hold
        a tenth of the images, so that the network sees the same batch size."""
        batch_size = max(1, self.config.eval_batch_size // views)
        batches = self._evals.batches(split, batch_size=batch_size, views=views)  # by run()
        return evaluate(
            self.model,
            batches,
            progress=self.progress,
            desc=f"{'10-view' if views == 10 else 'centre'} eval",
            reduce=distributed.all_sum if self.world.size > 1 else None,
        )

    def test(self) -> dict[str, Any]:
        """The final centre-crop and (unless disabled) ten-view errors, into results.json."""
        preempt.defer(False)  # the run is saved: a signal stops the test at once
        split = self.config.test_split
        results: dict[str, Any] = {"split": split, "center": self.validate(1, split)}
        if self.config.ten_view:
            results["ten_view"] = self.validate(10, split)
        results.update(
            wall_time_s=self.elapsed,
            epochs_trained=self.epoch - 1,
            stopped_because=self.stop_reason,
        )
        if self.world.main:
            self.folder.write_json(RESULTS, results)
        return results
