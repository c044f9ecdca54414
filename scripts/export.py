#!/usr/bin/env python
"""Export a checkpoint's network as ONNX and as a torch.export program."""

from alexnet2012.cli.export import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
