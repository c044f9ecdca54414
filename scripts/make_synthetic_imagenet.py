#!/usr/bin/env python
"""Write a small synthetic dataset in the real ILSVRC-2012 layout."""

from alexnet2012.cli.make_synthetic_imagenet import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
