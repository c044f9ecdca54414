"""The paper's momentum SGD (P §5) and a recipe's param groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from alexnet2012 import paper


class PaperSGD(torch.optim.Optimizer):
    """P §5's ``v <- momentum * v - weight_decay * lr * w - lr * g; w <- w + v`` (after an lr drop
    ``v`` keeps the old rate's steps, unlike ``torch.optim.SGD``). Biases (ndim <= 1) are not
    decayed, and a group at lr 0 is frozen, as in [C]."""

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

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Velocities start at zero here: a compiled step then sees the same state every call."""
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            self.state[p]["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient; ``closure`` as in torch's optimizers."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches: dict[tuple, tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            if lr == 0.0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                decay = weight_decay if p.ndim >= 2 else 0.0
                key = (p.device, p.dtype, momentum, decay, lr)
                ws, gs, vs = batches.setdefault(key, ([], [], []))
                ws.append(p)
                gs.append(p.grad)
                vs.append(state["velocity"])
        for (_, _, momentum, decay, lr), tensors in batches.items():
            _update(*tensors, momentum, decay, lr)
        return loss


def _update(
    ws: list[Tensor], gs: list[Tensor], vs: list[Tensor], momentum: float, decay: float, lr: float
) -> None:
    torch._foreach_mul_(vs, momentum)
    if decay:
        torch._foreach_add_(vs, ws, alpha=-decay * lr)
    torch._foreach_add_(vs, gs, alpha=-lr)
    torch._foreach_add_(ws, vs)


def layer_groups(model: torch.nn.Module, lr: float = paper.LEARNING_RATE) -> list[dict[str, Any]]:
    """An ``AlexNet``'s groups "conv1.weight", "conv1.bias", ... with ``layer``, ``lr_scale``."""
    groups = []
    for layer in model.layers:
        for kind, scale in (("weight", 1.0), ("bias", model.recipe.bias_lr_scale)):
            params = [getattr(m, kind) for m in model._modules_of(layer)]
            groups.append(
                {"params": params, "name": f"{layer.name}.{kind}", "layer": layer.name,
                 "lr_scale": scale, "lr": lr * scale}
            )  # fmt: skip
    return groups
