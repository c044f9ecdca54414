"""ILSVRC on disk, as users have it, with torchvision's conventions (``.samples``, ``.targets``,
``.wnids`` sorted, ``.classes``, ``.class_to_idx``). train: ``train/<wnid>/*.JPEG``; val (and
2010 test): class folders, or the flat ``ILSVRC<year>_<split>_<8 digits>.JPEG`` labelled by the
devkit through the number in the name (so a subset works).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from alexnet2012.data.devkit import Devkit, find_devkit, load_devkit
from alexnet2012.errors import UsageError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_WNID = re.compile(r"n\d{8}")


class ImageNet:
    """The images and labels of one ILSVRC split."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        year: int = 2012,
        devkit: str | os.PathLike | None = None,
    ) -> None:
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        self.root, self.split, self.year = Path(root), split, year
        if not self.root.is_dir():
            raise UsageError(
                f"ImageNet root {self.root} is not a folder: "
                f"expected {self.root}/train/<wnid>/*.JPEG "
                f"and {self.root}/val/"
            )
        folder = self.root / split
        if not folder.is_dir():
            raise UsageError(f"no {split} folder: expected {folder}/ ({_expected(split, year)})")
        self._devkit_path = find_devkit(self.root, year, devkit)
        entries = list(os.scandir(folder))
        class_dirs = sorted(e.name for e in entries if e.is_dir())
        flat = sorted(
            e.name for e in entries if e.is_file() and _flat_number(e.name, split, year) is not None
        )
        if class_dirs and flat:
            raise UsageError(
                f"{folder} mixes class folders and flat ILSVRC{year}_{split}_* files: "
                f"keep one layout ({_expected(split, year)})"
            )
        devkit_data = None
        if class_dirs:
            self.wnids = _check_wnids(class_dirs, folder, split, year)
            self.samples = _folder_samples(folder, self.wnids)
        elif flat and split != "train":
            devkit_data = self._require_devkit(folder)
            self.wnids = sorted(devkit_data.id_to_wnid.values())
            self.samples = _flat_samples(folder, flat, split, year, devkit_data, self.wnids)
        else:
            raise UsageError(
                f"{folder} has no images in a known layout: expected {_expected(split, year)}"
            )
        if devkit_data is None and self._devkit_path is not None:
            devkit_data = load_devkit(self._devkit_path, year, (self.root,))
        names = devkit_data.wnid_to_words if devkit_data else {}
        self.classes = [names.get(w, (w,)) for w in self.wnids]
        self.class_to_idx = {w: i for i, w in enumerate(self.wnids)}
        self.targets = [t for _, t in self.samples]

    def _require_devkit(self, folder: Path) -> Devkit:
        if self._devkit_path is None:
            raise UsageError(
                f"{folder} holds flat ILSVRC{self.year}_{self.split}_*.JPEG files, "
                f"which need the devkit for their labels: "
                f"expected {self.root}/ILSVRC{self.year}_devkit*/ (extracted) or its "
                f".tar.gz beside it, or pass the devkit's path"
            )
        return load_devkit(self._devkit_path, self.year, (self.root,))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB"), target


def _expected(split: str, year: int) -> str:
    if split == "train":
        return "train/<wnid>/*.JPEG, one folder per class named like n01440764"
    return (
        f"{split}/<wnid>/*.JPEG, or the flat {split}/ILSVRC{year}_{split}_00000001.JPEG ... "
        f"with the ILSVRC{year} devkit"
    )


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
