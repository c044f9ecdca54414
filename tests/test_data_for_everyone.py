"""The replication on data other than full ImageNet, end to end through scripts/replicate.py: a
torchvision ImageFolder with any class names, and a seeded ImageNet subset."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from alexnet2012.cli import replicate
from alexnet2012.data import cache_info, make_synthetic_imagenet

QUICK = ["--epochs", "1", "--batch-size", "3", "--workers", "0", "--quiet", "--no-ten-view"]


def _image(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_an_imagefolder_with_any_class_names_trains_end_to_end(tmp_path):
    root = tmp_path / "pets"
    names = ["Cat", "dog", "zebra crossing"]  # torchvision's order: sorted, case-sensitive
    for split, count in (("train", 3), ("val", 2)):
        for c, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                suffix = (".png", ".JPG", ".webp")[i % 3]
                _image(root / split / name / f"{i}{suffix}", seed=100 * c + 10 * i + len(split))
    out = tmp_path / "run"
    assert replicate.main(["--data", str(root), "--out", str(out), *QUICK]) == 0
    info = cache_info(tmp_path / "pets_cache")
    assert info.wnids == sorted(names) and info.train_images == 9 and info.val_images == 6
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "pets (3 classes)" and config["num_classes"] == 3
    report = (out / "report.md").read_text()
    assert "NOT comparable with this run on pets (3 classes)" in report
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_subset_run_records_its_classes_and_shows_no_1000_class_figures(tmp_path):
    root = tmp_path / "imagenet"
    make_synthetic_imagenet(
        root, classes=5, train_per_class=4, val_per_class=2, seed=3, oddities=False, workers=1
    )
    out = tmp_path / "run"
    argv = ["--data", str(root), "--subset", "2:3", "--out", str(out), *QUICK]
    assert replicate.main(argv) == 0
    wnids = sorted(p.name for p in (root / "train").iterdir())
    # the documented rule, written out: the 2 names of smallest sha256("2012:<name>")
    chosen = sorted(
        sorted(wnids, key=lambda n: hashlib.sha256(f"2012:{n}".encode()).hexdigest())[:2]
    )
    info = cache_info(tmp_path / "imagenet_cache_subset2x3")
    assert info.wnids == chosen and info.train_images == 2 * 3 and info.val_images == 2 * 2
    config = json.loads((out / "config.json").read_text())
    assert config["subset"] == {"classes": 2, "train_per_class": 3, "seed": 2012}
    assert config["classes"] == chosen
    assert any("a subset of ImageNet" in d for d in config["deviations"])
    report = (out / "report.md").read_text()
    assert "NOT the paper's 1000-class task" in report
    assert "P Table" not in report and "torchvision alexnet" not in report


@pytest.mark.parametrize("subset", ["6", "2:5"])
def test_a_subset_larger_than_the_data_is_refused_before_any_work(tmp_path, subset, capsys):
    root = tmp_path / "imagenet"
    make_synthetic_imagenet(
        root, classes=5, train_per_class=4, val_per_class=1, seed=3, oddities=False, workers=1
    )
    out = tmp_path / "run"
    with pytest.raises(Exception) as info:
        replicate.main(["--data", str(root), "--subset", subset, "--out", str(out), *QUICK])
    assert type(info.value).__name__ == "UsageError" and "\n" not in str(info.value)
    assert not out.exists()
