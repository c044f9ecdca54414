"""A small, deterministic stand-in for ILSVRC-2012 in its real on-disk layout (demo and tests).

``make_synthetic_imagenet(out, classes=10, train_per_class=100, val_per_class=20)`` writes

- ``out/train/<wnid>/<wnid>_<n>.JPEG``,
- ``out/val/ILSVRC2012_val_<8 digits>.JPEG`` (flat, classes shuffled, as the real val set),
- ``out/ILSVRC2012_devkit_t12/data/meta.mat`` (struct array ``synsets`` with the real fields,
  read by ``scipy.io.loadmat`` exactly as torchvision's devkit parser reads it; leaf devkit IDs
  are shuffled relative to WNID order and non-leaf synsets with ``num_children > 0`` follow,
  as in the real file) and ``data/ILSVRC2012_validation_ground_truth.txt``,
- ``out/oddities.tsv``: the planted real-world oddities (path, kind, expected outcome).

A class is a combination of shape family x colour scheme x texture (8 x 9 x 5; class c takes
``(c % 8, c % 9, c % 5)``, unique for c < 360), drawn at a random position, scale and rotation
with colour jitter over a random noisy gradient background, on canvases of 180-500 px per side
(so aspect ratios vary from about 1:2.8 to 2.8:1). The oddities, as in the real ILSVRC-2012
(PAPER_NOTES "ImageNet files as users have them"): grayscale and CMYK JPEGs and a PNG named
``.JPEG`` (all must become normal RGB rows), a truncated JPEG and a zero-byte file (both must be
reported as bad). The train ones go to the last images of classes, never to a class's first
image (so very small sets get fewer of them); the val ones are the first three val files.

Same arguments -> same bytes (one seeded generator per image; Pillow's encoders are deterministic).
An error or Ctrl-C part-way leaves nothing behind (no half-written set).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from alexnet2012.data.cache import make_folder
from alexnet2012.data.progress import Progress, processes
from alexnet2012.errors import UsageError, ignore_interrupt

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent")
PALETTES = {  # name: (main colour, second colour), RGB 0..255
    "red-yellow": ((210, 40, 30), (250, 220, 40)),
    "blue-white": ((30, 60, 200), (240, 240, 240)),
    "green-black": ((40, 170, 50), (20, 20, 20)),
    "purple-orange": ((130, 40, 170), (250, 140, 20)),
    "cyan-magenta": ((20, 200, 210), (220, 30, 170)),
    "brown-beige": ((120, 70, 30), (230, 210, 170)),
    "pink-navy": ((250, 130, 180), (20, 30, 90)),
    "grey-lime": ((128, 128, 128), (170, 250, 40)),
    "black-white": ((15, 15, 15), (245, 245, 245)),
}
TEXTURES = ("plain", "striped", "checkered", "dotted", "rippled")
MAX_CLASSES = len(SHAPES) * len(PALETTES) * len(TEXTURES)  # 8, 9, 5 pairwise coprime
YEAR = 2012
DEVKIT, ODDITIES_FILE = f"ILSVRC{YEAR}_devkit_t12", "oddities.tsv"
# Oddities planted on train images (in this order) and on val images.
TRAIN_ODDITIES = ("grayscale", "cmyk", "png", "truncated", "empty")
VAL_ODDITIES = ("grayscale", "cmyk", "truncated")
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by alexnet2012.data.synthetic".ljust(116)
_EXPECTED = {"grayscale": "rgb", "cmyk": "rgb", "png": "rgb", "truncated": "bad", "empty": "bad"}


def make_synthetic_imagenet(
    out: str | os.PathLike,
    *,
    classes: int,
    train_per_class: int,
    val_per_class: int,
    seed: int = 0,
    oddities: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> None:
    """Write the synthetic dataset to the new (or empty) folder ``out``; see the module docstring.

    ``workers`` processes draw the images (None: one per CPU core; sets under 64 images are drawn in
    this process); the bytes do not depend on it. ``progress``: a bar (or lines, in a log).
    """
    out = Path(out)
    if not 1 <= classes <= MAX_CLASSES:
        raise UsageError(f"--classes must be between 1 and {MAX_CLASSES}, not {classes}")
    if train_per_class < 1 or val_per_class < 1:
        raise UsageError(
            "--train-per-class and --val-per-class must be at least 1 "
            "(scripts/prepare_imagenet.py refuses a split without images)"
        )
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (draw in this process) or more, not {workers}")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(
            f"{out} already exists and is not an empty folder: choose a new output folder"
        )
    with _all_or_nothing(out):
        _write_set(out, classes, train_per_class, val_per_class, seed, oddities, workers, progress)


@contextmanager
def _all_or_nothing(out: Path) -> Iterator[None]:
    """Make the folder ``out``; an error or Ctrl-C in the block removes what the block wrote into
    it (the set's own names only), and ``out`` and the parents made for it, as they were empty."""
    made = [p for p in (out, *out.absolute().parents) if not p.exists()]  # deepest first
    make_folder(out)  # a file: UsageError
    try:
        yield
    except BaseException:
        for name in ("train", "val", DEVKIT):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / ODDITIES_FILE).unlink(missing_ok=True)
        with suppress(OSError):  # a folder something else wrote into stays
            for folder in made:
                folder.rmdir()
        raise


