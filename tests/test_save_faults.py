"""Faults while saving: a run killed before, during or between its checkpoint writes, or during
its final ten-view test, a full disk, and a checkpoint truncated by hand must each end in a run
with the final weights of an uninterrupted run, or in one line naming the remedy.

The real command line runs in subprocesses on a tiny set (6 training images, batch 3: one epoch
of two steps, a checkpoint after each). A kill lands at a known point through
tests/pause_child.py, which runs scripts/replicate.py with a pause monkeypatched in (TEST_PAUSE:
the process stops there and the test sends SIGKILL). The faults follow one another on one run
folder, each run starting from what the last one left, as a user's would; the full disk is
simulated in this process by a file that refuses writes with ENOSPC, so no mount is needed. One
uninterrupted run of the same command is the reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import FullDisk
from pause_child import TEST_PAUSE

from alexnet2012 import files as files_module
from alexnet2012.checkpoint import MARGIN, load_checkpoint, save_checkpoint
from alexnet2012.config import TrainConfig
from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.errors import SaveError, UsageError
from alexnet2012.model import AlexNet
from alexnet2012.report import write_report
from alexnet2012.train import Trainer

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--batch-size", "3", "--epochs", "1", "--workers", "0", "--checkpoint-minutes", "0"]
TMP = re.compile(r"^\.checkpoint\.pt\.[0-9a-f]{8}\.tmp$")
NOT_TIMINGS = ("epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A prepared 3-class synthetic cache: 6 training images, 3 validation images."""
    root = tmp_path_factory.mktemp("faults")
    make_synthetic_imagenet(
        root / "imagenet",
        classes=3,
        train_per_class=2,
        val_per_class=1,
        seed=1,
        workers=1,
        progress=False,
    )
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


