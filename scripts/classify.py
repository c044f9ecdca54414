#!/usr/bin/env python
"""The five most probable classes of images, from a checkpoint alone."""

from alexnet2012.cli.classify import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
