"""The 2012 layers PyTorch lacks, in plain twice-differentiable PyTorch: LRN within a column, the
paper's dropout, [C]'s convolution geometry; ``fused_*`` are the same as one kernel each."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import fused_dropout, fused_lrn, paper

HALF_DTYPES = (torch.float16, torch.bfloat16)


def local_response_norm(
    x: Tensor,
    groups: int = 1,
    size: int = paper.LRN_SIZE,
    alpha: float = paper.LRN_ALPHA,
    beta: float = paper.LRN_BETA,
    k: float = paper.LRN_K,
    relu: bool = False,
) -> Tensor:
    """``F.local_response_norm`` (alpha/size: [C]'s scaling, P §3.3) within each of ``groups``
    columns, of ``relu(x)`` with ``relu``. In float32 whatever the input or autocast: in bf16
    ``k + alpha/size * sum`` rounds to ``k``. Eager on the CPU as :class:`WindowNorm`; elsewhere
    (a GPU's reference path, torch.compile, export, tracing) as the formula."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    z = (x.float() if x.dtype in HALF_DTYPES else x).permute(0, 2, 3, 1)
    z = z.reshape(n * h * w * groups, c // groups)
    window = channel_window(c // groups, size, alpha, z)
    with torch.autocast(z.device.type, enabled=False):
        if blocked(z):
            b = WindowNorm.apply(z, window, k, beta, relu)
        else:
            b = window_norm(z, window, k, beta, relu)
    return b.reshape(n, h, w, c).permute(0, 3, 1, 2).to(x.dtype)


def blocked(z: Tensor) -> bool:
    """Whether the LRN runs as :class:`WindowNorm`: eager on the CPU (a compiler fuses the
    formula itself; tracers and exporters record its ops). Tests patch it to compare paths."""
    return z.device.type == "cpu" and not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def window_norm(z: Tensor, window: Tensor, k: float, beta: float, relu: bool) -> Tensor:
    """The LRN over rows of channels, in differentiable ops: ``a * s^-beta`` with
    ``s = k + (a * a) @ W`` and ``a = relu(z)`` or ``z``; ``s^-3/4`` as ``rsqrt(s * sqrt(s))``."""
    a = F.relu(z) if relu else z
    return a * inverse_power(torch.mm(a * a, window) + k, beta)


def inverse_power(s: Tensor, beta: float, out: Tensor | None = None) -> Tensor:
    """``s^-beta``, into ``out`` if given; for beta 3/4 as ``rsqrt(s * sqrt(s))``, faster than
    ``pow`` on the CPU."""
    if beta != 0.75:
        return torch.pow(s, -beta, out=out)
    if out is None:
        return (s * s.sqrt()).rsqrt()
    return torch.sqrt(s, out=out).mul_(s).rsqrt_()


class WindowNorm(torch.autograd.Function):
    """:func:`window_norm`, on the CPU in blocks of rows that stay in cache, with its gradient
    written out, ``g * r - 2 beta a * ((g * b / s) @ W^T)`` (``s = k + (a * a) @ W``,
    ``r = s^-beta``, masked where ReLU was 0), recomputed block by block from ``z`` and ``b``:
    each pass of autograd's chain would read and write whole tensors from memory. Under
    ``create_graph`` the backward differentiates :func:`window_norm` (twice differentiable)."""

    @staticmethod
    def forward(ctx, z: Tensor, window: Tensor, k: float, beta: float, relu: bool) -> Tensor:
        b = torch.empty_like(z)
        scratch = Scratch(z, 3)
        for rows, a, r, _ in blocks(z, window, k, beta, relu, scratch):
            torch.mul(a, r, out=b[rows])
        ctx.save_for_backward(z, window, b)
        ctx.settings = k, beta, relu
        return b

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        z, window, b = ctx.saved_tensors
        k, beta, relu = ctx.settings
        if torch.is_grad_enabled():  # create_graph: a second derivative to come
            out = window_norm(z, window, k, beta, relu)
            (grad,) = torch.autograd.grad(out, z, g, create_graph=True)
            return grad, None, None, None, None
        g, grad, scratch = g.contiguous(), torch.empty_like(z), Scratch(z, 4)
        t = scratch.buffers[3]
        for rows, a, r, s in blocks(z, window, k, beta, relu, scratch):
            n = len(a)
            torch.mul(g[rows], b[rows], out=t[:n]).div_(s)  # g * b / s
            torch.mm(t[:n], window.t(), out=s)
            if relu:  # ReLU's mask: sign(a) is 0 or 1, far cheaper than masked_fill_
                r.mul_(torch.sign(a, out=t[:n]))
            torch.mul(g[rows], r, out=grad[rows]).addcmul_(a, s, value=-2 * beta)
        return grad, None, None, None, None


BLOCK_ELEMENTS = 1 << 18  # 1 MiB of float32 per buffer: a block stays in cache


class Scratch:
    """``count`` buffers of one block each, reused from block to block."""

    def __init__(self, z: Tensor, count: int):
        self.rows = max(1, min(len(z), BLOCK_ELEMENTS // max(z.shape[1], 1)))
        self.buffers = [z.new_empty(self.rows, z.shape[1]) for _ in range(count)]


def blocks(z: Tensor, window: Tensor, k: float, beta: float, relu: bool, scratch: Scratch):
    """``(rows, a, r, s)`` block by block: ``a`` (ReLU's output or ``z``'s rows),
    ``r = s^-beta`` and ``s = k + (a * a) @ W`` in scratch buffers 0, 1 and 2."""
    a_buf, r_buf, s_buf = scratch.buffers[:3]
    for start in range(0, len(z), scratch.rows):
        rows = slice(start, min(start + scratch.rows, len(z)))
        n = rows.stop - start
        a = torch.clamp_min(z[rows], 0, out=a_buf[:n]) if relu else z[rows]
        s = torch.mm(torch.mul(a, a, out=r_buf[:n]), window, out=s_buf[:n]).add_(k)
        yield rows, a, inverse_power(s, beta, out=r_buf[:n]), s


def channel_window(channels: int, size: int, alpha: float, like: Tensor) -> Tensor:
    """(C, C) matrix ``W``: ``(a * a) @ W`` is ``alpha/size`` times each channel's window sum
    of squares (channels ``i - size//2`` to ``i - size//2 + size - 1``, zeros beyond the
    column's edges). A band-matrix product: on the CPU faster than a pooling over channels, in
    forward and backward alike."""
    i = torch.arange(channels, device=like.device)
    offset = i[:, None] - i[None, :] + size // 2  # row: the summed channel, column: the output
    return ((offset >= 0) & (offset < size)).to(like.dtype) * (alpha / size)


def within_map_norm(
    x: Tensor,
    size: int = paper.MAP_NORM_SIZE,
    alpha: float = paper.MAP_NORM_SCALE,
    beta: float = paper.MAP_NORM_BETA,
    k: float = paper.MAP_NORM_K,
) -> Tensor:
    """[C]'s ``rnorm``: ``x / (k + alpha/size^2 * sum x^2)^beta``, the sum over the size x size
    window centred on each pixel of its own map (window start ``-(size//2)``), zeros outside."""
    h, w = x.shape[-2:]
    a = x.float() if x.dtype in HALF_DTYPES else x
    mean = F.avg_pool2d(a * a, size, stride=1, padding=size // 2, count_include_pad=True)
    s = mean[..., :h, :w].mul(alpha).add(k)
    return (a * s.pow(-beta)).to(x.dtype)


def relu_lrn_pool(
    z: Tensor,
    groups: int = 1,
    pool_kernel: int = paper.POOL_KERNEL,
    pool_stride: int = paper.POOL_STRIDE,
    size: int = paper.LRN_SIZE,
    alpha: float = paper.LRN_ALPHA,
    beta: float = paper.LRN_BETA,
    k: float = paper.LRN_K,
    fused: bool | None = None,
) -> Tensor:
    """P §3.5's order after conv1, conv2. ``fused=None``: the kernel where it runs; False: PyTorch
    (e.g. for a second derivative)."""
    if fused is None:
        fused = fused_lrn.available(z.device) and z.dtype in fused_lrn.DTYPES
    if fused:
        return fused_lrn.relu_lrn_pool(z, groups, pool_kernel, pool_stride, size, alpha, beta, k)
    return F.max_pool2d(
        local_response_norm(z, groups, size, alpha, beta, k, relu=True), pool_kernel, pool_stride
    )


def load_fused(devices: set[torch.device]) -> None:
    """Build the fused kernels that run on ``devices`` before the layers are compiled."""
    for device in devices:
        fused_lrn.load(device)
        fused_dropout.load(device)


def relu_dropout(
    z: Tensor, p: float = paper.DROPOUT_P, training: bool = True, fused: bool | None = None
) -> Tensor:
    """P §3.5's order after fc6, fc7; ``fused`` as above (the kernel's masks differ)."""
    if fused is None:
        fused = fused_dropout.available(z.device) and z.dtype in fused_dropout.DTYPES
    if fused:
        return fused_dropout.relu_dropout(z, p, training)
    return paper_dropout(F.relu(z), p, training)


def paper_dropout(x: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """P §4.2: drop with probability ``p``, scale by ``1 - p`` at test time (not inverted)."""
    if not training:
        return x * (1.0 - p)
    return x * torch.empty_like(x).bernoulli_(1.0 - p)


def conv_output_size_2012(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """[C]'s: 55 for conv1 on 224, whose last window overhangs by 3 pixels (layer.py's modulesX)."""
    return 1 + math.ceil((2 * pad + size - kernel) / stride)


def pad_overhang(x: Tensor, kernel: int, stride: int = 1, pad: int = 0) -> Tensor:
    bottom, right = (
        (conv_output_size_2012(size, kernel, stride, pad) - 1) * stride + kernel - (size + 2 * pad)
        for size in x.shape[-2:]
    )
    return F.pad(x, (0, right, 0, bottom)) if bottom or right else x


def conv2d_2012(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int = 1,
    pad: int = 0,
    groups: int = 1,
) -> Tensor:
    x = pad_overhang(x, weight.shape[-1], stride, pad)
    return F.conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)


class Conv2d2012(torch.nn.Conv2d):
    """``nn.Conv2d`` with [C]'s geometry (:func:`conv2d_2012`); square kernels."""

    def forward(self, x: Tensor) -> Tensor:
        return conv2d_2012(x, self.weight, self.bias, self.stride[0], self.padding[0], self.groups)
