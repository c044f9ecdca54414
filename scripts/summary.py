#!/usr/bin/env python
"""Print the network's layer table next to the paper's figures."""

from alexnet2012.cli.summary import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
