"""The two-column AlexNet (P §3, Figure 2) from a recipe's layer table (``paper.RECIPES``): the
same code on one device or one column per device; parameters per column, so a checkpoint loads on
any placement."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet2012 import options, paper
from alexnet2012.devices import parse as parse_devices
from alexnet2012.layers import (
    Conv2d2012,
    local_response_norm,
    pad_overhang,
    relu_dropout,
    relu_lrn_pool,
    within_map_norm,
)


def column_widths(layer: paper.Layer, columns: int, num_classes: int) -> int:
    if not layer.split:
        return num_classes
    if columns == 2 or layer.halved_in_one_column:
        return layer.width // 2
    return layer.width


class Column(nn.Module):
    """One column (one of the paper's GPUs): its share of conv1-conv5, fc6 and fc7."""

    def __init__(
        self,
        layers: tuple[paper.Layer, ...],
        in_features: dict[str, int],
        out_features: dict[str, int],
    ):
        super().__init__()
        for layer in layers:
            if not layer.split:
                continue
            cin, cout = in_features[layer.name], out_features[layer.name]
            if layer.kind == "conv":
                module = Conv2d2012(cin, cout, layer.kernel, layer.stride, layer.pad)
            else:
                module = nn.Linear(cin, cout)
            self.add_module(layer.name, module)


class AlexNet(nn.Module):
    """Images ``(N, 3, S, S)`` (S: ``paper.INPUT_SIZES``) to logits on the first device;
    ``columns=1``: P §3.2's net; ``lrn``, ``overlapping_pool``, ``dropout``: P §3.3, §3.4, §4.2
    ablations when False (``lrn=False`` drops every response norm); ``remove_conv``: P §7's, a
    ``paper.MIDDLE_CONVS`` layer gone; ``recipe``: a ``paper.RECIPES`` name; ``fused=False``
    (attribute): PyTorch's ops instead of the fused kernels."""

    fused: bool = True

    def __init__(
        self,
        num_classes: int = paper.NUM_CLASSES,
        *,
        input_size: int = paper.CROP_SIZE,
        devices: Sequence[str | torch.device] | None = None,
        columns: int = paper.COLUMNS,
        lrn: bool = True,
        overlapping_pool: bool = True,
        dropout: bool = True,
        remove_conv: str | None = None,
        recipe: str = "paper",
    ):
        super().__init__()
        if input_size not in paper.INPUT_SIZES:
            raise ValueError(
                f"input_size must be one of {paper.INPUT_SIZES} "
                f"(224: the 2012 code's padding, 227: none), got {input_size}"
            )
        options.columns(columns, "columns")  # the checks of the command lines' values
        options.remove_conv(remove_conv, "remove_conv")
        options.recipe(recipe, "recipe")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.recipe = paper.RECIPES[recipe]
        layers = (
            self.recipe.layers
            if remove_conv is None
            else paper.without(self.recipe.layers, remove_conv)
        )
        self.layers = tuple(replace(layer, dropout=layer.dropout and dropout) for layer in layers)
        self.num_classes, self.input_size, self.num_columns = num_classes, input_size, columns
        self.lrn, self.overlapping_pool = lrn, overlapping_pool
        self.pool = (
            (paper.POOL_KERNEL, paper.POOL_STRIDE)
            if overlapping_pool
            else (paper.POOL_ABLATION, paper.POOL_ABLATION)
        )
        if devices is not None:
            devices = list(parse_devices(devices, columns))
            if len(devices) != columns:
                raise ValueError(
                    f"devices needs one device per column ({columns}), got {len(devices)}"
                )
        self.devices = devices

        widths = {layer.name: column_widths(layer, columns, num_classes) for layer in self.layers}
        in_features, previous = {}, None
        for layer in self.layers:
            if previous is None:
                cin = 3
            else:
                cin = widths[previous.name] * (columns if layer.sees == "both" else 1)
                if layer.kind == "fc" and previous.kind == "conv":
                    cin *= paper.POOLED_SIZE**2
            in_features[layer.name] = cin
            previous = layer
        self.columns = nn.ModuleList(
            Column(self.layers, in_features, widths) for _ in range(columns)
        )
        self.fc8 = nn.Linear(in_features["fc8"], num_classes)
        self.reset_parameters()
        self.to(memory_format=torch.channels_last)  # conv weights; the activations follow
        if self.devices is not None:
            for column, device in zip(self.columns, self.devices):
                column.to(device)
            self.fc8.to(self.devices[0])

    def reset_parameters(self) -> None:
        """The table's initialisation (P §5's or [C]'s), column by column in layer order."""
        for layer in self.layers:
            for module in self._modules_of(layer):
                nn.init.normal_(module.weight, 0.0, layer.init_std)
                nn.init.constant_(module.bias, layer.bias_init)

    def _modules_of(self, layer: paper.Layer) -> list[nn.Module]:
        if not layer.split:
            return [getattr(self, layer.name)]
        return [getattr(column, layer.name) for column in self.columns]

    def _after(self, layer: paper.Layer, h: Tensor) -> Tensor:
        """``paper.Layer``'s order; the fused kernels where the order is theirs."""
        fused = None if self.fused else False
        lrn, map_norm = layer.lrn and self.lrn, layer.map_norm and self.lrn
        if lrn and layer.relu and layer.pool and not (layer.relu_after_pool or map_norm):
            return relu_lrn_pool(h, 1, *self.pool, k=layer.lrn_k, fused=fused)
        if layer.dropout:
            return relu_dropout(h, paper.DROPOUT_P, self.training, fused=fused)
        if layer.relu and not layer.relu_after_pool:
            h = F.relu(h, inplace=True)
        if lrn:
            h = local_response_norm(h, k=layer.lrn_k)
        if map_norm:
            h = within_map_norm(h)
        if layer.pool:
            h = F.max_pool2d(h, *self.pool)
        if layer.relu and layer.relu_after_pool:
            h = F.relu(h, inplace=True)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Figure 2 top to bottom (the layer table's order), one tensor per column; the columns
        cross only at :meth:`_Columns.cross`."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"expected images of shape (N, 3, {self.input_size}, "
                f"{self.input_size}), got {tuple(x.shape)}"
            )
        cols = _Columns([next(c.parameters()).device for c in self.columns])
        conv1, *middle, fc8 = self.layers
        hs = cols.fork(cols.share([x], lambda h: pad_overhang(h, conv1.kernel, conv1.stride)))
        hs, previous = self._each(conv1, hs, cols), conv1
        for layer in middle:  # conv2 .. fc7; "both": the columns cross (conv3, fc6, fc7)
            if layer.sees == "both":
                hs = cols.cross(hs, flatten=layer.kind == "fc" and previous.kind == "conv")
            hs, previous = self._each(layer, hs, cols), layer
        return self.fc8(cols.cross(hs, first_only=True)[0])

    def _each(self, layer: paper.Layer, hs: list[Tensor], cols: _Columns) -> list[Tensor]:
        """Each column's share of ``layer``, then what follows it (:meth:`_after`): on each
        column's own maps, or on both columns' side by side (``lrn_columns="both"``)."""
        across = layer.lrn and self.lrn and layer.lrn_columns == "both"
        out = []
        for column, h, stream in zip(self.columns, hs, cols.streams):
            with _on(stream):
                z = getattr(column, layer.name)(h)
                out.append(z if across else self._after(layer, z))
        return cols.across(out, lambda h: self._after(layer, h)) if across else out


class _Columns:
    """A column sharing a GPU with an earlier one runs on a side stream, so both overlap as on
    two GPUs; streams sync only at :meth:`fork` and :meth:`cross`. Columns are queued in order,
    so dropout masks are the same on any placement."""

    def __init__(self, devices: list[torch.device]):
        self.devices = devices
        self.streams = _side_streams(devices)

    def share(
        self,
        parts: list[Tensor],
        then: Callable[[Tensor], Tensor] = lambda h: h,
        devices: list[torch.device] | None = None,
    ) -> list[Tensor]:
        """``then(parts joined along dim 1)`` on each device, computed once per device."""
        joined: dict[torch.device, Tensor] = {}
        for device in devices or self.devices:
            if device not in joined:
                moved = [_to(p, device) for p in parts]
                joined[device] = then(moved[0] if len(moved) == 1 else torch.cat(moved, dim=1))
        return [joined[device] for device in devices or self.devices]

    def fork(self, hs: list[Tensor]) -> list[Tensor]:
        """Side streams wait for their inputs (made on the main stream) and keep them alive."""
        for h, stream in zip(hs, self.streams):
            if stream is not None:
                stream.wait_stream(torch.cuda.current_stream(h.device))
                h.record_stream(stream)
        return hs

    def join(self, hs: list[Tensor]) -> None:
        """The main stream waits for each side stream's output."""
        for h, stream in zip(hs, self.streams):
            if stream is not None:
                main = torch.cuda.current_stream(h.device)
                main.wait_stream(stream)
                h.record_stream(main)

    def cross(
        self, hs: list[Tensor], flatten: bool = False, first_only: bool = False
    ) -> list[Tensor]:
        """Both columns' outputs as each (or the first) column's input, flattened channel-major."""
        self.join(hs)
        if first_only:
            return self.share(hs, devices=self.devices[:1])
        return self.fork(self.share(hs, (lambda h: h.flatten(1)) if flatten else (lambda h: h)))

    def across(self, hs: list[Tensor], then: Callable[[Tensor], Tensor]) -> list[Tensor]:
        """``then`` on both columns' maps joined (once per device), each column keeping its own
        channels of the result (``then`` must act on each channel's map alone at its end)."""
        self.join(hs)
        starts = [sum(h.shape[1] for h in hs[:k]) for k in range(len(hs))]
        joined = self.share(hs, then)
        return self.fork([j[:, s : s + h.shape[1]] for j, s, h in zip(joined, starts, hs)])


def _to(h: Tensor, device: torch.device) -> Tensor:
    """Channels-last; non-blocking only to a GPU (a CPU could read the copy before it lands)."""
    h = h.to(device, non_blocking=device.type == "cuda")
    return h.contiguous(memory_format=torch.channels_last) if h.dim() == 4 else h


def _side_streams(devices: list[torch.device]) -> list[torch.cuda.Stream | None]:
    """Side streams, or None (all None under torch.compile: no stream switches in its graph)."""
    if torch.compiler.is_compiling():
        return [None] * len(devices)
    return [
        _side_stream(device, k) if device.type == "cuda" and device in devices[:k] else None
        for k, device in enumerate(devices)
    ]


@functools.cache
def _side_stream(device: torch.device, column: int) -> torch.cuda.Stream:
    """Once: the allocator reuses memory per stream; a new stream per step would hoard it."""
    return torch.cuda.Stream(device)


def _on(stream: torch.cuda.Stream | None) -> ContextManager:
    return nullcontext() if stream is None else torch.cuda.stream(stream)
