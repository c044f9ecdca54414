"""Per-pixel work on uint8 batches, the same code on any device (PAPER_NOTES "Data", P §4.1).

Two stages, so each runs where it is cheapest:

1. ``crop_flip`` / ``centre_view`` / ``ten_views``: uint8 (B, 256, 256, 3) -> uint8 crops
   (..., S, S, 3), HWC. Pure copies; the loader runs them in its worker processes, before the
   crops cross to the main process and the device: S x S of the 256 x 256 bytes (77% for S = 224)
   then go through shared memory, pinning and the host-to-device copy, and cropping uint8 on
   the CPU is a handful of memory-speed copies.
2. ``to_input``: uint8 crops -> float32 (..., 3, S, S) on the network's scale: pixel values on
   0..255 minus the mean image's *central* crop (whatever the crop's position; [C], and Caffe),
   plus the per-image lighting shift (``Lighting``). The loader runs it on the target device
   (the GPU when there is one), after the uint8 crops have crossed from the workers. Its output
   is channels-last, the layout the network runs in (``model._to``).

``augment`` chains them for a whole training batch. The scale is 0..255 because the paper's
N(0, 0.01) initialisation is calibrated for it ([C] and Caffe feed 0..255 minus the mean).
S is 224 (the paper) or 227 (Caffe's equivalent geometry; PAPER_NOTES "Architecture").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from alexnet2012 import paper
from alexnet2012.errors import UsageError

IMAGE_SIZE = paper.IMAGE_SIZE
CROP_SIZES = paper.INPUT_SIZES
LIGHTING_MODES = ("paper", "2012", "none")
LIGHTING_STD = paper.LIGHTING_STD  # P §4.1: a_i ~ N(0, 0.1)
# [C]'s --color-noise coefficient: noise a_i * sqrt(l_i) with a_i ~ N(0, 0.1), then the crop / 1.1
COLOR_NOISE_2012 = 0.1


def check_crop(size: int) -> int:
    """``size`` if it is a crop size the network takes (224 or 227), else a ``UsageError``."""
    if size not in CROP_SIZES:
        raise UsageError(f"crop must be 224 (the paper) or 227 (Caffe's geometry), not {size}")
    return size


def centre_offset(size: int, full: int = IMAGE_SIZE) -> int:
    """Offset of the centre crop, rounded as torchvision's ``CenterCrop``: 16 (224), 14 (227)."""
    return int(round((full - size) / 2.0))


def crop_flip(
    images: torch.Tensor, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, size: int
) -> torch.Tensor:
    """Crop image i at (oy[i], ox[i]) to ``size`` x ``size``; mirror it left-right where flip[i].

    uint8 (B, H, W, 3) -> uint8 (B, S, S, 3). Two implementations with the same bytes: on the CPU
    (the loader's workers) one slice copy per image, whose contiguous runs copy at memory speed,
    whereas a gather through torch's CPU index kernel moves one byte at a time and is an order of
    magnitude slower; on other devices one gather (``_gather_crops``) instead of a kernel or two
    per image.
    """
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
    """``crop_flip`` as one slice copy per image (the CPU path)."""
    out = _empty((len(images), size, size, 3), torch.uint8, images.device)
    with _one_cpu_thread(images.device):
        for i, (y, x, f) in enumerate(zip(oy.tolist(), ox.tolist(), flip.tolist())):
            crop = images[i, y : y + size, x : x + size]
            out[i] = crop.flip(1) if f else crop
    return out


