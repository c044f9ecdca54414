"""One SGD step (P §5), shared by the training run and the benchmark: forward, loss, backward,
update; optionally in bf16 autocast and ``torch.compile``d (fullgraph)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet2012 import layers


def autocast(device_types: Iterable[str], enabled: bool) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    if enabled:
        for kind in sorted(set(device_types)):
            stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16))
    return stack


class TrainStep:
    """``step(x, y)``: one batch's mean loss (not synchronised); ``accumulate``: chunks whose
    gradients add up to the batch's (less memory, the same update)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        accumulate: int = 1,
        bf16: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
    ):
        self.model, self.optimizer, self.accumulate, self.bf16 = model, optimizer, accumulate, bf16
        self.device_types = sorted({p.device.type for p in model.parameters()})
        self.forward_loss: Callable[[Tensor, Tensor], Tensor] = self._forward_loss
        self.update: Callable[[], object] = optimizer.step
        if compile:
            layers.load_fused({p.device for p in model.parameters()})  # one trace, not two
            self.forward_loss = torch.compile(
                self._forward_loss, fullgraph=True, backend=compile_backend
            )
            self.update = torch.compile(optimizer.step, fullgraph=True, backend=compile_backend)

    def _forward_loss(self, x: Tensor, y: Tensor) -> Tensor:
        # plain `with` blocks for the (at most two) device types: torch.compile traces them
        first, last = self.device_types[0], self.device_types[-1]
        with (
            torch.autocast(first, torch.bfloat16, enabled=self.bf16),
            torch.autocast(last, torch.bfloat16, enabled=self.bf16),
        ):
            logits = self.model(x)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # the loss in float32, as autocast does
        return F.cross_entropy(logits, y.to(logits.device, non_blocking=True))

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        total = None
        for xc, yc in zip(x.chunk(self.accumulate), y.chunk(self.accumulate)):
            loss = self.forward_loss(xc, yc)
            (loss / self.accumulate).backward()
            total = loss.detach() if total is None else total + loss.detach()
        self.update()
        return total / self.accumulate
