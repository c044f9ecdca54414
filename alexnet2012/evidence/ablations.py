"""The paper's ablation table: each run's error and change beside the paper's, and overfitting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet2012 import paper
from alexnet2012.data import eval_loader
from alexnet2012.evaluate import evaluate
from alexnet2012.report import change
from alexnet2012.resume import load_trained
from alexnet2012.runfolder import CHECKPOINT, RunFolder

BASELINE = "baseline"


@dataclass
class Outcome:
    """A finished run's validation errors (centre crop, ten views) and training-set error."""

    name: str
    ablation: paper.Ablation | None  # None: the baseline
    settings: dict[str, Any]
    center: dict[str, float]
    ten_view: dict[str, float] | None
    train: dict[str, float]
    epochs: int


def training_error(run: Path, devices: tuple[str, ...], batch_size: int, workers: int) -> dict:
    """Top-1/top-5 error of the run's network on its training set (centre crop, eval mode)."""
    model, config, _ = load_trained(str(run / CHECKPOINT), devices)
    device = next(model.columns[0].parameters()).device
    batches = eval_loader(
        config.cache, "train", batch_size=batch_size, crop=config.input_size, workers=workers,
        device=device,
    )  # fmt: skip
    errors = evaluate(model, batches, desc=f"training-set error of {run.name}")
    return {"top1": errors["top1"], "top5": errors["top5"], "images": errors["images"]}


def outcome(run: Path, ablation: paper.Ablation | None, train: dict) -> Outcome:
    """The finished run in ``run``, read and checked (one line if a file is missing or wrong)."""
    record = RunFolder(run).read()
    results = record.results
    return Outcome(
        run.name,
        ablation,
        record.config["settings"],
        results["center"],
        results.get("ten_view"),
        train,
        results["epochs_trained"],
    )


def _points(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def _change(value: float, base: float) -> str:
    return f"{100 * (value - base):+.2f}"


def table(outcomes: list[Outcome], dataset: str, failed: dict[str, str]) -> str:
    """``ablations.md``: the baseline, then each ablation (ten views if every run has them)."""
    base = next(o for o in outcomes if o.ablation is None)
    ten = all(o.ten_view for o in outcomes)
    views = "ten views (P §4.1)" if ten else "centre crop"
    rows = []
    for o in outcomes:
        val, base_val = (o.ten_view, base.ten_view) if ten else (o.center, base.center)
        a = o.ablation
        rows.append(
            [
                o.name,
                "the paper's net"
                if a is None
                else f"without {a.feature}: {a.setting}={o.settings.get(a.setting)}",
                _points(val["top1"]),
                _points(val["top5"]),
                "" if a is None else _change(val["top1"], base_val["top1"]),
                "" if a is None else _change(val["top5"], base_val["top5"]),
                "" if a is None else change(a.top1),
                "" if a is None else change(a.top5),
                _points(o.train["top1"]),
                _change(o.center["top1"], o.train["top1"]),
            ]
        )
    headers = [
        "run", "what changes", "top-1 %", "top-5 %", "top-1 change", "top-5 change",
        "paper: top-1", "paper: top-5", "train top-1 %", "val - train top-1",
    ]  # fmt: skip
    epochs = f"{base.epochs} epoch{'s' if base.epochs > 1 else ''}"
    lines = [
        "# The paper's ablations",
        "",
        f"Data: {dataset}. Every run: seed {base.settings.get('seed')}, "
        f"{epochs}, the same data and schedule; each ablation changes one thing "
        f"from the baseline. Validation errors from the {views}; changes in points from the "
        "baseline, beside the change the paper reports (positive: higher error without the "
        "feature). The train-validation gap is the centre crop's on both, in eval mode: the "
        "overfitting dropout is there to prevent (P §4.2).",
        "",
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    notes = [f"- {o.name}: {o.ablation.note}" for o in outcomes if o.ablation and o.ablation.note]
    if notes:
        lines += ["The paper's words:", "", *notes, ""]
    if failed:
        lines += ["Runs that did not finish:", ""]
        lines += [f"- {name}: {why}" for name, why in failed.items()]
        lines.append("")
    if base.epochs < paper.EPOCHS:
        lines.append(
            f"Runs of {epochs} instead of about {paper.EPOCHS}: the changes are "
            "early-training differences, and may differ in size or sign from the paper's."
        )
    return "\n".join(lines).rstrip() + "\n"
