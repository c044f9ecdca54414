"""Batches from the cache for training and evaluation (PAPER_NOTES "Data", P §4.1).

A ``torch.utils.data.DataLoader`` over a *batch-level* dataset (``batch_size=None``): item g is
one batch, read from the memmap with one gather. Its worker processes do the reading, the uint8
cropping/flipping (``augment.crop_flip`` etc.) and the per-image lighting shift (3 numbers); the
float stage (``augment.to_input``: mean subtraction, lighting, channels-last float32) runs on the
target device in the calling process, after the uint8 crops arrive. Towards a GPU the crops are
pinned by the loader and copied on a side CUDA stream one batch ahead (``_feed``), so that the
copy of batch b + 1 overlaps the training step on batch b.

Two ways to get batches, with the same batches for the same arguments:

- ``TrainStream`` / ``EvalStreams``: made once per run. One DataLoader whose workers persist
  across epochs (training item g is batch g mod n of epoch g // n, the epoch's plan made lazily
  and cached in each worker), so the workers prefetch the next epoch while validation runs, and
  one persistent loader per kind of evaluation batch, reused at every validation.
- ``train_loader`` / ``eval_loader``: one loader (new workers) per epoch or evaluation.

Training batches are a function of (seed, epoch, batch) alone (``plan.py``), whichever way and
from whichever (epoch, batch) they are read: what exact resume needs.

Why the float stage is not in the workers (measured on this project's 2-core machine): a float32
batch is 4x the bytes of its uint8 crops, and a worker's result crosses to the main process
through freshly allocated shared memory, whose page faults cost about as much as the whole
augmentation: with one worker, float32 batches arrived at about 1,060 images/s, uint8 crops
finished in the main process at about 1,600. On a GPU the float stage is nearly free; on a
CPU-only machine it costs the main process ~25 ms per 128 images, far below one training step.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
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
    hwc_mean,
    mean_crop,
    ten_views,
    to_input,
)
from alexnet2012.data.cache import images_path, open_split
from alexnet2012.data.plan import EpochPlan, make_plan
from alexnet2012.data.stats import load_stats
from alexnet2012.errors import UsageError

# A loader's raw item: uint8 crops, int64 labels, float32 lighting shifts (or None).
_Raw = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


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
    """Item g: batch g % per_epoch of epoch g // per_epoch, from the plan of (seed, epoch)."""

    KEEP_PLANS = 2  # the epoch being read and the next one, around an epoch boundary

    def __init__(
        self,
        cache: Path,
        labels: np.ndarray,
        usable: np.ndarray,
        batch_size: int,
        crop: int,
        seed: int,
        lighting: Lighting,
        first: tuple[int, EpochPlan],
    ) -> None:
        super().__init__(cache, "train", labels)
        self.usable, self.batch_size, self.crop, self.seed = usable, batch_size, crop, seed
        self.lighting = lighting
        self.per_epoch = len(first[1])
        self._plans: dict[int, EpochPlan] = dict([first])

    def plan(self, epoch: int) -> EpochPlan:
        """The plan of ``epoch``, made on first use and kept for the last ``KEEP_PLANS`` epochs."""
        plan = self._plans.get(epoch)
        if plan is None:
            plan = make_plan(self.usable, self.batch_size, self.crop, self.seed, epoch)
            self._plans[epoch] = plan
            while len(self._plans) > self.KEEP_PLANS:
                del self._plans[next(iter(self._plans))]
        return plan

    def __getitem__(self, g: int) -> _Raw:
        epoch, b = divmod(g, self.per_epoch)
        p = self.plan(epoch)
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

    def __getitem__(self, b: int) -> _Raw:
        rows = self.rows[b * self.batch_size : (b + 1) * self.batch_size]
        images = self.read(rows)
        crops = ten_views(images, self.crop) if self.views == 10 else centre_view(images, self.crop)
        return crops, torch.from_numpy(self.labels[rows]), None


class _Positions:
    """Sampler of global batch numbers ``start``, ``start + 1``, ... up to ``stop`` (exclusive;
    None: without end). ``start`` is read when an iteration begins, so that a persistent loader
    can be moved to another position by starting a new iteration."""

    def __init__(self, start: int, stop: int | None) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(
            itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        )


@dataclass
class Batches:
    """Iterable of (x, y) on ``device``; ``len()`` is the number of batches. x is float32,
    channels-last (``augment.to_input``); each iteration starts a pass of ``loader`` (with
    persistent workers, the same workers)."""

    loader: DataLoader
    device: torch.device
    mean: torch.Tensor
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _feed(iter(self.loader), self.device, self.mean, self.scale)


