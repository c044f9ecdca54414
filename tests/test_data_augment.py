"""Training augmentation and test views (P §4.1; [C]'s convdata.py): crop positions, flips, PCA
lighting (paper and [C] variants), mean subtraction, and the ten views against torchvision."""

import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.transforms.v2 import functional as TF

from alexnet2012.data import (
    Lighting,
    augment,
    centre_view,
    crop_flip,
    make_plan,
    mean_crop,
    ten_views,
    to_input,
)
from alexnet2012.data.augment import _gather_crops, _slice_crops, hwc_mean

# Reference ImageNet RGB PCA on [0,1] (fb.resnet.torch's datasets/imagenet.lua).
EIGENVALUES = np.array([0.2175, 0.0188, 0.0045])
EIGENVECTORS = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


def random_images(n, seed=0):
    return torch.from_numpy(
        np.random.default_rng(seed).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    )


@pytest.mark.parametrize("crop", [224, 227])
def test_crop_offsets_cover_every_position_and_stay_in_bounds(crop):
    plan = make_plan(np.arange(4000), 50, crop, seed=3, epoch=0)
    positions = 256 - crop + 1
    for offsets in (plan.oy, plan.ox):
        assert offsets.min() == 0 and offsets.max() == 256 - crop
        counts = np.bincount(offsets.ravel(), minlength=positions)
        assert len(counts) == positions and counts.min() > 0
        # uniform: each of the 33 (or 30) positions about 4000/positions times
        assert counts.max() / counts.min() < 2


def test_flips_are_fair_and_lighting_draws_are_n_0_01():
    plan = make_plan(np.arange(40000), 100, 224, seed=5, epoch=2)
    flips = plan.flip.ravel()
    assert abs(flips.mean() - 0.5) < 4 * np.sqrt(0.25 / flips.size)  # 4 sigma
    alpha = plan.alpha.reshape(-1, 3).astype(np.float64)
    assert np.abs(alpha.mean(axis=0)).max() < 4 * 0.1 / np.sqrt(len(alpha))
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.02)
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.03
    assert np.corrcoef(plan.flip.ravel(), plan.oy.ravel())[0, 1] < 0.03


def crop_flip_per_image(images, oy, ox, flip, size):
    """The per-image definition (``crop_flip`` before it was vectorised), written out."""
    out = torch.empty((len(images), size, size, 3), dtype=torch.uint8)
    for i, (y, x, f) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist())):
        crop = images[i, y : y + size, x : x + size]
        out[i] = crop.flip(1) if f else crop
    return out


@pytest.mark.parametrize("crop", [224, 227])
@pytest.mark.parametrize("impl", [crop_flip, _slice_crops, _gather_crops])
def test_crop_flip_is_the_per_image_definition_and_torchvision(crop, impl):
    # Every offset on each axis, both extremes (0 and 256 - S) with and without a flip.
    far = 256 - crop
    n = 2 * (far + 1)
    images = random_images(n, seed=3)
    oy = np.concatenate([np.arange(far + 1), np.arange(far + 1)[::-1]])
    ox = np.concatenate([np.arange(far + 1)[::-1], np.arange(far + 1)])
    flip = np.arange(n) % 3 == 0
    flip[[0, far, far + 1, n - 1]] = [True, True, False, False]
    crops = impl(images, oy, ox, flip, crop)
    assert crops.shape == (n, crop, crop, 3) and crops.dtype == torch.uint8
    assert crops.is_contiguous()
    assert torch.equal(crops, crop_flip_per_image(images, oy, ox, flip, crop))
    for i in range(n):  # independent check: torchvision's crop and horizontal flip, on CHW
        chw = TF.crop(images[i].permute(2, 0, 1), int(oy[i]), int(ox[i]), crop, crop)
        expected = TF.horizontal_flip(chw) if flip[i] else chw
        assert torch.equal(crops[i], expected.permute(1, 2, 0))


def test_crop_flip_refuses_offsets_outside_the_image():
    images = random_images(2)
    ok, zero = np.array([0, 32]), np.zeros(2, bool)
    assert crop_flip(images[:0], ok[:0], ok[:0], zero[:0], 224).shape == (0, 224, 224, 3)
    for oy, ox in ((np.array([0, 33]), ok), (ok, np.array([-1, 0])), (ok[:1], ok[:1])):
        with pytest.raises(ValueError, match="keep the 224 x 224 crop inside"):
            crop_flip(images, oy, ox, zero[: len(oy)], 224)


