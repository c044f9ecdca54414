"""The scripts' error lines (alexnet2012.errors.run_cli): one line, the right exit status."""

import signal
import subprocess
import sys

import pytest
import torch

from alexnet2012.errors import UsageError, ignore_interrupt, run_cli


def run(main, capsys, **kwargs):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, **kwargs)
    return exit_info.value.code, capsys.readouterr().err


def raising(exc):
    def main():
        raise exc

    return main


def test_a_usage_error_is_one_line_and_status_2(capsys):
    assert run(raising(UsageError("--data x: no such directory")), capsys) == (
        2,
        "error: --data x: no such directory\n",
    )


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 9437184000 bytes. Error code 12\nmore lines"
        ),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.\ndetails"),
        torch.cuda.OutOfMemoryError(""),
        MemoryError("Unable to allocate 9.00 GiB for an array with shape (1000, 3, 1024, 1024)"),
    ],
)
def test_running_out_of_memory_names_the_fix(exc, capsys):
    code, err = run(raising(exc), capsys, oom_hint="use a smaller --batch-size")
    assert code == 2
    assert err.startswith("error: out of memory (") and err.endswith(
        "; use a smaller --batch-size\n"
    )
    assert err.count("\n") == 1


def test_other_runtime_errors_are_bugs_and_keep_their_traceback(capsys):
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_cli(raising(RuntimeError("shape mismatch")))


def test_ctrl_c_says_interrupted_and_how_to_go_on(capsys):
    code, err = run(raising(KeyboardInterrupt("resume with --resume --out runs/a")), capsys)
    assert (code, err) == (130, "\ninterrupted: resume with --resume --out runs/a\n")
    assert run(raising(KeyboardInterrupt()), capsys) == (130, "\ninterrupted\n")


def test_success_exits_0(capsys):
    assert run(lambda: None, capsys) == (0, "")


def test_pool_workers_leave_ctrl_c_to_the_parent():
    # scripts/prepare_imagenet.py's workers each printed a traceback on Ctrl-C (checked by hand:
    # `timeout -s INT 6 scripts/prepare_imagenet.py ... --workers 2` now prints `interrupted`)
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        ignore_interrupt()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


POOLS_UNDER_THE_RUNS_HANDLERS = """
import multiprocessing, time
from alexnet2012 import preempt
from alexnet2012.errors import ignore_interrupt

def work(x):
    time.sleep(0.002 * (x % 7))
    return x

if __name__ == "__main__":
    preempt.install()  # replicate.py's handlers, in place when the demo draws its data
    for _ in range(20):
        with multiprocessing.Pool(2, initializer=ignore_interrupt) as pool:
            sum(pool.imap_unordered(work, range(200), 16))
    print("closed")
"""


def test_pools_close_under_the_runs_signal_handlers(tmp_path):
    # Leaving `with Pool` sends SIGTERM to workers still waiting for tasks. Forked workers kept
    # preempt's handler, which leaves signals to the parent, and never exited: the demo hung
    # after drawing its images (a 2-worker pool was left waiting within the first 20 here).
    script = tmp_path / "pools.py"
    script.write_text(POOLS_UNDER_THE_RUNS_HANDLERS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "closed\n"), done.stderr[-2000:]
