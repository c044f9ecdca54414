#!/usr/bin/env python
"""The first minute on a GPU (versions, fused ops, a step per placement, a compiled step):
alexnet2012/cli/smoke.py."""

from alexnet2012.cli.smoke import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
