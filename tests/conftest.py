import pytest
import torch

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
