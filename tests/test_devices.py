import torch

from alexnet2012.devices import configure_backends

# The flags are process-wide; tests/conftest.py puts them back after each test.


def flags():
    return (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )


def test_a_cpu_run_leaves_the_cuda_flags_alone():
    torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    assert configure_backends(["cpu"]) == {"cuda": False}
    assert flags() == (False, False, False)


def test_a_gpu_run_autotunes_and_takes_tf32_unless_told_not_to():
    # setting the flags needs no GPU: they are read when a kernel is chosen
    torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    assert configure_backends(["cuda:0", "cpu"]) == {
        "cuda": True,
        "cudnn_benchmark": True,
        "tf32_matmul": True,
        "tf32_cudnn": True,
    }
    assert flags() == (True, True, True)
    assert configure_backends([torch.device("cuda", 0)], tf32=False)["tf32_cudnn"] is False
    assert flags() == (True, False, False)  # cuDNN's TF32 is on by default in PyTorch: now off
