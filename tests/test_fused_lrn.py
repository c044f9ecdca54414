"""The fused ReLU -> LRN -> max-pool op (alexnet2012.fused_lrn) against its reference in plain
PyTorch (F.local_response_norm per column, F.max_pool2d).

Its Triton kernels run here in Triton's interpreter, which Triton chooses when the kernels are
decorated, from TRITON_INTERPRET. So the checks that run them (``CASES``) run together in a
subprocess, this file run as a script with TRITON_INTERPRET=1, and each reports back as its own
test; the rest of the suite stays on its normal path. A second subprocess, side by side, compiles
the kernels for an SM90 GPU (``COMPILED_CASES``; no GPU needed), which the interpreter does not
do. The meta device needs no Triton and is tested in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import fused_lrn
from alexnet2012.fused_lrn import relu_lrn_pool, relu_lrn_pool_reference

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, Callable[[], None]] = {}
"""Checks that run the kernels in Triton's interpreter, by name (see subprocess_results)."""


def case(fn: Callable[[], None], name: str | None = None) -> Callable[[], None]:
    """Register ``fn`` as an interpreter check."""
    CASES[name or fn.__name__] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


class Config(NamedTuple):
    shape: tuple[int, int, int, int]
    groups: int
    pool: tuple[int, int] = (3, 2)
    channels_last: bool = True
    lrn: tuple[int, float, float, float] = (5, 1e-4, 0.75, 2.0)  # size, alpha, beta, k
    scale: float = 40.0  # z's spread: with the paper's alpha, large enough for the LRN to matter

    @property
    def name(self) -> str:
        n, c, h, w = self.shape
        size, alpha, beta, k = self.lrn
        return (
            f"n{n}_c{c}_{h}x{w}_g{self.groups}_pool{self.pool[0]}s{self.pool[1]}_"
            f"{'cl' if self.channels_last else 'contig'}_lrn{size}_{alpha:g}_{beta:g}_{k:g}"
        )

    def args(self) -> tuple:
        return (self.groups, *self.pool, *self.lrn)


def _layout(z: Tensor, channels_last: bool) -> Tensor:
    return z.contiguous(memory_format=torch.channels_last) if channels_last else z.contiguous()


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _op_and_grad(z: Tensor, grad: Tensor, args: tuple) -> tuple[Tensor, Tensor]:
    z = z.detach().clone().requires_grad_()
    out = relu_lrn_pool(z, *args)
    out.backward(grad)
    return out.detach(), z.grad


