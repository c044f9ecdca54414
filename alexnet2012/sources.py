"""Where a run's data comes from: a cache, an ImageNet root (prepared once), or the demo's set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from alexnet2012 import paper
from alexnet2012.data import cache_info, make_synthetic_imagenet, prepare_cache
from alexnet2012.data.subset import Subset
from alexnet2012.errors import UsageError, foreign_files

# The demo, sized to finish in minutes on 2 CPU cores. One fixed lr drop replaces the plateau
# rule, which needs more epochs than the demo has to tell progress from noise.
DEMO = dict(
    classes=10, train_per_class=60, val_per_class=20, batch_size=32, epochs=8, lr_drops=(5,)
)
DEMO_DATA = Path("experiments/demo_data")  # relative to the working directory
WNID = re.compile(r"n\d{8}")
DEMO_FILES = ("images", "cache", "spec.json")  # all that the demo puts in DEMO_DATA


def default_cache(root: Path, subset: Subset | None = None) -> Path:
    """``root``'s cache without ``--cache``: ``ROOT_cache`` or ``ROOT_cache_subsetCxN``."""
    suffix = "" if subset is None else "_subset" + subset.text.replace(":", "x")
    return root.with_name(root.name + "_cache" + suffix)


def resolve_cache(
    data: str,
    cache: str | None,
    year: int,
    workers: int,
    progress: bool,
    subset: tuple[int, int | None] | None = None,
) -> tuple[str, str, str]:
    """The cache for ``--data`` (prepared if missing), the test set's name and its split."""
    data = Path(data).resolve()
    if data.is_file():
        raise UsageError(
            f"--data {data} is a file: give the ImageNet root folder (train/ and "
            "val/) or a cache folder made by scripts/prepare_imagenet.py"
        )
    if not data.is_dir():
        raise UsageError(
            f"--data {data}: no such directory (give the ImageNet root with train/ "
            "and val/, or a cache made by scripts/prepare_imagenet.py)"
        )
    chosen = None if subset is None else Subset(*subset)
    if (data / "stats.json").exists():
        cache = data
        held = cache_info(cache).subset
        if chosen is not None and held != chosen.as_dict():
            have = f"the subset {Subset.from_dict(held).text}" if held else "all its classes"
            raise UsageError(
                f"--subset {chosen.text}: the cache {cache} holds {have}; prepare the subset "
                "from the ImageNet root (give it as --data), or drop --subset"
            )
    else:
        cache = Path(cache) if cache else default_cache(data, chosen)
        splits = ("train", "val", "test") if year == 2010 else ("train", "val")
        prepare_cache(
            data, cache, splits=splits, workers=workers, year=year, progress=progress, subset=chosen
        )
    info = cache_info(cache)
    full = all(WNID.fullmatch(w) for w in info.wnids) and info.num_classes == paper.NUM_CLASSES
    if not full and info.subset is None:
        name = Path(info.source).name or data.name  # the images' folder, not the cache's
        return str(cache), f"{name} ({info.num_classes} classes)", "val"
    split = "test" if info.year == 2010 else "val"
    if split == "test" and "test" not in info.split_sizes:
        raise UsageError(
            f"{cache} has no prepared ILSVRC-2010 test split (the paper's "
            "Table 1): prepare it with --splits train val test --year 2010"
        )
    if info.subset is not None:
        name = Subset.from_dict(info.subset).name
        return str(cache), f"ILSVRC-{info.year} {split}, subset of {name}", split
    return str(cache), f"ILSVRC-{info.year} {split}", split


def demo_cache(workers: int, progress: bool) -> str:
    """Generate (once) and prepare (once) the demo's synthetic set; returns the cache."""
    images, cache = DEMO_DATA / "images", DEMO_DATA / "cache"
    spec = {k: DEMO[k] for k in ("classes", "train_per_class", "val_per_class")}
    marker = DEMO_DATA / "spec.json"
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != spec:
        check_demo_folder()
        shutil.rmtree(DEMO_DATA, ignore_errors=True)  # a partial or older demo set
        print(
            f"demo: generating a synthetic ImageNet-layout set in {images} "
            f"({spec['classes']} classes, {spec['train_per_class']} train and "
            f"{spec['val_per_class']} val images per class)"
        )
        make_synthetic_imagenet(images, **spec, seed=0)
        marker.write_text(json.dumps(spec))
    prepare_cache(images, cache, workers=workers, progress=progress)
    return str(cache)


def check_demo_folder() -> None:
    """Refuse to replace a DEMO_DATA folder that holds anything the demo did not make."""
    if DEMO_DATA.exists() and not DEMO_DATA.is_dir():
        raise UsageError(
            f"{DEMO_DATA.resolve()} is a file; the demo keeps its data there: move "
            "it, or run the demo from another folder"
        )
    others = foreign_files(DEMO_DATA, DEMO_FILES)
    if others:
        raise UsageError(
            f"{DEMO_DATA.resolve()} holds files the demo did not make ({others}); "
            "the demo would replace the folder: move them, or run the demo from "
            "another folder"
        )
