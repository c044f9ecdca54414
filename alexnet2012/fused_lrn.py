"""ReLU, LRN within each column and max-pooling (P §3.3-3.5, after conv1 and conv2) as one
custom op, ``alexnet2012::relu_lrn_pool``, whose Triton kernels read the convolution's output
and write only the pooled output and each window's argmax: no intermediate tensor in memory.

Nothing of the LRN is saved for backward: the backward op, ``relu_lrn_pool_backward``,
recomputes the denominator from ``z`` and gathers the pooled gradient through the argmax (a
uint8 position inside the window), so autograd keeps ``z`` and a byte per pooled unit. The
kernels run wherever Triton can: on CUDA, and on the CPU in Triton's interpreter when
``TRITON_INTERPRET=1`` is set before the op's first call (see :func:`available`). Triton is
imported, and the kernels decorated, at that first call, so that importing this module stays
cheap and works without Triton; the fake implementations let ``torch.compile`` trace the op and
the ``meta`` device run it without Triton.
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

MAX_POOL_KERNEL = 15
"""The largest pooling window whose positions (row-major, 0 .. kernel^2 - 1) fit the uint8
argmax."""

_FORWARD_TILE, _FORWARD_WARPS = 2048, 4
"""Elements of the forward kernel's (pixel, window position, channel) tile, and warps, on a GPU:
small enough that the SM90 code keeps its tiles in registers (ptxas reports no spills)."""
_BACKWARD_TILE, _BACKWARD_WARPS = 1024, 8
"""The same for the backward kernel's (pixel, channel) tile, which holds more terms per element."""
_INTERPRETER_TILE = 1 << 16
"""Tile elements in Triton's interpreter, which runs programs one after another and spends its
time per operation rather than per element: fewer, larger programs."""

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


