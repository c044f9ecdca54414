"""Loading what a run saved, for those who go on from it: the settings a run resumes with (the
rules of --resume: from the checkpoint, or from config.json when the run saved none; what may
change; the same data), and a checkpoint's trained network for users. Restoring the trainer
itself is :class:`alexnet2012.train.Trainer`'s own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alexnet2012.checkpoint import load_checkpoint
from alexnet2012.config import TrainConfig, build_model
from alexnet2012.data import CacheInfo
from alexnet2012.devices import default as default_device
from alexnet2012.errors import UsageError
from alexnet2012.model import AlexNet
from alexnet2012.runfolder import CHECKPOINT, CONFIG, RUN_FILES, RunFolder


def class_mismatch(checkpoint: dict[str, Any], wnids: list[str]) -> str:
    """How ``wnids`` (a cache's classes, in label order) differ from those the checkpoint's
    network was trained on ("" when they do not; old checkpoints hold only the count)."""
    trained = checkpoint["num_classes"]
    if len(wnids) != trained:
        return f"{len(wnids)} classes, the network's {trained}"
    for i, (here, there) in enumerate(zip(wnids, checkpoint.get("wnids", wnids))):
        if here != there:
            return (
                f"the same number, {trained}, but class {i} is {here} here, {there} in the network"
            )
    return ""


def resumed_config(
    out: str, overrides: dict[str, Any]
) -> tuple[TrainConfig, dict[str, Any] | None, bool]:
    """The run in folder ``out``, from its checkpoint, or from the beginning with the
    settings in its config.json when it saved no checkpoint; ``overrides`` may change the
    settings that do not alter the computation (devices, workers, epochs,
    checkpoint_minutes, and cache: the same data, moved)."""
    folder = RunFolder(out)
    path = folder / CHECKPOINT
    dead_end = f"start a new run with another --out, or delete {out} and start again"
    settings = folder.recorded("settings")
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
                f"--resume: no checkpoint at {path}, and {folder / CONFIG} "
                f"holds no settings a run can start from: {dead_end}"
            ) from None
        config, _ = _with_overrides(config, overrides, out)
        return config, None, False  # from the beginning (the trainer says so)
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
    return config, checkpoint, changed


def check_same_data(
    checkpoint: dict[str, Any], folder: RunFolder, cache: str, info: CacheInfo
) -> None:
    """A resumed run's cache must hold the run's data: its classes and, as config.json
    records, its number of training images."""
    train_images = folder.recorded("train_images")
    if train_images is None:
        train_images = info.train_images  # config.json unreadable: the classes must do
    fix = "give the run's own cache, or start a new run"
    mismatch = class_mismatch(checkpoint, info.wnids)
    if mismatch:
        raise UsageError(
            f"--resume: {cache} holds other classes than the run's data ({mismatch}): {fix}"
        )
    if info.train_images != train_images:
        raise UsageError(
            f"--resume: {cache} holds {info.train_images} training "
            f"images, the run's data had {train_images}: {fix}"
        )


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
    cache = Path(config.cache)
    if overrides.get("cache") is None:
        if not cache.exists():
            raise UsageError(
                f"--resume: the run's data cache {cache} is gone; if it "
                "moved, give its new place with --data"
            )
    elif not (cache / "stats.json").exists():
        raise UsageError(
            f"--resume: {cache} is not a prepared cache; --data must give the "
            "run's cache, or the ImageNet root whose cache is --cache or ROOT_cache"
        )
    return config, changed


def load_trained_model(path: str, devices: str | tuple[str, ...] | None = None) -> AlexNet:
    """The trained network of a checkpoint (a run's, or one ``scripts/import_weights.py``
    wrote) in eval mode on ``devices`` ("cuda:0", "cuda:0,cuda:1", ...; default: the run's own;
    for an imported one ``cuda:0``, else the CPU). It takes ``(N, 3, S, S)`` RGB crops on 0..255
    minus the mean crop (``model.input_size``: S)."""
    if isinstance(devices, str):
        devices = tuple(devices.split(","))
    return load_trained(path, devices)[0]


def load_trained(
    path: str, devices: tuple[str, ...] | None = None
) -> tuple[AlexNet, TrainConfig, dict[str, Any]]:
    """The network of a run's checkpoint in eval mode on ``devices`` (default: the run's own;
    a two-GPU run loads on one device and the other way round), the run's settings and the
    checkpoint. ``path``: a checkpoint file, or a run folder (its checkpoint)."""
    if Path(path).is_dir():
        path = str(Path(path) / CHECKPOINT)
    checkpoint = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        state, num_classes = checkpoint["model"], checkpoint["num_classes"]
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"checkpoint {path} is not a training checkpoint (missing {exc})"
        ) from None
    if not devices and "imported" in checkpoint:  # its recorded "cpu" is no choice of a user's
        devices = (str(default_device()),)
    if devices:
        config.devices = tuple(str(d) for d in devices)
    config.check()
    model = build_model(config, num_classes)
    model.load_state_dict(state)
    return model.eval(), config, checkpoint
