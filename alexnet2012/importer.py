"""Trained AlexNet weights from other frameworks (BVLC's ``bvlc_alexnet`` as a ``.caffemodel`` or
the ONNX model zoo's ``.onnx``): a file's operations in graph order, matched by type and order
(layer names differ between files) against a recipe's layer table (``paper.RECIPES``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet2012 import paper
from alexnet2012.errors import UsageError

WEIGHTED = ("conv", "fc")
IMPORTABLE = ("caffe",)  # the recipes a single-tensor graph can express (LRN over all channels)
# Caffe's layer types and ONNX's op types: an operation's kind, or None for what carries no
# computation of the network at test time (inputs, losses, reshapes).
CAFFE_KINDS = {
    "Convolution": "conv", "InnerProduct": "fc", "ReLU": "relu", "LRN": "lrn", "Pooling": "pool",
    "Dropout": "dropout", "Data": None, "Input": None, "Softmax": None, "SoftmaxWithLoss": None,
    "Accuracy": None, "Split": None, "Flatten": None,
}  # fmt: skip
ONNX_KINDS = {
    "Conv": "conv", "Gemm": "fc", "MatMul": "fc", "Relu": "relu", "LRN": "lrn",
    "MaxPool": "pool", "Dropout": "dropout", "Softmax": None, "Reshape": None, "Flatten": None,
    "Identity": None, "Constant": None, "Shape": None, "Gather": None, "Unsqueeze": None,
    "Concat": None, "Cast": None,
}  # fmt: skip


@dataclass
class Op:
    """One operation of a file's network: its kind, settings and weights (fc: out, in)."""

    kind: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


def caffe_ops(path: Path) -> list[Op]:
    """The operations of a ``.caffemodel`` (either layer list)."""
    from alexnet2012.caffe_format import read_net

    ops = []
    for layer in read_net(path):
        if layer.type not in CAFFE_KINDS:
            raise UsageError(
                f"{path}: layer {layer.name!r} has type {layer.type}, which the BVLC AlexNet "
                "does not have: give bvlc_alexnet.caffemodel"
            )
        kind, p = CAFFE_KINDS[layer.type], layer.params
        if kind is None:
            continue
        op = Op(kind, layer.name)
        if kind == "conv":
            op.settings = {
                "kernel": _one(p["kernel_size"], p.get("kernel_h")),
                "stride": _one(p["stride"], p.get("stride_h"), 1),
                "pad": _one(p["pad"], p.get("pad_h"), 0),
                "group": p["group"],
            }
        elif kind == "pool":
            op.settings = {"kernel": p["kernel_size"], "stride": p["stride"], "max": p["pool"] == 0}
        elif kind == "lrn":
            op.settings = {"size": p["local_size"], "alpha": p["alpha"], "beta": p["beta"]}
            op.settings.update(k=p["k"], across=p["norm_region"] == 0)
        if kind in WEIGHTED and layer.blobs:
            op.weight = layer.blobs[0]
            if kind == "fc":
                w = op.weight.reshape(op.weight.shape[-2:])
                op.weight = w.T if p.get("transpose") else w
            op.bias = layer.blobs[1].reshape(-1) if len(layer.blobs) > 1 else None
        ops.append(op)
    return ops


def _one(values: Any, side: int | None, default: int | None = None) -> int | None:
    """A Caffe size: the first of a repeated field, else ``side`` (kernel_h, ...), else default."""
    if len(values):
        return int(values[0])
    return int(side) if side else default


