"""The JPEG cache: the raw cache's rows within JPEG error, the same statistics and bad-file
report, a resumable preparation, and loaders that follow the same epoch plan (exact resume);
decoding checked against Pillow's decode of the same bytes, and on a GPU against the CPU's."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet2012.data import (
    TrainStream,
    cache_info,
    eval_loader,
    load_stats,
    make_plan,
    make_synthetic_imagenet,
    prepare_cache,
    train_loader,
)
from alexnet2012.data import prepare as prepare_module
from alexnet2012.data.cache import open_split
from alexnet2012.errors import UsageError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SPLIT_FILES = ("index.tsv", "status.npy", "bad.tsv")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """A synthetic set (24 train files, 9 val, 3 of them unreadable), its raw cache and its JPEG
    cache at quality 95."""
    root = tmp_path_factory.mktemp("jpeg")
    make_synthetic_imagenet(root / "src", classes=3, train_per_class=8, val_per_class=3, seed=2)
    prepare_cache(root / "src", root / "raw", workers=0, progress=False)
    summary = prepare_cache(
        root / "src", root / "jpeg", workers=2, progress=False, format="jpeg", quality=95
    )
    return root, summary


def pillow_rows(cache, split):
    """The JPEG cache's rows decoded by Pillow from the packed file, read with numpy alone."""
    data = np.fromfile(cache / f"{split}_jpeg.bin", np.uint8)
    offsets = np.load(cache / f"{split}_jpeg_index.npy")
    done = np.load(cache / f"{split}_status.npy") == 1
    rows = np.zeros((len(done), 256, 256, 3), np.uint8)
    for r in np.flatnonzero(done):
        o, n = offsets[r]
        with Image.open(io.BytesIO(data[o : o + n].tobytes())) as img:
            assert (img.format, img.mode) == ("JPEG", "RGB")
            rows[r] = np.asarray(img)
    return rows, done


def test_rows_equal_the_raw_caches_within_jpeg_error(caches):
    root, _ = caches
    manifest = json.loads((root / "jpeg" / "manifest.json").read_text())
    assert (manifest["format"], manifest["images"], manifest["quality"]) == (2, "jpeg", 95)
    for split in ("train", "val"):
        rows, done = pillow_rows(root / "jpeg", split)
        raw = np.load(root / "raw" / f"{split}_images.npy")
        assert (done == (np.load(root / "raw" / f"{split}_status.npy") == 1)).all()
        error = (rows[done].astype(np.float64) - raw[done]) ** 2
        psnr = 10 * np.log10(255**2 / error.mean(axis=(1, 2, 3)))
        assert psnr.min() > 40, psnr.min()


def test_bad_files_index_and_statistics_are_the_raw_caches(caches):
    root, summary = caches
    raw = prepare_cache(root / "src", root / "raw", workers=0, progress=False)  # all done: reads
    for split in ("train", "val"):
        assert summary[split]["bad_files"] == raw[split]["bad_files"] != []
        for name in SPLIT_FILES:
            a, b = (root / c / f"{split}_{name}" for c in ("raw", "jpeg"))
            assert a.read_bytes() == b.read_bytes(), name
    # from the rows before encoding: the same bytes
    for name in ("stats.json", "mean_image.npy"):
        assert (root / "raw" / name).read_bytes() == (root / "jpeg" / name).read_bytes()
    info, raw_info = cache_info(root / "jpeg"), cache_info(root / "raw")
    assert (info.format, info.quality, info.subset) == ("jpeg", 95, None)
    assert (raw_info.format, raw_info.quality) == ("raw", None)
    assert (info.split_sizes, info.bad_files) == (raw_info.split_sizes, raw_info.bad_files)


def test_the_cpu_decoder_equals_pillows_decode_of_the_same_bytes(caches):
    root, _ = caches
    rows, done = pillow_rows(root / "jpeg", "train")
    split = open_split(root / "jpeg", "train")
    for threads in (1, 3):
        split.packed.threads = threads
        np.testing.assert_array_equal(split.rows(split.usable), rows[done])


def test_training_and_evaluation_batches_follow_the_plan(caches):
    root, _ = caches
    cache = root / "jpeg"
    rows, done = pillow_rows(cache, "train")
    stats = load_stats(cache)
    mean = stats.mean_image[:, 16:240, 16:240].astype(np.float64) * 255
    plan = make_plan(np.flatnonzero(done), 5, 224, seed=7, epoch=2)
    loader = train_loader(cache, batch_size=5, seed=7, epoch=2, workers=0, lighting="paper")
    for b, (x, _) in enumerate(loader):
        for i, row in enumerate(plan.rows[b]):
            y0, x0 = plan.oy[b, i], plan.ox[b, i]
            crop = rows[row, y0 : y0 + 224, x0 : x0 + 224]
            crop = crop[:, ::-1] if plan.flip[b, i] else crop
            shift = 255 * stats.eigenvectors @ (plan.alpha[b, i] * stats.eigenvalues)
            expected = crop.transpose(2, 0, 1) - mean + shift[:, None, None]
            np.testing.assert_allclose(x[i].numpy(), expected, atol=2e-4)
    rows, done = pillow_rows(cache, "val")
    x = torch.cat([x for x, _ in eval_loader(cache, batch_size=4, workers=0)])
    expected = rows[done][:, 16:240, 16:240].transpose(0, 3, 1, 2) - mean
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)


