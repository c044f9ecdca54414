"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UsageError(Exception):
    """A problem with the user's input (paths, options, files) rather than a bug.

    Command-line scripts print its message as one line and exit with status 2.
    """


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main``; turn a :class:`UsageError` into ``error: <message>`` and exit 2."""
    try:
        code = main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
