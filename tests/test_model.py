"""The network against the paper (P §3, Figure 2) and against computations written
out here: shapes, counts, placements, column independence, init, dropout, grouped weights."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet, grouped_state_dict, load_grouped_state_dict, paper
from alexnet2012 import model as model_module


def small_batch(n=2, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g) * 50


def column_outputs(model, x, names):
    """Each column's pre-activation output of the named layers (forward hooks)."""
    seen = {}
    hooks = []
    for k, column in enumerate(model.columns):
        for name in names:
            hooks.append(
                getattr(column, name).register_forward_hook(
                    lambda m, i, o, key=(name, k): seen.__setitem__(key, o.detach().clone())
                )
            )
    model(x)
    for h in hooks:
        h.remove()
    return seen


def test_parameter_count_matches_the_paper_and_a_hand_count():
    by_hand = (
        96 * 3 * 11 * 11
        + 96
        + 256 * 48 * 25
        + 256
        + 384 * 256 * 9
        + 384
        + 384 * 192 * 9
        + 384
        + 256 * 192 * 9
        + 256
        + 4096 * 9216
        + 4096
        + 4096 * 4096
        + 4096
        + 1000 * 4096
        + 1000
    )
    count = sum(p.numel() for p in AlexNet().parameters())
    assert count == by_hand == paper.PARAMETERS == 60_965_224


@pytest.mark.parametrize("size", [224, 227])
def test_logits_shape_for_both_input_sizes(size):
    assert AlexNet(10, input_size=size)(small_batch(3, size)).shape == (3, 10)


@pytest.mark.parametrize("size", [0, 223, 225, 256])
def test_other_input_sizes_are_refused_naming_the_accepted_ones(size):
    with pytest.raises(ValueError, match="224.*227"):
        AlexNet(input_size=size)


def test_images_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        AlexNet()(small_batch(1, 227))


def test_layer_shapes_per_column():
    model = AlexNet(devices=("cpu", "cpu"))
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    out = column_outputs(model, small_batch(1), names)
    expected = {
        "conv1": (48, 55, 55),
        "conv2": (128, 27, 27),
        "conv3": (192, 13, 13),
        "conv4": (192, 13, 13),
        "conv5": (128, 13, 13),
        "fc6": (2048,),
        "fc7": (2048,),
    }
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):  # Figure 2, both columns
        size, channels = paper.FEATURE_MAPS[name]
        assert expected[name] == (channels // 2, size, size)
    for name, shape in expected.items():
        for k in range(2):
            assert tuple(out[name, k].shape[1:]) == shape, name
    weights = {
        "conv1": (48, 3, 11, 11),
        "conv2": (128, 48, 5, 5),
        "conv3": (192, 256, 3, 3),
        "conv4": (192, 192, 3, 3),
        "conv5": (128, 192, 3, 3),
        "fc6": (2048, 9216),
        "fc7": (2048, 4096),
    }
    for name, shape in weights.items():
        assert tuple(getattr(model.columns[1], name).weight.shape) == shape
    assert tuple(model.fc8.weight.shape) == (1000, 4096)


def test_one_column_comparison_net_halves_conv1_to_conv4_only():
    model = AlexNet(columns=1)
    col = model.columns[0]
    assert [
        getattr(col, n).weight.shape[0] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")
    ] == [48, 128, 192, 192, 256]
    assert tuple(col.fc6.weight.shape) == (4096, 256 * 36)
    assert tuple(col.fc7.weight.shape) == (4096, 4096)
    assert model(small_batch(2)).shape == (2, 1000)


@pytest.mark.parametrize("kwargs", [dict(lrn=False), dict(overlapping_pool=False)])
def test_ablation_switches_keep_the_output_shape(kwargs):
    assert AlexNet(7, **kwargs)(small_batch(2)).shape == (2, 7)


def test_ablation_switches_change_the_function():
    x = small_batch(2)
    torch.manual_seed(0)
    base = AlexNet(7).eval()
    for kwargs in (dict(lrn=False), dict(overlapping_pool=False)):
        other = AlexNet(7, **kwargs).eval()
        other.load_state_dict(base.state_dict())
        assert not torch.allclose(base(x), other(x), atol=1e-6), kwargs


@pytest.mark.parametrize("train", [True, False])
def test_one_device_and_two_devices_compute_the_same_function_and_gradients(train):
    torch.manual_seed(0)
    one = AlexNet(10)
    two = AlexNet(10, devices=("cpu", "cpu"))
    two.load_state_dict(one.state_dict())  # same parameter names whatever the placement
    one.train(train)
    two.train(train)
    x = small_batch(4)
    target = torch.tensor([0, 3, 5, 9])
    outputs, grads = [], []
    for model in (one, two):
        torch.manual_seed(123)  # same dropout masks
        out = model(x)
        F.cross_entropy(out, target).backward()
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-7), name


