"""Loader items -> (x, y) on the device, where ``augment.to_input`` runs. Towards a GPU the
crops are copied (a JPEG cache's decoded) on a side stream one batch ahead of the step."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import torch
from torch.utils.data import DataLoader

from alexnet2012.data import packed
from alexnet2012.data.augment import to_input
from alexnet2012.data.worker import Item


@dataclass
class Batches:
    """(x float32 channels-last, y int64) on ``device``, a pass of ``loader`` per iteration."""

    loader: DataLoader
    device: torch.device
    mean: torch.Tensor
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return feed(iter(self.loader), self.device, self.mean, self.scale)


@cache
def side_stream(device: torch.device) -> torch.cuda.Stream:
    """One copy stream per device for every pass: the allocator keeps blocks per stream."""
    return torch.cuda.Stream(device)


def feed(
    raw: Iterable[Item], device: torch.device, mean: torch.Tensor, scale: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """CUDA: batch b + 1 is queued on the side stream before b is handed out; the caller's stream
    waits for its copy, and ``record_stream`` keeps the copies until its work on them is done."""
    if device.type != "cuda":
        for crops, labels, shift in raw:
            crops = crops.to(device, non_blocking=True)
            if shift is not None:
                shift = shift.to(device, non_blocking=True)
            yield to_input(crops, mean, shift, scale), labels.to(device, non_blocking=True)
        return
    side = side_stream(device)

    def send(item: Item) -> tuple[list, torch.cuda.Event]:
        with torch.cuda.stream(side):
            if isinstance(item, packed.Encoded):
                item = packed.to_device(item, device)
            copies = [None if t is None else t.to(device, non_blocking=True) for t in item]
            return copies, side.record_event()

    def receive(sent: tuple[list, torch.cuda.Event]) -> tuple[torch.Tensor, torch.Tensor]:
        (crops, labels, shift), copied = sent
        stream = torch.cuda.current_stream(device)
        stream.wait_event(copied)
        for t in (crops, labels, shift):
            if t is not None:
                t.record_stream(stream)
        return to_input(crops, mean, shift, scale), labels

    ahead = None
    for item in raw:
        sent = send(item)
        if ahead is not None:
            yield receive(ahead)
        ahead = sent
    if ahead is not None:
        yield receive(ahead)