def _reference_and_grad(
    z: Tensor, grad: Tensor, args: tuple, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    z = z.detach().to(dtype).requires_grad_()
    out = relu_lrn_pool_reference(z, *args)
    out.backward(grad.to(dtype))
    return out.detach(), z.grad


def _assert_close_to_reference(actual: Tensor, ref32: Tensor, ref64: Tensor, what: str) -> None:
    """``actual`` (float32) within float32 rounding of the float64 reference: no further from it
    than a few times the float32 reference is, or than a few float32 ulps of the largest value
    (the float32 reference can be exact by chance), and close to the float32 reference."""
    scale = ref64.abs().max().item() or 1.0
    ref32_error = (ref32.double() - ref64).abs().max().item()
    bound = max(4 * ref32_error, 16 * torch.finfo(torch.float32).eps * scale)
    error = (actual.double() - ref64).abs().max().item()
    assert error <= bound, f"{what}: error {error:.3g} against float64, bound {bound:.3g}"
    torch.testing.assert_close(
        actual, ref32, rtol=1e-5, atol=1e-5 * scale, msg=lambda message: f"{what}: {message}"
    )


def _check_against_reference(z: Tensor, args: tuple, grad: Tensor) -> None:
    """The op's output and input gradient (float32, for the pooled gradient ``grad``) against
    the reference in float32 and float64, and their dtype and memory format."""
    out, grad_z = _op_and_grad(z, grad, args)
    ref32, grad32 = _reference_and_grad(z, grad, args, torch.float32)
    ref64, grad64 = _reference_and_grad(z, grad, args, torch.float64)
    _assert_close_to_reference(out, ref32, ref64, "output")
    _assert_close_to_reference(grad_z, grad32, grad64, "grad_z")
    fmt = _memory_format(
        z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous()
    )
    assert out.dtype == z.dtype and out.is_contiguous(memory_format=fmt)
    assert grad_z.dtype == z.dtype and grad_z.is_contiguous(memory_format=fmt)


def _assert_bf16_gradient_sum(grad_z: Tensor, ref_grad: Tensor) -> None:
    """The op's bfloat16 input gradient against the float32 reference given the same rounded
    pooled gradient. Each of its values is rounded once to nearest, an error of at most
    u |g_i| (u = eps / 2); independent errors sum to a standard deviation of at most
    u ||g||_2 / sqrt(3), so the sums may differ by 4 u ||g||_2 (about 7 of those). Sums over
    all inputs do not depend on which of a near-tie's inputs wins its pooling window."""
    u = torch.finfo(torch.bfloat16).eps / 2
    error = (grad_z.double().sum() - ref_grad.double().sum()).abs().item()
    bound = 4 * u * ref_grad.double().norm().item()
    assert error <= bound, f"bfloat16 grad_z sum off by {error:.3g}, bound {bound:.3g}"


def _grad_for(z: Tensor, args: tuple, seed: int = 1) -> Tensor:
    shape = relu_lrn_pool_reference(z[:1].double(), *args).shape[1:]
    return torch.randn((len(z), *shape), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Interpreter checks, run by a subprocess (the first two before anything imports Triton)
# ---------------------------------------------------------------------------------------------


@case
def import_is_cheap() -> None:
    """Importing the module (done at this file's top) imported neither Triton nor Dynamo."""
    assert "triton" not in sys.modules and "torch._dynamo" not in sys.modules


@case
def unavailable_without_triton() -> None:
    """Without Triton the op is unavailable on the CPU and CUDA (and says so), not on meta."""
    saved = sys.modules.get("triton")
    sys.modules["triton"] = None  # import triton now raises ImportError
    try:
        assert not fused_lrn.available("cpu") and not fused_lrn.available("cuda")
        assert fused_lrn.available("meta")
        with pytest.raises(RuntimeError, match="available"):
            relu_lrn_pool(torch.ones(1, 2, 3, 3))
    finally:
        del sys.modules["triton"]
        if saved is not None:
            sys.modules["triton"] = saved
    assert fused_lrn.available("cpu")


CONFIGS = [
    Config((1, 16, 13, 13), 2, channels_last=False),
    Config((3, 16, 13, 13), 2),
    Config((3, 12, 11, 11), 1, pool=(2, 2)),  # 2/2 windows leave the last row and column out
    Config((2, 24, 14, 14), 2, channels_last=False, lrn=(5, 2.0, 0.75, 2.0), scale=1.0),
    Config((1, 48, 13, 13), 1, lrn=(5, 2.0, 0.75, 2.0), scale=1.0),  # one column of conv1
    Config((1, 96, 7, 7), 2),
    Config((1, 256, 5, 5), 2),  # conv2's two columns of 128
    Config((1, 8, 27, 27), 2, lrn=(5, 1.0, 0.75, 2.0), scale=1.0),
    Config((1, 8, 27, 27), 2, pool=(2, 2), channels_last=False),
    Config((1, 4, 55, 55), 2),
    Config((2, 10, 9, 9), 2, lrn=(4, 1.0, 0.5, 1.0), scale=1.0),  # even size, other beta and k
    Config((2, 12, 8, 8), 3, channels_last=False, lrn=(3, 1.0, 0.75, 2.0), scale=1.0),
]


def _config_case(config: Config) -> Callable[[], None]:
    def check() -> None:
        z = config.scale * torch.randn(config.shape, generator=torch.Generator().manual_seed(0))
        z = _layout(z, config.channels_last)
        _check_against_reference(z, config.args(), _grad_for(z, config.args()))

    return check


for _config in CONFIGS:
    case(_config_case(_config), _config.name)


@case
def column_edges() -> None:
    """A large value in column 0's last channel normalizes nothing in column 1, and one in
    column 1's first channel nothing in column 0: each column's result equals the op on that
    column alone (a strided slice of z)."""
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(2, 16, 9, 9, generator=generator)
    # large and spread out, so that no two LRN outputs in a window come near a tie
    z[:, 7] = 1000.0 * (1.0 + torch.rand(2, 9, 9, generator=generator))
    z[:, 8] = 500.0 * (1.0 + torch.rand(2, 9, 9, generator=generator))
    args = Config(z.shape, 2, lrn=(5, 1.0, 0.75, 2.0)).args()
    grad = _grad_for(z, args)
    for channels_last in (False, True):
        zl = _layout(z, channels_last)
        _check_against_reference(zl, args, grad)
        out, grad_z = _op_and_grad(zl, grad, args)
        for column in (slice(0, 8), slice(8, 16)):
            alone, alone_grad = _op_and_grad(zl[:, column], grad[:, column], (1, *args[1:]))
            assert torch.equal(out[:, column], alone)
            assert torch.equal(grad_z[:, column], alone_grad)


@case
def bf16_gradient_within_rounding() -> None:
    """bfloat16 at conv5's shape: the gradient's sum within bfloat16's rounding of the
    reference's, given the same rounded pooled gradient (several seeds)."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        z = (torch.randn(3, 48, 13, 13, generator=g) * 40).to(torch.bfloat16)
        z = z.contiguous(memory_format=torch.channels_last).requires_grad_()
        out = relu_lrn_pool(z, 1)
        zf = z.detach().float().requires_grad_()
        grad = torch.randn(out.shape, generator=g).to(torch.bfloat16)
        (grad_z,) = torch.autograd.grad(out, z, grad)
        (ref_grad,) = torch.autograd.grad(relu_lrn_pool_reference(zf, 1), zf, grad.float())
        _assert_bf16_gradient_sum(grad_z, ref_grad)


def _ties_input(shape: tuple[int, int, int, int], seed: int) -> Tensor:
    """Small integers, each pixel repeated over a 2x2 square: pooling windows hold exactly equal
    values, and whole windows of zeros after ReLU."""
    n, c, h, w = shape
    base = torch.randint(
        -3, 4, (n, c, (h + 1) // 2, (w + 1) // 2), generator=torch.Generator().manual_seed(seed)
    ).float()
    return base.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :h, :w].contiguous()


@case
def ties_pick_the_first_maximum() -> None:
    """Exact ties inside pooling windows go to max_pool2d's choice, the first maximum in
    row-major order: the argmax position and the gradients both match."""
    for pool in ((3, 2), (2, 2)):
        for channels_last in (False, True):
            z = _layout(_ties_input((2, 8, 11, 11), 3), channels_last)
            args = Config(z.shape, 2, pool=pool, lrn=(5, 1.0, 0.75, 2.0)).args()
            _check_against_reference(z, args, _grad_for(z, args))
            _, argmax = torch.ops.alexnet2012.relu_lrn_pool(z, *args)
            b = F.local_response_norm(F.relu(z).reshape(4, 4, 11, 11), *args[3:])
            _, flat = F.max_pool2d(b.reshape(z.shape), *pool, return_indices=True)
            out_h, out_w = flat.shape[2:]
            rows = flat // 11 - (torch.arange(out_h) * pool[1]).view(-1, 1)
            cols = flat % 11 - (torch.arange(out_w) * pool[1])
            assert torch.equal(argmax.long(), rows * pool[0] + cols)


@case
def expanded_and_strided_gradients() -> None:
    """The backward op takes any gradient strides: out.sum()'s expanded gradient (all strides
    0) and a channels-last gradient for a contiguous output."""
    z = torch.randn(2, 12, 9, 9, generator=torch.Generator().manual_seed(4))
    args = Config(z.shape, 2, lrn=(5, 1.0, 0.75, 2.0)).args()
    zg = z.clone().requires_grad_()
    relu_lrn_pool(zg, *args).sum().backward()
    zr = z.clone().requires_grad_()
    relu_lrn_pool_reference(zr, *args).sum().backward()
    torch.testing.assert_close(zg.grad, zr.grad, rtol=1e-4, atol=1e-6)
    _check_against_reference(z, args, _layout(_grad_for(z, args), True))


@case
def half_precision() -> None:
    """bfloat16 and float16 input: computed in float32 and rounded once (to nearest), so within
    half a unit in the last place of the reference on the input upcast to float32."""
    for dtype in (torch.bfloat16, torch.float16):
        for channels_last in (False, True):
            z = 40 * torch.randn(2, 16, 13, 13, generator=torch.Generator().manual_seed(5))
            z = _layout(z, channels_last).to(dtype)
            args = Config(z.shape, 2).args()
            grad = _grad_for(z, args).to(dtype)
            out, grad_z = _op_and_grad(z, grad, args)
            ref, ref_grad = _reference_and_grad(z, grad, args, torch.float32)
            assert out.dtype == dtype and grad_z.dtype == dtype
            assert out.is_contiguous(memory_format=_memory_format(channels_last))
            rounding = torch.finfo(dtype).eps / 2 + 1e-5  # half an ulp, relative
            torch.testing.assert_close(out.float(), ref, rtol=rounding, atol=1e-6)
            torch.testing.assert_close(
                grad_z.float(), ref_grad, rtol=rounding, atol=1e-5 * ref_grad.abs().max().item()
            )


@case
def torch_compile_traces_one_op() -> None:
    """torch.compile(fullgraph=True) traces a function using the op with no graph break, as one
    node of the graph, forward (a recording backend) and backward (aot_eager)."""
    graphs = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(gm)
        return gm.forward

    def step(z: Tensor) -> Tensor:
        return relu_lrn_pool(z * 2.0, 2, 3, 2).square()

    z = torch.randn(1, 8, 9, 9, generator=torch.Generator().manual_seed(6))
    expected = relu_lrn_pool_reference(z * 2.0, 2).square()
    torch.testing.assert_close(torch.compile(step, fullgraph=True, backend=record)(z), expected)
    op = torch.ops.alexnet2012.relu_lrn_pool
    ops = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert sum(target in (op, op.default) for target in ops) == 1, ops

    zc, zr = z.clone().requires_grad_(), z.clone().requires_grad_()
    torch.compile(step, fullgraph=True, backend="aot_eager")(zc).sum().backward()
    relu_lrn_pool_reference(zr * 2.0, 2).square().sum().backward()
    torch.testing.assert_close(zc.grad, zr.grad, rtol=1e-4, atol=1e-6)


@case
def opcheck() -> None:
    """torch.library.opcheck: schema, fake impl, autograd registration, AOT dispatch."""
    z = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(7), requires_grad=True)
    torch.library.opcheck(
        torch.ops.alexnet2012.relu_lrn_pool.default, (z, 2, 3, 2, 5, 1.0, 0.75, 2.0)
    )
    _, argmax = torch.ops.alexnet2012.relu_lrn_pool(z, 2, 3, 2, 5, 1.0, 0.75, 2.0)
    torch.library.opcheck(
        torch.ops.alexnet2012.relu_lrn_pool_backward.default,
        (torch.randn(1, 4, 2, 2), z.detach(), argmax, 2, 3, 2, 5, 1.0, 0.75, 2.0),
    )


# ---------------------------------------------------------------------------------------------
# Compiled-mode checks, run by a second subprocess (without TRITON_INTERPRET)
# ---------------------------------------------------------------------------------------------

COMPILED_CASES: dict[str, Callable[[], None]] = {}
"""Checks that compile the kernels for a GPU (no GPU needed), by name."""

SM90 = ("cuda", 90, 32)  # H100 / H200


def _compile(
    kernel: object, pointers: dict[str, str], constexprs: dict[str, int], num_warps: int
) -> None:
    """Compile ``kernel`` (a triton.jit function) for SM90 down to a cubin with Triton's own
    ptxas, as its launch would: scalar arguments are int32 but k, alpha_over_size, beta."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    signature = {
        name: "constexpr"
        if name in constexprs
        else pointers[name]
        if name.endswith("_ptr")
        else "fp32"
        if name in ("k", "alpha_over_size", "beta")
        else "i32"
        for name in kernel.arg_names
    }
    compiled = compile(
        ASTSource(kernel, signature, constexprs),
        target=GPUTarget(*SM90),
        options={"num_warps": num_warps},
    )
    assert compiled.asm["cubin"]