def _write_set(
    out: Path,
    classes: int,
    train_per_class: int,
    val_per_class: int,
    seed: int,
    oddities: bool,
    workers: int | None,
    progress: bool,
) -> None:
    """The images, devkit and oddity list of ``make_synthetic_imagenet`` in the folder ``out``."""
    rng = np.random.default_rng([seed, 0])
    wnids = [f"n0{n:07d}" for n in rng.choice(10**7, size=classes, replace=False)]
    devkit_ids = rng.permutation(classes) + 1  # devkit ID of class c (c in the order of `wnids`)

    jobs = []  # (path, class, seed of the image's generator, oddity or None)
    for c, wnid in enumerate(wnids):
        (out / "train" / wnid).mkdir(parents=True)
        kinds = _oddity_slots(TRAIN_ODDITIES, c, classes, train_per_class) if oddities else {}
        jobs += [
            (out / "train" / wnid / f"{wnid}_{i + 1}.JPEG", c, (seed, 1, c, i), kinds.get(i))
            for i in range(train_per_class)
        ]
    (out / "val").mkdir()
    order = np.random.default_rng([seed, 2]).permutation(classes * val_per_class)
    val_kinds = dict(enumerate(VAL_ODDITIES)) if oddities and len(order) > len(VAL_ODDITIES) else {}
    truth = []
    for number, k in enumerate(order):
        c, i = divmod(int(k), val_per_class)
        jobs.append(
            (
                out / "val" / f"ILSVRC{YEAR}_val_{number + 1:08d}.JPEG",
                c,
                (seed, 3, c, i),
                val_kinds.get(number),
            )
        )
        truth.append(int(devkit_ids[c]))
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = workers if workers > 1 and len(jobs) >= 64 else 1
    start = f"drawing {len(jobs)} images into {out} {processes(workers)}"
    pool = multiprocessing.Pool(workers, initializer=ignore_interrupt) if workers > 1 else None
    with pool or nullcontext(), Progress("synthetic", len(jobs), start, enabled=progress) as bar:
        drawn = pool.imap_unordered(_make_image, jobs, 16) if pool else map(_make_image, jobs)
        for _ in drawn:
            bar.update(1)

    data = out / DEVKIT / "data"
    data.mkdir(parents=True)
    (data / f"ILSVRC{YEAR}_validation_ground_truth.txt").write_text(
        "".join(f"{t}\n" for t in truth)
    )
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": _synsets(wnids, devkit_ids, train_per_class)})
    # The MAT header's 116-byte text has a creation time; a fixed text keeps the bytes reproducible.
    (data / "meta.mat").write_bytes(_MAT_HEADER + mat.getvalue()[len(_MAT_HEADER) :])
    planted = [(p.relative_to(out).as_posix(), kind) for p, _, _, kind in jobs if kind]
    (out / ODDITIES_FILE).write_text(
        "path\tkind\texpected\n" + "".join(f"{p}\t{k}\t{_EXPECTED[k]}\n" for p, k in planted)
    )


def _make_image(job: tuple[Path, int, tuple[int, ...], str | None]) -> None:
    path, c, key, oddity = job
    _write(path, _render(c, np.random.default_rng(key)), oddity)


def class_description(c: int) -> tuple[str, str, str]:
    """(colour scheme, texture, shape) of class ``c``."""
    return list(PALETTES)[c % len(PALETTES)], TEXTURES[c % len(TEXTURES)], SHAPES[c % len(SHAPES)]


def _oddity_slots(kinds: tuple[str, ...], c: int, classes: int, per_class: int) -> dict[int, str]:
    """Image index -> oddity for class ``c``: oddity j goes to class j % classes, counting down
    from its last image, never onto image 0."""
    slots = {}
    for j, kind in enumerate(kinds):
        index = per_class - 1 - j // classes
        if j % classes == c and index >= 1:
            slots[index] = kind
    return slots


