#!/usr/bin/env python
"""Decode an ILSVRC copy into the raw cache and compute the training-set statistics."""

from alexnet2012.cli.prepare_imagenet import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
