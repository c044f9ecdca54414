#!/usr/bin/env python
"""Images/s per data stage (decode from JPEG, read and augment from the cache, end-to-end training
loader) and per CPU core, on a prepared cache; prints a table and optionally writes JSON."""

import argparse
import json
from pathlib import Path

from alexnet2012.data.benchmark import format_table, run_benchmark
from alexnet2012.errors import UsageError, check_writable, run_cli


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", required=True, help="a cache made by scripts/prepare_imagenet.py")
    p.add_argument(
        "--src",
        help="its source images, for the decode stage (default: where the cache was made from)",
    )
    p.add_argument(
        "--batch-size", type=int, default=128, help="images per batch (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="loader workers for the end-to-end stage, which is also timed with 0 (default: one "
        "per CPU core this process may use)",
    )
    p.add_argument(
        "--crop", type=int, default=224, choices=(224, 227), help="crop size (default: %(default)s)"
    )
    p.add_argument(
        "--batches", type=int, default=30, help="batches timed per stage (default: %(default)s)"
    )
    p.add_argument(
        "--decode-images",
        type=int,
        default=200,
        help="source images decoded in the decode stage (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda[:N] (the augment and end-to-end stages)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report here")
    args = p.parse_args()
    if args.json is not None:
        check_writable(args.json)  # before the measurements, which take a while
    report = run_benchmark(
        args.cache,
        src=args.src,
        batch_size=args.batch_size,
        workers=args.workers,
        crop=args.crop,
        batches=args.batches,
        decode_images=args.decode_images,
        device=args.device,
        threads=args.threads,
    )
    print(format_table(report))
    if args.json:
        try:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write --json {args.json} ({exc.strerror})") from None


if __name__ == "__main__":
    run_cli(main)
