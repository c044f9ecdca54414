"""Training the paper's way (P §5): PaperSGD, batch 128, the lr/10-on-plateau schedule,
centre-crop validation every epoch, the ten-view test at the end, exact resume.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``drops.json``,
``results.json``, ``checkpoint.pt`` (the latest; written at the end of every epoch and every
``checkpoint_minutes``), and the report written by :mod:`alexnet2012.report`. Every file is
written atomically (:mod:`alexnet2012.checkpoint`), so a kill or a full disk leaves the previous
version whole; the temporary files a kill leaves are the run's own, removed when it starts or
resumes, and a folder whose run saved no checkpoint starts that run from the beginning.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from alexnet2012 import paper
from alexnet2012.checkpoint import (
    MARGIN,
    free_space,
    is_temporary,
    load_checkpoint,
    pause_for_test,
    rng_state,
    save_checkpoint,
    set_rng_state,
    size_text,
    storage_bytes,
    write_file,
)
from alexnet2012.data import EvalStreams, TrainStream, cache_info, eval_loader, train_loader
from alexnet2012.data.augment import check_crop
from alexnet2012.devices import configure_backends
from alexnet2012.devices import parse as parse_devices
from alexnet2012.errors import UsageError, foreign_files
from alexnet2012.evaluate import evaluate
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD
from alexnet2012.schedule import PaperSchedule
from alexnet2012.step import TrainStep

CHECKPOINT = "checkpoint.pt"
RUN_FILES = (
    "metrics.jsonl",
    CHECKPOINT,
    "results.json",
)  # config.json alone: a run that never started
OWN_FILES = (
    "config.json",
    "metrics.jsonl",
    "drops.json",
    CHECKPOINT,
    "results.json",
    "report.md",
    "curves.png",
)  # what a run writes, each through a temporary file beside it
# settings that do not change what a run computes (those --resume may change) or that follow
# from its data: two runs that differ only in these are the same run
NOT_COMPUTATION = (
    "out",
    "cache",
    "devices",
    "workers",
    "epochs",
    "checkpoint_minutes",
    "dataset",
    "test_split",
    "deviations",
)


@dataclass
class TrainConfig:
    """Everything that defines a run; the defaults are the paper's (P §5, PAPER_NOTES)."""

    cache: str
    out: str
    devices: tuple[str, ...] = ("cpu",)
    input_size: int = paper.CROP_SIZE
    batch_size: int = paper.BATCH_SIZE
    accumulate: int = 1  # split each batch into this many chunks (same gradient, less memory)
    eval_batch_size: int = paper.BATCH_SIZE
    epochs: int = paper.EPOCHS
    seed: int = 0
    workers: int = 4
    columns: int = paper.COLUMNS
    lrn: bool = True
    overlapping_pool: bool = True
    lighting: str = "paper"
    tf32: bool = True  # on CUDA: TF32 products (cuda_backends); False: fp32 as in 2012
    bf16: bool = False  # bf16 autocast (the LRN in float32 inside it)
    compile: bool = False  # torch.compile the training step (step.TrainStep)
    lr: float = paper.LEARNING_RATE
    lr_drops: tuple[int, ...] | None = None  # e.g. (25, 51, 79): [C]'s run, no plateau rule
    patience: int = 5
    threshold: float = 0.001
    ten_view: bool = True
    checkpoint_minutes: float = 30.0
    dataset: str = "ILSVRC-2012 val"
    test_split: str = "val"  # the final test: "test" for ILSVRC-2010 (P Table 1), else "val"
    deviations: list[str] = field(default_factory=list)  # extra notes, e.g. from the demo

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in d.items() if k in known})
        config.tf32 = d.get("tf32", False)  # runs from before the setting: fp32 products
        config.devices = tuple(config.devices)
        config.lr_drops = None if config.lr_drops is None else tuple(config.lr_drops)
        return config


def check_devices(devices: tuple[str, ...], columns: int) -> None:
    """One or two existing devices (one per column); a one-column net takes one."""
    if not devices:
        raise UsageError("--devices takes one or two devices, got 0")
    parse_devices(devices, columns)


