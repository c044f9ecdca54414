"""A step's time estimated from datasheet figures: per op ``max(FLOPs / (efficiency x peak),
bytes / (efficiency x bandwidth))``, summed; fp32 products at the TF32 peak, bf16/fp16 at the
BF16 peak. With launch overhead, one kernel launched every ``launch_s``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alexnet2012.bench.cost import COMPUTE, MEMORY, Op, StepCost


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
    """Rules of thumb: products reach 50-70% of the peak, element-wise ops 70-90% of the
    bandwidth, a launch costs 3-5 us of host time."""

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
