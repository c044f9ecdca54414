"""Loaders from the cache: batches equal the plan applied to the cached pixels, determinism across
worker counts, mid-epoch resume, evaluation coverage, and argument errors."""

import numpy as np
import pytest
import torch
from torchvision import transforms

from alexnet2012.data import (
    cache_info,
    eval_loader,
    load_stats,
    make_plan,
    make_synthetic_imagenet,
    prepare_cache,
    train_loader,
)
from alexnet2012.errors import UsageError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "imagenet"
    make_synthetic_imagenet(root, classes=3, train_per_class=8, val_per_class=3, seed=2)
    out = tmp_path_factory.mktemp("cache")
    prepare_cache(root, out, workers=0, progress=False)
    return out


def raw(cache, split):
    """Images, labels and usable rows, read with numpy alone."""
    images = np.load(cache / f"{split}_images.npy")
    lines = (cache / f"{split}_index.tsv").read_text().splitlines()[1:]
    labels = np.array([int(line.split("\t")[1]) for line in lines])
    usable = np.flatnonzero(np.load(cache / f"{split}_status.npy") == 1)
    return images, labels, usable


def test_training_batches_are_the_plan_applied_to_the_cached_pixels(cache):
    images, labels, usable = raw(cache, "train")
    assert len(usable) == 22  # 24 files, 2 unreadable
    stats = load_stats(cache)
    loader = train_loader(cache, batch_size=5, seed=7, epoch=3, workers=0, lighting="paper")
    assert len(loader) == 4  # floor(22 / 5)
    plan = make_plan(usable, 5, 224, seed=7, epoch=3)
    seen = []
    central_mean = stats.mean_image[:, 16:240, 16:240].astype(np.float64) * 255
    for b, (x, y) in enumerate(loader):
        assert x.shape == (5, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)  # the network's layout
        rows = plan.rows[b]
        np.testing.assert_array_equal(y.numpy(), labels[rows])
        for i, row in enumerate(rows):
            crop = images[
                row, plan.oy[b, i] : plan.oy[b, i] + 224, plan.ox[b, i] : plan.ox[b, i] + 224
            ]
            crop = crop[:, ::-1] if plan.flip[b, i] else crop
            shift = (
                255 * stats.eigenvectors @ (plan.alpha[b, i].astype(np.float64) * stats.eigenvalues)
            )
            expected = crop.transpose(2, 0, 1) - central_mean + shift[:, None, None]
            np.testing.assert_allclose(x[i].numpy(), expected, atol=2e-4)
        seen += list(rows)
    assert len(set(seen)) == 20 and set(seen) <= set(usable)  # each image at most once, no bad rows


def test_same_batches_with_any_number_of_workers_and_resume_mid_epoch(cache):
    def batches(**kw):
        return [
            (x.clone(), y.clone())
            for x, y in train_loader(cache, batch_size=4, seed=1, epoch=0, **kw)
        ]

    alone = batches(workers=0)
    assert len(alone) == 5
    parallel = batches(workers=2)
    resumed = train_loader(cache, batch_size=4, seed=1, epoch=0, start_batch=3, workers=0)
    assert len(resumed) == 2
    for (x0, y0), (x1, y1) in zip(alone, parallel):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    for (x0, y0), (x1, y1) in zip(alone[3:], resumed):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    other_epoch, _ = next(iter(train_loader(cache, batch_size=4, seed=1, epoch=1, workers=0)))
    assert not torch.equal(other_epoch, alone[0][0])
    assert len(train_loader(cache, batch_size=4, seed=1, epoch=0, start_batch=5, workers=0)) == 0


def test_lighting_variants_in_the_loader(cache):
    kw = dict(batch_size=4, seed=0, epoch=0, workers=0)
    (paper, _), (old, _), (none, _) = (
        next(iter(train_loader(cache, lighting=m, **kw))) for m in ("paper", "2012", "none")
    )
    stats = load_stats(cache)
    plan = make_plan(raw(cache, "train")[2], 4, 224, seed=0, epoch=0)
    a = plan.alpha[0].astype(np.float64)
    paper_shift = 255 * (a * stats.eigenvalues) @ stats.eigenvectors.T
    old_shift = 255 * (a * np.sqrt(stats.eigenvalues)) @ stats.eigenvectors.T
    np.testing.assert_allclose((paper - none).mean(dim=(2, 3)).numpy(), paper_shift, atol=1e-3)
    np.testing.assert_allclose((old * 1.1 - none).mean(dim=(2, 3)).numpy(), old_shift, atol=1e-3)


