"""Known-answer files for the importer tests: random weights with the BVLC AlexNet's shapes,
written as a .caffemodel (both of Caffe's layer lists) and as an .onnx graph with the onnx
library, and Caffe's forward pass written out here on its own (BGR input, grouped convs, LRN
with k=1 across all channels, inverted dropout that does nothing at test time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# name: (kind, weight shape, group, kernel, stride, pad) as in BVLC's train_val.prototxt
LAYERS = {
    "conv1": ("conv", (96, 3, 11, 11), 1, 11, 4, 0),
    "conv2": ("conv", (256, 48, 5, 5), 2, 5, 1, 2),
    "conv3": ("conv", (384, 256, 3, 3), 1, 3, 1, 1),
    "conv4": ("conv", (384, 192, 3, 3), 2, 3, 1, 1),
    "conv5": ("conv", (256, 192, 3, 3), 2, 3, 1, 1),
    "fc6": ("fc", (4096, 9216), 1, 0, 0, 0),
    "fc7": ("fc", (4096, 4096), 1, 0, 0, 0),
    "fc8": ("fc", (1000, 4096), 1, 0, 0, 0),
}
AFTER = {  # what follows each layer, in Caffe's order
    "conv1": ("relu", "lrn", "pool"),
    "conv2": ("relu", "lrn", "pool"),
    "conv3": ("relu",),
    "conv4": ("relu",),
    "conv5": ("relu", "pool"),
    "fc6": ("relu", "dropout"),
    "fc7": ("relu", "dropout"),
    "fc8": (),
}
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)


def weights(seed: int = 0, classes: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Weights scaled (He-like) so that activations neither vanish nor explode through 8
    layers, and the softmax is far from uniform; biases small and random."""
    g = np.random.default_rng(seed)
    out = {}
    for name, (_, shape, *_rest) in LAYERS.items():
        shape = (classes, 4096) if name == "fc8" else shape
        fan_in = int(np.prod(shape[1:]))
        w = g.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        if name == "conv1":
            w /= 60  # inputs are 0..255 minus a mean
        b = g.standard_normal(shape[0], dtype=np.float32) * np.float32(0.1)
        out[name] = (w, b)
    return out


def forward(w: dict, bgr: torch.Tensor) -> torch.Tensor:
    """Caffe's bvlc_alexnet deploy net at test time, on (N, 3, 227, 227) BGR inputs (mean
    already subtracted): probabilities."""
    h = bgr.double()
    for name, (kind, _, group, _, stride, pad) in LAYERS.items():
        wt, b = (torch.from_numpy(a).double() for a in w[name])
        if kind == "conv":
            h = F.conv2d(h, wt, b, stride=stride, padding=pad, groups=group)
        else:
            h = F.linear(h.flatten(1), wt, b)
        for op in AFTER[name]:
            if op == "relu":
                h = h.clamp_min(0)
            elif op == "lrn":  # b_i = a_i / (k + alpha/size * sum over 5 channels a^2)^beta
                sq = F.pad(h.pow(2), (0, 0, 0, 0, 2, 2))
                window = sum(sq[:, j : j + h.shape[1]] for j in range(5))
                h = h / (LRN["k"] + LRN["alpha"] / LRN["size"] * window).pow(LRN["beta"])
            elif op == "pool":
                h = F.max_pool2d(h, 3, 2, ceil_mode=True)
    return h.softmax(dim=1)


