"""Training-set statistics (P §2, §4.1) on [0,1], exact: mean image, RGB covariance, PCA."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet2012.data.cache import PREPARE, ROW_SHAPE, read_cache_file, save_npy
from alexnet2012.errors import UsageError
from alexnet2012.files import write_file
from alexnet2012.progress import Progress

MEAN_IMAGE_FILE = "mean_image.npy"


@dataclass(frozen=True)
class Stats:
    """Statistics of the training set on the [0,1] pixel scale."""

    mean_image: np.ndarray  # float32 (3, 256, 256)
    mean_rgb: np.ndarray  # (3,)
    covariance: np.ndarray  # (3, 3)
    eigenvalues: np.ndarray  # (3,), descending
    eigenvectors: np.ndarray  # (3, 3), column k belongs to eigenvalue k
    num_images: int


@dataclass
class PixelSums:
    """Exact sums over images: per pixel (uint64) and of the RGB products (float64)."""

    pixel: np.ndarray
    second: np.ndarray
    images: int = 0

    @classmethod
    def zeros(cls) -> PixelSums:
        return cls(np.zeros(ROW_SHAPE, np.uint64), np.zeros((3, 3), np.float64))

    def add(self, batch: np.ndarray) -> None:
        self.pixel += batch.sum(axis=0, dtype=np.uint64)
        flat = batch.reshape(-1, 3).astype(np.float64)
        self.second += flat.T @ flat
        self.images += len(batch)

    def merge(self, other: PixelSums) -> None:
        self.pixel += other.pixel
        self.second += other.second
        self.images += other.images

    def stats(self) -> Stats:
        if self.images == 0:
            raise UsageError(
                "no usable training images to compute the mean image and the RGB covariance from"
            )
        n = self.images
        pixels = n * self.pixel.shape[0] * self.pixel.shape[1]
        mean_image = self.pixel.astype(np.float64) / n  # (256, 256, 3) on 0..255
        mean_rgb = self.pixel.reshape(-1, 3).sum(axis=0).astype(np.float64) / pixels
        covariance = (self.second / pixels - np.outer(mean_rgb, mean_rgb)) / 255.0**2
        values, vectors = np.linalg.eigh(covariance)
        values, vectors = nonnegative(values[::-1]), vectors[:, ::-1]
        vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), range(3)])
        image = (mean_image / 255.0).transpose(2, 0, 1).astype(np.float32)
        return Stats(image, mean_rgb / 255.0, covariance, values, vectors, n)


def nonnegative(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues with round-off negatives set to 0: [C]'s colour noise takes their root."""
    return np.clip(eigenvalues, 0.0, None)


def compute_stats(
    images: np.ndarray, rows: np.ndarray, *, chunk: int = 16, progress: bool = True
) -> Stats:
    """Statistics of ``images[rows]`` (``images``: (N, 256, 256, 3) uint8, e.g. the memmap)."""
    rows = np.sort(rows)
    sums = PixelSums.zeros()
    what = f"mean image and RGB covariance of {len(rows)} training images"
    with Progress("stats", len(rows), what, enabled=progress and len(rows) > 0) as bar:
        for start in range(0, len(rows), chunk):
            batch = images[rows[start : start + chunk]]
            sums.add(batch)
            bar.update(len(batch))
    return sums.stats()


def save_stats(cache_dir: str | os.PathLike, stats: Stats) -> None:
    cache = Path(cache_dir)
    save_npy(cache / MEAN_IMAGE_FILE, stats.mean_image)
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
    write_file(cache / "stats.json", json.dumps(doc, indent=1))


def load_stats(cache_dir: str | os.PathLike) -> Stats:
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
        eigenvalues=nonnegative(np.array(doc["eigenvalues"])),  # files written before the clamp
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