def onnx_ops(path: Path) -> list[Op]:
    """The operations of an ``.onnx`` graph, in its (topological) node order."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UsageError("reading .onnx files needs onnx: pip install -e '.[onnx]'") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise UsageError(
            f"{path} is not an ONNX model ({type(exc).__name__}): give the .onnx"
        ) from None
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops: list[Op] = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
        if node.op_type == "Add" and ops and ops[-1].kind == "fc" and ops[-1].bias is None:
            ops[-1].bias = next((values[i] for i in node.input if i in values), None)
            continue
        if node.op_type not in ONNX_KINDS:
            raise UsageError(
                f"{path}: node {node.name or node.output[0]!r} is a {node.op_type} op, which "
                "the BVLC AlexNet's graph does not have: give the model zoo's bvlcalexnet .onnx "
                "(scripts/export.py's files are for other runtimes; keep their checkpoint)"
            )
        kind = ONNX_KINDS[node.op_type]
        if kind is None:
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        op = Op(kind, node.name or node.output[0])
        weights = [values.get(i) for i in node.input[1:]]
        if kind == "conv":
            pads = list(a.get("pads", [0, 0, 0, 0]))
            op.settings = {
                "kernel": int(a.get("kernel_shape", weights[0].shape[-2:])[0]),
                "stride": int(a.get("strides", [1, 1])[0]),
                "pad": int(pads[0]) if len(set(pads)) == 1 else tuple(pads),
                "group": int(a.get("group", 1)),
            }
            op.weight, op.bias = weights[0], weights[1] if len(weights) > 1 else None
        elif kind == "fc":  # Gemm: alpha A B(^T) + beta C; MatMul: A B
            gemm, w = node.op_type == "Gemm", weights[0]
            op.weight = (w if gemm and a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
            if gemm and len(weights) > 1 and weights[1] is not None:
                op.bias = weights[1] * a.get("beta", 1.0)
        elif kind == "pool":
            stride = int(a.get("strides", [1, 1])[0])
            op.settings = {"kernel": int(a["kernel_shape"][0]), "stride": stride, "max": True}
        elif kind == "lrn":
            op.settings = {"size": int(a["size"]), "alpha": a.get("alpha", 1e-4)}
            op.settings.update(beta=a.get("beta", 0.75), k=a.get("bias", 1.0), across=True)
        ops.append(op)
    return ops


def _expected(layer: paper.Layer) -> list[str]:
    """The kinds that follow ``layer`` in a file (a dropout may be missing from a test net)."""
    after = ["relu"] if layer.relu else []
    return after + ["lrn"] * layer.lrn + ["pool"] * layer.pool + ["dropout"] * layer.dropout


def match(ops: list[Op], recipe: str) -> list[Op]:
    """The weighted operations, one per layer of ``recipe``'s table, the structure checked."""
    layers = paper.RECIPES[recipe].layers
    starts = [i for i, op in enumerate(ops) if op.kind in WEIGHTED]
    kinds = [ops[i].kind for i in starts]
    if kinds != [layer.kind for layer in layers]:
        raise UsageError(
            f"the file's weighted layers are {', '.join(kinds) or 'none'}, not the "
            f"{len(layers)} of AlexNet ({', '.join(layer.kind for layer in layers)})"
        )
    for n, (layer, start) in enumerate(zip(layers, starts)):
        end = starts[n + 1] if n + 1 < len(starts) else len(ops)
        op, after = ops[start], ops[start + 1 : end]
        found = [o.kind for o in after]
        wanted = _expected(layer)
        if found != wanted and not (layer.dropout and found == wanted[:-1]):
            raise UsageError(
                f"after the {n + 1}th weighted layer ({layer.name}, the file's {op.name!r}) "
                f"AlexNet has {', '.join(wanted) or 'nothing'}, the file "
                f"{', '.join(found) or 'nothing'}: not the BVLC AlexNet"
            )
        if op.weight is None:
            raise UsageError(f"the file's {op.name!r} ({layer.name}) holds no weights")
        _check(layer, op, after)
    return [ops[i] for i in starts]


def _check(layer: paper.Layer, op: Op, after: list[Op]) -> None:
    name = layer.name
    if layer.kind == "conv":
        group = 2 if layer.sees == "own" else 1
        want = {"kernel": layer.kernel, "stride": layer.stride, "pad": layer.pad, "group": group}
        for key, value in want.items():
            if op.settings[key] != value:
                raise UsageError(
                    f"{name} (the file's {op.name!r}) has {key} {op.settings[key]}, AlexNet "
                    f"{value}: not the BVLC AlexNet"
                )
    for o in after:
        if o.kind == "lrn":
            s = o.settings
            want_lrn = (paper.LRN_SIZE, paper.LRN_ALPHA, paper.LRN_BETA, layer.lrn_k, True)
            got = (s["size"], s["alpha"], s["beta"], s["k"], s["across"])
            if got[0] != want_lrn[0] or not all(
                math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got[1:4], want_lrn[1:4])
            ) or not got[4]:  # fmt: skip
                raise UsageError(
                    f"the LRN after {name} has (size, alpha, beta, k, across channels) {got}, "
                    f"the {layer.name} of Caffe's AlexNet {want_lrn}"
                )
        if o.kind == "pool" and (o.settings["kernel"], o.settings["stride"], o.settings["max"]) != (
            paper.POOL_KERNEL, paper.POOL_STRIDE, True,
        ):  # fmt: skip
            raise UsageError(f"the pooling after {name} is not max-pooling 3/2 ({o.settings})")


def grouped_weights(ops: list[Op], recipe: str, bgr: bool = True) -> dict[str, torch.Tensor]:
    """The matched file's weights in :func:`interchange.load_grouped_state_dict`'s layout, for RGB
    input (``bgr``: conv1's input channels reversed); the weights after a dropout divided by
    1 - p, as the paper's dropout scales at test time where Caffe's does not."""
    layers = paper.RECIPES[recipe].layers
    out, previous = {}, None
    for layer, op in zip(layers, match(ops, recipe)):
        w = torch.from_numpy(np.array(op.weight, dtype=np.float32))
        if layer.name == layers[0].name and bgr:
            w = w.flip(1)
        if previous is not None and previous.dropout:
            w = w / (1.0 - paper.DROPOUT_P)
        b = torch.zeros(w.shape[0]) if op.bias is None else torch.from_numpy(op.bias.copy())
        out[f"{layer.name}.weight"], out[f"{layer.name}.bias"] = w, b.float().reshape(-1)
        previous = layer
    return out


def read_ops(path: Path) -> tuple[list[Op], str]:
    """The operations of ``path`` and its format ("caffemodel" or "onnx"), by its extension."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist: give a .caffemodel or an .onnx file")
    if path.suffix.lower() == ".onnx":
        return onnx_ops(path), "onnx"
    if path.suffix.lower() == ".caffemodel":
        return caffe_ops(path), "caffemodel"
    raise UsageError(f"{path}: a .caffemodel or .onnx file is needed (named by its extension)")


def identify(ops: list[Op]) -> str:
    """The recipe whose layer table the operations follow; the last mismatch when none does."""
    error: UsageError | None = None
    for name in IMPORTABLE:
        try:
            match(ops, name)
            return name
        except UsageError as exc:
            error = exc
    assert error is not None
    raise error
