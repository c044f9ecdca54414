"""Figures 3 and 4 of the paper from a checkpoint: conv1's kernels, top-5 labels, fc7 neighbours."""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import devices, options
from alexnet2012.config import default_workers
from alexnet2012.data import cache_info
from alexnet2012.errors import UsageError
from alexnet2012.evidence.figures import FILES, Source, make_figures
from alexnet2012.resume import class_mismatch, load_trained
from alexnet2012.runfolder import CHECKPOINT, RunFolder


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "run", help="a run folder (its checkpoint.pt), or a checkpoint (e.g. an imported one)"
    )
    p.add_argument(
        "--data", help="the prepared cache (default: the run's; needed for an imported checkpoint)"
    )
    p.add_argument(
        "--out", help="where the figures go (default: RUN/figures, or CHECKPOINT_figures)"
    )
    p.add_argument("--devices", help="cuda:0 | cpu (default: cuda:0 if available, else cpu)")
    p.add_argument(
        "--batch-size", type=int, default=128, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument("--workers", type=int, help="loader processes (default: 0 on CPU, else up to 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options.count("--batch-size", args.batch_size)
    options.workers(args.workers)
    device = devices.parse(args.devices)
    if len(device) != 1:
        raise UsageError("--devices: the figures need one device")
    run = Path(args.run)
    path = run if run.is_file() else run / CHECKPOINT
    if not path.is_file():
        raise UsageError(
            f"{path} does not exist: give a run folder that holds a checkpoint, or a checkpoint"
        )
    model, config, checkpoint = load_trained(str(path), (str(device[0]),))
    devices.configure_backends(config.devices, config.tf32)
    workers = args.workers if args.workers is not None else default_workers(config.devices)
    epochs, batch = checkpoint.get("epoch", 1) - 1, checkpoint.get("batch", 0)
    cache = args.data or config.cache
    if not cache:
        raise UsageError(f"{path} names no data: give a prepared cache with --data")
    mismatch = class_mismatch(checkpoint, cache_info(cache).wnids)
    if mismatch:
        raise UsageError(
            f"{cache} holds other classes than the run's network ({mismatch}): give the run's "
            "cache with --data"
        )
    imported = checkpoint.get("imported")
    if imported:
        done = f"imported from {imported['file']} ({imported['format']}), trained elsewhere"
    else:
        done = f"{epochs} of {config.epochs} epochs" + (f" and {batch} batches" if batch else "")
        done += last(str(run)) if run.is_dir() else ""
    source = Source(
        args.run, str(cache), config.test_split, config.input_size, done,
        checkpoint.get("mean_image"),
    )  # fmt: skip
    default = run / "figures" if run.is_dir() else run.with_name(run.stem + "_figures")
    out = Path(args.out) if args.out else default
    report = make_figures(
        model, source, out, batch_size=args.batch_size, workers=workers, progress=not args.quiet
    )
    print(f"wrote {', '.join(FILES)} to {out} (the numbers: {report})")


def last(run: str) -> str:
    """The validation errors of the run's last epoch, as metrics.jsonl records them."""
    lines = RunFolder(run).metric_lines()
    try:
        m = json.loads(lines[-1])
        top1, top5 = f"{m['val_top1']:.2%}", f"{m['val_top5']:.2%}"
        return f" (validation after epoch {m['epoch']}: top-1 error {top1}, top-5 {top5})"
    except (IndexError, ValueError, KeyError, TypeError):
        return ""
