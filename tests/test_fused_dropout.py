"""The fused ReLU -> paper's dropout op (alexnet2012.fused_dropout) against ReLU computed
independently in plain PyTorch, and its gradient against autograd through ``relu(z) * m`` with
the op's own mask ``m``.

As in test_fused_lrn.py: the checks that run the Triton kernels (``CASES``) run together in a
subprocess, this file run as a script with TRITON_INTERPRET=1, and each reports back as its own
test; a second subprocess, side by side, compiles the kernels for an SM90 GPU
(``COMPILED_CASES``; no GPU needed). The meta device needs no Triton and is tested in this
process. The statistical checks use fixed seeds, so they are deterministic; their bounds (5
standard deviations) say why they would pass for almost any seed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet2012 import fused_dropout
from alexnet2012.fused_dropout import relu_dropout, relu_dropout_reference

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, Callable[[], None]] = {}
"""Checks that run the kernels in Triton's interpreter, by name (see subprocess_results)."""


def case(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn`` as an interpreter check."""
    CASES[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _z(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normal values with some exact zeros (ReLU's kink), in ``dtype``."""
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    z[z.abs() < 0.05] = 0.0
    return z.to(dtype)


def _seeded(z: Tensor, seed: int, p: float = 0.5, training: bool = True) -> Tensor:
    torch.manual_seed(seed)
    return relu_dropout(z, p, training)


def _assert_dropped_or_relu(y: Tensor, z: Tensor) -> Tensor:
    """Each unit of ``y`` is relu(z) (kept, unscaled) or 0 (dropped); returns the mask of kept
    units among those with z > 0 (where it can be seen)."""
    relu = torch.where(z.float() > 0, z.float(), torch.zeros((), dtype=torch.float32))
    y32 = y.float()
    assert y.dtype == z.dtype and y.shape == z.shape and y.is_contiguous()
    assert bool(((y32 == relu) | (y32 == 0)).all()), "a unit is neither relu(z) nor 0"
    return (y32 != 0) & (z.float() > 0)


def _within(count: int, trials: int, probability: float, what: str) -> None:
    """``count`` successes out of ``trials`` within 5 standard deviations of a Binomial's mean
    (a fair check fails with probability below 1e-6)."""
    mean = trials * probability
    sigma = math.sqrt(trials * probability * (1 - probability))
    assert abs(count - mean) <= 5 * sigma, (
        f"{what}: {count} of {trials}, expected {mean:.0f} +- {5 * sigma:.0f} (5 sigma)"
    )


def _op_and_grad(
    z: Tensor, grad: Tensor, p: float = 0.5, training: bool = True, seed: int = 0
) -> tuple[Tensor, Tensor]:
    z = z.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y = relu_dropout(z, p, training)
    y.backward(grad)
    return y.detach(), z.grad


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
        assert not fused_dropout.available("cpu") and not fused_dropout.available("cuda")
        assert fused_dropout.available("meta")
        with pytest.raises(RuntimeError, match="available"):
            relu_dropout(torch.ones(2, 3))
    finally:
        del sys.modules["triton"]
        if saved is not None:
            sys.modules["triton"] = saved
    assert fused_dropout.available("cpu")


@case
def kept_units_are_relu_unscaled_dropped_are_zero() -> None:
    """y == relu(z) (not rescaled) or y == 0, unit by unit; the relu computed independently."""
    z = _z((128, 1000), 1)
    kept = _assert_dropped_or_relu(_seeded(z, 0), z)
    assert kept.any() and (~kept & (z > 0)).any()


@case
def kept_fraction_is_one_minus_p() -> None:
    """On 100k units with z > 0 (each kept or not visibly), the kept count is within 5 sigma of
    a Binomial(n, 1 - p), for the paper's p and another; disjoint neighbour pairs are both kept
    at rate (1 - p)^2, so the mask is not correlated along the tensor."""
    z = _z((100, 1000), 2).abs() + 0.1
    n = z.numel()
    for p in (0.5, 0.2):
        kept = _assert_dropped_or_relu(_seeded(z, 3, p), z).flatten()
        _within(int(kept.sum()), n, 1 - p, f"kept units, p={p}")
        pairs = kept.view(-1, 2).all(dim=1)
        _within(int(pairs.sum()), n // 2, (1 - p) ** 2, f"kept pairs, p={p}")


@case
def mask_is_independent_of_z() -> None:
    """The mask is a function of the seed and the unit's index only: with the same seed, z and
    |z| are kept at the same units where z > 0, and those units are kept at rate 1 - p."""
    z = _z((100, 1000), 4)
    kept = _assert_dropped_or_relu(_seeded(z, 5), z)
    kept_abs = _assert_dropped_or_relu(_seeded(z.abs(), 5), z.abs())
    positive = z > 0
    assert torch.equal(kept[positive], kept_abs[positive])
    _within(int(kept.sum()), int(positive.sum()), 0.5, "kept units with z > 0")


@case
def mask_depends_only_on_seed_and_index() -> None:
    """With one seed, a tensor's mask is a prefix of a longer tensor's (the unit's row-major
    index, not the shape, decides), and the same for any block size: odd shapes with small blocks
    (several programs, a partial last one) agree with the interpreter's one large block."""
    long = _z((7, 4097), 6)
    full = _seeded(long, 7)
    for rows, cols in ((1, 1), (1, 5), (3, 4097), (1, 4097 * 7 - 3)):
        z = long.flatten()[: rows * cols].view(rows, cols)
        assert torch.equal(_seeded(z, 7), full.flatten()[: rows * cols].view(rows, cols))
    saved = fused_dropout._INTERPRETER_BLOCK
    try:
        for block in (1024, 4096):
            fused_dropout._INTERPRETER_BLOCK = block
            assert torch.equal(_seeded(long, 7), full)
            z = long[:3, :1001]  # not contiguous: the op works on a contiguous copy
            assert torch.equal(_seeded(z, 7), _seeded(z.contiguous(), 7))
    finally:
        fused_dropout._INTERPRETER_BLOCK = saved


@case
def gradient_is_autograd_through_the_same_mask() -> None:
    """grad_z equals autograd through relu(z) * m with the op's mask m (recovered from the
    output: m = (y != 0) where z > 0), exactly, in float32, bfloat16 and float16; 0 wherever
    z <= 0. Autograd saves the output and nothing else."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        z = _z((3, 4097), 8, dtype)
        grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        y, grad_z = _op_and_grad(z, grad)
        m = _assert_dropped_or_relu(y, z).to(dtype)
        zr = z.clone().requires_grad_()
        (F.relu(zr) * m).backward(grad)
        assert grad_z.dtype == dtype and torch.equal(grad_z, zr.grad), dtype
        assert bool((grad_z[z <= 0] == 0).all())
        zg = z.clone().requires_grad_()
        out = relu_dropout(zg)
        saved = out.grad_fn.saved_tensors
        assert len(saved) == 1 and saved[0].data_ptr() == out.data_ptr()


@case
def expanded_gradient() -> None:
    """The backward op takes any gradient strides: y.sum()'s expanded gradient."""
    z = _z((3, 77), 10).requires_grad_()
    torch.manual_seed(11)
    y = relu_dropout(z)
    y.sum().backward()
    assert torch.equal(z.grad, (y.detach() > 0).float())


@case
def eval_mode_is_scaled_relu() -> None:
    """At test time y == (1 - p) relu(z) exactly (0.5 relu(z) for the paper's p), and grad_z is
    autograd's through that formula, in each dtype; no random number is drawn. Autograd saves z
    and nothing else."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for p in (0.5, 0.3):
            z = 20 * _z((3, 1001), 12, dtype)
            grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(13)).to(dtype)
            y, grad_z = _op_and_grad(z, grad, p, training=False)
            zr = z.clone().requires_grad_()
            expected = relu_dropout_reference(zr, p, training=False)
            expected.backward(grad)
            assert torch.equal(y, expected.detach()), (dtype, p)
            assert torch.equal(grad_z, zr.grad), (dtype, p)
    z = _z((2, 9), 14)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    relu_dropout(z, training=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(relu_dropout(z, training=False), 0.5 * F.relu(z))
    zg = z.clone().requires_grad_()
    y = relu_dropout(zg, training=False)  # alive, as in training (torch 2.11 frees it otherwise)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].data_ptr() == zg.data_ptr()


@case
def seed_is_drawn_from_the_cpu_generator() -> None:
    """torch.manual_seed, and torch.set_rng_state of a checkpoint's torch.get_rng_state(),
    reproduce the mask; a training call draws exactly one int64 from [0, 2^31 - 1) of the CPU
    generator."""
    z = _z((4, 1000), 15)
    assert torch.equal(_seeded(z, 16), _seeded(z, 16))
    state = torch.get_rng_state()
    first = relu_dropout(z)
    torch.set_rng_state(state)
    assert torch.equal(relu_dropout(z), first)
    _seeded(z, 17)
    after_op = torch.rand(3)
    torch.manual_seed(17)
    torch.randint(0, fused_dropout.SEED_BOUND, (), dtype=torch.int64)
    assert torch.equal(after_op, torch.rand(3))


@case
def different_seeds_give_different_masks() -> None:
    """Other seeds, and successive calls (the generator moves on), give other masks."""
    z = _z((4, 1000), 18).abs() + 0.1
    masks = [_seeded(z, 0) != 0, _seeded(z, 1) != 0]
    torch.manual_seed(0)
    masks += [relu_dropout(z) != 0, relu_dropout(z) != 0]
    assert torch.equal(masks[0], masks[2])
    for a, b in ((0, 1), (2, 3)):
        different = int((masks[a] != masks[b]).sum())
        _within(different, z.numel(), 0.5, "units kept by one mask only")


@case
def bfloat16_and_float16() -> None:
    """Half-precision input: the output keeps the dtype, each unit is relu(z) or 0 exactly."""
    for dtype in (torch.bfloat16, torch.float16):
        z = 30 * _z((3, 4097), 19, dtype)
        kept = _assert_dropped_or_relu(_seeded(z, 20), z)
        _within(int(kept.sum()), int((z > 0).sum()), 0.5, f"kept units, {dtype}")


@case
def edge_cases() -> None:
    """p = 0 keeps every unit, p = 1 none; an empty tensor; other shapes; refused arguments."""
    z = _z((3, 1001), 21)
    assert torch.equal(_seeded(z, 0, p=0.0), F.relu(z))
    assert torch.equal(_seeded(z, 0, p=1.0), torch.zeros_like(z))
    assert relu_dropout(torch.empty(0, 4096)).shape == (0, 4096)
    assert relu_dropout(torch.ones(())).shape == ()
    _assert_dropped_or_relu(_seeded(_z((2, 3, 5), 22), 0), _z((2, 3, 5), 22))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            relu_dropout(z, p)
    with pytest.raises(TypeError):
        relu_dropout(z.double())


@case
def torch_compile_traces_one_op() -> None:
    """torch.compile(fullgraph=True) traces a function using the op with no graph break, as one
    node of the graph (a recording backend); compiled with aot_eager, forward and backward give
    eager's results for the same torch.manual_seed (the seed is drawn when the op runs)."""
    graphs = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(gm)
        return gm.forward

    def step(z: Tensor) -> Tensor:
        return relu_dropout(z * 2.0, 0.5, True).square()

    z = _z((3, 100), 23)
    torch.manual_seed(24)
    expected = step(z)
    torch.manual_seed(24)
    assert torch.equal(torch.compile(step, fullgraph=True, backend=record)(z), expected)
    op = torch.ops.alexnet2012.relu_dropout
    ops = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert sum(target in (op, op.default) for target in ops) == 1, ops

    grads = []
    for run in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        zg = z.clone().requires_grad_()
        torch.manual_seed(25)
        run(zg).sum().backward()
        grads.append(zg.grad)
    assert torch.equal(grads[0], grads[1])
    assert not torch.equal(grads[1], torch.zeros_like(z))


@case
def opcheck() -> None:
    """torch.library.opcheck: schema, fake impls, autograd registration, AOT dispatch (whose
    comparison of eager and compiled runs reseeds torch before each: the same masks here, as the
    seed comes from torch's generator)."""
    z = _z((3, 10), 26).requires_grad_()
    for p, training in ((0.5, True), (0.5, False)):
        torch.library.opcheck(torch.ops.alexnet2012.relu_dropout.default, (z, p, training))
    y = relu_dropout(z.detach())
    torch.library.opcheck(
        torch.ops.alexnet2012.relu_dropout_backward.default, (torch.randn(3, 10), y, 1.0)
    )


# ---------------------------------------------------------------------------------------------
# Compiled-mode checks, run by a second subprocess (without TRITON_INTERPRET)
# ---------------------------------------------------------------------------------------------

COMPILED_CASES: dict[str, Callable[[], None]] = {}
"""Checks that compile the kernels for a GPU (no GPU needed), by name."""

SM90 = ("cuda", 90, 32)  # H100 / H200


def _compile(kernel: object, signature: dict[str, str], constexprs: dict[str, object]) -> None:
    """Compile ``kernel`` (a triton.jit function) for SM90 down to a cubin with Triton's own
    ptxas, with the launch's warps."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    signature = {
        name: "constexpr" if name in constexprs else signature[name] for name in kernel.arg_names
    }
    compiled = compile(
        ASTSource(kernel, signature, constexprs),
        target=GPUTarget(*SM90),
        options={"num_warps": fused_dropout._WARPS},
    )
    assert compiled.asm["cubin"]


def _compile_forward(dtype: str, training: bool) -> Callable[[], None]:
    def check() -> None:
        fused_dropout._load_triton()
        assert not fused_dropout._interpreted
        _compile(
            fused_dropout._forward_kernel,
            {
                "z_ptr": dtype,
                "y_ptr": dtype,
                "n": "i32",
                "seed": "i32",
                "p": "fp32",
                "scale": "fp32",
            },
            {"TRAINING": training, "BLOCK": fused_dropout._BLOCK},
        )

    return check


def _compile_backward(dtype: str) -> Callable[[], None]:
    def check() -> None:
        fused_dropout._load_triton()
        _compile(
            fused_dropout._backward_kernel,
            {"grad_ptr": dtype, "x_ptr": dtype, "gz_ptr": dtype, "n": "i32", "scale": "fp32"},
            {"BLOCK": fused_dropout._BLOCK},
        )

    return check


COMPILED_CASES.update(
    {
        "forward_compiles_for_sm90_bf16_training": _compile_forward("*bf16", True),
        "forward_compiles_for_sm90_fp32_eval": _compile_forward("*fp32", False),
        "backward_compiles_for_sm90_bf16": _compile_backward("*bf16"),
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


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_device_runs_as_one_op(training: bool, dtype: torch.dtype) -> None:
    """On meta the fake impls give the output's shape, dtype and layout, backward runs too, and
    autograd saves one tensor of z's shape; no Triton needed and no random number drawn."""
    z = torch.empty(128, 4096, device="meta", dtype=dtype, requires_grad=True)
    state = torch.get_rng_state()
    y = relu_dropout(z, training=training)
    assert torch.equal(torch.get_rng_state(), state)
    assert y.shape == z.shape and y.dtype == dtype and y.device.type == "meta"
    assert y.is_contiguous()
    assert [(t.shape, t.dtype) for t in y.grad_fn.saved_tensors] == [(z.shape, dtype)]
    y.sum().backward()
    assert z.grad.shape == z.shape and z.grad.dtype == dtype
    assert fused_dropout.available("meta")


def test_bad_arguments_are_refused_by_the_fake_impl() -> None:
    z = torch.empty(2, 8, device="meta")
    with pytest.raises(ValueError, match="probability"):
        relu_dropout(z, 1.5)
    with pytest.raises(TypeError):
        relu_dropout(z.double())
    with pytest.raises(ValueError, match="shape"):
        torch.ops.alexnet2012.relu_dropout_backward(torch.empty(2, 7, device="meta"), z, 1.0)


def test_cpu_without_interpreter_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if fused_dropout._interpreted is None:  # kernels not built in this process yet
        assert not fused_dropout.available("cpu")


def test_reference_is_what_the_model_computes() -> None:
    """The reference equals ReLU then layers.paper_dropout, the model's CPU path, draw for
    draw, in training and at test time."""
    from alexnet2012 import layers

    z = _z((4, 100), 27)
    for training in (True, False):
        torch.manual_seed(28)
        expected = layers.paper_dropout(F.relu(z), 0.5, training)
        torch.manual_seed(28)
        assert torch.equal(relu_dropout_reference(z, 0.5, training), expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_the_gpu_training_mode_drops_half_with_fresh_masks(dtype: torch.dtype) -> None:
    """The compiled kernel in training mode at fc6's shape, positive inputs (ReLU keeps all):
    about half kept, kept units unscaled, masks that differ between calls and between the two
    columns' calls on equal inputs, and the backward through the forward's own mask."""
    g = torch.Generator(device="cuda").manual_seed(0)
    z = (torch.rand(128, 2048, device="cuda", generator=g) + 0.5).to(dtype).requires_grad_()
    columns = [relu_dropout(z, 0.5, True) for _ in range(2)]  # as fc6's two columns call it
    for y in columns:
        kept = y != 0
        _within(int(kept.sum()), kept.numel(), 0.5, f"kept units ({dtype})")
        assert torch.equal(y[kept], z.detach()[kept])
    differ = (columns[0] != 0) != (columns[1] != 0)
    _within(int(differ.sum()), differ.numel(), 0.5, f"units where the masks differ ({dtype})")
    grad = torch.randn(z.shape, device="cuda", generator=g).to(dtype)
    (grad_z,) = torch.autograd.grad(columns[0], z, grad)
    assert torch.equal(grad_z, grad * (columns[0] != 0))


if __name__ == "__main__":  # a subprocess of subprocess_results
    torch.set_num_threads(1)  # two of them run side by side
    print(json.dumps(_run(CASES if sys.argv[1] == "interpret" else COMPILED_CASES)))
