"""The first minute on a GPU: versions, fused ops against references, steps; recorded as done."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alexnet2012 import devices, fused_dropout, fused_lrn
from alexnet2012.bench.training import synthetic_batch
from alexnet2012.files import write_file
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD
from alexnet2012.step import TrainStep

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def versions(device: torch.device) -> dict[str, Any]:
    """The benchmarks' versions and device description, Triton's version and the GPU's."""
    found: dict[str, Any] = {**devices.versions(), **devices.describe([device])}
    try:
        import triton

        found["triton"] = triton.__version__
    except ImportError:
        found["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        found.update(
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    return found


def lrn_against_reference(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """conv1's shape (groups 2); errors against the float32 reference given the same rounded
    input and gradient, and the bound they must stay in (bfloat16: one rounding, u = eps/2)."""
    g = torch.Generator(device=device).manual_seed(0)
    z = (torch.randn(16, 96, 55, 55, device=device, generator=g) * 40).to(dtype)
    z = z.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = fused_lrn.relu_lrn_pool(z, 2)
    zf = z.detach().float().requires_grad_()
    ref = fused_lrn.relu_lrn_pool_reference(zf, 2)
    grad = torch.randn(out.shape, device=device, generator=g).to(dtype)
    (grad_z,) = torch.autograd.grad(out, z, grad)
    (ref_grad,) = torch.autograd.grad(ref, zf, grad.float())
    u = torch.finfo(dtype).eps / 2
    forward = ((out.float() - ref).abs() / (ref.abs() + 1e-6)).max().item()
    backward = (grad_z.double().sum() - ref_grad.double().sum()).abs().item()
    if dtype == torch.bfloat16:  # independent roundings of each value: about 7 sigma
        bound = 4 * u * ref_grad.double().norm().item()
    else:  # float32 in another order of operations: a relative tolerance
        bound = 1e-5 * ref_grad.double().abs().sum().item()
    return {
        "forward_max_rel_error": forward,
        "backward_sum_error": backward,
        "backward_bound": bound,
        "ok": forward <= max(1e-5, 2 * u) and backward <= bound,
    }


def dropout_against_reference(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """fc6's shape: the kept fraction, fresh masks, the backward's mask, test time's 0.5 relu(z)."""
    g = torch.Generator(device=device).manual_seed(1)
    z = (torch.rand(128, 2048, device=device, generator=g) + 0.5).to(dtype).requires_grad_()
    y = fused_dropout.relu_dropout(z, 0.5, True)
    again = fused_dropout.relu_dropout(z, 0.5, True)
    kept = y != 0
    grad = torch.randn(y.shape, device=device, generator=g).to(dtype)
    (grad_z,) = torch.autograd.grad(y, z, grad)
    test_time = fused_dropout.relu_dropout(z.detach(), 0.5, False)
    result = {
        "kept_fraction": kept.float().mean().item(),
        "masks_differ_fraction": (kept != (again != 0)).float().mean().item(),
        "kept_values_exact": bool(torch.equal(y[kept], z.detach()[kept])),
        "backward_uses_mask": bool(torch.equal(grad_z, grad * kept)),
        "test_time_exact": bool(torch.equal(test_time, 0.5 * F.relu(z.detach()))),
    }
    result["ok"] = (
        abs(result["kept_fraction"] - 0.5) < 0.01  # 262,144 draws: 10 standard deviations
        and abs(result["masks_differ_fraction"] - 0.5) < 0.01
        and all(result[k] for k in ("kept_values_exact", "backward_uses_mask", "test_time_exact"))
    )
    return result


def training_step(placement: tuple[str, ...], batch: int, compiled: str | None) -> dict:
    """Three steps on ``placement``; ``compiled``: the backend, bf16, no recompiling."""
    torch.manual_seed(0)
    if len(placement) == 1:
        model = AlexNet(1000).to(placement[0])
    else:
        model = AlexNet(1000, devices=placement)
    first = torch.device(placement[0])
    on, backend = compiled is not None, compiled or "inductor"
    step = TrainStep(
        model, PaperSGD(model.parameters()), bf16=on, compile=on, compile_backend=backend
    )
    x, y = synthetic_batch(batch, first)  # channels-last, as the loader feeds
    times, losses = [], []
    for i in range(3):
        started = time.perf_counter()
        if compiled is not None and i > 0:
            with torch.compiler.set_stance("fail_on_recompile"):
                losses.append(step(x, y).item())
        else:
            losses.append(step(x, y).item())
        times.append(time.perf_counter() - started)
    ok = all(torch.isfinite(torch.tensor(losses)))
    return {"losses": losses, "first_s": times[0], "step_s": min(times[1:]), "ok": bool(ok)}


def checks(device: torch.device, batch: int, backend: str) -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {"versions": lambda: versions(device)}
    for name, dtype in DTYPES.items():
        if fused_lrn.available(device):
            found[f"fused_lrn_{name}"] = lambda d=dtype: lrn_against_reference(device, d)
        if fused_dropout.available(device):
            found[f"fused_dropout_{name}"] = lambda d=dtype: dropout_against_reference(device, d)
    dev = str(device)
    placements = {"one_device": (dev,), "two_columns_one_device": (dev, dev)}
    if device.type == "cuda":
        placements["two_devices_gpu_cpu"] = (dev, "cpu")
    for name, placement in placements.items():
        found[f"step_{name}"] = lambda p=placement: training_step(p, batch, None)
    found["step_compiled_bf16"] = lambda: training_step((dev,), batch, backend)
    return found


def run(out: Path, device: torch.device, batch: int, backend: str, log=print) -> dict:
    """Run every check, writing ``out`` after each; returns the results."""
    results: dict[str, Any] = {"device": str(device), "batch_size": batch, "backend": backend}
    for name, check in checks(device, batch, backend).items():
        started = time.perf_counter()
        try:
            results[name] = check()
        except Exception as exc:  # recorded, and the next check still runs
            lines = traceback.format_exception_only(exc)
            results[name] = {"ok": False, "error": "".join(lines).strip()[-2000:]}
        if isinstance(results[name], dict):
            results[name]["seconds"] = round(time.perf_counter() - started, 3)
        status = results[name].get("ok", True) if isinstance(results[name], dict) else True
        log(f"smoke: {name}: {'ok' if status else 'FAILED'}")
        write_file(out, json.dumps(results, indent=1))
    return results
