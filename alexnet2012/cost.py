"""A cost model of one training step, counted on the ``meta`` device (tensors without data), so
that it runs without a GPU: the kernels a GPU would launch, the bytes they move, their FLOPs,
and a roofline projection of the step's time on datasheet figures.

The step runs as CUDA runs it: on ``meta`` the model code takes its non-CPU branches (no CPU
chunking, ``PaperSGD``'s ``_foreach`` update), and :func:`cuda_path` covers the two places on
these paths where PyTorch itself differs by device: ``F.dropout`` (CUDA launches the fused
``native_dropout``) and the layout of a convolution's output (cuDNN returns channels-last for a
channels-last input or weight; the meta kernel, contiguous). The step counted is a steady-state
one: a first, uncounted step makes the optimizer's state.

Counting rules, per aten op dispatched (as :class:`OpCounter` sees it, below autograd, so
backward ops count and composite ops such as ``linear`` count as what they decompose into):

- compute-bound: convolutions and their backward, ``mm``/``addmm``/``bmm``/``baddbmm``/``matmul``/
  ``linear`` (and ``mv``, ``addmv``, ``dot``, ``_scaled_mm``): one op each; an ``addmm``'s bias
  add is part of it.
- no kernel, not counted: views and other metadata ops (every op whose outputs all alias an input
  without writing it, e.g. ``view``, ``permute``, ``t``, ``expand``, ``slice``, ``detach``,
  ``alias``; ``_unsafe_view``, ``_reshape_alias``, ``lift_fresh``, ``set_``; in-place view ops
  such as ``t_``; ops that return and mutate no tensor, e.g. ``profiler::_record_function_*``);
  allocations (``empty``, ``empty_like``, ``empty_strided``, ``new_empty``, ... ``resize_``).
- memory-bound: every other op, one each: element-wise ops, reductions, pooling, ``cat``,
  copies, ``zero_``/``fill_``/``zeros``/``ones``, ``bernoulli_``; a ``_foreach_*`` op counts as
  one (one multi-tensor launch family); a custom op (``alexnet2012::relu_lrn_pool`` and its
  backward) counts as one, whatever its kernels.
- bytes of an op: the sizes (stored elements x element size; an expanded input counts the
  elements it stores) of its tensor inputs, read, and of its outputs, written. A tensor an op
  mutates (``add_``'s ``self``, a ``_foreach_*_`` list) counts as read and written once each;
  an ``out=`` tensor as written only. ``zero_``/``fill_``/``copy_`` thus count a read that the
  GPU does not do; caches are not modelled (every op reads from and writes to memory).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (public), read before and after each op,
  so each op carries its own FLOPs (products only: the counter has no formula for the rest).

Limits: an aten op that launches several kernels counts once (cuDNN's separate bias add after a
convolution, ``constant_pad_nd``'s fill and copy, layout conversions inside cuDNN); two
columns on two GPUs add the device-to-device copies where the columns cross, which one device
(and ``meta``) does not have.

The dispatch mode: PyTorch has no public class for one. ``torch.overrides.TorchFunctionMode``
(public) sees Python-level calls above autograd, so neither backward ops nor what composite ops
decompose into; the public ``FlopCounterMode`` and ``torch.utils.checkpoint`` are built on
``torch.utils._python_dispatch.TorchDispatchMode``, the class the "Extending PyTorch" notes
document, and this module (a measuring tool, not on the model's path) subclasses it too.

Roofline (:func:`project`): an estimate from datasheet figures, not a measurement. Per op,
``max(FLOPs / (efficiency x peak), bytes / (efficiency x bandwidth))``, summed over the ops; fp32
products at the TF32 tensor-core peak (the training default), bf16/fp16 at the BF16 peak. With
launch overhead, the host launches one kernel per counted op every ``launch_s`` seconds and
each kernel starts when it is launched and the previous one has finished.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
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
    {
        "convolution",
        "_convolution",
        "convolution_backward",
        "conv2d",
        "conv1d",
        "conv3d",
        "cudnn_convolution",
        "cudnn_convolution_transpose",
        "convolution_overrideable",
        "convolution_backward_overrideable",
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "addbmm",
        "matmul",
        "linear",
        "mv",
        "addmv",
        "dot",
        "vdot",
        "_scaled_mm",
    }
)
"""aten ops (overload packets) that count as compute-bound products."""
NO_KERNEL_OPS = frozenset(
    {
        "empty",
        "empty_like",
        "new_empty",
        "new_empty_strided",
        "empty_strided",
        "empty_permuted",
        "resize_",
        "resize_as_",
        "_unsafe_view",
        "_reshape_alias",
        "lift_fresh",
        "set_",
    }
)
"""aten ops that launch no kernel although their schema does not say they alias: allocations
and metadata ops."""


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One counted op: name (``aten.add_``, ``alexnet2012.relu_lrn_pool``), kind (``compute`` or
    ``memory``), the phase of the step it ran in, its FLOPs, bytes read and written, and the
    dtype of its first floating-point tensor (what a product's peak depends on)."""

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
    """The tensors in an argument or result (a tensor, or nested lists/tuples of them)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def tensor_bytes(t: Tensor) -> int:
    """Bytes ``t`` stores: its elements (a dimension of stride 0, from ``expand``, counted once)
    times the element size."""
    elements = math.prod(size for size, stride in zip(t.shape, t.stride()) if stride != 0)
    return (elements if t.numel() else 0) * t.element_size()


def _bound_arguments(func, args: tuple, kwargs: dict) -> list[tuple[Any, Any]]:
    """``(schema argument, value)`` for the arguments given to ``func``."""
    pairs = []
    for i, argument in enumerate(func._schema.arguments):
        if i < len(args) and not argument.kwarg_only:
            pairs.append((argument, args[i]))
        elif argument.name in kwargs:
            pairs.append((argument, kwargs[argument.name]))
    return pairs


def op_kind(func, args: tuple, kwargs: dict) -> str:
    """``compute``, ``memory`` or ``none`` (no kernel) for an op, by the rules in the module's
    docstring."""
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
    """``(bytes read, bytes written)`` of one op, by the rules in the module's docstring."""
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
    """Records every op dispatched while it is active as an :class:`Op` in ``ops`` (ops without a
    kernel are left out; ``skipped`` counts them by name). ``flops`` is the
    ``FlopCounterMode`` whose total is read around each op (entered before this mode); ``phase``
    names the part of the step the ops belong to (set it as the step goes)."""

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
        if not hasattr(func, "overloadpacket"):  # an ATen or custom op overload
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
    """On ``meta`` tensors, the op CUDA runs where a composite PyTorch op branches on the device:
    ``F.dropout`` (training, 0 < p < 1, not in place) runs as ``native_dropout``, CUDA's fused
    kernel (elsewhere it is ``bernoulli_``, ``div_`` and ``mul``)."""

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
    """On ``meta`` tensors, CUDA's memory format where a meta kernel picks another: a convolution
    with a 4-d weight and a channels-last input or weight returns a channels-last output, as
    cuDNN's does (the meta kernel returns a contiguous one, which would make every later
    ``contiguous(memory_format=torch.channels_last)`` a copy that CUDA does not make)."""

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
    """Channels-last for a 4-d tensor laid out so and not also contiguous, as ATen's
    ``suggest_memory_format`` (which cuDNN's layout rule reads) decides for these shapes."""
    channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return (
        torch.channels_last if channels_last and not t.is_contiguous() else torch.contiguous_format
    )


