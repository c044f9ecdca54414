"""Each compared model's step cost, its ratios to torchvision's, breakdown, projections, targets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from alexnet2012 import paper
from alexnet2012.bench.cost import TOTALS, training_step_cost
from alexnet2012.bench.models import ONE_DEVICE, REFERENCE, TWO_DEVICE, Builder, on_meta_models
from alexnet2012.bench.roofline import (
    DEFAULT_ASSUMPTIONS,
    GPU,
    GPUS,
    PEAK_SOURCE,
    Assumptions,
    project,
)

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
        row["ratio_to_torchvision"] = (
            None if ref is None else {key: _ratio(row[key], ref[key]) for key in TOTALS}
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
