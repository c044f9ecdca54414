"""Figure 4, right: the training images nearest to a few query images in fc7, in one pass."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alexnet2012.evidence.predictions import GREEN, INK, RED, Canvas, Colour, picture, wrap
from alexnet2012.model import AlexNet
from alexnet2012.progress import track


@contextmanager
def fc7_of(model: AlexNet) -> Iterator[list[Tensor]]:
    """While open, each forward pass appends fc8's input (float32, on its device) to the list."""
    seen: list[Tensor] = []
    hook = model.fc8.register_forward_pre_hook(lambda _, args: seen.append(args[0].float()))
    try:
        yield seen
    finally:
        hook.remove()


@torch.no_grad()
def features(model: AlexNet, x: Tensor) -> Tensor:
    """fc7 activations (n, 4096) and the logits of the inputs ``x`` in eval mode."""
    with fc7_of(model) as seen:
        logits = model.eval()(x)
    return seen[0], logits


class Nearest:
    """The ``k`` nearest of the items seen so far (by :meth:`add`) to each query."""

    def __init__(self, queries: Tensor, k: int):
        self.queries, self.k = queries.float(), k
        n = len(queries)
        self.distances = torch.full((n, 0), float("inf"), device=queries.device)
        self.indices = torch.zeros((n, 0), dtype=torch.int64, device=queries.device)

    def add(self, items: Tensor, first: int) -> None:
        """``items`` (m, d): the items numbered ``first`` .. ``first + m - 1``."""
        d = torch.cdist(self.queries, items.float(), compute_mode="donot_use_mm_for_euclid_dist")
        numbers = torch.arange(first, first + len(items), device=d.device).expand(len(d), -1)
        d, numbers = torch.cat([self.distances, d], 1), torch.cat([self.indices, numbers], 1)
        best = d.topk(min(self.k, d.shape[1]), dim=1, largest=False, sorted=True).indices
        self.distances, self.indices = d.gather(1, best), numbers.gather(1, best)


def nearest(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 1024):
    """(distances, indices) (q, k), nearest first, of ``items`` to each query, in chunks."""
    search = Nearest(torch.as_tensor(queries), k)
    for first in range(0, len(items), chunk):
        search.add(torch.as_tensor(items[first : first + chunk]), first)
    return search.distances.cpu().numpy(), search.indices.cpu().numpy()


@torch.no_grad()
def search_training_set(
    model: AlexNet,
    queries: Tensor,
    batches: Iterable[tuple[Tensor, Tensor]],
    k: int,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances, positions and labels of the ``k`` images of ``batches`` nearest each query."""
    search, labels, seen = Nearest(queries, k), [], 0
    model.eval()
    with fc7_of(model) as fc7:
        for x, y in track(batches, "fc7 of the training set", enabled=progress):
            model(x)
            search.add(fc7.pop(), seen)
            labels.append(y.cpu())
            seen += len(y)
    positions = search.indices.cpu().numpy()
    return search.distances.cpu().numpy(), positions, torch.cat(labels).numpy()[positions]


def figure4_neighbours(
    queries: np.ndarray,
    query_labels: np.ndarray,
    found: list[list[np.ndarray]],
    found_labels: np.ndarray,
    names: list[str],
) -> bytes:
    """The PNG: a row per query and its neighbours, labels green for the query's class, else red."""
    side, step, k = 128, 136, found_labels.shape[1]
    row_height = side + 44
    c = Canvas(40 + step * (k + 1) + 10, 52 + len(queries) * row_height + 20)
    title = "validation images (left) and the training images nearest in fc7 (Euclidean)"
    c.text(c.size[0] / 2, 20, title, 16, align="center")
    for i, query in enumerate(queries):
        top = 44 + i * row_height
        c.rect((16, top - 4, 16 + side + 8, top + side + 4), fill=INK)
        c.image(picture(query, side), 20, top)
        _name(c, 20 + side / 2, top + side + 12, names[query_labels[i]], INK, bold=True)
        for j in range(k):
            left = 40 + step * (j + 1)
            c.image(picture(found[i][j], side), left, top)
            colour = GREEN if found_labels[i, j] == query_labels[i] else RED
            _name(c, left + side / 2, top + side + 12, names[found_labels[i, j]], colour)
    return c.png()


def _name(c: Any, x: float, y: float, name: str, colour: Colour, bold: bool = False) -> None:
    for n, line in enumerate(wrap(name, 22)):
        c.text(x, y + 13 * n, line, 11, colour, "center", bold)
