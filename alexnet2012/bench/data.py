"""Images/s of each data stage, raw and JPEG cache side by side (decoding, augmentation, the loader
end to end) and torchvision's path; "per core": images per CPU-second of this process and its
workers, meaningful on a shared machine."""

from __future__ import annotations

import io
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet2012 import devices, paper
from alexnet2012.bench.baselines import (
    build_cache,
    cache_bytes,
    cpu_seconds,
    loader_stage,
    other_cache,
    stage,
    timed_stage,
    torchvision_stage,
)
from alexnet2012.data import packed
from alexnet2012.data.augment import Lighting, crop_flip, mean_crop, to_input
from alexnet2012.data.cache import SplitCache, open_split, require_manifest
from alexnet2012.data.prepare import BadImage, load_256
from alexnet2012.data.stats import load_stats
from alexnet2012.data.stream import train_loader
from alexnet2012.data.worker import make_plan
from alexnet2012.errors import UsageError

TARGETS = {  # name: (minimum, or maximum when negative)
    "end-to-end raw loader, img/cpu-s": 1000,
    "JPEG cache bytes / raw cache bytes": -0.25,
    "JPEG decode (torchvision, CPU), img/cpu-s": 1000,
    "end-to-end JPEG loader / torchvision ImageFolder, per core": 3.0,
}


def measure_data_pipeline(
    cache_dir: str | os.PathLike,
    *,
    src: str | os.PathLike | None = None,
    jpeg_cache: str | os.PathLike | None = None,
    formats: tuple[str, ...] = packed.FORMATS,
    quality: int = packed.DEFAULT_QUALITY,
    batch_size: int = paper.BATCH_SIZE,
    workers: int | None = None,
    input_size: int = paper.CROP_SIZE,
    batches: int = 30,
    decode_images: int = 200,
    device: torch.device | str = "cpu",
    threads: int = 1,
    torchvision: bool = True,
) -> dict:
    """Every stage on the cache and, for the other format, on ``jpeg_cache`` or one built from
    ``src`` in a temporary folder. ``workers``: None, one per usable core. ``threads``: torch
    threads of this process, so that every figure is one core's work."""
    assert min(batch_size, batches, decode_images, threads) >= 1 and (workers or 0) >= 0
    assert formats and set(formats) <= set(packed.FORMATS) and 1 <= quality <= 100
    load_at_start = os.getloadavg()
    device = torch.device(device)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    cache = Path(cache_dir)
    main = open_split(cache, "train")
    if batch_size > len(main.usable):
        raise UsageError(
            f"--batch-size must be at most the {len(main.usable)} training images of {cache}, "
            f"got {batch_size}"
        )
    caches = {main.format: cache}
    if jpeg_cache is not None:
        caches[packed.JPEG] = other_cache(cache, main, Path(jpeg_cache))
    source = Path(src) if src else Path(require_manifest(cache)["source"])
    usable = [main.paths[r] for r in main.usable]
    check_source(source, usable[:decode_images])
    saved_threads = torch.get_num_threads()
    with ExitStack() as stack:
        for fmt in formats:
            if fmt not in caches:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                caches[fmt] = build_cache(cache, source, folder / fmt, fmt, quality, workers)
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, saved_threads)
        stages = [decode_source(source, usable[:decode_images])]
        for fmt in formats:
            stages += format_stages(
                caches[fmt], fmt, batch_size, input_size, batches, workers, device
            )
        if torchvision:
            for w in sorted({0, workers}):
                stages.append(
                    torchvision_stage(source, usable, batch_size, input_size, batches, w, device)
                )
        sizes = {fmt: cache_bytes(caches[fmt], fmt) for fmt in formats}
        built = {fmt: str(caches[fmt]) for fmt in formats}
        jpeg = require_manifest(caches[packed.JPEG])["quality"] if packed.JPEG in formats else None
    report = {
        "machine": machine(device, load_at_start),
        "settings": {
            "caches": built,
            "train_images": int(len(main.usable)),
            "batch_size": batch_size,
            "crop": input_size,
            "batches": batches,
            "workers": workers,
            "torch_threads": threads,
            "jpeg_quality": jpeg,
        },
        "cache_bytes": sizes,
        "stages": stages,
    }
    report["targets"] = targets(report, workers)
    return report


def check_source(source: Path, paths: list[str]) -> None:
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


def machine(device: torch.device, load_at_start: tuple[float, ...]) -> dict:
    return {
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
    }


