"""Write a small deterministic dataset of shapes in the ILSVRC-2012 layout, with its oddities."""

import argparse
from collections.abc import Sequence

from alexnet2012 import options
from alexnet2012.data import make_synthetic_imagenet
from alexnet2012.data.synthetic import MAX_CLASSES, PALETTES, SHAPES, TEXTURES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", metavar="OUT", help="new (or empty) output folder")
    p.add_argument(
        "--classes",
        type=int,
        default=10,
        help=f"number of classes, at most {MAX_CLASSES} ({len(SHAPES)} shapes x {len(PALETTES)} "
        f"colour schemes x {len(TEXTURES)} textures) (default: %(default)s)",
    )
    for split, default in (("train", 100), ("val", 20)):
        p.add_argument(
            f"--{split}-per-class",
            type=int,
            default=default,
            help=f"{split} images per class (default: %(default)s)",
        )
    p.add_argument(
        "--seed", type=int, default=0, help="same seed, same bytes (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="drawing processes, 0: in this process (default: one per CPU core)",
    )
    p.add_argument("--no-oddities", action="store_true", help="only normal RGB JPEGs")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (nor progress lines, in a log)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options.count("--classes", args.classes, maximum=MAX_CLASSES)
    options.count("--train-per-class", args.train_per_class)
    options.count("--val-per-class", args.val_per_class)
    options.seed(args.seed)
    options.workers(args.workers)
    make_synthetic_imagenet(
        args.out,
        classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        seed=args.seed,
        oddities=not args.no_oddities,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(
        f"wrote {args.classes} classes x "
        f"({args.train_per_class} train + {args.val_per_class} val) images "
        f"to {args.out}"
    )