def test_columns_cross_only_at_conv3_and_the_fc_layers():
    torch.manual_seed(0)
    model = AlexNet(10, devices=("cpu", "cpu")).eval()
    x = small_batch(2)
    names = ["conv2", "conv3", "fc6"]
    before = column_outputs(model, x, names)
    with torch.no_grad():
        model.columns[1].conv1.weight.add_(torch.randn_like(model.columns[1].conv1.weight) * 0.05)
    after = column_outputs(model, x, names)
    assert torch.equal(before["conv2", 0], after["conv2", 0])  # conv2 sees its own column only
    assert not torch.allclose(before["conv2", 1], after["conv2", 1])
    assert not torch.allclose(before["conv3", 0], after["conv3", 0])  # conv3 sees both
    assert not torch.allclose(before["fc6", 0], after["fc6", 0])


def test_conv4_and_conv5_see_their_own_column_only():
    torch.manual_seed(0)
    model = AlexNet(10, devices=("cpu", "cpu")).eval()
    x = small_batch(2)
    before = column_outputs(model, x, ["conv4", "conv5", "fc6"])
    with torch.no_grad():
        model.columns[1].conv3.weight.mul_(1.5)
    after = column_outputs(model, x, ["conv4", "conv5", "fc6"])
    assert torch.equal(before["conv4", 0], after["conv4", 0])
    assert torch.equal(before["conv5", 0], after["conv5", 0])
    assert not torch.allclose(before["fc6", 0], after["fc6", 0])


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    model = AlexNet()
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for layer in paper.LAYERS:
        modules = (
            [model.fc8] if layer.name == "fc8" else [getattr(c, layer.name) for c in model.columns]
        )
        w = torch.cat([m.weight.flatten() for m in modules])
        assert abs(w.std().item() - 0.01) < 0.0005, layer.name
        assert abs(w.mean().item()) < 0.0005, layer.name
        for m in modules:
            assert torch.all(m.bias == (1.0 if layer.name in ones else 0.0)), layer.name


def test_dropout_is_the_papers_not_inverted():
    torch.manual_seed(0)
    model = AlexNet(10, devices=("cpu", "cpu"))
    fc7_in = {}
    model.columns[0].fc7.register_forward_pre_hook(lambda m, i: fc7_in.__setitem__("x", i[0]))
    fc6_out = {}
    for k in range(2):
        model.columns[k].fc6.register_forward_hook(
            lambda m, i, o, k=k: fc6_out.__setitem__(k, F.relu(o.detach()))
        )
    x = small_batch(8)
    model.train()
    model(x)
    relu6 = torch.cat([fc6_out[0], fc6_out[1]], dim=1)
    seen = fc7_in["x"]
    kept = seen != 0
    assert torch.equal(seen[kept], relu6[kept])  # kept units pass unscaled
    live = relu6 != 0
    dropped = (live & ~kept).sum().item() / live.sum().item()
    assert 0.45 < dropped < 0.55
    model.eval()
    model(x)
    assert torch.allclose(fc7_in["x"], 0.5 * torch.cat([fc6_out[0], fc6_out[1]], dim=1))


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    model = AlexNet(10)
    x = small_batch(2)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_the_224_input_is_the_227_input_with_three_zero_rows_and_columns_appended():
    torch.manual_seed(0)
    m224 = AlexNet(10, input_size=224).eval()
    m227 = AlexNet(10, input_size=227).eval()
    m227.load_state_dict(m224.state_dict())
    x = small_batch(2, 224)
    padded = torch.zeros(2, 3, 227, 227)
    padded[:, :, :224, :224] = x
    assert torch.allclose(m224(x), m227(padded), atol=1e-5)
    assert 1 + math.ceil((224 - 11) / 4) == 55 == (227 - 11) // 4 + 1


