"""Figure 4, left: validation images with the network's five most probable labels. Also the
inputs of chosen cache rows, as the centre-crop loader makes them, the figure's pictures, and the
pixel canvas every figure is drawn on (matplotlib)."""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from alexnet2012.data import centre_view, load_stats, mean_crop, to_input
from alexnet2012.data.cache import open_split
from alexnet2012.plot import Colour, rgb

INK: Colour = (0, 0, 0)
GREY: Colour = (150, 150, 150)
BLUE: Colour = (31, 119, 180)
GREEN: Colour = (44, 160, 44)
RED: Colour = (214, 39, 40)


class Canvas:
    """A matplotlib figure in pixels (y down), each thing drawn above those drawn before it."""

    DPI = 100

    def __init__(self, width: int, height: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.size = (width, height)
        self.figure = Figure(figsize=(width / self.DPI, height / self.DPI), dpi=self.DPI)
        FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_xlim(0, width)
        self.axes.set_ylim(height, 0)
        self.axes.set_autoscale_on(False)
        self.axes.axis("off")
        self.drawn = 0

    def _next(self) -> int:
        self.drawn += 1
        return self.drawn

    def image(self, pixels: np.ndarray, left: int, top: int, scale: int = 1) -> None:
        h, w = pixels.shape[:2]
        extent = (left, left + w * scale, top + h * scale, top)
        self.axes.imshow(
            pixels, extent=extent, interpolation="nearest", aspect="auto", zorder=self._next()
        )

    def text(
        self,
        x: float,
        y: float,
        words: str,
        size: int = 12,
        colour: Colour = INK,
        align: str = "left",
        bold: bool = False,
    ) -> None:
        """``words`` with their vertical middle at ``y``; ``align``: where ``x`` is."""
        self.axes.text(
            x,
            y,
            words,
            fontsize=size * 72 / self.DPI,
            color=rgb(colour),
            ha=align,
            va="center_baseline",
            weight="bold" if bold else "normal",
            zorder=self._next(),
        )

    def rect(
        self, box: tuple[float, float, float, float], fill: Colour | None = None, **outline: Any
    ) -> None:
        """``box``: left, top, right, bottom; ``outline``: ``colour``, ``width``."""
        from matplotlib.patches import Rectangle

        left, top, right, bottom = box
        colour = outline.get("colour")
        self.axes.add_patch(
            Rectangle(
                (left, top),
                right - left,
                bottom - top,
                facecolor=rgb(fill) if fill else "none",
                edgecolor=rgb(colour) if colour else "none",
                linewidth=outline.get("width", 1) * 72 / self.DPI,
                zorder=self._next(),
            )
        )

    def png(self) -> bytes:
        out = io.BytesIO()
        self.figure.savefig(out, format="png", dpi=self.DPI)
        return out.getvalue()


def stretch(pixels: np.ndarray) -> np.ndarray:
    """Values of one tile mapped linearly onto 0..255 (min to 0, max to 255), as uint8."""
    lo, hi = float(pixels.min()), float(pixels.max())
    scaled = (pixels - lo) / (hi - lo) if hi > lo else np.full_like(pixels, 0.5, dtype=float)
    return np.round(scaled * 255).astype(np.uint8)


CELL, SIDE, BAR = 310, 180, 80


@dataclass
class Images:
    """Cache rows of one split: the network's inputs, the crops as pictures (uint8), labels."""

    rows: np.ndarray
    inputs: torch.Tensor
    pictures: np.ndarray
    labels: np.ndarray


def spread(usable: np.ndarray, count: int, offset: float = 0.0) -> np.ndarray:
    """``count`` rows of ``usable`` evenly spaced through it, from ``offset`` of a step in."""
    step = len(usable) / count
    return usable[np.minimum((np.arange(count) + offset) * step, len(usable) - 1).astype(int)]


def centre_crops(
    cache: str | os.PathLike,
    split: str,
    count: int,
    offset: float,
    crop: int,
    device,
    mean_image: np.ndarray | torch.Tensor | None = None,
) -> Images:
    """``count`` images spread through ``split``, minus ``mean_image`` (default: the cache's)."""
    data = open_split(cache, split)
    rows = spread(data.usable, min(count, len(data.usable)), offset)
    crops = centre_view(torch.from_numpy(np.ascontiguousarray(data.rows(rows))), crop)
    if mean_image is None:
        mean_image = load_stats(cache).mean_image
    mean = mean_crop(np.asarray(mean_image, dtype=np.float32), crop)
    inputs = to_input(crops.to(device), mean.to(device))
    return Images(rows, inputs, crops.numpy(), data.labels[rows])


def label(names: list[tuple[str, ...]], wnids: list[str], k: int) -> str:
    """Class ``k``'s first name, or its WordNet id if it has none."""
    return names[k][0] if names[k] else wnids[k]


def short(name: str, length: int) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def wrap(name: str, length: int) -> list[str]:
    """``name`` on at most two lines of ``length`` characters."""
    lines = textwrap.wrap(name, length) or [""]
    return lines[:1] + ([short(" ".join(lines[1:]), length)] if len(lines) > 1 else [])


@torch.no_grad()
def top5(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and classes (n, 5) (fewer with fewer classes), most probable first."""
    probs = logits.float().softmax(dim=1)
    p, k = probs.topk(min(5, probs.shape[1]), dim=1)
    return p.cpu().numpy(), k.cpu().numpy()


def picture(pixels: np.ndarray, side: int) -> np.ndarray:
    """A crop resized to ``side`` x ``side`` for the figures."""
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR))


def figure4_predictions(
    images: Images, probs: np.ndarray, classes: np.ndarray, names: list[str]
) -> bytes:
    """The PNG: each image, its true label, bars for its five most probable labels (true: red)."""
    per_row, count = 4, len(images.rows)
    rows = -(-count // per_row)
    height_cell = SIDE + 40 + 18 * probs.shape[1]
    c = Canvas(per_row * CELL + 20, 50 + rows * height_cell + 24)
    title = "validation images (centre crop) and the network's five most probable labels"
    c.text(c.size[0] / 2, 20, title, 16, align="center")
    for i in range(count):
        left = 10 + (i % per_row) * CELL + (CELL - SIDE) // 2
        top = 44 + (i // per_row) * height_cell
        c.image(picture(images.pictures[i], SIDE), left, top)
        truth = int(images.labels[i])
        c.text(
            left + SIDE / 2, top + SIDE + 12, short(names[truth], 36), 13, align="center", bold=True
        )
        bar_left = 10 + (i % per_row) * CELL + 12
        for j, (p, k) in enumerate(zip(probs[i], classes[i])):
            y = top + SIDE + 32 + 18 * j
            colour = RED if k == truth else BLUE
            c.rect((bar_left, y - 6, bar_left + BAR, y + 6), colour=GREY)
            c.rect((bar_left, y - 6, bar_left + max(1, round(BAR * p)), y + 6), fill=colour)
            c.text(bar_left + BAR + 6, y, f"{p:.2f} {short(names[k], 28)}", 11, colour)
    c.text(10, c.size[1] - 14, "red: the true label; bars: probability (softmax of fc8)", 11, GREY)
    return c.png()