def _gather_crops(
    images: torch.Tensor, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, size: int
) -> torch.Tensor:
    """``crop_flip`` as one gather on ``images``' device: output pixel (i, r, c) is input pixel
    (i, oy[i] + r, ox[i] + c), or (i, oy[i] + r, ox[i] + S - 1 - c) where flip[i]."""
    device = images.device
    oy, ox, flip = (torch.as_tensor(np.asarray(a)).to(device) for a in (oy, ox, flip))
    r = torch.arange(size, device=device)
    rows = oy[:, None] + r
    cols = ox[:, None] + torch.where(flip[:, None], size - 1 - r, r)
    batch = torch.arange(len(images), device=device)
    return images[batch[:, None, None], rows[:, :, None], cols[:, None, :]]


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run CPU torch ops on one thread: copies of one 150 KB crop are too small to share, and on a
    busy machine each multi-threaded op waits for a descheduled OpenMP thread (measured here with
    2 threads and other jobs running: 290 ms per 128-image batch instead of 5 ms)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def centre_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre crop of every image: (B, S, S, 3)."""
    c = centre_offset(size, images.shape[1])
    return images[:, c : c + size, c : c + size].contiguous()


def ten_views(images: torch.Tensor, size: int) -> torch.Tensor:
    """P §4.1's ten test patches, (B, 10, S, S, 3), in [C]'s order: top-left, top-right, centre,
    bottom-left, bottom-right, then each of those five mirrored left-right.

    The mirrored views are mirror images of the first five crops ([C]); for S = 224 these are
    the same ten patches as torchvision's ``TenCrop`` (in another order). For S = 227 the centre
    offset 14 is not symmetric (256 - 227 = 29), and torchvision's flipped centre is one pixel away.
    """
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
    """P §4.1's PCA lighting noise, from the training set's RGB eigen-decomposition on [0,1].

    ``paper`` (default): add ``[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` on the [0,1] scale (the usual
    reading of the paper, e.g. fb.resnet.torch), i.e. 255 times that on the network's 0..255 scale.
    ``2012``: what [C] did (``convdata.py`` / ``convdata_jpeg.py``, ``get_next_batch`` of the
    cropped ImageNet providers): the crop minus the mean crop, plus ``P (a * sqrt(l))`` with l the
    eigenvalues on the 0..255 scale and a ~ N(0, 0.1) (noise of stdev sqrt(l) times
    ``--color-noise`` 0.1), the whole crop then divided by 1 + 0.1 ("so that the overall scale of
    the training data doesn't become too different from the test data"); test crops are not
    divided. ``none``: no noise.
    """

    mode: str
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    def __post_init__(self) -> None:
        if self.mode not in LIGHTING_MODES:
            raise UsageError(
                f"lighting must be one of {', '.join(LIGHTING_MODES)}, not {self.mode!r}"
            )

    @property
    def scale(self) -> float:
        """Factor applied to the whole mean-subtracted, noised crop."""
        return 1.0 / (1.0 + COLOR_NOISE_2012) if self.mode == "2012" else 1.0

    def shift(self, alpha: np.ndarray) -> torch.Tensor | None:
        """Per-image RGB shift on the 0..255 scale, float32 (B, 3), for draws ``alpha`` (B, 3);
        None for ``none``. Computed with numpy (a 3x3 product per image is too small for torch's
        thread pool)."""
        if self.mode == "none":
            return None
        weights = self.eigenvalues if self.mode == "paper" else np.sqrt(self.eigenvalues)
        shift = np.asarray(alpha, np.float64) @ (self.eigenvectors * weights * 255.0).T
        return torch.from_numpy(shift.astype(np.float32))


def to_input(
    crops: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """uint8 crops (B, ..., S, S, 3) -> float32 (B, ..., 3, S, S): ``(crop - mean + shift) * scale``

    ``mean``: (3, S, S) on 0..255 (``mean_crop``; ``hwc_mean`` gives it the layout that avoids a
    copy per call); ``shift``: (B, 3) on 0..255 or None. The result is channels-last (a
    permuted view of (B, ..., S, S, 3) memory): each step is then a plain elementwise pass over
    the crops' own layout, and the network converts its input to channels-last anyway; the
    values are those of the contiguous layout, element for element.
    """
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
    """``mean`` (3, S, S), same values, stored channels-last: what ``to_input`` reads directly."""
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
    """A training batch: uint8 (B, 256, 256, 3) -> float32 (B, 3, S, S), S = ``mean``'s size."""
    crops = crop_flip(images, oy, ox, flip, mean.shape[-1])
    return to_input(crops, mean, lighting.shift(alpha), lighting.scale)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``, except that on the CPU the memory comes from numpy, whose large allocations
    ask the kernel for transparent huge pages: first-touching a fresh 77 MB batch is then about
    twice as fast as with torch's allocator (measured here), which matters at thousands of
    images/s."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))


_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.float32: np.float32}