def reference_grouped_forward(sd, x, size):
    """The whole net in the single-tensor layout, written with torch.nn.functional only."""
    if size == 224:
        x = F.pad(x, (0, 3, 0, 3))

    def lrn(h):
        a, b = h.chunk(2, dim=1)
        return torch.cat(
            [
                F.local_response_norm(a, 5, 1e-4, 0.75, 2.0),
                F.local_response_norm(b, 5, 1e-4, 0.75, 2.0),
            ],
            dim=1,
        )

    h = F.max_pool2d(lrn(F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=4))), 3, 2)
    h = F.max_pool2d(
        lrn(F.relu(F.conv2d(h, sd["conv2.weight"], sd["conv2.bias"], padding=2, groups=2))), 3, 2
    )
    h = F.relu(F.conv2d(h, sd["conv3.weight"], sd["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, sd["conv4.weight"], sd["conv4.bias"], padding=1, groups=2))
    h = F.max_pool2d(
        F.relu(F.conv2d(h, sd["conv5.weight"], sd["conv5.bias"], padding=1, groups=2)), 3, 2
    )
    h = 0.5 * F.relu(F.linear(h.flatten(1), sd["fc6.weight"], sd["fc6.bias"]))
    h = 0.5 * F.relu(F.linear(h, sd["fc7.weight"], sd["fc7.bias"]))
    return F.linear(h, sd["fc8.weight"], sd["fc8.bias"])


@pytest.mark.parametrize("size", [224, 227])
def test_grouped_state_dict_has_the_caffe_shapes_and_the_same_function(size):
    torch.manual_seed(0)
    model = AlexNet(input_size=size).eval()
    sd = grouped_state_dict(model)
    shapes = {
        "conv1.weight": (96, 3, 11, 11),
        "conv2.weight": (256, 48, 5, 5),
        "conv3.weight": (384, 256, 3, 3),
        "conv4.weight": (384, 192, 3, 3),
        "conv5.weight": (256, 192, 3, 3),
        "fc6.weight": (4096, 9216),
        "fc7.weight": (4096, 4096),
        "fc8.weight": (1000, 4096),
    }
    assert {k: tuple(v.shape) for k, v in sd.items() if k.endswith("weight")} == shapes
    assert torch.equal(sd["conv1.weight"][:48], model.columns[0].conv1.weight)
    assert torch.equal(sd["fc6.weight"][2048:], model.columns[1].fc6.weight)
    x = small_batch(2, size)
    with torch.no_grad():
        assert torch.allclose(
            model(x), reference_grouped_forward(sd, x, size), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("devices", [None, ("cpu", "cpu")])
def test_gradients_equal_autograd_through_the_torch_reference(devices):
    # The model's hand-written LRN/pool backward and channels-last path against autograd through
    # the whole net written in torch.nn.functional (eval mode: dropout is a fixed x0.5).
    # float64, so that no pooling window's maximum flips between the two on a rounding difference.
    torch.manual_seed(0)
    model = AlexNet(10, devices=devices).double().eval()
    sd = {k: v.detach().clone().requires_grad_() for k, v in grouped_state_dict(model).items()}
    x, target = small_batch(3).double(), torch.tensor([1, 4, 7])
    F.cross_entropy(model(x), target).backward()
    reference = torch.autograd.grad(
        F.cross_entropy(reference_grouped_forward(sd, x, 224), target), list(sd.values())
    )
    grads = AlexNet(10).double()
    for p, g in zip(grads.parameters(), model.parameters()):
        p.data = g.grad
    for (name, ours), ref in zip(grouped_state_dict(grads).items(), reference):
        assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item()), name


def test_the_network_is_twice_differentiable_as_the_torch_reference_is():
    # A gradient penalty (the squared norm of d loss / d input) differentiated once more: the
    # second derivative through every layer, against the torch.nn.functional reference.
    torch.manual_seed(0)
    model = AlexNet(10).double().eval()
    sd = {k: v.detach().clone().requires_grad_() for k, v in grouped_state_dict(model).items()}
    x, target = small_batch(2).double(), torch.tensor([1, 4])

    def penalty_grads(forward, params):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(F.cross_entropy(forward(xi), target), xi, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), params)

    ours = dict(
        zip(
            [n for n, _ in model.named_parameters()], penalty_grads(model, list(model.parameters()))
        )
    )
    reference = penalty_grads(lambda xi: reference_grouped_forward(sd, xi, 224), list(sd.values()))
    grads = AlexNet(10).double()
    for name, p in grads.named_parameters():
        p.data = ours[name]
    for (name, got), ref in zip(grouped_state_dict(grads).items(), reference):
        assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item()), name


def test_any_input_memory_layout_gives_the_same_logits():
    torch.manual_seed(0)
    x = small_batch(2)
    for devices in (None, ("cpu", "cpu")):
        model = AlexNet(10, devices=devices).eval()
        with torch.no_grad():
            expected = model(x)
            for layout in (
                x.contiguous(memory_format=torch.channels_last),
                x.transpose(2, 3).contiguous().transpose(2, 3),
            ):
                assert torch.allclose(model(layout), expected, rtol=1e-5, atol=1e-6)


def test_grouped_state_dict_round_trip_into_both_placements():
    torch.manual_seed(0)
    source = AlexNet(10).eval()
    sd = grouped_state_dict(source)
    x = small_batch(2)
    expected = source(x)
    for devices in (None, ("cpu", "cpu")):
        torch.manual_seed(99)
        target = AlexNet(10, devices=devices).eval()
        load_grouped_state_dict(target, sd)
        assert torch.allclose(target(x), expected, atol=1e-6)
        for name, tensor in grouped_state_dict(target).items():
            assert torch.equal(tensor, sd[name])


def test_grouped_state_dict_errors_name_the_key():
    model = AlexNet(10)
    sd = grouped_state_dict(model)
    bad = dict(sd)
    del bad["conv3.bias"]
    with pytest.raises(KeyError, match="conv3.bias"):
        load_grouped_state_dict(model, bad)
    bad = dict(sd, extra=torch.zeros(1))
    with pytest.raises(KeyError, match="extra"):
        load_grouped_state_dict(model, bad)
    bad = dict(sd)
    bad["conv2.weight"] = torch.zeros(256, 96, 5, 5)
    before = model.columns[0].conv2.weight.clone()
    with pytest.raises(ValueError, match="conv2.weight"):
        load_grouped_state_dict(model, bad)
    assert torch.equal(model.columns[0].conv2.weight, before)  # nothing written


def test_grouped_layout_needs_two_columns():
    with pytest.raises(ValueError, match="columns=2"):
        grouped_state_dict(AlexNet(columns=1))


def test_device_errors_are_clear():
    with pytest.raises(ValueError, match="cuda:7 does not exist"):
        AlexNet(devices=("cuda:7", "cpu"))
    with pytest.raises(ValueError, match="one device per column"):
        AlexNet(devices=("cpu",))
    with pytest.raises(ValueError, match="not a device name"):
        AlexNet(devices=("gpu0", "cpu"))


class FakeStream:
    """A CUDA stream's stand-in on the CPU that logs what it is made to wait for."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")


def test_columns_sharing_a_gpu_overlap_on_a_side_stream_synchronised_only_at_crossings(monkeypatch):
    # The stream protocol of two columns on one GPU, run on the CPU with logging stand-ins: the
    # side stream waits for the main stream only where the columns' inputs are made, the main
    # stream for the side stream only where the columns cross, column 1's layers are queued on
    # the side stream, both columns in column order (the one-device path's dropout masks).
    log, current = [], []
    main, side = FakeStream("main", log), FakeStream("side", log)
    current.append(main)

    @contextlib.contextmanager
    def on(stream):
        current.append(stream)
        yield
        current.pop()

    monkeypatch.setattr(model_module, "_side_streams", lambda devices: [None, side])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(
        torch.Tensor,
        "record_stream",
        lambda self, stream: log.append(f"memory kept for {stream.name}"),
    )
    torch.manual_seed(0)
    one = AlexNet(10).train()
    two = AlexNet(10, devices=("cpu", "cpu")).train()
    two.load_state_dict(one.state_dict())
    for k, column in enumerate(two.columns):
        for name, module in column.named_children():
            module.register_forward_pre_hook(
                lambda m, i, name=name, k=k: log.append(f"{name} column {k} on {current[-1].name}")
            )
    two.fc8.register_forward_pre_hook(lambda m, i: log.append(f"fc8 on {current[-1].name}"))
    x = small_batch(2)
    torch.manual_seed(5)
    expected_out = one(x)
    log.clear()
    torch.manual_seed(5)
    out = two(x)
    assert torch.allclose(out, expected_out, rtol=1e-5, atol=1e-6)  # same masks, same columns

    fork = ["side waits for main", "memory kept for side"]
    join = ["main waits for side", "memory kept for main"]
    expected = list(fork)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        if name in ("conv3", "fc6", "fc7"):  # the crossings (P Figure 2)
            expected += join + fork
        expected += [f"{name} column 0 on main", f"{name} column 1 on side"]
    expected += join + ["fc8 on main"]
    assert log == expected


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def exact_cuda():
    """float64 comparisons on CUDA with fixed cuDNN algorithms and no TF32: in float32 the
    rounding differences between cuDNN's and the CPU's algorithms (1e-6) can make a max-pool
    window pick another of two near-equal winners, which moves a conv gradient by 1e-3 of its
    largest value. tests/conftest.py puts the flags back."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def logits_and_gradients(model, x, target, seed=123):
    """Logits and every parameter's gradient of the cross-entropy, on the CPU; dropout masks
    drawn after ``torch.manual_seed(seed)``."""
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(x)
    F.cross_entropy(out, target.to(out.device)).backward()
    return out.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters()}


