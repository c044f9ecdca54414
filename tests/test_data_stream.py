"""Run-long loaders (TrainStream, EvalStreams): one stream through the epochs gives the batches of
a fresh one started at any (epoch, batch) (train_loader), eval_loader's batches, workers that
persist across epochs and validations, and the CUDA path (side-stream copies, channels-last
input) against the CPU's batches."""

import os

import numpy as np
import pytest
import torch

from alexnet2012.data import (
    EvalStreams,
    TrainStream,
    eval_loader,
    make_synthetic_imagenet,
    prepare_cache,
    train_loader,
)
from alexnet2012.data.augment import _gather_crops, _slice_crops, crop_flip
from alexnet2012.errors import UsageError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TRAIN = dict(batch_size=4, seed=1, lighting="2012")  # 22 usable images: 5 batches an epoch


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "imagenet"
    make_synthetic_imagenet(root, classes=3, train_per_class=8, val_per_class=3, seed=2)
    out = tmp_path_factory.mktemp("cache")
    prepare_cache(root, out, workers=0, progress=False)
    return out


def cpu(batches):
    return [(x.cpu().clone(), y.cpu().clone()) for x, y in batches]


def old_epoch(cache, epoch, start_batch=0):
    """What a fresh stream started at (epoch, start_batch) yields (train_loader, in this
    process)."""
    return cpu(train_loader(cache, epoch=epoch, start_batch=start_batch, workers=0, **TRAIN))


def assert_same(a, b):
    assert len(a) == len(b)
    for (x0, y0), (x1, y1) in zip(a, b):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_epochs_are_the_per_epoch_loaders_batches(cache, workers):
    with TrainStream(cache, workers=workers, **TRAIN) as stream:
        assert stream.per_epoch == 5
        for epoch in range(3):
            batches = stream.epoch(epoch)
            assert len(batches) == 5
            assert_same(cpu(batches), old_epoch(cache, epoch))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_started_mid_epoch_is_the_resumed_per_epoch_loader(cache, workers):
    with TrainStream(cache, start_epoch=1, start_batch=3, workers=workers, **TRAIN) as stream:
        first = stream.epoch(1)
        assert len(first) == 2
        assert_same(cpu(first), old_epoch(cache, 1, start_batch=3))
        assert len(stream.epoch(2)) == 5
        assert_same(cpu(stream.epoch(2)), old_epoch(cache, 2))


def test_an_epoch_left_half_read_or_read_out_of_order_restarts_the_same_workers(cache):
    with TrainStream(cache, workers=2, **TRAIN) as stream:
        pids = stream.worker_pids()
        for k, _batch in enumerate(stream.epoch(0)):
            if k == 1:
                break  # the stream is now ahead of what was used
        assert_same(cpu(stream.epoch(1)), old_epoch(cache, 1))
        assert_same(cpu(stream.epoch(0, start_batch=2)), old_epoch(cache, 0, start_batch=2))
        assert_same(cpu(stream.epoch(0)), old_epoch(cache, 0))  # start_epoch: start_batch 0
        assert len(stream.epoch(0, start_batch=5)) == 0 and cpu(stream.epoch(0, 5)) == []
        assert stream.worker_pids() == pids


def test_training_workers_persist_across_epochs_and_stop_on_close(cache):
    stream = TrainStream(cache, workers=2, **TRAIN)
    iterator, pids = stream._iterator, stream.worker_pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids and all(map(alive, pids))
    for epoch in range(3):
        assert len(cpu(stream.epoch(epoch))) == 5
        # One DataLoader iterator for the whole run: no new worker processes between epochs.
        assert stream._iterator is iterator and stream.worker_pids() == pids
    stream.close()
    stream.close()
    assert not any(map(alive, pids))
    with pytest.raises(UsageError, match="closed"):
        list(stream.epoch(3))


def test_eval_batches_are_reused_with_their_workers(cache):
    with EvalStreams(cache, workers=1) as evals:
        for views, batch_size in ((1, 3), (10, 2)):
            batches = evals.batches("val", batch_size=batch_size, views=views)
            assert evals.batches("val", batch_size=batch_size, views=views) is batches
            first = cpu(batches)
            iterator = batches.loader._iterator
            pids = [w.pid for w in iterator._workers]
            assert len(batches) == len(first) and all(map(alive, pids))
            second = cpu(batches)
            assert batches.loader._iterator is iterator
            assert [w.pid for w in iterator._workers] == pids
            assert_same(first, second)
            old = eval_loader(cache, "val", batch_size=batch_size, views=views, workers=0)
            assert_same(first, cpu(old))
    assert not any(map(alive, pids))


