"""PaperSGD against the update rule of P §5, written out here with plain tensor arithmetic."""

from __future__ import annotations

import io

import pytest
import torch

from alexnet2012.optim import PaperSGD

# Learning rate per step: three steps at 0.01, then the paper's drop to 0.001.
LRS = [0.01, 0.01, 0.01, 0.001, 0.001]


def make_params(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    """A weight matrix, a conv-like 4-d weight and a bias vector."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (2, 3, 2, 2), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def make_grads(params: list[torch.Tensor], steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    """Fixed gradients for every step (independent of the weights, so both sides see the same)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)
    ]


def run_optimizer(opt: torch.optim.Optimizer, params, grads, lrs) -> None:
    for lr, step_grads in zip(lrs, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def reference(weights, grads, lrs, momentum, weight_decay):
    """P §5 by hand: v <- m v - wd lr w - lr g ; w <- w + v, biases (1-d) not decayed."""
    ws = [w.detach().clone() for w in weights]
    vs = [torch.zeros_like(w) for w in ws]
    for lr, step_grads in zip(lrs, grads):
        for i, (w, g) in enumerate(zip(ws, step_grads)):
            wd = weight_decay if w.ndim >= 2 else 0.0
            vs[i] = momentum * vs[i] - wd * lr * w - lr * g
            ws[i] = w + vs[i]
    return ws, vs


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4, 0.1])
def test_matches_paper_rule_across_an_lr_drop(weight_decay):
    params = make_params()
    grads = make_grads(params, len(LRS))
    want_w, want_v = reference(params, grads, LRS, 0.9, weight_decay)
    opt = PaperSGD(params, lr=LRS[0], momentum=0.9, weight_decay=weight_decay)
    run_optimizer(opt, params, grads, LRS)
    for p, w, v in zip(params, want_w, want_v):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.state[p]["velocity"], v, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_any_memory_layout_follows_the_rule(dtype):
    # a transposed (non-contiguous) weight and a channels-last conv weight, as the model holds
    def fresh_params():
        gen = torch.Generator().manual_seed(3)
        params = make_params(dtype=dtype)
        params.append(torch.nn.Parameter(params[0].detach().t().contiguous().t()))  # strides (1, 4)
        conv = torch.randn(4, 3, 5, 5, generator=gen, dtype=dtype)
        params.append(torch.nn.Parameter(conv.contiguous(memory_format=torch.channels_last)))
        return params

    params = fresh_params()
    assert not params[-2].is_contiguous() and not params[-1].is_contiguous()
    grads = make_grads(params, len(LRS))
    opt = PaperSGD(params, lr=LRS[0], momentum=0.9, weight_decay=5e-4)
    run_optimizer(opt, params, grads, LRS)
    want_w, want_v = reference(fresh_params(), grads, LRS, 0.9, 5e-4)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    for p, w, v in zip(params, want_w, want_v):
        torch.testing.assert_close(p.detach(), w, **tol)
        torch.testing.assert_close(opt.state[p]["velocity"], v, **tol)
    assert opt.state[params[-1]]["velocity"].is_contiguous(memory_format=torch.channels_last)


def test_first_step_and_bias_not_decayed():
    w = torch.nn.Parameter(torch.tensor([[2.0, -4.0]], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([2.0, -4.0], dtype=torch.float64))
    opt = PaperSGD([w, b], lr=0.5, momentum=0.9, weight_decay=0.25)
    w.grad = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    b.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    # weight: -0.25*0.5*w - 0.5*g = [-0.25 - 0.5, 0.5 - 0.5]; bias: -0.5*g only
    assert w.detach().tolist() == [[2.0 - 0.75, -4.0 + 0.0]]
    assert b.detach().tolist() == [2.0 - 0.5, -4.0 - 0.5]


def test_group_weight_decay_overrides_default():
    params = make_params()
    grads = make_grads(params, 3)
    want_w, _ = reference(params[:2], [g[:2] for g in grads], [0.01] * 3, 0.9, 0.0)
    opt = PaperSGD([{"params": params[:2], "weight_decay": 0.0}, {"params": params[2:]}], lr=0.01)
    run_optimizer(opt, params, grads, [0.01] * 3)
    for p, w in zip(params[:2], want_w):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)


def test_params_without_grad_are_skipped():
    params = make_params()
    before = params[1].detach().clone()
    opt = PaperSGD(params)
    params[0].grad = torch.ones_like(params[0])
    params[2].grad = torch.ones_like(params[2])
    opt.step()
    assert torch.equal(params[1].detach(), before)
    assert not opt.state[params[1]]["velocity"].any()  # zero from the start, untouched
    assert not torch.equal(params[0].detach(), make_params()[0].detach())


