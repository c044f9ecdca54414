"""A pixel canvas for the figures: images, text and boxes, drawn by matplotlib."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

Colour = tuple[int, int, int]
INK: Colour = (0, 0, 0)
WHITE: Colour = (255, 255, 255)
GREY: Colour = (150, 150, 150)
BLUE: Colour = (31, 119, 180)
GREEN: Colour = (44, 160, 44)
RED: Colour = (214, 39, 40)


class Canvas:
    """A matplotlib figure with one axes over all of it, in pixels (y down). Each thing drawn
    lies above those drawn before it (matplotlib's own order puts images below patches)."""

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
            color=_rgb(colour),
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
                facecolor=_rgb(fill) if fill else "none",
                edgecolor=_rgb(colour) if colour else "none",
                linewidth=outline.get("width", 1) * 72 / self.DPI,
                zorder=self._next(),
            )
        )

    def png(self) -> bytes:
        out = io.BytesIO()
        self.figure.savefig(out, format="png", dpi=self.DPI)
        return out.getvalue()


def _rgb(colour: Colour) -> tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def stretch(pixels: np.ndarray) -> np.ndarray:
    """Values of one tile mapped linearly onto 0..255 (min to 0, max to 255), as uint8."""
    lo, hi = float(pixels.min()), float(pixels.max())
    scaled = (pixels - lo) / (hi - lo) if hi > lo else np.full_like(pixels, 0.5, dtype=float)
    return np.round(scaled * 255).astype(np.uint8)
