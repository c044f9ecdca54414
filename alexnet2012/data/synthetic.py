"""A small, deterministic stand-in for ILSVRC-2012 in its real layout, class c a shape x colours x
texture ``(c % 8, c % 9, c % 5)``, with the real set's oddities (grayscale, CMYK, PNG-named,
truncated, empty) listed in ``oddities.tsv``. Same arguments, same bytes."""

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
from alexnet2012.errors import UsageError, ignore_interrupt
from alexnet2012.progress import Progress, processes

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
    """Write the set into the new or empty ``out``; ``workers`` change no byte."""
    out = Path(out)
    assert 1 <= classes <= MAX_CLASSES and train_per_class >= 1 and val_per_class >= 1
    assert seed >= 0 and (workers is None or workers >= 0), (seed, workers)
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(
            f"{out} already exists and is not an empty folder: choose a new output folder"
        )
    with _all_or_nothing(out):
        _write_set(out, classes, train_per_class, val_per_class, seed, oddities, workers, progress)


@contextmanager
def _all_or_nothing(out: Path) -> Iterator[None]:
    """Make ``out``; an error or Ctrl-C removes what the block wrote and the folders made for it."""
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
    rng = np.random.default_rng([seed, 0])
    wnids = [f"n0{n:07d}" for n in rng.choice(10**7, size=classes, replace=False)]
    devkit_ids = rng.permutation(classes) + 1  # devkit ID of class c (c in the order of `wnids`)

    jobs = []  # (path, class, the image's seed, oddity or None)
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
        path = out / "val" / f"ILSVRC{YEAR}_val_{number + 1:08d}.JPEG"
        jobs.append((path, c, (seed, 3, c, i), val_kinds.get(number)))
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
    return list(PALETTES)[c % len(PALETTES)], TEXTURES[c % len(TEXTURES)], SHAPES[c % len(SHAPES)]


def _oddity_slots(kinds: tuple[str, ...], c: int, classes: int, per_class: int) -> dict[int, str]:
    """Image index -> oddity: oddity j goes to class j % classes, from its last image down."""
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
    """One image of class ``c``, uint8 (h, w, 3), drawn at half resolution."""
    palette, texture, shape = class_description(c)
    h, w = (int(v) for v in rng.integers(180, 501, size=2))
    hh, hw = h // 2, w // 2
    y, x = np.ogrid[0:hh, 0:hw]
    y, x = y.astype(np.float32), x.astype(np.float32)

    ends = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x / hw + np.sin(angle) * y / hh + 1) / 2
    image = ends[0] + t[..., None] * (ends[1] - ends[0])

    # the object; coordinates in units of its radius
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
    """``synsets``: the leaves (shuffled IDs), one parent per shape, a root."""
    fields = "ILSVRC2012_ID WNID words gloss num_children children wordnet_height num_train_images"

    def row(n, wnid, words, gloss, kids, height, images=0):
        return (n, wnid, words, gloss, len(kids), np.array(kids, np.uint16), height, images)

    rows = []
    for c in map(int, np.argsort(devkit_ids)):  # rows in devkit ID order, as in the real file
        palette, texture, shape = class_description(c)
        gloss = f"synthetic class {c}: a {texture} {shape} in {palette}"
        words = f"{palette} {texture} {shape}"
        rows.append(row(int(devkit_ids[c]), wnids[c], words, gloss, [], 0, train_per_class))
    shapes = sorted({c % len(SHAPES) for c in range(len(wnids))})
    parent_ids = {s: len(wnids) + 1 + k for k, s in enumerate(shapes)}
    for s in shapes:
        children = sorted(int(devkit_ids[c]) for c in range(len(wnids)) if c % len(SHAPES) == s)
        gloss = f"synthetic: every {SHAPES[s]}"
        rows.append(row(parent_ids[s], f"n1{s:07d}", f"{SHAPES[s]} family", gloss, children, 1))
    root_id, root = len(wnids) + len(shapes) + 1, [parent_ids[s] for s in shapes]
    rows.append(row(root_id, "n19999999", "synthetic object", "synthetic: everything", root, 2))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields.split()])
    for k, r in enumerate(rows):
        synsets[k, 0] = r
    return synsets
