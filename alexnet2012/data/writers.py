"""Where ``prepare.py`` puts the decoded rows: ``RawWriter`` (workers write the memmap) or
``JpegWriter`` (the parent appends the workers' JPEGs and keeps the original rows' pixel sums). A
checkpoint syncs the images, then saves what points at them; the caller then saves the status."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from alexnet2012.data import cache as fmt
from alexnet2012.data import packed
from alexnet2012.data.stats import PixelSums
from alexnet2012.errors import UsageError
from alexnet2012.files import write_atomic
from alexnet2012.units import size_text


class RawWriter:
    def __init__(self, cache: Path, split: str) -> None:
        self.cache, self.split, self.file = cache, split, fmt.images_path(cache, split)
        self.target = (packed.RAW, str(self.file), False)

    def create(self, rows: int) -> None:
        need = rows * int(np.prod(fmt.ROW_SHAPE))
        have = self.file.stat().st_size if self.file.exists() else 0
        free = shutil.disk_usage(self.cache).free
        if need - have > free:
            raise UsageError(
                f"the {self.split} cache needs {size_text(need)} in {self.cache}, "
                f"which has {size_text(free)} free: "
                f"free some space or choose another CACHE folder"
            )
        shape = (rows, *fmt.ROW_SHAPE)
        np.lib.format.open_memmap(self.file, mode="w+", dtype=np.uint8, shape=shape).flush()

    def resume(self, status: np.ndarray) -> None:
        pass

    def accept(self, row: int, payload: bytes | None) -> None:
        pass

    def add(self, sums: PixelSums | None) -> None:
        pass

    def checkpoint(self, status: np.ndarray) -> None:
        with open(self.file, "rb+") as f:
            os.fsync(f.fileno())

    def close(self) -> None:
        pass


class JpegWriter:
    """Appends to ``<split>_jpeg.bin``; a resume drops the bytes past the last row done."""

    def __init__(self, cache: Path, split: str, quality: int) -> None:
        self.cache, self.split = cache, split
        self.file = packed.packed_path(cache, split)
        self.target = (packed.JPEG, quality, split == "train")
        self._out = None

    def create(self, rows: int) -> None:
        self.file.write_bytes(b"")
        fmt.save_npy(packed.offsets_path(self.cache, self.split), np.zeros((rows, 2), np.int64))
        self._save_sums(np.zeros(rows, np.uint8), PixelSums.zeros())

    def resume(self, status: np.ndarray) -> None:
        """Loads the offsets and sums, whose status (saved first) replaces ``status``'s."""
        fix = fmt.split_fix(self.cache, self.split)
        self.offsets = np.load(packed.offsets_path(self.cache, self.split))
        path = packed.sums_path(self.cache, self.split)
        self.sums, saved = fmt.read_cache_file(path, lambda p: load_sums(p, len(status)), fix)
        status[:] = saved
        done = self.offsets[status == fmt.DONE]
        self.end = int((done[:, 0] + done[:, 1]).max()) if len(done) else 0
        self._out = open(self.file, "rb+", buffering=0)
        self._out.truncate(self.end)
        self._out.seek(self.end)

    def add(self, sums: PixelSums | None) -> None:
        if sums is not None:
            self.sums.merge(sums)

    def accept(self, row: int, payload: bytes | None) -> None:
        if payload is None:
            return
        try:
            view = memoryview(payload)
            while view:
                view = view[self._out.write(view) :]
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise UsageError(
                f"cannot write {self.file} ({exc.strerror}): "
                + ("free some space" if full else "check the disk")
                + ", then run the same command again to continue"
            ) from None
        self.offsets[row] = (self.end, len(payload))
        self.end += len(payload)

    def checkpoint(self, status: np.ndarray) -> None:
        os.fsync(self._out.fileno())
        fmt.save_npy(packed.offsets_path(self.cache, self.split), self.offsets)
        self._save_sums(status, self.sums)

    def _save_sums(self, status: np.ndarray, s: PixelSums) -> None:
        arrays = dict(status=status, pixel=s.pixel, second=s.second, images=np.int64(s.images))
        write_atomic(
            packed.sums_path(self.cache, self.split),
            s.pixel.nbytes + status.nbytes + 4096,
            lambda f: np.savez(f, **arrays),
            "",
        )

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def load_sums(path: Path, rows: int) -> tuple[PixelSums, np.ndarray]:
    """The pixel sums and row status saved with them; ``ValueError`` if they are not."""
    with np.load(path) as f:
        sums = PixelSums(f["pixel"], f["second"], int(f["images"]))
        status = f["status"]
    found = (sums.pixel.shape, sums.pixel.dtype, status.shape, status.dtype)
    if found != (fmt.ROW_SHAPE, np.uint64, (rows,), np.uint8) or (status > fmt.BAD).any():
        raise ValueError(f"not the pixel sums and status of {rows} rows")
    return sums, status


def writer(cache: Path, split: str, images: str, quality: int) -> RawWriter | JpegWriter:
    return JpegWriter(cache, split, quality) if images == packed.JPEG else RawWriter(cache, split)
