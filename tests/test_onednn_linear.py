"""The fc layers' oneDNN products against ``F.linear`` in float64 and against the model with the
plain ``F.linear`` path; the cases that must fall back to ``F.linear``."""
import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet, onednn_linear
from alexnet2012.onednn_linear import Linear, linear, set_onednn, uses_onednn

torch.set_num_threads(2)

needs_onednn = pytest.mark.skipif(
    onednn_linear._ONEDNN_LINEAR is None or not torch.backends.mkldnn.is_available(),
    reason="this PyTorch build has no oneDNN linear op")


def float64_reference(x, weight, bias, grad):
    """Output and (x, weight, bias) gradients of F.linear in float64."""
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    out = F.linear(*leaves)
    out.backward(grad.double())
    return out, [t.grad for t in leaves]


def count_onednn_calls(monkeypatch):
    calls = []
    op = onednn_linear._ONEDNN_LINEAR

    def counted(*args):
        calls.append(args[0].shape)
        return op(*args)
    monkeypatch.setattr(onednn_linear, "_ONEDNN_LINEAR", counted)
    return calls


@needs_onednn
@pytest.mark.parametrize("n, fin, fout, strided", [(1, 7, 5, ""), (32, 300, 200, ""),
                                                   (5, 2304, 96, ""), (6, 300, 200, "bias"),
                                                   (6, 300, 200, "x weight bias")])
def test_forward_and_gradients_equal_float64_linear(monkeypatch, n, fin, fout, strided):
    calls = count_onednn_calls(monkeypatch)
    g = torch.Generator().manual_seed(n)
    # the inputs named in `strided` as non-contiguous views: x transposed, weight and bias every
    # second element (a strided bias alone once gave wrong sums in oneDNN)
    x = (torch.randn(fin, n, generator=g).t() if "x" in strided
         else torch.randn(n, fin, generator=g)).requires_grad_()
    weight = ((torch.randn(fout, 2 * fin, generator=g) * 0.1)[:, ::2] if "weight" in strided
              else torch.randn(fout, fin, generator=g) * 0.1).requires_grad_()
    bias = (torch.randn(2 * fout, generator=g)[::2] if "bias" in strided
            else torch.randn(fout, generator=g)).requires_grad_()
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        assert t.is_contiguous() != (name in strided)
    # the upstream gradient as the fc layers get it: a slice of a wider tensor (torch.cat's
    # backward), not contiguous
    grad = torch.randn(n, 2 * fout, generator=g)[:, fout:]
    out = linear(x, weight, bias)
    out.backward(grad)
    assert len(calls) == 3  # forward, input gradient, weight gradient: all three in oneDNN
    ref_out, ref_grads = float64_reference(x, weight, bias, grad)
    assert out.dtype == torch.float32
    for ours, ref in zip([out, x.grad, weight.grad, bias.grad], [ref_out, *ref_grads]):
        assert ours.shape == ref.shape
        assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@needs_onednn
def test_only_the_gradients_asked_for_are_computed(monkeypatch):
    calls = count_onednn_calls(monkeypatch)
    x = torch.randn(4, 6)  # the first layer's input: no gradient wanted
    layer = Linear(6, 3)
    layer(x).sum().backward()
    assert len(calls) == 2 and x.grad is None  # forward and weight gradient only
    assert torch.allclose(layer.bias.grad, torch.full((3,), 4.0))
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(3, 6))  # sum's gradient: all ones


# mkldnn.flags() also sets oneDNN's TF32 switch, which warns on builds without Intel GPU support
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_falls_back_to_f_linear_where_onednn_does_not_apply(monkeypatch):
    calls = count_onednn_calls(monkeypatch)
    layer = Linear(6, 3)
    x = torch.randn(4, 6)
    x64 = x.double()
    assert not uses_onednn(x64, layer.weight.double())
    assert torch.equal(linear(x64, layer.weight.double(), layer.bias.double()),
                       F.linear(x64, layer.weight.double(), layer.bias.double()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, layer.weight)
        assert layer(x).dtype == torch.bfloat16  # autocast's own linear, as nn.Linear would be
    with torch.backends.mkldnn.flags(enabled=False):
        assert not uses_onednn(x, layer.weight)
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert not uses_onednn(torch.randn(0, 6), layer.weight)
    assert not uses_onednn(torch.randn(2, 4, 6), layer.weight)
    assert calls == []
    monkeypatch.setattr(onednn_linear, "_ONEDNN_LINEAR", None)  # a build without the op
    assert not uses_onednn(x, layer.weight)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_the_layer_keeps_nn_linear_s_parameters_and_state_dict():
    torch.manual_seed(0)
    ours = Linear(6, 3)
    torch.manual_seed(0)
    plain = torch.nn.Linear(6, 3)
    assert isinstance(ours, torch.nn.Linear)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 plain.state_dict().values()))


@needs_onednn
def test_the_network_computes_the_same_with_onednn_and_with_f_linear(monkeypatch):
    # the fast path against the reference path in the whole net: logits and every gradient,
    # in eval mode (dropout a fixed x0.5); the conv layers run the same kernels in both
    torch.manual_seed(0)
    model = AlexNet(10).eval()
    x, target = torch.randn(3, 3, 224, 224) * 50, torch.tensor([1, 4, 7])

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits, target).backward()
        return logits.detach(), [p.grad for p in model.parameters()]

    calls = count_onednn_calls(monkeypatch)
    fast_logits, fast_grads = logits_and_grads()
    assert len(calls) == 5 * 3  # fc6 and fc7 of each column, fc8: 3 products each
    set_onednn(model, False)
    ref_logits, ref_grads = logits_and_grads()
    assert len(calls) == 5 * 3
    assert torch.allclose(fast_logits, ref_logits, rtol=1e-5, atol=1e-5)
    for (name, _), fast, ref in zip(model.named_parameters(), fast_grads, ref_grads):
        assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item()), name


def test_torch_compile_traces_f_linear(monkeypatch):
    # while dynamo traces, the layer is F.linear, which the compiler knows and may fuse
    calls = count_onednn_calls(monkeypatch)
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = Linear(6, 3)
    x = torch.randn(4, 6, requires_grad=True)
    out = torch.compile(layer, backend="eager")(x)
    assert calls == []
    assert torch.allclose(out, F.linear(x, layer.weight, layer.bias))
    out.sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(4, 6))
    torch._dynamo.reset()
