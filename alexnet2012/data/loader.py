"""Batches from the cache for training and evaluation (PAPER_NOTES "Data", P §4.1).

A ``torch.utils.data.DataLoader`` over a *batch-level* dataset (``batch_size=None``): item b is
batch b, read from the memmap with one gather. Its worker processes do the reading, the uint8
cropping/flipping (``augment.crop_flip`` etc.) and the per-image lighting shift (3 numbers); the
float stage (``augment.to_input``: HWC -> CHW, mean subtraction, lighting) runs on the target
device in the calling process, after the uint8 crops arrive (pinned, ``non_blocking``, when the
target is CUDA).

Why the float stage is not in the workers (measured on this project's 2-core machine): a float32
batch is 4x the bytes of its uint8 crops, and a worker's result crosses to the main process
through freshly allocated shared memory, whose page faults cost about as much as the whole
augmentation: with one worker, float32 batches arrived at about 1,060 images/s, uint8 crops
finished in the main process at about 1,600. On a GPU the float stage is nearly free; on a
CPU-only machine it costs the main process ~25 ms per 128 images, far below one training step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet2012.data.augment import (
    Lighting,
    centre_view,
    check_crop,
    crop_flip,
    mean_crop,
    ten_views,
    to_input,
)
from alexnet2012.data.cache import images_path, open_split
from alexnet2012.data.plan import EpochPlan, make_plan
from alexnet2012.data.stats import load_stats
from alexnet2012.errors import UsageError


class _CacheBatches(Dataset):
    """Common part of the batch datasets: the split's memmap, opened lazily in each worker."""

    def __init__(self, cache: Path, split: str, labels: np.ndarray) -> None:
        self.image_file = images_path(cache, split)
        self.labels = labels
        self._images: np.ndarray | None = None

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 (len(rows), 256, 256, 3) for ascending cache ``rows``: one memmap gather."""
        if self._images is None:
            self._images = np.load(self.image_file, mmap_mode="r")
        return torch.from_numpy(self._images[rows])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}


class _TrainBatches(_CacheBatches):
    def __init__(
        self,
        cache: Path,
        labels: np.ndarray,
        plan: EpochPlan,
        start_batch: int,
        crop: int,
        lighting: Lighting,
    ) -> None:
        super().__init__(cache, "train", labels)
        self.plan, self.start_batch, self.crop, self.lighting = plan, start_batch, crop, lighting

    def __len__(self) -> int:
        return len(self.plan) - self.start_batch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        b, p = self.start_batch + i, self.plan
        crops = crop_flip(self.read(p.rows[b]), p.oy[b], p.ox[b], p.flip[b], self.crop)
        return crops, torch.from_numpy(self.labels[p.rows[b]]), self.lighting.shift(p.alpha[b])


class _EvalBatches(_CacheBatches):
    def __init__(
        self,
        cache: Path,
        split: str,
        labels: np.ndarray,
        rows: np.ndarray,
        batch_size: int,
        crop: int,
        views: int,
    ) -> None:
        super().__init__(cache, split, labels)
        self.rows, self.batch_size, self.crop, self.views = rows, batch_size, crop, views

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        rows = self.rows[b * self.batch_size : (b + 1) * self.batch_size]
        images = self.read(rows)
        crops = ten_views(images, self.crop) if self.views == 10 else centre_view(images, self.crop)
        return crops, torch.from_numpy(self.labels[rows]), None


@dataclass
class Batches:
    """Iterable of (x, y) on ``device``; ``len()`` is the number of batches."""

    loader: DataLoader
    device: torch.device
    mean: torch.Tensor
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for crops, labels, shift in self.loader:
            crops = crops.to(self.device, non_blocking=True)
            if shift is not None:
                shift = shift.to(self.device, non_blocking=True)
            yield (
                to_input(crops, self.mean, shift, self.scale),
                labels.to(self.device, non_blocking=True),
            )


def train_loader(
    cache_dir: str | os.PathLike,
    *,
    batch_size: int,
    crop: int = 224,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    workers: int = 2,
    device: str | torch.device = "cpu",
    lighting: str = "paper",
) -> Batches:
    """Training batches of epoch ``epoch``: x float32 (B, 3, S, S), y int64 (B,), on ``device``.

    Random crop at any position, mirror with p = 0.5, PCA lighting (``lighting``: "paper", "2012"
    or "none"; see ``augment.Lighting``), minus the mean image's central crop; all draws from the
    plan of (seed, epoch) (``plan.py``). ``start_batch`` resumes mid-epoch (earlier batches are
    not read). floor(n / B) batches; the remainder of the epoch is dropped.
    """
    cache, crop, device = Path(cache_dir), check_crop(crop), torch.device(device)
    split, stats = open_split(cache, "train"), load_stats(cache)
    light = Lighting(lighting, stats.eigenvalues, stats.eigenvectors)
    plan = make_plan(split.usable, batch_size, crop, seed, epoch)
    if not 0 <= start_batch <= len(plan):
        raise UsageError(
            f"start_batch must be between 0 and the {len(plan)} batches of an epoch, "
            f"not {start_batch}"
        )
    data = _TrainBatches(cache, split.labels, plan, start_batch, crop, light)
    return Batches(
        _dataloader(data, workers, device),
        device,
        mean_crop(stats.mean_image, crop).to(device),
        light.scale,
    )


def eval_loader(
    cache_dir: str | os.PathLike,
    split: str = "val",
    *,
    batch_size: int,
    crop: int = 224,
    views: int = 1,
    workers: int = 2,
    device: str | torch.device = "cpu",
) -> Batches:
    """Every usable image of ``split`` in cache order: x (B, 3, S, S) for ``views=1`` (the centre
    crop) or (B, 10, 3, S, S) for ``views=10`` (P §4.1, ``augment.ten_views``), y int64 (B,); the
    last batch
    may be short. No lighting noise and no [C] 1/1.1 scaling at test time."""
    cache, crop, device = Path(cache_dir), check_crop(crop), torch.device(device)
    if views not in (1, 10):
        raise UsageError(
            f"views must be 1 (centre crop) or 10 (corners, centre and mirrors), not {views}"
        )
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    data_split, stats = open_split(cache, split), load_stats(cache)
    data = _EvalBatches(cache, split, data_split.labels, data_split.usable, batch_size, crop, views)
    return Batches(
        _dataloader(data, workers, device), device, mean_crop(stats.mean_image, crop).to(device)
    )


def _dataloader(data: Dataset, workers: int, device: torch.device) -> DataLoader:
    if workers < 0:
        raise UsageError(f"workers must be 0 (load in this process) or more, not {workers}")
    # A generator of its own: otherwise each new iterator draws its workers' base seed from
    # torch's global RNG, which would shift the dropout masks of a resumed run.
    return DataLoader(
        data,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )
