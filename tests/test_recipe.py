"""The 2012 code's recipe (issue 18) against a reimplementation written here from [C]'s
layers-145 files: its forward pass (pre-ReLU LRN, within-map norm, ReLU after pool), parameter
count, init, the 2x bias rate under PaperSGD, and the logged event schedule with resumes."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet, paper
from alexnet2012 import model as model_module
from alexnet2012.errors import UsageError
from alexnet2012.layers import within_map_norm
from alexnet2012.optim import PaperSGD, layer_groups
from alexnet2012.schedule import PaperSchedule, RecipeSchedule

CODE = "2012-code"
LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def naive_map_norm(x, size=5, scale=1e-3, power=0.75):
    """[C]'s rnorm: window from -(size//2) around each pixel, clipped, scale / size^2, k = 1."""
    n, c, h, w = x.shape
    sums = torch.zeros_like(x)
    start = -(size // 2)
    for y in range(h):
        for x0 in range(w):
            ys = slice(max(0, y + start), min(h, y + start + size))
            xs = slice(max(0, x0 + start), min(w, x0 + start + size))
            sums[:, :, y, x0] = (x[:, :, ys, xs] ** 2).sum(dim=(2, 3))
    return x * (1 + scale / size**2 * sums) ** -power


def naive_cross_map_norm(x, size=5, scale=1e-4, power=0.75, min_div=2.0):
    """[C]'s cmrnorm within one column: channels clipped at the column's edges, scale / size."""
    c = x.shape[1]
    sums = torch.zeros_like(x)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i - size // 2 + size)
        sums[:, i] = (x[:, lo:hi] ** 2).sum(dim=1)
    return x * (min_div + scale / size * sums) ** -power


def test_within_map_norm_window_edges_and_k():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64) * 40
    for size in (5, 4, 3):
        want = naive_map_norm(x, size, 1e-3)
        torch.testing.assert_close(within_map_norm(x, size, 1e-3), want, rtol=1e-12, atol=1e-12)
    # one unit in a corner: only the windows that hold it see it, divided by 25 (not the count)
    impulse = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    impulse[0, 0, 0, 0] = 10.0
    probe = torch.full_like(impulse, 1e-3) + impulse
    out = within_map_norm(probe)
    denom = (probe / out) ** (1 / 0.75)
    corner, small = 10.001**2, 1e-6
    assert denom[0, 0, 0, 0].item() == pytest.approx(1 + 1e-3 / 25 * (corner + 8 * small))
    assert denom[0, 0, 2, 2].item() == pytest.approx(1 + 1e-3 / 25 * (corner + 24 * small))
    assert denom[0, 0, 3, 3].item() == pytest.approx(1 + 1e-3 / 25 * 25 * small)
    half = within_map_norm(x.float().bfloat16())  # computed in float32, rounded once
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), naive_map_norm(x), rtol=1e-2, atol=1e-2)
    # k = 1: zero maps pass unchanged
    assert torch.equal(within_map_norm(torch.zeros(1, 2, 5, 5)), torch.zeros(1, 2, 5, 5))


def reference_forward(model, x):
    """layers-145 written out: per column, the columns meeting at conv3, fc6, fc7, fc8."""
    w = {name: [getattr(c, name) for c in model.columns] for name in LAYER_NAMES[:-1]}
    x = F.pad(x, (0, 3, 0, 3))  # [C]'s conv1 overhangs a 224 input by 3 pixels
    conv1 = [F.conv2d(x, m.weight, m.bias, stride=4) for m in w["conv1"]]
    pool1 = [F.relu(F.max_pool2d(naive_cross_map_norm(h), 3, 2)) for h in conv1]
    conv2 = [F.relu(F.conv2d(h, m.weight, m.bias, padding=2)) for h, m in zip(pool1, w["conv2"])]
    pool2 = [F.max_pool2d(naive_map_norm(naive_cross_map_norm(h)), 3, 2) for h in conv2]
    both = torch.cat(pool2, dim=1)
    conv3 = [F.relu(F.conv2d(both, m.weight, m.bias, padding=1)) for m in w["conv3"]]
    conv4 = [F.relu(F.conv2d(h, m.weight, m.bias, padding=1)) for h, m in zip(conv3, w["conv4"])]
    conv5 = [F.conv2d(h, m.weight, m.bias, padding=1) for h, m in zip(conv4, w["conv5"])]
    h = torch.cat([F.relu(F.max_pool2d(h, 3, 2)).flatten(1) for h in conv5], dim=1)
    for name in ("fc6", "fc7"):
        h = torch.cat([0.5 * F.relu(F.linear(h, m.weight, m.bias)) for m in w[name]], dim=1)
    return F.linear(h, model.fc8.weight, model.fc8.bias), conv1, conv2


def test_forward_pass_matches_layers_145_and_uses_no_fused_lrn(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the paper's ReLU -> LRN -> pool op in the 2012-code net")

    monkeypatch.setattr(model_module, "relu_lrn_pool", refuse)
    torch.manual_seed(0)
    model = AlexNet(10, recipe=CODE).double().eval()
    with torch.no_grad():  # large enough activations that both norms matter
        for column in model.columns:
            column.conv1.weight.mul_(20)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)).double() * 50
    want, conv1, conv2 = reference_forward(model, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-9, atol=1e-12)
    # the pre-ReLU LRN is not the paper's LRN of ReLU(z): the test tells them apart
    paper_order = F.max_pool2d(naive_cross_map_norm(F.relu(conv1[0])), 3, 2)
    code_order = F.relu(F.max_pool2d(naive_cross_map_norm(conv1[0]), 3, 2))
    assert (paper_order - code_order).abs().max() > 1e-3 * code_order.abs().max()
    assert (naive_map_norm(conv2[0]) - conv2[0]).abs().max() > 1e-3 * conv2[0].abs().max()


def test_parameter_count_names_and_placement_match_the_layer_shapes():
    with torch.device("meta"):
        code, paper_net = AlexNet(recipe=CODE), AlexNet()
    by_hand = (
        (96 * 3 * 11 * 11 + 96)  # conv1: 2 x 48 kernels
        + (256 * 48 * 5 * 5 + 256)  # conv2: own column
        + (384 * 256 * 3 * 3 + 384)  # conv3: both columns
        + (384 * 192 * 3 * 3 + 384)
        + (256 * 192 * 3 * 3 + 256)
        + (4096 * 2 * 128 * 6 * 6 + 4096)
        + (4096 * 4096 + 4096)
        + (1000 * 4096 + 1000)
    )
    assert sum(p.numel() for p in code.parameters()) == by_hand == 60_965_224
    shapes = {k: v.shape for k, v in code.state_dict().items()}
    assert shapes == {k: v.shape for k, v in paper_net.state_dict().items()}
    with pytest.raises(ValueError, match="recipe must be one of paper, 2012-code"):
        AlexNet(recipe="2013")


@pytest.fixture(scope="module")
def code_model():
    torch.manual_seed(0)
    return AlexNet(recipe=CODE, devices=("cpu", "cpu"))


def test_fc8_sits_with_the_first_column(code_model):
    model = code_model
    assert model.fc8.weight.device == model.devices[0]
    assert all(not hasattr(column, "fc8") for column in model.columns)


def test_initialisation_follows_layers_145(code_model):
    model = code_model
    table = {  # initW, initB
        "conv1": (0.01, 0.0),
        "conv2": (0.01, 1.0),
        "conv3": (0.03, 0.0),
        "conv4": (0.03, 1.0),
        "conv5": (0.03, 1.0),
        "fc6": (0.01, 1.0),
        "fc7": (0.01, 1.0),
        "fc8": (0.01, 0.0),
    }
    for name, (std, bias) in table.items():
        modules = [model.fc8] if name == "fc8" else [getattr(c, name) for c in model.columns]
        w = torch.cat([m.weight.flatten() for m in modules])
        assert abs(w.std().item() - std) < 0.02 * std, name
        assert abs(w.mean().item()) < 0.02 * std, name
        assert all(torch.all(m.bias == bias) for m in modules), name


def test_biases_learn_at_twice_the_weights_rate_under_paper_sgd(code_model):
    model = copy.deepcopy(code_model)
    groups = layer_groups(model, lr=0.01)
    assert [g["name"] for g in groups] == [
        f"{n}.{k}" for n in LAYER_NAMES for k in ("weight", "bias")
    ]
    assert {(g["name"], g["lr"]) for g in groups if g["layer"] == "conv1"} == {
        ("conv1.weight", 0.01),
        ("conv1.bias", 0.02),
    }
    opt = PaperSGD(groups)
    conv1, fc8 = model.columns[1].conv1, model.fc8
    params = [conv1.weight, conv1.bias, fc8.weight, fc8.bias]
    w0 = [p.detach().clone() for p in params]
    v = [torch.zeros_like(p) for p in params]
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # v <- 0.9 v - 0.0005 eps w - eps g (weights); biases: epsB, no decay
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, grad in zip(params, grads):
            p.grad = grad
        opt.step()
        for i, (grad, eps, wc) in enumerate(zip(grads, (0.01, 0.02) * 2, (5e-4, 0.0) * 2)):
            v[i] = 0.9 * v[i] - wc * eps * w0[i] - eps * grad
            w0[i] = w0[i] + v[i]
        for p, want in zip(params, w0):
            torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7)
    # rate 0 freezes the layer, its velocity kept ([C] skips a layer whose eps is 0)
    for group in opt.param_groups:
        group["lr"] = 0.0 if group["layer"] == "conv1" else group["lr"]
    before, velocity = conv1.weight.detach().clone(), opt.state[conv1.weight]["velocity"].clone()
    opt.step()
    assert torch.equal(conv1.weight, before)
    assert torch.equal(opt.state[conv1.weight]["velocity"], velocity)


