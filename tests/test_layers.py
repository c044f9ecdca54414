"""The 2012 layers against formulas written out here (P §3.3, §4.2; [C]'s 224 vs Caffe's 227)."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import fused_lrn, layers
from alexnet2012.layers import (
    conv2d_2012,
    conv_output_size_2012,
    local_response_norm,
    paper_dropout,
    relu_lrn_pool,
)

K, N, ALPHA, BETA = 2.0, 5, 1e-4, 0.75


def lrn_by_the_formula(a, groups):
    """b_c = a_c / (k + alpha/n * sum_{c'=c-2}^{c+2} a_{c'}^2)^beta, clipped at group edges."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    width = a.shape[1] // groups
    for g in range(groups):
        lo, hi = g * width, (g + 1) * width
        for c in range(lo, hi):
            window = a[:, max(lo, c - N // 2) : min(hi, c + N // 2 + 1)]
            out[:, c] = a[:, c] / (K + ALPHA / N * (window**2).sum(axis=1)) ** BETA
    return out


def lrn_reference(x, groups):
    """The same formula in differentiable torch ops (for reference gradients)."""
    parts = []
    for a in x.chunk(groups, dim=1):
        sq = F.pad(a * a, (0, 0, 0, 0, N // 2, N // 2))
        window = sum(sq[:, i : i + a.shape[1]] for i in range(N))
        parts.append(a / (K + ALPHA / N * window) ** BETA)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_matches_the_formula_within_each_column(groups):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 12, 4, 3, generator=g, dtype=torch.float64) * 300
    assert np.allclose(
        local_response_norm(x, groups).numpy(), lrn_by_the_formula(x, groups), rtol=1e-12
    )


def test_lrn_is_torch_local_response_norm_per_column():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 96, 5, 5, generator=g) * 100
    expected = torch.cat(
        [F.local_response_norm(part, N, ALPHA, BETA, K) for part in x.chunk(2, dim=1)], dim=1
    )
    assert torch.allclose(local_response_norm(x, 2), expected, rtol=1e-5)


def test_lrn_window_never_reaches_the_other_column():
    x = torch.rand(1, 10, 2, 2) * 10
    y = local_response_norm(x, 2)
    x2 = x.clone()
    x2[:, 5:] *= 1000  # column 1 only
    assert torch.equal(local_response_norm(x2, 2)[:, :5], y[:, :5])


def test_lrn_gradient_is_the_formula_s_gradient():
    x = (torch.rand(2, 8, 3, 3, dtype=torch.float64) * 200).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 2), (x,))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("block", [None, 7 * 24])  # the CPU's blocks; 7 rows, a partial last one
