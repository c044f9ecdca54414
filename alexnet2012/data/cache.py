"""The preprocessed cache on disk: what is where, and reading it back.

Why raw pixels: a training step reads 128 random images; reading a 256x256x3 uint8 row of a
``numpy.memmap`` is a memcpy (from the page cache or one sequential 192 KiB disk read), while
decoding a JPEG and rescaling it costs a few milliseconds, so a decoding loader cannot reach
1,000 images/s per core. The price is disk space: 196,608 bytes per image, about 252 GB for
ILSVRC-2012 train (1,281,167 images) and 9.8 GB for val (50,000). [C] instead kept 256x256
JPEGs re-encoded at quality ~85 (small, lossy, decoded every epoch).

Files in ``CACHE/``:

- ``manifest.json``: format version, the source folder it was first made from, ILSVRC year,
  the class list (sorted WNIDs, names).
- ``<split>_images.npy``: (N, 256, 256, 3) uint8, HWC, RGB; a ``.npy`` so ``np.load(mmap_mode="r")``
  opens it. Row i is the i-th line of the index.
- ``<split>_index.tsv``: ``path<TAB>label`` per row (path relative to the source root, label =
  index into the manifest's WNIDs).
- ``<split>_status.npy``: uint8 per row, 0 = not done yet, 1 = done, 2 = unreadable (skipped);
  rewritten atomically, after the image file is synced, so a row marked done is on disk.
- ``<split>_bad.tsv``: ``path<TAB>reason`` of the unreadable files; they are not usable rows.
- ``stats.json`` + ``mean_image.npy``: training-set statistics (``stats.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet2012 import paper
from alexnet2012.data.imagenet import SPLITS
from alexnet2012.errors import UsageError

FORMAT = 1
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


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers (and crashes) see the old or new file, not half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_tsv(path: Path, header: tuple[str, str], rows: list[tuple[str, object]]) -> None:
    write_atomic(path, "".join(f"{a}\t{b}\n" for a, b in [header, *rows]).encode())


def read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()[1:]
    return [tuple(line.split("\t", 1)) for line in lines]  # type: ignore[misc]


def read_manifest(cache: Path) -> dict | None:
    path = cache / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(
    cache: Path, source: Path, year: int, wnids: list[str], names: list[tuple[str, ...]]
) -> None:
    manifest = {
        "format": FORMAT,
        "source": str(source.resolve()),
        "year": year,
        "wnids": wnids,
        "names": [list(n) for n in names],
    }
    write_atomic(cache / "manifest.json", json.dumps(manifest, indent=1).encode())


def save_status(cache: Path, split: str, status: np.ndarray) -> None:
    tmp = status_path(cache, split).with_suffix(".tmp.npy")
    np.save(tmp, status)
    os.replace(tmp, status_path(cache, split))


@dataclass
class SplitCache:
    """One prepared split: the image rows (read-only memmap), labels, and which rows are usable."""

    split: str
    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    status: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Row numbers of the decoded images (unreadable files excluded), ascending."""
        return np.flatnonzero(self.status == DONE)


def open_split(cache_dir: str | os.PathLike, split: str) -> SplitCache:
    """Open a complete prepared split for reading; a missing or unfinished one: ``UsageError``."""
    cache = Path(cache_dir)
    if not index_path(cache, split).is_file():
        raise UsageError(
            f"{cache} has no prepared {split} split ({index_path(cache, split).name} missing): "
            f"run scripts/prepare_imagenet.py SRC {cache} first"
        )
    rows = read_tsv(index_path(cache, split))
    status = np.load(status_path(cache, split))
    pending = int((status == PENDING).sum())
    if pending:
        raise UsageError(
            f"the {split} cache in {cache} is unfinished "
            f"({pending} of {len(status)} images not done): "
            f"re-run scripts/prepare_imagenet.py with the same SRC and CACHE to finish it"
        )
    images = np.load(images_path(cache, split), mmap_mode="r")
    labels = np.array([int(label) for _, label in rows], dtype=np.int64)
    return SplitCache(split, images, labels, [p for p, _ in rows], status)


@dataclass(frozen=True)
class CacheInfo:
    """What a prepared cache holds: classes and the usable images per split."""

    num_classes: int
    wnids: list[str]
    class_names: list[tuple[str, ...]]
    year: int
    split_sizes: dict[str, int]
    bad_files: dict[str, int]

    @property
    def train_images(self) -> int:
        """Usable training images (0 when train is not prepared)."""
        return self.split_sizes.get("train", 0)

    @property
    def val_images(self) -> int:
        """Usable validation images (0 when val is not prepared)."""
        return self.split_sizes.get("val", 0)


def cache_info(cache_dir: str | os.PathLike) -> CacheInfo:
    """Classes and split sizes of the cache at ``cache_dir`` (splits that are fully prepared)."""
    cache = Path(cache_dir)
    manifest = read_manifest(cache)
    if manifest is None:
        raise UsageError(
            f"{cache} is not a prepared cache (no manifest.json): "
            f"run scripts/prepare_imagenet.py SRC {cache} first"
        )
    sizes, bad = {}, {}
    for split in SPLITS:
        if status_path(cache, split).is_file():
            status = np.load(status_path(cache, split))
            if not (status == PENDING).any():
                sizes[split], bad[split] = int((status == DONE).sum()), int((status == BAD).sum())
    return CacheInfo(
        len(manifest["wnids"]),
        manifest["wnids"],
        [tuple(n) for n in manifest["names"]],
        manifest["year"],
        sizes,
        bad,
    )
