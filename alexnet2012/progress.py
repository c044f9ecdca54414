"""Progress of anything long: a tqdm bar on a terminal, plain lines in a log (nohup, Slurm)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from time import monotonic
from typing import TypeVar

from tqdm import tqdm

from alexnet2012.units import duration_text

LINE_SECONDS = 30.0  # plain lines: none closer together than this,
LINE_FRACTION = 0.1  # one for every tenth of the work,
QUIET_SECONDS = 300.0  # and one at least this often

T = TypeVar("T")


class Progress(AbstractContextManager):
    """``total`` items, ``initial`` done before. In a log: ``<desc>: <start>``, a line every tenth
    or 5 minutes (none within 30 s) and ``<desc>: done, ...`` at a clean exit."""

    def __init__(
        self,
        desc: str,
        total: int,
        start: str = "",
        *,
        initial: int = 0,
        enabled: bool = True,
        unit: str = "images",
        leave: bool = True,
    ) -> None:
        terminal = sys.stderr.isatty()
        self.desc, self.total, self.initial, self.count = desc, total, initial, initial
        self.unit, self.lines = unit, enabled and not terminal
        short = {"images": "img", "batches": "batch"}.get(unit, unit)
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=short,
            disable=not (enabled and terminal),
            dynamic_ncols=True,
            leave=leave,
        )
        self.begun = self.last_time = monotonic()
        self.last_count = initial
        self._say(start)

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.count += n
        now = monotonic()
        gap = now - self.last_time
        if (
            self.initial < self.count < self.total
            and gap >= LINE_SECONDS
            and (self.count - self.last_count >= LINE_FRACTION * self.total or gap >= QUIET_SECONDS)
        ):
            elapsed = now - self.begun
            left = (self.total - self.count) * elapsed / (self.count - self.initial)
            self._say(
                f"{self.count} of {self.total} {self.unit} ({100 * self.count / self.total:.0f}%), "
                f"{duration_text(elapsed)} so far, about {duration_text(left)} left"
            )
            self.last_count, self.last_time = self.count, now

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        self.bar.close()
        if error is None:
            elapsed = duration_text(monotonic() - self.begun)
            self._say(f"done, {self.count - self.initial} {self.unit} in {elapsed}")

    def postfix(self, text: str) -> None:
        """A note beside the bar (a terminal's only: lines stay plain)."""
        self.bar.set_postfix_str(text, refresh=False)

    def _say(self, text: str) -> None:
        if self.lines and text:
            print(f"{self.desc}: {text}", file=sys.stderr, flush=True)


def track(
    items: Iterable[T], desc: str, *, enabled: bool = True, unit: str = "batches"
) -> Iterator[T]:
    """``items`` with :class:`Progress` over them; the bar goes when they are done."""
    total = len(items) if hasattr(items, "__len__") else 0
    with Progress(desc, total, enabled=enabled, unit=unit, leave=False) as bar:
        for item in items:
            yield item
            bar.update(1)


def processes(workers: int) -> str:
    """``in this process`` or ``in N worker processes``, for a start line."""
    return "in this process" if workers <= 1 else f"in {workers} worker processes"
