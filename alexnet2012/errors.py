"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""
from __future__ import annotations

import signal
import sys
from typing import Callable, NoReturn

import torch


class UsageError(Exception):
    """A problem with the user's input (paths, options, files) rather than a bug.

    Command-line scripts print its message as one line and exit with status 2.
    """


def ignore_interrupt() -> None:
    """A worker pool's initializer: Ctrl-C is the parent process's to handle (it stops the pool),
    so that workers do not each print a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch failing to allocate memory (CUDA or CPU)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def run_cli(main: Callable[[], int | None], *,
            oom_hint: str = "use a smaller --batch-size") -> NoReturn:
    """Run a script's ``main``; turn a :class:`UsageError` into ``error: <message>`` (exit 2),
    running out of memory into ``error: out of memory ...; <oom_hint>`` (exit 2), and Ctrl-C
    into ``interrupted`` plus the interrupt's message, if any (e.g. how to resume; exit 130)."""
    try:
        code = main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        detail = str(exc).strip().splitlines()[0][:160]
        print(f"error: out of memory ({detail}); {oom_hint}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
