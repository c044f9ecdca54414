"""The kernels a GPU would launch for one training step, their bytes and FLOPs, counted on the
``meta`` device (no GPU needed). On ``meta`` the model takes its non-CPU branches; :func:`cuda_path`
covers where PyTorch itself differs by device: ``F.dropout`` (CUDA's fused ``native_dropout``) and
a convolution's output layout (cuDNN's channels-last). Per aten op dispatched below autograd
(backward ops count, composite ops as what they decompose into):

- compute-bound: convolutions and matrix products (:data:`COMPUTE_OPS`), one op each.
- not counted (no kernel): views, in-place view ops, ops that return and mutate no tensor, and
  allocations (:data:`NO_KERNEL_OPS`).
- memory-bound: every other op, one each (a ``_foreach_*`` or custom op too).
- bytes: the stored sizes of tensor inputs, read, and outputs, written; a mutated tensor is read
  and written, an ``out=`` tensor only written. No caches modelled.
- FLOPs: ``FlopCounterMode``'s total read around each op.

Limits: an op launching several kernels counts once; two GPUs' device-to-device copies are not
seen. ``TorchDispatchMode`` is private (``TorchFunctionMode`` sees no backward or decomposed ops).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from alexnet2012 import paper
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD

COMPUTE, MEMORY, NO_KERNEL = "compute", "memory", "none"

COMPUTE_OPS = frozenset(
    "convolution _convolution convolution_backward conv2d conv1d conv3d cudnn_convolution "
    "cudnn_convolution_transpose convolution_overrideable convolution_backward_overrideable "
    "mm addmm bmm baddbmm addbmm matmul linear mv addmv dot vdot _scaled_mm".split()
)
# Allocations and metadata ops whose schema does not say they alias.
NO_KERNEL_OPS = frozenset(
    "empty empty_like new_empty new_empty_strided empty_strided empty_permuted resize_ "
    "resize_as_ _unsafe_view _reshape_alias lift_fresh set_".split()
)


@dataclass(frozen=True)
class Op:
    """One counted op; ``dtype`` is its first floating-point tensor's (a product's peak)."""

    name: str
    kind: str
    phase: str
    flops: int
    bytes_read: int
    bytes_written: int
    dtype: torch.dtype | None = None

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def tensor_bytes(t: Tensor) -> int:
    """Bytes ``t`` stores: a dimension of stride 0 (from ``expand``) counted once."""
    elements = math.prod(size for size, stride in zip(t.shape, t.stride()) if stride != 0)
    return (elements if t.numel() else 0) * t.element_size()


def _bound_arguments(func, args: tuple, kwargs: dict) -> list[tuple[Any, Any]]:
    pairs = []
    for i, argument in enumerate(func._schema.arguments):
        if i < len(args) and not argument.kwarg_only:
            pairs.append((argument, args[i]))
        elif argument.name in kwargs:
            pairs.append((argument, kwargs[argument.name]))
    return pairs


def op_kind(func, args: tuple, kwargs: dict) -> str:
    """:data:`COMPUTE`, :data:`MEMORY` or :data:`NO_KERNEL`, by the rules above."""
    schema = func._schema
    name = func.overloadpacket.__name__
    if func.namespace == "aten" and name in COMPUTE_OPS:
        return COMPUTE
    if func.namespace == "aten" and name in NO_KERNEL_OPS:
        return NO_KERNEL
    if torch.Tag.inplace_view in func.tags:
        return NO_KERNEL
    returns = schema.returns
    if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
        return NO_KERNEL  # a view
    mutates = any(
        a.alias_info is not None and a.alias_info.is_write and _tensors(v)
        for a, v in _bound_arguments(func, args, kwargs)
    )
    makes = any("Tensor" in str(r.type) for r in returns)
    return MEMORY if (mutates or makes) else NO_KERNEL


def op_bytes(func, args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    """``(bytes read, bytes written)`` of one op, by the rules above."""
    read = written = 0
    for argument, value in _bound_arguments(func, args, kwargs):
        size = sum(tensor_bytes(t) for t in _tensors(value))
        mutated = argument.alias_info is not None and argument.alias_info.is_write
        if not argument.is_out:
            read += size
        if mutated:
            written += size
    returns = func._schema.returns
    outs = [out] if len(returns) == 1 else list(out) if isinstance(out, (tuple, list)) else []
    for ret, value in zip(returns, outs):
        if ret.alias_info is None:  # a new tensor (an alias of a mutated input is counted above)
            written += sum(tensor_bytes(t) for t in _tensors(value))
    return read, written


def _dtype(args: tuple, kwargs: dict) -> torch.dtype | None:
    tensors = _tensors(list(args) + list(kwargs.values()))
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


class OpCounter(TorchDispatchMode):
    """Records each op as an :class:`Op` in ``ops``, those without a kernel in ``skipped``."""

    def __init__(self, flops: FlopCounterMode):
        super().__init__()
        self.flops = flops
        self.phase = "step"
        self.ops: list[Op] = []
        self.skipped: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = self.flops.get_total_flops()
        out = func(*args, **kwargs)
        if not hasattr(func, "overloadpacket"):  # not an ATen or custom op overload
            return out
        name = f"{func.namespace}.{func.overloadpacket.__name__}"
        kind = op_kind(func, args, kwargs)
        if kind == NO_KERNEL:
            self.skipped[name] += 1
            return out
        flops = self.flops.get_total_flops() - before
        read, written = op_bytes(func, args, kwargs, out)
        self.ops.append(Op(name, kind, self.phase, flops, read, written, _dtype(args, kwargs)))
        return out


_DROPOUTS = {  # their positional arguments
    F.dropout: ("input", "p", "training", "inplace"),
    torch.dropout: ("input", "p", "train"),
}


class _CudaOps(TorchFunctionMode):
    """On ``meta``, ``F.dropout`` (training, 0 < p < 1) runs as CUDA's fused ``native_dropout``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DROPOUTS and args and isinstance(args[0], Tensor) and args[0].is_meta:
            given = {**dict(zip(_DROPOUTS[func], args)), **kwargs}
            p, x = given.get("p", 0.5), given["input"]
            training = given.get("training", given.get("train", True))
            if training and 0 < p < 1 and not given.get("inplace", False) and x.numel():
                return torch.native_dropout(x, p, True)[0]
        return func(*args, **kwargs)


