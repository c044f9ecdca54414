#!/usr/bin/env python
"""Top-1/top-5 error of a checkpoint on the validation set, from the centre crop or ten views."""

from alexnet2012.cli.evaluate import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