def _load_compiled() -> None:
    fused_lrn._load_triton()
    assert not fused_lrn._interpreted


def _compile_forward(dtype: str, pool_kernel: int, channels: int) -> Callable[[], None]:
    def check() -> None:
        _load_compiled()
        block_w, block_c = fused_lrn._power_of_2(pool_kernel**2), fused_lrn._power_of_2(channels)
        constexprs = dict(
            KERNEL=pool_kernel,
            STRIDE=2,
            SIZE=5,
            BLOCK_W=block_w,
            BLOCK_C=block_c,
            BLOCK_P=fused_lrn._pixels_per_program(
                10**5, block_w * block_c, fused_lrn._FORWARD_TILE
            ),
        )
        _compile(
            fused_lrn._forward_kernel,
            {"z_ptr": dtype, "out_ptr": dtype, "arg_ptr": "*u8"},
            constexprs,
            fused_lrn._FORWARD_WARPS,
        )

    return check


def _compile_backward(dtype: str, channels: int) -> Callable[[], None]:
    def check() -> None:
        _load_compiled()
        block_c = fused_lrn._power_of_2(channels)
        constexprs = dict(
            KERNEL=3,
            STRIDE=2,
            SIZE=5,
            BLOCK_C=block_c,
            BLOCK_P=fused_lrn._pixels_per_program(10**5, block_c, fused_lrn._BACKWARD_TILE),
        )
        _compile(
            fused_lrn._backward_kernel,
            {"grad_ptr": dtype, "z_ptr": dtype, "gz_ptr": dtype, "arg_ptr": "*u8"},
            constexprs,
            fused_lrn._BACKWARD_WARPS,
        )

    return check