def _feed(
    raw: Iterable[_Raw], device: torch.device, mean: torch.Tensor, scale: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) on ``device`` from the loader's raw items: ``to_input`` on the device.

    CUDA: double-buffered copies on a side stream. Batch b + 1's (pinned) uint8 crops, labels
    and shifts are queued for copying on the side stream before batch b is handed out, so the
    copy runs while the caller's stream trains on b. Before using a batch, the caller's current
    stream waits for the event recorded after its copy, and ``record_stream`` tells the caching
    allocator that the copies are used on that stream (they were allocated on the side stream),
    so their memory is not reused before the caller's work on them is done. Elsewhere: plain
    copies (none on the CPU).
    """
    if device.type != "cuda":
        for crops, labels, shift in raw:
            crops = crops.to(device, non_blocking=True)
            if shift is not None:
                shift = shift.to(device, non_blocking=True)
            yield to_input(crops, mean, shift, scale), labels.to(device, non_blocking=True)
        return
    side = torch.cuda.Stream(device)

    def send(item: _Raw) -> tuple[list, torch.cuda.Event]:
        with torch.cuda.stream(side):
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


class TrainStream:
    """Training batches of every epoch of a run from one DataLoader whose workers persist.

    Create it once per run, at the (``start_epoch``, ``start_batch``) where training starts or
    resumes; its workers start at once and stay ahead of the caller (``prefetch_factor`` = 2
    batches each), into the next epoch while the caller validates. ``epoch(e)`` gives epoch e's
    batches, the same as ``train_loader(..., epoch=e, start_batch=...)`` with the same arguments
    (x float32 (B, 3, S, S) channels-last, y int64 (B,), on ``device``). Asking for another
    position than the one the workers are at (an epoch left half-read, an epoch out of order)
    restarts them there, with the same batches. ``last_epoch`` (optional) stops the prefetching
    after that epoch. ``close()`` (or leaving a ``with`` block) stops the workers.
    """

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
    ) -> None:
        data, mean, scale = _train_batches(
            Path(cache_dir), batch_size, crop, seed, start_epoch, start_batch, lighting
        )
        if last_epoch is not None and last_epoch < start_epoch:
            raise UsageError(
                f"last_epoch must be at least start_epoch {start_epoch}, not {last_epoch}"
            )
        self.per_epoch = data.per_epoch
        self.start_epoch, self.start_batch, self.last_epoch = start_epoch, start_batch, last_epoch
        self.device = torch.device(device)
        self._mean, self._scale = mean.to(self.device), scale
        stop = None if last_epoch is None else (last_epoch + 1) * data.per_epoch
        self._positions = _Positions(start_epoch * data.per_epoch + start_batch, stop)
        self._loader: DataLoader | None = _dataloader(
            data, workers, self.device, sampler=self._positions, persistent=True
        )
        self._iterator: Iterator[_Raw] | None = iter(self._loader)  # starts the workers
        self._next = self._positions.start  # the global batch number the iterator yields next

    def epoch(self, epoch: int, start_batch: int | None = None) -> _EpochBatches:
        """Epoch ``epoch``'s batches from ``start_batch`` on (default: the stream's
        ``start_batch`` for its ``start_epoch``, 0 for any other epoch). Iterate one at a time."""
        if start_batch is None:
            start_batch = self.start_batch if epoch == self.start_epoch else 0
        if not 0 <= start_batch <= self.per_epoch:
            raise UsageError(
                f"start_batch must be between 0 and the {self.per_epoch} batches of an epoch, "
                f"not {start_batch}"
            )
        if epoch < 0:
            raise UsageError(f"epoch must be non-negative, not {epoch}")
        if self.last_epoch is not None and epoch > self.last_epoch:
            raise UsageError(f"epoch {epoch} is after the stream's last_epoch {self.last_epoch}")
        return _EpochBatches(self, epoch, start_batch)

    def _raw(self, first: int, stop: int) -> Iterator[_Raw]:
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
        """Process ids of the loader's workers ([] with ``workers=0``): the same ones for the
        stream's whole life."""
        return [w.pid for w in getattr(self._iterator, "_workers", [])]

    def close(self) -> None:
        """Stop the workers; the stream yields nothing afterwards. Safe to call twice."""
        iterator, self._iterator, self._loader = self._iterator, None, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> TrainStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _EpochBatches:
    """One epoch of a ``TrainStream`` from ``start_batch`` on; ``len()`` is its batch count."""

    stream: TrainStream
    epoch: int
    start_batch: int

    def __len__(self) -> int:
        return self.stream.per_epoch - self.start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.stream
        first = self.epoch * s.per_epoch
        raw = s._raw(first + self.start_batch, first + s.per_epoch)
        return _feed(raw, s.device, s._mean, s._scale)


