"""The 2012 layers that PyTorch does not have as such: LRN within a column, the paper's
(non-inverted) dropout, and the 2012 code's convolution geometry.

Each takes a ``groups`` argument: the number of columns stacked along the channel dimension of
one tensor, so that a single-device run computes every column on its own, exactly as two GPUs
would (PAPER_NOTES "Architecture").
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from alexnet2012 import paper

HALF_DTYPES = (torch.float16, torch.bfloat16)
"""Input dtypes for which the LRN computes in float32 and rounds its result back (see
:func:`_half_in_float32`)."""


def _half_in_float32(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``op(x, ...)``, computed in float32 and rounded back when ``x`` is in ``HALF_DTYPES`` (bf16
    autocast). In bf16 (8 significant bits) ``k + alpha/size * sum(x^2)`` rounds to ``k = 2``
    whenever the sum of squares in the window is below about 390, so the normalization would
    silently vanish for all but large activations (fp16: below about 49); bf16 element-wise
    arithmetic is also slower than float32 on the CPU. The convolutions around the LRN still run
    in half precision under autocast."""
    @functools.wraps(op)
    def in_float32(x: Tensor, *args, **kwargs) -> Tensor:
        if x.dtype in HALF_DTYPES:
            return op(x.float(), *args, **kwargs).to(x.dtype)
        return op(x, *args, **kwargs)
    return in_float32


def _window_sum(x: Tensor, size: int, reverse: bool = False, start: float = 0.0) -> Tensor:
    """``start`` plus the sum over the last dimension's window ``[c - size//2, c + (size-1)//2]``
    (clipped at the edges). ``reverse`` mirrors the window (needed by the backward pass when
    ``size`` is even)."""
    before, after = size // 2, (size - 1) // 2
    if reverse:
        before, after = after, before
    out = x + start if start else x.clone()
    for d in range(1, before + 1):  # channel c gets c - d
        out[..., d:] += x[..., :-d]
    for d in range(1, after + 1):  # channel c gets c + d
        out[..., :-d] += x[..., d:]
    return out


def _neg_pow(s: Tensor, beta: float) -> Tensor:
    """``s ** -beta``; for the paper's beta = 0.75 as ``rsqrt(rsqrt(s)) / s`` (s^(1/4) / s), equal
    to ``pow`` to float rounding for finite ``s``, and on a (3, 55, 55, 2, 48) slice on the test
    CPU 0.33 ms against 1.21 ms for ``pow`` and 0.44 ms for ``rsqrt(s) * sqrt(rsqrt(s))`` (CPU
    ``sqrt`` is slower than ``rsqrt``). Where ``s`` overflows to inf (activations near 1e19, a
    run that has diverged already) it gives NaN where ``pow`` gives 0; the loss then becomes NaN
    and training stops at that step."""
    if beta == 0.75:
        return s.rsqrt().rsqrt_().div_(s)
    return s.pow(-beta)


