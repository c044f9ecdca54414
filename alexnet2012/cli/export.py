"""Export a checkpoint's network as ONNX (OUT.onnx) and as a torch.export program (OUT.pt2),
with PyTorch's own ops (fused=False). Input ``image``: (N, 3, S, S) RGB crops on 0..255 minus
the mean crop; output ``logits`` (N, classes). Checked against onnxruntime where installed."""

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from alexnet2012.errors import UsageError
from alexnet2012.resume import load_trained


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint", help="a run folder, its checkpoint.pt, or an imported checkpoint")
    p.add_argument("out", help="OUT: writes OUT.onnx and OUT.pt2")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    base = Path(args.out)
    base = base.with_suffix("") if base.suffix in (".onnx", ".pt2") else base
    if not base.parent.is_dir():
        raise UsageError(f"{args.out}: folder {base.parent} does not exist (create it first)")
    model, _, _ = load_trained(args.checkpoint, ("cpu",))
    model.fused = False
    x = torch.randn(2, 3, model.input_size, model.input_size, generator=torch.Generator())
    onnx_path, program_path = base.with_suffix(".onnx"), base.with_suffix(".pt2")
    with torch.no_grad():
        expected = model(x)
    print(f"exporting {args.checkpoint} ...", flush=True)
    with warnings.catch_warnings():  # the tracer's notes on the shape checks it fixes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(onnx_path), dynamo=False, opset_version=args.opset,
            input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(program_path))
    with torch.no_grad():
        got = torch.export.load(str(program_path)).module()(x)
    print(f"wrote {program_path} (largest difference from the network: {_diff(got, expected)})")
    print(f"wrote {onnx_path} ({check_onnx(onnx_path, x, expected)})")


def _diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a - b).abs().max().item():.2g} in the logits"


def check_onnx(path: Path, x: torch.Tensor, expected: torch.Tensor) -> str:
    """onnxruntime's logits against the network's, in words."""
    try:
        import onnxruntime
    except ImportError:
        return "not checked: pip install -e '.[onnx]' for onnxruntime"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    return f"onnxruntime: largest difference from the network {_diff(got, expected)}"
