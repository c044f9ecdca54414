"""One replica of a test run under torchrun (tests/test_distributed.py): scripts/replicate.py
with test hooks from the environment. TEST_NO_DROPOUT=1: dropout off. TEST_FLOAT64=1: the
network and its inputs in float64. TEST_FAIL=RANK:STEP:KIND:
at training step STEP (counted from 1 in this process), replica RANK ("all": every replica)
dies (exit), returns a NaN loss (nan), every replica stops together (stop: a crash after
the last checkpoint), is killed with SIGKILL (kill), or sends SIGTERM (term) to torchrun's agent
(else to itself), as a scheduler does; kill and term only in torchrun's first attempt.
TEST_PAUSE=<point>:<marker file>: tests/pause_child.py's pause (e.g. halfway through a save)."""

import os
import signal

import torch
from pause_child import TEST_PAUSE
from pause_child import install as install_pause

from alexnet2012 import distributed, paper
from alexnet2012.cli.replicate import main
from alexnet2012.errors import run_cli
from alexnet2012.model import AlexNet
from alexnet2012.step import TrainStep


def float64() -> None:
    """Networks made from now on hold float64 weights, and cast their inputs to float64."""
    torch.set_default_dtype(torch.float64)
    forward = AlexNet.forward
    AlexNet.forward = lambda self, x: forward(self, x.to(torch.float64))


def install(fail: str) -> None:
    """TEST_FAIL's hook, RANK:STEP:KIND, in this process's TrainStep."""
    rank, at, kind = fail.split(":")
    real, steps = TrainStep.__call__, [0]

    def step(self, x, y):
        steps[0] += 1
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if steps[0] == int(at) and rank in ("all", os.environ.get("RANK", "0")):
            if kind == "kill" and first:
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "term" and first:
                agent = "TORCHELASTIC_RUN_ID" in os.environ
                os.kill(os.getppid() if agent else os.getpid(), signal.SIGTERM)
            if kind in ("kill", "term"):
                return real(self, x, y)
            if kind == "exit":
                os._exit(3)
            if kind == "stop":
                distributed.barrier()  # replica 0's checkpoint is written
                os._exit(5)
            return real(self, x, y) * float("nan")
        return real(self, x, y)

    TrainStep.__call__ = step


if __name__ == "__main__":
    torch.set_num_threads(1)
    if os.environ.get("TEST_NO_DROPOUT"):
        paper.DROPOUT_P = 0.0
    if os.environ.get("TEST_FLOAT64"):
        float64()
    if os.environ.get("TEST_FAIL"):
        install(os.environ["TEST_FAIL"])
    if os.environ.get(TEST_PAUSE):
        install_pause(os.environ[TEST_PAUSE])
    run_cli(main)
