"""ReLU -> LRN within each column -> max-pool (P §3.3-3.5, after conv1 and conv2) as one custom
op, ``alexnet2012::relu_lrn_pool``: Triton kernels write only the pooled output and each window's
uint8 argmax; the backward recomputes the LRN from ``z``, so autograd keeps ``z`` and a byte per
pooled unit. Triton is imported at the first call; the fake impls serve torch.compile and meta."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import paper, triton_support

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_POOL_KERNEL = 15  # window positions 0 .. kernel^2 - 1 fit the uint8 argmax
_FORWARD_TILE, _FORWARD_WARPS = 2048, 4  # tile elements: SM90 code keeps them in registers
_BACKWARD_TILE, _BACKWARD_WARPS = 1024, 8  # (pixel, channel) tiles, more terms per element
_INTERPRETER_TILE = 1 << 16  # the interpreter pays per operation: fewer, larger programs

tl: Any = None  # bound by _load_triton, like _rounded_for (the kernels read them when built)
_rounded_for: Any = None
_interpreted: bool | None = None
_load_lock = threading.Lock()


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
    """What the op computes, in public PyTorch and ``z``'s dtype."""
    n, c, h, w = z.shape
    y = F.relu(z).reshape(n * groups, c // groups, h, w)
    b = F.local_response_norm(y, size, alpha, beta, k).reshape(n, c, h, w)
    return F.max_pool2d(b, pool_kernel, pool_stride)


def available(device: torch.device | str) -> bool:
    """Whether the op runs on ``device`` (see :func:`triton_support.available`)."""
    return triton_support.available(device, _interpreted)


def load(device: torch.device | str) -> None:
    """Build the kernels now if they run on ``device``, so that :func:`available`'s answer is
    settled before ``torch.compile`` traces it (its guard would change after the first call)."""
    if torch.device(device).type != "meta" and available(device):
        _load_triton()


def _load_triton() -> None:
    global tl, _interpreted, _rounded_for, _column_index, _shifted, _window_sum, _relu_terms
    global _forward_kernel, _backward_kernel
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
        _column_index, _shifted, _window_sum, _relu_terms = (
            triton.jit(fn) for fn in (_column_index, _shifted, _window_sum, _relu_terms)
        )
        _rounded_for = triton_support.jit_rounded_for()
        _forward_kernel = triton.jit(_forward_kernel)
        _backward_kernel = triton.jit(_backward_kernel)
        _interpreted = type(_forward_kernel).__name__ == "InterpretedFunction"


# Kernels: a program holds BLOCK_P pixels x all channels (BLOCK_C >= C, the last axis); window sums
# shift the tile (tl.gather) within each column. Argument lists stay packed (fmt: skip).


def _column_index(ch, c, cg, SIZE: tl.constexpr):
    """ch % cg (cg = C/groups); past C, a negative index that every LRN shift leaves outside."""
    return tl.where(ch < c, ch % cg, -(ch + SIZE))


def _shifted(x, ch, local, cg, shift: tl.constexpr, AXIS: tl.constexpr):
    """x[..., c + shift] at each channel c; 0 where c + shift is outside c's column."""
    inside = (local + shift >= 0) & (local + shift < cg)
    index = tl.broadcast_to(tl.where(inside, ch + shift, ch), x.shape)
    return tl.where(inside, tl.gather(x, index, axis=AXIS), 0.0)


def _window_sum(x, ch, local, cg, FIRST: tl.constexpr, SIZE: tl.constexpr, AXIS: tl.constexpr):
    """sum_{i < SIZE} x[..., c + FIRST + i] within c's column."""
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
    """y = relu(z) in float32 (NaN stays NaN), s = k + alpha/size * sum y^2 (output y s^-beta)."""
    z = tl.load(z_ptr + offset, mask=mask, other=0.0).to(tl.float32)
    y = tl.where(z < 0.0, 0.0, z)
    s = k + alpha_over_size * _window_sum(y * y, ch, local, cg, -(SIZE // 2), SIZE, AXIS)
    return y, s


def _forward_kernel(
    z_ptr, out_ptr, arg_ptr, n_out, out_h, out_w, c, cg, szn, szc, szh, szw, son, soc, soh, sow,
    san, sac, sah, saw, k, alpha_over_size, beta, KERNEL: tl.constexpr, STRIDE: tl.constexpr,
    SIZE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """A (pixel, window position, channel) tile; the argmax is the first maximum, as in PyTorch."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (p // (out_h * out_w)).to(tl.int64)
    oh, ow = (p // out_w) % out_h, p % out_w
    q = tl.arange(0, BLOCK_W)[None, :, None]
    ch = tl.arange(0, BLOCK_C)[None, None, :]
    mask = (p < n_out)[:, None, None] & (ch < c)
    corner = (n * szn + (oh * STRIDE) * szh + (ow * STRIDE) * szw)[:, None, None]
    offset = corner + ((q // KERNEL) * szh + (q % KERNEL) * szw) + ch * szc
    local, inside = _column_index(ch, c, cg, SIZE), mask & (q < KERNEL * KERNEL)
    y, s = _relu_terms(z_ptr, offset, inside, ch, local, cg, k, alpha_over_size, SIZE, 2)
    b = y * tl.exp2(-beta * tl.log2(s))
    is_nan = b != b
    # b >= 0, so padding positions (-1) never win; a NaN (as +inf) wins
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


def _backward_kernel(
    grad_ptr, z_ptr, arg_ptr, gz_ptr, n_in, in_h, in_w, out_h, out_w, c, cg, szn, szc, szh, szw,
    sgn, sgc, sgh, sgw, san, sac, sah, saw, sdn, sdc, sdh, sdw, k, alpha_over_size, beta,
    KERNEL: tl.constexpr, STRIDE: tl.constexpr, SIZE: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """grad_z of BLOCK_P pixels, masked by y > 0: g_c s_c^-beta - 2 alpha beta/size y_c
    sum_{j: c in window(j)} g_j y_j s_j^(-beta-1), g the LRN output's gradient, s recomputed."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (p // (in_h * in_w)).to(tl.int64)
    h, w = (p // in_w) % in_h, p % in_w
    ch = tl.arange(0, BLOCK_C)[None, :]
    local = _column_index(ch, c, cg, SIZE)
    mask = (p < n_in)[:, None] & (ch < c)
    z_offset = (n * szn + h * szh + w * szw)[:, None] + ch * szc
    y, s = _relu_terms(z_ptr, z_offset, mask, ch, local, cg, k, alpha_over_size, SIZE, 1)
    # g: the pooled gradient of each window that chose the pixel (a gather, no atomics)
    WINDOWS: tl.constexpr = (KERNEL + STRIDE - 1) // STRIDE
    g = tl.zeros(mask.shape, tl.float32)
    for i in tl.static_range(WINDOWS):
        oh = h // STRIDE - i
        for j in tl.static_range(WINDOWS):
            ow = w // STRIDE - j
            inside = (oh >= 0) & (oh < out_h) & (h - oh * STRIDE < KERNEL)
            inside = inside & (ow >= 0) & (ow < out_w) & (w - ow * STRIDE < KERNEL)
            window = mask & inside[:, None]
            arg_offset = (n * san + oh * sah + ow * saw)[:, None] + ch * sac
            grad_offset = (n * sgn + oh * sgh + ow * sgw)[:, None] + ch * sgc
            arg = tl.load(arg_ptr + arg_offset, mask=window, other=0).to(tl.int32)
            grad = tl.load(grad_ptr + grad_offset, mask=window, other=0.0).to(tl.float32)
            position = ((h - oh * STRIDE) * KERNEL + (w - ow * STRIDE))[:, None]
            g += tl.where(window & (arg == position), grad, 0.0)
    direct = g * tl.exp2(-beta * tl.log2(s))
    through_s = _window_sum(direct * y / s, ch, local, cg, -((SIZE - 1) // 2), SIZE, 1)
    grad_z = tl.where(y > 0.0, direct - 2.0 * alpha_over_size * beta * y * through_s, 0.0)
    offset = (n * sdn + h * sdh + w * sdw)[:, None] + ch * sdc
    tl.store(gz_ptr + offset, _rounded_for(gz_ptr, grad_z), mask=mask)


def _pooled_shape(
    z: Tensor, groups: int, pool_kernel: int, pool_stride: int, size: int
) -> tuple[int, int, int, int]:
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


def _empty_outputs(z: Tensor, shape: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    channels_last = z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(shape, dtype=z.dtype, device=z.device, memory_format=fmt)
    return out, torch.empty(shape, dtype=torch.uint8, device=z.device, memory_format=fmt)


def _pixels_per_program(pixels: int, elements_per_pixel: int, tile: int) -> int:
    tile = _INTERPRETER_TILE if _interpreted else tile
    return max(1, min(tile // elements_per_pixel, _power_of_2(pixels)))


def _power_of_2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def _kernels_on(device: torch.device) -> contextlib.AbstractContextManager:
    if not available(device):
        raise RuntimeError(
            f"alexnet2012::relu_lrn_pool cannot run on {device}: it needs Triton, "
            "and for CPU tensors TRITON_INTERPRET=1 (see fused_lrn.available)"
        )
    _load_triton()
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@torch.library.custom_op("alexnet2012::relu_lrn_pool", mutates_args=())
def _relu_lrn_pool_op(
    z: Tensor, groups: int, pool_kernel: int, pool_stride: int, size: int, alpha: float,
    beta: float, k: float,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    shape = _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    out, argmax = _empty_outputs(z, shape)
    if out.numel() == 0:
        return out, argmax
    with _kernels_on(z.device):
        n, c, out_h, out_w = shape
        n_out, block_w, block_c = n * out_h * out_w, _power_of_2(pool_kernel**2), _power_of_2(c)
        block_p = _pixels_per_program(n_out, block_w * block_c, _FORWARD_TILE)
        _forward_kernel[(-(-n_out // block_p),)](
            z, out, argmax, n_out, out_h, out_w, c, c // groups, *z.stride(), *out.stride(),
            *argmax.stride(), k, alpha / size, beta, KERNEL=pool_kernel, STRIDE=pool_stride,
            SIZE=size, BLOCK_P=block_p, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=_FORWARD_WARPS,
        )  # fmt: skip
    return out, argmax


@_relu_lrn_pool_op.register_fake
def _relu_lrn_pool_fake(z, groups, pool_kernel, pool_stride, size, alpha, beta, k):
    return _empty_outputs(z, _pooled_shape(z, groups, pool_kernel, pool_stride, size))


@torch.library.custom_op("alexnet2012::relu_lrn_pool_backward", mutates_args=())
def _relu_lrn_pool_backward_op(
    grad: Tensor, z: Tensor, argmax: Tensor, groups: int, pool_kernel: int, pool_stride: int,
    size: int, alpha: float, beta: float, k: float,
) -> Tensor:  # fmt: skip
    shape = _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    grad_z = torch.empty_like(z)
    if grad_z.numel() == 0:
        return grad_z
    n, c, h, w = z.shape
    with _kernels_on(z.device):
        n_in, block_c = n * h * w, _power_of_2(c)
        block_p = _pixels_per_program(n_in, block_c, _BACKWARD_TILE)
        _backward_kernel[(-(-n_in // block_p),)](
            grad, z, argmax, grad_z, n_in, h, w, shape[2], shape[3], c, c // groups, *z.stride(),
            *grad.stride(), *argmax.stride(), *grad_z.stride(), k, alpha / size, beta,
            KERNEL=pool_kernel, STRIDE=pool_stride, SIZE=size, BLOCK_P=block_p, BLOCK_C=block_c,
            num_warps=_BACKWARD_WARPS,
        )  # fmt: skip
    return grad_z


@_relu_lrn_pool_backward_op.register_fake
def _relu_lrn_pool_backward_fake(grad, z, argmax, groups, pool_kernel, pool_stride, size, *lrn):
    _pooled_shape(z, groups, pool_kernel, pool_stride, size)
    return torch.empty_like(z)


def _setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    z, *hyper = inputs
    ctx.save_for_backward(z, output[1])  # nothing of the LRN: the backward recomputes it
    ctx.hyper = hyper
    ctx.set_materialize_grads(False)  # the argmax output has no gradient: no zero tensor


def _backward(ctx: Any, grad: Tensor, grad_argmax: Tensor | None) -> tuple:
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
    """The reference as the custom op (differentiable once); keeps dtype and memory format."""
    return torch.ops.alexnet2012.relu_lrn_pool(
        z, groups, pool_kernel, pool_stride, size, float(alpha), float(beta), float(k)
    )[0]
