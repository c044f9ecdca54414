#!/usr/bin/env python
"""Training and inference images/s of AlexNet (one device, two-device path, columns=1) next to
torchvision's alexnet on the same device and batch, with the projected 90-epoch time.

With --data CACHE, one more row adds the real train loader (end to end, data included).
With --cost, a second table: one training step of each model counted on the meta device (no GPU
needed) and its time projected on an H100 and an H200 from datasheet figures (an estimate);
--cost-only prints that table without timing anything."""

import argparse
import json
from pathlib import Path

from alexnet2012 import paper
from alexnet2012.benchmark import (
    DEFAULT_SCHEDULE,
    Settings,
    code_version,
    default_schedule,
    format_table,
    parse_devices,
    run_benchmark,
    versions,
)
from alexnet2012.cost import cost_report, format_cost_table
from alexnet2012.errors import UsageError, check_writable, run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--devices",
        help="comma list, e.g. cuda:0 or cuda:0,cuda:1; the "
        "two-device row uses both, or the first twice (default: cuda:0 if "
        "available, else cpu)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=paper.BATCH_SIZE,
        help=f"images per step (default {paper.BATCH_SIZE}, the paper's)",
    )
    for i, (name, what) in enumerate(
        [
            ("--steps", "timed steps per model per round"),
            ("--warmup", "untimed steps per model before the rounds"),
            ("--repeats", "rounds; rates are the median over them"),
        ]
    ):
        parser.add_argument(
            name,
            type=int,
            help=f"{what} (default: {DEFAULT_SCHEDULE['cpu'][i]} "
            f"on CPU, {DEFAULT_SCHEDULE['cuda'][i]} on CUDA)",
        )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add torch.compile'd twins of the one-device AlexNet and torchvision rows",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--data",
        metavar="CACHE_DIR",
        help="add the end-to-end row: the "
        "one-device AlexNet trained on this data cache's train loader",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="loader workers for --data (default 4)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="OUT",
        help="write the report here (a file already there is replaced)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="after the timed table, the cost "
        "of one fp32 training step of each model, counted on the meta device "
        "(memory-bound ops, the bytes they move, FLOPs; seconds, no GPU needed) "
        "with its ratios to torchvision's, and the step's time projected on an "
        "H100 SXM and an H200 SXM from datasheet figures (an estimate, not a "
        "measurement); the JSON gets it as 'cost'",
    )
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="the --cost table alone, "
        "nothing timed (the CPU timing at batch 128 takes many minutes); takes "
        "--batch-size, --json, and none of the timing options",
    )
    args = parser.parse_args()

    if (args.cost_only or args.cost) and args.bf16:
        raise UsageError("--cost counts the fp32 step: drop --bf16 or --cost")
    if args.cost_only:
        timing = [
            name
            for name, given in (
                ("--devices", args.devices),
                ("--steps", args.steps),
                ("--warmup", args.warmup),
                ("--repeats", args.repeats),
                ("--compile", args.compile),
                ("--data", args.data),
            )
            if given not in (None, False)
        ]
        if timing:
            raise UsageError(
                f"--cost-only times nothing: {', '.join(timing)} would not apply "
                f"(use --cost to time as well)"
            )
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.json is not None:
            check_writable(args.json)
        cost = cost_report(args.batch_size)
        print(format_cost_table(cost))
        if args.json is not None:
            args.json.write_text(
                json.dumps({"cost": cost, "code": code_version(), "versions": versions()}, indent=2)
                + "\n"
            )
            print(f"wrote {args.json}")
        return

    devices = parse_devices(args.devices)
    steps, warmup, repeats = default_schedule(devices[0])
    settings = Settings(
        devices=devices,
        batch_size=args.batch_size,
        steps=steps if args.steps is None else args.steps,
        warmup=warmup if args.warmup is None else args.warmup,
        repeats=repeats if args.repeats is None else args.repeats,
        compile=args.compile,
        bf16=args.bf16,
        data=args.data,
        workers=args.workers,
    )
    for name in ("batch_size", "steps", "repeats"):
        if getattr(settings, name) < 1:
            raise UsageError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(settings, name)}"
            )
    if settings.warmup < 0 or settings.workers < 0:
        raise UsageError("--warmup and --workers must be at least 0")
    if args.json is not None:
        check_writable(args.json)  # now, not after the whole run

    report = run_benchmark(settings, progress=not args.quiet)
    print(format_table(report))
    if args.cost:
        report["cost"] = cost_report(settings.batch_size)
        print()
        print(format_cost_table(report["cost"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_cli(main)
