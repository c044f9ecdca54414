"""Files that are always whole: atomic writes that fail with one line, and their leftovers."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alexnet2012.errors import SaveError
from alexnet2012.units import size_text

PathLike = str | os.PathLike


def temporary_name(path: PathLike) -> str:
    """Where ``path`` is written before the rename: ``.<name>.<8 hex digits>.tmp`` beside it."""
    return os.path.join(
        os.path.dirname(os.path.abspath(path)),
        f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp",
    )


def is_temporary(name: str, of: tuple[str, ...]) -> bool:
    """Whether the file ``name`` is a killed write's temporary copy of one of the files ``of``."""
    return any(re.fullmatch(rf"\.{re.escape(own)}\.([0-9a-f]{{8}}\.)?tmp", name) for own in of)


def free_space(path: PathLike) -> int:
    """Bytes free to this user on the disk that holds ``path`` (or its nearest existing folder)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def _check_space(path: str, needed: int) -> None:
    """Fail before writing when the disk has less than ``needed`` bytes free."""
    try:
        free = free_space(path)
    except OSError:
        return
    if free < needed:
        raise SaveError(
            f"not enough space to write {path}: it needs {size_text(needed)}, "
            f"{size_text(free)} left on its disk",
            path,
            no_space=True,
        )


def _os_error(exc: BaseException) -> OSError | None:
    """The OS error behind ``exc`` (torch.save's zip writer turns one into a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_atomic(path: PathLike, needed: int, write: Callable[[Any], None], what: str) -> None:
    """Write ``path`` by ``write(file)`` to a temporary file, fsync, rename (else SaveError)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _check_space(path, needed)
    tmp = temporary_name(path)
    created = False
    try:
        with open(tmp, "xb") as f:
            created = True
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc.__context__, KeyboardInterrupt):  # torch.save's cleanup failed on
            raise KeyboardInterrupt from None  # the interrupted write: Ctrl-C it is
        error = None if isinstance(exc, KeyboardInterrupt) else _os_error(exc)
        if error is None:
            raise
        try:
            left = f", {size_text(free_space(path))} left on its disk"
        except OSError:
            left = ""
        no_space = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        raise SaveError(
            f"cannot write {what}{path} ({error.strerror or error}): it needs "
            f"{size_text(needed)}{left}",
            path,
            no_space=no_space,
        ) from None
    with contextlib.suppress(OSError):  # the rename made durable (Windows cannot open a folder)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file(path: PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` with :func:`write_atomic`."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    write_atomic(path, len(data), lambda f: f.write(data), "")
