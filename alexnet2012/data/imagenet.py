"""Image folders with torchvision's conventions (``.samples``, ``.targets``, ``.wnids``, ...) in
one of two layouts: "ilsvrc" (class folders named by WNID, or flat val files labelled by the
devkit) or "imagefolder" (every split with the same class folders). ``subset``: see subset.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from alexnet2012.data.devkit import Devkit, find_devkit, load_devkit
from alexnet2012.data.subset import Subset
from alexnet2012.errors import UsageError

SPLITS = ("train", "val", "test")
LAYOUTS = ("ilsvrc", "imagefolder")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp")
_WNID = re.compile(r"n\d{8}")


class ImageNet:
    """The images and labels of one split."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        year: int = 2012,
        devkit: str | os.PathLike | None = None,
        subset: Subset | None = None,
    ) -> None:
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        self.root, self.split, self.year, self.subset = Path(root), split, year, subset
        if not self.root.is_dir():
            raise UsageError(
                f"ImageNet root {self.root} is not a folder: "
                f"expected {self.root}/train/<class>/*.JPEG "
                f"and {self.root}/val/"
            )
        folder = self.root / split
        if not folder.is_dir():
            raise UsageError(f"no {split} folder: expected {folder}/ ({_expected(split, year)})")
        self._devkit_path = find_devkit(self.root, year, devkit)
        entries = list(os.scandir(folder))
        class_dirs = sorted(e.name for e in entries if e.is_dir())
        train_dirs = class_dirs if split == "train" else _class_folders(self.root / "train")
        names = train_dirs or class_dirs
        self.layout = LAYOUTS[any(not _WNID.fullmatch(n) for n in names)]
        if self.layout == "imagefolder":
            self.wnids = _check_imagefolder(folder, class_dirs, train_dirs)
            self.samples = _imagefolder_samples(folder, self.wnids)
            words = {}
        else:
            words = self._read_ilsvrc(folder, entries, class_dirs)
        if subset is not None:
            where = self.root / "train" if train_dirs else folder
            self._keep(subset, subset.choose_classes(train_dirs or self.wnids, str(where)))
        self.classes = [words.get(w, (w,)) for w in self.wnids]
        self.class_to_idx = {w: i for i, w in enumerate(self.wnids)}
        self.targets = [t for _, t in self.samples]

    def _read_ilsvrc(
        self, folder: Path, entries: list[os.DirEntry], class_dirs: list[str]
    ) -> dict[str, tuple[str, ...]]:
        """Set ``wnids`` and ``samples``; return the devkit's class names (if there is one)."""
        split, year = self.split, self.year
        flat = sorted(
            e.name for e in entries if e.is_file() and _flat_number(e.name, split, year) is not None
        )
        if class_dirs and flat:
            raise UsageError(
                f"{folder} mixes class folders and flat ILSVRC{year}_{split}_* files: "
                f"keep one layout ({_expected(split, year)})"
            )
        if class_dirs:
            self.wnids = _check_wnids(class_dirs, folder, split, year)
            self.samples = _folder_samples(folder, self.wnids)
        elif not flat or split == "train":
            raise UsageError(
                f"{folder} has no images in a known layout: expected {_expected(split, year)}"
            )
        elif self._devkit_path is None:
            raise UsageError(
                f"{folder} holds flat ILSVRC{year}_{split}_*.JPEG files, which need the devkit "
                f"for their labels: expected {self.root}/ILSVRC{year}_devkit*/ (extracted) or "
                f"its .tar.gz beside it, or pass the devkit's path"
            )
        devkit = self._devkit_path and load_devkit(self._devkit_path, year, (self.root,))
        if not class_dirs:
            self.wnids = sorted(devkit.id_to_wnid.values())
            self.samples = _flat_samples(folder, flat, split, year, devkit, self.wnids)
        return devkit.wnid_to_words if devkit else {}

    def _keep(self, subset: Subset, chosen: list[str]) -> None:
        """Keep the samples of ``chosen`` (sorted), relabelled; in train, the subset's files."""
        label = {w: i for i, w in enumerate(chosen)}
        samples = [(p, label[self.wnids[t]]) for p, t in self.samples if self.wnids[t] in label]
        if self.split == "train" and subset.train_per_class is not None:
            folder = self.root / "train"
            inside = [Path(p).relative_to(folder / chosen[t]).as_posix() for p, t in samples]
            files: dict[str, list[str]] = {w: [] for w in chosen}
            for (_, t), name in zip(samples, inside):
                files[chosen[t]].append(name)
            kept = subset.choose_train(files, str(folder))
            samples = [s for s, name in zip(samples, inside) if name in kept[chosen[s[1]]]]
        self.wnids, self.samples = chosen, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB"), target


