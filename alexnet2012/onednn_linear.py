"""``nn.Linear`` whose CPU matrix products run in oneDNN, the library behind PyTorch's CPU
convolutions, instead of the BLAS (MKL) behind ``F.linear``.

Same function, another GEMM: the result differs from ``F.linear`` by float rounding only. On the
2-core AMD test machine, at batch 32, oneDNN computes the fc layers' products (forward, input
and weight gradients) faster than MKL, and the net trained 6% and 10% faster in two runs
(``experiments/benchmarks/cpu_b32_swapfc_9ead365.json``, ``cpu_b32_c255392.json``);
``scripts/benchmark.py --swap-fc`` times both networks both ways side by side (README, Speed).
Everywhere else (CUDA, float64, bf16 autocast, ``torch.compile`` tracing, a PyTorch built
without oneDNN or with ``torch.backends.mkldnn`` disabled) the layer is plain ``F.linear``.
Unlike ``F.linear``, the oneDNN path has no second derivative (``torch.autograd.grad`` with
``create_graph=True`` through it raises), which training never needs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# a @ b.T (+ bias) in oneDNN: the private op that PyTorch's own compiler emits for CPU linear
# layers; None where this build of PyTorch does not have it
_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def _a_bt(a: Tensor, b: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``a @ b.T + bias`` in oneDNN (``a`` and ``b`` may be transposed views)."""
    return _ONEDNN_LINEAR(a, b, bias, "none", [], "")


def uses_onednn(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> bool:
    """Whether :func:`linear` computes in oneDNN: float32 batches ``(N, features)`` on the CPU,
    oneDNN built in and enabled, no autocast, not being traced by ``torch.compile``."""
    return (_ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and x.device.type == "cpu" and x.dim() == 2
            and x.shape[0] > 0 and x.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` with the three products (forward, input and weight gradients)
    in oneDNN."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        # the op reads the bias as a dense vector whatever its strides
        return _a_bt(x, weight, None if bias is None else bias.contiguous())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _a_bt(grad, weight.t()) if need_x else None  # grad @ weight
        grad_weight = _a_bt(grad.t(), x.t()) if need_weight else None  # grad.T @ x
        grad_bias = grad.sum(0) if need_bias else None
        return grad_x, grad_weight, grad_bias


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``, in oneDNN where :func:`uses_onednn` says so."""
    if uses_onednn(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) computed by :func:`linear`, or by
    ``F.linear`` when its ``onednn`` is False (see :func:`set_onednn`)."""

    onednn: bool = True

    def forward(self, x: Tensor) -> Tensor:
        return (linear if self.onednn else F.linear)(x, self.weight, self.bias)


def set_onednn(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every :class:`Linear` in ``model`` to oneDNN (the default) or to plain ``F.linear``
    (the reference path, e.g. for ``benchmark.py --swap-fc``); returns ``model``."""
    for module in model.modules():
        if isinstance(module, Linear):
            module.onednn = enabled
    return model


def with_onednn_fc(model: nn.Module) -> nn.Module:
    """``model`` with every plain ``nn.Linear`` among its submodules replaced by a
    :class:`Linear` holding the same parameter tensors (e.g. torchvision's AlexNet, for
    ``benchmark.py --swap-fc``); returns ``model``. Hooks on the replaced modules are not
    carried over."""
    for name, child in model.named_children():
        if type(child) is nn.Linear:
            fc = Linear(child.in_features, child.out_features, bias=child.bias is not None,
                        device="meta")
            fc.weight, fc.bias = child.weight, child.bias
            setattr(model, name, fc)
        else:
            with_onednn_fc(child)
    return model
