"""The loaders: items -> (x, y) on the device, where ``augment.to_input`` runs (towards a GPU the
crops are copied on a side stream one batch ahead); a run's loaders, whose workers persist
(training batches of every epoch from one DataLoader, one evaluation loader per kind); and
``train_loader``, ``eval_loader``: one epoch or evaluation, new workers per call."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from alexnet2012 import paper
from alexnet2012.data import packed
from alexnet2012.data.augment import hwc_mean, mean_crop, to_input
from alexnet2012.data.worker import (
    EvalBatches,
    Item,
    Positions,
    TrainBatches,
    check_start,
    dataloader,
)
from alexnet2012.errors import UsageError


@dataclass
class Batches:
    """(x float32 channels-last, y int64) on ``device``, a pass of ``loader`` per iteration."""

    loader: DataLoader
    device: torch.device
    mean: torch.Tensor
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return feed(iter(self.loader), self.device, self.mean, self.scale)


@cache
def side_stream(device: torch.device) -> torch.cuda.Stream:
    """One copy stream per device for every pass: the allocator keeps blocks per stream."""
    return torch.cuda.Stream(device)


def feed(
    raw: Iterable[Item], device: torch.device, mean: torch.Tensor, scale: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """CUDA: batch b + 1 is queued on the side stream before b is handed out; the caller's stream
    waits for its copy, and ``record_stream`` keeps the copies until its work on them is done."""
    if device.type != "cuda":
        for crops, labels, shift in raw:
            crops = crops.to(device, non_blocking=True)
            if shift is not None:
                shift = shift.to(device, non_blocking=True)
            yield to_input(crops, mean, shift, scale), labels.to(device, non_blocking=True)
        return
    side = side_stream(device)

    def send(item: Item) -> tuple[list, torch.cuda.Event]:
        with torch.cuda.stream(side):
            if isinstance(item, packed.Encoded):
                item = packed.to_device(item, device)
            copies = [None if t is None else t.to(device, non_blocking=True) for t in item]
            return copies, side.record_event()

    def receive(sent: tuple[list, torch.cuda.Event]) -> tuple[torch.Tensor, torch.Tensor]:
        (crops, labels, shift), copied = sent
        stream = torch.cuda.current_stream(device)
        stream.wait_event(copied)
        for t in (crops, labels, shift):
            if t is not None:
                t.record_stream(stream)
        return to_input(crops, mean, shift, scale), labels

    ahead = None
    for item in raw:
        sent = send(item)
        if ahead is not None:
            yield receive(ahead)
        ahead = sent
    if ahead is not None:
        yield receive(ahead)


class TrainStream(AbstractContextManager):
    """Training batches of a run from (``start_epoch``, ``start_batch``) on; ``epoch(e)`` gives
    epoch e's, moving the workers there if need be. ``last_epoch``: no prefetching after it.
    ``shard``, ``crop_chunk``: as ``TrainBatches``'. ``close()`` stops the workers."""

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        batch_size: int,
        crop: int = 224,
        seed: int = 0,
        start_epoch: int = 0,
        start_batch: int = 0,
        workers: int = 2,
        device: str | torch.device = "cpu",
        lighting: str = "paper",
        last_epoch: int | None = None,
        shard: tuple[int, int] = (0, 1),
        crop_chunk: int = 1,
    ) -> None:
        self.device = torch.device(device)
        data = TrainBatches(
            Path(cache_dir),
            batch_size,
            crop,
            seed,
            start_epoch,
            lighting,
            workers,
            self.device,
            shard,
            crop_chunk,
        )
        check_start(start_batch, data.per_epoch)
        if last_epoch is not None and last_epoch < start_epoch:
            raise UsageError(
                f"last_epoch must be at least start_epoch {start_epoch}, not {last_epoch}"
            )
        self.per_epoch = data.per_epoch
        self.start_epoch, self.start_batch, self.last_epoch = start_epoch, start_batch, last_epoch
        self._mean, self._scale = data.mean.to(self.device), data.lighting.scale
        stop = None if last_epoch is None else (last_epoch + 1) * data.per_epoch
        self._positions = Positions(start_epoch * data.per_epoch + start_batch, stop)
        self._loader: DataLoader | None = dataloader(
            data, workers, self.device, sampler=self._positions, persistent=True
        )
        self._iterator: Iterator[Item] | None = iter(self._loader)  # starts the workers
        self._next = self._positions.start  # the batch number the iterator yields next

    def epoch(self, epoch: int, start_batch: int | None = None) -> EpochBatches:
        """Epoch ``epoch`` from ``start_batch`` (default: the stream's, else 0), one at a time."""
        assert epoch >= 0, epoch
        if start_batch is None:
            start_batch = self.start_batch if epoch == self.start_epoch else 0
        check_start(start_batch, self.per_epoch)
        if self.last_epoch is not None and epoch > self.last_epoch:
            raise UsageError(f"epoch {epoch} is after the stream's last_epoch {self.last_epoch}")
        return EpochBatches(self, epoch, start_batch)

    def raw(self, first: int, stop: int) -> Iterator[Item]:
        """The loader's items ``first`` .. ``stop - 1``, moving the workers there if need be."""
        if self._loader is None:
            raise UsageError("this TrainStream is closed")
        if first >= stop:
            return
        if self._next != first:
            self._positions.start = first
            self._iterator = iter(self._loader)  # same workers; drops what they prefetched
            self._next = first
        while self._next < stop:
            if self._iterator is None:
                raise UsageError("this TrainStream was closed while an epoch was being read")
            item = next(self._iterator)
            self._next += 1
            yield item

    def worker_pids(self) -> list[int]:
        return [w.pid for w in getattr(self._iterator, "_workers", [])]

    def close(self) -> None:
        iterator, self._iterator, self._loader = self._iterator, None, None
        _shut_down(iterator)

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class EpochBatches:
    """One epoch of a ``TrainStream`` from ``start_batch`` on."""

    stream: TrainStream
    epoch: int
    start_batch: int

    def __len__(self) -> int:
        return self.stream.per_epoch - self.start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.stream
        first = self.epoch * s.per_epoch
        raw = s.raw(first + self.start_batch, first + s.per_epoch)
        return feed(raw, s.device, s._mean, s._scale)


class EvalStreams(AbstractContextManager):
    """``eval_loader``'s batches from one persistent loader per (split, views, batch_size)."""

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        crop: int = 224,
        workers: int = 2,
        device: str | torch.device = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        assert crop in paper.INPUT_SIZES and workers >= 0, (crop, workers)
        self.cache, self.crop, self.device = Path(cache_dir), crop, torch.device(device)
        self.workers, self.shard = workers, shard
        self._batches: dict[tuple[str, int, int], Batches] = {}

    def batches(self, split: str = "val", *, batch_size: int, views: int = 1) -> Batches:
        key = (split, views, batch_size)
        if key not in self._batches:
            data = EvalBatches(
                self.cache,
                split,
                batch_size,
                self.crop,
                views,
                self.workers,
                self.device,
                self.shard,
            )
            loader = dataloader(data, self.workers, self.device, persistent=True)
            self._batches[key] = Batches(loader, self.device, data.mean.to(self.device))
        return self._batches[key]

    def close(self) -> None:
        loaders, self._batches = self._batches, {}
        for batches in loaders.values():
            iterator, batches.loader._iterator = batches.loader._iterator, None
            _shut_down(iterator)

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _shut_down(iterator: object) -> None:
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
