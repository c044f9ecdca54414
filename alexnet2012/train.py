"""Training the paper's way (P §5): PaperSGD, batch 128, the lr/10-on-plateau schedule,
centre-crop validation every epoch, the ten-view test at the end, exact resume. The files of a
run are those of :mod:`alexnet2012.runfolder`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from alexnet2012 import checkpoint as checkpoints
from alexnet2012 import devices, distributed, paper, preempt
from alexnet2012.config import TrainConfig, build_model, build_optimizer, build_schedule, deviations
from alexnet2012.data import EvalStreams, TrainStream, cache_info
from alexnet2012.evaluate import evaluate
from alexnet2012.losswatch import LossWatch
from alexnet2012.progress import Progress
from alexnet2012.resume import check_same_data, checkpoint_state, restore, resumed_config
from alexnet2012.runfolder import CHECKPOINT, CONFIG, DROPS, METRICS, RESULTS, RunFolder
from alexnet2012.step import TrainStep


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
        self.dir = self.folder.path
        self.cache = info = cache_info(config.cache)
        self.num_classes, self.wnids = info.num_classes, info.wnids
        self.train_images, self.val_images = info.train_images, info.val_images
        if checkpoint is not None:  # before the checks of settings against the data
            check_same_data(checkpoint, self.folder, config.cache, info)
        config.check(info)
        self.dev = torch.device(config.devices[0])
        self.backends = devices.configure_backends(config.devices, config.tf32)
        if checkpoint is None and world.main:
            self.folder.check_new(config)
        distributed.start(world, devices.any_cuda(config.devices))
        if world.size > 1 and self.dev.type == "cuda":
            torch.cuda.set_device(self.dev)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.num_classes)
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
            self._start_folder()
        self.epoch, self.batch, self.elapsed = 1, 0, 0.0
        self.partial = {"loss": 0.0, "steps": 0, "seconds": 0.0}
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
        changed |= saved != run.world.size
        if checkpoint is not None and (changed or run.folder.recorded("backends") != run.backends):
            run._write_config()  # the report reads them
        return run

    def _start_folder(self) -> None:
        """Create the folder and config.json; a run that saved no checkpoint starts again."""
        self.folder.create()
        recorded = self.folder.recorded("settings")
        if recorded is not None:
            self.log(
                f"no checkpoint in {self.dir}: the run starts from the beginning"
                + (
                    " with the settings in its config.json"
                    if self.config.same_computation(recorded)
                    else ", with the settings given (its config.json had others)"
                )
            )
        for name in (METRICS, DROPS, RESULTS):  # of the epochs redone
            self.folder.remove(name)
        self._write_config()

    def checkpoint_bytes(self) -> int:
        """This run's checkpoint size: the weights and PaperSGD's velocity (one per weight), plus
        a margin for the counters, RNG states, settings and zip records."""
        return 2 * checkpoints.storage_bytes(self.model.state_dict()) + checkpoints.MARGIN

    def _write_config(self) -> None:
        """config.json: the settings, devices, data and deviations the report shows."""
        if not self.world.main:
            return
        self.folder.write_json(
            CONFIG,
            {
                "settings": asdict(self.config),
                "device_names": [devices.name(d) for d in self.config.devices],
                "torch": torch.__version__,
                "backends": self.backends,
                "dataset": self.config.dataset,
                "num_classes": self.num_classes,
                "train_images": self.train_images,
                "val_images": self.val_images,
                "demo": self.config.dataset.startswith("synthetic"),
                "deviations": deviations(self.config, self.num_classes, self.cache),
                "subset": self.cache.subset,
                "classes": self.wnids if self.cache.subset else None,
            },
        )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        restore(self, ckpt)
        where = "finished" if self.finished else f"epoch {self.epoch}, batch {self.batch}"
        self.log(f"resumed from {self.folder / CHECKPOINT} ({where})")

    def save(self) -> None:
        """Write the checkpoint: everything needed to continue exactly from here (replica 0
        writes the weights once and every replica's RNG state)."""
        rngs = distributed.gather(checkpoints.rng_state())
        if self.world.main:
            checkpoints.save_checkpoint(self.folder / CHECKPOINT, checkpoint_state(self, rngs))

    def train_epoch(self) -> float:
        """Train the current epoch from ``self.batch`` on; returns its mean training loss."""
        c = self.config
        loader = self._train.epoch(self.epoch, self.batch)  # made by run()
        total = len(loader) + self.batch
        watch = LossWatch(replay=lambda batch: self._train.epoch(self.epoch, batch))
        watch.total, watch.steps = self.partial["loss"], self.partial["steps"]
        lr = self.schedule.lr
        images = c.batch_size
        with Progress(
            f"epoch {self.epoch}/{c.epochs}", total * images, initial=self.batch * images,
            enabled=self.progress,
        ) as bar:  # fmt: skip
            last_save = time.monotonic()
            started = time.perf_counter()
            self.model.train()
            for x, y in loader:
                watch.add(self.batch, self.step(x, y))
                self.batch += 1
                bar.update(images)
                due = time.monotonic() - last_save >= 60 * c.checkpoint_minutes
                # one agreement: all replicas save, or stop on a signal, after the same batch
                due, stop = (
                    f > 0 for f in distributed.agree(float(due), float(preempt.requested()))
                )
                due |= stop and self.batch < total  # at the epoch's end, it saves after validation
                if due or self.batch % 20 == 0 or self.batch == total:
                    recent = distributed.check_losses(watch, self.epoch)
                    bar.postfix(f"loss={recent:.3f}, lr={lr:g}")
                if due and self.batch < total:
                    devices.synchronize(self.config.devices)
                    seconds = time.perf_counter() - started
                    self.partial = {
                        "loss": distributed.mean(watch.total),  # the same on every replica
                        "steps": watch.steps,
                        "seconds": self.partial["seconds"] + seconds,
                    }
                    self.elapsed += seconds
                    started = time.perf_counter()
                    self.save()
                    last_save = time.monotonic()
                    if stop:
                        preempt.stop_at(f"epoch {self.epoch}, batch {self.batch}")
            distributed.check_losses(watch, self.epoch)
            devices.synchronize(self.config.devices)
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        self.partial["seconds"] += seconds
        self.partial.update(loss=distributed.mean(watch.total), steps=watch.steps)
        return self.partial["loss"] / max(1, watch.steps)

    def validate(self, views: int = 1, split: str = "val") -> dict[str, float]:
        """Top-1/top-5 error on ``split`` from ``views`` (1 or 10) views; ten-view batches hold
        a tenth of the images, so that the network sees the same batch size."""
        c = self.config
        batch_size = max(1, c.eval_batch_size // views)
        batches = self._evals.batches(split, batch_size=batch_size, views=views)  # by run()
        return evaluate(
            self.model,
            batches,
            progress=self.progress,
            desc=f"{'10-view' if views == 10 else 'centre'} eval",
            reduce=distributed.all_sum if self.world.size > 1 else None,
        )

    def run(self) -> dict[str, Any]:
        """Train until the schedule stops or the epoch limit, then test; returns the results."""
        c = self.config
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
            return self._run()
        finally:
            for loaders in (self._train, self._evals):
                if loaders is not None:
                    loaders.close()
            self._train = self._evals = None

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

    def _run(self) -> dict[str, Any]:
        c = self.config
        while not self.finished:
            train_loss = self.train_epoch()
            val = self.validate()
            images = self.partial["steps"] * c.batch_size
            line = {
                "epoch": self.epoch,
                "lr": self.schedule.lr,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "images_per_s": images / max(self.partial["seconds"], 1e-9),
                "epoch_time_s": self.partial["seconds"],
                "elapsed_s": self.elapsed,
            }
            self.log(
                f"epoch {self.epoch}: train loss {train_loss:.4f}, val top-1 "
                f"{100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}%, "
                f"{line['images_per_s']:.1f} img/s"
            )
            lighting = self._lighting()
            decision = self.schedule.step(self.epoch, val["top1"])
            if decision.dropped:
                self.drop_log.append(
                    {
                        "epoch": self.epoch + 1,
                        "old_lr": line["lr"],
                        "new_lr": decision.lr,
                        "val_error": val["top1"],
                        "reason": decision.reason,
                    }
                )
                self.log(f"lr drop: {decision.reason}")
            for group in self.optimizer.param_groups:
                group["lr"] = decision.lr_for(group)
            if self.world.main:
                self.folder.write_metrics(self.folder.metric_lines() + [json.dumps(line)])
                self.folder.write_json(DROPS, self.drop_log)
            self.finished = decision.stop
            if decision.stop:
                self.stop_reason = decision.reason
                self.log(f"training stops: {decision.reason}")
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = {"loss": 0.0, "steps": 0, "seconds": 0.0}
            self.save()
            preempt.stop_if_agreed(f"the end of epoch {self.epoch - 1}")  # all stop, or none
            if not self.finished and self._lighting() != lighting:  # e.g. [C]'s epoch 67
                self.log(f"lighting noise from epoch {self.epoch}: {self._lighting()}")
                self._open_train_stream()
        if self._train is not None:
            self._train.close()  # its workers are not needed for the test
        return self.test()

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