COMPILED_CASES.update(
    {
        "forward_compiles_for_sm90_bf16_conv1": _compile_forward("*bf16", 3, 96),
        "forward_compiles_for_sm90_fp32_pool2": _compile_forward("*fp32", 2, 256),
        "backward_compiles_for_sm90_bf16_conv2": _compile_backward("*bf16", 256),
    }
)


def _run(cases: dict[str, Callable[[], None]]) -> dict[str, str | None]:
    """Run ``cases`` in this process: name -> None when it passed, else its traceback."""
    results = {}
    for name, check in cases.items():
        try:
            check()
            results[name] = None
        except Exception:  # reported back to the test of the same name
            results[name] = traceback.format_exc()
    return results


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subprocess_results() -> dict[str, str | None]:
    """The results of CASES, run in one subprocess in Triton's interpreter, and of
    COMPILED_CASES, run at the same time in another without it."""
    pytest.importorskip("triton")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    base = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    runs = [
        subprocess.Popen(
            [sys.executable, __file__, mode],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(base, PYTHONPATH=path, **extra),
        )
        for mode, extra in (("interpret", {"TRITON_INTERPRET": "1"}), ("compile", {}))
    ]
    results = {}
    for run in runs:
        stdout, stderr = run.communicate(timeout=600)
        lines = stdout.strip().splitlines()
        if run.returncode or not lines:
            pytest.fail(f"{run.args} failed:\n{stdout}\n{stderr}")
        results.update(json.loads(lines[-1]))
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_in_triton_interpreter(name: str, subprocess_results: dict[str, str | None]) -> None:
    assert name in subprocess_results, f"{name} did not run"
    assert subprocess_results[name] is None, subprocess_results[name]


