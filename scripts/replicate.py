#!/usr/bin/env python
"""Train the 2012 AlexNet the paper's way and report its error next to the paper's.

Without --data: the built-in demo on a generated synthetic set. See --help.
"""

from alexnet2012.cli.replicate import main
from alexnet2012.errors import run_cli

if __name__ == "__main__":
    run_cli(
        main,
        oom_hint="use a smaller --batch-size, or --accumulate K (the same update, "
        "computed in K chunks of the batch)",
    )
