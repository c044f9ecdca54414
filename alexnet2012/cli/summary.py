"""Print the network's layer table next to the paper's figures, and its recipe."""

import argparse
from collections.abc import Sequence

from alexnet2012 import options, paper
from alexnet2012.model import AlexNet
from alexnet2012.summary import format_table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--input-size",
        type=int,
        default=paper.CROP_SIZE,
        help=f"crop size; 227: Caffe's (default: {paper.CROP_SIZE}, the paper's)",
    )
    p.add_argument(
        "--columns",
        type=int,
        choices=(1, 2),
        default=paper.COLUMNS,
        help="2: the paper's net; 1: its one-column comparison, P §3.2 (default: 2)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=paper.NUM_CLASSES,
        help="classes of the last layer (default: %(default)s)",
    )
    p.add_argument(
        "--recipe",
        choices=tuple(paper.RECIPES),
        default="paper",
        help="paper: the paper's net; 2012-code: the original code's layers-145; caffe: BVLC's "
        "bvlc_alexnet (default: paper)",
    )
    p.add_argument(
        "--checkpoint",
        help="the network of a run folder or checkpoint, a run's or an imported one, instead "
        "(default: none)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.checkpoint:
        from alexnet2012.resume import load_trained

        print(format_table(load_trained(args.checkpoint, ("cpu",))[0]))
        return
    options.input_size(args.input_size)
    options.count("--num-classes", args.num_classes)
    model = AlexNet(
        args.num_classes, input_size=args.input_size, columns=args.columns, recipe=args.recipe
    )
    print(format_table(model))
