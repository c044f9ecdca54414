"""Figure 3: conv1's kernels by column, and how colour-specific each column is (P §6.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alexnet2012.evidence.predictions import GREY, Canvas, stretch
from alexnet2012.model import AlexNet

PER_ROW, SCALE, GAP = 16, 6, 4
PERMUTATIONS = 10000


def conv1_kernels(model: AlexNet) -> list[np.ndarray]:
    """Each column's conv1 weights as float64 (n, 3, 11, 11), RGB input channels."""
    return [
        column.conv1.weight.detach().float().cpu().numpy().astype(np.float64)
        for column in model.columns
    ]


def colour_specificity(kernels: np.ndarray) -> np.ndarray:
    """Per kernel of ``kernels`` (n, 3, h, w): ``1 - |g|^2 / |w|^2``, with w the kernel minus its
    mean and g its projection per pixel onto the grey axis (1, 1, 1)/sqrt(3). 0: colour-agnostic;
    1: pure colour opponency; 2/3 for white noise; 0 for a constant kernel."""
    w = np.asarray(kernels, dtype=np.float64)
    w = w - w.mean(axis=(1, 2, 3), keepdims=True)
    total = (w**2).sum(axis=(1, 2, 3))
    grey = 3 * (w.mean(axis=1) ** 2).sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, 1.0 - grey / safe, 0.0)


def permutation_test(
    a: np.ndarray, b: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float]:
    """mean(b) - mean(a) and its two-sided p-value ``(1 + hits) / (1 + permutations)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pooled = np.concatenate([a, b])
    observed = b.mean() - a.mean()
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(pooled, (permutations, 1)), axis=1)
    diffs = shuffled[:, len(a) :].mean(axis=1) - shuffled[:, : len(a)].mean(axis=1)
    hits = int((np.abs(diffs) >= abs(observed) - 1e-12).sum())
    return float(observed), (1 + hits) / (1 + permutations)


def tiles(kernels: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w, 3) images of the kernels, each contrast-stretched on its own (Figure 3)."""
    return np.stack([stretch(k.transpose(1, 2, 0)) for k in kernels])


@dataclass
class KernelStats:
    index: list[np.ndarray]  # per column, per kernel
    difference: float | None  # column 1's mean index minus column 0's
    p_value: float | None
    permutations: int
    seed: int


def kernel_stats(kernels: list[np.ndarray], seed: int = 0) -> KernelStats:
    index = [colour_specificity(k) for k in kernels]
    if len(index) < 2:
        return KernelStats(index, None, None, 0, seed)
    difference, p = permutation_test(index[0], index[1], PERMUTATIONS, seed)
    return KernelStats(index, difference, p, PERMUTATIONS, seed)


def figure3(kernels: list[np.ndarray], stats: KernelStats) -> bytes:
    """The PNG: each column's kernels in rows of 16, column 0 on top, its index under each."""
    tile = kernels[0].shape[-1] * SCALE
    step, row_height, header = tile + GAP + 10, tile + 18, 34
    rows = [-(-len(k) // PER_ROW) for k in kernels]
    width = 20 + PER_ROW * step
    height = 50 + sum(header + r * row_height for r in rows) + 40
    c = Canvas(width, height)
    c.text(width / 2, 18, "conv1 kernels (11x11x3), each contrast-stretched", 16, align="center")
    top = 44
    for number, (k, index) in enumerate(zip(kernels, stats.index)):
        where = (
            f"column {number} (the paper's GPU {number + 1})" if len(kernels) > 1 else "one column"
        )
        c.text(20, top + 12, f"{where}: mean colour index {index.mean():.3f}", 14, bold=True)
        top += header
        for i, image in enumerate(tiles(k)):
            left, y = 20 + (i % PER_ROW) * step, top + (i // PER_ROW) * row_height
            c.image(image, left, y, SCALE)
            c.text(left + tile / 2, y + tile + 7, f"{index[i]:.2f}", 10, GREY, "center")
        top += rows[number] * row_height
    if stats.p_value is not None:
        line = (
            f"column 1 - column 0: {stats.difference:+.3f}, permutation p = {stats.p_value:.4f} "
            f"({stats.permutations} relabellings of the kernels, seed {stats.seed})"
        )
    else:
        line = "a one-column network: no columns to compare"
    c.text(20, top + 14, line, 12)
    index = "index: share of a kernel's energy off the grey axis (0 grey, 1 colour)"
    c.text(20, top + 30, index, 11, GREY)
    return c.png()
