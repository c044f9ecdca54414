"""ILSVRC layouts as users have them: train folders, flat val + devkit (folder, archive, path), val
folders, ILSVRC-2010 test, and the errors for wrong layouts (the ILSVRC-2012
devkit's readme)."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from alexnet2012.data import ImageNet
from alexnet2012.errors import UsageError

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted order: class 0, 1, 2


def jpeg(path: Path, colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path, "JPEG")
    return path


def write_devkit(
    folder: Path, year: int, leaf_ids: dict[str, int], truth: dict[str, list[int]]
) -> None:
    """A devkit with the real field layout: leaves with the given IDs, then two non-leaf synsets."""
    fields = [
        f"ILSVRC{year}_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [
        (i, w, f"name of {w}, other name", "a gloss", 0, np.zeros(0, np.uint16), 0, 10)
        for w, i in sorted(leaf_ids.items(), key=lambda kv: kv[1])
    ]
    n = len(rows)
    rows.append((n + 1, "n00000001", "parent", "a parent", 2, np.array([1, 2], np.uint16), 1, 0))
    rows.append((n + 2, "n00000002", "root", "the root", 1, np.array([n + 1], np.uint16), 2, 0))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for k, row in enumerate(rows):
        synsets[k, 0] = row
    (folder / "data").mkdir(parents=True)
    scipy.io.savemat(folder / "data" / "meta.mat", {"synsets": synsets})
    names = {"val": "validation", "test": "test"}
    for split, ids in truth.items():
        (folder / "data" / f"ILSVRC{year}_{names[split]}_ground_truth.txt").write_text(
            "".join(f"{i}\n" for i in ids)
        )


# Devkit IDs deliberately not in WNID order: WNIDS[2] has ID 1, WNIDS[0] ID 2, WNIDS[1] ID 3.
LEAF_IDS = {WNIDS[2]: 1, WNIDS[0]: 2, WNIDS[1]: 3}
VAL_IDS = [3, 1, 1, 2, 3]  # ground truth of val images 1..5
VAL_CLASSES = [1, 2, 2, 0, 1]  # the same, as sorted-WNID class indices


def make_root(tmp_path: Path, flat_val: bool = True) -> Path:
    root = tmp_path / "imagenet"
    for k, wnid in enumerate(reversed(WNIDS)):  # created out of order on purpose
        for i in range(k + 1):
            jpeg(root / "train" / wnid / f"{wnid}_{i + 1}.JPEG")
    (root / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    if flat_val:
        for number in range(1, len(VAL_IDS) + 1):
            jpeg(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG")
    return root


def test_train_folders(tmp_path):
    root = make_root(tmp_path)
    data = ImageNet(root, "train")
    assert data.wnids == WNIDS and data.layout == "ilsvrc"
    assert data.class_to_idx == {w: i for i, w in enumerate(WNIDS)}
    # WNIDS[2] got 1 image, WNIDS[1] 2, WNIDS[0] 3; notes.txt is ignored.
    assert data.targets == [0, 0, 0, 1, 1, 2]
    assert [Path(p).name for p, _ in data.samples[:3]] == [
        f"{WNIDS[0]}_{i}.JPEG" for i in (1, 2, 3)
    ]
    assert all(Path(p).parent.name == WNIDS[t] for p, t in data.samples)
    assert data.classes == [(w,) for w in WNIDS]  # no devkit: names are the WNIDs
    image, target = data[4]
    assert image.mode == "RGB" and image.size == (12, 9) and target == 1


@pytest.mark.parametrize("where", ["folder", "archive", "path"])
def test_flat_val_with_devkit_in_another_id_order(tmp_path, where):
    root = make_root(tmp_path)
    devkit = (
        tmp_path / "elsewhere" / "ILSVRC2012_devkit_t12"
        if where == "path"
        else root / "ILSVRC2012_devkit_t12"
    )
    write_devkit(devkit, 2012, LEAF_IDS, {"val": VAL_IDS})
    if where == "archive":
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
        for p in sorted(devkit.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        devkit.rmdir()
    data = ImageNet(root, "val", devkit=devkit if where == "path" else None)
    assert data.wnids == WNIDS and data.layout == "ilsvrc"
    assert [Path(p).name for p, _ in data.samples] == [
        f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 6)
    ]
    assert data.targets == VAL_CLASSES
    assert data.classes[0] == (f"name of {WNIDS[0]}", "other name")
    # With the devkit beside the images, train gets the class names too.
    if where != "path":
        assert ImageNet(root, "train").classes[2] == (f"name of {WNIDS[2]}", "other name")


def test_flat_val_subset_labelled_by_file_number(tmp_path):
    root = make_root(tmp_path)
    write_devkit(root / "ILSVRC2012_devkit_t12", 2012, LEAF_IDS, {"val": VAL_IDS})
    (root / "val" / "ILSVRC2012_val_00000002.JPEG").unlink()
    data = ImageNet(root, "val")
    assert data.targets == [VAL_CLASSES[0]] + VAL_CLASSES[2:]


def test_val_class_folders(tmp_path):
    root = make_root(tmp_path, flat_val=False)
    for wnid in WNIDS[1:]:
        jpeg(root / "val" / wnid / "ILSVRC2012_val_00000007.JPEG")
    data = ImageNet(root, "val")
    assert data.wnids == WNIDS[1:] and data.targets == [0, 1]


def test_ilsvrc2010_val_and_test(tmp_path):
    root = tmp_path / "ilsvrc2010"
    for wnid in WNIDS:
        jpeg(root / "train" / wnid / f"{wnid}_1.JPEG")
    for split, n in (("val", 2), ("test", 3)):
        for number in range(1, n + 1):
            jpeg(root / split / f"ILSVRC2010_{split}_{number:08d}.JPEG")
    write_devkit(root / "ILSVRC2010_devkit-1.0", 2010, LEAF_IDS, {"val": [2, 1]})
    # The 2010 test labels came separately; beside the images is one place they are looked for.
    (root / "ILSVRC2010_test_ground_truth.txt").write_text("3\n3\n2\n")
    assert ImageNet(root, "val", year=2010).targets == [0, 2]
    assert ImageNet(root, "test", year=2010).targets == [1, 1, 0]
    with pytest.raises(UsageError, match="or the flat val/ILSVRC2012_val_00000001.JPEG"):
        ImageNet(root, "val")  # year 2012 looks for 2012 file names


def message(root, split="train", **kw) -> str:
    with pytest.raises(UsageError) as err:
        ImageNet(root, split, **kw)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_layout_errors_say_what_was_expected_where(tmp_path):
    assert "/nowhere is not a folder: expected" in message(tmp_path / "nowhere")
    root = tmp_path / "root"
    root.mkdir()
    assert f"expected {root / 'train'}/ (train/<class>/*.JPEG" in message(root)
    # all images in one folder: a one-class ImageFolder, refused
    jpeg(root / "train" / "images" / "a.jpg")
    assert f"{root / 'train'} has one class folder (images): expected one folder per" in message(
        root
    )
    (root / "train" / "images" / "a.jpg").unlink()
    (root / "train" / "images").rmdir()
    (root / "train" / WNIDS[0]).mkdir()
    assert f"{root / 'train' / WNIDS[0]} has no images" in message(root)
    (root / "val").mkdir()
    (root / "val" / "image.JPEG").write_bytes(b"")
    assert (
        f"{root / 'val'} has no images in a known layout: expected val/<wnid>/*.JPEG, or the flat"
        in message(root, "val")
    )
    assert f"no test folder: expected {root / 'test'}/" in message(root, "test")
    assert "split must be one of train, val, test" in message(root, "validation")


def test_devkit_errors(tmp_path):
    root = make_root(tmp_path)
    text = message(root, "val")
    assert "flat ILSVRC2012_val_*.JPEG files, which need the devkit" in text
    assert f"{root}/ILSVRC2012_devkit*/" in text
    assert "does not exist" in message(root, "val", devkit=tmp_path / "missing")
    empty = tmp_path / "empty_devkit"
    empty.mkdir()
    assert "is not an ILSVRC devkit: expected data/meta.mat" in message(root, "val", devkit=empty)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar file")
    assert "cannot read devkit archive" in message(root, "val", devkit=broken)
    devkit = tmp_path / "dk"
    write_devkit(devkit, 2012, LEAF_IDS, {"val": [1, 2, 99]})
    assert "ground_truth.txt line 3: ID 99 is not a leaf synset" in message(
        root, "val", devkit=devkit
    )
    devkit = tmp_path / "dk_short"
    write_devkit(devkit, 2012, LEAF_IDS, {"val": [1, 2]})
    assert "ground truth has 2 lines, none for image number 3" in message(
        root, "val", devkit=devkit
    )
    devkit = tmp_path / "dk_no_truth"
    write_devkit(devkit, 2012, LEAF_IDS, {})
    assert "has no ILSVRC2012_validation_ground_truth.txt" in message(root, "val", devkit=devkit)
    bad_meta = tmp_path / "dk_bad_meta"
    (bad_meta / "data").mkdir(parents=True)
    scipy.io.savemat(bad_meta / "data" / "meta.mat", {"something": np.zeros(3)})
    assert "is not a devkit meta.mat with a 'synsets' struct array" in message(
        root, "val", devkit=bad_meta
    )


def test_mixed_val_layout_is_an_error(tmp_path):
    root = make_root(tmp_path)
    jpeg(root / "val" / WNIDS[0] / "x.JPEG")
    assert "mixes class folders and flat ILSVRC2012_val_* files" in message(root, "val")


def test_non_wnid_val_folder_beside_wnid_train_is_an_ilsvrc_error(tmp_path):
    root = make_root(tmp_path, flat_val=False)
    jpeg(root / "val" / "cats" / "x.JPEG")
    data = ImageNet(root, "train")
    assert data.layout == "ilsvrc"
    assert f"{root / 'val' / 'cats'} is not a class folder: expected val/<wnid>/" in message(
        root, "val"
    )
