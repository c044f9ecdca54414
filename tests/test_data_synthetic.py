"""The synthetic ILSVRC-2012 stand-in: real layout and devkit, determinism, varied sizes,
distinct classes."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from alexnet2012.data import ImageNet, make_synthetic_imagenet
from alexnet2012.data import synthetic as synthetic_module
from alexnet2012.errors import UsageError


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("a") / "imagenet"
    make_synthetic_imagenet(root, classes=6, train_per_class=10, val_per_class=4, seed=3, workers=1)
    return root


def test_same_seed_same_bytes_any_workers_other_seed_other_bytes(synthetic, tmp_path):
    make_synthetic_imagenet(
        tmp_path / "b", classes=6, train_per_class=10, val_per_class=4, seed=3, workers=2
    )
    assert digest(tmp_path / "b") == digest(synthetic)  # 84 images: drawn by a pool of 2
    make_synthetic_imagenet(
        tmp_path / "c", classes=6, train_per_class=10, val_per_class=4, seed=4, workers=1
    )
    assert (
        digest(tmp_path / "c")["val/ILSVRC2012_val_00000005.JPEG"]
        != digest(synthetic)["val/ILSVRC2012_val_00000005.JPEG"]
    )


def test_real_layout_and_devkit_read_the_torchvision_way(synthetic):
    wnids = sorted(p.name for p in (synthetic / "train").iterdir())
    assert len(wnids) == 6 and all(
        len(w) == 9 and w.startswith("n0") and w[1:].isdigit() for w in wnids
    )
    assert all(len(list((synthetic / "train" / w).glob(f"{w}_*.JPEG"))) == 10 for w in wnids)
    val = sorted((synthetic / "val").iterdir())
    assert [p.name for p in val] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 25)]
    data = synthetic / "ILSVRC2012_devkit_t12" / "data"
    # torchvision's parser: loadmat(squeeze_me=True)["synsets"], field 4 = num_children,
    # fields 0-2 = ID, WNID, words
    meta = scipy.io.loadmat(data / "meta.mat", squeeze_me=True)["synsets"]
    assert meta.dtype.names[:5] == ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children")
    leaves = [m for m, n in zip(meta, list(zip(*meta))[4]) if n == 0]
    parents = [m for m in meta if int(m[4]) > 0]
    idcs, leaf_wnids, words = list(zip(*leaves))[:3]
    assert (
        sorted(leaf_wnids) == wnids
        and parents
        and all(len(np.atleast_1d(p[5])) == p[4] for p in parents)
    )
    assert (
        sorted(idcs) == list(range(1, 7))
        and [leaf_wnids[idcs.index(i)] for i in range(1, 7)] != wnids
    )
    truth = [
        int(line) for line in (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    ]
    assert len(truth) == 24 and sorted(set(truth)) == list(range(1, 7))
    counts = np.bincount(truth)[1:]
    assert (counts == 4).all() and truth != sorted(truth)  # 4 per class, shuffled


def test_images_vary_in_size_and_aspect(synthetic):
    sizes = []
    for path in sorted((synthetic / "train").rglob("*.JPEG"))[:40]:
        if path.stat().st_size:
            try:
                with Image.open(path) as img:
                    sizes.append(img.size)
            except OSError:
                pass  # the truncated one
    w, h = np.array(sizes).T
    assert w.min() >= 180 and h.min() >= 180 and w.max() <= 500 and h.max() <= 500
    aspect = w / h
    assert aspect.min() < 0.8 and aspect.max() > 1.25 and len(set(sizes)) > 30


def test_classes_are_distinct_to_a_simple_classifier(synthetic):
    # Bernoulli naive Bayes on which colours occur (4 levels per channel, a bin counts when it holds
    # 0.2% of the pixels), trained on train, tested on val; chance is 1/6. The random backgrounds
    # defeat plain colour-histogram matching (about chance here); positions, shapes and textures
    # are left to the CNN, so this is only a floor.
    def colours(path):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR)) // 64
        return np.bincount((pixels @ [16, 4, 1]).ravel(), minlength=64) / 64**2 > 0.002

    def usable(data):
        return [(colours(p), t) for p, t in data.samples if _decodes(p)]

    train, val = usable(ImageNet(synthetic, "train")), usable(ImageNet(synthetic, "val"))
    x, y = np.array([f for f, _ in train]), np.array([t for _, t in train])
    present = np.array([(x[y == c].sum(axis=0) + 1) / ((y == c).sum() + 2) for c in range(6)])
    scores = [f @ np.log(present).T + (~f) @ np.log(1 - present).T for f, _ in val]
    accuracy = np.mean([np.argmax(s) == t for s, (_, t) in zip(scores, val)])
    assert accuracy > 0.7


def _decodes(path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except OSError:
        return False


def test_argument_errors(tmp_path):
    # option values: checked by the command line (alexnet2012.options), asserted here
    for kwargs in (
        dict(classes=361),
        dict(classes=0),
        dict(val_per_class=0),
        dict(train_per_class=0),
        dict(workers=-2),
        dict(seed=-1),
    ):
        with pytest.raises(AssertionError):
            make_synthetic_imagenet(
                tmp_path / "x", **{"classes": 1, "train_per_class": 1, "val_per_class": 1, **kwargs}
            )
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    with pytest.raises(UsageError, match="already exists and is not an empty folder"):
        make_synthetic_imagenet(tmp_path / "full", classes=2, train_per_class=1, val_per_class=1)


def test_unusable_output_folders_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out, kwargs, message in [
        (Path("/proc/nope"), {}, "cannot create the folder /proc/nope"),
        (tmp_path / "afile" / "sub", {}, "cannot create the folder .*afile/sub"),
        (tmp_path / "afile", {}, "afile is a file, not a folder: choose another output folder"),
    ]:
        with pytest.raises(UsageError, match=message):
            make_synthetic_imagenet(
                out, **{"classes": 1, "train_per_class": 1, "val_per_class": 1, **kwargs}
            )
    assert not (tmp_path / "x").exists() and (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(
    "existed, nested",
    [(False, False), (True, False), (False, True)],
    ids=["new folder", "empty folder", "new parent folders"],
)
def test_an_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch, existed, nested):
    out = tmp_path / "a" / "b" / "out" if nested else tmp_path / "out"
    if existed:
        out.mkdir()
    drawn, draw = [], synthetic_module._make_image

    def interrupted_after_5(job):
        if len(drawn) == 5:
            raise KeyboardInterrupt
        drawn.append(draw(job))

    monkeypatch.setattr(synthetic_module, "_make_image", interrupted_after_5)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_imagenet(out, classes=2, train_per_class=4, val_per_class=2, workers=0)
    assert len(drawn) == 5  # stopped part-way
    assert sorted(tmp_path.rglob("*")) == ([out] if existed else [])
    monkeypatch.undo()
    make_synthetic_imagenet(out, classes=2, train_per_class=4, val_per_class=2, workers=0)
    assert len(ImageNet(out, "train")) == 8 and len(ImageNet(out, "val")) == 4


def test_a_failing_worker_leaves_nothing_behind(tmp_path, monkeypatch):
    write = synthetic_module._write

    def disk_full_at_val_3(path, rgb, oddity):
        if path.name == "ILSVRC2012_val_00000003.JPEG":
            raise OSError(28, "No space left on device")
        write(path, rgb, oddity)

    monkeypatch.setattr(synthetic_module, "_write", disk_full_at_val_3)  # forked workers too
    with pytest.raises(OSError, match="No space left"):  # 66 images: drawn by a pool of 2
        make_synthetic_imagenet(
            tmp_path / "out", classes=2, train_per_class=30, val_per_class=3, workers=2
        )
    assert list(tmp_path.iterdir()) == []


def test_progress_in_a_log_is_a_start_and_an_end_line(tmp_path, capsys):
    make_synthetic_imagenet(tmp_path / "out", classes=1, train_per_class=2, val_per_class=1)
    start, end = capsys.readouterr().err.splitlines()  # capsys: stderr is not a terminal
    assert start == f"synthetic: drawing 3 images into {tmp_path / 'out'} in this process"
    assert re.fullmatch(r"synthetic: done, 3 images in \d+:\d\d:\d\d", end)
