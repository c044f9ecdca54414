"""A run's folder: the files a run writes, declared once; writing them (always atomically, so a
kill or a full disk leaves the previous version whole) and reading them back, checked."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alexnet2012 import devices
from alexnet2012.config import TrainConfig, deviations
from alexnet2012.data import CacheInfo
from alexnet2012.errors import UsageError, foreign_files
from alexnet2012.files import free_space, is_temporary, size_text, write_file

CONFIG = "config.json"  # the settings, devices, data and deviations
METRICS = "metrics.jsonl"  # one line per epoch
DROPS = "drops.json"  # the learning-rate drops
RESULTS = "results.json"  # the final test
CHECKPOINT = "checkpoint.pt"  # the latest, to resume from
REPORT = "report.md"
CURVES = "curves.png"
RUN_FILES = (METRICS, CHECKPOINT, RESULTS)  # a config.json without these: a run not started
OWN_FILES = (CONFIG, METRICS, DROPS, CHECKPOINT, RESULTS, REPORT, CURVES)

# what the report reads from each file: field -> kind (errors are fractions in [0, 1])
FRACTION, COUNT, NUMBER = "a fraction in [0, 1]", "a positive integer", "a number"
ERRORS = {"top1": FRACTION, "top5": FRACTION}
CONFIG_FIELDS = {
    "settings": "an object",
    "device_names": "a list",
    "torch": "a string",
    "dataset": "a string",
    "num_classes": COUNT,
    "train_images": COUNT,
    "val_images": COUNT,
    "deviations": "a list",
}
EPOCH_FIELDS = {
    "epoch": COUNT,
    "lr": NUMBER,
    "train_loss": NUMBER,
    "images_per_s": "a positive number",
}
EPOCH_OPTIONAL = {"val_top1": FRACTION, "val_top5": FRACTION}  # null: an epoch not validated
DROP_FIELDS = {
    "epoch": COUNT,
    "old_lr": NUMBER,
    "new_lr": NUMBER,
    "val_error": FRACTION,
    "reason": "a string",
}
RESULTS_FIELDS = {
    "center": "an object",
    "wall_time_s": NUMBER,
    "epochs_trained": COUNT,
    "stopped_because": "a string",
}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


KINDS: dict[str, Callable[[Any], bool]] = {
    COUNT: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    NUMBER: _number,
    "a positive number": lambda v: _number(v) and v > 0,
    FRACTION: lambda v: _number(v) and 0 <= v <= 1,
    "a string": lambda v: isinstance(v, str),
    "a list": lambda v: isinstance(v, list),
    "an object": lambda v: isinstance(v, dict),
}


def checked(obj: Any, where: str, required: dict, optional: dict | None = None) -> dict:
    """``obj`` if it is a JSON object with fields of the given kinds (``optional`` ones may be
    absent or null); else a one-line ``UsageError``."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in required:
        if name not in obj:
            raise UsageError(f"{where}: missing '{name}'")
    for name, kind in {**required, **(optional or {})}.items():
        value = obj.get(name)
        if (name in required or value is not None) and not KINDS[kind](value):
            raise UsageError(f"{where}: '{name}' must be {kind}, got {value!r}")
    return obj


@dataclass(frozen=True)
class RunRecord:
    """What a finished run's folder holds, checked."""

    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    drops: list[dict[str, Any]]
    results: dict[str, Any]


