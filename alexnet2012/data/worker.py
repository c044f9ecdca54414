"""What the loader's worker processes do: item g of a batch-level dataset (``batch_size=None``)
is one whole batch, read from the cache memmap with one gather (a JPEG cache: decoded by a thread
pool) and cropped/flipped as uint8; the float stage waits for the device (``feed.py``), as
float32 is 4x the bytes through shared memory. Towards a GPU a JPEG cache's items are its bytes
(``packed.Encoded``), decoded there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet2012 import paper
from alexnet2012.data import packed
from alexnet2012.data.augment import (
    Lighting,
    centre_view,
    crop_flip,
    hwc_mean,
    mean_crop,
    ten_views,
)
from alexnet2012.data.cache import SplitCache, images_path, open_split
from alexnet2012.data.plan import EpochPlan, make_plan
from alexnet2012.data.stats import load_stats
from alexnet2012.errors import UsageError

# a loader's item: uint8 crops, int64 labels, float32 lighting shifts (or None)
Raw = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
Item = Raw | packed.Encoded


class _CacheBatches(Dataset):
    """``read``: uint8 (B, 256, 256, 3) of cache rows; ``encoded``: a JPEG cache's bytes, when
    the images are decoded on a GPU (``gpu``)."""

    def __init__(self, cache: Path, split: SplitCache, workers: int, gpu: bool) -> None:
        self.image_file = images_path(cache, split.split)
        self.labels = split.labels
        self.packed = split.packed
        self.gpu = gpu and split.packed is not None
        if self.packed is not None:  # decoding threads: the cores left to each worker
            self.packed.threads = max(1, len(os.sched_getaffinity(0)) // max(1, workers))
        self._images: np.ndarray | None = None  # opened in each worker

    def read(self, rows: np.ndarray) -> torch.Tensor:
        if self.packed is not None:
            return self.packed.decode(rows)
        if self._images is None:
            self._images = np.load(self.image_file, mmap_mode="r")
        return torch.from_numpy(self._images[rows])

    def encoded(
        self, rows: np.ndarray, shift: torch.Tensor | None, where: np.ndarray, crop: int, views=1
    ) -> packed.Encoded:
        data, lengths = self.packed.encoded(rows)
        labels = torch.from_numpy(self.labels[rows])
        return packed.Encoded(data, lengths, labels, shift, torch.from_numpy(where), crop, views)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}


class TrainBatches(_CacheBatches):
    """Item g: batch g % per_epoch of epoch g // per_epoch, from the plan of (seed, epoch);
    ``shard`` (rank, world): a replica's part of each batch."""

    KEEP_PLANS = 2  # the epoch being read and the next one

    def __init__(
        self,
        cache: Path,
        split: SplitCache,
        batch_size: int,
        crop: int,
        seed: int,
        lighting: Lighting,
        first: tuple[int, EpochPlan],
        workers: int = 0,
        gpu: bool = False,
        shard: tuple[int, int] = (0, 1),
        crop_chunk: int = 1,
    ) -> None:
        super().__init__(cache, split, workers, gpu)
        self.shard, self.crop_chunk = shard, crop_chunk
        self.usable, self.batch_size, self.crop, self.seed = split.usable, batch_size, crop, seed
        self.lighting = lighting
        self.per_epoch = len(first[1])
        self._plans: dict[int, EpochPlan] = dict([first])

    def plan(self, epoch: int) -> EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            plan = make_plan(
                self.usable, self.batch_size, self.crop, self.seed, epoch, self.crop_chunk
            )
            plan = plan.shard(*self.shard)
            self._plans[epoch] = plan
            while len(self._plans) > self.KEEP_PLANS:
                del self._plans[next(iter(self._plans))]
        return plan

    def __getitem__(self, g: int) -> Item:
        epoch, b = divmod(g, self.per_epoch)
        p = self.plan(epoch)
        shift = self.lighting.shift(p.alpha[b])
        if self.gpu:
            where = np.stack([p.oy[b], p.ox[b], p.flip[b]], axis=1).astype(np.int64)
            return self.encoded(p.rows[b], shift, where, self.crop)
        crops = crop_flip(self.read(p.rows[b]), p.oy[b], p.ox[b], p.flip[b], self.crop)
        return crops, torch.from_numpy(self.labels[p.rows[b]]), shift


