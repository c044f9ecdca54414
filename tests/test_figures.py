"""scripts/figures.py and its parts: the colour-specificity index on hand-made kernels, the
permutation test against an exact enumeration, the nearest-neighbour search against brute force,
and the command on a tiny checkpoint."""

import io
import itertools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet2012 import AlexNet
from alexnet2012.checkpoint import save_checkpoint
from alexnet2012.cli.figures import main
from alexnet2012.config import TrainConfig
from alexnet2012.data import cache_info, eval_loader, make_synthetic_imagenet, prepare_cache
from alexnet2012.data.cache import open_split
from alexnet2012.errors import UsageError
from alexnet2012.evidence import kernels
from alexnet2012.evidence.figures import FILES
from alexnet2012.evidence.kernels import colour_specificity, permutation_test
from alexnet2012.evidence.neighbours import nearest, search_training_set
from alexnet2012.evidence.predictions import centre_crops, wrap

RNG = np.random.default_rng(0)


def test_grey_kernels_score_0_and_colour_opponent_ones_1():
    pattern = RNG.normal(size=(4, 11, 11))
    grey = np.repeat(pattern[:, None], 3, axis=1) + 5.0  # the offset goes with the mean
    opponent = np.stack([pattern, -pattern, np.zeros_like(pattern)], axis=1)
    red = np.zeros((1, 3, 11, 11))
    red[:, 0] = 1.0  # uniformly red: after the mean, (2/3, -1/3, -1/3) at every pixel
    assert colour_specificity(grey) == pytest.approx(np.zeros(4), abs=1e-12)
    assert colour_specificity(opponent) == pytest.approx(np.ones(4))
    assert colour_specificity(red) == pytest.approx([1.0])
    assert colour_specificity(np.full((1, 3, 11, 11), 0.3)) == [0.0]


def test_a_mixed_kernel_scores_its_share_of_colour_energy():
    g, c = RNG.normal(size=(11, 11)), RNG.normal(size=(11, 11))
    g -= g.mean()
    mixed = np.stack([g + c, g - c, g])[None]  # grey part g(1,1,1), colour part c(1,-1,0)
    expected = 2 * (c**2).sum() / (3 * (g**2).sum() + 2 * (c**2).sum())
    assert colour_specificity(mixed) == pytest.approx([expected])
    assert colour_specificity(RNG.normal(size=(2000, 3, 11, 11))).mean() == pytest.approx(
        2 / 3, abs=0.01
    )


def test_permutation_test_identical_and_separated_groups():
    a = RNG.normal(size=48)
    assert permutation_test(a, a.copy(), 2000) == (pytest.approx(0.0), 1.0)
    difference, p = permutation_test(a, a + 10, 2000)
    assert difference == pytest.approx(10) and p == 1 / 2001
    assert permutation_test(a, a + 1, 500, seed=3) == permutation_test(a, a + 1, 500, seed=3)


def test_permutation_test_matches_the_exact_enumeration():
    a, b = np.array([0.1, 0.5, 0.3, 0.9]), np.array([0.7, 0.8, 0.2, 1.0, 0.6])
    pooled, observed = np.concatenate([a, b]), b.mean() - a.mean()
    diffs = []
    for chosen in itertools.combinations(range(9), 4):
        rest = [i for i in range(9) if i not in chosen]
        diffs.append(pooled[rest].mean() - pooled[list(chosen)].mean())
    exact = np.mean(np.abs(diffs) >= abs(observed) - 1e-12)
    difference, p = permutation_test(a, b, 20000, seed=1)
    assert difference == pytest.approx(observed) and p == pytest.approx(exact, abs=0.015)


@pytest.mark.parametrize("k, chunk", [(6, 64), (6, 4), (1, 1000)])
def test_nearest_matches_brute_force(k, chunk):
    queries, items = RNG.normal(size=(5, 32)), RNG.normal(size=(300, 32))
    distances, indices = nearest(queries, items, k, chunk)
    brute = np.sqrt(((queries[:, None] - items[None]) ** 2).sum(-1))
    expected = np.argsort(brute, axis=1)[:, :k]
    assert (indices == expected).all()
    assert distances == pytest.approx(np.take_along_axis(brute, expected, 1), rel=1e-5)


