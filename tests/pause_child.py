"""scripts/replicate.py stopped at a known point, for the tests that kill a run there
(tests/test_save_faults.py; tests/distributed_child.py installs the same pause under torchrun).

TEST_PAUSE=<point>:<marker file>: at ``point`` the process creates the marker, writes its pid
and a newline into it, and waits (at most 10 minutes) until the marker is deleted or the process
is killed. Points: ``save<N>.before``, ``save<N>.half`` and ``save<N>.after`` (before, halfway
through and after the N-th checkpoint this process writes), and ``ten-view`` (before the final
test's ten-view pass). The pause is monkeypatched in: the package has no test hooks.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

TEST_PAUSE = "TEST_PAUSE"
REPO = Path(__file__).resolve().parents[1]


def pause(marker: str) -> None:
    """Create ``marker`` with this process's pid and wait until it is deleted (or 10 minutes)."""
    Path(marker).write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 600
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


class _PauseHalfway:
    """A file for ``torch.save`` that pauses once ``after`` bytes are written (and flushed, so
    that the half-written temporary file is on disk, as a kill leaves it)."""

    def __init__(self, f: Any, after: int, marker: str):
        self.f, self.after, self.marker, self.written = f, after, marker, 0

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        head = self.after - self.written
        if 0 < head <= len(data):  # the write that reaches the halfway mark: split at it
            self.f.write(data[:head])
            self.f.flush()
            pause(self.marker)
            data = data[head:]
        else:
            head = 0
        n = head + self.f.write(data)
        self.written += n
        return n

    def flush(self) -> None:
        self.f.flush()


def install(spec: str) -> None:
    """Pause at ``spec``'s point, ``<point>:<marker file>``, in this process."""
    from alexnet2012 import checkpoint
    from alexnet2012.train import Trainer

    point, _, marker = spec.partition(":")
    if not marker:
        raise ValueError(f"{TEST_PAUSE} is <point>:<marker file>, not {spec!r}")
    if point == "ten-view":
        validate = Trainer.validate

        def validate_then_pause(self, views: int = 1, split: str = "val"):
            if views == 10:
                pause(marker)
            return validate(self, views, split)

        Trainer.validate = validate_then_pause
        return
    save, _, when = point.partition(".")
    if not save.startswith("save") or when not in ("before", "half", "after"):
        raise ValueError(f"unknown pause point {point!r}")
    nth, saves = int(save[len("save") :]), [0]
    save_checkpoint, write_atomic = checkpoint.save_checkpoint, checkpoint.write_atomic

    def counted_save(path, state):
        saves[0] += 1
        if saves[0] == nth and when == "before":
            pause(marker)
        save_checkpoint(path, state)
        if saves[0] == nth and when == "after":
            pause(marker)

    def write_half_then_pause(path, needed, write, what):
        if saves[0] == nth and when == "half":
            return write_atomic(
                path, needed, lambda f: write(_PauseHalfway(f, needed // 2, marker)), what
            )
        return write_atomic(path, needed, write, what)

    checkpoint.save_checkpoint = counted_save
    checkpoint.write_atomic = write_half_then_pause  # the name save_checkpoint writes through


if __name__ == "__main__":
    if os.environ.get(TEST_PAUSE):
        install(os.environ[TEST_PAUSE])
    script = REPO / "scripts" / "replicate.py"
    sys.argv[0] = str(script)  # the script itself, as the lines it prints name it
    runpy.run_path(str(script), run_name="__main__")
