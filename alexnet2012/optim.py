"""The paper's momentum SGD (P §5, PAPER_NOTES "Learning")."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from alexnet2012 import paper


class PaperSGD(torch.optim.Optimizer):
    """P §5's ``v <- momentum * v - weight_decay * lr * w - lr * g; w <- w + v``: after an lr drop
    ``v`` still decays the old rate's steps (``torch.optim.SGD`` rescales it). Biases (ndim <= 1)
    are not decayed, as in [C]. Float hyper-parameters: no device sync."""

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
        """Update every parameter that has a gradient; ``closure`` as in torch's optimizers."""
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
    torch._foreach_mul_(vs, momentum)
    if decay:
        torch._foreach_add_(vs, ws, alpha=-decay * lr)
    torch._foreach_add_(vs, gs, alpha=-lr)
    torch._foreach_add_(ws, vs)
