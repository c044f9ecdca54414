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
) -> Tensor:
    """``F.local_response_norm`` (alpha/size: [C]'s scaling, P §3.3) within each of ``groups``
    columns; half precision runs in float32, as in bf16 ``k + alpha/size * sum`` rounds to ``k``."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    a = (x.float() if x.dtype in HALF_DTYPES else x).permute(0, 2, 3, 1)
    a = a.reshape(n * h * w * groups, c // groups)
    s = torch.mm(a * a, channel_window(c // groups, size, alpha, a)).add_(k)
    b = a * ((s * s.sqrt()).rsqrt() if beta == 0.75 else s.pow(-beta))  # s^-3/4 without pow
    return b.reshape(n, h, w, c).permute(0, 3, 1, 2).to(x.dtype)


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
        local_response_norm(F.relu(z), groups, size, alpha, beta, k), pool_kernel, pool_stride
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
