"""Progress of the data passes: plain lines where stderr is a log (nohup, Slurm), a bar on a
terminal, nothing when switched off."""

import sys

import pytest

from alexnet2012 import progress as progress_module
from alexnet2012.progress import Progress


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The time the progress reads: set ``clock[0]``."""
    now = [1000.0]
    monkeypatch.setattr(progress_module, "monotonic", lambda: now[0])
    return now


def test_a_log_gets_a_line_per_tenth_of_the_work_at_most_every_30_s(clock, capsys):
    with Progress("train", 100, "decoding 80 of 100 images", initial=20) as bar:
        for _ in range(80):  # one image a second
            clock[0] += 1
            bar.update(1)
    assert capsys.readouterr().err.splitlines() == [
        "train: decoding 80 of 100 images",
        # 30 s after the start (10 images would be a tenth, but lines are 30 s apart)
        "train: 50 of 100 images (50%), 0:00:30 so far, about 0:00:50 left",
        "train: 80 of 100 images (80%), 0:01:00 so far, about 0:00:20 left",
        "train: done, 80 images in 0:01:20",  # no line at 100%: the end line says it
    ]


def test_a_slow_pass_gets_a_line_every_5_minutes(clock, capsys):
    with Progress("x", 1000, "start") as bar:
        for _ in range(4):  # an image every 100 s: far from a tenth
            clock[0] += 100
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    # 997 images left at 100 s each: 99,700 s = 27.7 h = 1 day 4 h to the hour
    assert lines[1:] == [
        "x: 3 of 1000 images (0%), 0:05:00 so far, about 1d 4h left",
        "x: done, 4 images in 0:06:40",
    ]


def test_an_error_ends_without_a_done_line(clock, capsys):
    with pytest.raises(KeyboardInterrupt), Progress("val", 10, "start") as bar:
        bar.update(3)
        raise KeyboardInterrupt
    assert capsys.readouterr().err.splitlines() == ["val: start"]


def test_a_terminal_gets_a_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with Progress("train", 10, "start") as bar:
        bar.update(10)
    err = capsys.readouterr().err
    assert "train: 100%" in err and "10/10" in err and "start" not in err


@pytest.mark.parametrize("terminal", [False, True])
def test_disabled_progress_prints_nothing(capsys, monkeypatch, terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    with Progress("train", 10, "start", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_track_in_a_log_writes_plain_lines_not_frames(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert list(progress_module.track(range(3), "eval")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err and err.strip().startswith("eval: done, 3 batches in "), err
