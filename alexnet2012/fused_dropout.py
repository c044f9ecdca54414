"""ReLU followed by the paper's dropout (P §4.2, after fc6 and fc7) as one custom op,
``alexnet2012::relu_dropout``, whose Triton kernels read ``z`` once and write ``y`` once, forward
and backward, where eager PyTorch launches five kernels (relu, bernoulli_, mul; mul,
threshold_backward).

Training: ``y = relu(z) * m``, ``m`` a Bernoulli(1 - p) mask; kept units are NOT rescaled (the
paper's dropout, not PyTorch's inverted one). Test time: ``y = (1 - p) * relu(z)``. The mask is
Triton's Philox: unit ``i`` of ``z`` in row-major order is kept iff ``tl.rand(seed, i) >= p``
(``tl.rand`` is uniform on [0, 1) in float32 steps, so the keep rate is 1 - p to within 2^-24;
p = 0 keeps all, p = 1 none). It depends on the seed and ``i`` only: not on ``z``'s values, the
block size, or whether the kernel is compiled or interpreted. The seed is drawn inside the op,
one per training call, from torch's CPU default generator, so ``torch.manual_seed`` and a
checkpoint's ``torch.get_rng_state()`` reproduce the masks; they differ from the masks of the
reference (``bernoulli_`` on the tensor's own device's generator), which is fine.

Autograd saves one tensor and no mask: in training the output ``y``, since ``dy/dz = [y > 0]``
(z > 0 and kept <=> y > 0); at test time ``z``. The kernels run wherever Triton can: on CUDA,
and on the CPU through Triton's interpreter when ``TRITON_INTERPRET=1`` is set before the first
call (see :func:`available`). Triton is imported, and the kernels decorated, on that first call,
so importing this module stays cheap and works without Triton; the fake implementations let
``torch.compile`` trace the op and the ``meta`` device run it without Triton.
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
"""Input dtypes the op takes; it computes in float32 and returns the input's dtype."""

SEED_BOUND = 2**31 - 1
"""Seeds are drawn uniformly from [0, SEED_BOUND) (a positive int32 kernel argument)."""

_BLOCK, _WARPS = 1024, 4
"""Elements per program, and warps, on a GPU (an elementwise op: 8 elements per thread)."""
_INTERPRETER_BLOCK = 1 << 16
"""Elements per program in Triton's interpreter, which spends its time per operation rather than
per element: fewer, larger programs. The masks do not depend on the block size."""

tl: Any = None
"""``triton.language``, bound by :func:`_load_triton` (the kernels below read it when they are
compiled or interpreted, never at import)."""
_rounded_for: Any = None
"""``triton_support``'s store-side rounding helper, bound by :func:`_load_triton`."""
_interpreted: bool | None = None
"""Whether the kernels were decorated for Triton's interpreter; None until they are."""
_load_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# The reference: plain PyTorch
# ---------------------------------------------------------------------------------------------


