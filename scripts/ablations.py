#!/usr/bin/env python
"""The paper's ablations: the baseline and one run per ablation, then ablations.md."""

from alexnet2012.cli.ablations import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
