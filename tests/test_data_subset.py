"""Subsets (--subset CLASSES[:TRAIN_PER_CLASS]): the documented seeded choice, stable and exact in
its counts, refused when larger than the data; the option's one-line error."""

import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

import pytest
from test_data_imagefolder import CLASSES, make_folder

from alexnet2012 import options
from alexnet2012.data import ImageNet, cache_info, make_synthetic_imagenet
from alexnet2012.data.subset import SEED, Subset
from alexnet2012.errors import UsageError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """ILSVRC layout: 8 WNID train folders of 4 images, flat val (2 a class) with its devkit."""
    root = tmp_path_factory.mktemp("subset") / "imagenet"
    make_synthetic_imagenet(
        root,
        classes=8,
        train_per_class=4,
        val_per_class=2,
        oddities=False,
        workers=0,
        progress=False,
    )
    return root


def smallest(keys: dict[str, str], k: int) -> list[str]:
    """The k names whose sha256 of their key is smallest (the documented rule), sorted."""
    digest = {n: hashlib.sha256(key.encode()).hexdigest() for n, key in keys.items()}
    return sorted(sorted(keys, key=lambda n: digest[n])[:k])


def test_the_documented_choice_exact_counts_and_labels(synthetic):
    full = {split: ImageNet(synthetic, split) for split in ("train", "val")}
    subset = Subset(3, 2)
    train, val = (ImageNet(synthetic, s, subset=subset) for s in ("train", "val"))
    chosen = smallest({w: f"{SEED}:{w}" for w in full["train"].wnids}, 3)
    assert train.wnids == val.wnids == chosen and len(chosen) == 3
    assert train.class_to_idx == {w: i for i, w in enumerate(chosen)}
    assert train.layout == val.layout == "ilsvrc" and train.subset == subset
    for label, wnid in enumerate(chosen):
        files = [p for p, t in full["train"].samples if full["train"].wnids[t] == wnid]
        keep = smallest({p: f"{SEED}:{wnid}/{Path(p).name}" for p in files}, 2)
        assert [p for p, t in train.samples if t == label] == keep  # in sorted order
        every_val = [p for p, t in full["val"].samples if full["val"].wnids[t] == wnid]
        assert [p for p, t in val.samples if t == label] == every_val and len(every_val) == 2
    assert len(train) == 3 * 2 and len(val) == 3 * 2 and train.targets == [0, 0, 1, 1, 2, 2]
    assert [p for p, _ in val.samples] == sorted(p for p, _ in val.samples)  # file order kept


def test_the_choice_is_pinned():
    """The rule's outcome on fixed names: a change here changes every recorded subset."""
    names = [f"n0{i:07d}" for i in range(1440764, 1440784)]
    assert Subset(4).choose_classes(names, "x") == [
        "n01440764",
        "n01440771",
        "n01440776",
        "n01440780",
    ]
    files = [f"n01440764_{i}.JPEG" for i in range(1, 11)]
    assert Subset(4, 3).choose_train({"n01440764": files}, "x") == {
        "n01440764": {"n01440764_3.JPEG", "n01440764_5.JPEG", "n01440764_9.JPEG"}
    }


def test_stable_and_nested(synthetic):
    first = ImageNet(synthetic, "train", subset=Subset(5, 3))
    again = ImageNet(synthetic, "train", subset=Subset(5, 3))
    assert first.samples == again.samples
    fewer = ImageNet(synthetic, "train", subset=Subset(2, 1))
    assert set(fewer.wnids) < set(first.wnids)
    assert {p for p, _ in fewer.samples} < {p for p, _ in first.samples}
    # another seed: another choice
    assert ImageNet(synthetic, "train", subset=Subset(5, seed=1)).wnids != first.wnids
    assert ImageNet(synthetic, "train", subset=Subset(8, 4)).samples == (
        ImageNet(synthetic, "train").samples
    )


