#!/usr/bin/env python
"""Import the BVLC AlexNet (.caffemodel or .onnx) into a checkpoint of this package."""

from alexnet2012.cli.import_weights import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
