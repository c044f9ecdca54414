"""Grey data (R = G = B: scans, X-rays, digit sets): its RGB covariance has rank 1, so two
eigenvalues are round-off around 0. They are stored clamped at 0, so the 2012 code's colour
noise (sqrt of each eigenvalue) stays finite; a non-finite input is named as such, not blamed
on the learning rate."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet2012.data import TrainStream, prepare_cache
from alexnet2012.data.stats import load_stats

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """A 2-class ImageFolder of grey JPEGs (12 train, 2 val per class) and its prepared cache."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 2)):
        for c, name in enumerate(("dark", "light")):
            (root / "xrays" / split / name).mkdir(parents=True)
            for i in range(count):
                base = 60 + 120 * c
                level = np.clip(base + rng.normal(0, 40, (40, 48)), 0, 255).astype(np.uint8)
                Image.fromarray(level, "L").convert("RGB").save(
                    root / "xrays" / split / name / f"{i}.jpg"
                )
    prepare_cache(root / "xrays", root / "cache", workers=1, progress=False)
    return root


def replicate(*args):
    return subprocess.run(
        [sys.executable, "scripts/replicate.py", "--quiet", "--workers", "0", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_grey_data_has_a_rank_one_covariance_and_no_negative_eigenvalue(grey):
    doc = json.loads((grey / "cache" / "stats.json").read_text())
    values = np.array(doc["eigenvalues"])
    assert np.all(values >= 0), values
    # the independent fact: every pixel has R = G = B, so all variance lies on (1, 1, 1)/sqrt(3)
    covariance = np.array(doc["covariance"])
    assert np.allclose(covariance, covariance[0, 0], rtol=1e-9)
    assert values[0] == pytest.approx(3 * covariance[0, 0], rel=1e-9)
    assert np.allclose(values[1:], 0, atol=1e-12)
    assert np.allclose(np.abs(np.array(doc["eigenvectors"])[:, 0]), 3**-0.5)


@pytest.mark.parametrize("lighting", ["paper", "2012"])
def test_grey_batches_are_finite_under_both_lightings(grey, lighting):
    with TrainStream(grey / "cache", batch_size=8, workers=0, lighting=lighting) as stream:
        for x, _ in stream.epoch(0):
            assert x.isfinite().all()


def test_an_old_stats_file_with_a_negative_eigenvalue_loads_clamped(grey, tmp_path):
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(grey / "cache"), str(cache)], check=True)
    doc = json.loads((cache / "stats.json").read_text())
    doc["eigenvalues"][2] = -5.7e-17  # what np.linalg.eigh gave before the clamp
    (cache / "stats.json").write_text(json.dumps(doc))
    stats = load_stats(cache)
    assert stats.eigenvalues[2] == 0.0 and stats.eigenvalues[0] == doc["eigenvalues"][0]
    with TrainStream(cache, batch_size=8, workers=0, lighting="2012") as stream:
        assert all(x.isfinite().all() for x, _ in stream.epoch(0))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper", "2012-code"])
def test_an_all_grey_imagefolder_trains_an_epoch(grey, tmp_path, recipe):
    out = tmp_path / recipe
    result = replicate(
        "--data", grey / "cache", "--out", out, "--recipe", recipe, "--epochs", 1,
        "--batch-size", 8,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and np.isfinite(metrics[0]["train_loss"]), metrics
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "xrays (2 classes)"  # the images' folder, not the cache's


def test_a_nan_in_an_input_batch_is_named_not_blamed_on_the_lr(grey, tmp_path):
    """A NaN planted in batch 2 of every epoch through the lighting shift, as a corrupt cache
    entry would be: the loader replays it the same way when the loss is looked at."""
    child = (
        "import sys, torch\n"
        "from alexnet2012.data import stream\n"
        "from alexnet2012.cli import replicate\n"
        "from alexnet2012.errors import run_cli\n"
        "raw = stream.TrainStream.raw\n"
        "def planted(self, first, stop):\n"
        "    for position, (crops, labels, shift) in enumerate(raw(self, first, stop), first):\n"
        "        if position % self.per_epoch == 1:\n"
        "            shift = shift.clone(); shift[0, 0] = float('nan')\n"
        "        yield crops, labels, shift\n"
        "stream.TrainStream.raw = planted\n"
        "run_cli(replicate.main)\n"
    )
    out = tmp_path / "run"
    args = ["--quiet", "--workers", "0", "--data", grey / "cache", "--out", out, "--epochs", 1]
    args += ["--batch-size", 8, "--checkpoint-minutes", 0]
    result = subprocess.run(
        [sys.executable, "-c", child, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: the inputs of epoch 1, batch 2 are not finite"), lines
    assert "stats.json" in lines[0] and "--lr" not in lines[0]
