"""Learning curves as a PNG drawn with Pillow alone: training loss and validation top-1/top-5
error (%) per epoch; lr drops as dashed lines before their first epoch, labelled with the rate."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from PIL import Image, ImageDraw, ImageFont

from alexnet2012.evidence.render import backend as choose_backend

WIDTH, HEIGHT = 1200, 500
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GRID = (225, 225, 225)
LOSS_COLOR = (31, 119, 180)
TOP1_COLOR = (214, 39, 40)
TOP5_COLOR = (44, 160, 44)
DROP_COLOR = (120, 120, 120)

Point = tuple[float, float]
Colour = tuple[int, int, int]
Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


class Curve(NamedTuple):
    label: str
    key: str
    scale: float
    colour: Colour


class Panel(NamedTuple):
    title: str
    box: Box
    bounds: tuple[float, float]
    empty: tuple[float, float]
    curves: tuple[Curve, ...]


PANELS = (
    Panel(
        "training loss",
        (70, 60, 570, 410),
        (0, math.inf),
        (0, 1),
        (Curve("train loss", "train_loss", 1, LOSS_COLOR),),
    ),
    Panel(
        "validation error (%)",
        (670, 60, 1170, 410),
        (0, 100),
        (0, 100),
        (
            Curve("val top-1", "val_top1", 100, TOP1_COLOR),
            Curve("val top-5", "val_top5", 100, TOP5_COLOR),
        ),
    ),
)


def nice_ticks(lo: float, hi: float, target: int = 6, min_step: float = 0.0) -> list[float]:
    """Round values (steps 1, 2 or 5 x 10^n, at least ``min_step``) covering lo < hi in about
    ``target`` intervals."""
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), min_step)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Axes:
    """Maps data between the first and last ticks onto the pixel box."""

    box: Box
    xticks: list[float]
    yticks: list[float]

    def px(self, x: float, y: float) -> Point:
        left, top, right, bottom = self.box
        (x0, x1), (y0, y1) = (self.xticks[0], self.xticks[-1]), (self.yticks[0], self.yticks[-1])
        return (
            left + (x - x0) / (x1 - x0) * (right - left),
            bottom - (y - y0) / (y1 - y0) * (bottom - top),
        )


def series(metrics: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> list[Point]:
    """(epoch, value * scale) of the epochs whose ``key`` is a finite number."""
    return [
        (m["epoch"], m[key] * scale)
        for m in metrics
        if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])
    ]


def _value_ticks(
    values: Sequence[float], bounds: tuple[float, float], empty: tuple[float, float]
) -> list[float]:
    """Ticks covering ``values`` (or ``empty``) with a margin, within ``bounds``."""
    lo, hi = (min(values), max(values)) if values else empty
    pad = (hi - lo) * 0.04 if hi - lo > 1e-9 else abs(lo) * 0.05 or 1.0
    return nice_ticks(max(lo - pad, bounds[0]), min(hi + pad, bounds[1]))


def layout(metrics: Sequence[dict[str, Any]], drops: Sequence[dict[str, Any]]) -> tuple[Axes, ...]:
    """The axes of each of :data:`PANELS`; x from 0 past the last epoch and drop."""
    last = max([m["epoch"] for m in metrics] + [d["epoch"] for d in drops])
    xticks = nice_ticks(0, last + 0.5, target=8, min_step=1)
    return tuple(
        Axes(
            p.box,
            xticks,
            _value_ticks(
                [y for c in p.curves for _, y in series(metrics, c.key, c.scale)], p.bounds, p.empty
            ),
        )
        for p in PANELS
    )


def _text(
    draw: ImageDraw.ImageDraw,
    xy: Point,
    text: str,
    font: Any,
    align: str = "left",
    fill: Colour = INK,
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    shift = {"left": 0, "center": (right - left) / 2, "right": right - left}[align]
    draw.text((xy[0] - shift - left, xy[1] - (top + bottom) / 2), text, font=font, fill=fill)


def _dashed_vline(draw: ImageDraw.ImageDraw, x: float, top: float, bottom: float) -> None:
    y = top
    while y < bottom:
        draw.line([(x, y), (x, min(y + 5, bottom))], fill=DROP_COLOR, width=1)
        y += 9


def _draw_frame(draw: ImageDraw.ImageDraw, axes: Axes, title: str, font: Any) -> None:
    left, top, right, bottom = axes.box
    yticks = axes.yticks
    for y in yticks:
        py = axes.px(0, y)[1]
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.line([(left - 4, py), (left, py)], fill=INK)
        _text(draw, (left - 7, py), tick_label(y, yticks[1] - yticks[0]), font, "right")
    for x in axes.xticks:
        px = axes.px(x, 0)[0]
        draw.line([(px, bottom), (px, bottom + 4)], fill=INK)
        _text(draw, (px, bottom + 12), tick_label(x, 1), font, "center")
    draw.rectangle(axes.box, outline=INK)
    _text(draw, ((left + right) / 2, top - 14), title, font, "center")
    _text(draw, ((left + right) / 2, bottom + 30), "epoch", font, "center")


def _draw_series(draw: ImageDraw.ImageDraw, axes: Axes, points: list[Point], color: Colour) -> None:
    pixels = [axes.px(x, y) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=color, width=2, joint="curve")
    for px, py in pixels:
        draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)


def _draw_drops(
    draw: ImageDraw.ImageDraw, axes: Axes, drops: Sequence[dict[str, Any]], font: Any
) -> None:
    left, top, right, bottom = axes.box
    for i, drop in enumerate(drops):
        x = axes.px(drop["epoch"] - 0.5, 0)[0]
        _dashed_vline(draw, x, top + 1, bottom - 1)
        label = f"lr {drop['new_lr']:g}"
        width = draw.textbbox((0, 0), label, font=font)[2]
        y = top + 10 + 14 * (i % 2)  # alternate rows so that close drops stay readable
        if x + 4 + width < right:
            _text(draw, (x + 4, y), label, font, "left", DROP_COLOR)
        else:
            _text(draw, (x - 4, y), label, font, "right", DROP_COLOR)


def _draw_legend(
    draw: ImageDraw.ImageDraw, axes: Axes, entries: list[tuple[str, Colour, bool]], font: Any
) -> None:
    widths = [32 + draw.textbbox((0, 0), label, font=font)[2] for label, _, _ in entries]
    left, _, right, bottom = axes.box
    x, y = (left + right - sum(widths) - 16 * (len(entries) - 1)) / 2, bottom + 54
    for (label, color, dashed), width in zip(entries, widths):
        if dashed:
            draw.line([(x, y), (x + 8, y)], fill=color)
            draw.line([(x + 14, y), (x + 22, y)], fill=color)
        else:
            draw.line([(x, y), (x + 24, y)], fill=color, width=2)
        _text(draw, (x + 30, y), label, font)
        x += width + 16


def learning_curves(
    metrics: Sequence[dict[str, Any]],
    drops: Sequence[dict[str, Any]],
    path: str | os.PathLike[str] | IO[bytes],
    title: str = "AlexNet learning curves",
    backend: str | None = None,
) -> None:
    """Write the PNG. ``metrics``: a dict per epoch (``epoch``, ``train_loss``, ``val_top1``,
    ``val_top5``; missing values skipped); ``drops``: dicts with ``epoch`` and ``new_lr``;
    ``backend``: "matplotlib" or "pillow" (default: matplotlib where it is installed)."""
    if not metrics:
        raise ValueError("learning_curves: no epochs to plot")
    if choose_backend(backend) == "matplotlib":
        return _matplotlib_curves(metrics, drops, path, title)
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    _text(draw, (WIDTH / 2, 18), title, font, "center")
    drop_entry = [("lr drop (new rate)", DROP_COLOR, True)] if drops else []
    for axes, panel in zip(layout(metrics, drops), PANELS):
        _draw_frame(draw, axes, panel.title, font)
        _draw_drops(draw, axes, drops, font)
        points = [series(metrics, c.key, c.scale) for c in panel.curves]
        for pts, curve in zip(points, panel.curves):
            _draw_series(draw, axes, pts, curve.colour)
        if not any(points):
            left, top, right, bottom = axes.box
            _text(draw, ((left + right) / 2, (top + bottom) / 2), "no values", font, "center")
        _draw_legend(
            draw, axes, [(c.label, c.colour, False) for c in panel.curves] + drop_entry, font
        )
    image.save(path, format="PNG")


def _matplotlib_curves(
    metrics: Sequence[dict[str, Any]],
    drops: Sequence[dict[str, Any]],
    path: str | os.PathLike[str] | IO[bytes],
    title: str,
) -> None:
    """The same two panels drawn by matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    for axes, panel, ticks in zip(figure.subplots(1, 2), PANELS, layout(metrics, drops)):
        for curve in panel.curves:
            points = series(metrics, curve.key, curve.scale)
            if points:
                x, y = zip(*points)
                colour = tuple(c / 255 for c in curve.colour)
                axes.plot(x, y, "o-", color=colour, markersize=3, label=curve.label)
        for i, drop in enumerate(drops):
            line = axes.axvline(drop["epoch"] - 0.5, color="grey", linestyle="--", linewidth=1)
            axes.annotate(
                f"lr {drop['new_lr']:g}", (drop["epoch"] - 0.5, 1 - 0.05 * (1 + i % 2)),
                xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                color="grey", fontsize=8,
            )  # fmt: skip
            if i == 0:
                line.set_label("lr drop (new rate)")
        axes.set(title=panel.title, xlabel="epoch", xticks=ticks.xticks, yticks=ticks.yticks)
        axes.set_xlim(ticks.xticks[0], ticks.xticks[-1])
        axes.set_ylim(ticks.yticks[0], ticks.yticks[-1])
        axes.grid(color=tuple(c / 255 for c in GRID))
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper right", fontsize=9)
        else:
            axes.text(0.5, 0.5, "no values", ha="center", transform=axes.transAxes)
    figure.savefig(path, format="png")
