"""report.md, format_comparison and curves.png from run folders written here with known numbers.

Expected percentages, differences, chance levels and pixel positions are worked out in the
tests (from P Tables 1-2 and [C]'s log), not read back from the code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet2012 import paper, plot
from alexnet2012.errors import UsageError
from alexnet2012.report import format_comparison, write_report

SETTINGS = {
    "data": "/data/ilsvrc",
    "devices": ["cuda:0", "cuda:1"],
    "input_size": 224,
    "batch_size": 128,
    "epochs": 90,
    "seed": 0,
    "workers": 8,
    "year": 2012,
    "columns": 2,
    "lrn": True,
    "overlapping_pool": True,
    "lighting": "paper",
    "patience": 5,
    "threshold": 0.001,
    "deviations": [],
}  # as asdict(TrainConfig) has it
METRICS = [
    {
        "epoch": 1,
        "lr": 0.01,
        "train_loss": 2.3,
        "train_top1": 0.9,
        "val_loss": 2.2,
        "val_top1": 0.9,
        "val_top5": 0.5,
        "images_per_s": 100.0,
        "epoch_time_s": 30,
        "elapsed_s": 30,
    },
    {"epoch": 2, "lr": 0.01, "train_loss": 2.0, "val_top1": None, "images_per_s": 300.0},
    {
        "epoch": 3,
        "lr": 0.001,
        "train_loss": 1.5,
        "val_top1": 0.6,
        "val_top5": 0.25,
        "images_per_s": 300.0,
    },
]
DROPS = [
    {
        "epoch": 3,
        "old_lr": 0.01,
        "new_lr": 0.001,
        "val_error": 0.9,
        "reason": "no improvement for 5 epochs",
    }
]
RESULTS = {
    "center": {"top1": 0.4123, "top5": 0.1877, "loss": 1.8},
    "ten_view": {"top1": 0.4011, "top5": 0.1802},
    "wall_time_s": 3723.4,
    "epochs_trained": 3,
    "stopped_because": "epoch limit",
}
IMAGENET_2012 = "ILSVRC-2012 val"
PAPER_SOURCES = [
    "P Table 1",
    "P Table 2",
    "[C] log, layers-145",
    "Caffe bvlc_alexnet",
    "torchvision alexnet",
]


def write_run(
    folder: Path,
    dataset: str = IMAGENET_2012,
    num_classes: int = 1000,
    settings: dict | None = None,
    deviations: tuple[str, ...] = (),
    metrics: list | None = None,
    drops: list | None = None,
    results: dict | None = None,
    backends: dict | None = None,
) -> Path:
    """A run folder as scripts/replicate.py writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "settings": {**SETTINGS, **(settings or {})},
        "device_names": ["cpu (2 cores)"],
        "torch": "2.14.1",
        "dataset": dataset,
        "num_classes": num_classes,
        "train_images": 1000,
        "val_images": 200,
        "demo": dataset.startswith("synthetic"),
        "deviations": list(deviations),
        "backends": backends or {"cuda": False},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in (METRICS if metrics is None else metrics))
    )
    (folder / "drops.json").write_text(json.dumps(DROPS if drops is None else drops))
    (folder / "results.json").write_text(json.dumps(RESULTS if results is None else results))
    return folder


def table_line(text: str, first_cell: str) -> str:
    """The markdown table line whose first cell starts with ``first_cell``."""
    lines = [ln for ln in text.splitlines() if ln.startswith(f"| {first_cell}")]
    assert len(lines) == 1, (first_cell, lines)
    return lines[0]


# ---- report.md ----------------------------------------------------------------------------


def test_imagenet_report_compares_with_every_paper_row(tmp_path):
    report = write_report(write_run(tmp_path / "run"))
    assert report == tmp_path / "run" / "report.md"
    text = report.read_text()
    assert text.startswith("# ") and IMAGENET_2012 in text.splitlines()[0]
    assert "| 41.23 | 18.77 |" in table_line(text, "this run, centre crop")
    assert "| 40.11 | 18.02 |" in table_line(text, "this run, ten views")
    for source in PAPER_SOURCES:
        assert f"| {source}" in text
    # P Table 2 (40.7 / 18.2) is the paper's own figure on ILSVRC-2012 val.
    paper_row = table_line(text, "P Table 2")
    assert "the paper's figure" in paper_row
    centre = f"{41.23 - 40.7:+.2f} / {18.77 - 18.2:+.2f}"  # +0.53 / +0.57
    ten_view = f"{40.11 - 40.7:+.2f} / {18.02 - 18.2:+.2f}"  # -0.59 / -0.18
    assert f"| {centre} | {ten_view} |" in paper_row
    caffe = f"{41.23 - 42.9:+.2f} / {18.77 - 19.8:+.2f}"
    assert caffe in table_line(text, "Caffe bvlc_alexnet")
    # P Table 1 is on ILSVRC-2010 test: shown, but no difference and not marked.
    table1 = table_line(text, "P Table 1")
    assert table1.endswith("|  |  |") and "the paper's figure" not in table1
    assert "NOT comparable" not in text
    assert "## Ablation" not in text


