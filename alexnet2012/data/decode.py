"""One image file -> the paper's 256x256 RGB array (PAPER_NOTES "Data": P §2 preprocessing).

Decoding is Pillow's, followed by ``.convert("RGB")``, which turns the real-world oddities of
ILSVRC (grayscale JPEGs, the 22 CMYK JPEGs, the PNG named ``.JPEG``; PAPER_NOTES "ImageNet
files as users have them") into ordinary RGB images.

Resampling: the shorter side goes to 256 with Pillow's bilinear filter. Pillow widens the
filter's support by the reduction factor when it shrinks an image, so this is an antialiased
(triangle-filter) downscale, not point sampling; it is also exactly what torchvision's
``Resize(256)`` + ``CenterCrop(256)`` do to a PIL image (same size rounding, same crop offset),
so the cache reproduces the standard PyTorch ImageNet pipeline pixel for pixel. The paper says
only "rescaled"; [C] trained from 256x256 JPEGs made by a script that is not in its release.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet2012 import paper

SIZE = paper.IMAGE_SIZE


def resized_shape(width: int, height: int, short: int = SIZE) -> tuple[int, int]:
    """(width, height) with the shorter side ``short``; the longer one truncated, as torchvision."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def load_256(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path``, rescale the shorter side to 256, centre-crop 256x256: uint8 (256, 256, 3).

    Raises ``BadImage`` with a short reason when the file cannot be decoded.
    """
    if os.path.getsize(path) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # forces the full decode
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(
            f"cannot decode: {' '.join(str(exc).split()) or type(exc).__name__}"
        ) from None
    width, height = resized_shape(*rgb.size)
    rgb = rgb.resize((width, height), Image.BILINEAR)
    top = int(round((height - SIZE) / 2.0))
    left = int(round((width - SIZE) / 2.0))
    return np.asarray(rgb.crop((left, top, left + SIZE, top + SIZE)))


class BadImage(Exception):
    """A file that cannot be turned into an image; the message is the bad-file report's reason."""