def _channels_last(t: Tensor) -> bool:
    """ATen's ``suggest_memory_format`` for 4-d tensors: laid out channels-last, not contiguous."""
    return (
        t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    )


class _CudaLayouts(TorchDispatchMode):
    """On ``meta``, a convolution of a channels-last input or weight is channels-last (cuDNN)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.name() == "aten::convolution" and out.is_meta and out.dim() == 4:
            if args[1].dim() == 4 and (_channels_last(args[0]) or _channels_last(args[1])):
                out = torch.empty_like(out, memory_format=torch.channels_last)
        return out


@contextlib.contextmanager
def cuda_path() -> Iterator[None]:
    with _CudaOps(), _CudaLayouts():
        yield


TOTALS = ("memory_ops", "memory_bytes", "compute_ops", "compute_bytes", "flops")


def _totals(ops: Iterable[Op]) -> dict[str, int]:
    row = dict.fromkeys(TOTALS, 0)
    for op in ops:
        row[f"{op.kind}_ops"] += 1
        row[f"{op.kind}_bytes"] += op.bytes
        row["flops"] += op.flops
    return row


@dataclass
class StepCost:
    """The ops of one step; ``flops`` is ``FlopCounterMode``'s total."""

    ops: list[Op]
    skipped: dict[str, int] = field(default_factory=dict)
    flops: int = 0

    def summary(self) -> dict[str, int]:
        return {**_totals(self.ops), "flops": self.flops}

    memory_ops = property(lambda self: self.summary()["memory_ops"])
    memory_bytes = property(lambda self: self.summary()["memory_bytes"])
    compute_ops = property(lambda self: self.summary()["compute_ops"])
    compute_bytes = property(lambda self: self.summary()["compute_bytes"])

    def by_op(self) -> dict[str, dict[str, Any]]:
        """Op name -> kind, count, bytes, FLOPs; most bytes first."""
        table: dict[str, dict[str, Any]] = {}
        for op in self.ops:
            row = table.setdefault(op.name, {"kind": op.kind, "count": 0, "bytes": 0, "flops": 0})
            row["count"] += 1
            row["bytes"] += op.bytes
            row["flops"] += op.flops
        return dict(sorted(table.items(), key=lambda kv: -kv[1]["bytes"]))

    def by_phase(self) -> dict[str, dict[str, int]]:
        phases = dict.fromkeys(op.phase for op in self.ops)
        return {phase: _totals(op for op in self.ops if op.phase == phase) for phase in phases}


def count(step: Callable[[OpCounter], Any]) -> StepCost:
    """What ``step(counter)`` runs on the CUDA path; ``step`` may set ``counter.phase``."""
    with cuda_path(), FlopCounterMode(display=False) as flop_counter:
        counter = OpCounter(flop_counter)
        with counter:
            step(counter)
    return StepCost(counter.ops, dict(counter.skipped), flop_counter.get_total_flops())


def _training_step(model: nn.Module, optimizer, x: Tensor, y: Tensor, counter: OpCounter) -> None:
    optimizer.zero_grad(set_to_none=True)
    counter.phase = "forward"
    loss = F.cross_entropy(model(x), y)
    counter.phase = "backward"
    loss.backward()
    counter.phase = "optimizer"
    optimizer.step()


def training_step_cost(
    model: nn.Module, batch_size: int, input_size: int | None = None
) -> StepCost:
    """One steady-state training step of ``model`` (on ``meta``) with ``PaperSGD``:
    ``zero_grad(set_to_none=True)``, forward, cross-entropy, backward, update; a first, uncounted
    step makes the optimizer's state. The batch is laid out as each model's loader gives it:
    channels-last for this project's net, NCHW for torchvision's."""
    size = input_size or getattr(model, "input_size", paper.CROP_SIZE)
    model.train()
    optimizer = PaperSGD(model.parameters())
    x = torch.empty(batch_size, 3, size, size, device="meta")
    if isinstance(model, AlexNet):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty(batch_size, dtype=torch.long, device="meta")
    step = functools.partial(_training_step, model, optimizer, x, y)
    count(step)  # makes the optimizer's state
    return count(step)