def check_config(config: TrainConfig, train_images: int | None = None) -> None:
    """Refuse settings that cannot run, with one line each (the batch against the training set
    only when ``train_images`` is given)."""
    check_devices(config.devices, config.columns)
    check_crop(config.input_size)
    for name, value in (
        ("--batch-size", config.batch_size),
        ("--accumulate", config.accumulate),
        ("eval_batch_size", config.eval_batch_size),
    ):
        if value < 1:
            raise UsageError(f"{name} must be positive, got {value}")
    if config.batch_size % config.accumulate:
        raise UsageError(
            f"--batch-size {config.batch_size} is not divisible by --accumulate "
            f"{config.accumulate}: each chunk must hold the same number of images"
        )
    if train_images is not None and config.batch_size > train_images:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the training set "
            f"({train_images} images): no full batch to train on"
        )
    if config.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {config.epochs}")
    if not 0 <= config.seed < 2**63:
        raise UsageError(f"--seed must be from 0 to 2**63-1, got {config.seed}")
    if config.workers < 0:
        raise UsageError(
            f"--workers must be 0 (load in this process) or more, got {config.workers}"
        )
    if not config.lr > 0:
        raise UsageError(f"--lr must be positive, got {config.lr}")
    drops = config.lr_drops or ()
    if any(b <= a for a, b in zip(drops, drops[1:])) or any(
        not 2 <= e <= config.epochs for e in drops
    ):
        raise UsageError(
            f"--lr-drops must be increasing epochs from 2 to --epochs "
            f"({config.epochs}), got {','.join(map(str, drops))}"
        )
    if config.patience < 1:
        raise UsageError(f"--patience must be at least 1 epoch, got {config.patience}")
    if not config.threshold >= 0:
        raise UsageError(f"--threshold must be 0 or more, got {config.threshold}")
    if not config.checkpoint_minutes >= 0:
        raise UsageError(
            f"--checkpoint-minutes must be 0 (a checkpoint after every batch) or "
            f"more, got {config.checkpoint_minutes}"
        )
    build_schedule(config)  # anything the checks above missed


def build_model(config: TrainConfig, num_classes: int) -> AlexNet:
    """The network placed as ``config.devices`` says: one device, or one column per device."""
    kwargs = dict(
        input_size=config.input_size,
        columns=config.columns,
        lrn=config.lrn,
        overlapping_pool=config.overlapping_pool,
    )
    if len(config.devices) == 1:
        return AlexNet(num_classes, **kwargs).to(config.devices[0])
    return AlexNet(num_classes, devices=config.devices, **kwargs)


def build_schedule(config: TrainConfig) -> PaperSchedule:
    """The plateau rule, or the fixed drop epochs when ``config.lr_drops`` is set."""
    return PaperSchedule(
        lr=config.lr,
        patience=config.patience,
        threshold=config.threshold,
        max_epochs=config.epochs,
        drop_epochs=config.lr_drops,
    )


def deviations(config: TrainConfig, num_classes: int) -> list[str]:
    """How a run differs from the paper's, in words for the report."""
    out = list(config.deviations)
    if num_classes != paper.NUM_CLASSES:
        out.append(
            f"{num_classes} classes instead of {paper.NUM_CLASSES}: chance is "
            f"{100 * (1 - 1 / num_classes):.1f}% top-1 error"
        )
    if config.batch_size != paper.BATCH_SIZE:
        out.append(f"batch {config.batch_size} instead of {paper.BATCH_SIZE}")
    if config.epochs != paper.EPOCHS:
        out.append(
            f"at most {config.epochs} epoch{'' if config.epochs == 1 else 's'} instead "
            f"of about {paper.EPOCHS}"
        )
    if config.lr_drops == ():
        out.append(
            "lr never divided (no fixed drop within the epochs) instead of on validation plateaus"
        )
    elif config.lr_drops is not None:
        which = " (the 2012 code's run)" if tuple(config.lr_drops) == paper.DROP_EPOCHS_2012 else ""
        out.append(
            f"lr divided by 10 at fixed epochs {list(config.lr_drops)}{which} instead of "
            "on validation plateaus"
        )
    if config.input_size != paper.CROP_SIZE:
        out.append(f"{config.input_size}x{config.input_size} crops (Caffe's) instead of 224x224")
    if config.lighting != "paper":
        out.append(f"lighting noise: {config.lighting} (the paper's formula on [0,1] is 'paper')")
    if config.columns != paper.COLUMNS:
        out.append("one column (the paper's one-GPU comparison net, P §3.2)")
    if not config.lrn:
        out.append("no local response normalization (ablation, P §3.3)")
    if not config.overlapping_pool:
        out.append("non-overlapping 2x2 pooling (ablation, P §3.4)")
    if config.bf16:
        out.append(
            "bf16 autocast (products with 8-bit mantissas, the LRN in float32) instead of "
            "the fp32 of 2012's GPUs"
        )
    if config.tf32 and any(torch.device(d).type == "cuda" for d in config.devices):
        out.append(
            "TF32 products on CUDA (10-bit mantissa inputs) instead of the fp32 of 2012's "
            "GPUs; --no-tf32 computes in fp32"
        )
    return out


