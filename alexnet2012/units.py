"""Sizes and durations in one format each, wherever the package prints them."""

from __future__ import annotations


def size_text(n: float | None) -> str:
    """Bytes in decimal units, one decimal: ``455.1 MB``, ``2.4 GB``; ``n/a`` when unknown."""
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def duration_text(seconds: float) -> str:
    """``h:mm:ss`` under a day (``3:07:00``), else ``Nd Mh`` rounded to the hour (``13d 8h``)."""
    s = round(seconds)
    if s < 86_400:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    days, hours = divmod(round(s / 3600), 24)
    return f"{days}d {hours}h"
