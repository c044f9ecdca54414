"""The paper's ablations: the networks without dropout or a middle conv layer (against counts and
activations written out here), and scripts/ablations.py's runs, table, reuse and resumption."""

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet, paper
from alexnet2012.cli import ablations, replicate
from alexnet2012.data import cache_info, make_synthetic_imagenet, prepare_cache
from alexnet2012.errors import UsageError
from alexnet2012.train import Trainer


def images(n=2, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 50


def conv_count(cin, cout, k):
    return cout * cin * k * k + cout


@pytest.mark.parametrize("removed", ["conv3", "conv4"])
def test_a_removed_middle_layer_leaves_the_rest_and_the_next_takes_its_input(removed):
    full, cut = AlexNet(10), AlexNet(10, remove_conv=removed)
    # per column: conv3 sees both columns' 128 maps, conv4 and conv5 their own 192
    lost = {"conv3": conv_count(256, 192, 3) * 2, "conv4": conv_count(192, 192, 3) * 2}[removed]
    if removed == "conv3":  # conv4 now crosses the columns: 256 maps in instead of 192
        lost += (conv_count(192, 192, 3) - conv_count(256, 192, 3)) * 2
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(cut) == lost
    assert [layer.name for layer in cut.layers] == [
        n
        for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
        if n != removed
    ]
    # the layer after it sees the ReLU of the layer before it
    before, after = {"conv3": ("conv2", "conv4"), "conv4": ("conv3", "conv5")}[removed]
    seen = {}
    for k, column in enumerate(cut.columns):
        getattr(column, before).register_forward_hook(
            lambda m, i, o, k=k: seen.__setitem__((before, k), o)
        )
        getattr(column, after).register_forward_hook(
            lambda m, i, o, k=k: seen.__setitem__((after, k), i[0])
        )
    cut.eval()(images())
    lrn = dict(size=paper.LRN_SIZE, alpha=paper.LRN_ALPHA, beta=paper.LRN_BETA, k=paper.LRN_K)
    outputs = [F.relu(seen[(before, k)]) for k in range(2)]
    if before == "conv2":  # conv2's LRN and pooling stay with it
        outputs = [F.max_pool2d(F.local_response_norm(h, **lrn), 3, 2) for h in outputs]
    for k in range(2):  # crossing (conv4 after conv3's removal): both columns' maps, in order
        expected = torch.cat(outputs, dim=1) if after == "conv4" else outputs[k]
        torch.testing.assert_close(seen[(after, k)], expected, rtol=1e-4, atol=1e-4)


def test_without_dropout_training_is_deterministic_and_test_time_unscaled():
    torch.manual_seed(0)
    model = AlexNet(10, dropout=False).train()
    x = images()
    torch.testing.assert_close(model(x), model(x))
    with_dropout = AlexNet(10)
    with_dropout.load_state_dict(model.state_dict())
    assert not torch.equal(with_dropout.train()(x), with_dropout(x))
    seen = []
    model.fc8.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.eval()(x)
    fc7 = model.columns[0].fc7  # fc8 sees fc7's ReLU, with no x0.5 at test time
    assert torch.all(seen[0] >= 0) and seen[0].shape == (2, 4096) and fc7.out_features == 2048


def test_the_ablation_options_are_checked_and_listed_as_deviations(tmp_path, capsys):
    with pytest.raises(UsageError, match=r"^--remove-conv must be one of conv3, conv4 \(the"):
        replicate.main(["--remove-conv", "conv5", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    args = replicate.build_parser().parse_args(["--no-dropout", "--remove-conv", "conv3"])
    assert args.no_dropout and args.remove_conv == "conv3"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=4, val_per_class=2, seed=1, workers=1,
        progress=False,
    )  # fmt: skip
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


def test_ablations_run_once_each_resume_when_interrupted_and_tabulate(
    cache, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "abl"
    argv = ["--data", str(cache), "--out", str(out), "--epochs", "1", "--batch-size", "4"]
    argv += ["--only", "no-dropout", "--workers", "0", "--quiet"]
    real_run = Trainer.run

    def interrupted(self):  # Ctrl-C as the second run starts
        if self.config.out.endswith("no-dropout"):
            raise KeyboardInterrupt
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", interrupted)
    with pytest.raises(KeyboardInterrupt, match="continue with: python scripts/ablations.py"):
        ablations.main(argv)
    assert (out / "baseline" / "results.json").exists()
    assert (out / "no-dropout" / "config.json").exists()
    assert not (out / "no-dropout" / "results.json").exists()
    baseline_results = (out / "baseline" / "results.json").read_bytes()

    monkeypatch.setattr(Trainer, "run", real_run)
    capsys.readouterr()
    assert ablations.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/2] baseline: reused" in printed and "[2/2] no-dropout: resumed" in printed
    assert (out / "baseline" / "results.json").read_bytes() == baseline_results  # not rerun
    config = json.loads((out / "no-dropout" / "config.json").read_text())["settings"]
    assert config["dropout"] is False and config["seed"] == 0 and config["epochs"] == 1

    text = (out / "ablations.md").read_text()
    rows = {
        r.split(" | ")[0].lstrip("| "): r.split(" | ")
        for r in text.splitlines()
        if r.startswith("| ")
    }
    ledger = json.loads((out / "ablations.json").read_text())
    for name in ("baseline", "no-dropout"):
        results = json.loads((out / name / "results.json").read_text())
        assert rows[name][2] == f"{100 * results['ten_view']['top1']:.2f}"
        assert rows[name][3] == f"{100 * results['ten_view']['top5']:.2f}"
        train = ledger[name]["train"]
        n = cache_info(cache).train_images  # every training image, each counted once
        assert train["images"] == n and round(train["top1"] * n, 4) == round(train["top1"] * n)
        gap = 100 * (results["center"]["top1"] - train["top1"])
        assert rows[name][9].rstrip(" |") == f"{gap:+.2f}"
    base = json.loads((out / "baseline" / "results.json").read_text())["ten_view"]["top1"]
    drop = json.loads((out / "no-dropout" / "results.json").read_text())["ten_view"]["top1"]
    assert rows["no-dropout"][4] == f"{100 * (drop - base):+.2f}"
    assert re.search(r"seed 0, 1 epoch", text) and "substantial overfitting" in text

    again = argv[:5] + ["2"] + argv[6:]  # other settings into the same folder: refused
    with pytest.raises(UsageError, match="give another --out"):
        ablations.main(again)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--only", "no-foo"], "--only takes ablations of one-column, no-lrn"),
        (["--remove-conv", "conv5"], "--remove-conv must be one of conv3, conv4"),
        (["--only", "no-middle-conv"], "--only takes ablations of .*, no-conv3, no-conv4, got"),
        (["--only", "no-conv3", "--remove-conv", "conv3"], "with --only, name their runs there"),
    ],
)
def test_bad_choices_are_one_line(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        ablations.main(["--out", str(tmp_path / "x"), *extra])
    assert not (tmp_path / "x").exists()


def readme_ablation_names():
    """The run names in the first column of the README's ablation table."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Ablations", 1)[1].split("\n\n#", 1)[0]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)


def plan_of(*argv):
    return ablations.plan(ablations.build_parser().parse_args(["--out", "x", *argv]))


def test_the_readmes_names_are_the_runs_and_only_takes_each():
    names = readme_ablation_names()
    assert names == [n for n in plan_of() if n != "baseline"]
    for name in names:
        assert list(plan_of("--only", name)) == ["baseline", name]


def test_a_middle_layer_run_removes_the_layer_it_names():
    runs = plan_of("--only", "no-conv3,no-lrn,no-conv3")
    assert list(runs) == ["baseline", "no-conv3", "no-lrn"]
    assert runs["no-conv3"][0][-2:] == ["--remove-conv", "conv3"]
    assert runs["no-conv3"][1] is paper.ablation("no-middle-conv")
    assert list(plan_of("--remove-conv", "conv3,conv4"))[-2:] == ["no-conv3", "no-conv4"]


def test_every_paper_ablation_has_a_switch():
    assert {a.name for a in paper.ABLATIONS} == {*ablations.SWITCHES, ablations.MIDDLE}