@pytest.mark.parametrize("name", list(COMPILED_CASES))
def test_compiled_for_gpu(name: str, subprocess_results: dict[str, str | None]) -> None:
    assert name in subprocess_results, f"{name} did not run"
    assert subprocess_results[name] is None, subprocess_results[name]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_device_runs_as_one_op(channels_last: bool, dtype: torch.dtype) -> None:
    """On meta the fake impls give the output's shape, dtype and memory format, and backward
    runs too; no Triton needed."""
    z = _layout(torch.empty(3, 96, 55, 55, device="meta", dtype=dtype), channels_last)
    z.requires_grad_()
    out = relu_lrn_pool(z, 2)
    assert out.shape == (3, 96, 27, 27) and out.dtype == dtype and out.device.type == "meta"
    assert out.is_contiguous(memory_format=_memory_format(channels_last))
    out, argmax = torch.ops.alexnet2012.relu_lrn_pool(z, 1, 2, 2, 5, 1e-4, 0.75, 2.0)
    assert out.shape == argmax.shape == (3, 96, 27, 27) and argmax.dtype == torch.uint8
    relu_lrn_pool(z, 2).sum().backward()
    assert z.grad.shape == z.shape and z.grad.dtype == dtype
    assert fused_lrn.available("meta")


def test_autograd_saves_z_and_a_byte_per_pooled_unit() -> None:
    z = torch.empty(2, 96, 55, 55, device="meta", dtype=torch.bfloat16, requires_grad=True)
    out = relu_lrn_pool(z, 2)  # alive, as in training: torch 2.11 frees a dead output's saves
    saved = out.grad_fn.saved_tensors
    assert [(t.shape, t.dtype) for t in saved] == [
        (z.shape, torch.bfloat16),
        ((2, 96, 27, 27), torch.uint8),
    ]


