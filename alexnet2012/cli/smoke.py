"""The first minute on a GPU: fused ops against their references, steps; JSON after each check."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import devices, options
from alexnet2012.bench.smoke import run
from alexnet2012.errors import check_writable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json", type=Path, help="where the results go (rewritten after each check)")
    p.add_argument("--devices", help="one device (default: cuda:0 if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled step (default: inductor)",
    )
    p.add_argument("--quiet", action="store_true", help="no line per check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    (device,) = devices.parse(args.devices, columns=1)
    batch = options.count("--batch-size", args.batch_size)
    check_writable(args.json, "json")
    results = run(
        args.json,
        device,
        batch,
        args.compile_backend,
        log=(lambda s: None) if args.quiet else print,
    )
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("ok") is False]
    print(f"smoke: {len(failed)} of the checks failed{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0
