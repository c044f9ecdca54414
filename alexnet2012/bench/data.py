"""Images/s of each data stage, per CPU core: decoding source JPEGs to 256x256 (what the cache
saves every epoch), reading cache rows, the augmentation, and the training loader end to end with
and without worker processes. "Per core" is images per CPU-second of this process and its workers
(``getrusage``), meaningful on a shared machine; wall-clock rate over cores in use is beside it."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from alexnet2012 import devices, paper
from alexnet2012.data.augment import Lighting, crop_flip, mean_crop, to_input
from alexnet2012.data.cache import open_split, require_manifest
from alexnet2012.data.decode import BadImage, load_256
from alexnet2012.data.loader import train_loader
from alexnet2012.data.plan import make_plan
from alexnet2012.data.stats import load_stats
from alexnet2012.errors import UsageError

TARGET = 1000  # end-to-end training images/s per CPU core
REAP_S = 0.1  # lets the last workers exit and be reaped, so their CPU time counts


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the loader's workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


def measure_data_pipeline(
    cache_dir: str | os.PathLike,
    *,
    src: str | os.PathLike | None = None,
    batch_size: int = paper.BATCH_SIZE,
    workers: int | None = None,
    input_size: int = paper.CROP_SIZE,
    batches: int = 30,
    decode_images: int = 200,
    device: torch.device | str = "cpu",
    threads: int = 1,
) -> dict:
    """Every stage on the cache (the decode stage on its source images, or ``src``).

    ``workers``: None, one per usable core. ``threads``: torch threads of this process (workers
    use one), so that every figure is one core's work; more only help the main process's float
    stage on idle cores, and on a busy machine their OpenMP spinning costs CPU time."""
    assert min(batch_size, batches, decode_images, threads) >= 1 and (workers or 0) >= 0
    load_at_start = os.getloadavg()
    device = torch.device(device)
    cache = Path(cache_dir)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    split, stats = open_split(cache, "train"), load_stats(cache)
    if batch_size > len(split.usable):
        raise UsageError(
            f"--batch-size must be at most the {len(split.usable)} training images of {cache}, "
            f"got {batch_size}"
        )
    source = Path(src) if src else Path(require_manifest(cache)["source"])
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stages = [
            _decode_stage(source, split.paths[:decode_images]),
            *_augment_stages(split, stats, batch_size, input_size, batches, device),
        ]
        stages += [
            _loader_stage(cache, batch_size, input_size, batches, w, device)
            for w in sorted({0, workers})
        ]
    finally:
        torch.set_num_threads(saved_threads)
    end_to_end = stages[-1]
    return {
        "machine": {
            "cpu_cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)),
            "cpu": devices.cpu_name(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else devices.cpu_name(),
        },
        "settings": {
            "cache": str(cache),
            "train_images": int(len(split.usable)),
            "batch_size": batch_size,
            "crop": input_size,
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
    split, stats, batch_size: int, size: int, batches: int, device: torch.device
) -> list[dict]:
    plan = make_plan(split.usable, batch_size, size, seed=0, epoch=0)
    picks = [b % len(plan) for b in range(batches)]
    lighting = Lighting("paper", stats.eigenvalues, stats.eigenvectors)
    mean = mean_crop(stats.mean_image, size).to(device)

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
    # a few batches, reused: this stage measures the computation, not the reading
    raw = [torch.from_numpy(split.images[plan.rows[b]]).to(device) for b in picks[:4]]
    start, cpu = time.perf_counter(), _cpu_seconds()
    for k, b in enumerate(picks):
        crops = crop_flip(raw[k % len(raw)], plan.oy[b], plan.ox[b], plan.flip[b], size)
        to_input(crops, mean, lighting.shift(plan.alpha[b]), lighting.scale)
    devices.synchronize([device])
    augment = _stage(
        f"augment: crop, flip, lighting, mean ({device})",
        batch_size * len(picks),
        time.perf_counter() - start,
        _cpu_seconds() - cpu,
        1,
    )
    return [read, augment]


def _loader_stage(
    cache: Path, batch_size: int, size: int, batches: int, workers: int, device: torch.device
) -> dict:
    start, cpu, done, epoch = time.perf_counter(), _cpu_seconds(), 0, 0
    while done < batches:
        loader = train_loader(
            cache, batch_size=batch_size, crop=size, epoch=epoch, workers=workers, device=device
        )
        for _batch in loader:
            done += 1
            if done == batches:
                break
        epoch += 1
    devices.synchronize([device])
    time.sleep(REAP_S)
    cores = min(workers + 1, len(os.sched_getaffinity(0))) if workers else 1
    return _stage(
        f"end to end: train_loader, workers={workers} ({device})",
        batch_size * done,
        time.perf_counter() - start - REAP_S,
        _cpu_seconds() - cpu,
        cores,
    )