def test_mixed_dtypes_in_one_group():
    """float32 and float64 tensors go through separate foreach batches; each follows the rule."""
    p32, p64 = make_params(dtype=torch.float32), make_params(dtype=torch.float64)
    g32, g64 = make_grads(p32, len(LRS)), make_grads(p64, len(LRS))
    want32, _ = reference(p32, g32, LRS, 0.9, 5e-4)
    want64, _ = reference(p64, g64, LRS, 0.9, 5e-4)
    opt = PaperSGD(p32 + p64, lr=LRS[0])
    run_optimizer(opt, p32 + p64, [a + b for a, b in zip(g32, g64)], LRS)
    for p, w in zip(p32, want32):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-6)
    for p, w in zip(p64, want64):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)


def test_same_as_torch_sgd_until_the_drop_then_different():
    lr_before, lr_after, m, wd = 0.01, 0.001, 0.9, 5e-4
    ours, theirs = make_params(), make_params()
    grads = make_grads(ours, 4)
    opt = PaperSGD(ours, lr=lr_before, momentum=m, weight_decay=wd)
    # torch SGD equivalent: same lr/momentum/decay, no dampening, biases undecayed.
    ref = torch.optim.SGD(
        [{"params": theirs[:2]}, {"params": theirs[2:], "weight_decay": 0.0}],
        lr=lr_before,
        momentum=m,
        weight_decay=wd,
        dampening=0.0,
    )
    run_optimizer(opt, ours, grads[:3], [lr_before] * 3)
    run_optimizer(ref, theirs, grads[:3], [lr_before] * 3)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)
    # One step after the drop. torch: w -= lr_after*(m*buf + d), with buf = -v/lr_before;
    # paper: w += m*v - lr_after*d. The difference is m*v*(lr_after/lr_before - 1).
    velocities = [opt.state[p]["velocity"].clone() for p in ours]
    run_optimizer(opt, ours, grads[3:], [lr_after])
    run_optimizer(ref, theirs, grads[3:], [lr_after])
    for a, b, v in zip(ours, theirs, velocities):
        diff = b.detach() - a.detach()
        assert diff.abs().max() > 1e-6
        torch.testing.assert_close(diff, m * v * (lr_after / lr_before - 1), rtol=1e-9, atol=1e-15)


def test_state_dict_round_trip_continues_identically():
    params, grads = make_params(), make_grads(make_params(), len(LRS))
    opt = PaperSGD(params, lr=LRS[0])
    run_optimizer(opt, params, grads[:2], LRS[:2])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    run_optimizer(opt, params, grads[2:], LRS[2:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt2 = PaperSGD(resumed, lr=0.5, momentum=0.0, weight_decay=0.0)  # overwritten by the load
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["momentum"] == 0.9
    run_optimizer(opt2, resumed, grads[2:], LRS[2:])
    for a, b in zip(params, resumed):
        assert torch.equal(a.detach(), b.detach())


def test_closure_is_evaluated_with_grad_and_its_loss_returned():
    w = torch.nn.Parameter(torch.tensor([[3.0]], dtype=torch.float64))
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=0.0)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0
    assert w.item() == pytest.approx(3.0 - 0.1 * 6.0)


@pytest.mark.parametrize(
    "kwargs", [{"lr": -0.1}, {"momentum": -0.5}, {"weight_decay": float("nan")}]
)
def test_rejects_invalid_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        PaperSGD(make_params(), **kwargs)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parameters_on_two_devices():
    cpu = make_params()
    gpu = [torch.nn.Parameter(p.detach().cuda()) for p in make_params(seed=2)]
    g_cpu, g_gpu = make_grads(cpu, len(LRS)), make_grads(make_params(seed=2), len(LRS), seed=3)
    want_cpu, _ = reference(cpu, g_cpu, LRS, 0.9, 5e-4)
    want_gpu, _ = reference([p.cpu() for p in gpu], g_gpu, LRS, 0.9, 5e-4)
    opt = PaperSGD(cpu + gpu, lr=LRS[0])
    grads = [a + [g.cuda() for g in b] for a, b in zip(g_cpu, g_gpu)]
    run_optimizer(opt, cpu + gpu, grads, LRS)
    for p, w in zip(cpu + gpu, want_cpu + want_gpu):
        torch.testing.assert_close(p.detach().cpu(), w, rtol=1e-12, atol=1e-14)
