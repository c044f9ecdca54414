"""One image file -> the paper's 256x256 RGB array (P §2): RGB (ILSVRC has grayscale, CMYK and
PNG-named files), the shorter side to 256 (bilinear), the centre 256x256: pixel for pixel
torchvision's ``Resize(256)`` + ``CenterCrop(256)``."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet2012 import paper


def resized_shape(width: int, height: int, short: int = paper.IMAGE_SIZE) -> tuple[int, int]:
    """(width, height) with the shorter side ``short``; the longer one truncated, as torchvision."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def load_256(path: str | os.PathLike) -> np.ndarray:
    """uint8 (256, 256, 3) of ``path``; ``BadImage`` with a short reason if it cannot be decoded."""
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
    size = paper.IMAGE_SIZE
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return np.asarray(rgb.crop((left, top, left + size, top + size)))


class BadImage(Exception):
    """A file that cannot be turned into an image; the message is the bad-file report's reason."""
