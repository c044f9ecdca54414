"""The JPEG cache format: the raw cache's rows encoded by Pillow at ``quality`` (4:4:4), end to
end in ``<split>_jpeg.bin``; row r's bytes at ``offsets[r]`` (``<split>_jpeg_index.npy``, int64
(N, 2): offset, length). Decoded by ``decode_jpeg``: libjpeg-turbo on the CPU, nvJPEG on a GPU."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from alexnet2012 import paper
from alexnet2012.data.augment import centre_view, crop_flip, ten_views

RAW, JPEG = "raw", "jpeg"
FORMATS = (RAW, JPEG)
DEFAULT_QUALITY = 90


def packed_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_jpeg.bin"


def offsets_path(cache: Path, split: str) -> Path:
    return cache / f"{split}_jpeg_index.npy"


def sums_path(cache: Path, split: str) -> Path:
    """Prepare's checkpoint: row status and the pixel sums of the rows done (for the stats)."""
    return cache / f"{split}_jpeg_sums.npz"


def encode(image: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def check_offsets(offsets: np.ndarray, done: np.ndarray, size: int) -> None:
    """``ValueError`` unless every done row has bytes inside the packed file of ``size`` bytes."""
    if offsets.shape != (len(done), 2) or offsets.dtype != np.int64:
        raise ValueError(f"not {len(done)} (offset, length) pairs, int64")
    o, n = offsets[done, 0], offsets[done, 1]
    if len(o) and (n.min() <= 0 or o.min() < 0 or (o + n).max() > size):
        raise ValueError(f"a row outside the {size} bytes of its packed file")


class Encoded(NamedTuple):
    """Still encoded images for the GPU: crops at ``where`` (oy, ox, flip), or else ``views``."""

    data: torch.Tensor  # uint8: the batch's JPEG files end to end
    lengths: torch.Tensor  # int64 bytes per image
    labels: torch.Tensor
    shift: torch.Tensor | None
    where: torch.Tensor  # int64 (B, 3) or (0, 3)
    crop: int
    views: int


class PackedRows:
    """Rows of a split's packed file (opened in each worker), decoded with ``threads`` threads."""

    def __init__(self, cache: Path, split: str, threads: int = 1) -> None:
        self.path, self.threads = packed_path(cache, split), threads
        self.offsets = np.load(offsets_path(cache, split))
        self._data: np.ndarray | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None, "_pool": None}

    def encoded(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' files end to end (one buffer) and their lengths."""
        if self._data is None:
            self._data = np.memmap(self.path, np.uint8, "r") if os.path.getsize(self.path) else None
        spans = self.offsets[rows]
        data = np.empty(int(spans[:, 1].sum()), np.uint8)
        at = 0
        for o, n in spans.tolist():
            data[at : at + n] = self._data[o : o + n]
            at += n
        return torch.from_numpy(data), torch.from_numpy(np.ascontiguousarray(spans[:, 1]))

    def decode(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 (B, 256, 256, 3) of ``rows``."""
        data, lengths = self.encoded(rows)
        if self.threads > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads)
        return decode_cpu(data, lengths, self._pool)


def decode_cpu(
    data: torch.Tensor, lengths: torch.Tensor, pool: ThreadPoolExecutor | None = None
) -> torch.Tensor:
    files = torch.split(data, lengths.tolist())
    out = np.empty((len(files), paper.IMAGE_SIZE, paper.IMAGE_SIZE, 3), np.uint8)

    def one(i: int) -> None:
        # libjpeg-turbo writes HWC: the CHW tensor is a view of it
        out[i] = _decode(files[i]).permute(1, 2, 0).numpy()

    with _quiet():
        list((pool.map if pool else map)(one, range(len(files))))
    return torch.from_numpy(out)


@contextmanager
def _quiet() -> Iterator[None]:
    """torchvision >= 0.29 warns at every call that its decoders move to TorchCodec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*TorchCodec", DeprecationWarning)
        yield


def decode_gpu(data: torch.Tensor, lengths: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 256, 256, 3) on ``device``, after the current stream's work (nvJPEG's own)."""
    files = list(torch.split(data, lengths.tolist()))
    torch.cuda.current_stream(device).synchronize()
    with _quiet():
        planes = _decode(files, device=device)
    return torch.stack(planes).permute(0, 2, 3, 1)


def to_device(item: Encoded, device: torch.device) -> tuple:
    """The loader item the raw path makes (crops, labels, shift), crops decoded on ``device``."""
    images = decode_gpu(item.data, item.lengths, device)
    if len(item.where):
        oy, ox, flip = item.where.numpy().T
        crops = crop_flip(images, oy, ox, flip.astype(bool), item.crop)
    elif item.views == 10:
        crops = ten_views(images, item.crop)
    else:
        crops = centre_view(images, item.crop)
    return crops, item.labels, item.shift


def _decode(data, device: torch.device | str = "cpu"):
    # imported on first use: torchvision's import brings in Dynamo, seconds in every process
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