def start(args: list, env: dict[str, str] | None = None) -> subprocess.Popen:
    """scripts/replicate.py in a subprocess (on this worker's threads, tests/conftest.py); where
    ``env`` sets TEST_PAUSE, through tests/pause_child.py, which pauses it there."""
    env = {**{k: v for k, v in os.environ.items() if k != TEST_PAUSE}, **(env or {})}
    script = "tests/pause_child.py" if TEST_PAUSE in env else "scripts/replicate.py"
    return subprocess.Popen(
        [sys.executable, script, *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Replicate:
    """scripts/replicate.py in a subprocess, optionally stopped at a pause point
    (tests/pause_child.py) and killed."""

    def __init__(self, args: list, pause: str | None = None, marker: Path | None = None):
        self.paused = False
        proc = start(args, {TEST_PAUSE: f"{pause}:{marker}"} if pause else None)
        try:
            if pause:
                deadline = time.monotonic() + 600
                while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                self.paused = marker.exists()
                proc.kill()  # SIGKILL: no handler, no cleanup
            self.out, self.err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if marker is not None and marker.exists():
                marker.unlink()
        self.code = proc.returncode

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def fill_disk_for(name: str, room: int, monkeypatch) -> None:
    """Every write of the run file ``name`` (through its temporary file) runs out of space after
    ``room`` bytes; other files are written as usual."""
    real_open = open
    FullDisk.room = room

    def open_(path, mode="r", *args, **kwargs):
        if os.path.basename(path).startswith(f".{name}.") and "b" in mode:
            return io.BufferedWriter(FullDisk(path, mode.replace("b", "")))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", open_, raising=False)


def digests(folder: Path) -> dict[str, object]:
    """What each file in ``folder`` holds: its SHA-256; for a checkpoint, whose hash takes long,
    its inode, size and time (any write, atomic or not, changes one of them)."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        if p.name == "checkpoint.pt"
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


def metrics(folder: Path) -> list[dict]:
    """metrics.jsonl without its timings (which differ from run to run)."""
    lines = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: l[k] for k in NOT_TIMINGS} for l in lines]


def state_of(folder: Path) -> dict:
    return load_checkpoint(folder / "checkpoint.pt")


@pytest.fixture(scope="module")
def uninterrupted(cache, runs):
    """The run never interrupted, started at once: it computes beside the chain of faults (which
    spends much of its time starting Python). It saves only at the end of each epoch, so that
    the comparison also shows that saving changes nothing in what a run computes."""
    out = runs / "reference"
    proc = start(["--data", cache, "--out", out, *SETTINGS[:-2], "--quiet"])
    yield out, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def reference(uninterrupted) -> Path:
    """The uninterrupted run's folder, once it has finished."""
    out, proc = uninterrupted
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder for the module's run folders, removed with the module: their checkpoints are
    455 MB each, at most four at a time (in memory where tests/conftest.py finds room)."""
    folder = tmp_path_factory.mktemp("runs")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class _Capture:
    """This process's stdout and stderr, for the in-process steps of the module's fixture
    (capsys is per test)."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        return self

    def __exit__(self, *exc):
        self.out, self.err = sys.stdout.getvalue(), sys.stderr.getvalue()
        sys.stdout, sys.stderr = self.saved


class InProcess:
    """scripts/replicate.py run as its own __main__ in this process (so that a writer can be
    patched): its exit status, stdout and stderr."""

    def __init__(self, args: list, monkeypatch):
        monkeypatch.setattr(sys, "argv", ["scripts/replicate.py", *map(str, args)])
        self.code = 0
        with _Capture() as capture:
            try:
                runpy.run_path(str(REPO / "scripts" / "replicate.py"), run_name="__main__")
            except SystemExit as exit_:
                self.code = exit_.code
        self.out, self.err = capture.out, capture.err

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


@pytest.fixture(scope="module")
def chain(cache, runs, uninterrupted):
    """The faults, one after another on one run folder: what each run printed and left.

    1. the command, killed after its first step, before its first checkpoint is written;
    2. the same command again, killed halfway through writing its first checkpoint;
    3. --resume (the run starts from the beginning), killed between two checkpoints (right after
       its first);
    4. --resume, killed halfway through writing its second checkpoint;
    5. --resume on a disk that fills up while it writes that checkpoint (in this process);
    6. the checkpoint truncated by hand: --resume refuses, and it is deleted as the refusal says;
    7. the command that 5 printed (the run starts from the beginning), killed when the final test
       comes to its ten views;
    8. --resume, to the end.
    """
    out, marker = runs / "run", runs / "paused"
    command = ["--data", cache, "--out", out, *SETTINGS, "--quiet"]
    resume = ["--resume", "--out", out, "--quiet"]
    steps: dict = {}

    def record(name, run):
        steps[name] = run
        run.files = sorted(os.listdir(out))
        run.temporary = [n for n in run.files if TMP.match(n)]
        run.sizes = {n: (out / n).stat().st_size for n in run.files}
        if "checkpoint.pt" in run.files and name != 6:  # 6: truncated by hand
            saved = torch.load(out / "checkpoint.pt", mmap=True, weights_only=True)["state"]
            run.saved_at = (saved["epoch"], saved["batch"], saved["finished"])
            run.signature = digests(out)["checkpoint.pt"]

    record(1, Replicate(command, "save1.before", marker))
    record(2, Replicate(command, "save1.half", marker))
    record(3, Replicate(resume, "save1.after", marker))
    record(4, Replicate(resume, "save1.half", marker))  # this process's first save
    with pytest.MonkeyPatch.context() as monkeypatch:
        fill_disk_for("checkpoint.pt", 200_000_000, monkeypatch)
        record(5, InProcess(resume, monkeypatch))
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    del data
    steps["6 before"] = digests(out)
    with pytest.MonkeyPatch.context() as monkeypatch:
        record(6, InProcess(resume, monkeypatch))
    steps["6 after"] = digests(out)
    (out / "checkpoint.pt").unlink()
    printed = shlex.split(steps[5].err.strip().partition("continue with: ")[2])[2:]
    record(7, Replicate(printed or resume, "ten-view", marker))
    record(8, Replicate(resume))
    return steps, out


RESTART = (
    "no checkpoint in {}: the run starts from the beginning with the settings in its config.json"
)


def killed(run) -> bool:
    return run.paused and run.code == -9


def test_killed_before_the_first_checkpoint_the_same_command_starts_the_run_again(chain):
    steps, out = chain
    assert killed(steps[1]), steps[1]
    assert steps[1].files == ["config.json"]
    assert RESTART.format(out) in steps[2].out.splitlines(), steps[2]


def test_killed_while_writing_its_first_checkpoint_resume_starts_the_run_again(chain):
    steps, out = chain
    assert killed(steps[2]), steps[2]
    left = steps[2].temporary
    assert len(left) == 1 and steps[2].files == sorted(["config.json", *left])
    # the kill came halfway: the temporary file holds half a checkpoint
    assert 0.45 < steps[2].sizes[left[0]] / steps[3].sizes["checkpoint.pt"] < 0.55
    lines = steps[3].out.splitlines()
    assert f"removed 1 temporary file left by a killed save in {out}: {left[0]}" in lines, steps[3]
    assert RESTART.format(out) in lines


def test_killed_between_checkpoints_resume_continues_from_the_last(chain):
    steps, out = chain
    assert killed(steps[3]), steps[3]
    assert steps[3].files == ["checkpoint.pt", "config.json"]
    assert steps[3].saved_at == (1, 1, False)  # after the first step
    lines = steps[4].out.splitlines()
    assert f"resumed from {out / 'checkpoint.pt'} (epoch 1, batch 1)" in lines, steps[4]


def test_killed_while_writing_a_later_checkpoint_the_one_before_is_whole(chain):
    steps, out = chain
    assert killed(steps[4]), steps[4]
    left = steps[4].temporary
    assert len(left) == 1 and steps[4].files == sorted(
        ["checkpoint.pt", "config.json", "drops.json", "metrics.jsonl", *left]
    )
    assert steps[4].signature == steps[3].signature  # the checkpoint before, untouched
    lines = steps[5].out.splitlines()  # and the next run resumes from it
    assert f"removed 1 temporary file left by a killed save in {out}: {left[0]}" in lines
    assert f"resumed from {out / 'checkpoint.pt'} (epoch 1, batch 1)" in lines


def test_a_full_disk_is_one_line_naming_the_file_the_space_and_how_to_continue(chain):
    steps, out = chain
    full = steps[5]
    lines = full.err.strip().splitlines()
    assert full.code == 2 and len(lines) == 1 and "Traceback" not in full.err, full
    path = out / "checkpoint.pt"
    match = re.fullmatch(
        rf"error: cannot write checkpoint {re.escape(str(path))} \(No space left on device\): it "
        r"needs ([\d.]+) MB, [\d.]+ [GMK]B left on its disk; the last checkpoint is intact: free "
        r"space, then continue with: (.*)",
        lines[0],
    )
    assert match, lines[0]
    # the space it needed: the checkpoint it replaces (the same tensors) and at most MARGIN more
    size = steps[4].sizes["checkpoint.pt"] / 1e6
    assert size <= float(match[1]) <= size + MARGIN / 1e6 + 0.1
    script = REPO / "scripts" / "replicate.py"  # absolute: it works from any folder
    assert match[2] == f"{sys.executable} {script} --resume --out {out} --quiet"
    # the previous checkpoint is whole and untouched, the temporary file gone
    assert full.signature == steps[4].signature and full.temporary == []


def test_a_truncated_checkpoint_is_refused_in_one_line_naming_the_remedy(chain):
    steps, out = chain
    refused = steps[6]
    lines = refused.err.strip().splitlines()
    assert refused.code == 2 and len(lines) == 1, refused
    assert lines[0] == (
        f"error: checkpoint {out / 'checkpoint.pt'} is corrupt or not an alexnet2012 checkpoint "
        "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central "
        "directory): the run cannot continue from it: put back a good copy, or delete it and "
        "--resume starts the run again from the beginning"
    )
    assert steps["6 after"] == steps["6 before"]  # nothing touched
    # deleted as it says, the command the full disk printed starts the run again
    assert RESTART.format(out) in steps[7].out.splitlines(), steps[7]


def test_killed_in_the_final_ten_view_test_resume_tests_again(chain):
    steps, out = chain
    assert killed(steps[7]), steps[7]
    assert steps[7].saved_at == (2, 0, True) and "results.json" not in steps[7].files
    last = steps[8]
    assert last.code == 0 and last.err == "", last
    assert f"resumed from {out / 'checkpoint.pt'} (finished)" in last.out.splitlines()
    assert {"results.json", "report.md", "curves.png"} <= set(last.files)


def test_every_fault_ends_with_the_weights_of_the_uninterrupted_run(chain, reference):
    _, out = chain
    got, expected = state_of(out), state_of(reference)
    assert got["finished"] and expected["finished"] and got["epoch"] == expected["epoch"] == 2
    for part in ("model", "optimizer"):
        flat_got, flat_expected = _tensors(got[part]), _tensors(expected[part])
        assert flat_got.keys() == flat_expected.keys()
        for name in flat_expected:
            assert torch.equal(flat_got[name], flat_expected[name]), (part, name)
    # every epoch logged once, with the same numbers; the mean training loss is summed in
    # float32 between checkpoints, so its last bits follow --checkpoint-minutes
    logged, expected_logged = metrics(out), metrics(reference)
    for line, expected_line in zip(logged, expected_logged):
        assert line.pop("train_loss") == pytest.approx(expected_line.pop("train_loss"), rel=1e-6)
    assert logged == expected_logged
    results = [json.loads((folder / "results.json").read_text()) for folder in (out, reference)]
    assert results[0]["center"] == results[1]["center"]
    assert results[0]["ten_view"] == results[1]["ten_view"]


def _tensors(state, prefix="") -> dict[str, torch.Tensor]:
    """The tensors in a nested state dict, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = (
        state.items()
        if isinstance(state, dict)
        else enumerate(state)
        if isinstance(state, (list, tuple))
        else ()
    )
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}/{key}").items()}


@pytest.mark.parametrize("name", ["curves.png", "report.md"])
def test_a_full_disk_while_writing_the_report_names_the_file_and_keeps_the_old_one(
    reference, monkeypatch, name
):
    before = digests(reference)
    fill_disk_for(name, 100, monkeypatch)
    with pytest.raises(SaveError) as info:
        write_report(reference)
    path = reference / name
    match = re.fullmatch(
        rf"cannot write {re.escape(str(path))} \(No space left on device\): it "
        r"needs ([\d.]+) KB, [\d.]+ [GMK]B left on its disk",
        str(info.value),
    )
    assert match and info.value.no_space, str(info.value)
    assert abs(float(match[1]) * 1e3 - path.stat().st_size) <= 50  # the same file, rounded
    assert digests(reference) == before  # report.md and curves.png as they were, no temporary


def checkpoint_size() -> int:
    """A 3-class run's checkpoint as the rule says, from the model: its weights twice (the
    weights and PaperSGD's velocity) and MARGIN."""
    with torch.device("meta"):
        weights = sum(t.numel() * t.element_size() for t in AlexNet(3).state_dict().values())
    return 2 * weights + MARGIN


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def test_too_little_space_for_two_checkpoints_is_refused_before_training(
    cache, tmp_path, monkeypatch
):
    size = checkpoint_size()
    free = 2 * size - 1
    monkeypatch.setattr("alexnet2012.runfolder.free_space", lambda path: free)
    out = tmp_path / "run"
    config = TrainConfig(cache=str(cache), out=str(out), batch_size=3, workers=0)
    with pytest.raises(UsageError) as info:
        Trainer(config, progress=False, log=lambda s: None)
    assert str(info.value) == (
        f"not enough space to write {out / 'checkpoint.pt'}: it needs {mb(2 * size)} (two "
        f"checkpoints of {mb(size)}: the latest and the next, written beside it), {mb(free)} left "
        "on its disk: free space, or give --out on another disk"
    )
    assert not out.exists()


def test_a_resumed_run_needs_room_for_one_checkpoint_beside_its_own(reference, monkeypatch):
    size, held = checkpoint_size(), (reference / "checkpoint.pt").stat().st_size
    assert size - MARGIN < held <= size  # the rule bounds the real file
    free = {"bytes": 2 * size - held}
    monkeypatch.setattr("alexnet2012.runfolder.free_space", lambda path: free["bytes"])
    run = Trainer.resume(str(reference), progress=False, log=lambda s: None)  # just enough room
    free["bytes"] -= 1
    with pytest.raises(UsageError) as info:
        run.folder.check_room(run.checkpoint_bytes(), resumed=True)
    assert str(info.value) == (
        f"not enough space to write {reference / 'checkpoint.pt'}: it needs {mb(2 * size - held)} "
        f"(two checkpoints of {mb(size)}: the latest and the next, written beside it), "
        f"{mb(free['bytes'])} left on its disk: free space, or move the run folder to another "
        "disk and --resume it there"
    )


def test_each_save_checks_the_space_first_and_fails_with_the_same_message(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.zeros(1000)})
    before = path.read_bytes()
    state = {"w": torch.ones(250_000), "v": torch.ones(250_000)}  # 2 MB of storages
    monkeypatch.setattr(files_module, "free_space", lambda p: 2_500_000)
    with pytest.raises(SaveError) as info:
        save_checkpoint(path, state)
    assert str(info.value) == (
        f"not enough space to write {path}: it needs "
        f"{(2_000_000 + MARGIN) / 1e6:.1f} MB, 2.5 MB left on its disk"
    )
    assert info.value.no_space and path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