@contextlib.contextmanager
def cuda_path() -> Iterator[None]:
    """Ops on ``meta`` tensors run as on CUDA where PyTorch's code differs by device: the
    composite ops' CUDA branches (:class:`_CudaOps`) and CUDA's output layouts
    (:class:`_CudaLayouts`)."""
    with _CudaOps(), _CudaLayouts():
        yield


def count(step: Callable[[OpCounter], Any]) -> StepCost:
    """Run ``step(counter)`` on the CUDA path (:func:`cuda_path`) with a ``FlopCounterMode`` and
    an :class:`OpCounter` active, and return what was counted. ``step`` may set
    ``counter.phase``."""
    with cuda_path(), FlopCounterMode(display=False) as flop_counter:
        counter = OpCounter(flop_counter)
        with counter:
            step(counter)
    return StepCost(counter.ops, dict(counter.skipped), flop_counter.get_total_flops())


@dataclass
class StepCost:
    """The ops of one step and their totals; ``flops`` is ``FlopCounterMode``'s total."""

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
        """Op name -> kind, count, bytes, FLOPs; by bytes, most first."""
        table: dict[str, dict[str, Any]] = {}
        for op in self.ops:
            row = table.setdefault(op.name, {"kind": op.kind, "count": 0, "bytes": 0, "flops": 0})
            row["count"] += 1
            row["bytes"] += op.bytes
            row["flops"] += op.flops
        return dict(sorted(table.items(), key=lambda kv: -kv[1]["bytes"]))

    def by_phase(self) -> dict[str, dict[str, int]]:
        """Phase -> memory-bound ops and bytes, compute-bound ops and bytes, FLOPs."""
        table: dict[str, dict[str, int]] = {}
        for op in self.ops:
            row = table.setdefault(
                op.phase,
                {
                    "memory_ops": 0,
                    "memory_bytes": 0,
                    "compute_ops": 0,
                    "compute_bytes": 0,
                    "flops": 0,
                },
            )
            row[f"{op.kind}_ops"] += 1
            row[f"{op.kind}_bytes"] += op.bytes
            row["flops"] += op.flops
        return table

    def summary(self) -> dict[str, Any]:
        return {
            "memory_ops": self.memory_ops,
            "memory_bytes": self.memory_bytes,
            "compute_ops": self.compute_ops,
            "compute_bytes": self.compute_bytes,
            "flops": self.flops,
        }


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    counter: OpCounter | None = None,
) -> None:
    """The benchmark's training step: ``zero_grad(set_to_none=True)``, forward, cross-entropy,
    backward, optimizer step; marks the phases on ``counter`` when given."""

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
    """The cost of one steady-state :func:`training_step` of ``model`` (its parameters on
    ``meta``) on a meta batch of ``batch_size`` images ``input_size`` (default: the model's
    ``input_size``, else the paper's crop) with labels below ``num_classes``; ``PaperSGD`` at the
    paper's settings unless ``optimizer`` is given. One uncounted step runs first. The batch is
    laid out as each model's loader gives it: channels-last for this project's network (its
    loader writes that layout at no extra cost), NCHW for torchvision's, as its users load it."""
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
    if isinstance(model, AlexNet):  # as this project's loader delivers it (data.augment.to_input)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty(batch_size, dtype=torch.long, device="meta")
    with cuda_path():
        training_step(model, optimizer, x, y)
    return count(lambda counter: training_step(model, optimizer, x, y, counter))


