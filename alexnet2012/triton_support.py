"""What the Triton kernels (``fused_lrn``, ``fused_dropout``) share: where they can run, and
the store-side rounding helper both use."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

import torch


def interpret_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def triton_importable() -> bool:
    """Whether ``import triton`` would find a package (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def available(device: torch.device | str, interpreted: bool | None) -> bool:
    """Whether kernels built (``interpreted``: for the interpreter or not) or not yet built
    (None) can run on tensors on ``device``: ``meta`` always (the ops' fake implementations),
    ``cuda`` when Triton is importable, ``cpu`` when Triton is importable and its interpreter is
    on (``TRITON_INTERPRET=1`` before the kernels are built; once built, the mode they were
    built in decides)."""
    kind = torch.device(device).type
    if kind == "meta":
        return True
    if kind == "cuda":
        return interpreted is not None or triton_importable()
    if kind == "cpu":
        interpreting = interpret_requested() if interpreted is None else interpreted
        return interpreting and (interpreted is not None or triton_importable())
    return False


tl: Any = None
"""``triton.language``, bound by :func:`jit_rounded_for` (read by the helper when it is compiled
or interpreted, never at import)."""
_jitted: Callable | None = None
_lock = threading.Lock()


def _rounded_for(ptr, x):
    """float32 ``x`` rounded to nearest-even in ``ptr``'s element type. bfloat16 is rounded by
    hand, on the bits: Triton's interpreter truncates in its float32 -> bfloat16 cast where
    compiled code rounds, and this gives both the same bits."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        bits = tl.where(x == x, bits, 0x7FC0)  # NaN stays NaN
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(ptr.dtype.element_ty)


def jit_rounded_for() -> Callable:
    """:func:`_rounded_for` decorated with ``triton.jit`` (imports Triton), once: the kernels'
    modules call it while they load."""
    global tl, _jitted
    with _lock:
        if _jitted is None:
            import triton
            import triton.language

            tl = triton.language
            _jitted = triton.jit(_rounded_for)
    return _jitted
