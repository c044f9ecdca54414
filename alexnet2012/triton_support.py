"""What ``fused_lrn`` and ``fused_dropout`` share: where Triton runs, a store-side rounding."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

import torch


def interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def triton_importable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def available(device: torch.device | str, interpreted: bool | None) -> bool:
    """Whether kernels (``interpreted``: built for the interpreter, None: not built) run on
    ``device``: meta (fake impls), cuda with Triton, cpu under ``TRITON_INTERPRET=1``."""
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
_jitted: Callable | None = None
_lock = threading.Lock()


def _rounded_for(ptr, x):
    """``x`` rounded to nearest-even in ``ptr``'s type; bfloat16 by hand on the bits, since the
    interpreter's cast truncates where compiled code rounds."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        bits = tl.where(x == x, bits, 0x7FC0)  # NaN stays NaN
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(ptr.dtype.element_ty)


def jit_rounded_for() -> Callable:
    global tl, _jitted
    with _lock:
        if _jitted is None:
            import triton
            import triton.language

            tl = triton.language
            _jitted = triton.jit(_rounded_for)
    return _jitted