def test_inputs_are_channels_last(cache):
    with TrainStream(cache, workers=0, **TRAIN) as stream:
        x, _ = next(iter(stream.epoch(0)))
    assert x.shape == (4, 3, 224, 224) and x.is_contiguous(memory_format=torch.channels_last)
    (x1, _), (x10, _) = (
        next(iter(eval_loader(cache, batch_size=2, views=v, workers=0))) for v in (1, 10)
    )
    assert x1.is_contiguous(memory_format=torch.channels_last)
    # The ten views flatten, without a copy, into the channels-last batch the network takes.
    flat = x10.flatten(0, 1)
    assert flat.data_ptr() == x10.data_ptr() and flat.is_contiguous(
        memory_format=torch.channels_last
    )


def test_stream_argument_errors(cache):
    with pytest.raises(UsageError, match="start_batch must be between 0 and the 5 batches"):
        TrainStream(cache, start_batch=6, workers=0, **TRAIN)
    with pytest.raises(UsageError, match="last_epoch must be at least start_epoch 2"):
        TrainStream(cache, start_epoch=2, last_epoch=1, workers=0, **TRAIN)
    with pytest.raises(AssertionError):  # option values: checked by alexnet2012.options
        TrainStream(cache, workers=-1, **TRAIN)
    with pytest.raises(AssertionError):
        EvalStreams(cache, workers=-1)
    with pytest.raises(AssertionError):
        EvalStreams(cache, crop=225)
    with pytest.raises(AssertionError):
        EvalStreams(cache, workers=0).batches(batch_size=2, views=3)
    with TrainStream(cache, start_epoch=1, last_epoch=2, workers=0, **TRAIN) as stream:
        with pytest.raises(UsageError, match="epoch 3 is after the stream's last_epoch 2"):
            stream.epoch(3)
        with pytest.raises(UsageError, match="start_batch must be between 0 and the 5"):
            stream.epoch(1, start_batch=-1)
        assert_same(cpu(stream.epoch(2)), old_epoch(cache, 2))


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("workers", [0, 2])
def test_cuda_batches_equal_the_cpu_batches(cache, workers):
    kw = dict(workers=workers, start_epoch=1, start_batch=2, **TRAIN)
    with (
        TrainStream(cache, device="cpu", **kw) as on_cpu,
        TrainStream(cache, device="cuda", **kw) as on_gpu,
    ):
        for epoch in (1, 2):
            gpu = list(on_gpu.epoch(epoch))
            assert all(x.is_cuda and y.is_cuda for x, y in gpu)
            assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in gpu)
            assert_same(cpu(gpu), cpu(on_cpu.epoch(epoch)))
        # A consumer on a stream of its own: each batch used (cloned) on that stream after its
        # copy has landed, and its memory kept until that stream is done with it.
        consumer = torch.cuda.Stream()
        with torch.cuda.stream(consumer):
            kept = [(x.clone(), y.clone()) for x, y in on_gpu.epoch(3)]
        torch.cuda.synchronize()
        assert_same(cpu(kept), cpu(on_cpu.epoch(3)))
    assert_same(
        cpu(train_loader(cache, epoch=4, workers=workers, device="cuda", **TRAIN)),
        old_epoch(cache, 4),
    )
    with EvalStreams(cache, workers=workers, device="cuda") as evals:
        for views in (1, 10):
            batches = evals.batches(batch_size=3, views=views)
            assert_same(cpu(batches), cpu(eval_loader(cache, batch_size=3, views=views, workers=0)))
            assert_same(cpu(batches), cpu(eval_loader(cache, batch_size=3, views=views, workers=0)))


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("crop", [224, 227])
def test_crop_flip_on_the_gpu_is_the_cpu_crop_flip(crop):
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.integers(0, 256, (40, 256, 256, 3), dtype=np.uint8))
    far = 256 - crop
    oy = np.array([0, far] * 20)
    ox = rng.integers(0, far + 1, 40)
    flip = rng.random(40) < 0.5
    expected = _slice_crops(images, oy, ox, flip, crop)
    for impl in (crop_flip, _gather_crops):  # crop_flip on a GPU tensor: the gather
        assert torch.equal(impl(images.cuda(), oy, ox, flip, crop).cpu(), expected)
