"""scripts/summary.py and scripts/evaluate.py on bad input: one line, exit 2, refused before any
work; and the good input next to it still runs. Checkpoints are written directly in the training
checkpoint's format (no training)."""

import runpy
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from alexnet2012 import AlexNet
from alexnet2012.checkpoint import save_checkpoint
from alexnet2012.config import TrainConfig
from alexnet2012.data import cache_info, make_synthetic_imagenet, prepare_cache

ROOT = Path(__file__).resolve().parents[1]


def _cli(script: str, args: list, capsys, monkeypatch) -> tuple[int, str, str]:
    """Run scripts/<script> in this process; (exit status, stdout, stderr)."""
    path = ROOT / "scripts" / script
    monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def _one_error_line(code: int, stderr: str, *parts: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert all(part in lines[0] for part in parts), lines[0]


@pytest.mark.parametrize("classes", [0, -5])
def test_summary_refuses_a_class_count_below_one(classes, capsys, monkeypatch):
    code, _, stderr = _cli("summary.py", ["--num-classes", classes], capsys, monkeypatch)
    _one_error_line(code, stderr, f"--num-classes must be at least 1, got {classes}")


def test_summary_with_a_few_classes_lists_them_in_fc8(capsys, monkeypatch):
    code, stdout, _ = _cli("summary.py", ["--num-classes", 1], capsys, monkeypatch)
    fc8 = next(line for line in stdout.splitlines() if line.startswith("fc8"))
    # shape, columns, parameters (4096 weights + bias), neurons
    assert code == 0 and fc8.split()[1:5] == ["1", "1", "4,097", "1"]


@pytest.mark.parametrize("columns, conv3_input", [(2, "BOTH columns"), (1, "the layer below")])
def test_summary_names_the_crossings_only_in_the_two_column_net(
    columns, conv3_input, capsys, monkeypatch
):
    code, stdout, _ = _cli("summary.py", ["--columns", columns], capsys, monkeypatch)
    conv3 = next(line for line in stdout.splitlines() if line.startswith("conv3"))
    assert code == 0 and conv3.endswith(conv3_input)
    assert ("The columns cross only" in stdout) == (columns == 2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A prepared 3-class synthetic cache (a few val images)."""
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=2, val_per_class=2, seed=1, workers=1
    )
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


def _checkpoint(path: Path, num_classes: int, wnids: list[str] | None = None) -> Path:
    """A checkpoint of a ``num_classes`` net as training writes one, in milliseconds: constant
    weights, each stored as one value broadcast to its shape; without ``wnids``, as
    checkpoints before 2026-12 were (the class count only)."""
    with torch.device("meta"):
        shapes = AlexNet(num_classes).state_dict()
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in shapes.items()}
    config = asdict(TrainConfig(cache="unused", out="unused"))
    save_checkpoint(
        path,
        {
            "model": state,
            "config": config,
            "num_classes": num_classes,
            **({} if wnids is None else {"wnids": wnids}),
        },
    )
    return path


def _evaluate(checkpoint: Path, cache: Path, capsys, monkeypatch, *args) -> tuple[int, str, str]:
    return _cli(
        "evaluate.py",
        [
            "--checkpoint",
            checkpoint,
            "--data",
            cache,
            "--views",
            1,
            "--devices",
            "cpu",
            "--workers",
            0,
            *args,
        ],
        capsys,
        monkeypatch,
    )


@pytest.mark.parametrize("classes", [2, 4])  # fewer: labels out of range; more: wrong numbers
def test_evaluate_refuses_a_checkpoint_for_another_class_count(
    classes, cache, tmp_path, capsys, monkeypatch
):
    checkpoint = _checkpoint(tmp_path / "checkpoint.pt", classes)
    code, stdout, stderr = _evaluate(checkpoint, cache, capsys, monkeypatch)
    _one_error_line(
        code,
        stderr,
        "was trained on other classes",
        f"data {cache} holds (3 classes, the network's {classes})",
    )
    assert "error" not in stdout


def test_evaluate_refuses_a_checkpoint_for_other_classes_of_the_same_count(
    cache, tmp_path, capsys, monkeypatch
):
    wnids = cache_info(cache).wnids
    checkpoint = _checkpoint(tmp_path / "checkpoint.pt", 3, [wnids[0], wnids[1], "n99999999"])
    code, _, stderr = _evaluate(checkpoint, cache, capsys, monkeypatch)
    _one_error_line(
        code,
        stderr,
        "was trained on other classes",
        f"data {cache} holds (the same "
        f"number, 3, but class 2 is {wnids[2]} here, n99999999 in the network)",
    )


@pytest.mark.parametrize("recorded", [True, False])  # False: a checkpoint from before 2026-12
def test_evaluate_a_checkpoint_on_its_own_classes(recorded, cache, tmp_path, capsys, monkeypatch):
    wnids = cache_info(cache).wnids if recorded else None
    checkpoint = _checkpoint(tmp_path / "checkpoint.pt", 3, wnids)
    code, stdout, stderr = _evaluate(checkpoint, cache, capsys, monkeypatch, "--batch-size", 4)
    images = cache_info(cache).split_sizes["val"]  # every usable one, the last batch short
    assert code == 0, stderr
    assert f"(3 classes), 1 view, {images} images: top-1 error" in stdout


@pytest.mark.parametrize("batch_size", [0, -4])
def test_evaluate_refuses_a_batch_size_below_one(batch_size, cache, tmp_path, capsys, monkeypatch):
    checkpoint = _checkpoint(tmp_path / "checkpoint.pt", 3)
    code, _, stderr = _evaluate(checkpoint, cache, capsys, monkeypatch, "--batch-size", batch_size)
    _one_error_line(code, stderr, f"--batch-size must be at least 1, got {batch_size}")


def test_evaluate_quiet_turns_the_progress_bars_off(cache, tmp_path, capsys, monkeypatch):
    import alexnet2012.cli.evaluate as cli

    shown, real = [], cli.predictions
    monkeypatch.setattr(
        cli, "predictions", lambda *a, **k: shown.append(k["progress"]) or real(*a, **k)
    )
    checkpoint = _checkpoint(tmp_path / "checkpoint.pt", 3, cache_info(cache).wnids)
    for quiet in ([], ["--quiet"]):
        code, _, stderr = _evaluate(
            checkpoint, cache, capsys, monkeypatch, "--batch-size", 4, *quiet
        )
        assert code == 0, stderr
    assert shown == [True, False]


def test_evaluate_help_says_what_a_ten_view_batch_holds(capsys, monkeypatch):
    code, stdout, _ = _cli("evaluate.py", ["--help"], capsys, monkeypatch)
    assert code == 0 and "batch_size // 10 images" in " ".join(stdout.split())


def test_evaluate_takes_a_run_folder_as_its_checkpoint(cache, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = _checkpoint(run / "checkpoint.pt", 3, cache_info(cache).wnids)
    results = [_evaluate(path, cache, capsys, monkeypatch, "--quiet") for path in (checkpoint, run)]
    assert results[0][0] == 0 and results[1] == results[0], results
