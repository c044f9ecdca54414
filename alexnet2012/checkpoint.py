"""Training checkpoints and the run folder's other files: atomic writes that fail with one line
(the file, the space it needed and the space left), safe loads, and the RNG state needed to
resume exactly."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import pickle
import random
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from alexnet2012.errors import SaveError, UsageError

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "alexnet2012.checkpoint"
VERSION = 1
MARGIN = 1 << 20  # bytes beyond the tensors' storages: the pickled plain values, the zip records
TEST_PAUSE = "ALEXNET2012_TEST_PAUSE"  # test hook, "<point>:<marker file>": see pause_for_test
_saves = 0  # checkpoints this process has started to write, for the test hook's save<N> points


def temporary_name(path: PathLike) -> str:
    """Where :func:`save_checkpoint` and :func:`write_file` write ``path`` before the rename: a
    hidden ``.<name>.<8 hex digits>.tmp`` beside it (see :func:`is_temporary`)."""
    return os.path.join(
        os.path.dirname(os.path.abspath(path)),
        f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp",
    )


def is_temporary(name: str, of: tuple[str, ...]) -> bool:
    """Whether the file ``name`` is a temporary copy of one of the files ``of``, left by a write
    that was killed (``.<name>.tmp`` too, as older versions wrote JSON files)."""
    for own in of:
        prefix = f".{own}."
        rest = name[len(prefix) :] if name.startswith(prefix) else None
        if rest == "tmp" or (
            rest is not None
            and len(rest) == 12
            and rest.endswith(".tmp")
            and all(c in "0123456789abcdef" for c in rest[:8])
        ):
            return True
    return False


def free_space(path: PathLike) -> int:
    """Bytes free to this user on the disk that holds ``path`` (or its nearest existing folder)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def storage_bytes(obj: Any) -> int:
    """The bytes of the distinct tensor storages in ``obj`` (nested dicts, lists, tuples): what
    ``torch.save`` writes for its tensors."""
    seen: dict[tuple[str, int, int], int] = {}

    def visit(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            storage = o.untyped_storage()
            seen[(str(storage.device), storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    visit(obj)
    return sum(seen.values())


def size_text(n: float) -> str:
    """Bytes for a message, in decimal units: ``455.1 MB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _check_space(path: str, needed: int) -> None:
    """Fail early, before writing, when the disk of ``path`` has less than ``needed`` bytes free
    (skipped where the free space cannot be read)."""
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
    """The OS error behind ``exc``: itself, or what torch's zip writer was handling when it
    failed in turn (a full disk reaches ``torch.save``'s caller as a RuntimeError, ``unexpected
    pos``, raised while the writer closed the file after the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_atomic(path: PathLike, needed: int, write: Callable[[Any], None], what: str) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, flush and fsync it,
    then rename it over ``path``, so that ``path`` is always the old or the new file whole. A
    failure removes the temporary file. An OS error (a full disk, no permission, a missing
    folder) raises :class:`SaveError`: the file, the OS's words, the ``needed`` bytes and the
    space left."""
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
    _fsync_directory(directory)


def write_file(path: PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, as :func:`save_checkpoint` does;
    an OS error raises :class:`SaveError` with the file, the bytes needed and the space left."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    _write_atomic(path, len(data), lambda f: f.write(data), "")


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that ``path`` always holds a complete checkpoint.

    The file is written to a temporary file in the same directory (:func:`temporary_name`),
    flushed and fsynced, then renamed over ``path`` (``os.replace`` is atomic), and the
    directory is fsynced where the OS allows it. A crash or an error while saving leaves the
    previous file untouched, and the temporary file is removed on error. ``state`` must hold
    only tensors and plain Python values (dict, list, tuple, str, int, float, bool, None, ...),
    so that :func:`load_checkpoint` can read it with ``weights_only=True``; anything else raises
    ``TypeError`` before the file is touched.
    The file needs the tensors' storages plus ``MARGIN`` bytes; with less free space the save
    fails before writing. It and any OS error while writing (a full disk, no permission, a
    missing directory) raise :class:`SaveError`, one line: the file, the space needed and left.
    """
    global _saves
    path = os.fspath(path)
    _check_plain(state, "state")
    payload = {"format": FORMAT, "version": VERSION, "state": state}
    needed = storage_bytes(state) + MARGIN
    _saves += 1
    point = f"save{_saves}"
    pause_for_test(f"{point}.before")

    def write(f: Any) -> None:
        if os.environ.get(TEST_PAUSE, "").startswith(f"{point}.half:"):
            f = _PauseHalfway(f, needed // 2, f"{point}.half")
        torch.save(payload, f)

    _write_atomic(path, needed, write, "checkpoint ")
    pause_for_test(f"{point}.after")


class _PauseHalfway:
    """A file for ``torch.save`` that calls the test hook once ``after`` bytes are written."""

    def __init__(self, f: Any, after: int, point: str):
        self.f, self.after, self.point, self.written = f, after, point, 0

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        head = self.after - self.written
        if 0 < head <= len(data):  # the write that reaches the halfway mark: split at it
            self.f.write(data[:head])
            self.f.flush()  # the half-written temporary file is on disk, as a kill leaves it
            pause_for_test(self.point)
            data = data[head:]
        else:
            head = 0
        n = head + self.f.write(data)
        self.written += n
        return n

    def flush(self) -> None:
        self.f.flush()


def pause_for_test(point: str) -> None:
    """Test hook for killing a run at a known point: where the environment variable
    ``ALEXNET2012_TEST_PAUSE`` is ``<point>:<marker file>``, create the marker and wait to be
    killed (or for the marker to be removed; at most 10 minutes). Points: ``save<N>.before``,
    ``save<N>.half``, ``save<N>.after`` (this process's N-th checkpoint write: before its
    temporary file, halfway through it, after the rename) and ``ten-view`` (the final test,
    before its ten-view pass)."""
    want, _, marker = os.environ.get(TEST_PAUSE, "").partition(":")
    if want != point or not marker:
        return
    Path(marker).write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 600
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


_LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)
_CONTAINERS = (dict, collections.OrderedDict, list, tuple, set, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse, before writing, what ``weights_only=True`` could not load back at resume time.

    Types are matched exactly: a numpy scalar (``np.float64`` subclasses ``float``) would be
    saved fine and then make the whole checkpoint unloadable.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _LEAVES:
        return
    if type(obj) not in _CONTAINERS:
        raise TypeError(
            f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__qualname__}:"
            " store tensors and plain Python values only"
        )
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        _check_plain(key, f"{where} key {key!r}")
        _check_plain(value, f"{where}[{key!r}]")


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; some systems (Windows) cannot open a directory, so skip there."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(
    path: PathLike, map_location: Any = "cpu", remedy: str = "use another checkpoint"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and return its ``state``.

    Uses ``torch.load(weights_only=True)``, so a file can never run code. A missing,
    unreadable, truncated, corrupt or foreign file raises ``UsageError`` with one line naming
    the file and, for a damaged or foreign one, ``remedy``.
    """
    path = os.fspath(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise UsageError(f"checkpoint {path} does not exist: check the path") from exc
    except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    except Exception as exc:  # damaged or foreign files raise many types, OSError included
        raise UsageError(
            f"checkpoint {path} is corrupt or not an alexnet2012 checkpoint "
            f"({_reason(exc)}): {remedy}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path} is not an alexnet2012 checkpoint (no format marker): {remedy}")
    if payload.get("version") != VERSION:
        raise UsageError(
            f"checkpoint {path} has format version {payload.get('version')!r}, "
            f"this alexnet2012 reads version {VERSION}: {remedy}, or use the "
            "alexnet2012 version that wrote it"
        )
    return payload["state"]


def _reason(exc: Exception) -> str:
    """A short, one-line account of why torch could not read a file."""
    if isinstance(exc, EOFError):
        return "the file is empty or ends early"
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain Python values"
    message = str(exc).strip().split("\n")[0].split(". ")[0][:120]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def rng_state() -> dict[str, Any]:
    """The state of every random generator training uses, as tensors and plain values.

    Covers torch's CPU generator, each CUDA device's generator (only if CUDA is initialised:
    a process that never used CUDA has no CUDA randomness to restore), Python's ``random``
    and numpy's global ``np.random`` (MT19937 key stored as an int64 tensor).
    """
    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached_gaussian],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`rng_state`.

    CUDA states are restored for the devices that exist here (the first ``device_count()``);
    on a machine without CUDA they are ignored, as no CUDA randomness will be drawn.
    """
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, key, pos, has_gauss, cached_gaussian = state["numpy"]
    key = key.cpu().numpy().astype(np.uint32)
    np.random.set_state((kind, key, pos, has_gauss, cached_gaussian))
