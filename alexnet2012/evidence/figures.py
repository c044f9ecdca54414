"""Figures 3 and 4 of a trained network: three PNGs and ``figures.md`` with their numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet2012.data import cache_info, centre_view, eval_loader
from alexnet2012.data.cache import open_split
from alexnet2012.evidence.kernels import PER_ROW, conv1_kernels, figure3, kernel_stats
from alexnet2012.evidence.neighbours import features, figure4_neighbours, search_training_set
from alexnet2012.evidence.predictions import centre_crops, figure4_predictions, label, top5
from alexnet2012.files import write_file
from alexnet2012.model import AlexNet

FILES = ("fig3_kernels.png", "fig4_predictions.png", "fig4_neighbours.png", "figures.md")
SHOWN, QUERIES, NEIGHBOURS = 8, 5, 6


@dataclass
class Source:
    """Where the network and its data come from, for the report."""

    run: str
    cache: str
    split: str
    crop: int
    trained: str  # how far the network was trained, in words
    mean_image: Any = None  # (3, 256, 256) RGB [0,1] to subtract instead of the cache's


def make_figures(
    model: AlexNet,
    source: Source,
    out: Path,
    *,
    batch_size: int = 128,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Write :data:`FILES` into ``out`` (made if missing); returns ``figures.md``'s path."""
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.columns[0].parameters()).device
    info = cache_info(source.cache)
    names = [label(info.class_names, info.wnids, k) for k in range(info.num_classes)]
    model.eval()

    kernels = conv1_kernels(model)
    stats = kernel_stats(kernels)
    write_file(out / FILES[0], figure3(kernels, stats))

    mean = source.mean_image
    shown = centre_crops(source.cache, source.split, SHOWN, 0.0, source.crop, device, mean)
    probs, classes = top5(features(model, shown.inputs)[1])
    write_file(out / FILES[1], figure4_predictions(shown, probs, classes, names))

    queries = centre_crops(source.cache, source.split, QUERIES, 0.5, source.crop, device, mean)
    batches = eval_loader(
        source.cache, "train", batch_size=batch_size, crop=source.crop, workers=workers,
        device=device, mean_image=mean,
    )  # fmt: skip
    query_fc7 = features(model, queries.inputs)[0]
    distances, positions, found_labels = search_training_set(
        model, query_fc7, batches, NEIGHBOURS, progress
    )
    train = open_split(source.cache, "train")
    found_rows = train.usable[positions]
    found = [
        centre_view(torch.from_numpy(np.ascontiguousarray(train.rows(r))), source.crop).numpy()
        for r in found_rows
    ]
    picture = figure4_neighbours(queries.pictures, queries.labels, found, found_labels, names)
    write_file(out / FILES[2], picture)

    left, right = (shown, probs, classes), (queries, found_rows, distances, found_labels)
    write_file(out / FILES[3], report(source, info, stats, left, right, names))
    return out / FILES[3]


def report(source: Source, info: Any, stats: Any, left: tuple, right: tuple, names) -> str:
    shown, probs, classes = left
    queries, found_rows, distances, found_labels = right
    lines = [
        "# Figures 3 and 4 of a trained network",
        "",
        f"Network `{source.run}`: {source.trained}. Data `{source.cache}` ({info.num_classes} "
        f"classes, {info.train_images} training and "
        f"{info.split_sizes.get(source.split, 0)} {source.split} images). "
        "Written by `scripts/figures.py`.",
        "",
        "## Figure 3: conv1's kernels (`fig3_kernels.png`)",
        "",
        "Colour-specificity index of a kernel: the share of its energy (sum of squared weights, "
        "after removing the kernel's mean) off the grey axis (1, 1, 1)/sqrt(3) of each pixel's "
        "RGB weights. 0: the same weight for R, G and B everywhere (colour-agnostic); 1: the "
        "three sum to zero everywhere (colour-opponent); about 0.67 for random weights.",
        "",
        "| column | kernels | mean index | median | kernels over 0.5 |",
        "|---|---|---|---|---|",
    ]
    for number, index in enumerate(stats.index):
        lines.append(
            f"| {number} | {len(index)} | {index.mean():.3f} | {np.median(index):.3f} | "
            f"{int((index > 0.5).sum())} |"
        )
    lines.append("")
    if stats.p_value is None:
        lines.append("A one-column network: no columns to compare.")
    else:
        lines += [
            f"Column 1 minus column 0: {stats.difference:+.3f}; two-sided permutation test over "
            f"the {sum(len(i) for i in stats.index)} kernels: p = {stats.p_value:.4f} "
            f"({stats.permutations} random relabellings, seed {stats.seed}). P §6.1: one "
            "column's kernels largely colour-agnostic, the other's largely colour-specific, in "
            "every run (which column is which may change)."
        ]
    lines += [
        f"Tiles: {PER_ROW} a row, column 0 on top; each kernel contrast-stretched on its own.",
        "",
        "## Figure 4, left: five most probable labels (`fig4_predictions.png`)",
        "",
        f"{len(shown.rows)} {source.split} images spread evenly through the split; centre crop.",
        "",
        "| row | true label | top-5 (probability) | top-1 | top-5 |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(shown.rows):
        truth = int(shown.labels[i])
        guesses = ", ".join(f"{names[k]} ({p:.2f})" for p, k in zip(probs[i], classes[i]))
        hit1, hit5 = classes[i][0] == truth, truth in classes[i]
        lines.append(f"| {row} | {names[truth]} | {guesses} | {_yes(hit1)} | {_yes(hit5)} |")
    top1 = sum(int(c[0] == t) for c, t in zip(classes, shown.labels))
    top5_hits = sum(int(t in c) for c, t in zip(classes, shown.labels))
    lines += [
        "",
        f"Right at top-1: {top1} of {len(shown.rows)}; within the top 5: {top5_hits}.",
        "",
        "## Figure 4, right: nearest training images in fc7 (`fig4_neighbours.png`)",
        "",
        f"{len(queries.rows)} {source.split} images; the {found_labels.shape[1]} training "
        "images whose fc7 activations (the 4096 inputs of fc8, centre crop) are nearest in "
        "Euclidean distance, from one pass over the training set.",
        "",
        "| row | label | neighbours (training row: label, distance) | same class |",
        "|---|---|---|---|",
    ]
    for i, row in enumerate(queries.rows):
        truth = int(queries.labels[i])
        found = ", ".join(
            f"{r}: {names[k]}, {d:.1f}"
            for r, k, d in zip(found_rows[i], found_labels[i], distances[i])
        )
        same = int((found_labels[i] == truth).sum())
        lines.append(f"| {row} | {names[truth]} | {found} | {same} of {len(found_rows[i])} |")
    same = int((found_labels == queries.labels[:, None]).sum())
    lines += [
        "",
        f"Neighbours of the query's class: {same} of {found_labels.size} "
        f"(chance: {found_labels.size / info.num_classes:.1f}).",
        "",
    ]
    return "\n".join(lines)


def _yes(hit: bool) -> str:
    return "yes" if hit else "no"
