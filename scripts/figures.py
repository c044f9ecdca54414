#!/usr/bin/env python
"""Figures 3 and 4 of the paper from a run's checkpoint (PNGs and figures.md)."""

from alexnet2012.cli.figures import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