def test_long_names_wrap_onto_two_lines():
    assert wrap("tench", 22) == ["tench"]
    assert wrap("American Staffordshire terrier", 22) == ["American Staffordshire", "terrier"]
    assert len(wrap("a " * 40, 22)) == 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=3, val_per_class=3, seed=2, workers=1
    )
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


def test_the_chosen_images_are_the_centre_crop_loaders_inputs(cache):
    chosen = centre_crops(cache, "val", 4, 0.5, 224, "cpu")
    loaded = torch.cat([x for x, _ in eval_loader(cache, "val", batch_size=4, workers=0)])
    positions = np.searchsorted(open_split(cache, "val").usable, chosen.rows)  # bad rows skipped
    assert torch.equal(chosen.inputs, loaded[positions])


def _checkpoint(run: Path, cache: Path) -> None:
    """A 3-class net as training saves one: random conv1, every other weight a constant."""
    with torch.device("meta"):
        shapes = AlexNet(3).state_dict()
    state = {k: torch.full((), 0.01).expand(v.shape) for k, v in shapes.items()}
    for column in (0, 1):
        state[f"columns.{column}.conv1.weight"] = torch.randn(48, 3, 11, 11) * 0.01
    config = asdict(TrainConfig(cache=str(cache), out=str(run), epochs=2))
    run.mkdir()
    save_checkpoint(
        run / "checkpoint.pt",
        {"model": state, "config": config, "num_classes": 3, "wnids": cache_info(cache).wnids},
    )


def test_the_command_writes_every_figure_and_the_numbers(cache, tmp_path, capsys):
    _checkpoint(tmp_path / "run", cache)
    main([str(tmp_path / "run"), "--devices", "cpu", "--batch-size", "4", "--quiet"])
    out = tmp_path / "run" / "figures"
    printed = capsys.readouterr()
    assert str(out) in printed.out and "fc7 of the training set" not in printed.err
    for name in FILES[:3]:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 400
    text = (out / "figures.md").read_text()
    assert "two-sided permutation test over the 96 kernels: p = " in text
    assert text.count("| yes |") + text.count("| no |") >= 6  # top-1 and top-5 of 3 images
    assert "of 3 epochs" not in text and "0 of 2 epochs" in text


@pytest.mark.parametrize("progress", [True, False])
def test_the_training_set_search_shows_a_bar_unless_quiet(progress, capsys):
    torch.manual_seed(0)
    model = AlexNet(3)
    batches = [(torch.randn(2, 3, 224, 224), torch.tensor([0, 2]))]
    _, _, labels = search_training_set(model, torch.randn(1, 4096), batches, 2, progress)
    assert sorted(labels.ravel().tolist()) == [0, 2]
    assert ("fc7 of the training set" in capsys.readouterr().err) == progress


def test_the_command_refuses_a_folder_without_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="checkpoint.pt does not exist"):
        main([str(tmp_path), "--devices", "cpu"])


def test_kernel_tiles_are_stretched_and_placed_in_order():
    weights = [RNG.normal(size=(48, 3, 11, 11)) for _ in range(2)]
    stats = kernels.kernel_stats(weights)
    png = kernels.figure3(weights, stats)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    tiles = kernels.tiles(weights[0])
    assert tiles.min() == 0 and tiles.max() == 255
    # the first tile's top-left weight: 6 x 6 pixels at the first tile's place
    tile_top = 44 + 34
    assert (image[tile_top : tile_top + 6, 20 : 20 + 6] == tiles[0, 0, 0]).all()


def test_a_one_column_network_has_no_comparison():
    weights = [RNG.normal(size=(96, 3, 11, 11))]
    stats = kernels.kernel_stats(weights)
    assert stats.p_value is None and len(stats.index[0]) == 96
    with Image.open(io.BytesIO(kernels.figure3(weights, stats))) as image:
        assert image.format == "PNG"