class EvalStreams:
    """Evaluation batches with persistent workers: one loader per (split, views, batch_size),
    made on first use and reused by every later ``batches`` call with the same key, so that a
    validation does not start new worker processes. Each key holds ``workers`` processes until
    ``close()`` (or the end of a ``with`` block). Batches are those of ``eval_loader``."""

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        crop: int = 224,
        workers: int = 2,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cache, self.crop, self.device = Path(cache_dir), check_crop(crop), torch.device(device)
        self.workers = _check_workers(workers)
        self._batches: dict[tuple[str, int, int], Batches] = {}

    def batches(self, split: str = "val", *, batch_size: int, views: int = 1) -> Batches:
        """The reusable ``eval_loader(cache, split, batch_size=, views=, ...)`` batches."""
        key = (split, views, batch_size)
        if key not in self._batches:
            self._batches[key] = _eval_batches(
                self.cache,
                split,
                batch_size,
                self.crop,
                views,
                self.workers,
                self.device,
                persistent=True,
            )
        return self._batches[key]

    def close(self) -> None:
        """Stop every loader's workers. Safe to call twice."""
        loaders, self._batches = self._batches, {}
        for batches in loaders.values():
            iterator = batches.loader._iterator
            batches.loader._iterator = None
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def __enter__(self) -> EvalStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """Training batches of epoch ``epoch``: x float32 (B, 3, S, S) channels-last, y int64 (B,),
    on ``device``.

    Random crop at any position, mirror with p = 0.5, PCA lighting (``lighting``: "paper", "2012"
    or "none"; see ``augment.Lighting``), minus the mean image's central crop; all draws from the
    plan of (seed, epoch) (``plan.py``). ``start_batch`` resumes mid-epoch (earlier batches are
    not read). floor(n / B) batches; the remainder of the epoch is dropped. New workers for each
    call; ``TrainStream`` keeps them for a whole run.
    """
    device = torch.device(device)
    data, mean, scale = _train_batches(
        Path(cache_dir), batch_size, crop, seed, epoch, start_batch, lighting
    )
    first = epoch * data.per_epoch
    positions = range(first + start_batch, first + data.per_epoch)
    return Batches(
        _dataloader(data, workers, device, sampler=positions), device, mean.to(device), scale
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
    crop) or (B, 10, 3, S, S) for ``views=10`` (P §4.1, ``augment.ten_views``), channels-last,
    y int64 (B,); the last batch may be short. No lighting noise and no [C] 1/1.1 scaling at
    test time. New workers for each pass; ``EvalStreams`` keeps them."""
    return _eval_batches(
        Path(cache_dir),
        split,
        batch_size,
        check_crop(crop),
        views,
        workers,
        torch.device(device),
        persistent=False,
    )


def _train_batches(
    cache: Path,
    batch_size: int,
    crop: int,
    seed: int,
    epoch: int,
    start_batch: int,
    lighting: str,
) -> tuple[_TrainBatches, torch.Tensor, float]:
    """The training dataset (holding ``epoch``'s plan), the mean crop and the lighting scale;
    the arguments checked."""
    crop = check_crop(crop)
    split, stats = open_split(cache, "train"), load_stats(cache)
    light = Lighting(lighting, stats.eigenvalues, stats.eigenvectors)
    plan = make_plan(split.usable, batch_size, crop, seed, epoch)
    if not 0 <= start_batch <= len(plan):
        raise UsageError(
            f"start_batch must be between 0 and the {len(plan)} batches of an epoch, "
            f"not {start_batch}"
        )
    data = _TrainBatches(
        cache, split.labels, split.usable, batch_size, crop, seed, light, (epoch, plan)
    )
    return data, hwc_mean(mean_crop(stats.mean_image, crop)), light.scale


def _eval_batches(
    cache: Path,
    split: str,
    batch_size: int,
    crop: int,
    views: int,
    workers: int,
    device: torch.device,
    persistent: bool,
) -> Batches:
    if views not in (1, 10):
        raise UsageError(
            f"views must be 1 (centre crop) or 10 (corners, centre and mirrors), not {views}"
        )
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    data_split, stats = open_split(cache, split), load_stats(cache)
    data = _EvalBatches(cache, split, data_split.labels, data_split.usable, batch_size, crop, views)
    return Batches(
        _dataloader(data, workers, device, persistent=persistent),
        device,
        hwc_mean(mean_crop(stats.mean_image, crop)).to(device),
    )


def _check_workers(workers: int) -> int:
    if workers < 0:
        raise UsageError(f"workers must be 0 (load in this process) or more, not {workers}")
    return workers


def _dataloader(
    data: Dataset,
    workers: int,
    device: torch.device,
    sampler: Iterable[int] | None = None,
    persistent: bool = False,
) -> DataLoader:
    _check_workers(workers)
    # A generator of its own: otherwise each new iterator draws its workers' base seed from
    # torch's global RNG, which would shift the dropout masks of a resumed run.
    return DataLoader(
        data,
        batch_size=None,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator(),
    )