def test_bad_arguments_are_refused_by_the_fake_impl() -> None:
    z = torch.empty(1, 6, 13, 13, device="meta")
    with pytest.raises(ValueError, match="groups"):
        relu_lrn_pool(z, 4)
    with pytest.raises(ValueError, match="smaller"):
        relu_lrn_pool(z[:, :, :2], 2)
    with pytest.raises(TypeError):
        relu_lrn_pool(z.double(), 2)


def test_cpu_without_interpreter_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if fused_lrn._interpreted is None:  # kernels not built in this process yet
        assert not fused_lrn.available("cpu")


def test_reference_is_what_the_model_computes() -> None:
    """The reference equals layers.relu_lrn_pool, the model's CPU path."""
    from alexnet2012 import layers

    z = 40 * torch.randn(2, 16, 13, 13, generator=torch.Generator().manual_seed(8))
    for groups, pool in ((2, 3), (1, 2)):
        torch.testing.assert_close(
            relu_lrn_pool_reference(z, groups, pool, 2),
            layers.relu_lrn_pool(z, groups=groups, pool_kernel=pool, pool_stride=2),
            rtol=1e-5,
            atol=1e-5,
        )


if __name__ == "__main__":  # a subprocess of subprocess_results
    torch.set_num_threads(1)  # two of them run side by side
    print(json.dumps(_run(CASES if sys.argv[1] == "interpret" else COMPILED_CASES)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, groups", [((32, 96, 55, 55), 2), ((32, 128, 27, 27), 1), ((3, 48, 13, 13), 1)]
)
def test_on_the_gpu_the_op_computes_the_reference(shape, groups, dtype) -> None:
    """The compiled kernels on a real GPU, at the network's shapes, against the reference in
    float32 on the same GPU (a near-tie in a pool window may pick the other winner: the
    comparison is of values and of gradients summed over each window's inputs)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    z = (torch.randn(shape, device="cuda", generator=g) * 40).to(dtype)
    z = z.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = relu_lrn_pool(z, groups)
    zf = z.detach().float().requires_grad_()
    ref = relu_lrn_pool_reference(zf, groups)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.float(), ref, **tol)
    grad = torch.randn(out.shape, device="cuda", generator=g).to(dtype)  # the same rounded one
    (gz,) = torch.autograd.grad(out, z, grad)
    (gref,) = torch.autograd.grad(ref, zf, grad.float())
    if dtype == torch.bfloat16:
        _assert_bf16_gradient_sum(gz, gref)
    else:
        torch.testing.assert_close(gz.sum(), gref.sum(), rtol=1e-3, atol=1e-3)
        mismatch = ~torch.isclose(gz, gref, rtol=1e-4, atol=1e-4)
        assert mismatch.float().mean() < 1e-4  # only where a window's winner flips
