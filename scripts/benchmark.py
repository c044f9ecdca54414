#!/usr/bin/env python
"""Training and inference images/s against torchvision's alexnet: alexnet2012/cli/benchmark.py."""

from alexnet2012.cli.benchmark import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