@pytest.mark.parametrize("mode", ["paper", "2012", "none"])
def test_to_input_is_the_contiguous_formula_bit_for_bit_in_channels_last(mode):
    rng = np.random.default_rng(5)
    crops = torch.from_numpy(rng.integers(0, 256, (3, 10, 224, 224, 3), dtype=np.uint8))
    mean = mean_crop(rng.random((3, 256, 256)).astype(np.float32), 224)
    lighting = Lighting(mode, EIGENVALUES, EIGENVECTORS)
    shift = lighting.shift(rng.normal(0, 0.1, (3, 3)))
    for x in (crops, crops[:, 0]):
        # The earlier definition: NCHW float, then the same elementwise steps in the same order.
        expected = x.movedim(-1, -3).float().contiguous() - mean
        if shift is not None:
            expected += shift.view(3, *[1] * (x.dim() - 4), 3, 1, 1)
        expected = expected * lighting.scale if lighting.scale != 1.0 else expected
        for m in (mean, hwc_mean(mean)):
            out = to_input(x, m, shift, lighting.scale)
            assert out.shape == expected.shape and torch.equal(out, expected)
            assert out.movedim(-3, -1).is_contiguous()  # channels-last
        assert to_input(crops[:, 0], mean).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("mode", ["paper", "2012", "none"])
def test_training_input_formula(mode):
    images = random_images(4, seed=1)
    rng = np.random.default_rng(2)
    mean_image = rng.random((3, 256, 256)).astype(np.float32)
    oy, ox, flip = (
        np.array([3, 0, 32, 16]),
        np.array([30, 1, 0, 16]),
        np.array([False, True, True, False]),
    )
    alpha = rng.normal(0, 0.1, (4, 3)).astype(np.float32)
    lighting = Lighting(mode, EIGENVALUES, EIGENVECTORS)
    x = augment(images, oy, ox, flip, alpha, mean_crop(mean_image, 224), lighting)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32

    # The mean's central crop, whatever the crop's position.
    central_mean = mean_image[:, 16:240, 16:240].astype(np.float64) * 255
    for i in range(4):
        crop = images.numpy()[i, oy[i] : oy[i] + 224, ox[i] : ox[i] + 224]
        crop = (crop[:, ::-1] if flip[i] else crop).transpose(2, 0, 1).astype(np.float64)
        a = alpha[i].astype(np.float64)
        if mode == "paper":  # P §4.1 on [0,1]: add P (a * lambda), i.e. 255 times that on 0..255
            expected = crop - central_mean + 255 * (EIGENVECTORS @ (a * EIGENVALUES))[:, None, None]
        elif mode == "2012":  # [C]: (crop - mean + P (a * sqrt(lambda_255))) / 1.1
            shift = EIGENVECTORS @ (a * np.sqrt(EIGENVALUES * 255**2))
            expected = (crop - central_mean + shift[:, None, None]) / 1.1
        else:
            expected = crop - central_mean
        np.testing.assert_allclose(x[i].numpy(), expected, rtol=0, atol=2e-4)


def test_lighting_shift_has_the_paper_direction_and_magnitude():
    # Over many draws, the shift's component along eigenvector k has standard deviation 0.1 * l_k
    # (on [0,1]) and nothing else: shifts projected on the eigenvectors are independent.
    plan = make_plan(np.arange(30000), 30000, 224, seed=0, epoch=0)
    alpha = plan.alpha[0]
    paper = Lighting("paper", EIGENVALUES, EIGENVECTORS).shift(alpha).double().numpy() / 255
    along = paper @ EIGENVECTORS  # coordinates in the (orthonormal) eigenbasis
    np.testing.assert_allclose(along.std(axis=0), 0.1 * EIGENVALUES, rtol=0.03)
    assert np.abs(np.corrcoef(along.T) - np.eye(3)).max() < 0.03
    expected_cov = EIGENVECTORS @ np.diag((0.1 * EIGENVALUES) ** 2) @ EIGENVECTORS.T
    np.testing.assert_allclose(np.cov(paper.T), expected_cov, atol=0.03 * expected_cov.max())
    # [C]'s variant: stdev 0.1 * sqrt(l_k) * 255 on the 0..255 scale.
    old = Lighting("2012", EIGENVALUES, EIGENVECTORS).shift(alpha).double().numpy() @ EIGENVECTORS
    np.testing.assert_allclose(old.std(axis=0), 0.1 * np.sqrt(EIGENVALUES) * 255, rtol=0.03)
    assert Lighting("none", EIGENVALUES, EIGENVECTORS).shift(alpha) is None


