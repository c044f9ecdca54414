"""Top-1/top-5 error of a checkpoint on the validation set, from the centre crop or ten views;
of several checkpoints, each one's and their ensemble's (the mean of their softmax outputs, as
P Table 2 averages 5 CNNs)."""

import argparse
import gc
from collections.abc import Sequence

import torch

from alexnet2012 import devices, options, paper
from alexnet2012.config import default_workers
from alexnet2012.data import cache_info, eval_loader
from alexnet2012.errors import UsageError
from alexnet2012.evaluate import errors, predictions
from alexnet2012.resume import class_mismatch, load_trained
from alexnet2012.sources import resolve_cache


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="a run folder, its checkpoint.pt, or an imported one (import_weights.py); several: "
        "each is evaluated with its own crop size and mean, then their ensemble",
    )
    p.add_argument(
        "--data",
        required=True,
        help="a prepared cache, or the ImageNet root (then "
        "prepared first, to --cache, training split included: it gives the mean image)",
    )
    p.add_argument("--cache", help="where the prepared cache goes (default: DATA_cache)")
    p.add_argument(
        "--year",
        type=int,
        choices=(2012, 2010),
        default=2012,
        help="ILSVRC year of --data (default: 2012)",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=(1, 10),
        default=10,
        help="1: the centre crop; 10: the paper's ten views (default: 10)",
    )
    p.add_argument("--devices", help="e.g. cuda:0,cuda:1 | cuda:0 | cpu (default: the run's)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="crops per forward pass: with "
        "--views 10 a batch holds batch_size // 10 images (at least 1), ten crops each "
        "(default: %(default)s)",
    )
    p.add_argument("--workers", type=int, help="loader processes (default: 0 on CPU, else up to 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options.count("--batch-size", args.batch_size)
    options.workers(args.workers)
    names = None if args.devices is None else devices.parse(args.devices)
    views = f"{args.views} view{'s' if args.views > 1 else ''}"
    total, labels, cache = None, None, None
    for path in args.checkpoint:  # one network on the device at a time
        model, config, checkpoint = load_trained(path, names)
        devices.configure_backends(config.devices, config.tf32)
        workers = args.workers if args.workers is not None else default_workers(config.devices)
        if cache is None:  # once, prepared by the first network's workers if need be
            cache, dataset, split = resolve_cache(
                args.data, args.cache, args.year, workers, not args.quiet
            )
            wnids = cache_info(cache).wnids
        mismatch = class_mismatch(checkpoint, wnids)
        if mismatch:
            raise UsageError(
                f"checkpoint {path} was trained on other classes than the "
                f"data {cache} holds ({mismatch}): evaluate it on the data it was "
                "trained on"
            )
        batches = eval_loader(
            cache,
            split,
            batch_size=max(1, args.batch_size // args.views),
            crop=config.input_size,
            views=args.views,
            workers=workers,
            device=config.devices[0],
            mean_image=checkpoint.get("mean_image"),
        )
        probs, y = predictions(model, batches, progress=not args.quiet, desc=f"{views} eval")
        if labels is not None and not torch.equal(labels, y):
            raise UsageError(f"{path} was evaluated on other images than {args.checkpoint[0]}")
        total, labels = (probs if total is None else total + probs), y
        r, who = errors(probs, y), f"{path}: " if len(args.checkpoint) > 1 else ""
        print(f"{who}{dataset}, {views}, {r['images']} images: {_errors_text(r)}", flush=True)
        del model, batches, probs
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if len(args.checkpoint) > 1:
        r = errors(total / len(args.checkpoint), labels)
        print(f"ensemble of {len(args.checkpoint)} (mean softmax): {_errors_text(r)}")
        for row in (paper.result_for("ILSVRC-2012 val"), paper.ENSEMBLE_RESULT):
            print(f"  paper, {row.dataset}, {row.note}: top-1 {row.top1}%, top-5 {row.top5}%")


def _errors_text(r: dict) -> str:
    top1, top5 = f"{100 * r['top1']:.2f}%", f"{100 * r['top5']:.2f}%"
    return f"top-1 error {top1}, top-5 error {top5} (loss {r['loss']:.4f})"