def device_names(devices: tuple[str, ...]) -> list[str]:
    """Human-readable names of the devices, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    names = []
    for d in devices:
        device = torch.device(d)
        if device.type == "cuda":
            names.append(f"{d} ({torch.cuda.get_device_name(device)})")
        else:
            names.append(
                f"{d} ({platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores, {torch.get_num_threads()} threads)"
            )
    return names


def _check_resumed_cache(config: TrainConfig, moved: bool) -> None:
    """The cache a resumed run is to read must be there (``moved``: given anew, and prepared);
    :meth:`Run._check_same_data` then compares what it holds with the run's data."""
    if not moved:
        if not Path(config.cache).exists():
            raise UsageError(
                f"--resume: the run's data cache {config.cache} is gone; if it "
                "moved, give its new place with --data"
            )
    elif not (Path(config.cache) / "stats.json").exists():
        raise UsageError(
            f"--resume: {config.cache} is not a prepared cache; --data must give the "
            "run's cache, or the ImageNet root whose cache is --cache or ROOT_cache"
        )


def _epoch_of(line: str) -> float:
    """The epoch of a metrics.jsonl line; infinity for a blank or half-written one."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class Diverged(UsageError):
    """The training loss became NaN or infinite."""


class _LossWatch:
    """Per-step losses kept on the device and checked for finiteness only now and then, so
    that no step waits for the host; :meth:`check` names the first bad step."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.total = 0.0
        self.steps = 0

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss.detach()))

    def check(self, epoch: int) -> float | None:
        """Fold pending losses into the total; raise :class:`Diverged` on a non-finite one.
        Returns the mean of the pending losses (None if there were none)."""
        if not self.pending:
            return None
        values = torch.stack([l.float() for _, l in self.pending]).cpu()
        finite = torch.isfinite(values)
        if not finite.all():
            step = self.pending[int((~finite).nonzero()[0])][0]
            raise Diverged(
                f"the training loss became {values[~finite][0].item()} at epoch "
                f"{epoch}, batch {step + 1}; stopped without saving over the last "
                "checkpoint (it holds the weights before the failing steps, so a "
                "resume repeats them: start a new run with a lower --lr)"
            )
        self.pending = []
        self.total += values.sum().item()
        self.steps += len(values)
        return values.mean().item()


def _with_overrides(
    config: TrainConfig, overrides: dict[str, Any], out: str
) -> tuple[TrainConfig, bool]:
    """A resumed run's settings with the ``overrides`` given (None: keep), in folder ``out``,
    its cache checked; and whether any setting changed."""
    changed = False
    for key, value in overrides.items():
        if value is not None:
            value = tuple(value) if key == "devices" else value
            changed |= value != getattr(config, key)
            setattr(config, key, value)
    config.out = str(out)
    _check_resumed_cache(config, moved=overrides.get("cache") is not None)
    return config, changed