# ---------------------------------------------------------------------------------------------
# Roofline
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    """Datasheet peaks: FLOP/s (fp32 on CUDA cores, TF32 and BF16 dense tensor-core) and memory
    bandwidth in bytes/s."""

    name: str
    fp32_flops: float
    tf32_flops: float
    bf16_flops: float
    bandwidth: float


H100_SXM = GPU("H100 SXM5", 67e12, 495e12, 989e12, 3.35e12)
H200_SXM = GPU("H200 SXM", 67e12, 495e12, 989e12, 4.8e12)
GPUS = (H100_SXM, H200_SXM)
PEAK_SOURCE = "NVIDIA datasheets, dense, no sparsity; shared/GPU_FACTS.md"


@dataclass(frozen=True)
class Assumptions:
    """The rules of thumb the projection uses: products reach ``compute_efficiency`` of the
    tensor-core peak at AlexNet's shapes (50-70%), element-wise ops ``memory_efficiency`` of the
    bandwidth (70-90%), each kernel costs ``launch_s`` of host time (3-5 us); fp32 products run
    as TF32 when ``tf32`` (the training default)."""

    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    launch_s: float = 4e-6
    tf32: bool = True


def product_peak(gpu: GPU, dtype: torch.dtype | None, tf32: bool = True) -> float:
    """The peak FLOP/s for products in ``dtype``: BF16 tensor cores for bf16/fp16, TF32 for fp32
    when ``tf32``, else the CUDA cores' fp32."""
    if dtype in (torch.bfloat16, torch.float16):
        return gpu.bf16_flops
    return gpu.tf32_flops if tf32 else gpu.fp32_flops


