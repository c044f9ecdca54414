"""--recipe 2012-code through the harness: recorded and resumed with the run, per-layer rates in
the optimizer, colour noise switched off by the schedule, the report marked against [C]'s log."""

import json

import pytest

from alexnet2012 import paper
from alexnet2012 import train as train_module
from alexnet2012.cli import replicate
from alexnet2012.config import TrainConfig
from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.report import format_comparison
from alexnet2012.train import Trainer

RESULTS = {"center": {"top1": 0.41, "top5": 0.19}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=4, val_per_class=2, seed=5, workers=1
    )
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


def test_a_2012_code_run_records_its_recipe_and_is_marked_against_the_code_log(cache, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(cache), "--out", str(out), "--recipe", "2012-code", "--epochs", "1"]
    assert replicate.main([*argv, "--batch-size", "3", "--workers", "0", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["recipe"] == "2012-code"
    assert config["settings"]["lighting"] == "2012"  # [C]'s colour noise, the recipe's default
    assert any(d.startswith("the 2012 code's recipe") for d in config["deviations"])
    assert any("reading 'fixed'" in d for d in config["deviations"])
    assert "recipe" in (out / "report.md").read_text()
    on_imagenet = format_comparison(RESULTS, "ILSVRC-2012 val", recipe="2012-code")
    starred = [ln for ln in on_imagenet.splitlines() if ln.startswith("* [C] log")]
    assert len(starred) == 2 and "* the 2012 code's figure for this data" in on_imagenet
    assert "the paper's figure" not in on_imagenet
    on_paper = format_comparison(RESULTS, "ILSVRC-2012 val")
    assert "* the paper's figure for this data" in on_paper and "* P Table 2" in on_paper
    # --recipe is fixed for the run's life: a resume that gives it is refused in one line
    with pytest.raises(Exception, match="drop --recipe"):
        replicate.main(["--resume", "--out", str(out), "--recipe", "paper", "--quiet"])


def test_the_optimizer_has_the_recipes_rates_per_layer(cache, tmp_path):
    run = Trainer(
        TrainConfig(
            cache=str(cache), out=str(tmp_path / "r"), recipe="2012-code", batch_size=4, workers=0
        ),
        progress=False,
        log=lambda s: None,
    )
    rates = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    assert rates["conv1.weight"] == pytest.approx(0.01) and rates["fc8.bias"] == pytest.approx(0.02)
    assert run.config.epochs == TrainConfig.epochs  # the config's default; the CLI gives 91


def test_colour_noise_goes_off_at_epoch_67_and_the_stream_follows(cache, tmp_path, monkeypatch):
    opened = []
    real = Trainer._open_train_stream

    def record(self):
        real(self)
        opened.append((self.epoch, self._lighting()))

    monkeypatch.setattr(Trainer, "_open_train_stream", record)
    chunks = []
    real_stream = train_module.TrainStream

    def stream(*args, **kwargs):
        chunks.append(kwargs["crop_chunk"])
        return real_stream(*args, **kwargs)

    monkeypatch.setattr(train_module, "TrainStream", stream)
    config = TrainConfig(
        cache=str(cache),
        out=str(tmp_path / "r"),
        recipe="2012-code",
        epochs=67,
        batch_size=4,
        eval_batch_size=4,
        workers=0,
        ten_view=False,
    )
    run = Trainer(config, progress=False, log=lambda s: None)
    run.schedule.load_state_dict({**run.schedule.state_dict(), "epoch": 65})  # as if resumed
    run.epoch = 66
    assert run._lighting() == "paper"
    run.run()
    assert opened == [(66, "paper"), (67, "none")]
    assert chunks == [32, 32]  # [C] crops and flips 32 images alike
    rates = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    assert rates["conv1.weight"] == pytest.approx(1e-5)  # the epoch-67 event
    assert paper.RECIPES["2012-code"].epochs == 91


def test_the_2012_code_crops_and_flips_32_images_alike():
    """[C]'s convdata.py draws one crop and flip per chunk of 32 images (crop_chunk = 32)."""
    import numpy as np

    from alexnet2012.data import make_plan

    rows = np.arange(300)
    own = make_plan(rows, 128, 224, seed=3, epoch=1)
    chunked = make_plan(rows, 128, 224, seed=3, epoch=1, crop_chunk=32)
    assert (chunked.rows == own.rows).all() and (chunked.alpha == own.alpha).all()
    for name in ("oy", "ox", "flip"):
        mine, theirs = getattr(own, name).ravel(), getattr(chunked, name).ravel()
        for start in range(0, mine.size, 32):
            assert (theirs[start : start + 32] == mine[start]).all(), (name, start)
    assert paper.RECIPES["2012-code"].crop_chunk == 32 and paper.RECIPES["paper"].crop_chunk == 1
