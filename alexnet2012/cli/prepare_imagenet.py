"""The paper's preprocessing, once: decode every image of an ILSVRC copy or an ImageFolder (SRC)
to 256x256 into a raw cache (CACHE) and compute the training-set statistics. Re-run to resume
after an interruption."""

import argparse
from collections.abc import Sequence

from alexnet2012 import options
from alexnet2012.data import prepare_cache
from alexnet2012.data.imagenet import SPLITS
from alexnet2012.data.packed import DEFAULT_QUALITY, FORMATS
from alexnet2012.data.subset import Subset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "src",
        metavar="SRC",
        help="ImageNet root: train/<wnid>/*.JPEG, val/ (and the devkit beside them); or an "
        "ImageFolder: train/<class>/, val/<class>/",
    )
    p.add_argument(
        "cache", metavar="CACHE", help="output folder (about 262 GB for ILSVRC-2012 train + val)"
    )
    p.add_argument(
        "--splits",
        nargs="+",
        choices=SPLITS,
        default=["train", "val"],
        help="the splits to prepare (default: train val)",
    )
    p.add_argument(
        "--year", type=int, choices=(2012, 2010), default=2012, help="ILSVRC year (default: 2012)"
    )
    p.add_argument("--devkit", help="the ILSVRC devkit folder or .tar.gz (default: found in SRC)")
    p.add_argument(
        "--workers",
        type=int,
        help="decoding processes, 0: in this process (default: one per CPU core)",
    )
    p.add_argument(
        "--subset",
        metavar="CLASSES[:TRAIN_PER_CLASS]",
        help="prepare only a fixed, seeded choice of classes (and of training images per class); "
        "validation keeps all images of those classes (default: all)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=FORMATS[0],
        help="raw: uint8 rows, fastest to read; jpeg: the same rows re-encoded as JPEG in one "
        "packed file per split, a fraction of the disk, not quite the paper's pixels "
        "(default: raw)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=DEFAULT_QUALITY,
        help="JPEG quality of --format jpeg, 1 to 100 (default: %(default)s)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (nor progress lines, in a log)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options.workers(args.workers)
    options.count("--quality", args.quality, 1, 100)
    spec = options.subset(args.subset)

    summary = prepare_cache(
        args.src,
        args.cache,
        splits=tuple(args.splits),
        workers=args.workers,
        year=args.year,
        devkit=args.devkit,
        subset=None if spec is None else Subset(*spec),
        progress=not args.quiet,
        format=args.format,
        quality=args.quality,
    )
    for split in args.splits:
        s = summary[split]
        print(
            f"{split}: {s['done']} of {s['rows']} images usable, {s['bad']} unreadable "
            f"({s['decoded_now']} decoded in this run)"
        )
        for path, reason in s["bad_files"]:
            print(f"  skipped {path}: {reason}")
        if s["bad"]:
            print(f"  (listed in {args.cache}/{split}_bad.tsv)")
    if "stats" in summary:
        print(f"training-set statistics: {summary['stats']}")
