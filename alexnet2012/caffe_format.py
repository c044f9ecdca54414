"""Caffe's ``.caffemodel`` and ``.binaryproto`` files read with protobuf, caffe.proto's messages
built at run time from their field numbers (no protoc step; only the fields an AlexNet needs).
Both layer lists are read: ``layer`` and the older V1 ``layers`` (the type as an enum)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet2012.errors import UsageError

# caffe.proto's V1LayerParameter.LayerType numbers for the layer types that may appear
V1_TYPES = {
    1: "Accuracy", 4: "Convolution", 5: "Data", 6: "Dropout", 8: "Flatten", 14: "InnerProduct",
    15: "LRN", 17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
}  # fmt: skip

# (message, ((field, number, type, label, message type or None, default or None), ...))
_O, _R = "optional", "repeated"
_MESSAGES = (
    ("BlobShape", (("dim", 1, "int64", _R, None, None),)),
    ("BlobProto", (
        ("num", 1, "int32", _O, None, None), ("channels", 2, "int32", _O, None, None),
        ("height", 3, "int32", _O, None, None), ("width", 4, "int32", _O, None, None),
        ("data", 5, "float", _R, None, None), ("shape", 7, "message", _O, "BlobShape", None),
        ("double_data", 8, "double", _R, None, None),
    )),
    ("ConvolutionParameter", (
        ("num_output", 1, "uint32", _O, None, None), ("bias_term", 2, "bool", _O, None, "true"),
        ("pad", 3, "uint32", _R, None, None), ("kernel_size", 4, "uint32", _R, None, None),
        ("group", 5, "uint32", _O, None, "1"), ("stride", 6, "uint32", _R, None, None),
        ("pad_h", 9, "uint32", _O, None, None), ("pad_w", 10, "uint32", _O, None, None),
        ("kernel_h", 11, "uint32", _O, None, None), ("kernel_w", 12, "uint32", _O, None, None),
        ("stride_h", 13, "uint32", _O, None, None), ("stride_w", 14, "uint32", _O, None, None),
    )),
    ("PoolingParameter", (
        ("pool", 1, "int32", _O, None, "0"), ("kernel_size", 2, "uint32", _O, None, None),
        ("stride", 3, "uint32", _O, None, "1"), ("pad", 4, "uint32", _O, None, "0"),
    )),
    ("LRNParameter", (
        ("local_size", 1, "uint32", _O, None, "5"), ("alpha", 2, "float", _O, None, "1"),
        ("beta", 3, "float", _O, None, "0.75"), ("norm_region", 4, "int32", _O, None, "0"),
        ("k", 5, "float", _O, None, "1"),
    )),
    ("InnerProductParameter", (
        ("num_output", 1, "uint32", _O, None, None), ("bias_term", 2, "bool", _O, None, "true"),
        ("transpose", 6, "bool", _O, None, "false"),
    )),
    ("DropoutParameter", (("dropout_ratio", 1, "float", _O, None, "0.5"),)),
    ("LayerParameter", (
        ("name", 1, "string", _O, None, None), ("type", 2, "string", _O, None, None),
        ("bottom", 3, "string", _R, None, None), ("top", 4, "string", _R, None, None),
        ("blobs", 7, "message", _R, "BlobProto", None),
        ("convolution_param", 106, "message", _O, "ConvolutionParameter", None),
        ("dropout_param", 108, "message", _O, "DropoutParameter", None),
        ("inner_product_param", 117, "message", _O, "InnerProductParameter", None),
        ("lrn_param", 118, "message", _O, "LRNParameter", None),
        ("pooling_param", 121, "message", _O, "PoolingParameter", None),
    )),
    ("V1LayerParameter", (
        ("bottom", 2, "string", _R, None, None), ("top", 3, "string", _R, None, None),
        ("name", 4, "string", _O, None, None), ("type", 5, "int32", _O, None, None),
        ("blobs", 6, "message", _R, "BlobProto", None),
        ("convolution_param", 10, "message", _O, "ConvolutionParameter", None),
        ("dropout_param", 12, "message", _O, "DropoutParameter", None),
        ("inner_product_param", 17, "message", _O, "InnerProductParameter", None),
        ("lrn_param", 18, "message", _O, "LRNParameter", None),
        ("pooling_param", 19, "message", _O, "PoolingParameter", None),
    )),
    ("NetParameter", (
        ("name", 1, "string", _O, None, None),
        ("layers", 2, "message", _R, "V1LayerParameter", None),
        ("input", 3, "string", _R, None, None), ("input_dim", 4, "int32", _R, None, None),
        ("layer", 100, "message", _R, "LayerParameter", None),
    )),
)  # fmt: skip


@functools.cache
def messages() -> dict[str, Any]:
    """caffe.proto's message classes by name (``NetParameter``, ``BlobProto``, ...)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise UsageError(
            "reading .caffemodel files needs protobuf: pip install -e '.[caffe]'"
        ) from None
    proto = descriptor_pb2.FileDescriptorProto(
        name="alexnet2012_caffe.proto", package="caffe", syntax="proto2"
    )
    F = descriptor_pb2.FieldDescriptorProto
    for name, fields in _MESSAGES:
        message = proto.message_type.add(name=name)
        for fname, number, ftype, label, type_name, default in fields:
            f = message.field.add(name=fname, number=number)
            f.type = getattr(F, f"TYPE_{ftype.upper()}")
            f.label = getattr(F, f"LABEL_{label.upper()}")
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if default is not None:
                f.default_value = default
            if label == _R and ftype in ("float", "double", "int64"):
                f.options.packed = True  # caffe.proto's [packed = true] blobs
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
        for name, _ in _MESSAGES
    }


