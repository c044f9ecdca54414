"""The 2012 layers against formulas written out here (PAPER_NOTES "LRN", "Dropout", "224 vs 227")."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet2012.layers import (conv2d_2012, conv_output_size_2012, local_response_norm,
                                paper_dropout, relu_lrn_pool)

torch.set_num_threads(2)
K, N, ALPHA, BETA = 2.0, 5, 1e-4, 0.75


def lrn_by_the_formula(a, groups):
    """b_c = a_c / (k + alpha/n * sum_{c'=c-2}^{c+2} a_{c'}^2)^beta, clipped at each group's edges."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    width = a.shape[1] // groups
    for g in range(groups):
        lo, hi = g * width, (g + 1) * width
        for c in range(lo, hi):
            window = a[:, max(lo, c - N // 2):min(hi, c + N // 2 + 1)]
            out[:, c] = a[:, c] / (K + ALPHA / N * (window ** 2).sum(axis=1)) ** BETA
    return out


def lrn_reference(x, groups):
    """The same formula in differentiable torch ops (for reference gradients)."""
    parts = []
    for a in x.chunk(groups, dim=1):
        sq = F.pad(a * a, (0, 0, 0, 0, N // 2, N // 2))
        window = sum(sq[:, i:i + a.shape[1]] for i in range(N))
        parts.append(a / (K + ALPHA / N * window) ** BETA)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_matches_the_formula_within_each_column(groups):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 12, 4, 3, generator=g, dtype=torch.float64) * 300
    assert np.allclose(local_response_norm(x, groups).numpy(), lrn_by_the_formula(x, groups),
                       rtol=1e-12)


def test_lrn_is_torch_local_response_norm_per_column():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 96, 5, 5, generator=g) * 100
    expected = torch.cat([F.local_response_norm(part, N, ALPHA, BETA, K)
                          for part in x.chunk(2, dim=1)], dim=1)
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


def test_lrn_on_batches_split_into_cache_sized_chunks():
    # 580,800 values per image: the CPU path processes one image at a time.
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(3, 48, 110, 110, generator=g) * 200).requires_grad_()
    grad = torch.randn(3, 48, 110, 110, generator=g)
    ours = local_response_norm(x, 2)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    ref = lrn_reference(x, 2)
    (ref_grad,) = torch.autograd.grad(ref, x, grad)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours_grad, ref_grad, rtol=1e-4, atol=1e-6)


def torch_relu_lrn_pool(z, groups, pool):
    """ReLU, torch's own LRN on each column, max-pool: the unfused reference in torch ops."""
    x = F.relu(z)
    lrn = torch.cat([F.local_response_norm(part, N, ALPHA, BETA, K)
                     for part in x.chunk(groups, dim=1)], dim=1)
    return F.max_pool2d(lrn, *pool)


def fused_and_reference(z, groups, pool, seed=0):
    """(fused output, reference output, fused input gradient, reference input gradient)."""
    z = z.detach().requires_grad_()
    fused = relu_lrn_pool(z, groups, *pool)
    reference = torch_relu_lrn_pool(z, groups, pool)
    grad = torch.randn(fused.shape, generator=torch.Generator().manual_seed(seed))
    (fused_grad,) = torch.autograd.grad(fused, z, grad)
    (reference_grad,) = torch.autograd.grad(reference, z, grad)
    return fused, reference, fused_grad, reference_grad