def epoch_of(line: str) -> float:
    """The epoch of a metrics.jsonl line; infinity for a blank or half-written one."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunFolder:
    """The folder of one run and its files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- reading ----------------------------------------------------------------------
    def recorded(self, key: str) -> Any:
        """What config.json records under ``key`` (None if unreadable or absent)."""
        try:
            return json.loads((self / CONFIG).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    def metric_lines(self) -> list[str]:
        """The lines of metrics.jsonl (none when it is missing)."""
        path = self / METRICS
        try:
            return path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): "
                "fix or remove it, then run the same command again"
            ) from None

    def _text(self, name: str) -> str:
        path = self / name
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(
                f"{path}: missing (is this a run folder written by scripts/replicate.py?)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read: {exc}") from None

    @staticmethod
    def _parse(text: str, where: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None

    def _json(self, name: str) -> Any:
        return self._parse(self._text(name), str(self / name))

    def read(self) -> RunRecord:
        """Read and check the files of a finished run; a missing file or field is one line."""
        if not self.path.is_dir():
            raise UsageError(f"{self.path}: not a run folder (no such directory)")
        config = checked(self._json(CONFIG), str(self / CONFIG), CONFIG_FIELDS)
        metrics: list[dict[str, Any]] = []
        for number, line in enumerate(self._text(METRICS).splitlines(), start=1):
            if line.strip():
                where = f"{self / METRICS} line {number}"
                metrics.append(
                    checked(self._parse(line, where), where, EPOCH_FIELDS, EPOCH_OPTIONAL)
                )
                if len(metrics) > 1 and metrics[-1]["epoch"] <= metrics[-2]["epoch"]:
                    raise UsageError(
                        f"{where}: epoch {metrics[-1]['epoch']} after epoch "
                        f"{metrics[-2]['epoch']}: epochs must increase"
                    )
        if not metrics:
            raise UsageError(f"{self / METRICS}: no epochs")
        drops = self._json(DROPS)
        if not isinstance(drops, list):
            raise UsageError(f"{self / DROPS}: expected a JSON list, got {type(drops).__name__}")
        for i, drop in enumerate(drops):
            checked(drop, f"{self / DROPS} item {i + 1}", DROP_FIELDS)
        where = str(self / RESULTS)
        results = checked(self._json(RESULTS), where, RESULTS_FIELDS)
        checked(results["center"], f"{where} 'center'", ERRORS)
        if results.get("ten_view") is not None:
            checked(results["ten_view"], f"{where} 'ten_view'", ERRORS)
        return RunRecord(config, metrics, drops, results)

    # -- writing ----------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        write_file(self / name, json.dumps(obj, indent=2) + "\n")

    def write_config(self, config: TrainConfig, data: CacheInfo, backends: dict[str, Any]) -> None:
        """config.json: the settings, devices, data and deviations the report shows."""
        self.write_json(
            CONFIG,
            {
                "settings": asdict(config),
                "device_names": [devices.name(d) for d in config.devices],
                "torch": torch.__version__,
                "backends": backends,
                "dataset": config.dataset,
                "num_classes": data.num_classes,
                "train_images": data.train_images,
                "val_images": data.val_images,
                "demo": config.dataset.startswith("synthetic"),
                "deviations": deviations(config, data.num_classes, data),
                "subset": data.subset,
                "classes": data.wnids if data.subset else None,
            },
        )

    def start(
        self, config: TrainConfig, data: CacheInfo, backends: dict[str, Any], log: Callable
    ) -> None:
        """Create the folder and its config.json; a run that saved no checkpoint starts again,
        its epochs logged to be redone."""
        self.create()
        recorded = self.recorded("settings")
        if recorded is not None:
            log(
                f"no checkpoint in {self.path}: the run starts from the beginning"
                + (
                    " with the settings in its config.json"
                    if config.same_computation(recorded)
                    else ", with the settings given (its config.json had others)"
                )
            )
        for name in (METRICS, DROPS, RESULTS):
            self.remove(name)
        self.write_config(config, data, backends)

    def write_metrics(self, lines: list[str]) -> None:
        """metrics.jsonl, rewritten whole: a full disk cannot leave half a line."""
        write_file(self / METRICS, "".join(line + "\n" for line in lines))

    def remove(self, name: str) -> None:
        """Delete the file ``name`` if it is there; an OS error is one line."""
        try:
            (self / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(
                f"cannot remove {self / name} ({exc.strerror or exc}): fix the "
                "folder's permissions, or remove it yourself"
            ) from None

    def leftovers(self) -> list[str]:
        """The temporary files that killed writes of the run's files left here."""
        if not self.path.is_dir():
            return []
        return sorted(n for n in os.listdir(self.path) if is_temporary(n, OWN_FILES))

    def remove_leftovers(self, log: Callable[[str], None]) -> None:
        names = self.leftovers()
        for name in names:
            self.remove(name)
        if names:
            log(
                f"removed {len(names)} temporary file{'s' if len(names) > 1 else ''} left "
                f"by a killed save in {self.path}: {', '.join(names)}"
            )

    # -- guards -----------------------------------------------------------------------
    def check_new(self, config: TrainConfig) -> None:
        """A new run goes neither over a run with a checkpoint nor into a folder holding
        anything else. A run that saved no checkpoint (a config.json, epochs logged with the
        same settings, temporary files) is this run, started again; a config.json alone is a
        run that never trained, replaced whatever its settings."""
        folder = self.path
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {folder} is a file: give a folder for the run")
        existing = [n for n in RUN_FILES if (folder / n).exists()]
        if existing and (
            CHECKPOINT in existing or not config.same_computation(self.recorded("settings"))
        ):
            raise UsageError(
                f"{folder} already holds a run ({', '.join(existing)}); use "
                "--resume to continue it or --out to start a new one"
            )
        own = (CONFIG, *RUN_FILES, DROPS) if (folder / CONFIG).exists() else (CONFIG,)
        others = foreign_files(folder, (*own, *self.leftovers()))
        if others:
            raise UsageError(
                f"{folder} is not empty ({others}): give --out a new or empty "
                "folder, so that no file of yours is overwritten"
            )

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the run folder {self.path}: {exc.strerror or exc}"
            ) from None

    def check_room(self, checkpoint_bytes: int, resumed: bool) -> None:
        """Refuse to train unless the disk has room for two checkpoints: the latest and the
        next, written beside it before the rename. Each save checks again for itself."""
        path = self / CHECKPOINT
        held = path.stat().st_size if path.exists() else 0
        try:
            free = free_space(self.path)
        except OSError:  # a file system that cannot say: the saves will tell
            return
        if free + held < 2 * checkpoint_bytes:
            where = (
                "move the run folder to another disk and --resume it there"
                if resumed
                else "give --out on another disk"
            )
            raise UsageError(
                f"not enough space to write {path}: it needs "
                f"{size_text(2 * checkpoint_bytes - held)} (two checkpoints of "
                f"{size_text(checkpoint_bytes)}: the latest and the next, written beside it), "
                f"{size_text(free)} left on its disk: free space, or {where}"
            )
