"""What the data benchmark compares with (the other format, torchvision's path), and its timing."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from alexnet2012 import devices
from alexnet2012.data import packed, prepare_cache
from alexnet2012.data.cache import SplitCache, open_split, require_manifest
from alexnet2012.data.subset import Subset
from alexnet2012.errors import UsageError

# ImageNet's per-channel mean and deviation, as torchvision's reference scripts normalize
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
REAP_S = 0.1  # lets the last workers exit and be reaped, so their CPU time counts


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the loader's workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def stage(name: str, fmt: str, images: int, wall: float, cpu: float, cores: int) -> dict:
    return {
        "stage": name,
        "format": fmt,
        "images": images,
        "seconds": wall,
        "cpu_seconds": cpu,
        "cores": cores,
        "images_per_s": images / wall,
        "images_per_cpu_s": images / cpu if cpu > 0 else None,
        "images_per_s_per_core": images / wall / cores,
    }


def timed_stage(name: str, fmt: str, images: int, run: Callable[[], object], device) -> dict:
    """The stage of ``run()`` on ``images`` images in this process, ``device`` synchronised."""
    start, cpu = time.perf_counter(), cpu_seconds()
    run()
    devices.synchronize([device])
    return stage(name, fmt, images, time.perf_counter() - start, cpu_seconds() - cpu, 1)


def loader_stage(
    name: str,
    fmt: str,
    passes: Callable[[int], Iterable],
    batch_size: int,
    batches: int,
    workers: int,
    device: torch.device,
) -> dict:
    """``batches`` batches of ``passes(epoch=0)``, ``(epoch=1)``, ..., the workers' time counted."""
    start, cpu, done, epoch = time.perf_counter(), cpu_seconds(), 0, 0
    while done < batches:
        for x, y in passes(epoch=epoch):
            x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            done += 1
            if done == batches:
                break
        epoch += 1
    devices.synchronize([device])
    time.sleep(REAP_S)
    cores = min(workers + 1, len(os.sched_getaffinity(0))) if workers else 1
    wall, cpu = time.perf_counter() - start - REAP_S, cpu_seconds() - cpu
    return stage(f"{name}, workers={workers} ({device})", fmt, batch_size * done, wall, cpu, cores)


def other_cache(cache: Path, main: SplitCache, jpeg_cache: Path) -> Path:
    """``jpeg_cache``, checked: a JPEG cache of the raw ``cache``'s training images."""
    if main.format != packed.RAW:
        raise UsageError(f"--data {cache} is a JPEG cache: give a raw one with --jpeg-cache")
    other = open_split(jpeg_cache, "train")
    if other.format != packed.JPEG:
        raise UsageError(f"--jpeg-cache {jpeg_cache} is a raw cache: give a JPEG cache")
    if other.paths != main.paths or (other.labels != main.labels).any():
        raise UsageError(
            f"--jpeg-cache {jpeg_cache} holds other training images than --data {cache}: "
            f"give a cache prepared from the same source"
        )
    return jpeg_cache


def build_cache(cache: Path, source: Path, out: Path, fmt: str, quality: int, workers: int) -> Path:
    """A ``fmt`` cache of ``cache``'s training split (same source, year and subset)."""
    manifest = require_manifest(cache)
    subset = manifest["subset"] and Subset.from_dict(manifest["subset"])
    print(f"preparing a {fmt} cache of {source} in {out} for the comparison", flush=True)
    prepare_cache(
        source,
        out,
        splits=("train",),
        workers=workers,
        year=manifest["year"],
        progress=False,
        subset=subset or None,
        format=fmt,
        quality=quality,
    )
    return out


def cache_bytes(cache: Path, fmt: str) -> int:
    """Bytes of the training images: the raw rows, or the packed JPEGs and their index."""
    if fmt == packed.RAW:
        return (cache / "train_images.npy").stat().st_size
    files = (packed.packed_path(cache, "train"), packed.offsets_path(cache, "train"))
    return sum(f.stat().st_size for f in files)


def torchvision_stage(
    source: Path,
    usable: list[str],
    batch_size: int,
    size: int,
    batches: int,
    workers: int,
    device: torch.device,
) -> dict:
    """torchvision's path on the cache's usable training images (``usable``: under ``source``)."""
    keep = {os.path.normpath(source / p) for p in usable}
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.RandomCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    folder = datasets.ImageFolder(
        source / "train", transform=transform, is_valid_file=lambda p: os.path.normpath(p) in keep
    )
    loader = DataLoader(
        folder,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    name = "end to end: ImageFolder + DataLoader"
    return loader_stage(
        name, "torchvision", lambda epoch: loader, batch_size, batches, workers, device
    )
