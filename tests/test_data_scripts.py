"""The data scripts' command lines: --help shows the defaults, and Ctrl-C during prepare says how
to continue."""

import runpy
import sys
from pathlib import Path

import pytest

from alexnet2012.data import make_synthetic_imagenet
from alexnet2012.data import prepare as prepare_module

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(script: str, args: list, capsys, monkeypatch) -> tuple[int, str, str]:
    """scripts/<script> in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize(
    "script, shown",
    [
        (
            "prepare_imagenet.py",
            [
                "splits to prepare (default: train val)",
                "ILSVRC year (default: 2012)",
                "decoding processes, 0: in this process (default: one per CPU core)",
            ],
        ),
        (
            "make_synthetic_imagenet.py",
            [
                "number of classes, at most 360 ",
                "(default: 10)",
                "train images per class (default: 100)",
                "val images per class (default: 20)",
                "drawing processes, 0: in this process (default: one per CPU core)",
            ],
        ),
        (
            "benchmark_data.py",
            [
                "images per batch (default: 128)",
                "batches timed per stage (default: 30)",
                "decoded in the decode stage (default: 200)",
                "(default: one per CPU core",
                "crop size (default: 224",
            ],
        ),
    ],
)
def test_help_shows_the_defaults(script, shown, capsys, monkeypatch):
    code, out, _ = _run(script, ["--help"], capsys, monkeypatch)
    text = " ".join(out.split())  # argparse wraps lines
    assert code == 0 and all(s in text for s in shown), text


def test_ctrl_c_during_prepare_says_how_to_continue(tmp_path, capsys, monkeypatch):
    src, cache = tmp_path / "src", tmp_path / "cache"
    make_synthetic_imagenet(src, classes=1, train_per_class=2, val_per_class=1, progress=False)

    def ctrl_c(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "load_256", ctrl_c)
    code, out, err = _run("prepare_imagenet.py", [src, cache, "--quiet"], capsys, monkeypatch)
    assert (code, out) == (130, "")
    assert err == (
        f"\ninterrupted: finished work is kept in {cache}; run the same command again to continue\n"
    )
    monkeypatch.undo()
    code, out, _ = _run("prepare_imagenet.py", [src, cache, "--quiet"], capsys, monkeypatch)
    assert code == 0 and "train: 2 of 2 images usable, 0 unreadable (2 decoded in this run)" in out


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("prepare_imagenet.py", ["--workers", "-1"], "--workers must be 0 (work in this process) "),
        ("make_synthetic_imagenet.py", ["--workers", "-1"], "--workers must be 0 (work in this "),
        (
            "make_synthetic_imagenet.py",
            ["--seed", "-1"],
            "--seed must be from 0 to 2**63-1, got -1",
        ),
        ("make_synthetic_imagenet.py", ["--classes", "0"], "--classes must be at least 1, got 0"),
        ("make_synthetic_imagenet.py", ["--classes", "361"], "--classes must be at most 360, got "),
        (
            "make_synthetic_imagenet.py",
            ["--val-per-class", "0"],
            "--val-per-class must be at least 1, got 0",
        ),
        (
            "make_synthetic_imagenet.py",
            ["--train-per-class", "0"],
            "--train-per-class must be at least 1, got 0",
        ),
    ],
)
def test_bad_options_are_one_line_errors(script, args, message, tmp_path, capsys, monkeypatch):
    """The messages of alexnet2012.options, as in every script; nothing is written."""
    places = ["src", "cache"] if script == "prepare_imagenet.py" else ["out"]
    code, out, err = _run(script, [*(tmp_path / p for p in places), *args], capsys, monkeypatch)
    assert (code, out) == (2, "") and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
