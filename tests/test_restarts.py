"""Runs that survive what clusters do, on the CPU with gloo: under torchrun (2 replicas of 1
thread, tests/distributed_child.py), a worker killed under --max-restarts, SIGTERM mid-epoch and
again during the save, two agents rendezvousing as two nodes, each against one uninterrupted
run's weights; a hung replica; the checks of a shared run folder and of the same cache.

torchrun rendezvouses with c10d on a free localhost port, with
TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: under --standalone, or with the store shared across
attempts, gloo may read the last attempt's addresses and fail to reconnect after a restart
(README, "Restarts, preemption, several nodes")."""

import multiprocessing
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pause_child import TEST_PAUSE
from test_distributed import prepared

from alexnet2012 import distributed, preempt
from alexnet2012.checkpoint import load_checkpoint
from alexnet2012.cli import replicate
from alexnet2012.errors import UsageError
from alexnet2012.step import TrainStep

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "distributed_child.py"
SETTINGS = ["--batch-size", "4", "--no-ten-view", "--epochs", "1", "--workers", "0", "--quiet"]
SETTINGS += ["--devices", "cpu"]  # 22 training images: 5 steps of 2 x 2 images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cache, out, *options, fail=None, pause=None, nodes=None, port=None):
    """The torchrun command of a 2-replica run (``nodes``: this agent as one of 2 nodes of 1
    replica) and its environment (TEST_FAIL ``fail``, the save pause ``pause``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_FAIL", TEST_PAUSE)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **({"TEST_FAIL": fail} if fail else {}))
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # a fresh store for each attempt (README)
    if pause:
        env[TEST_PAUSE] = pause
    command = [sys.executable, "-m", "torch.distributed.run", "--monitor-interval=1"]
    command += ["--nnodes=2", "--nproc-per-node=1"] if nodes else ["--nproc-per-node=2"]
    command += ["--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port or free_port()}"]
    command += [*options, str(CHILD), "--data", str(cache), "--out", str(out), *SETTINGS]
    return command, env


def run(command, env, cwd=REPO):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return prepared(tmp_path_factory.mktemp("restarts"), 8, 3)


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """The weights of the 2-replica run never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run(*torchrun(cache, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(out / "checkpoint.pt")["model"]


def assert_same_weights(out, reference):
    weights = load_checkpoint(Path(out) / "checkpoint.pt")
    assert weights["finished"]
    for name, tensor in reference.items():
        assert torch.equal(weights["model"][name], tensor), name


def test_a_worker_killed_under_max_restarts_ends_with_the_weights_of_a_run_never_stopped(
    cache, reference, tmp_path
):
    out = tmp_path / "run"  # a checkpoint after every step; replica 1 killed in its 2nd step
    command, env = torchrun(cache, out, "--max-restarts=2", fail="1:2:kill")
    done = run(command + ["--checkpoint-minutes", "0"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exitcode: -9" in done.stderr.replace("exitcode  :", "exitcode:"), done.stderr[-3000:]
    assert f"resumed from {out / 'checkpoint.pt'} (epoch 1, batch 1)" in done.stdout
    assert "; 2 replicas under torchrun" in done.stdout  # the console says how many
    assert_same_weights(out, reference)


def test_sigterm_mid_epoch_saves_there_says_how_to_go_on_and_the_same_command_ends_the_run(
    cache, reference, tmp_path
):
    # replica 0 sends SIGTERM to torchrun's agent in its 2nd step, as a scheduler would; the
    # agent passes it on to both; replica 0's save pauses halfway, gets a second SIGTERM there
    out, marker = tmp_path / "run", tmp_path / "paused"
    command, env = torchrun(cache, out, fail="0:2:term", pause=f"save1.half:{marker}")
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 200
        written = lambda: marker.exists() and marker.read_text().endswith("\n")  # noqa: E731
        while not written() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the marker is made, then its pid written: wait for the whole line
        assert written(), job.communicate()[1][-3000:]
        os.kill(int(marker.read_text()), signal.SIGTERM)  # the second signal, during the save
        time.sleep(0.5)
        marker.unlink()
        _, stderr = job.communicate(timeout=200)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1, stderr[-3000:]  # replica 0's line, once
    said = re.fullmatch(
        r"stopped by SIGTERM: saved (\S+) at epoch 1, batch (\d); continue with: (.*)", stopped[0]
    )
    assert said and said[1] == str(out / "checkpoint.pt"), stopped[0]
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json"]  # no temporary file
    saved = load_checkpoint(out / "checkpoint.pt")
    assert (saved["epoch"], saved["batch"]) == (1, int(said[2])) and 2 <= saved["batch"] < 5
    again = shlex.split(said[3])  # torchrun's own command, its paths absolute: run elsewhere
    assert again[:3] == [sys.executable, "-m", "torch.distributed.run"] and str(CHILD) in again
    env.pop("TEST_FAIL"), env.pop(TEST_PAUSE)
    done = run(again, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out / 'checkpoint.pt'} (epoch 1, batch {said[2]})" in done.stdout
    assert_same_weights(out, reference)


def test_two_agents_on_localhost_train_the_run_of_one_node(cache, reference, tmp_path):
    out, port = tmp_path / "run", free_port()
    command, env = torchrun(cache, out, nodes=2, port=port)
    agents = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for agent in agents:
        _, stderr = agent.communicate(timeout=300)
        assert agent.returncode == 0, stderr[-3000:]
    assert_same_weights(out, reference)


def _replica(rank, port, argv, hang, folder):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    if hang and rank == 1:  # stops in its second step (SIGSTOP), as a hung process does
        real, steps = TrainStep.__call__, [0]

        def step(self, x, y):
            steps[0] += 1
            if steps[0] == 2:
                os.kill(os.getpid(), signal.SIGSTOP)
            return real(self, x, y)

        TrainStep.__call__ = step
    try:
        replicate.main(argv)
    except UsageError as exc:
        (folder / f"error{rank}").write_text(str(exc))
        os._exit(2)
    os._exit(0)


def test_a_hung_replica_ends_the_job_within_the_timeout_with_a_line_naming_it(cache, tmp_path):
    argv = ["--data", str(cache), "--out", str(tmp_path / "run"), *SETTINGS]
    argv += ["--replica-timeout", "0.1"]  # 6 s
    fork, port = multiprocessing.get_context("fork"), free_port()
    procs = [fork.Process(target=_replica, args=(r, port, argv, True, tmp_path)) for r in (0, 1)]
    for p in procs:
        p.start()
    procs[0].join(120)
    hung = procs[1].exitcode is None
    procs[1].kill()  # SIGKILL ends a stopped process
    procs[1].join()
    assert procs[0].exitcode == 2 and hung
    said = (tmp_path / "error0").read_text()
    assert said.startswith("replica 0: replica 1 died or hung, the run stops"), said


def _sees(rank, port, folder, caches, said):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    distributed.start(distributed.environment(), gpu=False)
    distributed.SEE_SECONDS = 0.5
    if rank == 1:  # a node without the run folder's filesystem: replica 0's file is not there
        real = Path.read_text

        def read_text(path, *args, **kwargs):
            if path.name.startswith(".config.json."):
                raise FileNotFoundError(path)
            return real(path, *args, **kwargs)

        Path.read_text = read_text
    try:
        distributed.check_same_cache(str(caches[rank]))
        distributed.check_sees(folder)
    except UsageError as exc:
        (said / f"line{rank}").write_text(str(exc))
        os._exit(2)
    except SystemExit as exc:
        os._exit(exc.code)
    os._exit(0)


@pytest.mark.parametrize("same_cache", [True, False])
def test_replica_0_says_when_a_node_sees_another_cache_or_not_its_run_folder(
    cache, tmp_path, same_cache
):
    other = prepared(tmp_path / "other", 3, 1) if not same_cache else cache
    fork, port = multiprocessing.get_context("fork"), free_port()
    args = (port, tmp_path, [cache, other], tmp_path)
    procs = [fork.Process(target=_sees, args=(r, *args)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [2, 2]
    assert not (tmp_path / "line1").exists()  # the others end quietly: one line
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # marker gone
    line = (tmp_path / "line0").read_text()
    if same_cache:
        assert re.fullmatch(
            rf"replica 1 \(on {re.escape(socket.gethostname())}\) cannot see the run folder "
            rf"{re.escape(str(tmp_path))} that replica 0 made on .*: give --out on a "
            "filesystem that every node shares",
            line,
        ), line
    else:
        assert line.startswith(f"the cache {cache} is not replica 0's on every node: replica 1"), (
            line
        )
        assert "holds other data (manifest.json, stats.json): give every node the same" in line


def forked(argv, folder, hang=False):
    """``replicate.main(argv)`` on 2 forked replicas: their exit codes."""
    fork, port = multiprocessing.get_context("fork"), free_port()
    procs = [fork.Process(target=_replica, args=(r, port, argv, hang, folder)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def test_the_same_command_continues_and_other_settings_are_refused_once(cache, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(cache), "--out", str(out), *SETTINGS]
    assert forked(argv, tmp_path) == [0, 0]
    assert forked([*argv, "--lr", "0.02"], tmp_path) == [2, 2]
    assert not (tmp_path / "error1").exists()  # replica 0's line alone
    assert (tmp_path / "error0").read_text() == (
        f"{out} holds a run with other settings: --lr (lr 0.02 here, 0.01 in the run): to "
        f"continue it, give the run's values (or --resume --out {out} alone); for a new run, "
        "another --out"
    )
    places = ["--workers", "0", "--quiet", "--devices", "cpu"]
    with pytest.raises(UsageError) as refused:
        replicate.main(["--resume", "--out", str(out), "--batch-size", "8", *places])
    assert str(refused.value) == (
        f"--resume continues {out} with its saved settings: drop --batch-size (batch_size 8 "
        "here, 4 in the run; to change them, start a new run with another --out)"
    )
    # the saved values given again are accepted: the finished run is tested again
    assert replicate.main(["--resume", "--out", str(out), "--batch-size", "4", *places]) == 0


def test_while_training_a_signal_waits_for_the_batch_and_a_second_ctrl_c_stops_at_once():
    handlers = preempt.install()
    try:
        preempt.defer(True)  # training: the first signal is a request
        os.kill(os.getpid(), signal.SIGTERM)
        assert preempt.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # again (the scheduler and torchrun): ignored
        with pytest.raises(preempt.Stopped) as again:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again: now, the save abandoned
        assert (again.value.code, str(again.value)) == (130, "interrupted again, while saving")
        with pytest.raises(preempt.Stopped) as stop:
            preempt.stop_at("epoch 1, batch 2")
        assert (stop.value.code, stop.value.name, stop.value.where) == (
            143,
            "SIGTERM",
            "epoch 1, batch 2",
        )
        preempt.install()
        preempt.defer(False)  # not training (data, the final test): the run stops at once
        with pytest.raises(preempt.Stopped) as now:
            os.kill(os.getpid(), signal.SIGINT)
        assert (now.value.code, now.value.where) == (130, "")
    finally:
        preempt.uninstall(handlers)
