"""The ILSVRC devkit, a folder or its ``.tar.gz``: the classes are the leaf synsets of
``data/meta.mat``; ``ILSVRC20xx_validation_ground_truth.txt`` (2010 also ``_test_``) holds one
devkit ID per image in filename order. A class's index is its place in the sorted WNIDs."""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from alexnet2012.errors import UsageError

_GROUND_TRUTH = {"val": "validation", "test": "test"}


@dataclass(frozen=True)
class Devkit:
    source: str
    year: int
    id_to_wnid: dict[int, str]
    wnid_to_words: dict[str, tuple[str, ...]]
    ground_truth: dict[str, list[int]] = field(default_factory=dict)

    def labels(self, split: str) -> list[str]:
        """The WNID of every image of ``split`` ("val" or "test"), in sorted filename order."""
        if split not in self.ground_truth:
            name = ground_truth_name(self.year, split)
            raise UsageError(
                f"the devkit at {self.source} has no {name} (looked in its data/ folder and "
                f"beside the images); put that file there to use the {split} split"
            )
        return [self.id_to_wnid[i] for i in self.ground_truth[split]]


def ground_truth_name(year: int, split: str) -> str:
    return f"ILSVRC{year}_{_GROUND_TRUTH[split]}_ground_truth.txt"


def find_devkit(
    root: str | os.PathLike, year: int, devkit: str | os.PathLike | None = None
) -> Path | None:
    """The devkit: ``devkit`` if given, else ``root/ILSVRC<year>_devkit*`` (folder, then .tar)."""
    if devkit is not None:
        path = Path(devkit)
        if not path.exists():
            raise UsageError(
                f"devkit {path} does not exist: give the extracted ILSVRC{year}_devkit folder "
                f"or its .tar.gz"
            )
        return path
    found = sorted(Path(root).glob(f"ILSVRC{year}_devkit*"))
    folders = [p for p in found if p.is_dir()]
    archives = [p for p in found if p.name.endswith((".tar.gz", ".tgz", ".tar"))]
    return (folders or archives or [None])[0]


def load_devkit(path: str | os.PathLike, year: int, extra_dirs: tuple[Path, ...] = ()) -> Devkit:
    """The devkit at ``path``; ground truth is also looked for in ``extra_dirs``."""
    path = Path(path)
    files = _read_archive(path) if path.is_file() else _read_folder(path)
    if "meta.mat" not in files:
        raise UsageError(f"{path} is not an ILSVRC devkit: expected data/meta.mat inside it")
    id_to_wnid, words = _parse_meta(files["meta.mat"], f"{path}: data/meta.mat")
    truth = {}
    for split in _GROUND_TRUTH:
        name = ground_truth_name(year, split)
        text = files.get(name)
        for folder in extra_dirs:
            if text is None and (folder / name).is_file():
                text = (folder / name).read_bytes()
        if text is not None:
            truth[split] = _parse_ground_truth(text, f"{path}: {name}", id_to_wnid)
    return Devkit(str(path), year, id_to_wnid, words, truth)


def _read_folder(path: Path) -> dict[str, bytes]:
    data = path / "data" if (path / "data").is_dir() else path
    return {
        p.name: p.read_bytes()
        for p in data.iterdir()
        if p.is_file() and (p.name == "meta.mat" or p.name.endswith("_ground_truth.txt"))
    }


def _read_archive(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path) as tar:
            files = {}
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and (name == "meta.mat" or name.endswith("_ground_truth.txt")):
                    files[name] = tar.extractfile(member).read()
            return files
    except (tarfile.TarError, OSError, EOFError):
        raise UsageError(
            f"cannot read devkit archive {path} (not a readable .tar or .tar.gz): "
            f"re-download it or extract it"
        ) from None


def _parse_meta(raw: bytes, where: str) -> tuple[dict[int, str], dict[str, tuple[str, ...]]]:
    try:
        synsets = scipy.io.loadmat(io.BytesIO(raw), squeeze_me=True)["synsets"]
        names = synsets.dtype.names or ()
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise UsageError(
            f"{where} is not a devkit meta.mat with a 'synsets' struct array ({exc})"
        ) from None
    id_field = next((n for n in names if re.fullmatch(r"ILSVRC\d{4}_ID", n)), None)
    if id_field is None or not {"WNID", "words", "num_children"} <= set(names):
        raise UsageError(
            f"{where}: 'synsets' must have fields ILSVRC<year>_ID, WNID, words and num_children "
            f"(found {', '.join(names)})"
        )
    synsets = np.atleast_1d(synsets)
    leaves = [s for s in synsets if int(s["num_children"]) == 0]
    if not leaves:
        raise UsageError(f"{where}: no leaf synsets (num_children == 0), so no classes")
    id_to_wnid = {int(s[id_field]): str(s["WNID"]) for s in leaves}
    words = {str(s["WNID"]): tuple(str(s["words"]).split(", ")) for s in leaves}
    return id_to_wnid, words


def _parse_ground_truth(raw: bytes, where: str, id_to_wnid: dict[int, str]) -> list[int]:
    ids = []
    for number, line in enumerate(raw.decode("ascii", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise UsageError(
                f"{where} line {number}: expected one devkit ID per line, got {line!r}"
            ) from None
        if ids[-1] not in id_to_wnid:
            raise UsageError(
                f"{where} line {number}: ID {ids[-1]} is not a leaf synset of meta.mat "
                f"(is this the devkit of the same year?)"
            )
    return ids