def logged_rates(epoch, bias_lr="fixed"):
    """layer-params-145.cfg's log: the rates of training epoch ``epoch`` (from 1)."""
    others = 0.01 if epoch < 25 else 1e-3 if epoch < 51 else 1e-4 if epoch < 79 else 1e-5
    conv1 = others if epoch < 67 else 1e-5 if epoch < 72 else 0.0
    rates = {}
    for name in LAYER_NAMES:
        w = conv1 if name == "conv1" else others
        rates[f"{name}.weight"] = w
        if bias_lr == "follows":
            rates[f"{name}.bias"] = 2 * w
        else:  # epsB 0.02 throughout, 0.0 for conv1 once frozen (the file's last values)
            rates[f"{name}.bias"] = 0.0 if w == 0 else 0.02
    return rates


def run_schedule(schedule, first, last):
    decisions = {}
    for epoch in range(first, last + 1):
        decisions[epoch] = schedule.step(epoch, 0.5)
    return decisions


@pytest.mark.parametrize("bias_lr", ["fixed", "follows"])
def test_event_schedule_follows_the_log(bias_lr):
    schedule = RecipeSchedule(paper.recipe(CODE, bias_lr))
    assert schedule.lrs == logged_rates(1, bias_lr) and schedule.colour_noise
    decisions = run_schedule(schedule, 1, 91)
    for epoch, d in decisions.items():
        if epoch == 91:
            assert d.stop and schedule.done
            continue
        want = logged_rates(epoch + 1, bias_lr)
        assert {name: d.lr_for({"name": name}) for name in want} == pytest.approx(want), epoch
        assert d.colour_noise == (epoch + 1 < 67), epoch
        assert not d.stop
    assert [e for e, d in decisions.items() if d.dropped] == [24, 50, 78]
    assert "conv1 weights lr 0" in decisions[71].reason
    with pytest.raises(RuntimeError, match="already stopped"):
        schedule.step(92, 0.5)


@pytest.mark.parametrize("stop_after", [66, 67, 71, 72])
def test_schedule_resumes_exactly_across_67_and_72(stop_after):
    straight = run_schedule(RecipeSchedule(paper.RECIPES[CODE]), 1, 91)
    first = RecipeSchedule(paper.RECIPES[CODE])
    run_schedule(first, 1, stop_after)
    state = json.loads(json.dumps(first.state_dict()))  # plain values, as in a checkpoint
    resumed = RecipeSchedule(paper.RECIPES[CODE])
    resumed.load_state_dict(state)
    assert resumed.colour_noise == (stop_after + 1 < 67)
    assert resumed.lrs == logged_rates(stop_after + 1)
    assert run_schedule(resumed, stop_after + 1, 91) == {
        e: d for e, d in straight.items() if e > stop_after
    }


def test_colour_noise_is_off_from_epoch_67():
    schedule = RecipeSchedule(paper.RECIPES[CODE])
    noise = {1: schedule.colour_noise}
    for epoch in range(1, 91):
        noise[epoch + 1] = schedule.step(epoch, 0.4).colour_noise
        assert noise[epoch + 1] == schedule.colour_noise
    assert [e for e, on in noise.items() if not on] == list(range(67, 92))
    assert PaperSchedule().colour_noise


def test_schedule_rule_checks_and_short_runs():
    short = RecipeSchedule(paper.RECIPES[CODE], max_epochs=2)
    assert not short.step(1, 0.9).stop and short.step(2, 0.9).stop
    other = RecipeSchedule(paper.recipe(CODE, "follows"))
    with pytest.raises(UsageError, match="resume with the same recipe"):
        other.load_state_dict(short.state_dict())
    scaled = RecipeSchedule(paper.RECIPES[CODE], lr=0.02)
    assert scaled.lrs["conv1.bias"] == pytest.approx(0.04)
    assert scaled.step(1, 0.5).lr_for({"name": "fc8.weight"}) == pytest.approx(0.02)


def test_paper_recipe_groups_keep_one_rate():
    with torch.device("meta"):
        model = AlexNet()
    groups = layer_groups(model, lr=0.01)
    assert {g["lr"] for g in groups} == {0.01} and {g["lr_scale"] for g in groups} == {1.0}
    decision = PaperSchedule(drop_epochs=(2,)).step(1, 0.5)
    assert all(decision.lr_for(g) == pytest.approx(0.001) for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("recipe, size", [("paper", 224), ("2012-code", 224), ("caffe", 227)])
def test_replicate_crops_at_the_recipes_input_size_by_default(recipe, size, tmp_path, monkeypatch):
    from alexnet2012.cli import replicate

    monkeypatch.setattr(replicate, "demo_cache", lambda workers, progress: "demo cache")
    args = replicate.build_parser().parse_args(["--recipe", recipe, "--out", str(tmp_path / "r")])
    assert replicate.config_from_args(args).input_size == size