def op_seconds(op: Op, gpu: GPU, assume: Assumptions = Assumptions()) -> float:
    """One op's roofline time: ``max(FLOPs / (eff x peak), bytes / (eff x bandwidth))``."""
    compute = op.flops / (assume.compute_efficiency * product_peak(gpu, op.dtype, assume.tf32))
    return max(compute, op.bytes / (assume.memory_efficiency * gpu.bandwidth))


def launch_bound_seconds(kernel_seconds: Sequence[float], launch_s: float) -> float:
    """Kernels run in order, each launched ``launch_s`` after the previous launch (the first at
    ``launch_s``) and started once launched and the previous kernel is done: the last one's end."""
    end = 0.0
    for i, seconds in enumerate(kernel_seconds):
        end = max(end, (i + 1) * launch_s) + seconds
    return end


def project(
    cost: StepCost, gpu: GPU, batch_size: int, assume: Assumptions = Assumptions()
) -> dict[str, Any]:
    """The step's roofline time on ``gpu``, without and with launch overhead, and images/s."""
    times = [op_seconds(op, gpu, assume) for op in cost.ops]
    step = sum(times)
    launched = launch_bound_seconds(times, assume.launch_s)
    return {
        "gpu": gpu.name,
        "step_s": step,
        "images_per_s": batch_size / step if step else None,
        "step_s_with_launch": launched,
        "images_per_s_with_launch": batch_size / launched if launched else None,
        "compute_ops_s": sum(t for t, op in zip(times, cost.ops) if op.kind == COMPUTE),
        "memory_ops_s": sum(t for t, op in zip(times, cost.ops) if op.kind == MEMORY),
        "launch_s": len(times) * assume.launch_s,
    }


# ---------------------------------------------------------------------------------------------
# The benchmark's four models
# ---------------------------------------------------------------------------------------------

ONE_DEVICE = "AlexNet"
TWO_DEVICE = "AlexNet two-device"
ONE_COLUMN = "AlexNet columns=1"
REFERENCE = "torchvision alexnet"
ESTIMATE = (
    "an estimate from datasheet figures, not a measurement: per op max(FLOPs / "
    "(efficiency x peak), bytes / (efficiency x bandwidth)), summed"
)
COUNTING_RULES = (
    "per aten op dispatched below autograd (backward included): convolutions and matrix "
    "products are compute-bound; views, allocations and metadata ops launch no kernel and are "
    "not counted; every other op (a _foreach_* op, a custom op) is one memory-bound op. Bytes: "
    "tensor inputs read, outputs written, a mutated input read and written, an out= tensor "
    "written; FLOPs from torch.utils.flop_counter.FlopCounterMode. One steady-state step "
    "(after an uncounted one), fp32, on the meta device on the CUDA code path (alexnet2012/"
    "cost.py's docstring)"
)
TARGET_RATIO = 1.5
"""The issue's targets: memory-bound ops and their bytes at most 1.5x torchvision's, for the
one-device net and the two-device path."""


def per_column_on_meta(**kwargs: Any) -> nn.Module:
    """The two-device path on ``meta``: ``AlexNet(devices=("cpu", "cpu"))`` (``resolve_devices``
    takes no ``meta``), then every parameter moved to ``meta``; the forward places each
    column's activations where its parameters are."""
    model = AlexNet(devices=("cpu", "cpu"), **kwargs).to("meta")
    if isinstance(getattr(model, "devices", None), (list, tuple)):
        model.devices = [torch.device("meta")] * len(model.devices)
    return model


