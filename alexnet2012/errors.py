"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch


class UsageError(ValueError):
    """A problem with the user's input (paths, options, files) rather than a bug.

    Command-line scripts print its message as one line and exit with status 2.
    """


class SaveError(UsageError):
    """A file of a run could not be written (a full disk, no permission): one line naming the
    file, the space it needed and the space left. ``no_space``: freeing space is the remedy.
    The file's previous version is intact and no temporary file is left."""

    def __init__(self, message: str, path: str, no_space: bool = False):
        super().__init__(message)
        self.path, self.no_space = path, no_space


def check_writable(path: Path, option: str = "--json") -> None:
    """Refuse, before anything is measured, an output file that could not be written: a
    directory, a missing folder, a place where no file can be made (e.g. ``/proc``). Leaves an
    existing file as it is and makes no new one."""
    if path.is_dir():
        raise UsageError(
            f"{option} {path} is a directory: give a file name, e.g. {path / 'benchmark.json'}"
        )
    if not path.parent.is_dir():
        raise UsageError(
            f"{option} {path}: folder {path.parent} does not exist (create it or write elsewhere)"
        )
    existed = path.exists()
    try:
        path.open("a").close()
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot write a file there ({exc.strerror}): pick a writable folder"
        ) from None
    if not existed:
        path.unlink()


def foreign_files(folder: Path, own: tuple[str, ...], hidden: bool = True) -> str:
    """The names in ``folder`` (if it is one) other than ``own`` (and, with ``hidden=False``,
    other than dot-files), the first three listed for a message ("" when there are none)."""
    names = (
        sorted(
            p.name
            for p in folder.iterdir()
            if p.name not in own and (hidden or not p.name.startswith("."))
        )
        if folder.is_dir()
        else []
    )
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def ignore_interrupt() -> None:
    """A worker pool's initializer: Ctrl-C is the parent process's to handle (it stops the pool),
    so that workers do not each print a KeyboardInterrupt traceback; SIGTERM ends a worker, as
    ``Pool.terminate`` (and leaving a ``with Pool``) expects, whatever handler the parent had."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch failing to allocate memory (CUDA or CPU)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def run_cli(
    main: Callable[[], int | None], *, oom_hint: str = "use a smaller --batch-size"
) -> NoReturn:
    """Run a script's ``main``; turn a :class:`UsageError` into ``error: <message>`` (exit 2),
    running out of memory into ``error: out of memory ...; <oom_hint>`` (exit 2), and Ctrl-C
    into ``interrupted`` plus the interrupt's message, if any (e.g. how to resume; exit 130); a
    run stopped by a signal prints its line and exits with the signal's status."""
    try:
        code = main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # a signal's stop (preempt.Stopped) has its own line, code
        code = getattr(exc, "code", None)
        print(
            f"\n{exc}" if code else f"\ninterrupted{f': {exc}' if str(exc) else ''}",
            file=sys.stderr,
        )
        sys.exit(code or 130)
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or out_of_memory(exc)):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        print(f"error: out of memory ({detail}); {oom_hint}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