@pytest.mark.parametrize("beta", [BETA, 0.6])  # rsqrt(s * sqrt(s)) and pow
def test_lrn_values_and_gradients_are_autograds_of_torchs_lrn(monkeypatch, relu, block, beta):
    # The written-out gradient, block by block, against autograd through F.local_response_norm
    # per column (after F.relu with relu=True: zero gradient where ReLU was 0).
    if block:
        monkeypatch.setattr(layers, "BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(11)
    z = (torch.randn(3, 48, 5, 7, generator=g) * 30).contiguous(memory_format=torch.channels_last)
    weights = torch.randn(3, 48, 5, 7, generator=g)
    ours_in, ref_in = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = local_response_norm(ours_in, 2, beta=beta, relu=relu)
    a = F.relu(ref_in) if relu else ref_in
    ref = torch.cat(
        [F.local_response_norm(part, N, ALPHA, beta, K) for part in a.chunk(2, dim=1)], dim=1
    )
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    (ours_grad,) = torch.autograd.grad(ours, ours_in, weights)
    (ref_grad,) = torch.autograd.grad(ref, ref_in, weights)
    assert torch.allclose(ours_grad, ref_grad, rtol=1e-4, atol=1e-6)
    if relu:
        assert (ours_grad[z <= 0] == 0).all()


def torch_relu_lrn_pool(z, groups, pool):
    """ReLU, torch's own LRN on each column, max-pool: the reference in torch ops."""
    x = F.relu(z)
    lrn = torch.cat(
        [F.local_response_norm(part, N, ALPHA, BETA, K) for part in x.chunk(groups, dim=1)], dim=1
    )
    return F.max_pool2d(lrn, *pool)


@pytest.mark.parametrize("shape, pool", [((3, 96, 27, 27), (3, 2)), ((4, 32, 13, 13), (2, 2))])
def test_relu_lrn_pool_is_relu_then_the_formula_then_max_pooling(shape, pool):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(*shape, generator=g, dtype=torch.float64) * 30
    formula = F.max_pool2d(torch.from_numpy(lrn_by_the_formula(F.relu(z), 2)), *pool)
    assert torch.allclose(relu_lrn_pool(z, 2, *pool), formula, rtol=1e-12)
    assert torch.allclose(relu_lrn_pool(z, 2, *pool), torch_relu_lrn_pool(z, 2, pool), rtol=1e-12)


def test_the_reference_path_is_taken_where_no_fused_kernel_runs():
    assert not fused_lrn.available(torch.device("cpu")) or os.environ.get("TRITON_INTERPRET")
    z = torch.randn(2, 16, 13, 13, requires_grad=True)
    assert relu_lrn_pool(z, 2).grad_fn.name() == "MaxPool2DWithIndicesBackward0"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_is_normalized_in_float32(dtype):
    # Activations of about 8: windows' sums of squares mostly below 390, where in bf16
    # k + alpha/n * sum rounds to k and the normalization would vanish. Computed in float32, each
    # value is the float64 formula's rounded to the input's precision: within half a unit in the
    # last place: at most eps/2 of the value.
    g = torch.Generator().manual_seed(9)
    z = (torch.randn(2, 32, 13, 13, generator=g) * 8).to(dtype)
    half_ulp = torch.finfo(dtype).eps / 2 * (1 + 1e-4)  # + float32's own error
    for ours, exact in (
        (relu_lrn_pool(z, 2, 3, 2), torch_relu_lrn_pool(z.double(), 2, (3, 2))),
        (local_response_norm(z, 2), lrn_reference(z.double(), 2)),
    ):
        assert ours.dtype == dtype
        assert ((ours.double() - exact).abs() <= half_ulp * exact.abs()).all()


@pytest.mark.parametrize("blocked", [True, False])  # WindowNorm, and the formula
def test_lrn_stays_float32_under_autocast(monkeypatch, blocked):
    # Under bf16 autocast the window's products would run in bf16 (the sum of squares off by
    # about 2^-8); the LRN is computed as outside autocast, to float32's rounding.
    monkeypatch.setattr(layers, "blocked", lambda z: blocked)
    g = torch.Generator().manual_seed(12)
    z = (torch.randn(2, 32, 9, 9, generator=g) * 40).requires_grad_()
    expected = lrn_reference(F.relu(z.double()), 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_response_norm(z, 2, relu=True)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), expected, rtol=1e-6, atol=1e-7)


def test_any_input_layout_gives_the_same_values_and_gradients():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(3, 32, 15, 15, generator=g) * 30
    outputs = []
    for layout in (
        z.contiguous(),
        z.contiguous(memory_format=torch.channels_last),
        z.transpose(2, 3).contiguous().transpose(2, 3),
    ):
        layout = layout.detach().requires_grad_()
        out = relu_lrn_pool(layout, 2)
        (grad,) = torch.autograd.grad(out, layout, torch.ones_like(out))
        outputs.append((out, grad))
    for out, grad in outputs[1:]:
        assert torch.allclose(out, outputs[0][0], rtol=1e-6)
        assert torch.allclose(grad, outputs[0][1], rtol=1e-5, atol=1e-7)


def test_channels_that_do_not_split_into_the_columns_are_refused():
    x = torch.rand(2, 10, 5, 5)
    for op in (local_response_norm, relu_lrn_pool):
        with pytest.raises(ValueError, match="10 channels cannot be split into 3 groups"):
            op(x, 3)