def _expected(split: str, year: int) -> str:
    if split == "train":
        return "train/<class>/*.JPEG, one folder per class (ILSVRC's named like n01440764)"
    return (
        f"{split}/<wnid>/*.JPEG, or the flat {split}/ILSVRC{year}_{split}_00000001.JPEG ... "
        f"with the ILSVRC{year} devkit"
    )


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def _flat_number(name: str, split: str, year: int) -> int | None:
    match = re.fullmatch(rf"ILSVRC{year}_{split}_(\d{{8}})\.jpe?g", name, re.IGNORECASE)
    return int(match.group(1)) if match else None


def _check_wnids(names: list[str], folder: Path, split: str, year: int) -> list[str]:
    wrong = [n for n in names if not _WNID.fullmatch(n)]
    if wrong:
        raise UsageError(
            f"{folder}/{wrong[0]} is not a class folder: expected {_expected(split, year)} "
            f"({len(wrong)} folder(s) not named n########)"
        )
    return names


def _check_imagefolder(folder: Path, class_dirs: list[str], train_dirs: list[str]) -> list[str]:
    """The class folders of a split of an ImageFolder: at least 2, the same as train's."""
    train = folder.parent / "train"
    if not class_dirs:
        raise UsageError(
            f"{folder} has no class folders: as {train}'s classes are not named like WNIDs "
            f"(e.g. {train_dirs[0]}), no devkit can label its images; sort them into the same "
            f"class folders as {train}"
        )
    if train_dirs and class_dirs != train_dirs:
        lacks = sorted(set(train_dirs) - set(class_dirs))
        extra = sorted(set(class_dirs) - set(train_dirs))
        parts = [f"lacks {len(lacks)} of train's ({', '.join(lacks[:3])})"] if lacks else []
        parts += [f"has {len(extra)} not in train ({', '.join(extra[:3])})"] if extra else []
        raise UsageError(
            f"{folder}'s class folders differ from {train}'s: it {' and '.join(parts)}; every "
            f"split of an ImageFolder needs the same class folders"
        )
    if len(class_dirs) < 2:
        raise UsageError(
            f"{folder} has one class folder ({class_dirs[0]}): expected one folder per class, "
            f"at least 2 (e.g. {folder}/cat/*.jpg and {folder}/dog/*.jpg)"
        )
    return class_dirs


def _imagefolder_samples(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset``: each class folder walked in sorted order, links followed."""
    samples, empty = [], []
    for index, name in enumerate(classes):
        found = [
            (os.path.join(parent, f), index)
            for parent, _, files in sorted(os.walk(folder / name, followlinks=True))
            for f in sorted(files)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        empty += [] if found else [name]
        samples += found
    if empty:
        raise UsageError(
            f"{folder / empty[0]} has no images (.jpg, .jpeg, .png or .webp, in any letter case; "
            f"{len(empty)} class folder(s) without any): every class folder needs at least one"
        )
    return samples


def _folder_samples(folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    samples = []
    for index, wnid in enumerate(wnids):
        files = sorted(
            e.name
            for e in os.scandir(folder / wnid)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise UsageError(
                f"{folder / wnid} has no images (*.JPEG): every class folder needs at least one"
            )
        samples.extend((str(folder / wnid / f), index) for f in files)
    return samples


def _flat_samples(
    folder: Path, names: list[str], split: str, year: int, devkit: Devkit, wnids: list[str]
) -> list[tuple[str, int]]:
    labels = devkit.labels(split)
    index = {w: i for i, w in enumerate(wnids)}
    samples = []
    for name in names:
        number = _flat_number(name, split, year)
        if not 1 <= number <= len(labels):
            raise UsageError(
                f"{folder / name}: the devkit's ground truth has {len(labels)} lines, none for "
                f"image number {number} (is this the devkit of the same year?)"
            )
        samples.append((str(folder / name), index[labels[number - 1]]))
    return samples
