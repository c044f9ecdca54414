"""Data parallelism over replicas on the CPU: 2 gloo processes of 1 thread each under torchrun
(tests/distributed_child.py), against one process; and the sharding of plans and evaluation."""

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed_child as hooks
import numpy as np
import pytest
import torch

from alexnet2012 import AlexNet, distributed, paper
from alexnet2012.checkpoint import load_checkpoint
from alexnet2012.cli import replicate
from alexnet2012.config import TrainConfig
from alexnet2012.data import (
    eval_loader,
    make_plan,
    make_synthetic_imagenet,
    prepare_cache,
    train_loader,
)
from alexnet2012.errors import UsageError
from alexnet2012.train import Trainer

REPO = Path(__file__).resolve().parents[1]


def prepared(root, train_per_class, val_per_class):
    """A 3-class synthetic set under ``root``, prepared: its cache."""
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=train_per_class,
        val_per_class=val_per_class, seed=1, workers=1,
    )  # fmt: skip
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root / "cache"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-class synthetic set (24 train, 9 val images), prepared."""
    return prepared(tmp_path_factory.mktemp("tiny"), 8, 3)


SETTINGS = ("--batch-size", "8", "--no-ten-view")  # what --resume keeps from the run
PLACES = ("--workers", "0", "--quiet", "--devices", "cpu")


def torchrun(cache, out, *args, fail=None, dropout=True, replicas=2, resume=False):
    """scripts/replicate.py with test hooks on ``replicas`` processes: (completed, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("TEST_FAIL", None)
    if fail:
        env["TEST_FAIL"] = fail
    if not dropout:
        env["TEST_NO_DROPOUT"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={replicas}", "--monitor-interval=1"]
    command += ["tests/distributed_child.py", "--out", str(out), *PLACES]
    command += ["--resume"] if resume else ["--data", str(cache), *SETTINGS]
    started = time.monotonic()
    done = subprocess.run(
        command + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    return done, time.monotonic() - started


def weights(out):
    return load_checkpoint(Path(out) / "checkpoint.pt")["model"]


def test_the_plan_is_sharded_so_each_image_is_seen_once_per_epoch():
    plan = make_plan(np.arange(100, 200), 8, 224, seed=3, epoch=2)
    assert plan.shard(0, 1) is plan  # one replica: today's plan
    for world in (2, 4):
        parts = [plan.shard(r, world) for r in range(world)]
        for name in ("rows", "oy", "ox", "flip", "alpha"):
            joined = np.concatenate([getattr(p, name) for p in parts], axis=1)
            assert np.array_equal(joined, getattr(plan, name)), name
        rows = np.concatenate([p.rows.ravel() for p in parts])
        assert len(set(rows.tolist())) == len(rows) == 96


def test_sharded_loaders_split_each_batch_and_the_evaluation(tiny):
    kw = dict(batch_size=8, seed=1, epoch=1, workers=0)
    whole = list(train_loader(tiny, **kw))
    halves = [list(train_loader(tiny, shard=(r, 2), **kw)) for r in range(2)]
    assert len(whole) >= 2 and all(len(h) == len(whole) for h in halves)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    full = torch.cat([y for _, y in eval_loader(tiny, batch_size=3, workers=0)])
    shards = [
        [y for _, y in eval_loader(tiny, batch_size=3, workers=0, shard=(r, 2))] for r in (0, 1)
    ]
    n = -(-len(full) // 3)
    assert n >= 3 and [len(s) for s in shards] == [-(-n // 2), n // 2]  # dealt in turn
    dealt = [shards[b % 2][b // 2] for b in range(n)]
    assert torch.equal(torch.cat(dealt), full)


def test_two_replicas_of_4_images_take_the_steps_of_one_process_with_8(tiny, tmp_path, monkeypatch):
    # the smallest run that still fails when the sharding (which images each replica takes),
    # the reduction (averaged gradients, summed counts) or the seeding (the same initial
    # weights) is wrong: 2 steps, so that the second starts from weights the first changed
    settings = ["--batch-size", "8", "--no-ten-view", "--epochs", "1"]
    argv = ["--out", str(tmp_path / "two"), "--data", str(tiny), *settings]
    assert replicas(argv, dropout=False, float64=True) == ([0, 0], [])
    monkeypatch.setattr(paper, "DROPOUT_P", 0.0)
    monkeypatch.setattr(AlexNet, "forward", AlexNet.forward)  # restored after float64()
    default = torch.get_default_dtype()
    try:
        hooks.float64()
        config = TrainConfig(
            cache=str(tiny),
            out=str(tmp_path / "one"),
            batch_size=8,
            eval_batch_size=8,
            epochs=1,
            workers=0,
            ten_view=False,
        )
        one_run = Trainer(config, progress=False, log=lambda s: None)
        assert one_run.cache.train_images // 8 == 2  # two steps
        one_run.run()
    finally:
        torch.set_default_dtype(default)
    two, one = weights(tmp_path / "two"), weights(tmp_path / "one")
    for name in one:  # 2 steps of 8 images: 2 x 4 with averaged gradients, float64
        assert one[name].dtype == torch.float64
        torch.testing.assert_close(two[name], one[name], rtol=1e-10, atol=1e-12)
    metrics = [json.loads((tmp_path / r / "metrics.jsonl").read_text()) for r in ("two", "one")]
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("two", "one")]
    assert metrics[0]["val_top1"] == metrics[1]["val_top1"]  # counts over replicas, summed
    assert metrics[0]["train_loss"] == pytest.approx(metrics[1]["train_loss"], rel=1e-6)
    assert metrics[0]["val_top5"] == metrics[1]["val_top5"]
    assert results[0]["center"]["top1"] == results[1]["center"]["top1"]
    assert results[0]["center"]["images"] == results[1]["center"]["images"]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["settings"]["replicas"] == 2


def test_under_torchrun_a_dead_replica_ends_the_job_promptly_and_is_named(tiny, tmp_path):
    done, seconds = torchrun(tiny, tmp_path / "run", "--epochs", "1", fail="1:1:exit")
    assert done.returncode != 0 and seconds < 120
    assert "exitcode  : 3" in done.stderr and "rank      : 1" in done.stderr, done.stderr[-3000:]


def test_under_torchrun_the_benchmark_measures_the_job_against_one_replica(tmp_path):
    out = tmp_path / "replicas.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "scripts/benchmark.py", "--devices", "cpu"]
    command += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--repeats", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        command + ["--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert (report["replicas"], report["per_replica"], report["batch_size"]) == (2, 2, 4)
    rounds = report["rounds"]
    assert len(rounds["job"]) == len(rounds["one_replica"]) == 2
    assert report["job_images_per_s"] == pytest.approx(np.median(rounds["job"]))
    alone = np.median(rounds["one_replica"])
    assert report["speedup"] == pytest.approx(report["job_images_per_s"] / alone)
    assert report["scaling_efficiency"] == pytest.approx(report["speedup"] / 2)
    assert "speedup" in done.stdout and "scaling efficiency" in done.stdout, done.stdout


def replicas(argv, n=2, fail=None, dropout=True, float64=False):
    """``replicate.main(argv)`` on ``n`` forked replicas (gloo, 1 thread each; ``fail`` and
    ``float64`` as in distributed_child.py): their exit codes and error lines."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    fork = multiprocessing.get_context("fork")
    lines = Path(argv[argv.index("--out") + 1]).with_name("errors")
    lines.mkdir(exist_ok=True)
    args = (n, port, [*argv, *PLACES], fail, dropout, float64, lines)
    processes = [fork.Process(target=_replica, args=(rank, *args)) for rank in range(n)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    codes = [p.exitcode for p in processes]
    assert None not in codes, "a replica hung"
    errors = [(lines / str(r)).read_text() for r, code in enumerate(codes) if code == 2]
    return codes, errors


def _replica(rank, n, port, argv, fail, dropout, float64, lines):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1"
    )
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    if not dropout:
        paper.DROPOUT_P = 0.0
    if float64:
        hooks.float64()
    if fail:
        hooks.install(fail)
    try:
        replicate.main(argv)
    except UsageError as exc:
        (lines / str(rank)).write_text(f"error: {exc}")
        os._exit(2)
    os._exit(0)


def test_a_resumed_run_of_two_replicas_ends_with_the_weights_of_one_never_stopped(tiny, tmp_path):
    data = ["--data", str(tiny), *SETTINGS, "--epochs", "1"]
    assert replicas(["--out", str(tmp_path / "whole"), *data]) == ([0, 0], [])
    cut = ["--out", str(tmp_path / "cut")]  # stopped at batch 2, after a checkpoint at batch 1
    codes, _ = replicas([*cut, *data, "--checkpoint-minutes", "0"], fail="all:2:stop")
    assert codes == [5, 5]
    saved = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (saved["epoch"], saved["batch"], len(saved["rng_ranks"])) == (1, 1, 2)
    shutil.copytree(tmp_path / "cut", tmp_path / "alone")
    assert replicas([*cut, "--resume"]) == ([0, 0], [])
    whole, cut = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    for name in whole:
        assert torch.equal(cut[name], whole[name]), name
    lines = [json.loads((tmp_path / r / "metrics.jsonl").read_text()) for r in ("whole", "cut")]
    assert lines[0]["train_loss"] == pytest.approx(lines[1]["train_loss"], rel=1e-6)
    assert lines[0]["val_top1"] == lines[1]["val_top1"]
    alone = Trainer.resume(str(tmp_path / "alone"), progress=False, log=lambda s: None)
    alone.run()  # one process goes on from the two replicas' checkpoint, and says so
    notes = json.loads((tmp_path / "alone" / "config.json").read_text())["deviations"]
    assert any("epoch 1, batch 1 on 1 replica instead of 2" in note for note in notes), notes
    assert load_checkpoint(tmp_path / "alone" / "checkpoint.pt")["finished"]


def test_a_dead_replica_ends_the_run_with_a_line_naming_it(tiny, tmp_path):
    argv = ["--out", str(tmp_path / "run"), "--data", str(tiny), *SETTINGS, "--epochs", "1"]
    started = time.monotonic()
    codes, errors = replicas(argv, fail="1:1:exit")
    assert codes == [2, 3] and time.monotonic() - started < 60
    assert len(errors) == 1 and "replica 1" in errors[0], errors


def test_a_non_finite_loss_on_one_replica_stops_all_at_the_same_step(tiny, tmp_path):
    argv = ["--out", str(tmp_path / "run"), "--data", str(tiny), *SETTINGS, "--epochs", "1"]
    codes, errors = replicas(argv, fail="1:1:nan")
    assert codes == [2, 2] and len(errors) == 2
    assert all("epoch 1, batch 1;" in line for line in errors), errors
    assert "another replica" in errors[0] and "became nan" in errors[1], errors
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_per_replica_batches_are_an_explicit_deviation(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    argv = ["--data", str(tiny), "--out", str(tmp_path / "run"), "--batch-size", "8"]
    paper_way = replicate.config_from_args(replicate.build_parser().parse_args(argv))
    assert (paper_way.batch_size, paper_way.lr, paper_way.replicas) == (8, 0.01, 2)
    assert not paper_way.deviations
    argv.append("--per-replica-batch")
    scaled = replicate.config_from_args(replicate.build_parser().parse_args(argv))
    assert (scaled.batch_size, scaled.lr) == (16, 0.02)
    assert "2 replicas x 8 images per step and the lr scaled by 2" in scaled.deviations[0]
    with pytest.raises(UsageError, match="--batch-size 7 is not divisible by the 2 replicas"):
        replicate.config_from_args(replicate.build_parser().parse_args([*argv[:5], "7"]))


def test_only_errors_of_the_communication_are_reported_as_a_lost_replica():
    gloo = RuntimeError("[third_party/gloo/transport/tcp/pair.cc:561] Connection closed by peer")
    assert distributed.from_peers(gloo)
    assert not distributed.from_peers(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