def relu_lrn_pool_reference(
    z: Tensor,
    groups: int,
    pool_kernel: int = paper.POOL_KERNEL,
    pool_stride: int = paper.POOL_STRIDE,
    size: int = paper.LRN_SIZE,
    alpha: float = paper.LRN_ALPHA,
    beta: float = paper.LRN_BETA,
    k: float = paper.LRN_K,
) -> Tensor:
    """What the op computes, in public PyTorch: ``F.local_response_norm`` of ``relu(z)`` within
    each of ``groups`` consecutive channel blocks (columns), then ``F.max_pool2d`` without
    padding. Computes in ``z``'s dtype."""
    n, c, h, w = z.shape
    y = F.relu(z).reshape(n * groups, c // groups, h, w)
    b = F.local_response_norm(y, size, alpha, beta, k).reshape(n, c, h, w)
    return F.max_pool2d(b, pool_kernel, pool_stride)


# ---------------------------------------------------------------------------------------------
# Availability and Triton loading
# ---------------------------------------------------------------------------------------------


def available(device: torch.device | str) -> bool:
    """Whether the fused op can run on tensors on ``device`` (see
    :func:`triton_support.available`)."""
    return triton_support.available(device, _interpreted)


def _load_triton() -> None:
    """Import Triton and decorate the kernels with ``triton.jit`` (for the interpreter when
    ``TRITON_INTERPRET`` is on), once."""
    global tl, _interpreted, _column_index, _shifted, _window_sum, _relu_terms, _pooled_grad
    global _rounded_for, _forward_kernel, _backward_kernel
    with _load_lock:
        if _interpreted is not None:
            return
        import triton
        import triton.language

        if not hasattr(triton.language, "gather"):
            raise RuntimeError(
                f"alexnet2012::relu_lrn_pool needs Triton 3.2 or later "
                f"(tl.gather), found {triton.__version__}"
            )
        tl = triton.language
        _column_index, _shifted, _window_sum, _relu_terms, _pooled_grad = (
            triton.jit(fn)
            for fn in (_column_index, _shifted, _window_sum, _relu_terms, _pooled_grad)
        )
        _rounded_for = triton_support.jit_rounded_for()
        _forward_kernel = triton.jit(_forward_kernel)
        _backward_kernel = triton.jit(_backward_kernel)
        _interpreted = type(_forward_kernel).__name__ == "InterpretedFunction"


# ---------------------------------------------------------------------------------------------
# Triton kernels (decorated by _load_triton). A program handles BLOCK_P pixels and all C
# channels (BLOCK_C >= C, the last axis of its tiles). ``ch`` is the channel index, ``local``
# the index inside its column (:func:`_column_index`); a channel's LRN window is clipped to its
# column through ``local``. The window sums shift the tile along its channel axis with
# tl.gather, so that each value is loaded once per use.
# ---------------------------------------------------------------------------------------------


def _column_index(ch, c, cg, SIZE: tl.constexpr):
    """ch % cg (cg = C/groups) for the C channels; for the tile's padding channels past C a
    negative number that keeps any shift within the LRN window outside every column."""
    return tl.where(ch < c, ch % cg, -(ch + SIZE))


def _shifted(x, ch, local, cg, shift: tl.constexpr, AXIS: tl.constexpr):
    """x[..., c + shift] at each channel c; 0 where c + shift is outside c's column."""
    inside = (local + shift >= 0) & (local + shift < cg)
    index = tl.broadcast_to(tl.where(inside, ch + shift, ch), x.shape)
    return tl.where(inside, tl.gather(x, index, axis=AXIS), 0.0)


def _window_sum(x, ch, local, cg, FIRST: tl.constexpr, SIZE: tl.constexpr, AXIS: tl.constexpr):
    """sum_{i < SIZE} x[..., c + FIRST + i] within c's column: the LRN window
    [c - SIZE//2, c + (SIZE-1)//2] with FIRST = -(SIZE//2), or the channels whose windows
    contain c with FIRST = -((SIZE-1)//2)."""
    total = tl.zeros_like(x)
    for i in tl.static_range(SIZE):
        if FIRST + i == 0:
            total += x
        else:
            total += _shifted(x, ch, local, cg, FIRST + i, AXIS)
    return total


def _relu_terms(
    z_ptr, offset, mask, ch, local, cg, k, alpha_over_size, SIZE: tl.constexpr, AXIS: tl.constexpr
):
    """(y, s): y = relu(z) in float32 (NaN stays NaN, as in F.relu) and the LRN's
    s = k + alpha/size * sum_window(y^2); the output is y * s^-beta."""
    z = tl.load(z_ptr + offset, mask=mask, other=0.0).to(tl.float32)
    y = tl.where(z < 0.0, 0.0, z)
    s = k + alpha_over_size * _window_sum(y * y, ch, local, cg, -(SIZE // 2), SIZE, AXIS)
    return y, s


def _forward_kernel(
    z_ptr,
    out_ptr,
    arg_ptr,
    n_out,
    out_h,
    out_w,
    c,
    cg,
    szn,
    szc,
    szh,
    szw,
    son,
    soc,
    soh,
    sow,
    san,
    sac,
    sah,
    saw,
    k,
    alpha_over_size,
    beta,
    KERNEL: tl.constexpr,
    STRIDE: tl.constexpr,
    SIZE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Pooled LRN output and argmax for BLOCK_P pooled pixels, as a (pixel, window position,
    channel) tile; BLOCK_W >= KERNEL^2 positions in row-major order. The argmax is the first
    maximum in that order, as max_pool2d picks it (a NaN wins and is the output)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (p // (out_h * out_w)).to(tl.int64)
    oh, ow = (p // out_w) % out_h, p % out_w
    q = tl.arange(0, BLOCK_W)[None, :, None]
    ch = tl.arange(0, BLOCK_C)[None, None, :]
    mask = (p < n_out)[:, None, None] & (ch < c)
    corner = (n * szn + (oh * STRIDE) * szh + (ow * STRIDE) * szw)[:, None, None]
    offset = corner + ((q // KERNEL) * szh + (q % KERNEL) * szw) + ch * szc
    y, s = _relu_terms(
        z_ptr,
        offset,
        mask & (q < KERNEL * KERNEL),
        ch,
        _column_index(ch, c, cg, SIZE),
        cg,
        k,
        alpha_over_size,
        SIZE,
        2,
    )
    b = y * tl.exp2(-beta * tl.log2(s))
    is_nan = b != b
    # b >= 0: padding positions (-1) never win; a NaN (+inf here) wins over any number
    key = tl.where(q < KERNEL * KERNEL, tl.where(is_nan, float("inf"), b), -1.0)
    best = tl.max(key, axis=1)
    arg = tl.min(tl.where(key == best[:, None, :], q, BLOCK_W), axis=1)
    best = tl.where(tl.max(is_nan.to(tl.int32), axis=1) > 0, float("nan"), best)
    ch2 = tl.arange(0, BLOCK_C)[None, :]
    mask = (p < n_out)[:, None] & (ch2 < c)
    out_offset = (n * son + oh * soh + ow * sow)[:, None] + ch2 * soc
    arg_offset = (n * san + oh * sah + ow * saw)[:, None] + ch2 * sac
    tl.store(out_ptr + out_offset, _rounded_for(out_ptr, best), mask=mask)
    tl.store(arg_ptr + arg_offset, arg.to(tl.uint8), mask=mask)


def _pooled_grad(
    grad_ptr,
    arg_ptr,
    n,
    h,
    w,
    ch,
    mask,
    out_h,
    out_w,
    sgn,
    sgc,
    sgh,
    sgw,
    san,
    sac,
    sah,
    saw,
    KERNEL: tl.constexpr,
    STRIDE: tl.constexpr,
):
    """The gradient w.r.t. the LRN output at pixels (n, h, w): the sum of ``grad`` over the
    pooling windows that contain the pixel and chose it as their argmax (a gather over at most
    ceil(KERNEL/STRIDE)^2 windows; no atomics)."""
    WINDOWS: tl.constexpr = (KERNEL + STRIDE - 1) // STRIDE
    total = tl.zeros(mask.shape, tl.float32)
    for i in tl.static_range(WINDOWS):
        oh = h // STRIDE - i
        for j in tl.static_range(WINDOWS):
            ow = w // STRIDE - j
            inside = (
                (oh >= 0)
                & (oh < out_h)
                & (h - oh * STRIDE < KERNEL)
                & (ow >= 0)
                & (ow < out_w)
                & (w - ow * STRIDE < KERNEL)
            )
            window_mask = mask & inside[:, None]
            arg = tl.load(
                arg_ptr + (n * san + oh * sah + ow * saw)[:, None] + ch * sac,
                mask=window_mask,
                other=0,
            ).to(tl.int32)
            grad = tl.load(
                grad_ptr + (n * sgn + oh * sgh + ow * sgw)[:, None] + ch * sgc,
                mask=window_mask,
                other=0.0,
            ).to(tl.float32)
            position = ((h - oh * STRIDE) * KERNEL + (w - ow * STRIDE))[:, None]
            total += tl.where(window_mask & (arg == position), grad, 0.0)
    return total


def _backward_kernel(
    grad_ptr,
    z_ptr,
    arg_ptr,
    gz_ptr,
    n_in,
    in_h,
    in_w,
    out_h,
    out_w,
    c,
    cg,
    szn,
    szc,
    szh,
    szw,
    sgn,
    sgc,
    sgh,
    sgw,
    san,
    sac,
    sah,
    saw,
    sdn,
    sdc,
    sdh,
    sdw,
    k,
    alpha_over_size,
    beta,
    KERNEL: tl.constexpr,
    STRIDE: tl.constexpr,
    SIZE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """grad_z for BLOCK_P input pixels. With g the gradient w.r.t. the LRN output
    (:func:`_pooled_grad`) and s the recomputed denominator:
    dy_c = g_c s_c^-beta - 2 alpha beta/size * y_c * sum_{j: c in window(j)} g_j y_j s_j^(-beta-1),
    then ReLU's mask (y > 0)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (p // (in_h * in_w)).to(tl.int64)
    h, w = (p // in_w) % in_h, p % in_w
    ch = tl.arange(0, BLOCK_C)[None, :]
    local = _column_index(ch, c, cg, SIZE)
    mask = (p < n_in)[:, None] & (ch < c)
    y, s = _relu_terms(
        z_ptr,
        (n * szn + h * szh + w * szw)[:, None] + ch * szc,
        mask,
        ch,
        local,
        cg,
        k,
        alpha_over_size,
        SIZE,
        1,
    )
    g = _pooled_grad(
        grad_ptr,
        arg_ptr,
        n,
        h,
        w,
        ch,
        mask,
        out_h,
        out_w,
        sgn,
        sgc,
        sgh,
        sgw,
        san,
        sac,
        sah,
        saw,
        KERNEL,
        STRIDE,
    )
    direct = g * tl.exp2(-beta * tl.log2(s))
    through_s = _window_sum(direct * y / s, ch, local, cg, -((SIZE - 1) // 2), SIZE, 1)
    grad_z = tl.where(y > 0.0, direct - 2.0 * alpha_over_size * beta * y * through_s, 0.0)
    offset = (n * sdn + h * sdh + w * sdw)[:, None] + ch * sdc
    tl.store(gz_ptr + offset, _rounded_for(gz_ptr, grad_z), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launch helpers
# ---------------------------------------------------------------------------------------------


def _pooled_shape(
    z: Tensor, groups: int, pool_kernel: int, pool_stride: int, size: int
) -> tuple[int, int, int, int]:
    """The output's shape, after checking the arguments (shared by the real and fake impls)."""
    if z.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(z.shape)}")
    if z.dtype not in DTYPES:
        raise TypeError(f"relu_lrn_pool takes {DTYPES}, got {z.dtype}")
    n, c, h, w = z.shape
    if groups < 1 or c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    if not 1 <= pool_kernel <= MAX_POOL_KERNEL or pool_stride < 1 or size < 1:
        raise ValueError(
            f"unsupported pool_kernel={pool_kernel}, pool_stride={pool_stride} or size={size}"
        )
    if h < pool_kernel or w < pool_kernel:
        raise ValueError(f"{h}x{w} maps are smaller than the {pool_kernel}x{pool_kernel} window")
    return n, c, (h - pool_kernel) // pool_stride + 1, (w - pool_kernel) // pool_stride + 1


def _memory_format(z: Tensor) -> torch.memory_format:
    """channels_last when ``z`` is (and is not also plain contiguous), else contiguous."""
    if z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _empty_outputs(z: Tensor, shape: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """The pooled output (z's dtype) and the uint8 argmax, in z's memory format."""
    fmt = _memory_format(z)
    out = torch.empty(shape, dtype=z.dtype, device=z.device, memory_format=fmt)
    return out, torch.empty(shape, dtype=torch.uint8, device=z.device, memory_format=fmt)


def _pixels_per_program(pixels: int, elements_per_pixel: int, tile: int) -> int:
    """BLOCK_P: enough pixels for about ``tile`` elements (in the interpreter, many more), a
    power of 2 (called after _load_triton)."""
    tile = _INTERPRETER_TILE if _interpreted else tile
    return max(1, min(tile // elements_per_pixel, _power_of_2(pixels)))


def _power_of_2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def _kernels_on(device: torch.device) -> contextlib.AbstractContextManager:
    """Load the kernels, or say why the op cannot run on ``device``; returns the context to
    launch them in (``device`` as the current CUDA device, as Triton launches on that one)."""
    if not available(device):
        raise RuntimeError(
            f"alexnet2012::relu_lrn_pool cannot run on {device}: it needs Triton, "
            "and for CPU tensors TRITON_INTERPRET=1 (see fused_lrn.available)"
        )
    _load_triton()
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# The custom ops
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("alexnet2012::relu_lrn_pool", mutates_args=())
def _relu_lrn_pool_op(
    z: Tensor,
    groups: int,
    pool_kernel: int,
    pool_stride: int,
    size: int,
    alpha: float,
    beta: float,
    k: float,
) -> tuple[Tensor, Tensor]:
    """(pooled output, uint8 argmax position inside each window) of relu -> LRN -> max-pool."""
    shape = _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    out, argmax = _empty_outputs(z, shape)
    if out.numel() == 0:
        return out, argmax
    with _kernels_on(z.device):
        n, c, out_h, out_w = shape
        n_out, block_w, block_c = n * out_h * out_w, _power_of_2(pool_kernel**2), _power_of_2(c)
        block_p = _pixels_per_program(n_out, block_w * block_c, _FORWARD_TILE)
        _forward_kernel[(-(-n_out // block_p),)](
            z,
            out,
            argmax,
            n_out,
            out_h,
            out_w,
            c,
            c // groups,
            *z.stride(),
            *out.stride(),
            *argmax.stride(),
            k,
            alpha / size,
            beta,
            KERNEL=pool_kernel,
            STRIDE=pool_stride,
            SIZE=size,
            BLOCK_P=block_p,
            BLOCK_W=block_w,
            BLOCK_C=block_c,
            num_warps=_FORWARD_WARPS,
        )
    return out, argmax


@_relu_lrn_pool_op.register_fake
def _relu_lrn_pool_fake(
    z: Tensor,
    groups: int,
    pool_kernel: int,
    pool_stride: int,
    size: int,
    alpha: float,
    beta: float,
    k: float,
) -> tuple[Tensor, Tensor]:
    """Shapes, dtypes and memory format only (torch.compile's tracing, the meta device)."""
    return _empty_outputs(z, _pooled_shape(z, groups, pool_kernel, pool_stride, size))


@torch.library.custom_op("alexnet2012::relu_lrn_pool_backward", mutates_args=())
def _relu_lrn_pool_backward_op(
    grad: Tensor,
    z: Tensor,
    argmax: Tensor,
    groups: int,
    pool_kernel: int,
    pool_stride: int,
    size: int,
    alpha: float,
    beta: float,
    k: float,
) -> Tensor:
    """grad_z of relu_lrn_pool from the pooled gradient, z and the forward's argmax."""
    shape = _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    grad_z = torch.empty_like(z)
    if grad_z.numel() == 0:
        return grad_z
    n, c, h, w = z.shape
    with _kernels_on(z.device):
        n_in, block_c = n * h * w, _power_of_2(c)
        block_p = _pixels_per_program(n_in, block_c, _BACKWARD_TILE)
        _backward_kernel[(-(-n_in // block_p),)](
            grad,
            z,
            argmax,
            grad_z,
            n_in,
            h,
            w,
            shape[2],
            shape[3],
            c,
            c // groups,
            *z.stride(),
            *grad.stride(),
            *argmax.stride(),
            *grad_z.stride(),
            k,
            alpha / size,
            beta,
            KERNEL=pool_kernel,
            STRIDE=pool_stride,
            SIZE=size,
            BLOCK_P=block_p,
            BLOCK_C=block_c,
            num_warps=_BACKWARD_WARPS,
        )
    return grad_z


@_relu_lrn_pool_backward_op.register_fake
def _relu_lrn_pool_backward_fake(
    grad: Tensor,
    z: Tensor,
    argmax: Tensor,
    groups: int,
    pool_kernel: int,
    pool_stride: int,
    size: int,
    alpha: float,
    beta: float,
    k: float,
) -> Tensor:
    _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    return torch.empty_like(z)


def _setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    """Save z and the argmax (nothing of the LRN: the backward op recomputes it)."""
    z, *hyper = inputs
    ctx.save_for_backward(z, output[1])
    ctx.hyper = hyper
    ctx.set_materialize_grads(False)  # no zero tensor for the argmax output's missing gradient


def _backward(ctx: Any, grad: Tensor, grad_argmax: Tensor | None) -> tuple:
    """grad_z through the backward op; the argmax output has no gradient."""
    z, argmax = ctx.saved_tensors
    if grad is None:
        return (None,) * (1 + len(ctx.hyper))
    grad_z = torch.ops.alexnet2012.relu_lrn_pool_backward(grad, z, argmax, *ctx.hyper)
    return (grad_z,) + (None,) * len(ctx.hyper)


_relu_lrn_pool_op.register_autograd(_backward, setup_context=_setup_context)


def relu_lrn_pool(
    z: Tensor,
    groups: int = 1,
    pool_kernel: int = paper.POOL_KERNEL,
    pool_stride: int = paper.POOL_STRIDE,
    size: int = paper.LRN_SIZE,
    alpha: float = paper.LRN_ALPHA,
    beta: float = paper.LRN_BETA,
    k: float = paper.LRN_K,
) -> Tensor:
    """:func:`relu_lrn_pool_reference` as the fused custom op ``alexnet2012::relu_lrn_pool``
    (differentiable; one op under ``torch.compile``). ``z`` is float32, bfloat16 or float16,
    of any strides (channels-last is the fast layout); the result has ``z``'s dtype and memory
    format. Runs where :func:`available` says so."""
    return torch.ops.alexnet2012.relu_lrn_pool(
        z, groups, pool_kernel, pool_stride, size, float(alpha), float(beta), float(k)
    )[0]
