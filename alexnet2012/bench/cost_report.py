"""Each compared model's step cost, its ratios to torchvision's, breakdown and targets, and its
time projected from datasheet figures (an estimate): per op ``max(FLOPs / (efficiency x peak),
bytes / (efficiency x bandwidth))``, summed; fp32 products at the TF32 peak, bf16/fp16 at the BF16
peak; with launch overhead, one kernel launched every ``launch_s``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from alexnet2012 import paper
from alexnet2012.bench.cost import COMPUTE, MEMORY, TOTALS, Op, StepCost, training_step_cost
from alexnet2012.bench.models import ONE_DEVICE, REFERENCE, TWO_DEVICE, Builder, on_meta_models


@dataclass(frozen=True)
class GPU:
    """Datasheet peaks: FLOP/s (fp32 CUDA cores, TF32 and BF16 dense tensor cores), bytes/s."""

    name: str
    fp32_flops: float
    tf32_flops: float
    bf16_flops: float
    bandwidth: float


# NVIDIA's datasheets: "NVIDIA H100 Tensor Core GPU" (SXM5 column, 80 GB HBM3) and "NVIDIA H200
# Tensor Core GPU" (SXM column, 141 GB HBM3e), linked from nvidia.com/en-us/data-center/h100/ and
# /h200/. They print the tensor-core rates with sparsity; the dense rates used here are half.
H100_SXM = GPU("H100 SXM5", 67e12, 495e12, 989e12, 3.35e12)
H200_SXM = GPU("H200 SXM", 67e12, 495e12, 989e12, 4.8e12)
GPUS = (H100_SXM, H200_SXM)
PEAK_SOURCE = "NVIDIA H100 and H200 datasheets; dense: half the with-sparsity figures"


@dataclass(frozen=True)
class Assumptions:
    """Rules of thumb: products at 50-70% of the peak, element-wise ops 70-90% of the bandwidth."""

    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    launch_s: float = 4e-6
    tf32: bool = True


DEFAULT_ASSUMPTIONS = Assumptions()


def product_peak(gpu: GPU, dtype: torch.dtype | None, tf32: bool = True) -> float:
    if dtype in (torch.bfloat16, torch.float16):
        return gpu.bf16_flops
    return gpu.tf32_flops if tf32 else gpu.fp32_flops


def op_seconds(op: Op, gpu: GPU, assume: Assumptions = DEFAULT_ASSUMPTIONS) -> float:
    compute = op.flops / (assume.compute_efficiency * product_peak(gpu, op.dtype, assume.tf32))
    return max(compute, op.bytes / (assume.memory_efficiency * gpu.bandwidth))


def launch_bound_seconds(kernel_seconds: Sequence[float], launch_s: float) -> float:
    """The last kernel's end, kernel ``i`` launched at ``(i + 1) * launch_s``."""
    end = 0.0
    for i, seconds in enumerate(kernel_seconds):
        end = max(end, (i + 1) * launch_s) + seconds
    return end


def project(
    cost: StepCost, gpu: GPU, batch_size: int, assume: Assumptions = DEFAULT_ASSUMPTIONS
) -> dict[str, Any]:
    """The step's time and images/s on ``gpu``, without and with launch overhead."""
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
    "bench/cost.py's docstring)"
)
TARGET_RATIO = 1.5  # memory-bound ops and bytes, one-device and two-device, over torchvision's


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def cost_report(
    batch_size: int = paper.BATCH_SIZE,
    models: Iterable[tuple[str, Builder]] | None = None,
    gpus: Sequence[GPU] = GPUS,
    assume: Assumptions = DEFAULT_ASSUMPTIONS,
    reference: str = REFERENCE,
) -> dict[str, Any]:
    """The report for ``models`` (``(name, build)`` pairs; default: the compared models)."""
    rows = []
    for name, build in on_meta_models() if models is None else models:
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
        row["ratio_to_torchvision"] = None
        if ref is not None:
            row["ratio_to_torchvision"] = {key: _ratio(row[key], ref[key]) for key in TOTALS}
            for mine, theirs in zip(row["projection"], ref["projection"]):
                for key in ("step_s", "step_s_with_launch"):
                    mine[f"{key}_ratio_to_torchvision"] = _ratio(mine[key], theirs[key])
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
