"""The 2012 layers that PyTorch does not have as such: LRN within a column, the paper's
(non-inverted) dropout, and the 2012 code's convolution geometry.

Each takes a ``groups`` argument: the number of columns stacked along the channel dimension of
one tensor, so that a single-device run computes every column on its own, exactly as two GPUs
would (PAPER_NOTES "Architecture").
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import paper


def _window_sum(x: Tensor, size: int, reverse: bool = False) -> Tensor:
    """Sum over the channel window ``[c - size//2, c + (size-1)//2]`` (clipped at the edges).

    ``reverse`` mirrors the window (needed by the backward pass when ``size`` is even).
    """
    before, after = size // 2, (size - 1) // 2
    if reverse:
        before, after = after, before
    out = x.clone()
    for d in range(1, before + 1):  # channel c gets c - d
        out[:, d:] += x[:, :-d]
    for d in range(1, after + 1):  # channel c gets c + d
        out[:, :-d] += x[:, d:]
    return out


def _neg_pow(s: Tensor, beta: float) -> Tensor:
    """``s ** -beta``; for the paper's beta = 0.75 as rsqrt(s) * sqrt(rsqrt(s)), several times
    faster than ``pow`` on the CPU and equal to it to float rounding."""
    if beta == 0.75:
        p = s.rsqrt()
        return p.mul_(p.sqrt())
    return s.pow(-beta)


def _chunks(x: Tensor) -> list[slice]:
    """Batch slices small enough to stay in the CPU's cache through the LRN's several passes
    (about 1M elements each); one slice on accelerators, where launches cost more than memory."""
    if x.device.type != "cpu":
        return [slice(None)]
    step = max(1, (1 << 20) // max(1, x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _lrn_terms(x: Tensor, size: int, alpha: float, beta: float, k: float) -> tuple[Tensor, Tensor]:
    """``s = k + alpha/size * sum_window(x^2)`` and ``p = s^-beta`` for (M, C, H, W) ``x``."""
    s = _window_sum(x * x, size).mul_(alpha / size).add_(k)
    return s, _neg_pow(s, beta)


def _lrn_grad(grad: Tensor, x: Tensor, s: Tensor, p: Tensor, size: int, alpha: float,
              beta: float) -> Tensor:
    """The LRN's input gradient. With b = x * s^-beta and s = k + alpha/n * sum_window(x^2):
    dx = g * s^-beta - 2 alpha beta / n * x * sum_window'(g * b / s)."""
    direct = grad * p
    through_s = _window_sum(direct * x / s, size, reverse=True)
    return torch.addcmul(direct, through_s, x, value=-2.0 * alpha * beta / size)


class _LRNFunction(torch.autograd.Function):
    """LRN with a hand-written backward, run chunk by chunk over the batch on the CPU."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        s, p, y = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        for part in _chunks(x):
            s[part], p[part] = _lrn_terms(x[part], size, alpha, beta, k)
            torch.mul(x[part], p[part], out=y[part])
        ctx.save_for_backward(x, s, p)
        ctx.hyper = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, s, p = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        for part in _chunks(x):
            grad_x[part] = _lrn_grad(grad[part], x[part], s[part], p[part], *ctx.hyper)
        return grad_x, None, None, None, None


class _ReluLRNPool(torch.autograd.Function):
    """ReLU, then LRN within each of ``groups`` columns, then max-pooling (P §3.5's order after
    conv1 and conv2), fused chunk by chunk over the batch so that on the CPU each chunk stays in
    cache through all three; the backward recomputes the LRN terms instead of storing them.
    Computes exactly what the three separate operations compute."""

    @staticmethod
    def forward(ctx, z: Tensor, groups: int, pool_kernel: int, pool_stride: int,
                size: int, alpha: float, beta: float, k: float) -> Tensor:
        n, c, h, w = z.shape
        pooled, indices = [], []
        for part in _chunks(z):
            x = z[part].clamp_min(0).reshape(-1, c // groups, h, w)
            _, p = _lrn_terms(x, size, alpha, beta, k)
            y = (x * p).reshape(-1, c, h, w)
            out, index = F.max_pool2d_with_indices(y, pool_kernel, pool_stride)
            pooled.append(out)
            indices.append(index)
        out = torch.cat(pooled) if len(pooled) > 1 else pooled[0]
        ctx.save_for_backward(z, torch.cat(indices) if len(indices) > 1 else indices[0])
        ctx.hyper = (groups, pool_kernel, pool_stride, size, alpha, beta, k)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, indices = ctx.saved_tensors
        groups, pool_kernel, pool_stride, size, alpha, beta, k = ctx.hyper
        n, c, h, w = z.shape
        grad_z = torch.empty_like(z)
        for part in _chunks(z):
            zc = z[part]
            x = zc.clamp_min(0)
            grad_y = torch.ops.aten.max_pool2d_with_indices_backward(
                grad[part], x, [pool_kernel] * 2, [pool_stride] * 2, [0, 0], [1, 1], False,
                indices[part])
            x = x.reshape(-1, c // groups, h, w)
            s, p = _lrn_terms(x, size, alpha, beta, k)
            grad_x = _lrn_grad(grad_y.reshape(x.shape), x, s, p, size, alpha, beta)
            torch.ops.aten.threshold_backward.grad_input(  # ReLU's backward, into place
                grad_x.reshape(zc.shape), zc, 0.0, grad_input=grad_z[part])
        return grad_z, None, None, None, None, None, None, None


def relu_lrn_pool(z: Tensor, groups: int = 1, pool_kernel: int = paper.POOL_KERNEL,
                  pool_stride: int = paper.POOL_STRIDE, size: int = paper.LRN_SIZE,
                  alpha: float = paper.LRN_ALPHA, beta: float = paper.LRN_BETA,
                  k: float = paper.LRN_K) -> Tensor:
    """``max_pool(local_response_norm(relu(z), groups))`` in one fused pass (see
    :func:`local_response_norm` for the LRN and its constants)."""
    if z.shape[1] % groups:
        raise ValueError(f"{z.shape[1]} channels cannot be split into {groups} groups")
    return _ReluLRNPool.apply(z, groups, pool_kernel, pool_stride, size, alpha, beta, k)


def local_response_norm(x: Tensor, groups: int = 1, size: int = paper.LRN_SIZE,
                        alpha: float = paper.LRN_ALPHA, beta: float = paper.LRN_BETA,
                        k: float = paper.LRN_K) -> Tensor:
    """Local response normalization across channels (P §3.3), computed within each group.

    ``b_c = a_c / (k + alpha/size * sum_{c'} a_{c'}^2)^beta`` over the ``size`` channels centred on
    ``c``, clipped at the edges of its group (column): a window never reaches into the other
    column's maps. ``alpha/size`` is the 2012 code's scaling and torch.nn.LocalResponseNorm's
    (PAPER_NOTES "LRN"); pass ``alpha=5e-4`` for the paper's formula read literally.
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    y = _LRNFunction.apply(x.reshape(n * groups, c // groups, h, w), size, alpha, beta, k)
    return y.reshape(n, c, h, w)


def paper_dropout(x: Tensor, p: float = paper.DROPOUT_P, training: bool = True,
                  groups: int = 1) -> Tensor:
    """The paper's dropout (P §4.2): zero each unit with probability ``p`` when training; at test
    time keep every unit and multiply by ``1 - p``. Not PyTorch's inverted dropout, which scales
    by ``1/(1-p)`` at training time instead.

    With ``groups`` columns stacked along dimension 1, each column's mask is drawn on its own,
    in column order, as the two-GPU net draws it before the columns exchange outputs.
    """
    if not training:
        return x * (1.0 - p)
    masks = [torch.empty_like(part).bernoulli_(1.0 - p) for part in x.chunk(groups, dim=1)]
    return x * (masks[0] if groups == 1 else torch.cat(masks, dim=1))


def conv_output_size_2012(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """The 2012 code's convolution output size: ``1 + ceil((2*pad + size - kernel) / stride)``.

    For conv1 on a 224 input this is 55: the last window overhangs the image by 3 pixels
    (PAPER_NOTES "224 vs 227").
    """
    return 1 + math.ceil((2 * pad + size - kernel) / stride)


def conv2d_2012(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int = 1,
                pad: int = 0, groups: int = 1) -> Tensor:
    """A convolution with the 2012 code's geometry: zero padding ``pad`` on every side, plus the
    zero rows/columns at the bottom/right that windows overhanging the edge read (none when the
    windows fit exactly, as for a 227 input or a stride-1 'same' convolution)."""
    kernel = weight.shape[-1]
    size = x.shape[-1]
    out = conv_output_size_2012(size, kernel, stride, pad)
    overhang = (out - 1) * stride + kernel - (size + 2 * pad)
    if overhang > 0:
        x = F.pad(x, (0, overhang, 0, overhang))
    return F.conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)


class Conv2d2012(torch.nn.Conv2d):
    """``nn.Conv2d`` with the 2012 code's geometry (see :func:`conv2d_2012`); square kernels."""

    def forward(self, x: Tensor) -> Tensor:
        return conv2d_2012(x, self.weight, self.bias, self.stride[0], self.padding[0], self.groups)
