"""The preprocessed cache on disk: ``manifest.json`` (written first: it marks a cache); per split
``_images.npy`` ((N, 256, 256, 3) uint8 RGB, format "raw") or the same rows as JPEGs ("jpeg"),
``_index.tsv`` (path, label), ``_status.npy`` (per row 0 pending, 1 done, 2 unreadable; saved
after the images are synced), ``_bad.tsv``; ``stats.json``, ``mean_image.npy``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from alexnet2012 import paper
from alexnet2012.data import packed
from alexnet2012.data.imagenet import SPLITS
from alexnet2012.errors import UsageError, foreign_files
from alexnet2012.files import write_atomic, write_file

VERSIONS = {packed.RAW: 1, packed.JPEG: 2}  # the manifest's "format": older code refuses 2
ROW_SHAPE = (paper.IMAGE_SIZE, paper.IMAGE_SIZE, 3)
PENDING, DONE, BAD = 0, 1, 2


def images_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_images.npy"


def index_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_index.tsv"


def status_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_status.npy"


def bad_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_bad.tsv"


PREPARE = "scripts/prepare_imagenet.py"
T = TypeVar("T")


def make_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a folder: choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the folder {path} ({exc.strerror}): choose another output folder"
        ) from None


def write_tsv(path: Path, header: tuple[str, str], rows: list[tuple[str, object]]) -> None:
    write_file(path, "".join(f"{a}\t{b}\n" for a, b in [header, *rows]))


def read_tsv(path: Path, header: tuple[str, str]) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    if not lines or lines[0] != "\t".join(header):
        raise ValueError(f"its first line is not the header {' '.join(header)}")
    rows = [tuple(line.split("\t", 1)) for line in lines[1:]]
    if any(len(row) != 2 for row in rows):
        raise ValueError("a line without a tab")
    return rows  # type: ignore[return-value]


def read_cache_file(path: Path, read: Callable[[Path], T], fix: str | None = None) -> T:
    """``read(path)``; unreadable or rejected (``ValueError``): a ``UsageError`` naming ``fix``."""
    try:
        return read(path)
    except (OSError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split(". ")[0].split()) or type(exc).__name__
        fix = fix or f"prepare the cache again with {PREPARE} SRC CACHE into a new CACHE folder"
        raise UsageError(f"{path} is damaged ({reason}): {fix}") from None


def _parse_manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise ValueError("not a cache manifest")
    if manifest["format"] not in VERSIONS.values():
        raise UsageError(
            f"{path.parent} was made by another version of this code (cache format "
            f"{manifest['format']}, this one reads formats 1 and 2): prepare it again with "
            f"{PREPARE} SRC CACHE into a new CACHE folder"
        )
    for key, default in (("images", packed.RAW), ("quality", None), ("subset", None)):
        manifest.setdefault(key, default)
    jpeg = manifest["images"] == packed.JPEG
    if VERSIONS.get(manifest["images"]) != manifest["format"] or not (
        isinstance(manifest["quality"], int) and 1 <= manifest["quality"] <= 100
        if jpeg
        else manifest["quality"] is None
    ):
        raise ValueError("image format, quality and cache format disagree")
    wnids, names = manifest.get("wnids"), manifest.get("names")
    if not (
        isinstance(manifest.get("source"), str)
        and isinstance(manifest.get("year"), int)
        and isinstance(wnids, list)
        and all(isinstance(w, str) for w in wnids)
        and isinstance(names, list)
        and len(names) == len(wnids)
        and all(isinstance(n, list) for n in names)
    ):
        raise ValueError("missing or malformed source, year, wnids or names")
    return manifest


def _require_folder(cache: Path) -> None:
    if not cache.is_dir():
        what = "is a file, not a folder" if cache.exists() else "does not exist"
        raise UsageError(
            f"{cache} {what}: check the path (a cache is the folder made by {PREPARE} SRC CACHE)"
        )


def refuse_foreign_folder(cache: Path) -> None:
    """Refuse a folder with files (not hidden) but no manifest, so that prepare overwrites none."""
    if not cache.is_dir() or read_manifest(cache) is not None:
        return
    others = foreign_files(cache, ("manifest.json.tmp", "lost+found"), hidden=False)
    if others:
        raise UsageError(
            f"{cache} is not empty and not a cache ({others}): give CACHE a new or empty "
            f"folder, so that none of your files is overwritten"
        )


def read_manifest(cache: Path) -> dict | None:
    """The checked manifest, or None if there is none."""
    path = cache / "manifest.json"
    return read_cache_file(path, _parse_manifest) if path.is_file() else None


def require_manifest(cache: Path) -> dict:
    _require_folder(cache)
    manifest = read_manifest(cache)
    if manifest is None:
        raise UsageError(
            f"{cache} is not a prepared cache (no manifest.json): run {PREPARE} SRC {cache} first"
        )
    return manifest


def write_manifest(
    cache: Path,
    source: Path,
    year: int,
    wnids: list[str],
    names: list[tuple[str, ...]],
    extra: dict | None = None,
) -> None:
    """``extra``: ``images``, ``quality``, ``subset`` (None values left out)."""
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    manifest = {
        "format": VERSIONS[extra.get("images", packed.RAW)],
        "source": str(source.resolve()),
        "year": year,
        "wnids": wnids,
        "names": [list(n) for n in names],
        **extra,
    }
    write_file(cache / "manifest.json", json.dumps(manifest, indent=1))


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save(path, array)``, atomically."""
    write_atomic(path, array.nbytes + 128, lambda f: np.save(f, array), "")


