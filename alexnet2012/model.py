"""The two-column AlexNet (P §3, Figure 2), on one device or with one column per device.

The layer list is ``paper.LAYERS``. :meth:`AlexNet.forward` follows Figure 2 top to bottom with
one tensor per column: each column computes its own layers, and the columns cross (each
column's input is both columns' outputs) at conv3, fc6, fc7 and fc8, and nowhere else. The same
code runs both columns on one device and one column per device; only where each column's
parameters live differs. Parameters live per column (``columns.0.conv1.weight`` ...,
``fc8.weight``), so a checkpoint trained on two GPUs loads anywhere. Weights and activations
are channels-last, the layout in which GPUs convolve fastest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet2012 import paper
from alexnet2012.devices import parse as parse_devices
from alexnet2012.errors import UsageError
from alexnet2012.layers import Conv2d2012, pad_overhang, relu_dropout, relu_lrn_pool

DeviceLike = str | torch.device


def column_widths(layer: paper.Layer, columns: int, num_classes: int) -> int:
    """Kernels (or neurons) of ``layer`` in one column of a ``columns``-column net."""
    if not layer.split:
        return num_classes
    if columns == 2 or layer.halved_in_one_column:
        return layer.width // 2
    return layer.width


class Column(nn.Module):
    """One column (one of the paper's two GPUs): its share of conv1-conv5, fc6 and fc7."""

    def __init__(self, in_features: dict[str, int], out_features: dict[str, int]):
        super().__init__()
        for layer in paper.LAYERS:
            if not layer.split:
                continue
            cin, cout = in_features[layer.name], out_features[layer.name]
            if layer.kind == "conv":
                module = Conv2d2012(cin, cout, layer.kernel, layer.stride, layer.pad)
            else:
                module = nn.Linear(cin, cout)
            self.add_module(layer.name, module)


class AlexNet(nn.Module):
    """The paper's network: ``forward(x)`` maps images ``(N, 3, S, S)`` to logits
    ``(N, num_classes)`` on the first device.

    Args:
        num_classes: width of fc8.
        input_size: 224 (the 2012 code's convolution: conv1's last windows overhang the right and
            bottom edges by 3 zero pixels) or 227 (no padding); both give 55x55 conv1 maps
            (PAPER_NOTES "224 vs 227").
        devices: ``None`` (one device: wherever the module is moved) or one device per column.
        columns: 2, or 1 for the paper's one-column comparison net (half the kernels in
            conv1-conv4; conv5 and the fc layers at full size, P §3.2).
        lrn: local response normalization after conv1 and conv2 (P §3.3 ablation when False).
        overlapping_pool: 3x3 pooling with stride 2 (P §3.4); False gives 2x2 stride 2.

    ``fused`` (an attribute, True by default) lets a GPU run ReLU -> LRN -> max-pool and ReLU ->
    dropout as one kernel each (``fused_lrn``, ``fused_dropout``); False uses PyTorch's own
    operations, e.g. for a second derivative, which the fused kernels do not have.
    """

    fused: bool = True

    def __init__(
        self,
        num_classes: int = paper.NUM_CLASSES,
        *,
        input_size: int = paper.CROP_SIZE,
        devices: Sequence[DeviceLike] | None = None,
        columns: int = paper.COLUMNS,
        lrn: bool = True,
        overlapping_pool: bool = True,
    ):
        super().__init__()
        if input_size not in paper.INPUT_SIZES:
            raise ValueError(
                f"input_size must be one of {paper.INPUT_SIZES} "
                f"(224: the 2012 code's padding, 227: none), got {input_size}"
            )
        if columns not in (1, 2):
            raise ValueError(f"columns must be 1 or 2, got {columns}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
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
                raise UsageError(
                    f"devices needs one device per column ({columns}), got {len(devices)}"
                )
        self.devices = devices

        widths = {layer.name: column_widths(layer, columns, num_classes) for layer in paper.LAYERS}
        in_features, previous = {}, None
        for layer in paper.LAYERS:
            if previous is None:
                cin = 3
            else:
                cin = widths[previous.name] * (columns if layer.sees == "both" else 1)
                if layer.kind == "fc" and previous.kind == "conv":
                    cin *= paper.POOLED_SIZE**2
            in_features[layer.name] = cin
            previous = layer
        self.columns = nn.ModuleList(Column(in_features, widths) for _ in range(columns))
        self.fc8 = nn.Linear(in_features["fc8"], num_classes)
        self.reset_parameters()
        self.to(memory_format=torch.channels_last)  # conv weights; the activations follow
        if self.devices is not None:
            for column, device in zip(self.columns, self.devices):
                column.to(device)
            self.fc8.to(self.devices[0])

    def reset_parameters(self) -> None:
        """The paper's initialisation (P §5): weights N(0, 0.01); biases 1 in conv2, conv4,
        conv5, fc6, fc7 and 0 elsewhere. Drawn column by column, in layer order."""
        for layer in paper.LAYERS:
            for module in self._modules_of(layer):
                nn.init.normal_(module.weight, 0.0, paper.INIT_STD)
                nn.init.constant_(module.bias, layer.bias_init)

    def _modules_of(self, layer: paper.Layer) -> list[nn.Module]:
        if not layer.split:
            return [getattr(self, layer.name)]
        return [getattr(column, layer.name) for column in self.columns]

    def _after(self, layer: paper.Layer, h: Tensor) -> Tensor:
        """ReLU, LRN, max-pool and dropout after ``layer``, in P §3.5's order."""
        fused = None if self.fused else False
        if layer.lrn and self.lrn:  # conv1, conv2: ReLU -> LRN -> pool, one fused op on a GPU
            return relu_lrn_pool(h, 1, *self.pool, fused=fused)
        if layer.dropout:  # fc6, fc7: ReLU -> dropout, one fused op on a GPU
            return relu_dropout(h, paper.DROPOUT_P, self.training, fused=fused)
        if layer.relu:
            h = F.relu(h, inplace=True)
        if layer.pool:
            h = F.max_pool2d(h, *self.pool)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Figure 2, top to bottom; ``hs`` holds one tensor per column, on its column's device."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"expected images of shape (N, 3, {self.input_size}, "
                f"{self.input_size}), got {tuple(x.shape)}"
            )
        cols = _Columns([next(c.parameters()).device for c in self.columns])
        conv1 = paper.LAYERS[0]
        hs = cols.fork(cols.share([x], lambda h: pad_overhang(h, conv1.kernel, conv1.stride)))
        hs = self._each("conv1", hs, cols)  # + ReLU, LRN, max-pool
        hs = self._each("conv2", hs, cols)  # + ReLU, LRN, max-pool: own column only
        hs = self._each("conv3", cols.cross(hs), cols)  # conv3 sees both columns
        hs = self._each("conv4", hs, cols)  # own column only
        hs = self._each("conv5", hs, cols)  # + ReLU, max-pool: own column only
        hs = self._each("fc6", cols.cross(hs, flatten=True), cols)  # both columns, + dropout
        hs = self._each("fc7", cols.cross(hs), cols)  # both columns, + dropout
        return self.fc8(cols.cross(hs, first_only=True)[0])  # both columns, on the first device

    def _each(self, name: str, hs: list[Tensor], cols: _Columns) -> list[Tensor]:
        """Layer ``name`` and what follows it, in every column (on its own stream)."""
        layer = next(layer for layer in paper.LAYERS if layer.name == name)
        out = []
        for column, h, stream in zip(self.columns, hs, cols.streams):
            with _on(stream):
                out.append(self._after(layer, getattr(column, name)(h)))
        return out


class _Columns:
    """Where the columns run, and how their tensors move: one per device, or several on one.

    Columns that share a GPU with an earlier column run on a side CUDA stream of their own, so
    that on one GPU they overlap as they would on two: each side stream waits for the main
    stream only where the columns' inputs are made (:meth:`fork`), and the main stream for each
    side stream only where the columns cross (:meth:`cross`). Columns are queued in column
    order, so dropout draws its masks in the same order whatever the placement. (Backward ops
    run on their forward op's stream; autograd syncs them.)
    """

    def __init__(self, devices: list[torch.device]):
        self.devices = devices
        self.streams = _side_streams(devices)

    def share(
        self,
        parts: list[Tensor],
        then: Callable[[Tensor], Tensor] = lambda h: h,
        devices: list[torch.device] | None = None,
    ) -> list[Tensor]:
        """``then(parts joined along dimension 1)`` on each column's device (or ``devices``),
        computed once per device: columns on one device read the same tensor."""
        joined: dict[torch.device, Tensor] = {}
        for device in devices or self.devices:
            if device not in joined:
                moved = [_to(p, device) for p in parts]
                joined[device] = then(moved[0] if len(moved) == 1 else torch.cat(moved, dim=1))
        return [joined[device] for device in devices or self.devices]

    def fork(self, hs: list[Tensor]) -> list[Tensor]:
        """Make each side stream wait for its column's input, made on the main stream, and keep
        the input's memory until the side stream is done with it. Returns ``hs``."""
        for h, stream in zip(hs, self.streams):
            if stream is not None:
                stream.wait_stream(torch.cuda.current_stream(h.device))
                h.record_stream(stream)
        return hs

    def join(self, hs: list[Tensor]) -> None:
        """Make the main stream wait for each side stream's output."""
        for h, stream in zip(hs, self.streams):
            if stream is not None:
                main = torch.cuda.current_stream(h.device)
                main.wait_stream(stream)
                h.record_stream(main)

    def cross(
        self, hs: list[Tensor], flatten: bool = False, first_only: bool = False
    ) -> list[Tensor]:
        """Both columns' outputs as every column's input (the first column's only, for fc8),
        flattened channel-major (column 0's maps, then column 1's) for a fully connected layer."""
        self.join(hs)
        if first_only:
            return self.share(hs, devices=self.devices[:1])
        return self.fork(self.share(hs, (lambda h: h.flatten(1)) if flatten else (lambda h: h)))


def _to(h: Tensor, device: torch.device) -> Tensor:
    """``h`` on ``device``, images channels-last (a copy only where they are not); the copy
    asynchronous only towards a GPU (a CPU reading a non-blocking copy from a GPU could see it
    before it lands)."""
    h = h.to(device, non_blocking=device.type == "cuda")
    return h.contiguous(memory_format=torch.channels_last) if h.dim() == 4 else h


def _side_streams(devices: list[torch.device]) -> list[torch.cuda.Stream | None]:
    """A CUDA stream for each column whose GPU an earlier column already uses; None otherwise,
    and None for all under ``torch.compile``, whose graph holds no stream switches (the compiled
    kernels run on the current stream)."""
    if torch.compiler.is_compiling():
        return [None] * len(devices)
    return [
        _side_stream(device, k) if device.type == "cuda" and device in devices[:k] else None
        for k, device in enumerate(devices)
    ]


@functools.cache
def _side_stream(device: torch.device, column: int) -> torch.cuda.Stream:
    """Column ``column``'s side stream on ``device``, made once. (``torch.cuda.Stream()`` hands
    out the next of a pool of streams, and the caching allocator reuses freed memory only on the
    stream that allocated it: a new stream every step would hold many steps' activations.)"""
    return torch.cuda.Stream(device)


def _on(stream: torch.cuda.Stream | None) -> ContextManager:
    """Queue the work in this context on ``stream`` (None: on the current stream)."""
    return nullcontext() if stream is None else torch.cuda.stream(stream)
