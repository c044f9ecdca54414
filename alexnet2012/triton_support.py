"""What the Triton kernels (``fused_lrn``, ``fused_dropout``) share: where they can run."""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

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


def available(device: torch.device | str, interpreted: Optional[bool]) -> bool:
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
