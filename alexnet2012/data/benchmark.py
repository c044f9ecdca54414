"""Images/s of each data stage, per CPU core (``scripts/benchmark_data.py``).

Stages: decoding source JPEGs to 256x256 (what the cache saves every epoch), reading cache rows,
the augmentation (crop, flip, lighting, mean; uint8 -> float), and the end-to-end training loader,
in this process (``workers=0``) and with worker processes. "Per core" is images per CPU-second:
the CPU time of this process and its workers (``getrusage``), which stays meaningful on a machine
shared with other jobs; the wall-clock rate divided by the cores in use is given beside it.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from alexnet2012.data.augment import Lighting, crop_flip, mean_crop, to_input
from alexnet2012.data.cache import open_split, require_manifest
from alexnet2012.data.decode import BadImage, load_256
from alexnet2012.data.loader import train_loader
from alexnet2012.data.plan import make_plan
from alexnet2012.data.stats import load_stats
from alexnet2012.devices import parse as parse_devices
from alexnet2012.errors import UsageError

TARGET = 1000  # end-to-end training images/s per CPU core


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished (reaped) children, e.g. loader workers."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stage(name: str, images: int, wall: float, cpu: float, cores: int) -> dict:
    return {
        "stage": name,
        "images": images,
        "seconds": wall,
        "cpu_seconds": cpu,
        "cores": cores,
        "images_per_s": images / wall,
        "images_per_cpu_s": images / cpu if cpu > 0 else None,
        "images_per_s_per_core": images / wall / cores,
    }


def run_benchmark(
    cache_dir: str | os.PathLike,
    *,
    src: str | os.PathLike | None = None,
    batch_size: int = 128,
    workers: int | None = None,
    crop: int = 224,
    batches: int = 30,
    decode_images: int = 200,
    device: str = "cpu",
    threads: int = 1,
) -> dict:
    """Measure every stage on the cache at ``cache_dir`` (its source images for the decode stage).

    ``threads``: torch threads of this process (the loader's workers always use one). One by
    default, so that every figure is the work of one core per process; more threads only help the
    main process's float stage where cores are idle, and on a busy machine their OpenMP spinning
    costs CPU time.
    """
    load_at_start = os.getloadavg()
    counts = {
        "--batch-size": batch_size,
        "--batches": batches,
        "--decode-images": decode_images,
        "--threads": threads,
    }
    for option, value in counts.items():
        if value < 1:
            raise UsageError(f"{option} must be at least 1, not {value}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (load in this process) or more, not {workers}")
    device_ = parse_devices(device, columns=1, option="--device")[0]
    cache = Path(cache_dir)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    split, stats = open_split(cache, "train"), load_stats(cache)
    if batch_size > len(split.usable):
        raise UsageError(
            f"--batch-size must be at most the {len(split.usable)} training images of {cache}, "
            f"not {batch_size}"
        )
    source = Path(src) if src else Path(require_manifest(cache)["source"])
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stages = [
            _decode_stage(source, split.paths[:decode_images]),
            *_augment_stages(split, stats, batch_size, crop, batches, device_),
        ]
        stages += [
            _loader_stage(cache, batch_size, crop, batches, w, device_)
            for w in sorted({0, workers})
        ]
    finally:
        torch.set_num_threads(saved_threads)
    end_to_end = stages[-1]
    return {
        "machine": {
            "cpu_cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)),
            "cpu": _cpu_name(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "device": str(device_),
            "device_name": torch.cuda.get_device_name(device_)
            if device_.type == "cuda"
            else _cpu_name(),
        },
        "settings": {
            "cache": str(cache),
            "train_images": int(len(split.usable)),
            "batch_size": batch_size,
            "crop": crop,
            "batches": batches,
            "workers": workers,
            "torch_threads": threads,
        },
        "stages": stages,
        "target_images_per_cpu_s": TARGET,
        "meets_target": bool(
            end_to_end["images_per_cpu_s"] and end_to_end["images_per_cpu_s"] >= TARGET
        ),
    }


def _decode_stage(source: Path, paths: list[str]) -> dict:
    if not source.is_dir():
        raise UsageError(
            f"source images {source} not found: give --src, the ImageNet root of the cache"
        )
    missing = next((p for p in paths if not (source / p).is_file()), None)
    if missing is not None:
        raise UsageError(
            f"{source} is not the cache's source ({missing} is missing): give --src, "
            f"the ImageNet root the cache was made from"
        )
    start, cpu, done = time.perf_counter(), _cpu_seconds(), 0
    for path in paths:
        try:
            load_256(source / path)
            done += 1
        except BadImage:
            pass
    return _stage(
        "decode JPEG -> 256x256 (Pillow, 1 process)",
        done,
        time.perf_counter() - start,
        _cpu_seconds() - cpu,
        1,
    )


def _augment_stages(
    split, stats, batch_size: int, crop: int, batches: int, device: torch.device
) -> list[dict]:
    plan = make_plan(split.usable, batch_size, crop, seed=0, epoch=0)
    picks = [b % len(plan) for b in range(batches)]
    lighting = Lighting("paper", stats.eigenvalues, stats.eigenvectors)
    mean = mean_crop(stats.mean_image, crop).to(device)

    start, cpu = time.perf_counter(), _cpu_seconds()
    for b in picks:
        split.images[plan.rows[b]]
    read = _stage(
        "read cache rows (memmap gather)",
        batch_size * len(picks),
        time.perf_counter() - start,
        _cpu_seconds() - cpu,
        1,
    )
    # A few batches, reused: this stage measures the computation, not the reading.
    raw = [torch.from_numpy(split.images[plan.rows[b]]).to(device) for b in picks[:4]]
    start, cpu = time.perf_counter(), _cpu_seconds()
    for k, b in enumerate(picks):
        crops = crop_flip(raw[k % len(raw)], plan.oy[b], plan.ox[b], plan.flip[b], crop)
        to_input(crops, mean, lighting.shift(plan.alpha[b]), lighting.scale)
    _sync(device)
    augment = _stage(
        f"augment: crop, flip, lighting, mean ({device})",
        batch_size * len(picks),
        time.perf_counter() - start,
        _cpu_seconds() - cpu,
        1,
    )
    return [read, augment]


def _loader_stage(
    cache: Path, batch_size: int, crop: int, batches: int, workers: int, device: torch.device
) -> dict:
    start, cpu, done, epoch = time.perf_counter(), _cpu_seconds(), 0, 0
    while done < batches:
        loader = train_loader(
            cache, batch_size=batch_size, crop=crop, epoch=epoch, workers=workers, device=device
        )
        for _batch in loader:
            done += 1
            if done == batches:
                break
        epoch += 1
    _sync(device)
    time.sleep(0.1)  # let the last workers exit and be reaped, so their CPU time is counted
    cores = min(workers + 1, len(os.sched_getaffinity(0))) if workers else 1
    return _stage(
        f"end to end: train_loader, workers={workers} ({device})",
        batch_size * done,
        time.perf_counter() - start - 0.1,
        _cpu_seconds() - cpu,
        cores,
    )


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(
            line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def format_table(report: dict) -> str:
    """The report as a text table."""
    m, s = report["machine"], report["settings"]
    lines = [
        f"{m['cpu']}, {m['cores_available']} cores, "
        f"load average {m['load_average_at_start'][0]:.2f} at start, "
        f"{m['load_average_at_end'][0]:.2f} at end; "
        f"torch {m['torch']}; device {m['device_name']}",
        f"cache {s['cache']} ({s['train_images']} train images), "
        f"batch {s['batch_size']}, crop {s['crop']}, "
        f"torch threads {s['torch_threads']}",
        "",
        f"{'stage':<58} {'images':>7} {'img/s':>8} {'cores':>5} {'img/s/core':>10} "
        f"{'img/cpu-s':>9}",
    ]
    for st in report["stages"]:
        per_cpu = f"{st['images_per_cpu_s']:9.0f}" if st["images_per_cpu_s"] else f"{'-':>9}"
        lines.append(
            f"{st['stage']:<58} {st['images']:>7} {st['images_per_s']:8.0f} {st['cores']:>5} "
            f"{st['images_per_s_per_core']:10.0f} {per_cpu}"
        )
    verdict = "meets" if report["meets_target"] else "MISSES"
    lines += [
        "",
        f"end-to-end loader {verdict} the target of {report['target_images_per_cpu_s']} "
        "images/s per CPU core "
        f"(img/cpu-s: images per CPU-second of this process and its workers)",
    ]
    return "\n".join(lines)