@pytest.mark.parametrize("shape, pool", [((5, 96, 55, 55), (3, 2)), ((4, 32, 27, 27), (2, 2))])
def test_fused_relu_lrn_pool_equals_the_three_operations(shape, pool):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(*shape, generator=g) * 30
    fused, reference, fused_grad, reference_grad = fused_and_reference(z, 2, pool)
    assert torch.allclose(fused, reference, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fused_grad, reference_grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(fused, F.max_pool2d(local_response_norm(F.relu(z), 2), *pool))
    with torch.no_grad():  # the inference path, which keeps nothing for a backward pass
        assert torch.equal(relu_lrn_pool(z.clone().requires_grad_(), 2, *pool), fused)
    formula = F.max_pool2d(torch.from_numpy(lrn_by_the_formula(F.relu(z), 2)), *pool)
    assert torch.allclose(fused.double(), formula, rtol=1e-5)


def test_fused_gradient_where_relu_zeroes_whole_pooling_windows():
    # The fused backward applies ReLU's mask in pooled space (a window whose maximum is 0 is all
    # zeros); check it where that matters: windows of non-positive inputs, exact zeros, ties.
    g = torch.Generator().manual_seed(6)
    z = torch.randn(3, 16, 13, 13, generator=g) * 20
    z[:, :, :7, :7] = -torch.rand(3, 16, 7, 7, generator=g)  # whole windows below zero
    z[:, :, 8:, 8:] = 0.0  # exact zeros: ReLU's gradient there is 0
    z[:, :, 2, 9] = z[:, :, 2, 10] = torch.rand(3, 16, generator=g) * 50 + 1  # tied LRN outputs
    _, _, fused_grad, reference_grad = fused_and_reference(z, 2, (3, 2), seed=7)
    assert torch.count_nonzero(reference_grad[:, :, :6, :6]) == 0
    assert torch.allclose(fused_grad, reference_grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(fused_grad[z <= 0], torch.zeros_like(fused_grad[z <= 0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_is_normalized_in_float32(dtype):
    # Activations of about 8: windows' sums of squares mostly below 390, where in bf16
    # k + alpha/n * sum rounds to k and the normalization would vanish. Computed in float32, each
    # value is the float64 formula's rounded to the input's precision: within half a unit in the
    # last place: at most eps/2 of the value (or half the subnormal step).
    g = torch.Generator().manual_seed(9)
    z = (torch.randn(2, 32, 13, 13, generator=g) * 8).to(dtype)
    grad = torch.randn(2, 32, 6, 6, generator=g).to(dtype)
    info = torch.finfo(dtype)
    half_ulp = info.eps / 2 * (1 + 1e-4)  # + float32's own error
    half_subnormal_step = info.smallest_normal * info.eps / 2  # tiny gradients, fp16
    z64 = z.double().requires_grad_()
    reference = torch_relu_lrn_pool(z64, 2, (3, 2))
    (reference_grad,) = torch.autograd.grad(reference, z64, grad.double())
    fused_z = z.clone().requires_grad_()
    fused = relu_lrn_pool(fused_z, 2, 3, 2)
    (fused_grad,) = torch.autograd.grad(fused, fused_z, grad)
    assert fused.dtype == fused_grad.dtype == dtype
    assert fused.is_contiguous(memory_format=torch.channels_last)
    for ours, exact in ((fused, reference), (fused_grad, reference_grad),
                        (local_response_norm(z, 2), lrn_reference(z.double(), 2))):
        assert ((ours.double() - exact).abs() <= half_ulp * exact.abs() + half_subnormal_step).all()


def test_fused_op_gives_the_same_for_any_input_layout_and_returns_channels_last():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(3, 32, 15, 15, generator=g) * 30
    outputs = []
    for layout in (z.contiguous(), z.contiguous(memory_format=torch.channels_last),
                   z.transpose(2, 3).contiguous().transpose(2, 3)):
        layout = layout.detach().requires_grad_()
        out = relu_lrn_pool(layout, 2)
        (grad,) = torch.autograd.grad(out, layout, torch.ones_like(out))
        assert out.is_contiguous(memory_format=torch.channels_last)
        outputs.append((out, grad))
    for out, grad in outputs[1:]:
        assert torch.equal(out, outputs[0][0]) and torch.equal(grad, outputs[0][1])


def test_channels_that_do_not_split_into_the_columns_are_refused():
    x = torch.rand(2, 10, 5, 5)
    for op in (local_response_norm, relu_lrn_pool):
        with pytest.raises(ValueError, match="10 channels cannot be split into 3 groups"):
            op(x, 3)


def test_fused_relu_lrn_pool_gradient_numerically():
    z = (torch.randn(2, 8, 7, 7, dtype=torch.float64) * 30).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: relu_lrn_pool(t, 2, 3, 2), (z,))


def test_torch_compile_runs_the_fused_op_as_it_is(monkeypatch):
    # Compiled code must call the fused op at run time (not a traced copy of it) and give the
    # same values and gradients as torch's own three operations.
    import alexnet2012.layers as layers
    calls = []
    inner = layers._relu_lrn_pool
    monkeypatch.setattr(layers, "_relu_lrn_pool", lambda *a, **k: calls.append(1) or inner(*a, **k))
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: relu_lrn_pool(t * 1.5, 2).sum(dim=(2, 3)), backend="eager")
    g = torch.Generator().manual_seed(9)
    for _ in range(2):
        z = (torch.randn(2, 16, 13, 13, generator=g) * 30).requires_grad_()
        out = compiled(z)
        reference = F.max_pool2d(lrn_reference(F.relu(z * 1.5), 2), 3, 2).sum(dim=(2, 3))
        assert torch.allclose(out, reference, rtol=1e-5, atol=1e-6)
        weights = torch.randn(out.shape, generator=g)
        got, = torch.autograd.grad(out, z, weights)
        expected, = torch.autograd.grad(reference, z, weights)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert len(calls) == 2  # once per compiled call: run eagerly, not traced into the graph
    torch._dynamo.reset()


def test_paper_dropout_masks_at_train_time_and_halves_at_test_time():
    torch.manual_seed(0)
    x = torch.rand(64, 1000) + 1
    y = paper_dropout(x, 0.5, training=True)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # not rescaled (not inverted dropout)
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    assert torch.equal(paper_dropout(x, 0.5, training=False), x * 0.5)


def test_paper_dropout_draws_each_columns_mask_in_column_order():
    x = torch.rand(4, 10) + 1
    torch.manual_seed(5)
    y = paper_dropout(x, 0.5, training=True, groups=2)
    torch.manual_seed(5)
    first = torch.empty(4, 5).bernoulli_(0.5)
    second = torch.empty(4, 5).bernoulli_(0.5)
    assert torch.equal(y, x * torch.cat([first, second], dim=1))


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
    assert torch.allclose(conv2d_2012(x, w, b, stride=4), F.conv2d(padded, w, b, stride=4), atol=1e-4)
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


@pytest.mark.parametrize("op", [lambda z: relu_lrn_pool(z, 2), lambda z: local_response_norm(z, 2)])
def test_differentiating_the_lrn_twice_is_refused_not_wrong(op):
    # the hand-written backward treats its saved terms as constants: a second derivative through
    # it would be silently wrong, so it must raise instead
    z = torch.randn(1, 8, 7, 7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(op(z).square().sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()
