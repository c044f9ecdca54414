"""Watching the training loss for NaN or infinity without making each step wait for the
host."""

from __future__ import annotations

import torch

from alexnet2012.errors import UsageError


class Diverged(UsageError):
    """The training loss became NaN or infinite."""


class LossWatch:
    """Per-step losses kept on the device and checked for finiteness only now and then, so
    that no step waits for the host; :meth:`check` names the first bad step."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.total = 0.0
        self.steps = 0

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
            raise Diverged(
                f"the training loss became {values[~finite][0].item()} at epoch "
                f"{epoch}, batch {step + 1}; stopped without saving over the last "
                "checkpoint (it holds the weights before the failing steps, so a "
                "resume repeats them: start a new run with a lower --lr)"
            )
        self.pending = []
        self.total += values.sum().item()
        self.steps += len(values)
        return values.mean().item()
