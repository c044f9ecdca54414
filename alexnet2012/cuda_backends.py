"""The CUDA library settings of every GPU run: cuDNN autotuning and, unless asked not to, TF32.

The training run, ``scripts/evaluate.py`` and the benchmark call :func:`configure_backends`, so
the benchmark's rate and projected training time are those of the run itself. Autotuning picks
cuDNN's fastest algorithm for each convolution's shapes (the same function, other rounding).
TF32 rounds the inputs of the convolutions and the fc products to a 10-bit mantissa (PyTorch
already does so in its convolutions by default); the GPUs of 2012 computed in fp32, which
``tf32=False`` restores, and the report lists TF32 among the deviations from the paper.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch


def configure_backends(devices: Iterable[torch.device], tf32: bool = True) -> dict[str, Any]:
    """Where any of ``devices`` is a GPU: cuDNN autotuning on, TF32 in matmul and cuDNN as
    ``tf32`` says (process-wide). Returns the settings for config.json and the reports."""
    if not any(torch.device(d).type == "cuda" for d in devices):
        return {"cuda": False}
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"cuda": True, "cudnn_benchmark": True, "tf32_matmul": tf32, "tf32_cudnn": tf32}