def test_report_setup_drops_epochs_and_timing(tmp_path):
    text = write_report(write_run(tmp_path)).read_text()
    assert "cpu (2 cores)" in text and "torch 2.14.1" in text
    gpu = write_report(
        write_run(
            tmp_path / "gpu",
            backends={
                "cuda": True,
                "cudnn_benchmark": True,
                "tf32_matmul": False,
                "tf32_cudnn": False,
            },
        )
    ).read_text()
    assert "torch 2.14.1; cuDNN autotuning, fp32 products." in gpu
    assert "| devices | cuda:0, cuda:1 |" in text and "| batch_size | 128 |" in text
    assert "### Deviations from the paper\n\n- none\n" in text
    assert "| deviations |" not in text  # the list below the table, not an empty row
    assert "| 3 | 0.01 -> 0.001 | 90.00 | no improvement for 5 epochs |" in text
    assert "| 1 | 0.01 | 2.3000 | 90.00 | 50.00 | 100.0 |" in text
    assert "| 2 | 0.01 | 2.0000 | - | - | 300.0 |" in text  # an epoch without validation
    assert "| 3 | 0.001 | 1.5000 | 60.00 | 25.00 | 300.0 |" in text
    assert (
        "Trained 3 epochs; the schedule's last word: epoch limit." in text
        and "Training time 1:02:03" in text
    )  # 3723.4 s
    one = write_report(
        write_run(
            tmp_path / "one",
            metrics=METRICS[:1],
            drops=[],
            results={**RESULTS, "epochs_trained": 1},
        )
    ).read_text()
    assert "Trained 1 epoch; the schedule's" in one
    # The same images every epoch at 100, 300 and 300 images/s: total images / total time.
    n = 1000
    assert f"{3 * n / (n / 100 + n / 300 + n / 300):.1f} images/s" in text  # 180.0
    assert "![learning curves](curves.png)" in text
    assert (tmp_path / "curves.png").is_file()


@pytest.mark.parametrize("classes", [10, 3])
def test_demo_report_says_not_comparable_and_gives_chance(tmp_path, classes):
    dataset = f"synthetic demo ({classes} classes)"
    deviations = (f"{classes} classes instead of 1000", "batch 32 instead of 128")
    results = {**RESULTS, "ten_view": None}
    text = write_report(
        write_run(tmp_path, dataset, classes, deviations=deviations, results=results)
    ).read_text()
    top1 = 100 * (classes - 1) / classes  # guess one class of `classes`
    top5 = 100 * (classes - min(5, classes)) / classes  # 5 guesses (all of them if fewer)
    assert f"| chance ({classes} classes) | {dataset} | {top1:.2f} | {top5:.2f} |" in text
    assert f"{top1:.2f}% top-1, {top5:.2f}% top-5" in text
    assert "NOT comparable" in text and "ImageNet" in text
    assert "the paper's figure" not in text and "+0." not in text
    assert "| this run, ten views (not run) |" in text
    for source in PAPER_SOURCES:
        assert f"| {source}" in text
    for deviation in deviations:
        assert f"\n- {deviation}\n" in text


@pytest.mark.parametrize(
    "setting, value, feature, delta",
    [
        ("columns", 1, "two columns", "| +1.7 | +1.2 |"),
        ("lrn", False, "local response normalization", "| +1.4 | +1.2 |"),
        ("overlapping_pool", False, "overlapping pooling", "| +0.4 | +0.3 |"),
        ("lighting", "none", "PCA lighting", "| +1 | not given |"),
        ("dropout", False, "dropout (P", "| not given | not given |"),
        ("remove_conv", "conv4", "a middle conv", "| +2 | not given |"),
    ],
)
def test_ablation_note_names_the_switch_and_the_papers_delta(
    tmp_path, setting, value, feature, delta
):
    text = write_report(write_run(tmp_path, settings={setting: value})).read_text()
    assert "## Ablation" in text
    line = table_line(text, feature)
    assert f"| {setting}={value} {delta}" in line
    assert text.count("(P §") == 1  # only the one switch that is off


def test_no_drops(tmp_path):
    text = write_report(write_run(tmp_path, drops=[])).read_text()
    assert "## Learning-rate drops\n\nnone\n" in text


# ---- format_comparison --------------------------------------------------------------------