class EvalBatches(_CacheBatches):
    """Batches of ``batch_size`` in cache order; ``shard`` (rank, world): every world-th."""

    def __init__(
        self,
        cache: Path,
        split: SplitCache,
        batch_size: int,
        crop: int,
        views: int,
        workers: int = 0,
        gpu: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(cache, split, workers, gpu)
        self.rows, self.batch_size, self.crop, self.views = split.usable, batch_size, crop, views
        self.rank, self.world = shard

    def __len__(self) -> int:
        batches = -(-len(self.rows) // self.batch_size)
        return max(0, -(-(batches - self.rank) // self.world))

    def __getitem__(self, b: int) -> Item:
        b = b * self.world + self.rank
        rows = self.rows[b * self.batch_size : (b + 1) * self.batch_size]
        if self.gpu:
            return self.encoded(rows, None, np.zeros((0, 3), np.int64), self.crop, self.views)
        images = self.read(rows)
        crops = ten_views(images, self.crop) if self.views == 10 else centre_view(images, self.crop)
        return crops, torch.from_numpy(self.labels[rows]), None


class Positions:
    """Sampler of batch numbers ``start`` .. ``stop`` - 1 (None: no end); ``start`` is read when
    an iteration begins, so a persistent loader moves by starting a new iteration."""

    def __init__(self, start: int, stop: int | None) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(
            itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        )


def train_batches(
    cache: Path,
    batch_size: int,
    crop: int,
    seed: int,
    epoch: int,
    start_batch: int,
    lighting: str,
    workers: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
    crop_chunk: int = 1,
) -> tuple[TrainBatches, torch.Tensor, float]:
    """The training dataset (holding ``epoch``'s plan, or ``shard``'s part of it), the mean crop
    and the lighting scale."""
    assert crop in paper.INPUT_SIZES, crop
    split, stats = open_split(cache, "train"), load_stats(cache)
    light = Lighting(lighting, stats.eigenvalues, stats.eigenvectors)
    plan = make_plan(split.usable, batch_size, crop, seed, epoch, crop_chunk).shard(*shard)
    check_start(start_batch, len(plan))
    gpu = device.type == "cuda"
    first = (epoch, plan)
    data = TrainBatches(
        cache, split, batch_size, crop, seed, light, first, workers, gpu, shard, crop_chunk
    )
    return data, hwc_mean(mean_crop(stats.mean_image, crop)), light.scale


def check_start(start_batch: int, per_epoch: int) -> None:
    """A resume position (from a checkpoint) inside the epoch."""
    if not 0 <= start_batch <= per_epoch:
        raise UsageError(
            f"start_batch must be between 0 and the {per_epoch} batches of an epoch, "
            f"not {start_batch}"
        )


def eval_batches(
    cache: Path,
    split: str,
    batch_size: int,
    crop: int,
    views: int,
    workers: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
) -> tuple[EvalBatches, torch.Tensor]:
    """Every usable image of ``split`` in cache order (``shard``'s batches), and the mean crop."""
    assert crop in paper.INPUT_SIZES and views in (1, 10) and batch_size >= 1
    data_split, stats = open_split(cache, split), load_stats(cache)
    gpu = device.type == "cuda"
    data = EvalBatches(cache, data_split, batch_size, crop, views, workers, gpu, shard)
    return data, hwc_mean(mean_crop(stats.mean_image, crop))


def dataloader(
    data: Dataset,
    workers: int,
    device: torch.device,
    sampler: Iterable[int] | None = None,
    persistent: bool = False,
) -> DataLoader:
    assert workers >= 0, workers
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
