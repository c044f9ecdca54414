"""Peak memory of a block of work over its devices, and what a model holds between steps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

CPU_METHOD = (
    "process RSS: /proc/self/status VmHWM during the step minus VmRSS before "
    "it, after a peak reset via /proc/self/clear_refs; a lower bound: pages the "
    "C allocator kept from earlier steps are in the baseline"
)
CUDA_METHOD = (
    "torch.cuda.max_memory_allocated during the step minus "
    "torch.cuda.memory_allocated before it, after reset_peak_memory_stats"
)
PEAK_MEMORY = (
    "weights (+ PaperSGD velocity when training) + the peak growth of one step started "
    "with no gradients held, measured after the timed rounds"
)


class MemoryMeter:
    """Peak memory of a block above what was in use at its start: CUDA allocator statistics per
    GPU; on the CPU the resident set (Linux ``/proc``), a lower bound (freed pages are reused)."""

    def __init__(self, devices: Sequence[torch.device]):
        self.gpus = sorted({d for d in devices if d.type == "cuda"}, key=str)
        self.cpu = any(d.type == "cpu" for d in devices) and _rss_measurable()
        self.baseline = 0

    def start(self) -> None:
        self.baseline = sum(torch.cuda.memory_allocated(d) for d in self.gpus)
        for d in self.gpus:
            torch.cuda.reset_peak_memory_stats(d)
        if self.cpu:
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline += _proc_status_bytes("VmRSS")

    def stop(self) -> int | None:
        """Peak since :meth:`start` minus the baseline; ``None`` where nothing is measured."""
        if not (self.gpus or self.cpu):
            return None
        peak = sum(torch.cuda.max_memory_allocated(d) for d in self.gpus)
        if self.cpu:
            peak += _proc_status_bytes("VmHWM")
        return max(0, peak - self.baseline)


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_measurable() -> bool:
    try:
        _proc_status_bytes("VmHWM")
        return os.access("/proc/self/clear_refs", os.W_OK)
    except (OSError, KeyError):
        return False


def persistent_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, train: bool) -> int:
    """Bytes held between steps: the weights, plus the optimizer's state when training."""
    tensors = list(model.parameters())
    if train:
        tensors += [
            t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)
        ]
    return sum(t.numel() * t.element_size() for t in tensors)
