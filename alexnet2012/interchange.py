"""The "grouped" layout of Caffe's bvlc_alexnet and groups=2 ports: a tensor per layer, column
0's half then column 1's along the output dimension (conv2, conv4, conv5: groups=2); fc6's
input order (column 0's 128x6x6 maps, then column 1's) is this package's."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from alexnet2012 import paper
from alexnet2012.model import AlexNet


def _check_two_columns(model: AlexNet) -> None:
    if model.num_columns != 2:
        raise ValueError("the grouped layout exists only for the two-column net (columns=2)")


def grouped_state_dict(model: AlexNet) -> dict[str, Tensor]:
    """The model's weights as one CPU tensor per layer."""
    _check_two_columns(model)
    out = {}
    for layer in paper.LAYERS:
        modules = model._modules_of(layer)
        for kind in ("weight", "bias"):
            out[f"{layer.name}.{kind}"] = torch.cat(
                [getattr(m, kind).detach().cpu() for m in modules]
            ).clone()
    return out


def load_grouped_state_dict(model: AlexNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load grouped weights into ``model`` (any placement); ``KeyError`` or ``ValueError``
    naming the key before anything is written."""
    _check_two_columns(model)
    expected = grouped_state_dict_shapes(model)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"grouped state dict keys do not match: missing {missing}, unexpected {unexpected}"
        )
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"{key}: expected shape {shape}, got {tuple(state_dict[key].shape)}")
    with torch.no_grad():
        for layer in paper.LAYERS:
            modules = model._modules_of(layer)
            for kind in ("weight", "bias"):
                parts = state_dict[f"{layer.name}.{kind}"].chunk(len(modules))
                for module, part in zip(modules, parts):
                    getattr(module, kind).copy_(part)


def grouped_state_dict_shapes(model: AlexNet) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for layer in paper.LAYERS:
        modules = model._modules_of(layer)
        for kind in ("weight", "bias"):
            first = tuple(getattr(modules[0], kind).shape)
            shapes[f"{layer.name}.{kind}"] = (first[0] * len(modules),) + first[1:]
    return shapes