@pytest.mark.parametrize("crop", [224, 227])
def test_centre_view_is_torchvision_centre_crop(crop):
    images = random_images(3)
    chw = images.permute(0, 3, 1, 2)
    expected = transforms.CenterCrop(crop)(chw).permute(0, 2, 3, 1)
    assert torch.equal(centre_view(images, crop), expected)


def test_ten_views_are_torchvision_ten_crop_in_the_2012_order():
    images = random_images(3)
    views = ten_views(images, 224)
    assert views.shape == (3, 10, 224, 224, 3)
    tl, tr, bl, br, c, f_tl, f_tr, f_bl, f_br, f_c = transforms.TenCrop(224)(
        images.permute(0, 3, 1, 2)
    )
    # torchvision mirrors the image and then crops, so its mirrored top-left is the mirror of the
    # top-right crop, etc.; [C] mirrors each crop: TL, TR, C, BL, BR, then those five mirrored.
    expected = torch.stack([tl, tr, c, bl, br, f_tr, f_tl, f_c, f_br, f_bl], dim=1).permute(
        0, 1, 3, 4, 2
    )
    assert torch.equal(views, expected)


def test_ten_views_227_against_numpy():
    images = random_images(2)
    views = ten_views(images, 227).numpy()
    raw = images.numpy()
    corners = [
        (0, 0),
        (0, 29),
        (14, 14),
        (29, 0),
        (29, 29),
    ]  # the centre offset is round(14.5) = 14, as in torchvision
    for k, (y, x) in enumerate(corners):
        np.testing.assert_array_equal(views[:, k], raw[:, y : y + 227, x : x + 227])
        np.testing.assert_array_equal(views[:, k + 5], raw[:, y : y + 227, x : x + 227][:, :, ::-1])
    five = transforms.FiveCrop(227)(images.permute(0, 3, 1, 2))
    np.testing.assert_array_equal(views[:, 2], five[4].permute(0, 2, 3, 1).numpy())


def test_to_input_handles_ten_views_and_subtracts_the_central_mean():
    images = random_images(2)
    mean_image = np.full((3, 256, 256), 0.5, np.float32)
    mean_image[:, 16:240, 16:240] = 0.25  # the central crop differs from the border
    x = to_input(ten_views(images, 224), mean_crop(mean_image, 224))
    assert x.shape == (2, 10, 3, 224, 224)
    expected = ten_views(images, 224).permute(0, 1, 4, 2, 3).double() - 0.25 * 255
    np.testing.assert_allclose(x.numpy(), expected.numpy(), atol=1e-4)


def test_plan_is_a_function_of_seed_and_epoch():
    a, b = (
        make_plan(np.arange(100), 10, 224, seed=1, epoch=4),
        make_plan(np.arange(100), 10, 224, seed=1, epoch=4),
    )
    for field in ("rows", "oy", "ox", "flip", "alpha"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.rows, make_plan(np.arange(100), 10, 224, seed=1, epoch=5).rows)
    assert not np.array_equal(a.rows, make_plan(np.arange(100), 10, 224, seed=2, epoch=4).rows)
    # 107 images, batch 10: 10 batches, 7 images dropped, each row at most once.
    rows = np.arange(1000, 1107)
    plan = make_plan(rows, 10, 224, seed=0, epoch=0)
    assert (
        plan.rows.shape == (10, 10)
        and len(set(plan.rows.ravel())) == 100
        and set(plan.rows.ravel()) <= set(rows)
    )
    assert (np.diff(plan.rows, axis=1) > 0).all()  # ascending within a batch


def test_bad_arguments_are_refused():
    # option values: checked by the command lines (alexnet2012.options), asserted here
    with pytest.raises(AssertionError):
        make_plan(np.arange(10), 2, 225, 0, 0)
    with pytest.raises(AssertionError):
        make_plan(np.arange(10), 11, 224, 0, 0)
    with pytest.raises(AssertionError):
        make_plan(np.arange(10), 2, 224, -1, 0)
    with pytest.raises(AssertionError):
        Lighting("pca", EIGENVALUES, EIGENVECTORS)
