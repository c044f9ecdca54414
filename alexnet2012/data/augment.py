"""Augmentation (P §4.1): uint8 crops in the workers, then float32 on the device (``to_input``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alexnet2012 import paper

LIGHTING_MODES = ("paper", "2012", "none")
COLOR_NOISE_2012 = 0.1  # [C]'s --color-noise: a_i * sqrt(l_i), a_i ~ N(0, 0.1); crop / 1.1


def centre_offset(size: int, full: int = paper.IMAGE_SIZE) -> int:
    """Offset of the centre crop, rounded as torchvision's ``CenterCrop``: 16 (224), 14 (227)."""
    return int(round((full - size) / 2.0))


def crop_flip(
    images: torch.Tensor, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, size: int
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> (B, S, S, 3), image i cropped at (oy[i], ox[i]), flipped if flip[i]."""
    oy, ox, flip = np.asarray(oy), np.asarray(ox), np.asarray(flip, bool)
    if len(images) and not (
        len(oy) == len(ox) == len(flip) == len(images)
        and 0 <= min(oy.min(), ox.min())
        and oy.max() <= images.shape[1] - size
        and ox.max() <= images.shape[2] - size
    ):
        raise ValueError(
            f"crop offsets must be one per image and keep the {size} x {size} crop inside the "
            f"{images.shape[1]} x {images.shape[2]} images"
        )
    if images.device.type == "cpu":
        return _slice_crops(images, oy, ox, flip, size)
    return _gather_crops(images, oy, ox, flip, size)


def _slice_crops(
    images: torch.Tensor, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, size: int
) -> torch.Tensor:
    out = _empty((len(images), size, size, 3), torch.uint8, images.device)
    threads = torch.get_num_threads()  # one: small copies would wait for descheduled threads
    torch.set_num_threads(1)
    try:
        for i, (y, x, f) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist())):
            crop = images[i, y : y + size, x : x + size]
            out[i] = crop.flip(1) if f else crop
    finally:
        torch.set_num_threads(threads)
    return out


def _gather_crops(
    images: torch.Tensor, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, size: int
) -> torch.Tensor:
    # output pixel (i, r, c) is input (i, oy[i] + r, ox[i] + c), or column ox[i] + S - 1 - c
    device = images.device
    oy, ox, flip = (torch.as_tensor(np.asarray(a)).to(device) for a in (oy, ox, flip))
    r = torch.arange(size, device=device)
    rows = oy[:, None] + r
    cols = ox[:, None] + torch.where(flip[:, None], size - 1 - r, r)
    batch = torch.arange(len(images), device=device)
    return images[batch[:, None, None], rows[:, :, None], cols[:, None, :]]


def centre_view(images: torch.Tensor, size: int) -> torch.Tensor:
    c = centre_offset(size, images.shape[1])
    return images[:, c : c + size, c : c + size].contiguous()


def ten_views(images: torch.Tensor, size: int) -> torch.Tensor:
    """P §4.1's ten patches (B, 10, S, S, 3) in [C]'s order: corners TL, TR, centre, BL, BR, then
    their mirrors (= torchvision's TenCrop for 224; for 227 its flipped centre is 1 px off)."""
    far, c = images.shape[1] - size, centre_offset(size, images.shape[1])
    crops = [
        images[:, y : y + size, x : x + size]
        for y, x in ((0, 0), (0, far), (c, c), (far, 0), (far, far))
    ]
    return torch.stack(crops + [v.flip(2) for v in crops], dim=1)


def mean_crop(mean_image: np.ndarray, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` crop of the (3, 256, 256) [0,1] mean image, on 0..255."""
    c = centre_offset(size, mean_image.shape[1])
    return torch.from_numpy(
        np.ascontiguousarray(mean_image[:, c : c + size, c : c + size], np.float32) * 255
    )


@dataclass(frozen=True)
class Lighting:
    """P §4.1's PCA lighting. ``paper``: add ``P [a_i l_i]`` on [0,1]; ``2012``: [C]'s
    ``P (a * sqrt(l))`` with l on 0..255, then the crop / 1.1; ``none``."""

    mode: str
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    def __post_init__(self) -> None:
        assert self.mode in LIGHTING_MODES, self.mode

    @property
    def scale(self) -> float:
        return 1.0 / (1.0 + COLOR_NOISE_2012) if self.mode == "2012" else 1.0

    def shift(self, alpha: np.ndarray) -> torch.Tensor | None:
        """float32 (B, 3) RGB shift on 0..255 for draws ``alpha`` (B, 3); None for ``none``."""
        if self.mode == "none":
            return None
        weights = self.eigenvalues if self.mode == "paper" else np.sqrt(self.eigenvalues)
        shift = np.asarray(alpha, np.float64) @ (self.eigenvectors * weights * 255.0).T
        return torch.from_numpy(shift.astype(np.float32))


def to_input(
    crops: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """uint8 (B, ..., S, S, 3) -> float32 (B, ..., 3, S, S) ``(crop - mean + shift) * scale``,
    a channels-last view of HWC memory. ``mean``: (3, S, S) (``hwc_mean``); ``shift``: (B, 3)."""
    device = crops.device
    out = _empty(tuple(crops.shape), torch.float32, device)
    out.copy_(crops)
    out.sub_(mean.to(device).movedim(-3, -1).contiguous())
    if shift is not None:  # added a pixel row at a time: rows of S x 3, not runs of 3 values
        rows = out.view(*out.shape[:-2], -1)
        row_shift = shift.to(device).repeat(1, out.shape[-2])
        rows.add_(row_shift.view(len(crops), *[1] * (rows.dim() - 2), -1))
    if scale != 1.0:
        out.mul_(scale)
    return out.movedim(-1, -3)


def hwc_mean(mean: torch.Tensor) -> torch.Tensor:
    """``mean`` (3, S, S) stored channels-last, as ``to_input`` reads it."""
    return mean.movedim(-3, -1).contiguous().movedim(-1, -3)


def augment(
    images: torch.Tensor,
    oy: np.ndarray,
    ox: np.ndarray,
    flip: np.ndarray,
    alpha: np.ndarray,
    mean: torch.Tensor,
    lighting: Lighting,
) -> torch.Tensor:
    crops = crop_flip(images, oy, ox, flip, mean.shape[-1])
    return to_input(crops, mean, lighting.shift(alpha), lighting.scale)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``; on the CPU from numpy, whose huge pages are faster to first touch."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))


_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.float32: np.float32}
