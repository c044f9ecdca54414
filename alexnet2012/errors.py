"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch


class UsageError(ValueError):
    """A problem with the user's input, not a bug: scripts print it as one line, exit status 2."""


class SaveError(UsageError):
    """A file could not be written (``no_space``: for lack of space); its old version is intact."""

    def __init__(self, message: str, path: str, no_space: bool = False):
        super().__init__(message)
        self.path, self.no_space = path, no_space


def check_writable(path: Path, option: str = "--json") -> None:
    """Refuse, before anything is measured, an output file that could not be written."""
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
    """The first names in ``folder`` other than ``own`` (``hidden``: dot-files too), or ""."""
    if not folder.is_dir():
        return ""
    names = sorted(
        p.name for p in folder.iterdir() if p.name not in own and (hidden or p.name[:1] != ".")
    )
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def ignore_interrupt() -> None:
    """A worker pool's initializer: Ctrl-C is the parent's to handle, not each worker's; SIGTERM
    ends a worker, as ``Pool.terminate`` expects, whatever handler the parent had."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_cli(
    main: Callable[[], int | None], *, oom_hint: str = "use a smaller --batch-size"
) -> NoReturn:
    """Run a script's ``main``: a :class:`UsageError` becomes ``error: <message>`` (exit 2), out of
    memory ``error: out of memory ...; <oom_hint>`` (exit 2), Ctrl-C ``interrupted`` and its
    message (exit 130); a run stopped by a signal exits with the signal's status."""
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
        oom = (MemoryError, torch.cuda.OutOfMemoryError)
        if not (isinstance(exc, oom) or "can't allocate memory" in str(exc)):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        print(f"error: out of memory ({detail}); {oom_hint}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