def relu_dropout_reference(z: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """What the op computes, in public PyTorch (its mask from ``bernoulli_`` on ``z``'s device's
    generator): ``relu(z) * m`` with ``m ~ Bernoulli(1 - p)`` when training, else
    ``(1 - p) * relu(z)``."""
    x = F.relu(z)
    return x * torch.empty_like(x).bernoulli_(1 - p) if training else x * (1 - p)


# ---------------------------------------------------------------------------------------------
# Availability and Triton loading
# ---------------------------------------------------------------------------------------------


def available(device: torch.device | str) -> bool:
    """Whether the fused op can run on tensors on ``device`` (see
    :func:`triton_support.available`)."""
    return triton_support.available(device, _interpreted)


def _load_triton() -> None:
    """Import Triton and decorate the kernels with ``triton.jit`` (for the interpreter when
    ``TRITON_INTERPRET`` is on), once. The seed is not specialized on (a seed of 1 or a multiple
    of 16 would otherwise compile a kernel of its own)."""
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


# ---------------------------------------------------------------------------------------------
# Triton kernels (decorated by _load_triton): a program handles BLOCK consecutive elements of
# the contiguous tensors; ``i`` is the element's index, int64 so that any size works (Philox
# takes its low and high 32 bits as two counter words, so the mask of i < 2^32 is the same as
# with an int32 index).
# ---------------------------------------------------------------------------------------------


def _forward_kernel(z_ptr, y_ptr, n, seed, p, scale, TRAINING: tl.constexpr, BLOCK: tl.constexpr):
    """y = relu(z) * [tl.rand(seed, i) >= p] when TRAINING, else relu(z) * scale. The mask is
    multiplied in, as in the reference, so a dropped inf or NaN gives NaN there too."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    z = tl.load(z_ptr + i, mask=inside, other=0.0).to(tl.float32)
    x = tl.where(z < 0.0, 0.0, z)  # relu; NaN stays NaN, as in F.relu
    if TRAINING:
        y = x * (tl.rand(seed, i) >= p).to(tl.float32)
    else:
        y = x * scale
    tl.store(y_ptr + i, _rounded_for(y_ptr, y), mask=inside)


def _backward_kernel(grad_ptr, x_ptr, gz_ptr, n, scale, BLOCK: tl.constexpr):
    """grad_z = grad * scale where x > 0, else 0 (x = the forward's y in training, scale 1;
    x = z at test time, scale 1 - p)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    grad = tl.load(grad_ptr + i, mask=inside, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + i, mask=inside, other=0.0).to(tl.float32)
    grad_z = tl.where(x > 0.0, grad * scale, 0.0)
    tl.store(gz_ptr + i, _rounded_for(gz_ptr, grad_z), mask=inside)


# ---------------------------------------------------------------------------------------------
# Launch helpers
# ---------------------------------------------------------------------------------------------


def _check(z: Tensor, p: float) -> None:
    """Refuse what the op does not take (shared by the real and fake impls)."""
    if z.dtype not in DTYPES:
        raise TypeError(f"relu_dropout takes {DTYPES}, got {z.dtype}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")


def _draw_seed() -> int:
    """A Philox seed from torch's CPU default generator: a host op (no device kernel, no sync)
    that ``torch.manual_seed`` and ``torch.set_rng_state`` reproduce."""
    return int(torch.randint(0, SEED_BOUND, (), dtype=torch.int64))


def _kernels_on(device: torch.device) -> tuple[contextlib.AbstractContextManager, int]:
    """Load the kernels, or say why the op cannot run on ``device``; returns the context to
    launch them in (``device`` as the current CUDA device, as Triton launches on that one) and
    the block size."""
    if not available(device):
        raise RuntimeError(
            f"alexnet2012::relu_dropout cannot run on {device}: it needs Triton, "
            "and for CPU tensors TRITON_INTERPRET=1 (see fused_dropout.available)"
        )
    _load_triton()
    block = _INTERPRETER_BLOCK if _interpreted else _BLOCK
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext(), block


# ---------------------------------------------------------------------------------------------
# The custom ops
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("alexnet2012::relu_dropout", mutates_args=())
def _relu_dropout_op(z: Tensor, p: float, training: bool) -> Tensor:
    """relu(z) * Bernoulli(1 - p) mask (training, one seed drawn from the CPU generator per
    call), or (1 - p) * relu(z); contiguous, in z's dtype."""
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
    """grad_z = grad * scale where y > 0, else 0, in y's dtype: relu_dropout's backward from its
    output y in training (scale 1), or from its input z at test time (scale 1 - p)."""
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
    """Save one tensor and no mask: the output y in training (dy/dz = [y > 0]), z at test time
    (dy/dz = (1 - p) [z > 0])."""
    z, p, training = inputs
    ctx.save_for_backward(output if training else z)
    ctx.scale = 1.0 if training else 1.0 - p


def _backward(ctx: Any, grad: Tensor) -> tuple:
    (saved,) = ctx.saved_tensors
    return torch.ops.alexnet2012.relu_dropout_backward(grad, saved, ctx.scale), None, None


_relu_dropout_op.register_autograd(_backward, setup_context=_setup_context)


def relu_dropout(z: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """:func:`relu_dropout_reference` as the fused custom op ``alexnet2012::relu_dropout``
    (differentiable once; one op under ``torch.compile``). ``z`` is float32, bfloat16 or
    float16, any shape (non-contiguous input is copied first); the result is contiguous, in
    ``z``'s dtype. Each training call draws one number from torch's CPU default generator.
    Runs where :func:`available` says so."""
    return torch.ops.alexnet2012.relu_dropout(z, float(p), bool(training))
