"""Checkpoints: round trip, atomic saves under simulated crashes, user errors, RNG capture."""

from __future__ import annotations

import collections
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch
from faults import FullDisk

from alexnet2012 import files
from alexnet2012.checkpoint import (
    MARGIN,
    is_temporary,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    storage_bytes,
    write_file,
)
from alexnet2012.errors import SaveError, UsageError
from alexnet2012.optim import PaperSGD
from alexnet2012.schedule import PaperSchedule


def training_state(seed: int) -> dict:
    """What a training loop saves: weights, optimizer, schedule, counters, RNG."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(5, 3)
    opt = PaperSGD(model.parameters())
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    schedule = PaperSchedule()
    schedule.step(1, 0.75)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": 1,
        "preset": "paper",
        "rng": rng_state(),
    }


def assert_same(a, b) -> None:
    """Deep equality with tensors compared exactly."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = training_state(0)
    save_checkpoint(path, state)
    assert_same(load_checkpoint(path), state)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_overwrite_replaces_the_old_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "crash", [RuntimeError, OSError, KeyboardInterrupt, "ctrl-c, then torch.save's cleanup fails"]
)
def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "checkpoint.pt"
    good = training_state(0)
    save_checkpoint(path, good)
    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        real_save(obj, str(tmp_path / "scratch"))
        data = (tmp_path / "scratch").read_bytes()
        (tmp_path / "scratch").unlink()
        f.write(data[: len(data) // 2])
        if crash == "ctrl-c, then torch.save's cleanup fails":
            try:
                raise KeyboardInterrupt
            finally:  # as torch.save's zip writer does on the interrupted write
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
        raise crash("simulated crash in the middle of torch.save")

    monkeypatch.setattr(torch, "save", half_then_crash)
    expected = {OSError: UsageError, RuntimeError: RuntimeError}.get(crash, KeyboardInterrupt)
    with pytest.raises(expected):
        save_checkpoint(path, training_state(1))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind
    assert_same(load_checkpoint(path), good)


def full_disk(monkeypatch, room: int, free: int) -> None:
    """Writes through the checkpoint module fill the disk after ``room`` bytes, and the disk then
    has ``free`` bytes left; before, it had room (the save's own check passes), as when another
    program fills the disk while the file is written."""
    FullDisk.room = room
    monkeypatch.setattr(
        files,
        "open",
        lambda path, mode: io.BufferedWriter(FullDisk(path, mode.replace("b", ""))),
        raising=False,
    )
    spaces = iter([10**12, free])
    monkeypatch.setattr(files, "free_space", lambda path: next(spaces))


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    # torch.save's zip writer turns the OSError into "RuntimeError: [enforce fail at
    # inline_container.cc] unexpected pos" when it closes the half-written file
    path = tmp_path / "checkpoint.pt"
    good = training_state(0)
    save_checkpoint(path, good)
    state = {"w": torch.ones(1_000_000), "v": torch.ones(1_000_000)}  # 8 MB of storages
    full_disk(monkeypatch, room=3_000_000, free=0)
    with pytest.raises(SaveError) as info:
        save_checkpoint(path, state)
    assert str(info.value) == (
        f"cannot write checkpoint {path} (No space left on device): it "
        f"needs {(8_000_000 + MARGIN) / 1e6:.1f} MB, 0 bytes left on its disk"
    )
    assert info.value.no_space and info.value.path == str(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind
    assert_same(load_checkpoint(path), good)


def test_write_file_is_atomic_and_a_full_disk_names_the_file_and_the_space(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    write_file(path, '{"epoch": 1}\n')
    write_file(path, '{"epoch": 1}\n{"epoch": 2}\n')
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    full_disk(monkeypatch, room=10, free=1_500)
    with pytest.raises(SaveError) as info:
        write_file(path, "x" * 2_000)
    assert str(info.value) == (
        f"cannot write {path} (No space left on device): it needs 2.0 KB, 1.5 KB left on its disk"
    )
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_the_size_a_save_needs_counts_each_storage_once(tmp_path):
    weights = torch.zeros(1000)
    state = {
        "a": weights,
        "view": weights[10:],
        "b": [torch.ones(2, 3, dtype=torch.float64)],
        "broadcast": torch.zeros(()).expand(500, 500),
        "n": 3,
    }
    assert storage_bytes(state) == 4 * 1000 + 8 * 6 + 4
    save_checkpoint(tmp_path / "c.pt", state)
    assert os.path.getsize(tmp_path / "c.pt") <= storage_bytes(state) + MARGIN


@pytest.mark.parametrize(
    "name, leftover",
    [
        (".checkpoint.pt.c5586b9d.tmp", True),
        (".metrics.jsonl.0123abcd.tmp", True),
        (".config.json.tmp", True),  # as versions before wrote JSON files
        (".checkpoint.pt.C5586B9D.tmp", False),
        (".checkpoint.pt.c5586b9.tmp", False),
        (".notes.txt.0123abcd.tmp", False),
        ("checkpoint.pt.0123abcd.tmp", False),
        (".checkpoint.pt", False),
    ],
)
def test_temporary_files_are_recognised_by_name(name, leftover):
    assert is_temporary(name, ("checkpoint.pt", "config.json", "metrics.jsonl")) is leftover


def test_save_into_a_missing_directory_is_a_usage_error(tmp_path):
    path = tmp_path / "no-such-dir" / "checkpoint.pt"
    with pytest.raises(UsageError, match="cannot write checkpoint .*no-such-dir"):
        save_checkpoint(path, {"epoch": 1})


@pytest.mark.parametrize(
    "value, name",
    [
        (np.float64(0.4), "numpy.float64"),
        (np.zeros(2), "numpy.ndarray"),
        (collections.defaultdict(int), "collections.defaultdict"),
    ],
)
def test_save_refuses_what_weights_only_cannot_load(tmp_path, value, name):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=rf"state\['schedule'\]\['best'\] is a {name}"):
        save_checkpoint(path, {"schedule": {"best": value}})
    assert os.listdir(tmp_path) == []


class Foreign:
    """A class torch's weights_only loader refuses to rebuild."""


def write_truncated(path):
    save_checkpoint(path, training_state(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_torch_file(obj):
    return lambda path: torch.save(obj, path)


BAD_FILES = {
    "truncated": (write_truncated, "corrupt"),
    "zero bytes": (lambda path: path.write_bytes(b""), "empty or ends early"),
    "garbage": (lambda path: path.write_bytes(b"not a checkpoint\n" * 100), "corrupt"),
    "foreign pickle": (
        lambda path: path.write_bytes(pickle.dumps(Foreign(), protocol=2)),
        "corrupt",
    ),
    "model weights only": (
        write_torch_file(torch.nn.Linear(2, 2).state_dict()),
        "no format marker",
    ),
    "a bare tensor": (write_torch_file(torch.zeros(3)), "no format marker"),
    "future version": (
        write_torch_file({"format": "alexnet2012.checkpoint", "version": 99, "state": {}}),
        "format version 99",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_are_one_line_usage_errors_naming_the_file(tmp_path, kind):
    write, words = BAD_FILES[kind]
    path = tmp_path / "bad-checkpoint.pt"
    write(path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message


def test_missing_file_and_directory_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="checkpoint .*missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UsageError, match=f"cannot read checkpoint {tmp_path}"):
        load_checkpoint(tmp_path)


def draws() -> tuple:
    """A few numbers from every generator, including the cached-Gaussian paths."""
    return (
        torch.rand(3).tolist() + torch.randn(2).tolist(),
        np.random.rand(3).tolist() + [np.random.randn()],
        [random.random(), random.gauss(0, 1), random.randrange(1000)],
    )


def test_rng_state_reproduces_torch_numpy_and_python(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    first = draws()
    assert draws() != first  # the generators moved on
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == first


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_state_reproduces_cuda():
    torch.cuda.init()
    state = rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(4, device="cuda").tolist()
    set_rng_state(state)
    assert torch.rand(4, device="cuda").tolist() == first