@pytest.mark.parametrize("views", [1, 10])
def test_eval_batches_cover_every_usable_image_once(cache, views):
    images, labels, usable = raw(cache, "val")
    assert len(usable) == 8  # 9 files, 1 unreadable
    mean = torch.from_numpy(load_stats(cache).mean_image[:, 16:240, 16:240]).double() * 255
    loader = eval_loader(cache, "val", batch_size=3, views=views, workers=1 if views == 10 else 0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [3, 3, 2]
    x = torch.cat([x for x, _ in batches])
    np.testing.assert_array_equal(torch.cat([y for _, y in batches]).numpy(), labels[usable])
    chw = torch.from_numpy(images[usable]).permute(0, 3, 1, 2)
    if views == 1:
        expected = transforms.CenterCrop(224)(chw).double() - mean
    else:
        tl, tr, bl, br, c, f_tl, f_tr, f_bl, f_br, f_c = transforms.TenCrop(224)(chw)
        expected = (
            torch.stack([tl, tr, c, bl, br, f_tr, f_tl, f_c, f_br, f_bl], dim=1).double() - mean
        )
    assert x.shape == expected.shape
    np.testing.assert_allclose(x.numpy(), expected.numpy(), atol=1e-4)


def test_cache_info(cache):
    info = cache_info(cache)
    assert (info.num_classes, info.train_images, info.val_images) == (3, 22, 8)
    assert info.wnids == sorted(info.wnids) and info.bad_files == {"train": 2, "val": 1}
    assert all(isinstance(name, tuple) for name in info.class_names)


def test_loader_errors(cache, tmp_path):
    with pytest.raises(UsageError, match="has no prepared train split"):
        train_loader(tmp_path, batch_size=4)
    with pytest.raises(UsageError, match="is not a prepared cache"):
        cache_info(tmp_path)
    with pytest.raises(UsageError, match=f"{tmp_path / 'nope'} does not exist: check the path"):
        cache_info(tmp_path / "nope")
    with pytest.raises(AssertionError):  # option values: checked by alexnet2012.options
        train_loader(cache, batch_size=4, crop=256)
    with pytest.raises(UsageError, match="start_batch must be between 0 and the 5 batches"):
        train_loader(cache, batch_size=4, start_batch=6)
    with pytest.raises(AssertionError):
        eval_loader(cache, batch_size=4, views=5)
    with pytest.raises(AssertionError):
        eval_loader(cache, batch_size=4, workers=-1)
    with pytest.raises(UsageError, match="has no prepared test split"):
        eval_loader(cache, "test", batch_size=4)
    status = cache / "val_status.npy"
    saved = status.read_bytes()
    np.save(status, np.zeros(9, np.uint8))
    try:
        with pytest.raises(UsageError, match="is unfinished .* re-run scripts/prepare_imagenet.py"):
            eval_loader(cache, batch_size=4)
    finally:
        status.write_bytes(saved)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_every_pass_copies_on_one_side_stream(cache, monkeypatch):
    """Two passes over a loader make one side stream, and the second pass reserves no more
    memory (a fresh stream per pass would strand the last one's cached blocks)."""
    from alexnet2012.data import stream as feeding

    made = []

    class Counted(torch.cuda.Stream):
        def __new__(cls, *args, **kwargs):
            made.append(1)
            return super().__new__(cls, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "Stream", Counted)
    feeding.side_stream.cache_clear()
    loader = eval_loader(cache, batch_size=4, workers=0, device="cuda:0")
    reserved = []
    for _ in range(2):
        for x, _ in loader:
            x.sum()
        torch.cuda.synchronize()
        reserved.append(torch.cuda.memory_reserved())
    feeding.side_stream.cache_clear()
    assert len(made) == 1 and reserved[1] == reserved[0], (made, reserved)
