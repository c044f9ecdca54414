"""Learning curves as a PNG: training loss and validation errors per epoch, lr drops dashed."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH, HEIGHT = 1200, 500  # pixels, at 100 dpi
DPI = 100
GRID = (225, 225, 225)
LOSS_COLOR = (31, 119, 180)
TOP1_COLOR = (214, 39, 40)
TOP5_COLOR = (44, 160, 44)
DROP_COLOR = (120, 120, 120)

Point = tuple[float, float]
Colour = tuple[int, int, int]


class Curve(NamedTuple):
    label: str
    key: str
    scale: float
    colour: Colour


class Panel(NamedTuple):
    title: str
    bounds: tuple[float, float]  # the value axis never leaves these
    empty: tuple[float, float]  # its range when the panel has no values
    curves: tuple[Curve, ...]


class Ticks(NamedTuple):
    """A panel's ticks; the axes span the first to the last of each."""

    xticks: list[float]
    yticks: list[float]


LOSS = Curve("train loss", "train_loss", 1, LOSS_COLOR)
TOP1 = Curve("val top-1", "val_top1", 100, TOP1_COLOR)
TOP5 = Curve("val top-5", "val_top5", 100, TOP5_COLOR)
PANELS = (
    Panel("training loss", (0, math.inf), (0, 1), (LOSS,)),
    Panel("validation error (%)", (0, 100), (0, 100), (TOP1, TOP5)),
)


def nice_ticks(lo: float, hi: float, target: int = 6, min_step: float = 0.0) -> list[float]:
    """Round values (steps 1, 2 or 5 x 10^n) covering lo < hi in about ``target`` intervals."""
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), min_step)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


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


def layout(metrics: Sequence[dict[str, Any]], drops: Sequence[dict[str, Any]]) -> tuple[Ticks, ...]:
    """The ticks of each of :data:`PANELS`; x from 0 past the last epoch and drop."""
    last = max([m["epoch"] for m in metrics] + [d["epoch"] for d in drops])
    xticks = nice_ticks(0, last + 0.5, target=8, min_step=1)
    values = [[y for c in p.curves for _, y in series(metrics, c.key, c.scale)] for p in PANELS]
    return tuple(Ticks(xticks, _value_ticks(v, p.bounds, p.empty)) for v, p in zip(values, PANELS))


def rgb(colour: Colour) -> tuple[float, float, float]:
    """0..255 RGB as matplotlib takes it."""
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def curves_figure(
    metrics: Sequence[dict[str, Any]],
    drops: Sequence[dict[str, Any]],
    title: str = "AlexNet learning curves",
) -> Figure:
    """One panel per entry of :data:`PANELS`; ``drops``: dicts with ``epoch`` and ``new_lr``."""
    if not metrics:
        raise ValueError("learning_curves: no epochs to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here, not at import: every
    from matplotlib.figure import Figure  # script and torchrun replica imports this module

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    for axes, panel, ticks in zip(figure.subplots(1, 2), PANELS, layout(metrics, drops)):
        for curve in panel.curves:
            points = series(metrics, curve.key, curve.scale)
            if points:
                x, y = zip(*points)
                axes.plot(x, y, "o-", color=rgb(curve.colour), markersize=3, label=curve.label)
        for i, drop in enumerate(drops):
            line = axes.axvline(drop["epoch"] - 0.5, color=rgb(DROP_COLOR), ls="--", lw=1)
            axes.annotate(
                f"lr {drop['new_lr']:g}", (drop["epoch"] - 0.5, 1 - 0.05 * (1 + i % 2)),
                xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                color=rgb(DROP_COLOR), fontsize=8,
            )  # fmt: skip
            if i == 0:
                line.set_label("lr drop (new rate)")
        axes.set(title=panel.title, xlabel="epoch", xticks=ticks.xticks, yticks=ticks.yticks)
        axes.set_xlim(ticks.xticks[0], ticks.xticks[-1])
        axes.set_ylim(ticks.yticks[0], ticks.yticks[-1])
        axes.grid(color=rgb(GRID))
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper right", fontsize=9)
        else:
            axes.text(0.5, 0.5, "no values", ha="center", transform=axes.transAxes)
    return figure


def learning_curves(
    metrics: Sequence[dict[str, Any]],
    drops: Sequence[dict[str, Any]],
    path: str | os.PathLike[str] | IO[bytes],
    title: str = "AlexNet learning curves",
) -> None:
    """Write :func:`curves_figure` as a PNG of ``WIDTH`` x ``HEIGHT`` pixels to ``path``."""
    curves_figure(metrics, drops, title).savefig(path, format="png", dpi=DPI)
