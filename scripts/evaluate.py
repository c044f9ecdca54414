#!/usr/bin/env python
"""Top-1/top-5 error of a checkpoint on the validation set, from the centre crop or ten views."""
import argparse

from alexnet2012.data import eval_loader
from alexnet2012.errors import run_cli
from alexnet2012.evaluate import evaluate
from alexnet2012.replicate import default_workers, parse_devices, resolve_cache
from alexnet2012.train import load_trained_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt")
    p.add_argument("--data", required=True, help="ImageNet root or a prepared cache")
    p.add_argument("--cache", help="where the prepared cache goes (default: DATA_cache)")
    p.add_argument("--year", type=int, choices=(2012, 2010), default=2012)
    p.add_argument("--views", type=int, choices=(1, 10), default=10)
    p.add_argument("--devices", help="e.g. cuda:0,cuda:1 | cuda:0 | cpu (default: the run's)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--workers", type=int, help="loader processes (default: 0 on CPU, else up to 8)")
    args = p.parse_args()
    model, config = load_trained_model(args.checkpoint, parse_devices(args.devices))
    workers = args.workers if args.workers is not None else default_workers(config.devices)
    cache, dataset, split = resolve_cache(args, workers, progress=True)
    batches = eval_loader(cache, split, batch_size=max(1, args.batch_size // args.views),
                          crop=config.input_size,
                          views=args.views, workers=workers, device=config.devices[0])
    r = evaluate(model, batches, progress=True, desc=f"{args.views}-view eval")
    print(f"{dataset}, {args.views} view{'s' if args.views > 1 else ''}, {r['images']} images: "
          f"top-1 error {100 * r['top1']:.2f}%, top-5 error {100 * r['top5']:.2f}%")


if __name__ == "__main__":
    run_cli(main)