@pytest.mark.parametrize(
    "op", [lambda t: relu_lrn_pool(t, 2, 3, 2), lambda t: local_response_norm(t, 2)]
)
def test_the_layers_are_twice_differentiable(op):
    z = (torch.randn(2, 8, 7, 7, dtype=torch.float64) * 30).requires_grad_()
    # fast_mode: the Jacobians compared along random directions, not column by column
    assert torch.autograd.gradcheck(op, (z,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (z,), fast_mode=True)


def test_torch_compile_traces_the_layers_whole():
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda t: relu_lrn_pool(t * 1.5, 2).sum(dim=(2, 3)), backend="aot_eager", fullgraph=True
    )
    g = torch.Generator().manual_seed(9)
    z = (torch.randn(2, 16, 13, 13, generator=g) * 30).requires_grad_()
    out = compiled(z)
    reference = F.max_pool2d(lrn_reference(F.relu(z * 1.5), 2), 3, 2).sum(dim=(2, 3))
    assert torch.allclose(out, reference, rtol=1e-5, atol=1e-6)
    weights = torch.randn(out.shape, generator=g)
    (got,) = torch.autograd.grad(out, z, weights)
    (expected,) = torch.autograd.grad(reference, z, weights)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_paper_dropout_masks_at_train_time_and_halves_at_test_time():
    torch.manual_seed(0)
    x = torch.rand(64, 1000) + 1
    y = paper_dropout(x, 0.5, training=True)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # not rescaled (not inverted dropout)
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    assert torch.equal(paper_dropout(x, 0.5, training=False), x * 0.5)


def test_2012_conv_output_size_and_the_overhanging_224_input():
    assert conv_output_size_2012(224, 11, 4) == 1 + math.ceil(213 / 4) == 55
    assert conv_output_size_2012(227, 11, 4) == 55
    assert conv_output_size_2012(27, 5, 1, 2) == 27
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 224, 224, generator=g)
    w = torch.randn(8, 3, 11, 11, generator=g)
    b = torch.randn(8, generator=g)
    padded = torch.zeros(2, 3, 227, 227)
    padded[:, :, :224, :224] = x  # three zero rows at the bottom, three zero columns at the right
    assert torch.allclose(
        conv2d_2012(x, w, b, stride=4), F.conv2d(padded, w, b, stride=4), atol=1e-4
    )
    x227 = torch.randn(1, 3, 227, 227, generator=g)
    assert torch.equal(conv2d_2012(x227, w, b, stride=4), F.conv2d(x227, w, b, stride=4))


def test_2012_conv_pads_height_and_width_each_by_its_own_overhang():
    # a 224 x 230 input with stride 4: 1 + ceil(213/4) = 55 rows (3 overhanging), and
    # 1 + ceil(219/4) = 56 columns (1 overhanging)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 224, 230, generator=g)
    w = torch.randn(4, 3, 11, 11, generator=g)
    padded = F.pad(x, (0, 1, 0, 3))
    out = conv2d_2012(x, w, None, stride=4)
    assert out.shape[-2:] == (55, 56)
    assert torch.allclose(out, F.conv2d(padded, w, stride=4), atol=1e-4)


def test_an_empty_batch_passes_through_like_torchs_layers():
    z = torch.zeros(0, 96, 55, 55, requires_grad=True)
    out = relu_lrn_pool(z, 2)
    assert out.shape == F.max_pool2d(z, 3, 2).shape == (0, 96, 27, 27)
    out.sum().backward()
    assert z.grad.shape == z.shape
    assert local_response_norm(z.detach(), 2).shape == z.shape


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_of_any_window_size_is_torchs_per_column(size):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(2, 12, 3, 4, generator=g, dtype=torch.float64) * 30
    expected = torch.cat(
        [F.local_response_norm(part, size, ALPHA, BETA, K) for part in x.chunk(2, dim=1)], dim=1
    )
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        assert torch.allclose(local_response_norm(layout, 2, size), expected, rtol=1e-12)
