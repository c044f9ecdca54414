#!/usr/bin/env python
"""Images/s per data stage and per CPU core: alexnet2012/cli/benchmark_data.py."""

from alexnet2012.cli.benchmark_data import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