def decode_source(source: Path, paths: list[str]) -> dict:
    start, cpu, done = time.perf_counter(), cpu_seconds(), 0
    for path in paths:
        try:
            load_256(source / path)
            done += 1
        except BadImage:
            pass
    wall = time.perf_counter() - start
    name = "decode source JPEG -> 256x256 (Pillow, 1 process)"
    return stage(name, "source", done, wall, cpu_seconds() - cpu, 1)


def format_stages(
    cache: Path, fmt: str, batch_size: int, size: int, batches: int, workers: int, device
) -> list[dict]:
    split, stats = open_split(cache, "train"), load_stats(cache)
    plan = make_plan(split.usable, batch_size, size, seed=0, epoch=0)
    picks = [plan.rows[b % len(plan)] for b in range(batches)]
    out = decode_stages(split, fmt, picks, device)
    # a few batches, reused: this stage measures the computation, not the reading
    lighting = Lighting("paper", stats.eigenvalues, stats.eigenvectors)
    mean = mean_crop(stats.mean_image, size).to(device)
    rows = [torch.from_numpy(split.rows(r)).to(device) for r in picks[:4]]

    def augment() -> None:
        for k in range(batches):
            b = k % len(plan)
            crops = crop_flip(rows[k % len(rows)], plan.oy[b], plan.ox[b], plan.flip[b], size)
            to_input(crops, mean, lighting.shift(plan.alpha[b]), lighting.scale)

    name = f"augment: crop, flip, lighting, mean ({device})"
    out.append(timed_stage(name, fmt, batch_size * batches, augment, device))
    for w in sorted({0, workers}):
        passes = partial(
            train_loader, cache, batch_size=batch_size, crop=size, workers=w, device=device
        )
        name = "end to end: train_loader"
        out.append(loader_stage(name, fmt, passes, batch_size, batches, w, device))
    return out


def decode_stages(split: SplitCache, fmt: str, picks: list, device: torch.device) -> list[dict]:
    """Cache rows to uint8 256x256: the raw cache's gather; the JPEG cache's decoders."""
    n = sum(len(r) for r in picks)

    def timed(name: str, run) -> dict:
        return timed_stage(name, fmt, n, lambda: [run(rows) for rows in picks], device)

    if split.packed is None:
        return [timed("read cache rows (memmap gather)", lambda rows: split.images[rows])]
    split.packed.threads = 1
    encoded = [split.packed.encoded(rows) for rows in picks[:4]]  # decoding alone, reused
    pillow = [[bytes(b) for b in torch.split(d, n.tolist())] for d, n in encoded]
    stages = [
        timed("read and decode JPEG rows (torchvision, 1 thread)", split.packed.decode),
        timed("decode JPEG rows (Pillow, 1 thread)", lambda rows: _pillow(pillow[0])),
    ]
    if device.type == "cuda":
        gpu = encoded[0]
        packed.decode_gpu(*gpu, device)  # nvJPEG's start-up, untimed
        name = f"decode JPEG rows (nvJPEG on {device}, batched)"
        stages.append(timed(name, lambda rows: packed.decode_gpu(*gpu, device)))
    return stages


def _pillow(files: list[bytes]) -> None:
    for data in files:
        with Image.open(io.BytesIO(data)) as img:
            np.asarray(img)


def targets(report: dict, workers: int) -> list[dict]:
    """The issue's targets that this report measures: value, bound, met."""
    per_cpu = {(s["format"], s["stage"]): s["images_per_cpu_s"] for s in report["stages"]}
    device = report["machine"]["device"]
    end = f"end to end: train_loader, workers={workers} ({device})"
    tv_stage = f"end to end: ImageFolder + DataLoader, workers={workers} ({device})"
    tv = per_cpu.get(("torchvision", tv_stage))
    jpeg_e2e, sizes = per_cpu.get((packed.JPEG, end)), report["cache_bytes"]
    decode = (packed.JPEG, "read and decode JPEG rows (torchvision, 1 thread)")
    values = {
        "end-to-end raw loader, img/cpu-s": per_cpu.get((packed.RAW, end)),
        "JPEG cache bytes / raw cache bytes": (
            sizes[packed.JPEG] / sizes[packed.RAW] if len(sizes) == 2 else None
        ),
        "JPEG decode (torchvision, CPU), img/cpu-s": per_cpu.get(decode),
        "end-to-end JPEG loader / torchvision ImageFolder, per core": (
            jpeg_e2e / tv if jpeg_e2e and tv else None
        ),
    }
    rows = []
    for name, bound in TARGETS.items():
        v = values[name]
        met = None if v is None else (v <= -bound if bound < 0 else v >= bound)
        rows.append(
            {"target": name, "value": v, "bound": abs(bound), "at_most": bound < 0, "met": met}
        )
    return rows