def batches(loader):
    return [(x.cpu().clone(), y.cpu().clone()) for x, y in loader]


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for (x0, y0), (x1, y1) in zip(a, b):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_resume_is_exact(caches):
    cache = caches[0] / "jpeg"
    kw = dict(batch_size=4, seed=3, lighting="2012")  # 22 usable images: 5 batches an epoch
    with TrainStream(cache, workers=2, **kw) as whole:
        first = batches(whole.epoch(0)) + batches(whole.epoch(1))
    with TrainStream(cache, workers=0, start_epoch=1, start_batch=2, **kw) as resumed:
        assert_same(batches(resumed.epoch(1)), first[7:])
    assert_same(batches(train_loader(cache, epoch=1, start_batch=4, workers=1, **kw)), first[9:])


def test_an_interrupted_preparation_resumes_to_the_same_files(caches, tmp_path, monkeypatch):
    root, _ = caches
    cache = tmp_path / "cache"
    real, calls = prepare_module._decode_rows, []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prepare_module, "CHUNK", 4)
    monkeypatch.setattr(prepare_module, "_decode_rows", interrupted)
    kw = dict(splits=("train",), workers=0, progress=False, format="jpeg", quality=95)
    with pytest.raises(KeyboardInterrupt, match="run the same command again"):
        prepare_cache(root / "src", cache, **kw)
    monkeypatch.setattr(prepare_module, "_decode_rows", real)
    # as if killed after bytes were appended, and between saving the sums and the status
    with open(cache / "train_jpeg.bin", "ab") as f:
        f.write(b"not a row")
    np.save(cache / "train_status.npy", np.zeros(24, np.uint8))
    summary = prepare_cache(root / "src", cache, **kw)
    assert (summary["train"]["decoded_now"], summary["train"]["done"]) == (12, 22)
    for name in ("train_jpeg.bin", "train_jpeg_index.npy", "train_bad.tsv", "stats.json"):
        assert (cache / name).read_bytes() == (root / "jpeg" / name).read_bytes(), name


def test_a_cache_is_extended_only_in_its_own_format(caches):
    root, _ = caches
    for cache, kw, held in [
        ("jpeg", {}, "JPEG rows \\(quality 95\\), not raw rows"),
        ("jpeg", dict(format="jpeg", quality=90), ".*95\\), not JPEG rows \\(quality 90\\)"),
        ("raw", dict(format="jpeg"), "raw rows, not JPEG rows \\(quality 90\\)"),
    ]:
        with pytest.raises(UsageError, match=f"holds {held}: give the options it was"):
            prepare_cache(root / "src", root / cache, workers=0, progress=False, **kw)


def test_damaged_packed_files_are_named(caches, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(caches[0] / "jpeg", cache)
    index = cache / "train_jpeg_index.npy"
    fix = f"delete {cache / 'train'}_\\* and re-run scripts/prepare_imagenet.py SRC {cache}"
    for damage, reason in [
        (lambda: np.save(index, np.load(index)[:5]), "not 24 \\(offset, length"),
        (lambda: (cache / "train_jpeg.bin").write_bytes(b""), "a row outside the 0 bytes"),
    ]:
        saved = index.read_bytes()
        damage()
        for read in (lambda: cache_info(cache), lambda: train_loader(cache, batch_size=4)):
            with pytest.raises(UsageError, match=f"{index} is damaged \\({reason}.*\\): {fix}"):
                read()
        index.write_bytes(saved)


@pytest.mark.cuda
@cuda
def test_gpu_decoding_gives_the_cpus_batches_within_decoder_rounding(caches):
    cache = caches[0] / "jpeg"
    kw = dict(batch_size=4, seed=1, epoch=1, workers=1)
    on_cpu = batches(train_loader(cache, **kw))
    on_gpu = batches(train_loader(cache, device="cuda", **kw))
    resumed = batches(train_loader(cache, device="cuda", start_batch=3, **{**kw, "workers": 0}))
    assert_same(resumed, on_gpu[3:])  # exact resume on the GPU too
    assert len(on_cpu) == len(on_gpu)
    for (x0, y0), (x1, y1) in zip(on_cpu, on_gpu):
        assert torch.equal(y0, y1) and (x0 - x1).abs().max() <= 16
        assert (x0 - x1).abs().mean() < 1  # nvJPEG and libjpeg-turbo round differently
    for views in (1, 10):
        cpu_x = torch.cat([x for x, _ in eval_loader(cache, batch_size=3, views=views, workers=0)])
        gpu = eval_loader(cache, batch_size=3, views=views, workers=0, device="cuda")
        gpu_x = torch.cat([x.cpu() for x, _ in gpu])
        assert gpu_x.shape == cpu_x.shape and (gpu_x - cpu_x).abs().mean() < 1