def blob_array(blob: Any) -> np.ndarray:
    """A BlobProto's float32 values in its shape (``shape.dim``, else num/channels/height/width)."""
    data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if blob.HasField("shape"):
        dims = tuple(blob.shape.dim)
    else:
        dims = (blob.num, blob.channels, blob.height, blob.width)
    if int(np.prod(dims)) != data.size:
        raise UsageError(f"a blob of shape {dims} holds {data.size} values: the file is damaged")
    return data.reshape(dims)


@dataclass
class CaffeLayer:
    """One layer of a net: its type name (the V1 enum as its string), parameters and blobs."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    blobs: list[np.ndarray] = field(default_factory=list)


def _params(layer: Any) -> dict[str, Any]:
    out = {}
    for key in ("convolution_param", "pooling_param", "lrn_param", "inner_product_param"):
        if layer.HasField(key):
            p = getattr(layer, key)
            out.update({f.name: getattr(p, f.name) for f in p.DESCRIPTOR.fields})
    return out


def read_net(path: Path) -> list[CaffeLayer]:
    """The layers of a ``.caffemodel`` in file order, from ``layer`` or the V1 ``layers``."""
    net = messages()["NetParameter"]()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UsageError(
            f"{path} is not a Caffe NetParameter file ({type(exc).__name__}): give the "
            ".caffemodel, e.g. bvlc_alexnet.caffemodel"
        ) from None
    if len(net.layer) and len(net.layers):
        raise UsageError(f"{path} has both V1 'layers' and 'layer' lists: cannot tell which")
    layers = []
    for layer in [*net.layer, *net.layers]:  # one of the two lists is empty
        kind = V1_TYPES.get(layer.type, f"V1 type {layer.type}") if net.layers else layer.type
        layers.append(
            CaffeLayer(layer.name, kind, _params(layer), [blob_array(b) for b in layer.blobs])
        )
    if not layers:
        raise UsageError(f"{path} holds no layers: give a .caffemodel with weights")
    return layers


def read_mean(path: Path) -> np.ndarray:
    """Caffe's mean file (``imagenet_mean.binaryproto``) as ``(3, H, W)`` BGR float32, 0..255."""
    blob = messages()["BlobProto"]()
    try:
        blob.ParseFromString(path.read_bytes())
        mean = blob_array(blob)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"{path} is not a Caffe mean file ({type(exc).__name__}): give "
            "imagenet_mean.binaryproto"
        ) from None
    mean = mean.reshape(mean.shape[-3:]) if mean.ndim == 4 and mean.shape[0] == 1 else mean
    if mean.ndim != 3 or mean.shape[0] != 3:
        raise UsageError(f"{path} holds a blob of shape {mean.shape}, not a 3-channel mean")
    return mean