def _write(path: Path, rgb: np.ndarray, oddity: str | None) -> None:
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if oddity == "grayscale":
        img.convert("L").save(buf, "JPEG", quality=90)
    elif oddity == "cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=90)
    elif oddity == "png":
        img.save(buf, "PNG")
    elif oddity != "empty":
        img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2] if oddity == "truncated" else data)


def _render(c: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``c``: uint8 (h, w, 3), drawn at half resolution, then upsampled."""
    palette, texture, shape = class_description(c)
    h, w = (int(v) for v in rng.integers(180, 501, size=2))
    hh, hw = h // 2, w // 2
    y, x = np.ogrid[0:hh, 0:hw]
    y, x = y.astype(np.float32), x.astype(np.float32)

    # Background: a gradient between two muted random colours.
    ends = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x / hw + np.sin(angle) * y / hh + 1) / 2
    image = ends[0] + t[..., None] * (ends[1] - ends[0])

    # The object: random scale, position and rotation; coordinates in units of its radius.
    radius = rng.uniform(0.25, 0.45) * min(hh, hw)
    cy, cx = (
        rng.uniform(0.7 * radius, hh - 0.7 * radius),
        rng.uniform(0.7 * radius, hw - 0.7 * radius),
    )
    turn = rng.uniform(0, 2 * np.pi)
    u = (np.cos(turn) * (x - cx) + np.sin(turn) * (y - cy)) / radius
    v = (-np.sin(turn) * (x - cx) + np.cos(turn) * (y - cy)) / radius
    mask = _shape_mask(shape, u, v)

    main, second = (
        np.array(col, np.float32) * rng.uniform(0.85, 1.15, 3) for col in PALETTES[palette]
    )
    period = rng.uniform(0.2, 0.4)  # texture period, in radii
    fill = np.where(_texture(texture, u / period, v / period)[..., None], second, main)
    image = np.where(mask[..., None], fill, image)
    image += rng.standard_normal(size=(hh, hw, 1), dtype=np.float32) * 10  # sensor-like noise
    image = np.clip(image, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.75
    if shape == "cross":
        return ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1))
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 1
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        sector = np.mod(np.arctan2(v, u), 2 * np.pi / n) - np.pi / n
        return r * np.cos(sector) <= np.cos(np.pi / n)
    if shape == "star":
        return r <= 0.6 + 0.4 * np.cos(5 * np.arctan2(v, u))
    if shape == "ring":
        return (r <= 1) & (r >= 0.6)
    return (r <= 1) & (np.hypot(u - 0.5, v) > 0.8)  # crescent


def _texture(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the second colour goes (bool), on coordinates in units of the texture period."""
    if texture == "plain":
        return np.zeros(u.shape, bool)
    if texture == "striped":
        return np.mod(u, 1) < 0.5
    if texture == "checkered":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    if texture == "dotted":
        return np.hypot(np.mod(u, 1) - 0.5, np.mod(v, 1) - 0.5) < 0.3
    return np.mod(np.hypot(u, v), 1) < 0.5  # rippled


def _synsets(wnids: list[str], devkit_ids: np.ndarray, train_per_class: int) -> np.ndarray:
    """The ``synsets`` struct array: leaves (shuffled IDs), then one parent per shape, a root."""
    fields = (
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    )
    rows = []
    for c in np.argsort(devkit_ids):  # rows in devkit ID order, as in the real file
        palette, texture, shape = class_description(int(c))
        rows.append(
            (
                int(devkit_ids[c]),
                wnids[c],
                f"{palette} {texture} {shape}",
                f"synthetic class {int(c)}: a {texture} {shape} in {palette}",
                0,
                np.zeros(0, np.uint16),
                0,
                train_per_class,
            )
        )
    shapes = sorted({int(c) % len(SHAPES) for c in range(len(wnids))})
    parent_ids = {s: len(wnids) + 1 + k for k, s in enumerate(shapes)}
    root_id = len(wnids) + len(shapes) + 1
    for s in shapes:
        children = sorted(int(devkit_ids[c]) for c in range(len(wnids)) if c % len(SHAPES) == s)
        rows.append(
            (
                parent_ids[s],
                f"n1{s:07d}",
                f"{SHAPES[s]} family",
                f"synthetic: every {SHAPES[s]}",
                len(children),
                np.array(children, np.uint16),
                1,
                0,
            )
        )
    rows.append(
        (
            root_id,
            "n19999999",
            "synthetic object",
            "synthetic: everything",
            len(shapes),
            np.array([parent_ids[s] for s in shapes], np.uint16),
            2,
            0,
        )
    )
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for k, row in enumerate(rows):
        synsets[k, 0] = row
    return synsets
