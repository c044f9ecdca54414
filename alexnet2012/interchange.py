"""The "grouped" layout of bvlc_alexnet: a tensor per layer, the columns' halves concatenated."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from alexnet2012 import paper
from alexnet2012.model import AlexNet


def _columns(model: AlexNet) -> dict[str, list[Tensor]]:
    """Per grouped key ("conv1.weight", ...), the columns' parameters."""
    if model.num_columns != 2:
        raise ValueError("the grouped layout exists only for the two-column net (columns=2)")
    return {
        f"{layer.name}.{kind}": [getattr(m, kind) for m in model._modules_of(layer)]
        for layer in paper.LAYERS
        for kind in ("weight", "bias")
    }


def grouped_state_dict(model: AlexNet) -> dict[str, Tensor]:
    """The model's weights as one CPU tensor per layer."""
    return {
        key: torch.cat([p.detach().cpu() for p in params]).clone()
        for key, params in _columns(model).items()
    }


def load_grouped_state_dict(model: AlexNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load grouped weights into ``model``; a wrong key or shape raises before any is written."""
    columns = _columns(model)
    missing = sorted(set(columns) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(columns))
    if missing or unexpected:
        raise KeyError(
            f"grouped state dict keys do not match: missing {missing}, unexpected {unexpected}"
        )
    for key, params in columns.items():
        shape = (sum(len(p) for p in params), *params[0].shape[1:])
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"{key}: expected shape {shape}, got {tuple(state_dict[key].shape)}")
    with torch.no_grad():
        for key, params in columns.items():
            for param, part in zip(params, state_dict[key].chunk(len(params))):
                param.copy_(part)