def test_subset_of_an_imagefolder(tmp_path):
    root = make_folder(tmp_path / "pets")
    full = {split: ImageNet(root, split) for split in ("train", "val")}
    train, val = (ImageNet(root, s, subset=Subset(4, 5)) for s in ("train", "val"))
    chosen = smallest({c: f"{SEED}:{c}" for c in CLASSES}, 4)
    assert train.wnids == val.wnids == chosen and train.layout == "imagefolder"
    for label, name in enumerate(chosen):
        folder = root / "train" / name
        files = [p for p, t in full["train"].samples if full["train"].wnids[t] == name]
        keep = smallest(
            {p: f"{SEED}:{name}/{Path(p).relative_to(folder).as_posix()}" for p in files}, 5
        )
        assert [p for p, t in train.samples if t == label] == keep
        every_val = [p for p, t in full["val"].samples if full["val"].wnids[t] == name]
        assert [p for p, t in val.samples if t == label] == every_val
    assert len(train) == 4 * 5
    # the fewest images of a class here is 5
    assert "but " + str(root / "train") in message(root, subset=Subset(6, 6))


def message(root, split="train", **kw) -> str:
    with pytest.raises(UsageError) as err:
        ImageNet(root, split, **kw)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_larger_than_the_data_is_refused(synthetic):
    assert message(synthetic, subset=Subset(9)) == (
        f"--subset 9 asks for 9 classes, but {synthetic / 'train'} has 8: choose at most 8"
    )
    assert message(synthetic, "val", subset=Subset(9, 1)).startswith("--subset 9:1 asks for 9 ")
    (synthetic / "train" / "n01000000").mkdir()  # a class with one image, chosen among 8 of 9
    try:
        (synthetic / "train" / "n01000000" / "x.JPEG").write_bytes(b"")
        text = message(synthetic, subset=Subset(9, 2))
        assert text == (
            f"--subset 9:2 asks for 2 training images per class, but "
            f"{synthetic / 'train'}/n01000000 has 1: choose at most 1"
        )
    finally:
        os.remove(synthetic / "train" / "n01000000" / "x.JPEG")
        (synthetic / "train" / "n01000000").rmdir()


def test_record_and_names():
    subset = Subset(100, 260)
    assert subset.as_dict() == {"classes": 100, "train_per_class": 260, "seed": SEED}
    assert Subset.from_dict(subset.as_dict()) == subset
    assert Subset.from_dict(Subset(7).as_dict()) == Subset(7)
    assert (subset.name, subset.text) == ("100 classes x 260", "100:260")
    assert (Subset(100).name, Subset(100).text) == ("100 classes", "100")
    for bad in ({"classes": 0, "train_per_class": None, "seed": 1}, {"classes": 3}, [3], None):
        with pytest.raises(ValueError, match="not a subset record"):
            Subset.from_dict(bad)
    with pytest.raises(ValueError):
        Subset.from_dict({"classes": True, "train_per_class": None, "seed": 1})


@pytest.mark.parametrize("text", ["0", "100:0", "abc", "100:", ":5", "1.5", "-3", "10:2:3", ""])
def test_option_bad_text_is_one_line(text):
    with pytest.raises(UsageError) as err:
        options.subset(text)
    assert str(err.value) == (
        "--subset takes CLASSES or CLASSES:TRAIN_PER_CLASS, whole numbers from 1 "
        f"(e.g. 100 or 100:260), got {text!r}"
    )


def test_option_good_text():
    assert options.subset("100") == (100, None) and options.subset("100:260") == (100, 260)
    assert options.subset(None) is None


def test_prepare_imagenet_refuses_bad_text(tmp_path, capsys, monkeypatch):
    script = SCRIPTS / "prepare_imagenet.py"
    argv = [str(script), str(tmp_path / "src"), str(tmp_path / "cache"), "--subset", "100:x"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    out, err = capsys.readouterr()
    assert (exit_.value.code, out) == (2, "")
    assert err == (
        "error: --subset takes CLASSES or CLASSES:TRAIN_PER_CLASS, whole numbers from 1 "
        "(e.g. 100 or 100:260), got '100:x'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_prepare_imagenet_prepares_only_the_subset(synthetic, tmp_path, capsys, monkeypatch):
    script = SCRIPTS / "prepare_imagenet.py"
    cache = tmp_path / "cache"
    argv = [str(script), str(synthetic), str(cache), "--subset", "3:2", "--workers", "0", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    out, _ = capsys.readouterr()
    assert exit_.value.code == 0 and "train: 6 of 6 images usable" in out
    assert "val: 6 of 6 images usable" in out
    info = cache_info(cache)
    assert info.wnids == ImageNet(synthetic, "train", subset=Subset(3, 2)).wnids
    assert json.loads((cache / "manifest.json").read_text())["subset"] == Subset(3, 2).as_dict()
