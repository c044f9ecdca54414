"""``prepare_cache``: the paper's preprocessing, once (P §2): every image decoded to 256x256 into
the cache by worker processes, then the training statistics. The images are synced, then the row
status saved, every few thousand rows or 30 s and on any exit, so a re-run redoes little.

``load_256``: one image file as RGB (ILSVRC has grayscale, CMYK and PNG-named files), the shorter
side to 256 (bilinear), the centre 256x256: torchvision's ``Resize(256)`` + ``CenterCrop(256)``."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from alexnet2012 import paper
from alexnet2012.data import cache as fmt
from alexnet2012.data import packed
from alexnet2012.data.imagenet import ImageNet
from alexnet2012.data.stats import PixelSums, compute_stats, load_stats, save_stats
from alexnet2012.data.subset import Subset
from alexnet2012.data.writers import JpegWriter, load_sums, writer
from alexnet2012.errors import UsageError, ignore_interrupt
from alexnet2012.progress import Progress, processes

CHUNK = 32  # rows per worker task
CHECKPOINT_ROWS, CHECKPOINT_SECONDS = 5000, 30.0
# a worker's task: (format, image file or quality, sums wanted), source root, [(row, path)]
Task = tuple[tuple, str, list[tuple[int, str]]]


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
    w, h, size = *rgb.size, paper.IMAGE_SIZE  # the longer side truncated, as torchvision's
    width, height = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    rgb = rgb.resize((width, height), Image.BILINEAR)
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return np.asarray(rgb.crop((left, top, left + size, top + size)))


class BadImage(Exception):
    """A file that cannot be turned into an image; the message is the bad-file report's reason."""


def prepare_cache(
    src_root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    workers: int | None = None,
    year: int = 2012,
    devkit: str | os.PathLike | None = None,
    progress: bool = True,
    subset: Subset | None = None,
    format: str = packed.RAW,
    quality: int = packed.DEFAULT_QUALITY,
) -> dict:
    """Decode ``splits`` of ``src_root`` (``subset``'s images) into ``cache_dir`` (resuming) as
    raw rows or JPEGs at ``quality``; ``workers`` None: one per core. Returns per split ``rows``,
    ``done``, ``bad``, ``decoded_now``, ``bad_files`` [(path, reason)]; ``stats``: its path."""
    src, cache = Path(src_root), Path(cache_dir)
    assert workers is None or workers >= 0, workers
    assert format in packed.FORMATS and 1 <= quality <= 100, (format, quality)
    _refuse_a_cache_as_source(src)
    _refuse_a_cache_around_source(src, cache)
    fmt.refuse_foreign_folder(cache)
    # every split's layout is checked before any decoding
    chosen = {} if subset is None else {"subset": subset}
    datasets = [ImageNet(src, split, year=year, devkit=devkit, **chosen) for split in splits]
    fmt.make_folder(cache)
    workers = (os.cpu_count() or 1) if workers is None else workers
    kind = {
        "images": format,
        "quality": quality if format == packed.JPEG else None,
        "subset": None if subset is None else subset.as_dict(),
    }
    try:
        return _prepare_all(cache, datasets, workers, progress, kind)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"finished work is kept in {cache}; run the same command again to continue"
        ) from None


def _prepare_all(
    cache: Path, datasets: list[ImageNet], workers: int, progress: bool, kind: dict
) -> dict:
    summary: dict = {}
    for data in datasets:
        labels = _labels_in_manifest(cache, data, kind)
        summary[data.split] = _prepare_split(cache, data, labels, workers, progress, kind)
    if "train" in summary:
        stats_file = cache / "stats.json"
        train = summary["train"]
        if (
            train["decoded_now"]
            or not stats_file.is_file()
            or load_stats(cache).num_images != train["done"]
        ):
            split = fmt.open_split(cache, "train")
            if split.images is None:  # the sums of the original rows, kept while encoding
                path, fix = packed.sums_path(cache, "train"), fmt.split_fix(cache, "train")
                sums = fmt.read_cache_file(path, lambda p: load_sums(p, len(split.status)), fix)[0]
                save_stats(cache, sums.stats())
            else:
                save_stats(cache, compute_stats(split.images, split.usable, progress=progress))
        summary["stats"] = str(stats_file)
    return summary


def _refuse_a_cache_as_source(src: Path) -> None:
    """A cache given as SRC: say how to finish or extend it."""
    splits = [s for s in fmt.SPLITS if fmt.index_path(src, s).is_file()]
    if (src / "train").is_dir() or not splits:
        return
    manifest = fmt.require_manifest(src)
    for split in splits:
        fmt.check_finished(src, split, fmt.read_split(src, split, manifest)[1], manifest)
    raise UsageError(
        f"{src} is a prepared cache, not an ImageNet copy: to extend it, run "
        f"{fmt.PREPARE} {manifest['source']} {src}"
    )


def _refuse_a_cache_around_source(src: Path, cache: Path) -> None:
    s, c = src.resolve(), cache.resolve()
    relations = {"is": c == s, "lies inside": s in c.parents, "contains": c in s.parents}
    relation = next((words for words, holds in relations.items() if holds), None)
    if relation:
        raise UsageError(
            f"CACHE {cache} {relation} the ImageNet folder SRC {src}: give the cache a folder "
            f"of its own, e.g. {s}_cache"
        )


