"""Images/s per data stage (decode, augment, end-to-end training loader) and per CPU core, for the
raw and the JPEG cache side by side and torchvision's ImageFolder path on the same images; prints
a table and optionally writes JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import devices, options, paper
from alexnet2012.bench.data import measure_data_pipeline
from alexnet2012.bench.tables import data_pipeline_table
from alexnet2012.data.packed import DEFAULT_QUALITY, FORMATS
from alexnet2012.errors import UsageError, check_writable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--data", required=True, help="a cache (raw or jpeg) made by scripts/prepare_imagenet.py"
    )
    p.add_argument(
        "--jpeg-cache",
        help="a JPEG cache of the same images, when --data is raw (default: one is prepared from "
        "the source in a temporary folder, which on ImageNet takes hours)",
    )
    p.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        help="the cache formats to measure (default: both)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=DEFAULT_QUALITY,
        help="JPEG quality of a cache prepared for the comparison (default: %(default)s)",
    )
    p.add_argument(
        "--src",
        help="its source images, for the decode stage (default: where the cache was made from)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="loader workers for the end-to-end stages, which are also timed with 0 (default: "
        "one per CPU core this process may use)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=paper.CROP_SIZE,
        help="crop size (default: %(default)s, the paper's; 227: Caffe's)",
    )
    p.add_argument(
        "--devices",
        default="cpu",
        help="cuda:0 | cpu, where the augment and end-to-end stages run (default: %(default)s)",
    )
    for name, default, what in (
        ("--batch-size", paper.BATCH_SIZE, "images per batch"),
        ("--batches", 30, "batches timed per stage"),
        ("--decode-images", 200, "source images decoded in the decode stage"),
        ("--threads", 1, "torch threads of the main process"),
    ):
        p.add_argument(name, type=int, default=default, help=f"{what} (default: %(default)s)")
    p.add_argument(
        "--no-torchvision",
        action="store_true",
        help="skip torchvision's ImageFolder + DataLoader path",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report here (default: none)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.json is not None:
        check_writable(args.json)  # before the measurements, which take a while
    for option in ("--batch-size", "--batches", "--decode-images", "--threads"):
        options.count(option, getattr(args, option[2:].replace("-", "_")))
    options.count("--quality", args.quality, 1, 100)
    device, *more = devices.parse(args.devices)
    if more:
        raise UsageError(f"--devices: the data stages run on one device, got {1 + len(more)}")
    report = measure_data_pipeline(
        args.data,
        src=args.src,
        jpeg_cache=args.jpeg_cache,
        formats=tuple(dict.fromkeys(args.formats)),
        quality=args.quality,
        batch_size=args.batch_size,
        workers=options.workers(args.workers),
        input_size=options.input_size(args.input_size),
        batches=args.batches,
        decode_images=args.decode_images,
        device=device,
        threads=args.threads,
        torchvision=not args.no_torchvision,
    )
    print(data_pipeline_table(report))
    if args.json:
        try:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write --json {args.json} ({exc.strerror})") from None
