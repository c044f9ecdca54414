"""torchvision's ImageFolder layout: any class names, .jpg/.jpeg/.png/.webp in any letter case;
classes and samples as torchvision.datasets.ImageFolder finds them; the one-line errors."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from alexnet2012.data import ImageNet, cache_info, prepare_cache
from alexnet2012.data.cache import open_split
from alexnet2012.errors import UsageError

# not WNIDs; sorted by code point: upper case first, digits before letters
CLASSES = ["10", "2", "Zebra", "apple", "banana split", "éclair"]
FILES = ["a.jpg", "B.JPG", "c.Jpeg", "d.png", "e.WEBP", "f.webp", "g.txt", "h.bmp", "sub/i.jpeg"]
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}


def image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".txt":
        path.write_text("not an image")
    else:
        Image.new("RGB", (20, 16), (value, 255 - value, 7)).save(path, FORMATS[path.suffix.lower()])


def make_folder(root: Path, splits=("train", "val"), classes=CLASSES) -> Path:
    for split in splits:
        for c, name in enumerate(classes):
            # a class each that lacks some kinds of file; no class without an image
            for f, file in enumerate(FILES[c % 3 :] if split == "train" else FILES[c % 2 :: 2]):
                image(root / split / name / file, 10 * c + f)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("imagefolder") / "pets")


def relative(samples, root: Path) -> list[tuple[str, int]]:
    return [(os.path.relpath(p, root), t) for p, t in samples]


@pytest.mark.parametrize("split", ["train", "val"])
def test_classes_and_samples_as_torchvision_finds_them(folder, split):
    data = ImageNet(folder, split)
    ours = (".jpg", ".jpeg", ".png", ".webp")
    theirs = ImageFolder(str(folder / split), is_valid_file=lambda p: p.lower().endswith(ours))
    assert data.layout == "imagefolder"
    assert data.wnids == theirs.classes == sorted(CLASSES)
    assert data.class_to_idx == theirs.class_to_idx
    assert relative(data.samples, folder) == relative(theirs.samples, folder)
    assert data.targets == theirs.targets
    assert data.classes == [(name,) for name in sorted(CLASSES)]
    names = {Path(p).name for p, _ in data.samples}
    assert {"B.JPG", "c.Jpeg", "e.WEBP", "i.jpeg"} <= names
    assert not any(n.endswith((".txt", ".bmp")) for n in names)
    for index in (0, len(data) - 1):
        img, target = data[index]
        assert img.mode == "RGB" and img.size == (20, 16) and target == data.targets[index]


def test_prepared_into_a_cache_by_class_name(folder, tmp_path):
    prepare_cache(folder, tmp_path / "cache", workers=0, progress=False)
    info = cache_info(tmp_path / "cache")
    assert info.wnids == sorted(CLASSES) and info.bad_files == {"train": 0, "val": 0}
    for split in ("train", "val"):
        data, cached = ImageNet(folder, split), open_split(tmp_path / "cache", split)
        assert np.array_equal(cached.labels, data.targets)
        first = np.asarray(Image.open(data.samples[0][0]).convert("RGB"))[0, 0]
        assert np.abs(cached.images[0, 128, 128].astype(int) - first).max() <= 3


def message(root, split="train") -> str:
    with pytest.raises(UsageError) as err:
        ImageNet(root, split)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_val_without_class_folders(tmp_path):
    root = make_folder(tmp_path / "set", splits=("train",), classes=["cat", "dog"])
    image(root / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    image(root / "val" / "x.jpg", 2)
    assert message(root, "val") == (
        f"{root / 'val'} has no class folders: as {root / 'train'}'s classes are not named like "
        f"WNIDs (e.g. cat), no devkit can label its images; sort them into the same class "
        f"folders as {root / 'train'}"
    )


def test_val_classes_differ_from_train(tmp_path):
    root = make_folder(tmp_path / "set", splits=("train",), classes=["cat", "dog", "eel", "fox"])
    make_folder(root, splits=("val",), classes=["ant", "cat", "dog", "emu"])
    assert message(root, "val") == (
        f"{root / 'val'}'s class folders differ from {root / 'train'}'s: it lacks 2 of train's "
        f"(eel, fox) and has 2 not in train (ant, emu); every split of an ImageFolder needs the "
        f"same class folders"
    )
    # a WNID-named val folder beside train's other names is the same error, not an ILSVRC one
    root = make_folder(tmp_path / "two", splits=("train",), classes=["cat", "dog"])
    make_folder(root, splits=("val",), classes=["cat", "dog", "n01440764"])
    assert "has 1 not in train (n01440764)" in message(root, "val")


def test_empty_class_folder_refused_as_torchvision_does(tmp_path):
    root = make_folder(tmp_path / "set", splits=("train",), classes=["cat", "dog"])
    (root / "train" / "emu").mkdir()
    image(root / "train" / "emu" / "notes.txt", 0)
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes emu"):
        ImageFolder(str(root / "train"))
    assert message(root) == (
        f"{root / 'train' / 'emu'} has no images (.jpg, .jpeg, .png or .webp, in any letter "
        f"case; 1 class folder(s) without any): every class folder needs at least one"
    )