def _parse_index(path: Path, classes: int) -> list[tuple[str, str]]:
    rows = read_tsv(path, ("path", "label"))
    if not all(label.isdigit() and int(label) < classes for _, label in rows):
        raise ValueError(f"a label that is not a class number below {classes}")
    return rows


def _parse_status(path: Path, rows: int) -> np.ndarray:
    status = np.load(path)
    if status.shape != (rows,) or status.dtype != np.uint8 or (status > BAD).any():
        raise ValueError(f"not {rows} row states (uint8, 0 to {BAD}), one per line of the index")
    return status


def _check_images(path: Path, rows: int) -> None:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        need = f.tell() + rows * int(np.prod(ROW_SHAPE))
    if (shape, fortran, dtype) != ((rows, *ROW_SHAPE), False, np.uint8):
        raise ValueError(f"not {rows} images of shape {ROW_SHAPE}, uint8")
    size = path.stat().st_size
    if size != need:
        raise ValueError(f"{size} bytes, {need} expected for its {rows} images")


def split_fix(cache: Path, split: str) -> str:
    return f"delete {cache / split}_* and re-run {PREPARE} SRC {cache} to prepare {split} again"


def read_split(cache: Path, split: str, manifest: dict) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Index rows and row status of a split, its three files checked against each other."""
    fix = split_fix(cache, split)
    rows = read_cache_file(
        index_path(cache, split), lambda p: _parse_index(p, len(manifest["wnids"])), fix
    )
    status = read_cache_file(status_path(cache, split), lambda p: _parse_status(p, len(rows)), fix)
    if manifest["images"] == packed.JPEG:
        size = read_cache_file(packed.packed_path(cache, split), lambda p: p.stat().st_size, fix)
        read_cache_file(
            packed.offsets_path(cache, split),
            lambda p: packed.check_offsets(np.load(p), status == DONE, size),
            fix,
        )
    else:
        read_cache_file(images_path(cache, split), lambda p: _check_images(p, len(rows)), fix)
    return rows, status


def check_finished(cache: Path, split: str, status: np.ndarray, manifest: dict) -> None:
    pending = int((status == PENDING).sum())
    if pending:
        raise UsageError(
            f"the {split} cache in {cache} is unfinished "
            f"({pending} of {len(status)} images not done): re-run "
            f"{PREPARE} {manifest['source']} {cache} with the same options to finish it"
        )


@dataclass
class SplitCache:
    """One prepared split; ``rows(r)``: uint8 (len(r), 256, 256, 3) in either format."""

    split: str
    images: np.ndarray | None
    labels: np.ndarray
    paths: list[str]
    status: np.ndarray
    format: str = packed.RAW
    packed: packed.PackedRows | None = None

    def rows(self, rows: np.ndarray) -> np.ndarray:
        if self.packed is not None:
            return self.packed.decode(np.asarray(rows)).numpy()
        return self.images[rows]

    @property
    def usable(self) -> np.ndarray:
        """Row numbers of the decoded images (unreadable files excluded), ascending."""
        return np.flatnonzero(self.status == DONE)


def open_split(cache_dir: str | os.PathLike, split: str) -> SplitCache:
    """A complete prepared split; missing, damaged or unfinished: ``UsageError``."""
    cache = Path(cache_dir)
    _require_folder(cache)
    if not index_path(cache, split).is_file():
        raise UsageError(
            f"{cache} has no prepared {split} split ({index_path(cache, split).name} missing): "
            f"run {PREPARE} SRC {cache} first"
        )
    manifest = require_manifest(cache)
    rows, status = read_split(cache, split, manifest)
    check_finished(cache, split, status, manifest)
    labels = np.array([int(label) for _, label in rows], dtype=np.int64)
    paths = [p for p, _ in rows]
    if manifest["images"] == packed.JPEG:
        reader = packed.PackedRows(cache, split)
        return SplitCache(split, None, labels, paths, status, packed.JPEG, reader)
    images = np.load(images_path(cache, split), mmap_mode="r")
    return SplitCache(split, images, labels, paths, status)


@dataclass(frozen=True)
class CacheInfo:
    """Classes and usable images per finished split, the images' format and the subset prepared."""

    num_classes: int
    wnids: list[str]
    class_names: list[tuple[str, ...]]
    year: int
    split_sizes: dict[str, int]
    bad_files: dict[str, int]
    format: str = packed.RAW
    quality: int | None = None
    subset: dict | None = None
    source: str = ""  # the folder the images were prepared from

    @property
    def train_images(self) -> int:
        return self.split_sizes.get("train", 0)

    @property
    def val_images(self) -> int:
        return self.split_sizes.get("val", 0)


def cache_info(cache_dir: str | os.PathLike) -> CacheInfo:
    """What the cache holds; an unfinished split is left out (``open_split`` refuses it)."""
    cache = Path(cache_dir)
    manifest = require_manifest(cache)
    sizes, bad = {}, {}
    for split in SPLITS:
        if index_path(cache, split).is_file():
            _, status = read_split(cache, split, manifest)
            if not (status == PENDING).any():
                sizes[split], bad[split] = int((status == DONE).sum()), int((status == BAD).sum())
    return CacheInfo(
        len(manifest["wnids"]),
        manifest["wnids"],
        [tuple(n) for n in manifest["names"]],
        manifest["year"],
        sizes,
        bad,
        manifest["images"],
        manifest["quality"],
        manifest["subset"],
        manifest["source"],
    )
