"""Watching the training loss for NaN or infinity without making each step wait for the
host."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from alexnet2012.errors import UsageError

KEEP = "stopped without saving over the last checkpoint"


class Diverged(UsageError):
    """The training loss became NaN or infinite."""


class LossWatch:
    """Per-step losses kept on the device and checked for finiteness only now and then, so
    that no step waits for the host; :meth:`check` names the first bad step. ``replay(b)``
    gives the batches from batch ``b`` again (the loader is deterministic): on the rare path
    of a bad loss, the inputs of the bad step are looked at, so the step itself checks nothing.
    ``total`` and ``steps``: the sum and number of the losses checked before (a resumed epoch's)."""

    def __init__(
        self, replay: Callable[[int], Iterable] | None = None, total: float = 0.0, steps: int = 0
    ) -> None:
        self.replay = replay
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.total, self.steps = total, steps

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss.detach()))

    def check(self, epoch: int) -> float | None:
        """Fold pending losses into the total; raise :class:`Diverged` on a non-finite one.
        Returns the mean of the pending losses (None if there were none)."""
        if not self.pending:
            return None
        values = torch.stack([l.float() for _, l in self.pending]).cpu()
        finite = torch.isfinite(values)
        if not finite.all():
            step = self.pending[int((~finite).nonzero()[0])][0]
            loss = values[~finite][0].item()
            if not self.inputs_finite(step):
                raise Diverged(
                    f"the inputs of epoch {epoch}, batch {step + 1} are not finite after "
                    f"augmentation (the training loss became {loss} there); {KEEP}. Not the "
                    "learning rate: the likely cause is the data's statistics (the cache's "
                    "stats.json, mean image) or a corrupt cache: prepare the cache again"
                )
            raise Diverged(
                f"the training loss became {loss} at epoch {epoch}, batch {step + 1}; {KEEP} "
                "(it holds the weights before the failing steps, so a resume repeats them: "
                "start a new run with a lower --lr)"
            )
        self.pending = []
        self.total += values.sum().item()
        self.steps += len(values)
        return values.mean().item()

    def inputs_finite(self, step: int) -> bool:
        """Whether the inputs of batch ``step`` (replayed) are finite; True without ``replay``."""
        if self.replay is None:
            return True
        x, _ = next(iter(self.replay(step)))
        return bool(torch.isfinite(x).all())
