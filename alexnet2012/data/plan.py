"""One epoch's random draws, fixed in advance by (seed, epoch) (P §4.1 augmentation).

Every per-image random choice of a training epoch comes from one generator,
``numpy.random.default_rng([seed, epoch])``, drawn in a fixed order: the permutation of the
usable training rows, the crop offsets (oy, ox in 0..256-S inclusive: all 33 positions per axis
for S = 224, as [C]; 30 for 227), the flip bits (p = 0.5) and the lighting draws a ~ N(0, 0.1)
(3 per image, P §4.1). The plan does not depend on the number of loader workers, and resuming
mid-epoch is starting at a batch index of the same plan. An epoch is floor(n / B) full batches;
the remainder is dropped. Rows within a batch are in ascending order (reads closer together on
disk; the order inside a batch does not matter to SGD). Unlike [C], which cropped and flipped 32
consecutive images alike and reused colour noise when its noise thread fell behind, every image
gets its own draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alexnet2012.data.augment import IMAGE_SIZE, LIGHTING_STD, check_crop
from alexnet2012.errors import UsageError


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


def make_plan(rows: np.ndarray, batch_size: int, crop: int, seed: int, epoch: int) -> EpochPlan:
    """The plan of epoch ``epoch`` over the usable cache ``rows`` (see the module docstring)."""
    check_crop(crop)
    if batch_size < 1 or batch_size > len(rows):
        raise UsageError(
            f"batch_size must be between 1 and the {len(rows)} training images, not {batch_size}"
        )
    if seed < 0 or epoch < 0:
        raise UsageError(f"seed and epoch must be non-negative, not {seed} and {epoch}")
    rng = np.random.default_rng([seed, epoch])
    batches = len(rows) // batch_size
    shape = (batches, batch_size)
    order = np.sort(rng.permutation(len(rows))[: batches * batch_size].reshape(shape), axis=1)
    positions = IMAGE_SIZE - crop + 1
    return EpochPlan(
        rows=np.asarray(rows, np.int64)[order],
        oy=rng.integers(0, positions, shape),
        ox=rng.integers(0, positions, shape),
        flip=rng.random(shape) < 0.5,
        alpha=rng.normal(0.0, LIGHTING_STD, (*shape, 3)).astype(np.float32),
    )
