import os
import shutil

import pytest
import torch

# Test files that take longest, first: pytest-xdist hands out whole files (setup.cfg) in this
# order, so that the workers finish together instead of one running the last long file alone.
SLOWEST_FIRST = (
    "test_distributed.py",
    "test_restarts.py",
    "test_train.py",
    "test_step.py",
    "test_save_faults.py",
    "test_model.py",
    "test_ablations.py",
    "test_fused_lrn.py",
    "test_fused_dropout.py",
    "test_layers.py",
    "test_benchmark.py",
    "test_recipe_run.py",
    "test_data_benchmark.py",
)


def _threads() -> int:
    """Torch threads for this test process and its subprocesses: the cores shared out among the
    xdist workers (PyTorch's threads oversubscribed 2:1 run the same work 2-3x slower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def _in_memory_temproot() -> None:
    """Test folders in memory (/dev/shm) where it has room: the runs' checkpoints (about 0.5 GB
    each; a run of the suite left 9 GB of them) would otherwise be written and synced to disk,
    which is none of what the tests check. setup.cfg removes a passed test's folder at once."""
    shm = "/dev/shm"
    if "PYTEST_DEBUG_TEMPROOT" in os.environ or not os.access(shm, os.W_OK):
        return
    if shutil.disk_usage(shm).free > 8e9:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = shm  # pytest's base for tmp_path (pytest -h)


_in_memory_temproot()
THREADS = _threads()
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # inherited by the scripts the tests start


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


_FLAGS = (
    (torch.backends.cudnn, "benchmark"),
    (torch.backends.cudnn, "deterministic"),
    (torch.backends.cudnn, "allow_tf32"),
    (torch.backends.cuda.matmul, "allow_tf32"),
)


@pytest.fixture(autouse=True)
def restore_backend_flags():
    """The process-wide cuDNN and TF32 flags as they were before each test (a GPU run's
    devices.configure_backends sets them for the whole process)."""
    saved = [getattr(owner, name) for owner, name in _FLAGS]
    yield
    for (owner, name), value in zip(_FLAGS, saved):
        setattr(owner, name, value)
