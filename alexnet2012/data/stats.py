"""Training-set statistics for mean subtraction and PCA lighting (PAPER_NOTES "Data", P §2, §4.1).

One streaming pass over the training cache: the per-pixel mean image (3x256x256; [C] subtracts
its central crop from every crop) and the 3x3 covariance of RGB pixel values over all pixels of
all training images, with its eigen-decomposition (the paper's PCA "over the whole training set").

Exactness: the sums are of integer pixel values 0..255, accumulated as uint64 (the mean image)
and as float64 X^T X per chunk (the second moments; every partial sum is an integer below 2^53,
about 9e15, which float64 holds exactly: ILSVRC-2012 train reaches about 5.5e15). The scaling to
[0,1] (1/255, and 1/255^2 for the covariance) happens once at the end. The covariance is the
population one (divided by the number of pixels, ~8e10 for ILSVRC; N-1 would not matter).
Eigenvalues are in descending order; eigenvectors are columns, RGB order, each with its
largest-magnitude entry made positive (the sign is arbitrary: the lighting noise is symmetric).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet2012.data.cache import PREPARE, read_cache_file, write_atomic
from alexnet2012.data.progress import Progress
from alexnet2012.errors import UsageError

MEAN_IMAGE_FILE = "mean_image.npy"


@dataclass(frozen=True)
class Stats:
    """Statistics of the training set, all on the [0,1] pixel scale."""

    mean_image: np.ndarray  # float32 (3, 256, 256)
    mean_rgb: np.ndarray  # (3,)
    covariance: np.ndarray  # (3, 3)
    eigenvalues: np.ndarray  # (3,), descending
    eigenvectors: np.ndarray  # (3, 3), column k belongs to eigenvalue k
    num_images: int


def compute_stats(
    images: np.ndarray, rows: np.ndarray, *, chunk: int = 16, progress: bool = True
) -> Stats:
    """Statistics of ``images[rows]`` (``images``: (N, 256, 256, 3) uint8, e.g. the memmap)."""
    if len(rows) == 0:
        raise UsageError(
            "no usable training images to compute the mean image and the RGB covariance from"
        )
    rows = np.sort(rows)
    pixel_sum = np.zeros(images.shape[1:], np.uint64)
    second = np.zeros((3, 3), np.float64)
    what = f"mean image and RGB covariance of {len(rows)} training images"
    with Progress("stats", len(rows), what, enabled=progress) as bar:
        for start in range(0, len(rows), chunk):
            batch = images[rows[start : start + chunk]]
            pixel_sum += batch.sum(axis=0, dtype=np.uint64)
            flat = batch.reshape(-1, 3).astype(np.float64)
            second += flat.T @ flat
            bar.update(len(batch))
    pixels = len(rows) * images.shape[1] * images.shape[2]
    mean_image = pixel_sum.astype(np.float64) / len(rows)  # (256, 256, 3) on 0..255
    mean_rgb = pixel_sum.reshape(-1, 3).sum(axis=0).astype(np.float64) / pixels
    covariance = (second / pixels - np.outer(mean_rgb, mean_rgb)) / 255.0**2
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = values[::-1], vectors[:, ::-1]
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), range(3)])
    return Stats(
        mean_image=(mean_image / 255.0).transpose(2, 0, 1).astype(np.float32),
        mean_rgb=mean_rgb / 255.0,
        covariance=covariance,
        eigenvalues=values,
        eigenvectors=vectors,
        num_images=len(rows),
    )


def save_stats(cache_dir: str | os.PathLike, stats: Stats) -> None:
    """Write ``stats.json`` and the mean image it names into ``cache_dir``."""
    cache = Path(cache_dir)
    tmp = cache / (MEAN_IMAGE_FILE + ".tmp.npy")
    np.save(tmp, stats.mean_image)
    os.replace(tmp, cache / MEAN_IMAGE_FILE)
    doc = {
        "num_images": stats.num_images,
        "scale": "[0,1] (pixel value / 255)",
        "mean_rgb": stats.mean_rgb.tolist(),
        "covariance": stats.covariance.tolist(),
        "eigenvalues": stats.eigenvalues.tolist(),
        "eigenvectors": stats.eigenvectors.tolist(),
        "eigenvectors_layout": "3x3, column k belongs to eigenvalue k, rows R, G, B",
        "mean_image": MEAN_IMAGE_FILE,
        "mean_image_layout": "float32 (3, 256, 256), RGB, [0,1]",
    }
    write_atomic(cache / "stats.json", json.dumps(doc, indent=1).encode())


def load_stats(cache_dir: str | os.PathLike) -> Stats:
    """Read the statistics written by ``prepare_cache``; missing or damaged: ``UsageError``."""
    cache = Path(cache_dir)
    path = cache / "stats.json"
    if not path.is_file():
        raise UsageError(
            f"{path} not found: run {PREPARE} SRC {cache} with the train split "
            f"to compute the training-set statistics"
        )
    fix = f"delete {path} and re-run {PREPARE} SRC {cache} to recompute it"
    doc = read_cache_file(path, _parse_stats, fix)
    mean_path = cache / doc["mean_image"]
    if not mean_path.is_file():
        raise UsageError(f"{mean_path} (named by {path}) is missing: {fix}")
    return Stats(
        mean_image=read_cache_file(mean_path, _load_mean_image, fix),
        mean_rgb=np.array(doc["mean_rgb"]),
        covariance=np.array(doc["covariance"]),
        eigenvalues=np.array(doc["eigenvalues"]),
        eigenvectors=np.array(doc["eigenvectors"]),
        num_images=int(doc["num_images"]),
    )


def _parse_stats(path: Path) -> dict:
    doc = json.loads(path.read_text())
    shapes = {"mean_rgb": (3,), "covariance": (3, 3), "eigenvalues": (3,), "eigenvectors": (3, 3)}
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("num_images"), int)
        and isinstance(doc.get("mean_image"), str)
        and all(np.shape(doc.get(k)) == shape for k, shape in shapes.items())
    ):
        raise ValueError("missing or malformed statistics")
    return doc


def _load_mean_image(path: Path) -> np.ndarray:
    mean = np.load(path)
    if mean.shape != (3, 256, 256) or mean.dtype != np.float32:
        raise ValueError("not a float32 (3, 256, 256) mean image")
    return mean