def on_meta(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``build`` made on ``meta``: ``build().to("meta")`` without drawing the weights on the
    CPU first."""

    def built() -> nn.Module:
        with torch.device("meta"):
            return build().to("meta")

    return built


def default_models() -> list[tuple[str, Callable[[], nn.Module]]]:
    """The benchmark's rows on ``meta``: one device, two-device path, one column, torchvision."""
    return [
        (ONE_DEVICE, on_meta(AlexNet)),
        (TWO_DEVICE, per_column_on_meta),
        (ONE_COLUMN, on_meta(lambda: AlexNet(columns=1))),
        (REFERENCE, on_meta(torchvision.models.alexnet)),
    ]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def cost_report(
    batch_size: int = paper.BATCH_SIZE,
    models: Iterable[tuple[str, Callable[[], nn.Module]]] | None = None,
    gpus: Sequence[GPU] = GPUS,
    assume: Assumptions = Assumptions(),
    reference: str = REFERENCE,
) -> dict[str, Any]:
    """The cost of one training step of each model (default: :func:`default_models`), its ratios
    to ``reference``'s, the per-op and per-phase breakdown and the roofline projections."""
    rows = []
    for name, build in default_models() if models is None else models:
        torch.manual_seed(0)
        cost = training_step_cost(build(), batch_size)
        rows.append(
            {
                "name": name,
                **cost.summary(),
                "not_counted": cost.skipped,
                "projection": [project(cost, gpu, batch_size, assume) for gpu in gpus],
                "by_phase": cost.by_phase(),
                "by_op": cost.by_op(),
            }
        )
    ref = next((r for r in rows if r["name"] == reference), None)
    for row in rows:
        row["ratio_to_torchvision"] = (
            None
            if ref is None
            else {
                key: _ratio(row[key], ref[key])
                for key in ("memory_ops", "memory_bytes", "compute_ops", "compute_bytes", "flops")
            }
        )
        if ref is not None:
            for mine, theirs in zip(row["projection"], ref["projection"]):
                mine["step_s_ratio_to_torchvision"] = _ratio(mine["step_s"], theirs["step_s"])
                mine["step_s_with_launch_ratio_to_torchvision"] = _ratio(
                    mine["step_s_with_launch"], theirs["step_s_with_launch"]
                )
    targets = {}
    for row in rows:
        if row["name"] in (ONE_DEVICE, TWO_DEVICE) and row["ratio_to_torchvision"]:
            r = row["ratio_to_torchvision"]
            targets[row["name"]] = {
                "memory_ops_ratio": r["memory_ops"],
                "memory_bytes_ratio": r["memory_bytes"],
                "target": TARGET_RATIO,
                "met": r["memory_ops"] <= TARGET_RATIO and r["memory_bytes"] <= TARGET_RATIO,
            }
    return {
        "what": "one training step (zero_grad(set_to_none=True), forward, F.cross_entropy, "
        "backward, PaperSGD step), steady state, counted on the meta device on the "
        "CUDA code path, fp32",
        "batch_size": batch_size,
        "reference": reference,
        "counting_rules": COUNTING_RULES,
        "assumptions": {
            **asdict(assume),
            "gpus": [asdict(g) for g in gpus],
            "peak_source": PEAK_SOURCE,
            "projection": ESTIMATE + "; fp32 products at the TF32 peak"
            if assume.tf32
            else ESTIMATE + "; fp32 products at the fp32 CUDA-core peak",
            "launch": f"{assume.launch_s * 1e6:g} us of host time per counted op (memory- and "
            "compute-bound); a kernel starts once launched and the previous one is "
            "done",
        },
        "models": rows,
        "targets": targets,
    }


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _columns(lines: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    ]


def top_ops(row: dict[str, Any], n: int = 5) -> str:
    """``aten.x 1.23 GB (12 ops), ...``: a row's ``n`` memory-bound op types with the most bytes."""
    mem = [(name, r) for name, r in row["by_op"].items() if r["kind"] == MEMORY][:n]
    return ", ".join(f"{name} {_gb(r['bytes'])} ({r['count']})" for name, r in mem)


def format_cost_table(report: dict[str, Any]) -> str:
    """The counts with their ratios to torchvision, then the roofline projection (labelled as an
    estimate), the peaks it assumes, the top op types by bytes and the issue's targets."""
    b = report["batch_size"]
    lines = [
        (
            "model",
            "mem ops",
            "x tv",
            "mem bytes",
            "x tv",
            "compute ops",
            "GFLOP",
            "compute bytes",
            "not counted",
        )
    ]
    for row in report["models"]:
        r = row["ratio_to_torchvision"] or {}
        lines.append(
            (
                row["name"],
                str(row["memory_ops"]),
                _x(r.get("memory_ops")),
                _gb(row["memory_bytes"]),
                _x(r.get("memory_bytes")),
                str(row["compute_ops"]),
                f"{row['flops'] / 1e9:.0f}",
                _gb(row["compute_bytes"]),
                str(sum(row["not_counted"].values())),
            )
        )
    text = [
        (
            f"Cost of one training step at batch {b}, counted on the meta device (CUDA code "
            f"path, fp32): memory-bound ops and the bytes they read + write; compute = "
            f"convolutions and matrix products; not counted: views, allocations, metadata "
            f"ops"
        ),
        *_columns(lines),
    ]
    a = report["assumptions"]
    gpus = [g["name"] for g in a["gpus"]]
    head = ["model", "launch ms"]
    for g in gpus:
        head += [f"{g} ms", "img/s", "+launch ms", "img/s", "x tv"]
    lines = [tuple(head)]
    for row in report["models"]:
        cells = [row["name"], f"{row['projection'][0]['launch_s'] * 1e3:.2f}"]
        for p in row["projection"]:
            cells += [
                f"{p['step_s'] * 1e3:.2f}",
                f"{p['images_per_s']:,.0f}",
                f"{p['step_s_with_launch'] * 1e3:.2f}",
                f"{p['images_per_s_with_launch']:,.0f}",
                _x(p.get("step_s_with_launch_ratio_to_torchvision")),
            ]
        lines.append(tuple(cells))
    peaks = "; ".join(
        f"{g['name']}: TF32 tensor {g['tf32_flops'] / 1e12:g}, FP32 "
        f"{g['fp32_flops'] / 1e12:g}, BF16 {g['bf16_flops'] / 1e12:g} TFLOP/s, "
        f"{g['bandwidth'] / 1e12:g} TB/s"
        for g in a["gpus"]
    )
    text += [
        "",
        (
            f"Projected step time, ESTIMATE (not a measurement) from datasheet figures: per op "
            f"max(FLOPs / ({a['compute_efficiency']:.0%} of peak), bytes / "
            f"({a['memory_efficiency']:.0%} of bandwidth)), summed; fp32 products at the "
            f"{'TF32 tensor' if a['tf32'] else 'FP32'} peak; launch ms: "
            f"{a['launch_s'] * 1e6:g} us of host time per op; +launch: each kernel starts "
            f"once launched and the previous one is done; x tv: +launch time over "
            f"torchvision's"
        ),
        *_columns(lines),
        f"peaks assumed ({a['peak_source']}): {peaks}",
    ]
    for row in report["models"]:
        if row["name"] in (ONE_DEVICE, report["reference"]):
            text.append(f"top memory-bound op types by bytes, {row['name']}: {top_ops(row)}")
    for name, t in report["targets"].items():
        text.append(
            f"target, {name}: memory-bound ops {t['memory_ops_ratio']:.2f}x and bytes "
            f"{t['memory_bytes_ratio']:.2f}x torchvision's (target <= "
            f"{t['target']:.1f}x each): {'met' if t['met'] else 'NOT met'}"
        )
    return "\n".join(text)
