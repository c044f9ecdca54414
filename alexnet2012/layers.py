"""The 2012 layers that PyTorch does not have as such: the LRN within a column, the paper's
(non-inverted) dropout, and the 2012 code's convolution geometry.

Every function here is plain public PyTorch and twice differentiable. On a GPU, ReLU -> LRN ->
max-pool (``fused_lrn``) and ReLU -> dropout (``fused_dropout``) run as one fused kernel each,
which compute the same functions.
"""

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
    """Local response normalization across channels (P §3.3), within each of ``groups`` blocks
    of channels (the columns stacked along dimension 1: a window never reaches into the other
    column's maps).

    ``b_c = a_c / (k + alpha/size * sum a_{c'}^2)^beta`` over the channels
    ``c - size//2 .. c + (size-1)//2``: what ``torch.nn.functional.local_response_norm`` computes,
    whose ``alpha/size`` is the 2012 code's scaling (PAPER_NOTES "LRN"; ``alpha=5e-4`` reads the
    paper's formula literally). The window's mean runs as a 1-d average pool along each pixel's
    channels, which channels-last tensors hold contiguously (no copy). Half precision is computed
    in float32: in bf16, ``k + alpha/size * sum`` rounds to ``k`` for all but large activations,
    and the normalization would vanish.
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    a = (x.float() if x.dtype in HALF_DTYPES else x).permute(0, 2, 3, 1)
    a = a.reshape(n * h * w * groups, 1, c // groups)  # one row per pixel and column
    # zero-padded by size//2 at both ends, the first c/groups windows are c - size//2 ..
    # c + (size-1)//2 (for an even size the last window is one past the end)
    mean = F.avg_pool1d(a * a, size, stride=1, padding=size // 2)[..., : c // groups]
    s = mean.mul(alpha).add(k)
    b = a * ((s * s.sqrt()).rsqrt() if beta == 0.75 else s.pow(-beta))  # s^-3/4 without pow
    return b.reshape(n, h, w, c).permute(0, 3, 1, 2).to(x.dtype)


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
    """ReLU, LRN within each column, max-pooling: P §3.5's order after conv1 and conv2.

    ``fused=None`` takes the fused kernel where it can run (a GPU with Triton) and the reference
    (PyTorch's three operations) elsewhere; ``fused=False`` forces the reference, e.g. for a
    second derivative, which the fused kernel does not have.
    """
    if fused is None:
        fused = fused_lrn.available(z.device) and z.dtype in fused_lrn.DTYPES
    if fused:
        return fused_lrn.relu_lrn_pool(z, groups, pool_kernel, pool_stride, size, alpha, beta, k)
    return F.max_pool2d(
        local_response_norm(F.relu(z), groups, size, alpha, beta, k), pool_kernel, pool_stride
    )


def relu_dropout(
    z: Tensor, p: float = paper.DROPOUT_P, training: bool = True, fused: bool | None = None
) -> Tensor:
    """ReLU, then the paper's dropout: P §3.5's order after fc6 and fc7. ``fused`` as for
    :func:`relu_lrn_pool` (the fused kernel draws its masks from another generator than the
    reference's ``bernoulli_``)."""
    if fused is None:
        fused = fused_dropout.available(z.device) and z.dtype in fused_dropout.DTYPES
    if fused:
        return fused_dropout.relu_dropout(z, p, training)
    return paper_dropout(F.relu(z), p, training)


def paper_dropout(x: Tensor, p: float = paper.DROPOUT_P, training: bool = True) -> Tensor:
    """The paper's dropout (P §4.2): zero each unit with probability ``p`` when training; at test
    time keep every unit and multiply by ``1 - p``. Not PyTorch's inverted dropout, which scales
    by ``1/(1-p)`` at training time instead."""
    if not training:
        return x * (1.0 - p)
    return x * torch.empty_like(x).bernoulli_(1.0 - p)


def conv_output_size_2012(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """The 2012 code's convolution output size: ``1 + ceil((2*pad + size - kernel) / stride)``.

    For conv1 on a 224 input this is 55: the last window overhangs the image by 3 pixels
    (PAPER_NOTES "224 vs 227").
    """
    return 1 + math.ceil((2 * pad + size - kernel) / stride)


def pad_overhang(x: Tensor, kernel: int, stride: int = 1, pad: int = 0) -> Tensor:
    """``x`` with the zero rows/columns at the bottom/right that the 2012 code's overhanging
    windows read (``x`` itself when the windows fit, as for a 227 input)."""
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
    """A convolution with the 2012 code's geometry: zero padding ``pad`` on every side, plus the
    overhang of :func:`pad_overhang`."""
    x = pad_overhang(x, weight.shape[-1], stride, pad)
    return F.conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)


class Conv2d2012(torch.nn.Conv2d):
    """``nn.Conv2d`` with the 2012 code's geometry (see :func:`conv2d_2012`); square kernels."""

    def forward(self, x: Tensor) -> Tensor:
        return conv2d_2012(x, self.weight, self.bias, self.stride[0], self.padding[0], self.groups)
