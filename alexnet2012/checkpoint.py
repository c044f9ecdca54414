"""Training checkpoints: atomic saves, safe loads, and the RNG state that resuming exactly
needs."""

from __future__ import annotations

import collections
import os
import pickle
import random
from typing import Any

import numpy as np
import torch

from alexnet2012.errors import UsageError
from alexnet2012.files import (  # noqa: F401  (re-exported: the run's other files use them too)
    free_space,
    is_temporary,
    temporary_name,
    write_atomic,
    write_file,
)

PathLike = str | os.PathLike

FORMAT = "alexnet2012.checkpoint"
VERSION = 1
MARGIN = 1 << 20  # bytes beyond the tensors' storages: the pickled plain values, the zip records


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


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values only, so that it loads with
    ``weights_only=True``) atomically to ``path`` (:func:`files.write_atomic`): a crash leaves
    the previous checkpoint whole, a full disk is a one-line :class:`SaveError`."""
    path = os.fspath(path)
    _check_plain(state, "state")
    payload = {"format": FORMAT, "version": VERSION, "state": state}
    needed = storage_bytes(state) + MARGIN
    write_atomic(path, needed, lambda f: torch.save(payload, f), "checkpoint ")


_LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)
_CONTAINERS = (dict, collections.OrderedDict, list, tuple, set, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse, before writing, what ``weights_only=True`` could not load back. Types match
    exactly: a numpy scalar subclassing ``float`` would make the checkpoint unloadable."""
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


def load_checkpoint(
    path: PathLike, map_location: Any = "cpu", remedy: str = "use another checkpoint"
) -> dict[str, Any]:
    """The ``state`` of a checkpoint, loaded with ``weights_only=True`` (a file never runs
    code); a missing, damaged or foreign file is one line, with ``remedy`` for the latter."""
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
    """Every random generator training uses (torch CPU, CUDA where initialised, Python,
    numpy), as tensors and plain values."""
    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached_gaussian],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators; CUDA states only for devices that exist here."""
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, key, pos, has_gauss, cached_gaussian = state["numpy"]
    key = key.cpu().numpy().astype(np.uint32)
    np.random.set_state((kind, key, pos, has_gauss, cached_gaussian))
