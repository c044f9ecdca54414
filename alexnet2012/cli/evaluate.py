"""Top-1/top-5 error of a checkpoint on the validation set, from the centre crop or ten views."""

import argparse
from collections.abc import Sequence

from alexnet2012 import devices, options
from alexnet2012.config import default_workers
from alexnet2012.data import cache_info, eval_loader
from alexnet2012.errors import UsageError
from alexnet2012.evaluate import evaluate
from alexnet2012.resume import class_mismatch, load_trained_model
from alexnet2012.sources import resolve_cache


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt")
    p.add_argument(
        "--data",
        required=True,
        help="a prepared cache, or the ImageNet root (then "
        "prepared first, to --cache, training split included: it gives the mean image)",
    )
    p.add_argument("--cache", help="where the prepared cache goes (default: DATA_cache)")
    p.add_argument("--year", type=int, choices=(2012, 2010), default=2012)
    p.add_argument("--views", type=int, choices=(1, 10), default=10)
    p.add_argument("--devices", help="e.g. cuda:0,cuda:1 | cuda:0 | cpu (default: the run's)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="crops per forward pass: with "
        "--views 10 a batch holds batch_size // 10 images (at least 1), ten crops each",
    )
    p.add_argument("--workers", type=int, help="loader processes (default: 0 on CPU, else up to 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    options.count("--batch-size", args.batch_size)
    options.workers(args.workers)
    names = None if args.devices is None else devices.parse(args.devices)
    model, config, checkpoint = load_trained_model(args.checkpoint, names)
    devices.configure_backends(config.devices, config.tf32)
    workers = args.workers if args.workers is not None else default_workers(config.devices)
    cache, dataset, split = resolve_cache(args.data, args.cache, args.year, workers, not args.quiet)
    mismatch = class_mismatch(checkpoint, cache_info(cache).wnids)
    if mismatch:
        raise UsageError(
            f"checkpoint {args.checkpoint} was trained on other classes than the "
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
    )
    r = evaluate(model, batches, progress=not args.quiet, desc=f"{args.views}-view eval")
    print(
        f"{dataset}, {args.views} view{'s' if args.views > 1 else ''}, {r['images']} images: "
        f"top-1 error {100 * r['top1']:.2f}%, top-5 error {100 * r['top5']:.2f}%"
    )
