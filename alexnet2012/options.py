"""The checks of command-line values, one function each: one message wherever a value is given."""

from __future__ import annotations

import re
from collections.abc import Sequence

from alexnet2012 import paper
from alexnet2012.errors import UsageError


def count(option: str, value: int, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number of something (images, batches, epochs, threads) within the bounds."""
    if value < minimum:
        raise UsageError(f"{option} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{option} must be at most {maximum}, got {value}")
    return value


def choice(option: str, value: object, allowed: Sequence, meaning: str = "") -> object:
    """One of ``allowed`` (``meaning``: what they are, for the message)."""
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed)
        raise UsageError(f"{option} must be one of {names}{meaning}, got {value}")
    return value


def columns(value: int, option: str = "--columns") -> int:
    return choice(option, value, (1, 2), " (P §3.2's one-column net, or the paper's two)")


def remove_conv(value: str | None, option: str = "--remove-conv") -> str | None:
    """P §7's ablation: None, or a middle conv layer removed."""
    if value is None:
        return None
    return choice(option, value, paper.MIDDLE_CONVS, " (the middle layers, P §7)")


def recipe(value: str, option: str = "--recipe") -> str:
    return choice(option, value, tuple(paper.RECIPES))


def workers(value: int | None, option: str = "--workers") -> int | None:
    """Loader or decoder processes: 0 (work in this process) or more; None: the default."""
    if value is not None and value < 0:
        raise UsageError(f"{option} must be 0 (work in this process) or more, got {value}")
    return value


def input_size(value: int, option: str = "--input-size") -> int:
    """The crop the network takes: 224 (the paper) or 227 (the geometry Caffe made common)."""
    if value not in paper.INPUT_SIZES:
        raise UsageError(f"{option} must be 224 (the paper) or 227 (Caffe's geometry), got {value}")
    return value


def seed(value: int, option: str = "--seed") -> int:
    """A seed torch and numpy both accept."""
    if not 0 <= value < 2**63:
        raise UsageError(f"{option} must be from 0 to 2**63-1, got {value}")
    return value


def positive(option: str, value: float) -> float:
    """A rate or scale above 0 (NaN refused)."""
    if not value > 0:
        raise UsageError(f"{option} must be positive, got {value}")
    return value


def at_least_zero(option: str, value: float, meaning: str = "") -> float:
    """A threshold or interval of 0 or more (NaN refused); ``meaning`` says what 0 does."""
    if not value >= 0:
        zero = f"0 ({meaning})" if meaning else "0"
        raise UsageError(f"{option} must be {zero} or more, got {value}")
    return value


def int_list(option: str, text: str) -> tuple[int, ...]:
    """``"25,51,79"`` -> ``(25, 51, 79)``."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(
            f"{option} takes whole numbers separated by commas, got {text!r}"
        ) from None


def subset(text: str | None, option: str = "--subset") -> tuple[int, int | None] | None:
    """``"100"`` -> ``(100, None)``, ``"100:260"`` -> ``(100, 260)`` (a ``Subset``); None: all."""
    if text is None:
        return None
    match = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", text)
    if not match or int(match[1]) < 1 or (match[2] is not None and int(match[2]) < 1):
        raise UsageError(
            f"{option} takes CLASSES or CLASSES:TRAIN_PER_CLASS, whole numbers from 1 "
            f"(e.g. 100 or 100:260), got {text!r}"
        )
    return int(match[1]), None if match[2] is None else int(match[2])


def lr_drops(drops: Sequence[int] | None, epochs: int) -> tuple[int, ...] | None:
    """Fixed drop epochs: increasing, each from 2 to ``epochs``."""
    if drops is None:
        return None
    drops = tuple(drops)
    if any(b <= a for a, b in zip(drops, drops[1:])) or any(not 2 <= e <= epochs for e in drops):
        raise UsageError(
            f"--lr-drops must be increasing epochs from 2 to --epochs ({epochs}), "
            f"got {','.join(map(str, drops))}"
        )
    return drops