def _labels_in_manifest(cache: Path, data: ImageNet, kind: dict) -> list[int]:
    """Labels of ``data`` as indices into the cache's class list (from the first split)."""
    manifest = fmt.read_manifest(cache)
    if manifest is None:
        fmt.write_manifest(cache, data.root, data.year, data.wnids, data.classes, kind)
        return list(data.targets)
    if manifest["year"] != data.year:
        raise UsageError(
            f"{cache} holds ILSVRC-{manifest['year']}, not {data.year}: use another CACHE folder"
        )
    held = {k: manifest[k] for k in kind}
    if held != kind:
        raise UsageError(
            f"{cache} holds {_describe(held)}, not {_describe(kind)}: give the options it was "
            f"prepared with, or use another CACHE folder"
        )
    index = {w: i for i, w in enumerate(manifest["wnids"])}
    unknown = sorted(set(data.wnids) - set(index))
    if unknown:
        raise UsageError(
            f"{cache} was made from {manifest['source']}, whose classes lack {len(unknown)} of "
            f"{data.root}'s {data.split} classes (e.g. {unknown[0]}): give {manifest['source']} "
            f"as SRC, or prepare {data.root} into a new CACHE folder"
        )
    return [index[data.wnids[t]] for t in data.targets]


def _describe(kind: dict) -> str:
    jpeg = kind["images"] == packed.JPEG
    images = f"JPEG rows (quality {kind['quality']})" if jpeg else "raw rows"
    subset = kind["subset"] and Subset.from_dict(kind["subset"]).text
    return images + (f" of --subset {subset}" if subset else "")


def _prepare_split(
    cache: Path, data: ImageNet, labels: list[int], workers: int, progress: bool, kind: dict
) -> dict:
    split = data.split
    paths = [os.path.relpath(p, data.root) for p, _ in data.samples]
    index = list(zip(paths, (str(label) for label in labels)))
    manifest = fmt.require_manifest(cache)
    out = writer(cache, split, kind["images"], kind["quality"])
    if not fmt.index_path(cache, split).is_file():
        out.create(len(paths))
        fmt.save_npy(fmt.status_path(cache, split), np.zeros(len(paths), np.uint8))
        fmt.bad_path(cache, split).unlink(missing_ok=True)
        # written last: it marks the split as created
        fmt.write_tsv(fmt.index_path(cache, split), ("path", "label"), index)
    rows, status = fmt.read_split(cache, split, manifest)
    if rows != index:
        raise UsageError(
            f"{cache} already holds a {split} split made from a different list of files "
            f"(from {manifest['source']}): give that SRC, delete {cache / split}_* "
            f"or use a new CACHE folder"
        )
    out.resume(status)
    bad = _read_bad(fmt.bad_path(cache, split))
    for row in np.flatnonzero(status == fmt.BAD):
        bad.setdefault(paths[row], "unreadable (its reason was lost with the old list)")
    todo = np.flatnonzero(status == fmt.PENDING)
    tasks = [
        (out.target, str(data.root), [(int(r), paths[r]) for r in todo[i : i + CHUNK]])
        for i in range(0, len(todo), CHUNK)
    ]

    def checkpoint() -> None:
        out.checkpoint(status)  # rows reach the disk before they are marked done
        fmt.save_npy(fmt.status_path(cache, split), status)
        fmt.write_tsv(fmt.bad_path(cache, split), ("path", "reason"), sorted(bad.items()))

    pool = (
        multiprocessing.Pool(workers, initializer=ignore_interrupt)
        if workers > 1 and len(tasks) > 1
        else None
    )
    results = pool.imap_unordered(_decode_rows, tasks) if pool else map(_decode_rows, tasks)
    encoding = f" as JPEG quality {kind['quality']}" if isinstance(out, JpegWriter) else ""
    start = (
        f"decoding {len(todo)} of {len(paths)} images into {cache}{encoding} "
        f"{processes(workers if pool else 1)}"
        if len(todo)
        else f"all {len(paths)} images already in {cache}"
    )
    last, since = time.monotonic(), 0
    try:
        with Progress(
            split, len(paths), start, initial=len(paths) - len(todo), enabled=progress
        ) as bar:
            for outcome, sums in results:
                out.add(sums)
                for row, reason, payload in outcome:
                    out.accept(row, payload)
                    status[row] = fmt.DONE if reason is None else fmt.BAD
                    if reason is not None:
                        bad[paths[row]] = reason
                bar.update(len(outcome))
                since += len(outcome)
                if since >= CHECKPOINT_ROWS or time.monotonic() - last > CHECKPOINT_SECONDS:
                    checkpoint()
                    last, since = time.monotonic(), 0
    finally:
        if pool:
            pool.terminate()
        try:
            checkpoint()
        finally:
            out.close()
    return {
        "rows": len(paths),
        "done": int((status == fmt.DONE).sum()),
        "bad": int((status == fmt.BAD).sum()),
        "decoded_now": len(todo),
        "bad_files": sorted(bad.items()),
    }


def _read_bad(path: Path) -> dict[str, str]:
    """Reasons of the unreadable files; a damaged list is only a report: start it again."""
    try:
        return dict(fmt.read_tsv(path, ("path", "reason")))
    except (OSError, ValueError):
        return {}


def _decode_rows(task: Task) -> tuple[list[tuple[int, str | None, bytes | None]], PixelSums | None]:
    """Rows decoded into the memmap or encoded: (row, None, bytes or None), (row, reason, None)."""
    (kind, spec, want_sums), root, rows = task
    images = np.load(spec, mmap_mode="r+") if kind == packed.RAW else None
    outcome, decoded = [], []
    for row, path in rows:
        try:
            image = load_256(os.path.join(root, path))
        except BadImage as exc:
            outcome.append((row, str(exc), None))
            continue
        if images is not None:
            images[row] = image
            outcome.append((row, None, None))
        else:
            outcome.append((row, None, packed.encode(image, spec)))
        if want_sums:
            decoded.append(image)
    sums = None
    if want_sums:
        sums = PixelSums.zeros()
        if decoded:
            sums.add(np.stack(decoded))
    return outcome, sums