def test_format_comparison_plain_text_on_ilsvrc_2010():
    text = format_comparison({"center": {"top1": 0.3812, "top5": 0.1650}}, "ILSVRC-2010 test")
    assert "|" not in text
    (table1,) = [ln for ln in text.splitlines() if ln[2:].startswith("P Table 1")]
    assert table1.startswith("* ") and "* the paper's figure for this data" in text
    assert f"{38.12 - 37.5:+.2f} / {16.50 - 17.0:+.2f}" in table1  # +0.62 / -0.50
    (table2,) = [ln for ln in text.splitlines() if ln[2:].startswith("P Table 2")]
    assert table2.startswith("  ") and "+" not in table2
    assert "this run, ten views (not run)" in text and "chance" not in text


@pytest.mark.parametrize(
    "dataset", ["synthetic demo (10 classes)", "ILSVRC-2012 val", "ILSVRC-2010 test"]
)
@pytest.mark.parametrize("recipe", ["paper", "2012-code"])
def test_format_comparison_fits_100_columns_and_keeps_every_label(dataset, recipe):
    text = format_comparison(RESULTS, dataset, num_classes=10, recipe=recipe)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    flat = " ".join(text.split())  # footnotes may wrap
    for row in paper.RESULTS:  # each row's full label, in its row or in a footnote
        assert f"{row.source} ({row.note})" in flat, row


def test_format_comparison_demo_gives_chance():
    text = format_comparison(RESULTS, "synthetic demo (10 classes)", num_classes=10)
    assert "NOT comparable" in text and "90.00% top-1, 50.00% top-5" in text


# ---- bad run folders ----------------------------------------------------------------------


def test_missing_metrics_file(tmp_path):
    (write_run(tmp_path) / "metrics.jsonl").unlink()
    with pytest.raises(UsageError, match=r"metrics\.jsonl: missing"):
        write_report(tmp_path)


