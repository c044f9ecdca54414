"""The training benchmark's memory meter and JSON report (rates, memory, targets, machine, code)."""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from alexnet2012 import devices, paper
from alexnet2012.bench import models
from alexnet2012.units import duration_text

if TYPE_CHECKING:
    from alexnet2012.bench.training import Case, Settings

CPU_METHOD = (
    "process RSS: /proc/self/status VmHWM during the step minus VmRSS before "
    "it, after a peak reset via /proc/self/clear_refs; a lower bound: pages the "
    "C allocator kept from earlier steps are in the baseline"
)
CUDA_METHOD = (
    "torch.cuda.max_memory_allocated during the step minus "
    "torch.cuda.memory_allocated before it, after reset_peak_memory_stats"
)
PEAK_MEMORY = (
    "weights (+ PaperSGD velocity when training) + the peak growth of one step started "
    "with no gradients held, measured after the timed rounds"
)


class MemoryMeter:
    """Peak memory of a block over its start: CUDA's statistics, or the CPU's resident set."""

    def __init__(self, devices: Sequence[torch.device]):
        self.gpus = sorted({d for d in devices if d.type == "cuda"}, key=str)
        self.cpu = any(d.type == "cpu" for d in devices) and _rss_measurable()
        self.baseline = 0

    def start(self) -> None:
        self.baseline = sum(torch.cuda.memory_allocated(d) for d in self.gpus)
        for d in self.gpus:
            torch.cuda.reset_peak_memory_stats(d)
        if self.cpu:
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline += _proc_status_bytes("VmRSS")

    def stop(self) -> int | None:
        """Peak since :meth:`start` minus the baseline; ``None`` where nothing is measured."""
        if not (self.gpus or self.cpu):
            return None
        peak = sum(torch.cuda.max_memory_allocated(d) for d in self.gpus)
        if self.cpu:
            peak += _proc_status_bytes("VmHWM")
        return max(0, peak - self.baseline)


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_measurable() -> bool:
    try:
        _proc_status_bytes("VmHWM")
        return os.access("/proc/self/clear_refs", os.W_OK)
    except (OSError, KeyError):
        return False


def persistent_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, train: bool) -> int:
    """Bytes held between steps: the weights, plus the optimizer's state when training."""
    tensors = list(model.parameters())
    if train:
        tensors += [
            t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)
        ]
    return sum(t.numel() * t.element_size() for t in tensors)


def code_version() -> dict[str, Any]:
    """The package's git commit and its files with uncommitted changes; ``None``s outside git."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted": None}
    return {"commit": commit, "uncommitted": sorted(line[3:] for line in status)}


TIMING = (
    "images_per_s: batch over the median, across rounds, of per-step time "
    "(best_*: over the fastest round); each round runs `steps` steps of every "
    "entry, in an order rotated by one each round"
)


def projected_seconds(images_per_s: float) -> float:
    """Wall time of the paper's 90 ImageNet epochs at ``images_per_s``."""
    return paper.EPOCHS * paper.TRAIN_IMAGES_2012 / images_per_s


def _mode_row(case: Case, mode: str, batch_size: int) -> dict[str, Any] | None:
    times = case.times.get(mode)
    if not times:
        return None
    median = statistics.median(times)
    step_peak = case.step_peak.get(mode)
    held = persistent_bytes(case.model, case.optimizer, train=mode == "train")
    return {
        "images_per_s": batch_size / median,
        "median_step_s": median,
        "step_times_s": times,
        "best_images_per_s": batch_size / min(times),
        "peak_memory_bytes": None if step_peak is None else held + step_peak,
    }


def training_report(
    cases: list[Case], settings: Settings, backends: dict[str, Any]
) -> dict[str, Any]:
    """Device, versions, code, settings and one entry per row."""
    rows = []
    for case in cases:
        row: dict[str, Any] = {"name": case.name, "devices": [str(d) for d in case.devices]}
        for mode in ("train", "infer"):
            row[mode] = _mode_row(case, mode, settings.batch_size)
        rows.append(row)
    reference = next(r for r in rows if r["name"] == models.REFERENCE)
    for row in rows:
        for mode in ("train", "infer"):
            r, ref = row[mode], reference[mode]
            if r is not None:
                r["ratio_to_torchvision"] = r["images_per_s"] / ref["images_per_s"]
                r["best_ratio_to_torchvision"] = r["best_images_per_s"] / ref["best_images_per_s"]
        if row["train"] is not None:
            seconds = projected_seconds(row["train"]["images_per_s"])
            row["projected_90_epochs_s"] = seconds
            row["projected_90_epochs"] = duration_text(seconds)
    cuda = devices.any_cuda(settings.devices)
    return {
        "device": devices.describe(settings.devices),
        "versions": devices.versions(),
        "code": code_version(),
        "settings": {
            "devices": [str(d) for d in settings.devices],
            "batch_size": settings.batch_size,
            "steps": settings.steps,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
            "timing": TIMING,
            "compile": settings.compile,
            "bf16_autocast": settings.bf16,
            "precision": "bf16 autocast" if settings.bf16 else ("fp32/TF32" if cuda else "fp32"),
            "backends": backends,
            "memory_method": {"cpu": CPU_METHOD, "cuda": CUDA_METHOD, "peak_memory": PEAK_MEMORY},
            "data": None
            if settings.data is None
            else {
                "cache": settings.data,
                "workers": settings.workers,
                "lead_in_steps_per_round": settings.lead_in_steps,
            },
            "epochs": paper.EPOCHS,
            "images_per_epoch": paper.TRAIN_IMAGES_2012,
            "seed": settings.seed,
        },
        "reference": models.REFERENCE,
        "models": rows,
        "targets": training_targets(rows),
    }


def training_targets(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The targets: one-device over torchvision's (>= 1 on a GPU, >= 0.8 on a CPU, where
    torchvision's net has no LRN), two-device over one (>= 0.9)."""
    rate = {r["name"].split(" (")[0]: r["train"]["images_per_s"] for r in rows if r["train"]}
    one = rate.get(models.ONE_DEVICE)
    return {
        "alexnet_train_vs_torchvision": None if one is None else one / rate[models.REFERENCE],
        "two_device_train_vs_one_device": (
            None if one is None or models.TWO_DEVICE not in rate else rate[models.TWO_DEVICE] / one
        ),
    }
