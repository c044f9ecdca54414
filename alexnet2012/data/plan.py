"""One epoch's random draws (P §4.1), fixed by (seed, epoch): row order, crop offsets, flips and
lighting, so batches do not depend on the workers and a resume restarts at a batch of the same
plan. floor(n / B) batches, rows ascending in each; every image gets its own draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alexnet2012 import paper


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
    """The plan of epoch ``epoch`` over the usable cache ``rows``. ``crop_chunk`` > 1: runs of
    that many images share their first image's crop and flip, as [C]'s ``crop_chunk``."""
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
