"""Training-set statistics against numpy on the same pixels: the mean image, the RGB covariance
and its eigen-decomposition, on the [0,1] scale (P §4.1)."""

import json

import numpy as np
import pytest
from PIL import Image

from alexnet2012.data import load_stats, prepare_cache
from alexnet2012.data.stats import compute_stats
from alexnet2012.errors import UsageError


def constant_images(root, colours, sizes):
    for k, (colour, size) in enumerate(zip(colours, sizes)):
        folder = root / "train" / f"n0000000{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, tuple(colour)).save(folder / f"img{k}.png")  # lossless


def test_constant_colours_give_the_exact_covariance(tmp_path):
    # Each image is one colour and has the same number of pixels after preprocessing, so the
    # pixel covariance is the covariance of the colours, and the mean image is constant.
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 200, 30]])
    constant_images(
        tmp_path / "src", colours, [(300, 200), (256, 256), (200, 500), (999, 300), (257, 258)]
    )
    prepare_cache(
        tmp_path / "src", tmp_path / "cache", splits=("train",), workers=0, progress=False
    )
    stats = load_stats(tmp_path / "cache")
    doc = json.loads((tmp_path / "cache" / "stats.json").read_text())

    x = colours / 255.0
    mean = x.mean(axis=0)
    covariance = (x - mean).T @ (x - mean) / len(x)
    values, vectors = np.linalg.eigh(covariance)
    assert doc["num_images"] == stats.num_images == 5
    np.testing.assert_allclose(doc["mean_rgb"], mean, rtol=0, atol=1e-15)
    np.testing.assert_allclose(stats.covariance, covariance, rtol=0, atol=1e-15)
    np.testing.assert_allclose(doc["eigenvalues"], values[::-1], rtol=0, atol=1e-14)
    assert doc["eigenvalues"] == sorted(doc["eigenvalues"], reverse=True)
    found = np.array(doc["eigenvectors"])
    for k in range(3):  # column k is eigenvector k (up to sign)
        assert abs(found[:, k] @ vectors[:, 2 - k]) == pytest.approx(1, abs=1e-12)
    assert stats.mean_image.shape == (3, 256, 256) and stats.mean_image.dtype == np.float32
    np.testing.assert_allclose(
        stats.mean_image, np.broadcast_to(mean[:, None, None], (3, 256, 256)), atol=1e-7
    )


def test_two_colours_give_one_component_along_their_difference():
    # Half the pixels black, half (255, 128, 0): covariance = d d^T / 4 for d = (1, 128/255, 0),
    # one non-zero eigenvalue |d|^2 / 4 with eigenvector d / |d|.
    images = np.zeros((2, 256, 256, 3), np.uint8)
    images[1] = (255, 128, 0)
    stats = compute_stats(images, np.arange(2), progress=False)
    d = np.array([1, 128 / 255, 0])
    np.testing.assert_allclose(stats.eigenvalues, [d @ d / 4, 0, 0], atol=1e-15)
    np.testing.assert_allclose(stats.eigenvectors[:, 0], d / np.linalg.norm(d), atol=1e-12)
    np.testing.assert_allclose(stats.mean_rgb, d / 2, atol=1e-15)


def test_streaming_pass_matches_numpy_on_random_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 256, 256, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2 + images[..., 1] // 2  # correlated channels
    rows = np.array([7, 0, 2, 3, 5, 8, 1])  # some rows, unsorted; chunks of 3 leave a remainder
    stats = compute_stats(images, rows, chunk=3, progress=False)
    chosen = images[rows].astype(np.float64) / 255
    pixels = chosen.reshape(-1, 3)
    np.testing.assert_allclose(stats.mean_image, chosen.mean(axis=0).transpose(2, 0, 1), atol=1e-7)
    np.testing.assert_allclose(stats.mean_rgb, pixels.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.covariance, np.cov(pixels.T, bias=True), rtol=1e-11)
    values, vectors = np.linalg.eigh(np.cov(pixels.T, bias=True))
    np.testing.assert_allclose(stats.eigenvalues, values[::-1], rtol=1e-10)
    np.testing.assert_allclose(np.abs(stats.eigenvectors), np.abs(vectors[:, ::-1]), atol=1e-8)
    np.testing.assert_allclose(stats.eigenvectors.T @ stats.eigenvectors, np.eye(3), atol=1e-12)
    assert stats.num_images == 7


def test_bad_rows_are_left_out_of_the_statistics(tmp_path):
    constant_images(tmp_path / "src", [(200, 0, 0), (0, 0, 100)], [(256, 256)] * 2)
    (tmp_path / "src" / "train" / "n00000000" / "broken.JPEG").write_bytes(
        b"\xff\xd8\xff\xe0 truncated"
    )
    prepare_cache(
        tmp_path / "src", tmp_path / "cache", splits=("train",), workers=0, progress=False
    )
    stats = load_stats(tmp_path / "cache")
    assert stats.num_images == 2
    np.testing.assert_allclose(stats.mean_rgb, [100 / 255, 0, 50 / 255], atol=1e-15)


def test_missing_stats_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="stats.json not found: run scripts/prepare_imagenet.py"):
        load_stats(tmp_path)
