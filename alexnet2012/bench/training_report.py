"""The training benchmark's JSON report: rates, ratios, memory, 90 epochs, targets, the machine."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from alexnet2012 import devices, paper
from alexnet2012.bench import memory, models
from alexnet2012.bench.provenance import code_version
from alexnet2012.units import duration_text

if TYPE_CHECKING:
    from alexnet2012.bench.training import Case, Settings

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
    held = memory.persistent_bytes(case.model, case.optimizer, train=mode == "train")
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
            "memory_method": {
                "cpu": memory.CPU_METHOD,
                "cuda": memory.CUDA_METHOD,
                "peak_memory": memory.PEAK_MEMORY,
            },
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
    """The issue's targets as ratios of training rates: the one-device net over torchvision's
    (>= 1.0) and the two-device path over the one-device net (on one GPU: >= 0.9)."""
    rate = {r["name"].split(" (")[0]: r["train"]["images_per_s"] for r in rows if r["train"]}
    one = rate.get(models.ONE_DEVICE)
    return {
        "alexnet_train_vs_torchvision": None if one is None else one / rate[models.REFERENCE],
        "two_device_train_vs_one_device": (
            None if one is None or models.TWO_DEVICE not in rate else rate[models.TWO_DEVICE] / one
        ),
    }
