"""The models the benchmarks compare (ours three ways, torchvision's), to be timed or counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn

from alexnet2012.model import AlexNet

ONE_DEVICE = "AlexNet"
TWO_DEVICE = "AlexNet two-device"
ONE_COLUMN = "AlexNet columns=1"
REFERENCE = "torchvision alexnet"
DATA_ROW = "AlexNet + data loader"
COMPILED = ", compiled"  # the suffix of the --compile rows' names

Builder = Callable[[], nn.Module]


def on_devices(devices: Sequence[torch.device]) -> list[tuple[str, Builder, tuple]]:
    """``(name, build, devices)`` per model; the two-device path uses the first and last device."""
    d0 = devices[0]
    pair = (d0, devices[-1])
    return [
        (ONE_DEVICE, lambda: AlexNet().to(d0), (d0,)),
        (f"{TWO_DEVICE} ({pair[0]}, {pair[1]})", lambda: AlexNet(devices=pair), pair),
        (ONE_COLUMN, lambda: AlexNet(columns=1).to(d0), (d0,)),
        (REFERENCE, lambda: torchvision.models.alexnet().to(d0), (d0,)),
    ]


def per_column_on_meta(**kwargs: object) -> nn.Module:
    """The two-device path on ``meta``: built for ``("cpu", "cpu")`` (no ``meta`` device), moved."""
    model = AlexNet(devices=("cpu", "cpu"), **kwargs).to("meta")
    if isinstance(getattr(model, "devices", None), (list, tuple)):
        model.devices = [torch.device("meta")] * len(model.devices)
    return model


def on_meta(build: Builder) -> Builder:
    """``build`` made on ``meta`` without drawing the weights on the CPU first."""

    def built() -> nn.Module:
        with torch.device("meta"):
            return build().to("meta")

    return built


def on_meta_models() -> list[tuple[str, Builder]]:
    """``(name, build)`` per model, on ``meta``."""
    return [
        (ONE_DEVICE, on_meta(AlexNet)),
        (TWO_DEVICE, per_column_on_meta),
        (ONE_COLUMN, on_meta(lambda: AlexNet(columns=1))),
        (REFERENCE, on_meta(torchvision.models.alexnet)),
    ]
