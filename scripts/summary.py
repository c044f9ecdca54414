#!/usr/bin/env python
"""Print the network's layer table next to the paper's figures."""

import argparse

from alexnet2012 import AlexNet, paper
from alexnet2012.errors import UsageError, run_cli
from alexnet2012.summary import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--input-size", type=int, choices=paper.INPUT_SIZES, default=paper.CROP_SIZE
    )
    parser.add_argument("--columns", type=int, choices=(1, 2), default=2)
    parser.add_argument("--num-classes", type=int, default=paper.NUM_CLASSES)
    args = parser.parse_args()
    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {args.num_classes}")
    print(format_table(AlexNet(args.num_classes, input_size=args.input_size, columns=args.columns)))


if __name__ == "__main__":
    run_cli(main)
