"""TrainStep: the paper's SGD step, eager or compiled, fp32 or bf16 autocast."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet, layers
from alexnet2012.optim import PaperSGD
from alexnet2012.step import TrainStep


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g) * 50, torch.randint(0, 10, (n,), generator=g)


def trained(compile: bool, steps: int = 3, accumulate: int = 1, bf16: bool = False, n: int = 4):
    """Losses and final gradients and weights of ``steps`` steps of ``n`` images from the same
    start, eval mode (dropout a fixed x0.5, so that eager and compiled draw no random numbers)."""
    torch.manual_seed(0)
    model = AlexNet(10).eval()
    step = TrainStep(
        model,
        PaperSGD(model.parameters()),
        accumulate=accumulate,
        compile=compile,
        compile_backend="aot_eager",
        bf16=bf16,
    )
    losses = [step(*batch(n, seed=s)).item() for s in range(steps)]
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return losses, grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_step_is_forward_loss_backward_and_the_papers_update():
    torch.manual_seed(0)
    model = AlexNet(10)
    reference = AlexNet(10)
    reference.load_state_dict(model.state_dict())
    x, y = batch()
    torch.manual_seed(1)
    loss = TrainStep(model, PaperSGD(model.parameters(), lr=0.01))(x, y)
    torch.manual_seed(1)
    expected = F.cross_entropy(reference(x), y)
    expected.backward()
    assert torch.equal(loss, expected.detach())
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        decay = 5e-4 if p.ndim >= 2 else 0.0  # the first step: v = -decay*lr*w - lr*g
        assert torch.allclose(p, q - 0.01 * decay * q - 0.01 * q.grad, rtol=0, atol=1e-7), name


def test_accumulated_chunks_give_the_whole_batch_update():
    losses, grads, weights = trained(False, steps=1)
    chunked_losses, chunked_grads, chunked_weights = trained(False, steps=1, accumulate=2)
    assert chunked_losses[0] == pytest.approx(losses[0], rel=1e-5)
    for name in grads:
        scale = grads[name].abs().max().item()
        assert torch.allclose(chunked_grads[name], grads[name], atol=1e-4 * scale), name


@pytest.mark.slow
def test_the_compiled_step_traces_whole_and_matches_eager_over_three_steps(monkeypatch):
    # in bf16 autocast, which the traced graph must carry too (2 images: bf16 is slow on a CPU
    # without native bf16, and 2 keeps the batch dimension from being specialised to 1). Eager
    # takes the LRN's formula as compiling does: the blocked LRN's other float32 rounding,
    # carried through bf16 layers, moved conv1's gradient by 10% over three steps (torch 2.11).
    torch._dynamo.reset()
    with monkeypatch.context() as patch:
        patch.setattr(layers, "blocked", lambda z: False)
        eager = trained(False, bf16=True, n=2)
    compiled = trained(True, bf16=True, n=2)  # fullgraph=True: any graph break would raise
    torch._dynamo.reset()
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5)
    for name in eager[1]:
        for ours, theirs in (
            (compiled[1][name], eager[1][name]),
            (compiled[2][name], eager[2][name]),
        ):
            assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item()), (
                name
            )


@pytest.mark.slow
def test_the_compiled_step_with_the_fused_ops_is_traced_once():
    """Once the kernels ran, ``available()`` reads another value than at the first trace, and
    PaperSGD's velocities exist: neither may recompile the step (``fail_on_recompile``)."""
    child = Path(__file__).with_name("compiled_step_child.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, str(child)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "no recompile" in result.stdout, result.stderr[-3000:]


def test_bf16_autocast_trains_with_a_float32_loss_and_float32_weights():
    torch.manual_seed(0)
    model = AlexNet(10)
    step = TrainStep(model, PaperSGD(model.parameters()), bf16=True)
    loss = step(*batch(2))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters()
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("devices", [None, ("cuda:0", "cuda:0")])
def test_the_compiled_step_traces_whole_on_a_gpu(devices):
    # both columns on one GPU (a side stream when eager, none in the compiled graph), the fused
    # Triton ops as custom ops in the graph, bf16 autocast
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = AlexNet(10, devices=devices)
    if devices is None:
        model.cuda()
    step = TrainStep(
        model, PaperSGD(model.parameters()), bf16=True, compile=True, compile_backend="aot_eager"
    )
    x, y = batch()
    losses = [step(x.cuda(), y.cuda()).item() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    torch._dynamo.reset()