def _recorded(folder: Path, key: str) -> Any:
    """What a run's config.json records under ``key`` (None if it is unreadable or has none)."""
    try:
        return json.loads((folder / "config.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def class_mismatch(checkpoint: dict[str, Any], wnids: list[str]) -> str:
    """How ``wnids`` (a cache's classes, in label order) differ from the classes the
    checkpoint's network was trained on, e.g. ``3 classes, the network's 4`` or ``the same
    number, 10, but class 0 is n01440764 here, n01443537 in the network``; "" when they do not
    (checkpoints before 2026-12 hold only the class count)."""
    trained = checkpoint["num_classes"]
    if len(wnids) != trained:
        return f"{len(wnids)} classes, the network's {trained}"
    for i, (here, there) in enumerate(zip(wnids, checkpoint.get("wnids", wnids))):
        if here != there:
            return (
                f"the same number, {trained}, but class {i} is {here} here, {there} in the network"
            )
    return ""


def leftovers(folder: Path) -> list[str]:
    """The temporary files in ``folder`` that writes of a run's files left when killed."""
    return (
        sorted(n for n in os.listdir(folder) if is_temporary(n, OWN_FILES))
        if folder.is_dir()
        else []
    )


def same_computation(recorded: Any, config: TrainConfig) -> bool:
    """Whether the settings in a run's config.json (``recorded``) compute what ``config`` does
    (all but :data:`NOT_COMPUTATION` equal)."""
    try:
        old = asdict(TrainConfig.from_dict(recorded))
    except (TypeError, ValueError, AttributeError):
        return False
    new = asdict(config)
    return all(old[k] == new[k] for k in new if k not in NOT_COMPUTATION)


def check_new_run_folder(folder: Path, config: TrainConfig) -> None:
    """A new run's folder: never over a run with a checkpoint or into a folder holding anything
    else. A run that saved no checkpoint (a config.json, epochs logged with the same settings,
    temporary files of a killed save) is this run, started again from the beginning; a
    config.json alone is a run that never trained, replaced whatever its settings."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file: give a folder for the run")
    existing = [n for n in RUN_FILES if (folder / n).exists()]
    if existing and (
        CHECKPOINT in existing or not same_computation(_recorded(folder, "settings"), config)
    ):
        raise UsageError(
            f"{folder} already holds a run ({', '.join(existing)}); use "
            "--resume to continue it or --out to start a new one"
        )
    own = (
        ("config.json", *RUN_FILES, "drops.json")
        if (folder / "config.json").exists()
        else ("config.json",)
    )
    others = foreign_files(folder, (*own, *leftovers(folder)))
    if others:
        raise UsageError(
            f"{folder} is not empty ({others}): give --out a new or empty "
            "folder, so that no file of yours is overwritten"
        )


class Run:
    """One training run in its folder: fresh or resumed from its checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        checkpoint: dict[str, Any] | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ):
        self.config, self.progress, self.log = config, progress, log
        self.dir = Path(config.out)
        info = cache_info(config.cache)
        self.num_classes, self.wnids = info.num_classes, info.wnids
        self.train_images, self.val_images = info.train_images, info.val_images
        if checkpoint is not None:  # before the checks of settings against the data
            self._check_same_data(checkpoint)
        if self.num_classes < 2:
            raise UsageError(
                f"{config.cache} holds {self.num_classes} class: classifying needs "
                "at least 2 (give data with more classes)"
            )
        check_config(config, self.train_images)
        if self.val_images == 0:
            raise UsageError(
                f"{config.cache} has no prepared validation images: prepare the val "
                "split (scripts/prepare_imagenet.py) before training"
            )
        self.dev = torch.device(config.devices[0])
        self.backends = configure_backends(config.devices, config.tf32)
        if checkpoint is None:
            check_new_run_folder(self.dir, config)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.num_classes)
        self.optimizer = PaperSGD(self.model.parameters(), lr=config.lr)
        self.step = TrainStep(
            self.model,
            self.optimizer,
            accumulate=config.accumulate,
            bf16=config.bf16,
            compile=config.compile,
        )
        self._train: TrainStream | None = None  # the loaders of run(), made there
        self._evals: EvalStreams | None = None
        self.schedule = build_schedule(config)
        self._remove_leftovers()
        self._check_room(resumed=checkpoint is not None)
        if checkpoint is None:
            self._start_folder()
        self.epoch, self.batch, self.elapsed = 1, 0, 0.0
        self.partial = {"loss": 0.0, "steps": 0, "seconds": 0.0}
        self.drop_log: list[dict[str, Any]] = []
        self.finished, self.stop_reason = False, ""
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- the run folder ---------------------------------------------------------------
    @classmethod
    def resume(
        cls,
        out: str,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
        **overrides: Any,
    ) -> Run:
        """The run in folder ``out``, from its checkpoint, or from the beginning with the
        settings in its config.json when it saved no checkpoint; ``overrides`` may change
        settings that do not alter the computation (devices, workers, epochs,
        checkpoint_minutes, and cache: the same prepared data, moved)."""
        folder, path = Path(out), Path(out) / CHECKPOINT
        dead_end = f"start a new run with another --out, or delete {out} and start again"
        settings = _recorded(folder, "settings")
        if not path.exists():
            if settings is None:
                if any((folder / name).exists() for name in RUN_FILES):  # and no config.json
                    raise UsageError(
                        f"--resume: no checkpoint at {path}, so the run cannot continue: {dead_end}"
                    )
                raise UsageError(f"--resume: no checkpoint at {path}; start without --resume")
            try:
                config = TrainConfig.from_dict(settings)
            except (TypeError, ValueError, AttributeError):
                raise UsageError(
                    f"--resume: no checkpoint at {path}, and {folder / 'config.json'} "
                    f"holds no settings a run can start from: {dead_end}"
                ) from None
            config, _ = _with_overrides(config, overrides, out)
            return cls(config, progress=progress, log=log)  # from the beginning (it says so)
        remedy = (
            "the run cannot continue from it: put back a good copy, or delete it and "
            "--resume starts the run again from the beginning"
            if settings is not None
            else f"the run cannot continue: {dead_end}"
        )
        checkpoint = load_checkpoint(path, remedy=remedy)
        config = TrainConfig.from_dict(checkpoint["config"])
        epochs = overrides.get("epochs")
        if checkpoint.get("finished") and epochs is not None and epochs != config.epochs:
            raise UsageError(
                f"--resume: the run in {out} has finished "
                f"({checkpoint['stop_reason']}) and cannot be extended to --epochs "
                f"{epochs}; start a new run (--out) with --epochs {epochs}"
            )
        config, changed = _with_overrides(config, overrides, out)
        run = cls(config, checkpoint=checkpoint, progress=progress, log=log)
        if changed or _recorded(Path(out), "backends") != run.backends:  # the report reads them
            run._write_config()
        return run

    def _start_folder(self) -> None:
        """Create the run folder and its config.json (see :func:`check_new_run_folder`); a run
        there that saved no checkpoint starts again: its logged epochs are dropped."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the run folder {self.dir}: {exc.strerror or exc}"
            ) from None
        recorded = _recorded(self.dir, "settings")
        if recorded is not None:
            self.log(
                f"no checkpoint in {self.dir}: the run starts from the beginning"
                + (
                    " with the settings in its config.json"
                    if same_computation(recorded, self.config)
                    else ", with the settings given (its config.json had others)"
                )
            )
        for name in ("metrics.jsonl", "drops.json", "results.json"):  # of the epochs redone
            self._remove(name)
        self._write_config()

    def _remove(self, name: str) -> None:
        """Delete the run's file ``name`` if it is there; an OS error is one line."""
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(
                f"cannot remove {self.dir / name} ({exc.strerror or exc}): fix the "
                "folder's permissions, or remove it yourself"
            ) from None

    def _remove_leftovers(self) -> None:
        """Delete the temporary files that killed writes left in the run folder, and say so."""
        names = leftovers(self.dir)
        for name in names:
            self._remove(name)
        if names:
            self.log(
                f"removed {len(names)} temporary file{'s' if len(names) > 1 else ''} left "
                f"by a killed save in {self.dir}: {', '.join(names)}"
            )

    def checkpoint_bytes(self) -> int:
        """The size of this run's checkpoint, known from the model: twice its state_dict's
        storages (the weights, and PaperSGD's velocity, one per weight) plus ``MARGIN`` (the
        counters, RNG states and settings, and the zip records)."""
        return 2 * storage_bytes(self.model.state_dict()) + MARGIN

    def _check_room(self, resumed: bool) -> None:
        """Refuse to train unless the run folder's disk has room for two checkpoints, the latest
        and the next one written beside it before the rename (a resumed run's checkpoint is one
        of them). Each save checks again for its own (save_checkpoint)."""
        size, path = self.checkpoint_bytes(), self.dir / CHECKPOINT
        held = path.stat().st_size if path.exists() else 0
        try:
            free = free_space(self.dir)
        except OSError:  # a file system that cannot say: the saves will tell
            return
        if free + held < 2 * size:
            where = (
                "move the run folder to another disk and --resume it there"
                if resumed
                else "give --out on another disk"
            )
            raise UsageError(
                f"not enough space to write {path}: it needs "
                f"{size_text(2 * size - held)} (two checkpoints of {size_text(size)}:"
                f" the latest and the next, written beside it), {size_text(free)} "
                f"left on its disk: free space, or {where}"
            )

    def _check_same_data(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run's cache must hold the run's data: its classes and, as config.json
        records, its number of training images."""
        train_images = _recorded(self.dir, "train_images")
        if train_images is None:
            train_images = self.train_images  # config.json unreadable: the classes must do
        fix = "give the run's own cache, or start a new run"
        mismatch = class_mismatch(checkpoint, self.wnids)
        if mismatch:
            raise UsageError(
                f"--resume: {self.config.cache} holds other classes than the run's "
                f"data ({mismatch}): {fix}"
            )
        if self.train_images != train_images:
            raise UsageError(
                f"--resume: {self.config.cache} holds {self.train_images} training "
                f"images, the run's data had {train_images}: {fix}"
            )

    def _write_config(self) -> None:
        """config.json: the settings, devices, data and deviations the report shows."""
        self._write_json(
            "config.json",
            {
                "settings": asdict(self.config),
                "device_names": device_names(self.config.devices),
                "torch": torch.__version__,
                "backends": self.backends,
                "dataset": self.config.dataset,
                "num_classes": self.num_classes,
                "train_images": self.train_images,
                "val_images": self.val_images,
                "demo": self.config.dataset.startswith("synthetic"),
                "deviations": deviations(self.config, self.num_classes),
            },
        )

    def _write_json(self, name: str, obj: Any) -> None:
        write_file(self.dir / name, json.dumps(obj, indent=2) + "\n")

    def _write_metrics(self, lines: list[str]) -> None:
        """metrics.jsonl, rewritten whole (atomically): a full disk cannot leave half a line."""
        write_file(self.dir / "metrics.jsonl", "".join(l + "\n" for l in lines))

    def _metrics(self) -> list[str]:
        """The lines of metrics.jsonl (none when it is missing)."""
        path = self.dir / "metrics.jsonl"
        try:
            return path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): "
                "fix or remove it, then run the same command again"
            ) from None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.epoch, self.batch, self.elapsed = ckpt["epoch"], ckpt["batch"], ckpt["elapsed_s"]
        self.partial, self.drop_log = ckpt["partial"], ckpt["drop_log"]
        self.finished, self.stop_reason = ckpt["finished"], ckpt["stop_reason"]
        set_rng_state(ckpt["rng"])
        lines = self._metrics()
        kept = [l for l in lines if _epoch_of(l) < self.epoch]
        if kept != lines:  # drop epochs logged after this checkpoint was written
            self._write_metrics(kept)
        where = "finished" if self.finished else f"epoch {self.epoch}, batch {self.batch}"
        self.log(f"resumed from {self.dir / CHECKPOINT} ({where})")

    def save(self) -> None:
        """Write the checkpoint: everything needed to continue exactly from here."""
        save_checkpoint(
            self.dir / CHECKPOINT,
            {
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
                "rng": rng_state(),
                "config": asdict(self.config),
                "num_classes": self.num_classes,
                "wnids": self.wnids,
            },
        )

    # -- training ---------------------------------------------------------------------
    def train_epoch(self) -> float:
        """Train the current epoch from ``self.batch`` on; returns its mean training loss."""
        c = self.config
        if self._train is not None:  # within run(): workers that persist across epochs
            loader = self._train.epoch(self.epoch, self.batch)
        else:
            loader = train_loader(
                c.cache,
                batch_size=c.batch_size,
                crop=c.input_size,
                seed=c.seed,
                epoch=self.epoch,
                start_batch=self.batch,
                workers=c.workers,
                device=str(self.dev),
                lighting=c.lighting,
            )
        total = len(loader) + self.batch
        watch = _LossWatch()
        watch.total, watch.steps = self.partial["loss"], self.partial["steps"]
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(
            total=total * c.batch_size,
            initial=self.batch * c.batch_size,
            unit="img",
            desc=f"epoch {self.epoch}/{c.epochs}",
            disable=None if self.progress else True,  # None: off where not a terminal
            dynamic_ncols=True,
            smoothing=0.1,
        )
        last_save = time.monotonic()
        started = time.perf_counter()
        self.model.train()
        for x, y in loader:
            watch.add(self.batch, self.step(x, y))
            self.batch += 1
            bar.update(c.batch_size)
            due = time.monotonic() - last_save >= 60 * c.checkpoint_minutes
            if due or self.batch % 20 == 0 or self.batch == total:
                recent = watch.check(self.epoch)
                bar.set_postfix(loss=f"{recent:.3f}", lr=f"{lr:g}", refresh=False)
            if due and self.batch < total:
                self._sync()
                seconds = time.perf_counter() - started
                self.partial = {
                    "loss": watch.total,
                    "steps": watch.steps,
                    "seconds": self.partial["seconds"] + seconds,
                }
                self.elapsed += seconds
                started = time.perf_counter()
                self.save()
                last_save = time.monotonic()
        watch.check(self.epoch)
        self._sync()
        bar.close()
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        self.partial["seconds"] += seconds
        self.partial.update(loss=watch.total, steps=watch.steps)
        return watch.total / max(1, watch.steps)

    def _sync(self) -> None:
        for d in self.config.devices:
            if torch.device(d).type == "cuda":
                torch.cuda.synchronize(d)

    def validate(self, views: int = 1, split: str = "val") -> dict[str, float]:
        """Top-1/top-5 error on ``split`` from ``views`` (1 or 10) views; ten-view batches hold
        a tenth of the images, so that the network sees the same batch size."""
        c = self.config
        batch_size = max(1, c.eval_batch_size // views)
        if self._evals is not None:  # within run(): workers that persist across validations
            batches = self._evals.batches(split, batch_size=batch_size, views=views)
        else:
            batches = eval_loader(
                c.cache,
                split,
                batch_size=batch_size,
                crop=c.input_size,
                views=views,
                workers=c.workers,
                device=str(self.dev),
            )
        return evaluate(
            self.model,
            batches,
            progress=self.progress,
            desc=f"{'10-view' if views == 10 else 'centre'} eval",
        )

    def run(self) -> dict[str, Any]:
        """Train until the schedule stops or the epoch limit, then test; returns the results."""
        c = self.config
        if not self.finished:
            self._train = TrainStream(
                c.cache,
                batch_size=c.batch_size,
                crop=c.input_size,
                seed=c.seed,
                start_epoch=self.epoch,
                start_batch=self.batch,
                workers=c.workers,
                device=str(self.dev),
                lighting=c.lighting,
                last_epoch=c.epochs,
            )
        self._evals = EvalStreams(
            c.cache, crop=c.input_size, workers=c.workers, device=str(self.dev)
        )
        try:
            return self._run()
        finally:
            for loaders in (self._train, self._evals):
                if loaders is not None:
                    loaders.close()
            self._train = self._evals = None

    def _run(self) -> dict[str, Any]:
        c = self.config
        while not self.finished:
            train_loss = self.train_epoch()
            val = self.validate()
            images = self.partial["steps"] * c.batch_size
            line = {
                "epoch": self.epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
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
                group["lr"] = decision.lr
            self._write_metrics(self._metrics() + [json.dumps(line)])
            self._write_json("drops.json", self.drop_log)
            self.finished = decision.stop
            if decision.stop:
                self.stop_reason = decision.reason
                self.log(f"training stops: {decision.reason}")
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = {"loss": 0.0, "steps": 0, "seconds": 0.0}
            self.save()
        if self._train is not None:
            self._train.close()  # its workers are not needed for the test
        return self.test()

    def test(self) -> dict[str, Any]:
        """The final centre-crop and (unless disabled) ten-view errors, into results.json."""
        split = self.config.test_split
        results: dict[str, Any] = {"split": split, "center": self.validate(1, split)}
        if self.config.ten_view:
            pause_for_test("ten-view")
            results["ten_view"] = self.validate(10, split)
        results.update(
            wall_time_s=self.elapsed,
            epochs_trained=self.epoch - 1,
            stopped_because=self.stop_reason,
        )
        self._write_json("results.json", results)
        return results


def load_trained_model(
    path: str, devices: tuple[str, ...] | None = None
) -> tuple[AlexNet, TrainConfig, dict[str, Any]]:
    """The network saved in a run's checkpoint, on ``devices`` (default: the run's own), in
    eval mode, its run's settings and the checkpoint itself; a two-GPU run loads on one device
    or the CPU, and the other way round."""
    checkpoint = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        state, num_classes = checkpoint["model"], checkpoint["num_classes"]
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"checkpoint {path} is not a training checkpoint (missing {exc})"
        ) from None
    if devices:
        config.devices = devices
    check_devices(config.devices, config.columns)
    model = build_model(config, num_classes)
    model.load_state_dict(state)
    return model.eval(), config, checkpoint
