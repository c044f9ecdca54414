"""Stopping a run when asked (SIGTERM from a scheduler, SIGINT from Ctrl-C or torchrun's agent):
during training the signal is a request that the replicas agree on at the next batch, where the
run saves its checkpoint and stops; elsewhere (preparing data, the final test) it stops at once.
And the command that continues a run, with absolute paths."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import distributed

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PATH_OPTIONS = ("--out", "--data", "--cache")  # made absolute in the command that continues
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "replicate.py"

_state: dict = {"signum": None, "defer": False, "pid": None}


class Stopped(KeyboardInterrupt):
    """The run stopped on a signal; ``code`` is the exit status a process killed by it shows
    (128 + the signal's number: 143 for SIGTERM, 130 for SIGINT); ``where`` the position saved
    ("" when the run stopped outside training, with its last checkpoint as it was)."""

    def __init__(self, signum: int, where: str = "", message: str = ""):
        super().__init__(message)
        self.signum, self.where, self.code = signum, where, 128 + signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def install() -> list:
    """Handle SIGTERM and SIGINT in this process from now on (where this is the main thread);
    returns the handlers before, for :func:`uninstall`."""
    _state.update(signum=None, defer=False, pid=os.getpid())
    if threading.current_thread() is not threading.main_thread():
        return []
    return [(signum, signal.signal(signum, _handler)) for signum in SIGNALS]


def uninstall(handlers: list) -> None:
    """Put back the handlers :func:`install` replaced."""
    for signum, handler in handlers:
        signal.signal(signum, handler)
    _state.update(defer=False, pid=None)


def _handler(signum: int, frame) -> None:
    if os.getpid() != _state["pid"]:  # a forked loader worker: its parent stops it
        return
    if _state["signum"] is None:
        _state["signum"] = signum
        if not _state["defer"]:
            raise Stopped(signum)
    elif signum == signal.SIGINT:  # Ctrl-C again: stop now, the save abandoned (it is atomic)
        raise Stopped(signum, message="interrupted again, while saving")
    # SIGTERM again (schedulers and torchrun's agent may both send it): the save goes on


def requested() -> bool:
    """Whether a signal asked this process to stop."""
    return _state["signum"] is not None


def stop_if_agreed(where: str) -> None:
    """Stop the run, saved at ``where``, if a signal reached any replica."""
    if distributed.agree(float(requested()))[0] > 0:
        stop_at(where)


def stop_at(where: str) -> None:
    """Stop the run, saved at ``where``, for the signal received (another replica's: SIGTERM)."""
    raise Stopped(_state["signum"] or signal.SIGTERM, where)


def defer(training: bool) -> None:
    """While ``training``, a signal waits for the next batch, where the replicas agree to stop;
    otherwise it stops the run at once."""
    _state["defer"] = training


def _absolute(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of the path options made absolute."""
    out, following = [], None
    for arg in argv:
        name, eq, value = arg.partition("=")
        if following:
            arg = str(Path(arg).resolve())
        elif eq and name in PATH_OPTIONS:
            arg = f"{name}={Path(value).resolve()}"
        out.append(arg)
        following = arg in PATH_OPTIONS
    return out


def _launcher() -> list[str] | None:
    """Under torchrun: its command (``sys.executable -m torch.distributed.run`` and its options,
    read from the agent's /proc/PID/cmdline), or None where it cannot be read."""
    try:
        words = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
    except (OSError, UnicodeDecodeError):
        return None
    script = Path(sys.argv[0]).name
    ends = [i for i, w in enumerate(words) if Path(w).name == script]
    starts = [
        i + 1 for i, w in enumerate(words) if w.endswith(("torchrun", "torch.distributed.run"))
    ]
    if not ends or not starts or starts[0] > ends[0]:
        return None
    return [sys.executable, "-m", "torch.distributed.run", *words[starts[0] : ends[0]]]


def continue_command(argv: Sequence[str], out: str | None) -> str:
    """The command that continues this run from any folder: the same command (a run folder with
    a checkpoint continues), with ``sys.executable``, the script and the paths absolute, and
    ``--out`` added when the run folder was the default; under torchrun, its command."""
    given = _absolute(argv)
    if out is not None and not any(a == "--out" or a.startswith("--out=") for a in given):
        given += ["--out", str(Path(out).resolve())]
    own = sys.argv[0].endswith(".py") and Path(sys.argv[0]).name != "__main__.py"
    script = Path(sys.argv[0]).resolve() if own else SCRIPT  # the script run (else, as a module)
    under = _launcher() if "TORCHELASTIC_RUN_ID" in os.environ else None
    return shlex.join([*(under or [sys.executable]), str(script), *given])