def _chunks(x: Tensor) -> list[slice]:
    """Batch slices small enough to stay in the CPU's cache through the LRN's several passes
    (about 1M elements each); one slice on accelerators, where launches cost more than memory."""
    if x.device.type != "cpu" or len(x) == 0:
        return [slice(None)]
    step = max(1, (1 << 20) // max(1, x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _column_view(x: Tensor, groups: int) -> Tensor:
    """``x`` (N, C, H, W) as an (N, H, W, groups, C/groups) view of its channels-last copy (no
    copy when ``x`` is channels-last already): each column's channels contiguous and last, so
    that the LRN's window runs along the last dimension and max-pooling gets the channels-last
    layout, for which PyTorch's CPU kernel is about 10x faster than for NCHW."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    x = x.contiguous(memory_format=torch.channels_last)
    return x.permute(0, 2, 3, 1).view(n, h, w, groups, c // groups)


def _image_view(v: Tensor) -> Tensor:
    """The inverse of :func:`_column_view`: (N, H, W, G, C/G) back to (N, C, H, W), channels-last."""
    n, h, w, g, cg = v.shape
    return v.view(n, h, w, g * cg).permute(0, 3, 1, 2)


def _lrn_terms(x: Tensor, size: int, alpha: float, beta: float, k: float) -> tuple[Tensor, Tensor]:
    """For the window running along the last dimension of ``x``, with
    ``s = k + alpha/size * sum_window(x^2)``: ``p = s^-beta`` (the output is ``x * p``) and
    ``x / s`` (what the backward pass needs besides ``p``)."""
    scaled_squares = torch.addcmul(x.new_zeros(()), x, x, value=alpha / size)
    s = _window_sum(scaled_squares, size, start=k)
    return _neg_pow(s, beta), x.div(s)


def _lrn_grad(grad: Tensor, x: Tensor, p: Tensor, x_over_s: Tensor, size: int, alpha: float,
              beta: float, out: Optional[Tensor] = None) -> Tensor:
    """The LRN's input gradient. With b = x * s^-beta and s = k + alpha/n * sum_window(x^2):
    dx = g * s^-beta - 2 alpha beta / n * x * sum_window'(g * s^-beta * x / s)."""
    direct = grad * p
    through_s = _window_sum(direct * x_over_s, size, reverse=True)
    return torch.addcmul(direct, through_s, x, value=-2.0 * alpha * beta / size, out=out)


class _LRNFunction(torch.autograd.Function):
    """LRN within each of ``groups`` columns, with a hand-written backward, chunk by chunk over
    the batch on the CPU. Returns a channels-last tensor."""

    @staticmethod
    def forward(ctx, x: Tensor, groups: int, size: int, alpha: float, beta: float,
                k: float) -> Tensor:
        xv = _column_view(x, groups)
        p, x_over_s = torch.empty_like(xv), torch.empty_like(xv)
        for part in _chunks(xv):
            p[part], x_over_s[part] = _lrn_terms(xv[part], size, alpha, beta, k)
        ctx.save_for_backward(xv, p, x_over_s)
        ctx.hyper = (size, alpha, beta)
        return _image_view(xv * p)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        xv, p, x_over_s = ctx.saved_tensors
        grad = _column_view(grad, xv.shape[3])
        grad_x = torch.empty_like(xv)
        for part in _chunks(xv):
            _lrn_grad(grad[part], xv[part], p[part], x_over_s[part], *ctx.hyper,
                      out=grad_x[part])
        return _image_view(grad_x), None, None, None, None, None


def _relu_lrn_pool(z: Tensor, groups: int, pool_kernel: int, pool_stride: int, size: int,
                   alpha: float, beta: float, k: float,
                   keep: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The fused forward pass, chunk by chunk: (pooled output, pooling indices, and when
    ``keep`` each chunk's ReLU output, ``p`` and ``x / s`` for the backward pass)."""
    zv = _column_view(z, groups)
    n, c, h, w = z.shape
    pooled_shape = (n, c, (h - pool_kernel) // pool_stride + 1,
                    (w - pool_kernel) // pool_stride + 1)
    out = torch.empty(pooled_shape, dtype=z.dtype, device=z.device,
                      memory_format=torch.channels_last)
    indices = torch.empty(pooled_shape, dtype=torch.long, device=z.device,
                          memory_format=torch.channels_last)
    saved = []
    for part in _chunks(zv):
        x = zv[part].clamp_min(0)
        p, x_over_s = _lrn_terms(x, size, alpha, beta, k)
        torch.ops.aten.max_pool2d_with_indices.out(
            _image_view(x * p), [pool_kernel] * 2, [pool_stride] * 2, [0, 0], [1, 1],
            False, out=out[part], indices=indices[part])
        if keep:
            saved += [x, p, x_over_s]
    return out, indices, saved


class _ReluLRNPool(torch.autograd.Function):
    """ReLU, then LRN within each of ``groups`` columns, then max-pooling (P §3.5's order after
    conv1 and conv2), fused chunk by chunk over the batch so that on the CPU each chunk stays in
    cache through all three, in the channels-last layout. Computes exactly what the three
    separate operations compute.

    The ReLU's backward needs no pass of its own: where ReLU gave 0 the LRN gave 0, so such a unit
    is a pooling window's maximum only if the whole window is 0; masking the pooled gradient
    where the pooled output is 0 therefore zeroes every gradient ReLU would zero, and the LRN's
    input gradient is already 0 there (both of its terms carry a factor from that unit).
    """

    @staticmethod
    def forward(ctx, z: Tensor, groups: int, pool_kernel: int, pool_stride: int,
                size: int, alpha: float, beta: float, k: float) -> Tensor:
        out, indices, saved = _relu_lrn_pool(z, groups, pool_kernel, pool_stride, size, alpha,
                                             beta, k, keep=True)
        ctx.save_for_backward(out, indices, *saved)
        ctx.hyper = (pool_kernel, pool_stride, size, alpha, beta)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        out, indices, *saved = ctx.saved_tensors
        pool_kernel, pool_stride, size, alpha, beta = ctx.hyper
        # ReLU's mask (threshold_backward: ReLU's own backward kernel, several times faster on
        # the CPU than multiplying by a boolean tensor)
        grad = torch.ops.aten.threshold_backward(grad, out, 0.0).contiguous(
            memory_format=torch.channels_last)
        grad_z = torch.empty(len(out), *saved[0].shape[1:], dtype=out.dtype, device=out.device)
        for part, x, p, x_over_s in zip(_chunks(grad_z), saved[0::3], saved[1::3], saved[2::3]):
            grad_y = torch.ops.aten.max_pool2d_with_indices_backward(
                grad[part], _image_view(x), [pool_kernel] * 2, [pool_stride] * 2, [0, 0],
                [1, 1], False, indices[part])
            _lrn_grad(_column_view(grad_y, x.shape[3]), x, p, x_over_s, size, alpha, beta,
                      out=grad_z[part])
        return _image_view(grad_z), None, None, None, None, None, None, None


# torch._disable_dynamo: torch.compiler.disable, applied at the first call (torch.compiler.disable
# imports torch._dynamo at once, which made importing this package 1.3 s slower)
@torch._disable_dynamo
@_half_in_float32
def relu_lrn_pool(z: Tensor, groups: int = 1, pool_kernel: int = paper.POOL_KERNEL,
                  pool_stride: int = paper.POOL_STRIDE, size: int = paper.LRN_SIZE,
                  alpha: float = paper.LRN_ALPHA, beta: float = paper.LRN_BETA,
                  k: float = paper.LRN_K) -> Tensor:
    """``max_pool(local_response_norm(relu(z), groups))`` in one fused pass (see
    :func:`local_response_norm` for the LRN and its constants). The result is channels-last.

    ``torch.compile`` leaves this operation out of its graphs and runs it as it is. Traced, its
    chunk loop and hand-written backward became generated kernels that made the compiled training
    step more than twice as slow on the CPU (README, Speed).

    Half-precision input (bf16 autocast) is computed in float32 and the result rounded back (see
    :func:`_half_in_float32`).
    """
    if torch.is_grad_enabled() and z.requires_grad:
        return _ReluLRNPool.apply(z, groups, pool_kernel, pool_stride, size, alpha, beta, k)
    # no backward to come: keep nothing, so that inference holds one chunk's terms at a time
    return _relu_lrn_pool(z, groups, pool_kernel, pool_stride, size, alpha, beta, k,
                          keep=False)[0]


@_half_in_float32
def local_response_norm(x: Tensor, groups: int = 1, size: int = paper.LRN_SIZE,
                        alpha: float = paper.LRN_ALPHA, beta: float = paper.LRN_BETA,
                        k: float = paper.LRN_K) -> Tensor:
    """Local response normalization across channels (P §3.3), computed within each group.

    ``b_c = a_c / (k + alpha/size * sum_{c'} a_{c'}^2)^beta`` over the ``size`` channels centred on
    ``c``, clipped at the edges of its group (column): a window never reaches into the other
    column's maps. ``alpha/size`` is the 2012 code's scaling and torch.nn.LocalResponseNorm's
    (PAPER_NOTES "LRN"); pass ``alpha=5e-4`` for the paper's formula read literally.
    The result is channels-last; half-precision input is computed in float32 (see
    :func:`_half_in_float32`).
    """
    return _LRNFunction.apply(x, groups, size, alpha, beta, k)


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
    bottom, right = ((conv_output_size_2012(size, kernel, stride, pad) - 1) * stride + kernel
                     - (size + 2 * pad) for size in x.shape[-2:])
    if bottom or right:
        x = F.pad(x, (0, right, 0, bottom))
    return F.conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)


class Conv2d2012(torch.nn.Conv2d):
    """``nn.Conv2d`` with the 2012 code's geometry (see :func:`conv2d_2012`); square kernels."""

    def forward(self, x: Tensor) -> Tensor:
        return conv2d_2012(x, self.weight, self.bias, self.stride[0], self.padding[0], self.groups)
