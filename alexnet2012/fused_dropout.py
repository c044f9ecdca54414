"""ReLU then the paper's dropout (P §4.2, after fc6, fc7) as one custom op, one Triton kernel each
way (eager PyTorch launches five). Kept units are not rescaled; test time gives (1 - p) relu(z).
Unit ``i`` is kept iff Philox ``tl.rand(seed, i) >= p``, one seed per call from torch's CPU
generator, so ``torch.manual_seed`` reproduces the masks. Autograd saves ``y`` (training) or ``z``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import paper, triton_support

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SEED_BOUND = 2**31 - 1  # seeds are uniform in [0, SEED_BOUND): a positive int32 argument
_BLOCK, _WARPS = 1024, 4  # elements per program and warps on a GPU (8 elements per thread)
_INTERPRETER_BLOCK = 1 << 16  # the interpreter pays per operation: fewer, larger programs

tl: Any = None  # bound by _load_triton, like _rounded_for (the kernels read them when built)
_rounded_for: Any = None
_interpreted: bool | None = None
_load_lock = threading.Lock()


def relu_dropout_reference(z: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """What the op computes, in public PyTorch (the mask from ``bernoulli_``)."""
    x = F.relu(z)
    return x * torch.empty_like(x).bernoulli_(1 - p) if training else x * (1 - p)


def available(device: torch.device | str) -> bool:
    """Whether the op runs on ``device`` (see :func:`triton_support.available`)."""
    return triton_support.available(device, _interpreted)


def load(device: torch.device | str) -> None:
    """Build the kernels now if they run on ``device``, so that :func:`available`'s answer is
    settled before ``torch.compile`` traces it (its guard would change after the first call)."""
    if torch.device(device).type != "meta" and available(device):
        _load_triton()


def _load_triton() -> None:
    """Not specialized on the seed: 1 or a multiple of 16 would compile a kernel of its own."""
    global tl, _interpreted, _rounded_for, _forward_kernel, _backward_kernel
    with _load_lock:
        if _interpreted is not None:
            return
        import triton
        import triton.language

        tl = triton.language
        _rounded_for = triton_support.jit_rounded_for()
        _forward_kernel = triton.jit(_forward_kernel, do_not_specialize=["seed"])
        _backward_kernel = triton.jit(_backward_kernel)
        _interpreted = type(_forward_kernel).__name__ == "InterpretedFunction"


# The int64 index works for any size; below 2^32 its masks are the int32 index's (Philox counters).


def _forward_kernel(z_ptr, y_ptr, n, seed, p, scale, TRAINING: tl.constexpr, BLOCK: tl.constexpr):
    """The mask is multiplied in, as in the reference: a dropped inf or NaN gives NaN."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    z = tl.load(z_ptr + i, mask=inside, other=0.0).to(tl.float32)
    x = tl.where(z < 0.0, 0.0, z)
    if TRAINING:
        y = x * (tl.rand(seed, i) >= p).to(tl.float32)
    else:
        y = x * scale
    tl.store(y_ptr + i, _rounded_for(y_ptr, y), mask=inside)


def _backward_kernel(grad_ptr, x_ptr, gz_ptr, n, scale, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    grad = tl.load(grad_ptr + i, mask=inside, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + i, mask=inside, other=0.0).to(tl.float32)
    grad_z = tl.where(x > 0.0, grad * scale, 0.0)
    tl.store(gz_ptr + i, _rounded_for(gz_ptr, grad_z), mask=inside)


def _check(z: Tensor, p: float) -> None:
    if z.dtype not in DTYPES:
        raise TypeError(f"relu_dropout takes {DTYPES}, got {z.dtype}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")


def _draw_seed() -> int:
    # the CPU generator: no device kernel, no sync
    return int(torch.randint(0, SEED_BOUND, (), dtype=torch.int64))


def _kernels_on(device: torch.device) -> tuple[contextlib.AbstractContextManager, int]:
    if not available(device):
        raise RuntimeError(
            f"alexnet2012::relu_dropout cannot run on {device}: it needs Triton, "
            "and for CPU tensors TRITON_INTERPRET=1 (see fused_dropout.available)"
        )
    _load_triton()
    block = _INTERPRETER_BLOCK if _interpreted else _BLOCK
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext(), block


@torch.library.custom_op("alexnet2012::relu_dropout", mutates_args=())
def _relu_dropout_op(z: Tensor, p: float, training: bool) -> Tensor:
    _check(z, p)
    seed = _draw_seed() if training else 0
    z = z.contiguous()
    y = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    n = y.numel()
    if n:
        context, block = _kernels_on(z.device)
        with context:
            _forward_kernel[(-(-n // block),)](
                z, y, n, seed, float(p), 1.0 - p, TRAINING=training, BLOCK=block, num_warps=_WARPS
            )
    return y


@_relu_dropout_op.register_fake
def _relu_dropout_fake(z: Tensor, p: float, training: bool) -> Tensor:
    _check(z, p)
    return torch.empty(z.shape, dtype=z.dtype, device=z.device)


@torch.library.custom_op("alexnet2012::relu_dropout_backward", mutates_args=())
def _relu_dropout_backward_op(grad: Tensor, y: Tensor, scale: float = 1.0) -> Tensor:
    """grad * scale where y > 0: y the output (training, scale 1) or z (test, scale 1 - p)."""
    _check_backward(grad, y)
    grad, y = grad.contiguous(), y.contiguous()
    grad_z = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    n = grad_z.numel()
    if n:
        context, block = _kernels_on(y.device)
        with context:
            _backward_kernel[(-(-n // block),)](
                grad, y, grad_z, n, float(scale), BLOCK=block, num_warps=_WARPS
            )
    return grad_z


@_relu_dropout_backward_op.register_fake
def _relu_dropout_backward_fake(grad: Tensor, y: Tensor, scale: float = 1.0) -> Tensor:
    _check_backward(grad, y)
    return torch.empty(y.shape, dtype=y.dtype, device=y.device)


def _check_backward(grad: Tensor, y: Tensor) -> None:
    if grad.shape != y.shape:
        raise ValueError(
            f"gradient of shape {tuple(grad.shape)} for an output of shape {tuple(y.shape)}"
        )
    if grad.dtype not in DTYPES or y.dtype not in DTYPES:
        raise TypeError(f"relu_dropout_backward takes {DTYPES}, got {grad.dtype}, {y.dtype}")


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    z, p, training = inputs
    ctx.save_for_backward(output if training else z)
    ctx.scale = 1.0 if training else 1.0 - p


def _backward(ctx: Any, grad: Tensor) -> tuple:
    (saved,) = ctx.saved_tensors
    return torch.ops.alexnet2012.relu_dropout_backward(grad, saved, ctx.scale), None, None


_relu_dropout_op.register_autograd(_backward, setup_context=_setup_context)


def relu_dropout(z: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """The reference as the custom op (differentiable once); contiguous, in ``z``'s dtype."""
    return torch.ops.alexnet2012.relu_dropout(z, float(p), bool(training))