def assert_close(a, b, rtol=1e-9):
    assert torch.allclose(a[0], b[0], rtol=rtol, atol=rtol * b[0].abs().max().item())
    for name in b[1]:
        assert torch.allclose(
            a[1][name], b[1][name], rtol=rtol, atol=rtol * b[1][name].abs().max().item()
        ), name


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("devices", [None, ("cuda:0", "cpu"), ("cuda:0", "cuda:0")])
def test_cuda_placements_match_the_cpu(devices, exact_cuda):
    # eval mode (dropout a fixed x0.5), so that the CPU and CUDA random streams play no part
    torch.manual_seed(0)
    reference = AlexNet(10).double().eval()
    model = AlexNet(10, devices=devices).double()
    model.load_state_dict(reference.state_dict())
    if devices is None:
        model.cuda()
    model.eval()
    x, target = small_batch(4).double(), torch.tensor([0, 3, 5, 9])
    assert model(x).device == torch.device("cuda", 0)
    assert_close(logits_and_gradients(model, x, target), logits_and_gradients(reference, x, target))


@cuda
@pytest.mark.cuda
def test_two_columns_on_one_gpu_train_as_one_device_does(exact_cuda):
    # train mode: the side-stream path draws the same dropout masks as the one-device path
    torch.manual_seed(0)
    one = AlexNet(10).double().cuda().train()
    two = AlexNet(10, devices=("cuda:0", "cuda:0")).double().train()
    two.load_state_dict(one.state_dict())
    x, target = small_batch(4).double().cuda(), torch.tensor([0, 3, 5, 9])
    for seed in (1, 2):  # a second step reuses the side stream and its memory
        assert_close(
            logits_and_gradients(two, x, target, seed), logits_and_gradients(one, x, target, seed)
        )


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("devices", [None, ("cuda:0", "cuda:0")])
def test_the_fused_gpu_kernels_compute_what_the_reference_path_computes(devices, exact_cuda):
    # float32 (the fused kernels' precision), eval mode; the same weights with the fused kernels
    # and with PyTorch's own ops (fused=False)
    torch.manual_seed(0)
    fused = AlexNet(10, devices=devices)
    reference = AlexNet(10, devices=devices)
    reference.load_state_dict(fused.state_dict())
    reference.fused = False
    if devices is None:
        fused.cuda(), reference.cuda()
    x, target = small_batch(4).cuda(), torch.tensor([0, 3, 5, 9])
    assert_close(
        logits_and_gradients(fused.eval(), x, target),
        logits_and_gradients(reference.eval(), x, target),
        rtol=1e-4,
    )
