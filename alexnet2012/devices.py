"""Devices: parsing and checking ``--devices``, CUDA library settings, syncing, descriptions."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from alexnet2012.errors import UsageError

DeviceSpec = str | torch.device | Sequence[str | torch.device] | None


def default() -> torch.device:
    """``cuda:0`` where CUDA is available, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def parse(
    spec: DeviceSpec, columns: int | None = None, option: str = "--devices"
) -> tuple[torch.device, ...]:
    """The devices of ``spec`` ("cuda:0,cuda:1", a device or a list), checked: one or two existing
    CPU or CUDA devices, two only for a two-column net. Empty or None: :func:`default`."""
    if spec is None or isinstance(spec, torch.device):
        names = [] if spec is None else [spec]
    elif isinstance(spec, str):
        names = [n.strip() for n in spec.split(",") if n.strip()]
    else:
        names = list(spec)
    if not names:
        return (default(),)
    if len(names) > 2:
        raise UsageError(f"{option} takes one or two devices (one per column), got {len(names)}")
    if columns == 1 and len(names) == 2:
        raise UsageError(f"--columns 1 runs on one device: give a single {option} entry")
    return tuple(_one(name, option) for name in names)


def _one(name: str | torch.device, option: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"{option}: {name!r} is not a device name (use e.g. 'cpu', 'cuda:0')"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(
            f"{option}: {name!r}: this network runs on 'cpu' and 'cuda[:N]' devices only"
        )
    if device.type == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = 0 if device.index is None else device.index
    if index >= count:
        have = ", ".join(f"cuda:{i}" for i in range(count)) or "none"
        raise UsageError(
            f"{option}: CUDA device cuda:{index} does not exist on this machine "
            f"(CUDA devices: {have})"
        )
    return torch.device("cuda", index)


def any_cuda(devices: Iterable[torch.device | str]) -> bool:
    """Whether any of ``devices`` is a GPU."""
    return any(torch.device(d).type == "cuda" for d in devices)


def configure_backends(devices: Iterable[torch.device | str], tf32: bool = True) -> dict[str, Any]:
    """Where any device is a GPU: cuDNN autotuning on, TF32 as ``tf32`` says (process-wide, the
    same for runs and benchmarks). Returns the settings for config.json and the reports."""
    if not any_cuda(devices):
        return {"cuda": False}
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"cuda": True, "cudnn_benchmark": True, "tf32_matmul": tf32, "tf32_cudnn": tf32}


def synchronize(devices: Iterable[torch.device | str]) -> None:
    """Wait for the queued work of every GPU in ``devices`` (nothing to do on the CPU)."""
    for device in {torch.device(d) for d in devices}:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def name(device: torch.device | str) -> str:
    """One line for a report, e.g. 'cuda:0 (NVIDIA H200)' or 'cpu (AMD EPYC ..., 2 cores, ...)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def describe(devices: Sequence[torch.device | str]) -> dict[str, Any]:
    """What a measurement ran on: devices, GPU names, the CPU and its vector ISA, cores, threads."""
    gpus = sorted({torch.device(d) for d in devices if torch.device(d).type == "cuda"}, key=str)
    return {
        "devices": [str(d) for d in devices],
        "gpus": {str(d): torch.cuda.get_device_name(d) for d in gpus},
        "cpu": cpu_name(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
    }


def versions() -> dict[str, str | None]:
    """Python, torch, torchvision, CUDA and cuDNN versions."""
    import torchvision

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
    }
