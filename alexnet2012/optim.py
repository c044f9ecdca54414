"""The paper's momentum SGD (PAPER_NOTES "Learning", P §5)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from alexnet2012 import paper


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay exactly as written in P §5.

    For every parameter ``w`` with gradient ``g``::

        v <- momentum * v - weight_decay * lr * w - lr * g
        w <- w + v

    The velocity ``v`` (``state[p]["velocity"]``, zeros before the first step) holds steps
    already multiplied by the learning rate, so after an lr drop it still carries the old
    rate's steps and decays them by ``momentum`` per step. ``torch.optim.SGD`` instead stores
    ``momentum * buf + g`` and multiplies by the *current* lr when applying it, which rescales
    the whole accumulated velocity at once when lr changes (PAPER_NOTES "Learning"). Before
    any lr change the two give the same weights.

    Weight decay: the paper is silent on biases; the 2012 code [C] applies no decay to them
    (PAPER_NOTES "Learning"). Here a bias is any parameter with ``ndim <= 1``: such
    parameters are never decayed. In this model those are exactly the biases (there are no
    norm-layer affine parameters). Every parameter with ``ndim >= 2`` is decayed by its
    group's ``weight_decay``; param groups may set their own ``lr``, ``momentum`` and
    ``weight_decay`` (e.g. ``weight_decay=0`` to exempt a group entirely).

    The update runs as ``torch._foreach_*`` ops (as ``torch.optim`` does), one batch per
    (device, dtype, decayed) set of tensors, so parameters spread over several devices are fine;
    ``lr`` and the other hyper-parameters are Python floats, so a step never synchronises with
    the device. Parameters whose ``grad`` is ``None`` are skipped (their velocity is left
    unchanged).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = paper.LEARNING_RATE,
        momentum: float = paper.MOMENTUM,
        weight_decay: float = paper.WEIGHT_DECAY,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not value >= 0.0:
                raise ValueError(f"PaperSGD: {name} must be >= 0, got {value}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Apply one update to every parameter that has a gradient.

        ``closure``, if given, re-evaluates the model and returns the loss (run with
        gradients enabled, as in torch's optimizers); its result is returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            batches: dict[tuple, tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                decayed = p.ndim >= 2 and weight_decay != 0.0
                ws, gs, vs = batches.setdefault((p.device, p.dtype, decayed), ([], [], []))
                ws.append(p)
                gs.append(p.grad)
                vs.append(state["velocity"])
            for (_, _, decayed), tensors in batches.items():
                _update(*tensors, momentum, weight_decay if decayed else 0.0, lr)
        return loss


def _update(
    ws: list[Tensor], gs: list[Tensor], vs: list[Tensor], momentum: float, decay: float, lr: float
) -> None:
    """``v <- momentum * v - decay * lr * w - lr * g; w <- w + v`` on lists of tensors."""
    torch._foreach_mul_(vs, momentum)
    if decay:
        torch._foreach_add_(vs, ws, alpha=-decay * lr)
    torch._foreach_add_(vs, gs, alpha=-lr)
    torch._foreach_add_(ws, vs)
