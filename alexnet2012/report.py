"""The run report: ``report.md`` and ``curves.png``, its errors beside the paper's (percent)."""

from __future__ import annotations

import io
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet2012 import paper
from alexnet2012.data.subset import Subset
from alexnet2012.files import write_file
from alexnet2012.plot import learning_curves
from alexnet2012.runfolder import CURVES, REPORT, RunFolder, RunRecord
from alexnet2012.units import duration_text

PathLike = str | os.PathLike


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def _points(run_view: dict[str, float], row: paper.Result) -> str:
    """This run's view minus ``row``, in percentage points, top-1 / top-5 (``-`` if not run)."""
    if not run_view:
        return "-"
    top5 = "-" if row.top5 is None else f"{100 * run_view['top5'] - row.top5:+.2f}"
    return f"{100 * run_view['top1'] - row.top1:+.2f} / {top5}"


def comparison(
    results: dict[str, Any],
    dataset: str,
    num_classes: int | None = None,
    subset: dict | None = None,
    recipe: str = "paper",
) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and notes comparing this run's test errors with every ``paper.RESULTS`` row:
    differences (points) only for rows on ``dataset``, the figure it replicates (the paper's, or
    [C]'s for ``recipe`` 2012-code) marked; ``num_classes`` adds chance. A run on a ``subset``
    gets no rows of 1000-class figures."""
    center, ten_view = results["center"], results.get("ten_view") or {}
    headers = [
        "",
        "dataset",
        "top-1 %",
        "top-5 %",
        "run centre - row (pt)",
        "run ten-view - row (pt)",
    ]
    rows = [
        [
            label + ("" if view else " (not run)"),
            dataset,
            _pct(view.get("top1")),
            _pct(view.get("top5")),
            "",
            "",
        ]
        for label, view in (("this run, centre crop", center), ("this run, ten views", ten_view))
    ]
    notes = []
    if num_classes is not None:
        top1, top5 = _pct(1 - 1 / num_classes), _pct(1 - min(5, num_classes) / num_classes)
        rows.append([f"chance ({num_classes} classes)", dataset, top1, top5, "", ""])
        notes.append(f"Chance error with {num_classes} classes: {top1}% top-1, {top5}% top-5.")
    if subset is not None:
        notes.insert(
            0,
            f"This run is on a subset of ImageNet ({Subset.from_dict(subset).name}), NOT the "
            "paper's 1000-class task: no figure of the paper or of other 1000-class runs "
            "compares with it.",
        )
        return headers[:4], [row[:4] for row in rows], notes
    code = recipe == "2012-code"
    mark = "the 2012 code's" if code else "the paper's"
    for r in paper.RESULTS:
        same = r.dataset == dataset
        own = same and r.source.startswith("[C]" if code else "P ")
        label = f"{r.source} ({r.note})" + (f" <- {mark} figure" if own else "")
        rows.append(
            [
                label,
                r.dataset,
                str(r.top1),
                "-" if r.top5 is None else str(r.top5),
                _points(center, r) if same else "",
                _points(ten_view, r) if same else "",
            ]
        )
    if any(r.dataset == dataset for r in paper.RESULTS):
        notes.insert(
            0,
            "Differences are this run's error minus the row's, in percentage "
            "points (top-1 / top-5): positive means this run's error is higher.",
        )
        return headers, rows, notes
    notes.insert(
        0,
        "The paper's figures are on ImageNet (ILSVRC, 1000 classes) and are "
        f"NOT comparable with this run on {dataset}.",
    )
    return headers[:4], [row[:4] for row in rows], notes  # no differences to show


TERMINAL_LABEL = 29  # characters of a row label before it is footnoted


def format_comparison(*args: Any, **kwargs: Any) -> str:
    """:func:`comparison` in 100 columns, the replicated row starred, long labels footnoted."""
    headers, rows, notes = comparison(*args, **kwargs)
    headers = ["", *headers[1:4], "centre - row", "10-view - row"][: len(headers)]
    footnotes, starred = [], ""
    for row in rows:
        label, mark = row[0], re.search(r" <- (.*) figure$", row[0])
        if mark:
            label, starred = label[: mark.start()], mark.group(1)
        if len(label) > TERMINAL_LABEL and " (" in label:
            footnotes.append(f"[{len(footnotes) + 1}] {label}")
            label = f"{label.split(' (')[0]} [{len(footnotes)}]"
        row[0] = ("* " if mark else "  ") + label
    widths = [max(len(row[i]) for row in [headers] + rows) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
        for row in [headers, ["-" * w for w in widths]] + rows
    ]
    if starred:
        notes = [f"* {starred} figure for this data: the row this run replicates.", *notes]
    wrapped = [textwrap.fill(n, 100, subsequent_indent="    ") for n in footnotes + notes]
    return "\n".join(lines + wrapped)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(r) for r in rows])


def change(points: float | None) -> str:
    """A change the paper reports, in points, signed."""
    return "not given" if points is None else f"{points:+g}"


def _ablation_section(settings: dict[str, Any]) -> list[str]:
    rows = [
        [a.feature, f"{a.setting}={settings[a.setting]}", change(a.top1), change(a.top5), a.note]
        for a in paper.ABLATIONS
        if settings.get(a.setting, "unset") in a.off
    ]
    if not rows:
        return []
    return [
        "## Ablation",
        "",
        "This run switches off a feature whose effect the paper reports: expect its error to be "
        "higher than the full net's by about the paper's figure (points).",
        "",
        _markdown_table(
            ["feature switched off", "setting", "paper: top-1 higher by", "top-5", "the paper"],
            rows,
        ),
        "",
    ]


def _cuda_settings(backends: Any) -> str:
    """``; cuDNN autotuning, TF32`` for a GPU run's recorded ``backends``."""
    if not isinstance(backends, dict) or not backends.get("cuda"):
        return ""
    return "; cuDNN autotuning, " + ("TF32" if backends.get("tf32_cudnn") else "fp32") + " products"


def _value(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _markdown(run: RunRecord) -> str:
    config, results, metrics = run.config, run.results, run.metrics
    dataset = config["dataset"]
    headers, rows, notes = comparison(results, dataset, config["num_classes"], config.get("subset"))
    # Every epoch trains on the same images, so the overall rate (total images / total time)
    # is the harmonic mean of the per-epoch rates.
    overall = len(metrics) / sum(1 / m["images_per_s"] for m in metrics)
    lines = [
        f"# AlexNet (2012) replication: {dataset}",
        "",
        "## Results",
        "",
        _markdown_table(headers, rows),
        "",
        *notes,
        "",
        f"Trained {results['epochs_trained']} "
        f"epoch{'' if results['epochs_trained'] == 1 else 's'}; "
        f"the schedule's last word: {results['stopped_because']}. "
        f"Training time {duration_text(results['wall_time_s'])} (wall clock in training steps; "
        f"validation and testing not included); {overall:.1f} images/s over all epochs "
        "(the harmonic mean of the per-epoch rates: total images / total time).",
        "",
    ]
    lines += _ablation_section(config["settings"])
    lines += [
        "## Setup",
        "",
        f"Dataset: {dataset}, {config['num_classes']} classes, "
        f"{config['train_images']:,} training and {config['val_images']:,} validation "
        f"images. Devices: {_value(config['device_names']) or 'none recorded'}; "
        f"torch {config['torch']}{_cuda_settings(config.get('backends'))}.",
        "",
        _markdown_table(
            ["setting", "value"],
            [[k, _value(v)] for k, v in config["settings"].items() if k != "deviations"],
        ),
        "",  # listed below
        "### Deviations from the paper",
        "",
    ]
    lines += [f"- {d}" for d in config["deviations"]] or ["- none"]
    lines += ["", "## Learning-rate drops", ""]
    drops = [
        [d["epoch"], f"{d['old_lr']:g} -> {d['new_lr']:g}", _pct(d["val_error"]), d["reason"]]
        for d in run.drops
    ]
    drop_headers = ["from epoch", "lr", "val error before (%)", "reason"]
    lines.append(_markdown_table(drop_headers, drops) if drops else "none")
    epochs = [
        [m["epoch"], f"{m['lr']:g}", f"{m['train_loss']:.4f}"]
        + [_pct(m.get("val_top1")), _pct(m.get("val_top5")), f"{m['images_per_s']:.1f}"]
        for m in metrics
    ]
    lines += [
        "",
        "## Learning curves",
        "",
        "![learning curves](curves.png)",
        "",
        "## Per epoch",
        "",
        _markdown_table(
            ["epoch", "lr", "train loss", "val top-1 (%)", "val top-5 (%)", "images/s"], epochs
        ),
        "",
    ]
    return "\n".join(lines)


def write_report(run_dir: PathLike) -> Path:
    """Write ``report.md`` and ``curves.png`` into ``run_dir``, atomically; the report's path."""
    run = RunFolder(run_dir).read()
    folder = Path(run_dir)
    png = io.BytesIO()
    learning_curves(
        run.metrics, run.drops, png, title=f"AlexNet (2012) replication: {run.config['dataset']}"
    )
    write_file(folder / CURVES, png.getvalue())
    path = folder / REPORT
    write_file(path, _markdown(run))
    return path
