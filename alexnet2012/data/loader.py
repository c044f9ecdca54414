"""Batches of one epoch or evaluation, new workers per call (``stream.py``: for a whole run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet2012.data.augment import hwc_mean, mean_crop
from alexnet2012.data.feed import Batches
from alexnet2012.data.stream import EpochBatches, TrainStream
from alexnet2012.data.worker import EvalBatches, dataloader


def train_loader(
    cache_dir: str | os.PathLike, *, epoch: int = 0, start_batch: int = 0, **settings: Any
) -> EpochBatches:
    """Training batches of ``epoch`` from ``start_batch`` on, the same as a run's: a
    :class:`TrainStream` (``settings``: its options) stopped after that epoch. x float32
    (B, 3, S, S) channels-last, y int64 (B,)."""
    stream = TrainStream(
        cache_dir, start_epoch=epoch, start_batch=start_batch, last_epoch=epoch, **settings
    )
    return stream.epoch(epoch)


def eval_loader(
    cache_dir: str | os.PathLike,
    split: str = "val",
    *,
    batch_size: int,
    crop: int = 224,
    views: int = 1,
    workers: int = 2,
    device: str | torch.device = "cpu",
    shard: tuple[int, int] = (0, 1),
    mean_image: np.ndarray | torch.Tensor | None = None,
) -> Batches:
    """Every usable image of ``split``: x (B, 3, S, S) from the centre crop (``views=1``) or
    (B, 10, 3, S, S) from P §4.1's ten views, channels-last; y int64 (B,). ``shard`` (rank,
    world): every world-th batch from the rank-th. ``mean_image``: (3, 256, 256) RGB on [0,1] to
    subtract instead of the cache's (an imported network's)."""
    device = torch.device(device)
    data = EvalBatches(Path(cache_dir), split, batch_size, crop, views, workers, device, shard)
    mean = data.mean
    if mean_image is not None:
        mean = hwc_mean(mean_crop(np.asarray(mean_image, dtype=np.float32), crop))
    return Batches(dataloader(data, workers, device), device, mean.to(device))