def test_malformed_metrics_line_is_named(tmp_path):
    with open(write_run(tmp_path) / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "lr": 0.001,\n')
    with pytest.raises(UsageError, match=r"metrics\.jsonl line 4: not valid JSON"):
        write_report(tmp_path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "results.json",
            {**RESULTS, "center": {"top1": 40.66, "top5": 18.21}},
            r"results\.json 'center': 'top1' must be a fraction in \[0, 1\], got 40.66",
        ),
        ("results.json", {"center": RESULTS["center"]}, r"results\.json: missing 'wall_time_s'"),
        ("drops.json", {"epoch": 3}, r"drops\.json: expected a JSON list"),
        ("drops.json", [{**DROPS[0], "new_lr": "0.001"}], r"drops\.json item 1: 'new_lr' must be"),
        ("config.json", [], r"config\.json: expected a JSON object"),
        (
            "metrics.jsonl",
            METRICS[:1] + METRICS[:1],
            r"metrics\.jsonl line 2: epoch 1 after epoch 1",
        ),
        ("metrics.jsonl", [], r"metrics\.jsonl: no epochs"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, content, message):
    write_run(tmp_path)
    lines = [json.dumps(m) for m in content] if name.endswith(".jsonl") else [json.dumps(content)]
    (tmp_path / name).write_text("\n".join(lines))
    with pytest.raises(UsageError, match=message):
        write_report(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(UsageError, match="not a run folder"):
        write_report(tmp_path / "nowhere")


# ---- curves.png ---------------------------------------------------------------------------


class Drawn:
    """A PNG written by ``plot.learning_curves``, read back as pixels, with each panel's mapping
    from data to those pixels taken from the same figure (``plot.curves_figure``, drawn alike)."""

    def __init__(self, path: Path, metrics: list, drops: list, title: str | None = None):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (plot.WIDTH, plot.HEIGHT)
            self.pixels = np.asarray(image.convert("RGB")).astype(int)
        args = (metrics, drops) if title is None else (metrics, drops, title)
        figure = plot.curves_figure(*args)
        figure.canvas.draw()
        self.panels = figure.axes[: len(plot.PANELS)]

    def px(self, panel: int, x: float, y: float) -> tuple[int, int]:
        """The pixel (column, row) of data point (x, y) in panel ``panel``."""
        col, up = self.panels[panel].transData.transform((x, y))
        return round(col), round(plot.HEIGHT - up)

    def box(self, panel: int) -> np.ndarray:
        """The pixels inside the panel's frame, its edges excluded."""
        b = self.panels[panel].get_window_extent()
        top, bottom = round(plot.HEIGHT - b.y1), round(plot.HEIGHT - b.y0)
        return self.pixels[top + 2 : bottom - 1, round(b.x0) + 2 : round(b.x1) - 1]

    def has(self, panel: int, colour: tuple[int, int, int]) -> bool:
        return bool((self.box(panel) == colour).all(-1).any())

    def dashes(self, panel: int, x: float) -> np.ndarray:
        """Per row of the lower 60% of the panel (below the legend and the lr labels): whether
        the 3 pixels around ``x`` hold the drop line's grey (anti-aliased: within 40 of it; the
        curves' colours and their blends with white never come that close)."""
        low, high = self.panels[panel].get_ylim()
        col, top = self.px(panel, x, low + 0.6 * (high - low))
        bottom = self.px(panel, x, low)[1]
        column = self.pixels[top : bottom - 2, col - 1 : col + 2]
        return (np.abs(column - plot.DROP_COLOR).max(-1) <= 40).any(-1)

    def at(self, panel: int, x: float, y: float) -> tuple[int, int, int]:
        col, row = self.px(panel, x, y)
        return tuple(self.pixels[row, col])


def test_nice_ticks():
    assert plot.nice_ticks(0, 90.5, target=8, min_step=1) == [0, 20, 40, 60, 80, 100]
    assert plot.nice_ticks(0, 1.5, target=8, min_step=1) == [0, 1, 2]
    assert plot.nice_ticks(2.196, 2.304) == pytest.approx(
        [2.18, 2.2, 2.22, 2.24, 2.26, 2.28, 2.3, 2.32]
    )


def test_curves_png_has_both_panels_and_the_drop_line(tmp_path):
    write_report(write_run(tmp_path))
    drawn = Drawn(
        tmp_path / "curves.png", METRICS, DROPS, f"AlexNet (2012) replication: {IMAGENET_2012}"
    )
    assert drawn.has(0, plot.LOSS_COLOR)
    assert drawn.has(1, plot.TOP1_COLOR) and drawn.has(1, plot.TOP5_COLOR)
    assert not drawn.has(1, plot.LOSS_COLOR)
    # Each point sits where its axes put it: loss 1.5 at epoch 3, top-1 60% at epoch 3.
    assert drawn.at(0, 3, 1.5) == plot.LOSS_COLOR
    assert drawn.at(1, 3, 60) == plot.TOP1_COLOR
    # The drop to 0.001 from epoch 3 is a dashed line between epochs 2 and 3, in both panels.
    for panel in (0, 1):
        assert drawn.px(panel, 2, 0)[0] < drawn.px(panel, 2.5, 0)[0] < drawn.px(panel, 3, 0)[0]
        dash = drawn.dashes(panel, 2.5)
        assert 0.3 * len(dash) < dash.sum() < 0.95 * len(dash)  # dashed, not solid


def test_curves_without_drops_have_no_drop_line(tmp_path):
    plot.learning_curves(METRICS, [], tmp_path / "plain.png")
    plot.learning_curves(METRICS, DROPS, tmp_path / "drops.png")
    plain = Drawn(tmp_path / "plain.png", METRICS, [])
    drops = Drawn(tmp_path / "drops.png", METRICS, DROPS)
    for panel in (0, 1):
        assert not plain.dashes(panel, 2.5).any()
        assert drops.dashes(panel, 2.5).sum() > 0.3 * len(drops.dashes(panel, 2.5))


def test_one_epoch_without_validation(tmp_path):
    metrics = [{"epoch": 1, "lr": 0.01, "train_loss": 6.9}]
    plot.learning_curves(metrics, [], tmp_path / "one.png")
    drawn = Drawn(tmp_path / "one.png", metrics, [])
    assert drawn.at(0, 1, 6.9) == plot.LOSS_COLOR
    assert not drawn.has(1, plot.TOP1_COLOR) and not drawn.has(1, plot.TOP5_COLOR)
    assert [t.get_text() for t in drawn.panels[1].texts] == ["no values"]


def test_long_run_fits_on_the_axes(tmp_path):
    metrics = [
        {"epoch": e, "train_loss": 7 / e, "val_top1": 0.4 + 0.6 / e, "val_top5": 0.2 + 0.6 / e}
        for e in range(1, 121)
    ]
    drops = [{"epoch": e, "new_lr": lr} for e, lr in ((25, 1e-3), (51, 1e-4), (79, 1e-5))]
    plot.learning_curves(metrics, drops, tmp_path / "long.png")
    loss_ticks, error_ticks = plot.layout(metrics, drops)
    assert loss_ticks.xticks[0] == 0 and loss_ticks.xticks[-1] >= 120.5
    assert loss_ticks.yticks[0] <= 7 / 120 and loss_ticks.yticks[-1] >= 7
    assert error_ticks.yticks[0] <= 100 * (0.2 + 0.6 / 120) and error_ticks.yticks[-1] == 100
    drawn = Drawn(tmp_path / "long.png", metrics, drops)
    assert drawn.panels[0].get_xlim() == (0, loss_ticks.xticks[-1])
    assert drawn.at(1, 120, 100 * (0.4 + 0.6 / 120)) == plot.TOP1_COLOR
    labels = [t.get_text() for t in drawn.panels[0].texts]
    assert labels == ["lr 0.001", "lr 0.0001", "lr 1e-05"]


def test_no_epochs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        plot.learning_curves([], [], tmp_path / "none.png")
