"""What the loader's worker processes do: an item is one whole batch, read from the cache with one
gather (a JPEG cache: decoded by threads) and cropped as uint8; the float stage waits for the
device (``stream.feed``). Towards a GPU a JPEG cache's items are its bytes, decoded there.

Each epoch's random draws (P §4.1) are fixed by (seed, epoch): row order, crop offsets, flips and
lighting, so batches do not depend on the workers and a resume restarts at a batch of the same
plan. floor(n / B) batches, rows ascending in each; every image gets its own draws."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
from alexnet2012.data.cache import images_path, open_split
from alexnet2012.data.stats import load_stats
from alexnet2012.errors import UsageError

# a loader's item: uint8 crops, int64 labels, float32 lighting shifts (or None)
Raw = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
Item = Raw | packed.Encoded


@dataclass(frozen=True)
class EpochPlan:
    """Arrays indexed [batch, position] (``alpha``: [batch, position, rgb])."""

    rows: np.ndarray  # int64 cache rows
    oy: np.ndarray  # int64 crop offsets
    ox: np.ndarray
    flip: np.ndarray  # bool
    alpha: np.ndarray  # float32 lighting draws

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, rank: int, world: int) -> EpochPlan:
        """Replica ``rank`` of ``world``'s part of every batch: its 1/world of the positions."""
        if world == 1:
            return self
        n = self.rows.shape[1] // world
        assert 0 <= rank < world and n * world == self.rows.shape[1], (rank, world)
        part = slice(rank * n, (rank + 1) * n)
        arrays = (self.rows, self.oy, self.ox, self.flip, self.alpha)
        return EpochPlan(*(a[:, part] for a in arrays))


def make_plan(
    rows: np.ndarray, batch_size: int, crop: int, seed: int, epoch: int, crop_chunk: int = 1
) -> EpochPlan:
    """Epoch ``epoch``'s plan over ``rows``; ``crop_chunk``: images sharing a crop, as [C]'s."""
    assert crop in paper.INPUT_SIZES and 1 <= batch_size <= len(rows), (crop, batch_size)
    assert seed >= 0 and epoch >= 0, (seed, epoch)
    rng = np.random.default_rng([seed, epoch])
    batches = len(rows) // batch_size
    shape = (batches, batch_size)
    order = np.sort(rng.permutation(len(rows))[: batches * batch_size].reshape(shape), axis=1)
    positions = paper.IMAGE_SIZE - crop + 1
    oy, ox = rng.integers(0, positions, shape), rng.integers(0, positions, shape)
    flip = rng.random(shape) < 0.5
    alpha = rng.normal(0.0, paper.LIGHTING_STD, (*shape, 3)).astype(np.float32)
    if crop_chunk > 1:
        oy, ox, flip = (
            np.repeat(a.ravel()[::crop_chunk], crop_chunk)[: a.size].reshape(shape)
            for a in (oy, ox, flip)
        )
    return EpochPlan(np.asarray(rows, np.int64)[order], oy, ox, flip, alpha)


class _CacheBatches(Dataset):
    """Batches of a split's rows; ``mean``: the mean crop as ``to_input`` takes it; ``read``:
    uint8 (B, 256, 256, 3) of cache rows; ``encoded``: a JPEG cache's bytes, to decode on a GPU."""

    def __init__(
        self,
        cache: Path,
        split: str,
        crop: int,
        workers: int,
        device: torch.device,
        lighting="none",
    ) -> None:
        assert crop in paper.INPUT_SIZES and workers >= 0, (crop, workers)
        data, stats = open_split(cache, split), load_stats(cache)
        self.image_file, self.usable = images_path(cache, split), data.usable
        self.labels, self.packed, self.crop = data.labels, data.packed, crop
        self.gpu = device.type == "cuda" and data.packed is not None
        self.mean = hwc_mean(mean_crop(stats.mean_image, crop))
        self.lighting = Lighting(lighting, stats.eigenvalues, stats.eigenvectors)
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
        self, rows: np.ndarray, shift: torch.Tensor | None, where: np.ndarray, views=1
    ) -> packed.Encoded:
        data, lengths = self.packed.encoded(rows)
        labels = torch.from_numpy(self.labels[rows])
        return packed.Encoded(
            data, lengths, labels, shift, torch.from_numpy(where), self.crop, views
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}


class TrainBatches(_CacheBatches):
    """Item g: batch g % per_epoch of epoch g // per_epoch; ``shard``: (rank, world) of a batch."""

    KEEP_PLANS = 2  # the epoch being read and the next one

    def __init__(
        self,
        cache: Path,
        batch_size: int,
        crop: int,
        seed: int,
        epoch: int,
        lighting: str,
        workers: int,
        device: torch.device,
        shard: tuple[int, int] = (0, 1),
        crop_chunk: int = 1,
    ) -> None:
        super().__init__(cache, "train", crop, workers, device, lighting)
        self.batch_size, self.seed, self.shard, self.crop_chunk = (
            batch_size,
            seed,
            shard,
            crop_chunk,
        )
        self._plans: dict[int, EpochPlan] = {}
        self.per_epoch = len(self.plan(epoch))

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            plan = make_plan(
                self.usable, self.batch_size, self.crop, self.seed, epoch, self.crop_chunk
            )
            self._plans[epoch] = plan.shard(*self.shard)
            while len(self._plans) > self.KEEP_PLANS:
                del self._plans[next(iter(self._plans))]
        return self._plans[epoch]

    def __getitem__(self, g: int) -> Item:
        epoch, b = divmod(g, self.per_epoch)
        p = self.plan(epoch)
        shift = self.lighting.shift(p.alpha[b])
        if self.gpu:
            where = np.stack([p.oy[b], p.ox[b], p.flip[b]], axis=1).astype(np.int64)
            return self.encoded(p.rows[b], shift, where)
        crops = crop_flip(self.read(p.rows[b]), p.oy[b], p.ox[b], p.flip[b], self.crop)
        return crops, torch.from_numpy(self.labels[p.rows[b]]), shift


class EvalBatches(_CacheBatches):
    """Every usable image of ``split``; ``shard``: every world-th batch from the rank-th."""

    def __init__(
        self,
        cache: Path,
        split: str,
        batch_size: int,
        crop: int,
        views: int,
        workers: int,
        device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        assert views in (1, 10) and batch_size >= 1, (views, batch_size)
        super().__init__(cache, split, crop, workers, device)
        self.batch_size, self.views, (self.rank, self.world) = batch_size, views, shard

    def __len__(self) -> int:
        batches = -(-len(self.usable) // self.batch_size)
        return max(0, -(-(batches - self.rank) // self.world))

    def __getitem__(self, b: int) -> Item:
        b = b * self.world + self.rank
        rows = self.usable[b * self.batch_size : (b + 1) * self.batch_size]
        if self.gpu:
            return self.encoded(rows, None, np.zeros((0, 3), np.int64), self.views)
        images = self.read(rows)
        crops = ten_views(images, self.crop) if self.views == 10 else centre_view(images, self.crop)
        return crops, torch.from_numpy(self.labels[rows]), None


class Positions:
    """Batch numbers ``start`` .. ``stop`` - 1, ``start`` read as an iteration begins."""

    def __init__(self, start: int, stop: int | None) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(
            itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        )


def check_start(start_batch: int, per_epoch: int) -> None:
    """A resume position (from a checkpoint) inside the epoch."""
    if not 0 <= start_batch <= per_epoch:
        raise UsageError(
            f"start_batch must be between 0 and the {per_epoch} batches of an epoch, "
            f"not {start_batch}"
        )


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
