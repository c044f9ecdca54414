"""The kernels a GPU would launch for one training step, their bytes and FLOPs, counted on the
``meta`` device (tensors without data: no GPU needed). The step runs as on CUDA: on ``meta`` the
model takes its non-CPU branches (no CPU chunking, ``PaperSGD``'s ``_foreach`` update), and
:func:`cuda_path` covers where PyTorch itself differs by device: ``F.dropout`` (CUDA's fused
``native_dropout``) and a convolution's output layout (cuDNN's channels-last for a channels-last
input or weight). A first, uncounted step makes the optimizer's state. Counting rules, per aten
op dispatched below autograd (backward ops count, composite ops as what they decompose into):

- compute-bound: convolutions and their backward, matrix products (:data:`COMPUTE_OPS`), one op
  each; an ``addmm``'s bias add is part of it.
- no kernel, not counted: views and metadata ops (every op whose outputs all alias an input
  without writing it, in-place view ops, ops that return and mutate no tensor) and allocations
  (:data:`NO_KERNEL_OPS`).
- memory-bound: every other op, one each; a ``_foreach_*`` op and a custom op
  (``alexnet2012::relu_lrn_pool``) count as one, whatever their kernels.
- bytes: the stored sizes (an expanded input counts what it stores) of tensor inputs, read, and
  outputs, written; a mutated tensor is read and written once each, an ``out=`` tensor only
  written (so ``zero_``/``fill_``/``copy_`` count a read the GPU skips). No caches modelled.
- FLOPs: ``FlopCounterMode``'s total read around each op (products only).

Limits: an aten op launching several kernels counts once (cuDNN's separate bias add,
``constant_pad_nd``); two columns on two GPUs add device-to-device copies that ``meta`` lacks.
``TorchDispatchMode`` is the private class the "Extending PyTorch" notes document (the public
``TorchFunctionMode`` sees neither backward nor decomposed ops); ``FlopCounterMode`` uses it too.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
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

COMPUTE = "compute"
MEMORY = "memory"
NO_KERNEL = "none"

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
    for t in _tensors(list(args) + list(kwargs.values())):
        if t.is_floating_point():
            return t.dtype
    return None


class OpCounter(TorchDispatchMode):
    """Records each op dispatched as an :class:`Op` in ``ops`` (``skipped`` counts the ops
    without a kernel by name); ``flops``, entered before it, is read around each op; ``phase``
    names the part of the step the ops belong to."""

    def __init__(self, flops: FlopCounterMode | None = None):
        super().__init__()
        self.flops = flops
        self.phase = "step"
        self.ops: list[Op] = []
        self.skipped: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = self.flops.get_total_flops() if self.flops is not None else 0
        out = func(*args, **kwargs)
        if not hasattr(func, "overloadpacket"):  # not an ATen or custom op overload
            return out
        name = f"{func.namespace}.{func.overloadpacket.__name__}"
        kind = op_kind(func, args, kwargs)
        if kind == NO_KERNEL:
            self.skipped[name] += 1
            return out
        flops = self.flops.get_total_flops() - before if self.flops is not None else 0
        read, written = op_bytes(func, args, kwargs, out)
        self.ops.append(Op(name, kind, self.phase, flops, read, written, _dtype(args, kwargs)))
        return out


_DROPOUTS = (F.dropout, torch.dropout)


class _CudaOps(TorchFunctionMode):
    """On ``meta``, ``F.dropout`` (training, 0 < p < 1, not in place) runs as CUDA's fused
    ``native_dropout`` (elsewhere it is ``bernoulli_``, ``div_`` and ``mul``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DROPOUTS and args and isinstance(args[0], Tensor) and args[0].is_meta:
            names = (
                ("input", "p", "training", "inplace")
                if func is F.dropout
                else ("input", "p", "train")
            )
            given = {**dict(zip(names, args)), **kwargs}
            p = given.get("p", 0.5)
            training = given.get("training", given.get("train", True))
            x = given["input"]
            if training and 0 < p < 1 and not given.get("inplace", False) and x.numel():
                return torch.native_dropout(x, p, True)[0]
        return func(*args, **kwargs)


class _CudaLayouts(TorchDispatchMode):
    """On ``meta``, a 4-d convolution with a channels-last input or weight returns channels-last,
    as cuDNN does (else a later channels-last ``contiguous`` would count a copy CUDA skips)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.name() == "aten::convolution" and out.is_meta and out.dim() == 4:
            x, weight = args[0], args[1]
            if weight.dim() == 4 and torch.channels_last in (
                _memory_format(x),
                _memory_format(weight),
            ):
                out = torch.empty(
                    out.shape, dtype=out.dtype, device=out.device, memory_format=torch.channels_last
                )
        return out


def _memory_format(t: Tensor) -> torch.memory_format:
    """ATen's ``suggest_memory_format`` for these shapes: channels-last if laid out so and not
    also contiguous."""
    channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return (
        torch.channels_last if channels_last and not t.is_contiguous() else torch.contiguous_format
    )


@contextlib.contextmanager
def cuda_path() -> Iterator[None]:
    with _CudaOps(), _CudaLayouts():
        yield


TOTALS = ("memory_ops", "memory_bytes", "compute_ops", "compute_bytes", "flops")


@dataclass
class StepCost:
    """The ops of one step; ``flops`` is ``FlopCounterMode``'s total."""

    ops: list[Op]
    skipped: dict[str, int] = field(default_factory=dict)
    flops: int = 0

    def _of(self, kind: str) -> list[Op]:
        return [op for op in self.ops if op.kind == kind]

    @property
    def memory_ops(self) -> int:
        return len(self._of(MEMORY))

    @property
    def memory_bytes(self) -> int:
        return sum(op.bytes for op in self._of(MEMORY))

    @property
    def compute_ops(self) -> int:
        return len(self._of(COMPUTE))

    @property
    def compute_bytes(self) -> int:
        return sum(op.bytes for op in self._of(COMPUTE))

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
        table: dict[str, dict[str, int]] = {}
        for op in self.ops:
            row = table.setdefault(op.phase, dict.fromkeys(TOTALS, 0))
            row[f"{op.kind}_ops"] += 1
            row[f"{op.kind}_bytes"] += op.bytes
            row["flops"] += op.flops
        return table

    def summary(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TOTALS}


def count(step: Callable[[OpCounter], Any]) -> StepCost:
    """What ``step(counter)`` runs on the CUDA path; ``step`` may set ``counter.phase``."""
    with cuda_path(), FlopCounterMode(display=False) as flop_counter:
        counter = OpCounter(flop_counter)
        with counter:
            step(counter)
    return StepCost(counter.ops, dict(counter.skipped), flop_counter.get_total_flops())


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    counter: OpCounter | None = None,
) -> None:
    """``zero_grad(set_to_none=True)``, forward, cross-entropy, backward, optimizer step."""

    def phase(name: str) -> None:
        if counter is not None:
            counter.phase = name

    optimizer.zero_grad(set_to_none=True)
    phase("forward")
    loss = F.cross_entropy(model(x), y)
    phase("backward")
    loss.backward()
    phase("optimizer")
    optimizer.step()


def training_step_cost(
    model: nn.Module,
    batch_size: int,
    input_size: int | None = None,
    num_classes: int = paper.NUM_CLASSES,
    optimizer: torch.optim.Optimizer | None = None,
) -> StepCost:
    """One steady-state :func:`training_step` of ``model`` (on ``meta``) on a meta batch, with
    ``PaperSGD`` unless ``optimizer`` is given. The batch is laid out as each model's loader gives
    it: channels-last for this project's net (its loader writes that at no cost), NCHW for
    torchvision's."""
    size = input_size or getattr(model, "input_size", paper.CROP_SIZE)
    model.train()
    if optimizer is None:
        optimizer = PaperSGD(
            model.parameters(),
            lr=paper.LEARNING_RATE,
            momentum=paper.MOMENTUM,
            weight_decay=paper.WEIGHT_DECAY,
        )
    x = torch.empty(batch_size, 3, size, size, device="meta")
    if isinstance(model, AlexNet):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty(batch_size, dtype=torch.long, device="meta")
    with cuda_path():
        training_step(model, optimizer, x, y)
    return count(lambda counter: training_step(model, optimizer, x, y, counter))
