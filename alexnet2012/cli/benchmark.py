"""Training and inference images/s of AlexNet (one device, two-device path, columns=1) next to
torchvision's alexnet on the same device and batch, with the projected 90-epoch time; --data CACHE
adds the real train loader's row. --cost adds one training step of each model counted on the meta
device and its time projected on an H100 and an H200 (an estimate); --cost-only times nothing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import devices, distributed, options, paper
from alexnet2012.bench.cost_report import cost_report
from alexnet2012.bench.tables import cost_table, training_table
from alexnet2012.bench.training import (
    DEFAULT_SCHEDULE,
    Settings,
    default_schedule,
    measure_replicas,
    measure_training,
)
from alexnet2012.bench.training_report import code_version
from alexnet2012.config import TrainConfig
from alexnet2012.errors import UsageError, check_writable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--devices",
        help="comma list, e.g. cuda:0 or cuda:0,cuda:1; the "
        "two-device row uses both, or the first twice (default: cuda:0 if "
        "available, else cpu)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=paper.BATCH_SIZE,
        help=f"images per step (default: {paper.BATCH_SIZE}, the paper's)",
    )
    for i, (name, what) in enumerate(
        [
            ("--steps", "timed steps per model per round"),
            ("--warmup", "untimed steps per model before the rounds"),
            ("--repeats", "rounds; rates are the median over them"),
        ]
    ):
        p.add_argument(
            name,
            type=int,
            help=f"{what} (default: {DEFAULT_SCHEDULE['cpu'][i]} "
            f"on CPU, {DEFAULT_SCHEDULE['cuda'][i]} on CUDA)",
        )
    p.add_argument(
        "--compile",
        action="store_true",
        help="add torch.compile'd twins of the one-device AlexNet and torchvision rows",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument(
        "--data",
        metavar="CACHE",
        help="a data cache: add the end-to-end row, the one-device AlexNet trained on its "
        "train loader (default: none)",
    )
    p.add_argument("--workers", type=int, default=4, help="loader workers for --data (default: 4)")
    p.add_argument(
        "--json",
        type=Path,
        metavar="OUT",
        help="write the report here, replacing a file already there (default: none)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--cost",
        action="store_true",
        help="after the timed table, the cost "
        "of one fp32 training step of each model, counted on the meta device "
        "(memory-bound ops, the bytes they move, FLOPs; seconds, no GPU needed) "
        "with its ratios to torchvision's, and the step's time projected on an "
        "H100 SXM and an H200 SXM from datasheet figures (an estimate, not a "
        "measurement); the JSON gets it as 'cost'",
    )
    p.add_argument(
        "--cost-only",
        action="store_true",
        help="the --cost table alone, "
        "nothing timed (the CPU timing at batch 128 takes many minutes); takes "
        "--batch-size, --json, and none of the timing options",
    )
    return p


def _write(path: Path | None, report: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


def _cost_only(args: argparse.Namespace) -> None:
    timing = ("--devices", "--steps", "--warmup", "--repeats", "--compile", "--data")
    timing = [name for name in timing if getattr(args, name[2:]) not in (None, False)]
    if timing:
        raise UsageError(
            f"--cost-only times nothing: {', '.join(timing)} would not apply "
            f"(use --cost to time as well)"
        )
    options.count("--batch-size", args.batch_size)
    if args.json is not None:
        check_writable(args.json)
    cost = cost_report(args.batch_size)
    print(cost_table(cost))
    _write(args.json, {"cost": cost, "code": code_version(), "versions": devices.versions()})


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if (args.cost_only or args.cost) and args.bf16:
        raise UsageError("--cost counts the fp32 step: drop --bf16 or --cost")
    if args.cost_only:
        return _cost_only(args)
    if distributed.environment().size > 1:
        return _replicas(args)

    devs = devices.parse(args.devices)
    steps, warmup, repeats = default_schedule(devs[0])
    settings = Settings(
        devices=devs,
        batch_size=options.count("--batch-size", args.batch_size),
        steps=options.count("--steps", steps if args.steps is None else args.steps),
        warmup=options.count("--warmup", warmup if args.warmup is None else args.warmup, 0),
        repeats=options.count("--repeats", repeats if args.repeats is None else args.repeats),
        compile=args.compile,
        bf16=args.bf16,
        data=args.data,
        workers=options.workers(args.workers),
    )
    if args.json is not None:
        check_writable(args.json)  # now, not after the whole run
    report = measure_training(settings, progress=not args.quiet)
    print(training_table(report))
    if args.cost:
        report["cost"] = cost_report(settings.batch_size)
        print()
        print(cost_table(report["cost"]))
    _write(args.json, report)


def _replicas(args: argparse.Namespace) -> None:
    """Under torchrun: the whole job's training images/s and its scaling over one replica."""
    world = distributed.environment()
    names = distributed.replica_devices(args.devices, world, 1)
    names = names or tuple(str(d) for d in devices.parse(None))
    TrainConfig("", "", devices=names, batch_size=args.batch_size, replicas=world.size).check()
    steps, warmup, repeats = default_schedule(devices.parse(names)[0])
    steps = options.count("--steps", steps if args.steps is None else args.steps)
    warmup = options.count("--warmup", warmup if args.warmup is None else args.warmup, 0)
    repeats = options.count("--repeats", repeats if args.repeats is None else args.repeats)
    if args.json is not None and world.main:
        check_writable(args.json)
    report = measure_replicas(names, args.batch_size, paper.CROP_SIZE, steps, warmup, repeats)
    distributed.finish()
    if world.main:
        print(
            f"{report['replicas']} replicas x {report['per_replica']} images: "
            f"{report['job_images_per_s']:.2f} img/s for the job; one replica with the "
            f"{report['batch_size']}: {report['one_replica_images_per_s']:.2f} img/s; "
            f"speedup {report['speedup']:.2f}x, scaling efficiency "
            f"{100 * report['scaling_efficiency']:.0f}%"
        )
        _write(args.json, {**report, "code": code_version(), "versions": devices.versions()})