def write_onnx(w: dict, path: Path, size: int = 227) -> None:
    """The graph the ONNX model zoo's bvlcalexnet has: Conv/Relu/LRN/MaxPool, Reshape, Gemm
    (transB=1), Dropout, Softmax; input ``data_0`` BGR."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes, inits, x = [], [], "data_0"
    for name, (kind, _, group, kernel, stride, pad) in LAYERS.items():
        inits += [numpy_helper.from_array(w[name][0], f"{name}_w_0")]
        inits += [numpy_helper.from_array(w[name][1], f"{name}_b_0")]
        if kind == "conv":
            nodes.append(helper.make_node(
                "Conv", [x, f"{name}_w_0", f"{name}_b_0"], [f"{name}_1"], group=group,
                kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
            ))  # fmt: skip
        else:
            if name == "fc6":
                inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
                nodes.append(helper.make_node("Reshape", [x, "shape"], ["flat"]))
                x = "flat"
            nodes.append(helper.make_node(
                "Gemm", [x, f"{name}_w_0", f"{name}_b_0"], [f"{name}_1"], transB=1
            ))  # fmt: skip
        x = f"{name}_1"
        for op in AFTER[name]:
            y = f"{name}_{op}"
            if op == "relu":
                nodes.append(helper.make_node("Relu", [x], [y]))
            elif op == "lrn":
                nodes.append(helper.make_node(
                    "LRN", [x], [y], size=5, alpha=LRN["alpha"], beta=LRN["beta"], bias=1.0
                ))  # fmt: skip
            elif op == "pool":
                nodes.append(
                    helper.make_node("MaxPool", [x], [y], kernel_shape=[3, 3], strides=[2, 2])
                )
            else:
                nodes.append(helper.make_node("Dropout", [x], [y]))
            x = y
    nodes.append(helper.make_node("Softmax", [x], ["prob_1"]))
    graph = helper.make_graph(
        nodes,
        "bvlc_alexnet",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, len(w["fc8"][1])])],
        inits,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def write_caffemodel(w: dict, path: Path, v1: bool) -> None:
    """The net as caffe.proto's NetParameter: V1 ``layers`` (type enum, 4-d blob sizes) or
    ``layer`` (type string, BlobShape), with a data layer and a loss around it."""
    from alexnet2012.caffe_format import messages

    m = messages()
    net = m["NetParameter"](name="AlexNet")
    v1_type = {"Data": 5, "Convolution": 4, "InnerProduct": 14, "ReLU": 18, "LRN": 15,
               "Pooling": 17, "Dropout": 6, "SoftmaxWithLoss": 21}  # fmt: skip

    def add(name: str, kind: str):
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name, layer.type = name, (v1_type[kind] if v1 else kind)
        return layer

    add("data", "Data")
    for name, (kind, shape, group, kernel, stride, pad) in LAYERS.items():
        layer = add(name, "Convolution" if kind == "conv" else "InnerProduct")
        if kind == "conv":
            p = layer.convolution_param
            p.num_output, p.group = shape[0], group
            p.kernel_size.append(kernel)
            p.stride.append(stride)
            if pad:
                p.pad.append(pad)
        else:
            layer.inner_product_param.num_output = shape[0]
        for array in w[name]:
            blob = layer.blobs.add()
            blob.ParseFromString(_values(m, array))
            if v1:  # the old 4-d sizes: (1, 1, out, in) for fc, (1, 1, 1, n) for biases
                four = (1,) * (4 - array.ndim) + array.shape
                blob.num, blob.channels, blob.height, blob.width = four
            else:
                blob.shape.dim.extend(array.shape)
        for op in AFTER[name]:
            kind_name = {"relu": "ReLU", "lrn": "LRN", "pool": "Pooling", "dropout": "Dropout"}
            extra = add(f"{op}_{name}", kind_name[op])
            if op == "lrn":
                extra.lrn_param.local_size, extra.lrn_param.alpha = 5, LRN["alpha"]
                extra.lrn_param.beta = LRN["beta"]
            elif op == "pool":
                extra.pooling_param.kernel_size, extra.pooling_param.stride = 3, 2
    add("loss", "SoftmaxWithLoss")
    path.write_bytes(net.SerializeToString())


_serialised: dict[int, tuple[np.ndarray, bytes]] = {}


def _values(m: dict, array: np.ndarray) -> bytes:
    """A BlobProto holding only ``array``'s values, serialised once per array (filling the
    repeated field from Python is the slow part of writing a file)."""
    if id(array) not in _serialised or _serialised[id(array)][0] is not array:
        blob = m["BlobProto"]()
        blob.data.extend(array.reshape(-1).tolist())
        _serialised[id(array)] = (array, blob.SerializeToString())
    return _serialised[id(array)][1]


def synset_words(path: Path, classes: int = 1000) -> list[str]:
    wnids = [f"n{10000000 + 17 * k:08d}" for k in range(classes)]
    path.write_text("".join(f"{w} class {k}, other name {k}\n" for k, w in enumerate(wnids)))
    return wnids


def write_mean(path: Path, bgr: np.ndarray) -> None:
    """Caffe's mean file: a BlobProto 1x3xHxW with the old num/channels/height/width sizes."""
    from alexnet2012.caffe_format import messages

    blob = messages()["BlobProto"](num=1, channels=3, height=bgr.shape[1], width=bgr.shape[2])
    blob.data.extend(bgr.astype(np.float32).reshape(-1).tolist())
    path.write_bytes(blob.SerializeToString())
