"""``scripts/replicate.py``: the whole replication in one command, or the built-in demo.

With ``--data`` it prepares the ImageNet cache when it is missing (and reuses it when present),
trains on the paper's schedule, evaluates with the ten views and writes the report. Without
``--data`` it runs the demo: a small synthetic ImageNet-layout set, generated, prepared,
trained on and evaluated end to end on whatever the machine has.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from alexnet2012 import devices, distributed, options, paper, preempt
from alexnet2012.config import TrainConfig, default_workers, deviations
from alexnet2012.continuing import (
    check_resume,
    continues,
    given_options,
    resume_cache,
    stopped,
)
from alexnet2012.data import cache_info
from alexnet2012.errors import SaveError, UsageError
from alexnet2012.report import format_comparison, write_report
from alexnet2012.runfolder import CHECKPOINT, RunFolder
from alexnet2012.sources import DEMO, demo_cache, resolve_cache
from alexnet2012.train import Trainer

__all__ = ["build_parser", "config_from_args", "main", "resume_cache"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train and evaluate the 2012 AlexNet the paper's way "
        "and compare with the paper. Without --data: the synthetic demo."
    )
    p.add_argument("--data", help="ImageNet root or prepared cache (default: the synthetic demo)")
    p.add_argument(
        "--cache", help="where the prepared cache goes (default: DATA_cache beside DATA)"
    )
    p.add_argument(
        "--year",
        type=int,
        choices=(2012, 2010),
        default=2012,
        help="ILSVRC year of --data; 2010: the paper's Table 1 (default: 2012)",
    )
    p.add_argument(
        "--subset",
        metavar="CLASSES[:TRAIN_PER_CLASS]",
        help="train and test on a fixed seeded choice of ImageNet classes (e.g. 100: "
        "ImageNet-100), optionally with fewer training images each (100:260); validation keeps "
        "all images of the chosen classes (default: all classes)",
    )
    p.add_argument(
        "--devices",
        help="cuda:0,cuda:1 (one column per GPU) | cuda:0 | cpu "
        "(default: cuda:0 if available, else cpu)",
    )
    p.add_argument(
        "--devices-per-replica",
        type=int,
        default=1,
        help="under torchrun with GPUs and no --devices: 1, local rank r on GPU r with both "
        "columns; 2, GPUs 2r and 2r+1, one column each as in the paper (default: 1)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        help=f"crop size (default: the recipe's, {paper.CROP_SIZE} for the paper's and the 2012 "
        "code's, 227 for caffe)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"images per SGD step (default: {paper.BATCH_SIZE}; the demo's {DEMO['batch_size']})",
    )
    p.add_argument(
        "--per-replica-batch",
        action="store_true",
        help="under torchrun, a deviation: --batch-size per replica and the lr times the replicas",
    )
    p.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="split each batch into this many chunks: same update, less memory (default: 1)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help=f"epoch limit (default: {paper.EPOCHS}, --recipe 2012-code 91; the demo's "
        f"{DEMO['epochs']})",
    )
    p.add_argument(
        "--recipe",
        default="paper",
        help="paper: the paper's network and schedule; 2012-code: the original code's layers-145 "
        "run, the network and schedule behind the published numbers; caffe: Caffe's "
        "bvlc_alexnet (default: paper)",
    )
    p.add_argument(
        "--bias-lr",
        choices=paper.BIAS_LR_READINGS,
        help="2012-code only: biases keep their rate of 0.02 until their layer freezes (fixed) "
        "or stay at 2x the weights' rate (follows) (default: fixed, its params file's reading)",
    )
    p.add_argument("--out", help="run folder (default: experiments/runs/<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its saved settings (--devices, --epochs, "
        "--workers, --checkpoint-minutes may change; --data: the cache, moved); the command "
        "that started a run also continues it",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of init, dropout and data (default: 0)"
    )
    p.add_argument(
        "--workers", type=int, help="data loader processes (default: 0 on CPU, else up to 8)"
    )
    p.add_argument(
        "--columns",
        type=int,
        default=2,
        help="2: the paper's net; 1: its one-column comparison, P §3.2 (default: 2)",
    )
    p.add_argument("--no-lrn", action="store_true", help="ablation: no LRN (P §3.3)")
    p.add_argument("--no-overlap", action="store_true", help="ablation: 2x2 pooling (P §3.4)")
    p.add_argument("--no-dropout", action="store_true", help="ablation: no dropout (P §4.2)")
    p.add_argument(
        "--remove-conv",
        help=f"ablation: without {' or '.join(paper.MIDDLE_CONVS)}, P §7 (default: none)",
    )
    p.add_argument(
        "--lighting",
        choices=("paper", "2012", "none"),
        help="PCA lighting noise: paper, the paper's formula; 2012, [C]'s; or none "
        "(default: the recipe's: paper, 2012 for 2012-code, none for caffe)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (faster on GPUs; the LRN stays in float32; a deviation "
        "from the paper's fp32, listed in the report)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--no-tf32", action="store_true", help="on CUDA: fp32 products as in 2012")
    p.add_argument(
        "--lr",
        type=float,
        default=paper.LEARNING_RATE,
        help=f"initial learning rate (default: {paper.LEARNING_RATE:g})",
    )
    p.add_argument("--lr-drops", help="fixed drop epochs, e.g. 25,51,79 (default: the recipe's)")
    p.add_argument("--patience", type=int, help="plateau: epochs without improvement (default: 5)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.001,
        help="plateau rule: improvement that counts, as a fraction (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint-minutes", type=float, help="also save every N minutes (default: 30)"
    )
    p.add_argument(
        "--replica-timeout",
        type=float,
        default=distributed.TIMEOUT_MINUTES,
        metavar="MINUTES",
        help="under torchrun: a replica that does not answer for this long has hung or died, "
        f"and the job stops naming it (default: {distributed.TIMEOUT_MINUTES:g})",
    )
    p.add_argument("--no-ten-view", action="store_true", help="skip the final ten-view test")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _default(value, default):
    """``value`` unless the option was not given (0 is a value, and is then checked)."""
    return default if value is None else value


def settings_from_args(args: argparse.Namespace, replicas: int) -> tuple[TrainConfig, list[str]]:
    """The settings the options give on ``replicas`` replicas (no data yet), and notes for the
    report: the paper's, or the demo's where the demo differs."""
    demo = args.data is None
    options.recipe(args.recipe)  # before the recipe's defaults are looked up
    out = args.out or f"experiments/runs/{'demo-' if demo else ''}{time.strftime('%Y%m%d-%H%M%S')}"
    names = tuple(str(d) for d in devices.parse(args.devices))
    workers = _default(options.workers(args.workers), default_workers(names))
    epochs = _default(args.epochs, DEMO["epochs"] if demo else paper.RECIPES[args.recipe].epochs)
    if args.lr_drops:
        lr_drops = options.int_list("--lr-drops", args.lr_drops)
    else:  # the demo's drops that a shorter --epochs leaves in the run
        drops = tuple(e for e in DEMO["lr_drops"] if e <= epochs)
        lr_drops = drops if demo and args.recipe == "paper" else None  # a recipe has its own
    batch_size = _default(args.batch_size, DEMO["batch_size"] if demo else paper.BATCH_SIZE)
    lr, notes = args.lr, []
    if args.per_replica_batch:  # the step's batch grows with the replicas: linear lr scaling
        batch_size, lr = batch_size * replicas, lr * replicas
        notes.append(
            f"--per-replica-batch: {replicas} replica{'s' if replicas > 1 else ''} x "
            f"{batch_size // replicas} images per step and the lr scaled by {replicas}, instead "
            "of the paper's batch and lr"
        )
    config = TrainConfig(
        cache="",
        out=out,
        devices=names,
        input_size=_default(args.input_size, paper.RECIPES[args.recipe].input_size),
        batch_size=batch_size,
        accumulate=args.accumulate,
        eval_batch_size=batch_size,
        epochs=epochs,
        seed=args.seed,
        workers=workers,
        columns=args.columns,
        lrn=not args.no_lrn,
        overlapping_pool=not args.no_overlap,
        dropout=not args.no_dropout,
        remove_conv=args.remove_conv,
        lighting=args.lighting or paper.RECIPES[args.recipe].lighting,
        tf32=not args.no_tf32,
        bf16=args.bf16,
        compile=args.compile,
        lr=lr,
        lr_drops=lr_drops,
        recipe=args.recipe,
        bias_lr=args.bias_lr,
        patience=_default(args.patience, TrainConfig.patience),
        threshold=args.threshold,
        ten_view=not args.no_ten_view,
        checkpoint_minutes=_default(args.checkpoint_minutes, TrainConfig.checkpoint_minutes),
        replicas=replicas,
        devices_per_replica=args.devices_per_replica,
    )
    return config, notes


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's settings and data. Settings and the run folder are checked before the data is
    generated or prepared (which may take hours)."""
    config, notes = settings_from_args(args, distributed.environment().size)
    demo, out, workers = args.data is None, config.out, config.workers
    config.check()
    subset = options.subset(args.subset)
    if subset is not None and demo:
        raise UsageError("--subset needs --data: the ImageNet root to take the subset from")
    RunFolder(out).check_new(config)
    progress = not args.quiet
    if demo:
        cache, test_split = demo_cache(workers, progress), "val"
        dataset = f"synthetic demo ({DEMO['classes']} classes)"
        notes.append(
            "synthetic demo data (generated shapes and textures), not ImageNet: the "
            "paper's figures are not comparable"
        )
    else:
        cache, dataset, test_split = resolve_cache(
            args.data, args.cache, args.year, workers, progress, subset
        )
    return replace(config, cache=cache, dataset=dataset, test_split=test_split, deviations=notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    options.positive("--replica-timeout", args.replica_timeout)
    world = distributed.environment()
    progress = not args.quiet and world.main
    out = None  # the run folder, once there is one
    names = distributed.replica_devices(args.devices, world, args.devices_per_replica)
    gpu = devices.any_cuda(names or devices.parse(None))
    handlers = preempt.install()
    try:
        distributed.start(world, gpu, args.devices is not None and gpu, args.replica_timeout)
        given = given_options(build_parser, argv)
        intended = lambda replicas: settings_from_args(args, replicas)[0]  # noqa: E731
        if distributed.on_main(lambda: continues(args, given, intended)):
            out = Path(args.out)
            overrides = dict(
                devices=names,
                epochs=args.epochs,
                workers=options.workers(args.workers),
                checkpoint_minutes=args.checkpoint_minutes,
                cache=resume_cache(args),
            )
            cache = distributed.on_main(lambda: check_resume(args.out, overrides, world.size))
            distributed.check_sees(out)
            distributed.check_same_cache(cache)
            run = Trainer.resume(args.out, progress=progress, **overrides)
        else:  # preparing the data (once) may come first, and take long; replica 0 does it
            config = distributed.on_main(lambda: _checked(config_from_args(args)))
            out = Path(config.out)
            if world.size > 1:
                if world.main:
                    RunFolder(out).create()
                distributed.check_sees(out)
                distributed.check_same_cache(config.cache)
            config = replace(config, devices=names) if world.size > 1 and names else config
            run = Trainer(config, progress=progress)
        config, out = run.config, Path(run.config.out)
        if not world.main:
            run.run()
            distributed.finish()
            return 0
        job = f"; {world.size} replicas under torchrun" if world.size > 1 else ""
        print(f"run folder: {config.out}; devices: {', '.join(config.devices)}{job}")
        differences = deviations(config, run.cache.num_classes, run.cache)
        print(
            "differences from the paper:" + "".join(f"\n  - {d}" for d in differences or ["none"])
        )
        results = run.run()
        distributed.finish()
        report = write_report(config.out)
    except KeyboardInterrupt as exc:  # a signal (preempt.Stopped), or Ctrl-C without its handler
        stop = exc if isinstance(exc, preempt.Stopped) else preempt.Stopped(signal.SIGINT)
        raise stopped(stop, argv, out, world) from None
    except SaveError as exc:  # a full disk, or no permission: the run continues once it is fixed
        kept = "; the last checkpoint is intact" if out and (out / CHECKPOINT).exists() else ""
        raise UsageError(
            f"{exc}{kept}: {'free space' if exc.no_space else 'fix the cause'}, "
            f"then continue with: {preempt.continue_command(argv, out)}"
        ) from None
    except RuntimeError as exc:  # a collective of the DDP step: a replica died
        if not distributed.active() or not distributed.from_peers(exc):
            raise
        raise distributed.lost(exc) from None
    finally:
        distributed.stop()
        preempt.uninstall(handlers)
    data = run.cache
    print(format_comparison(results, config.dataset, data.num_classes, data.subset, config.recipe))
    print(f"report: {report}")
    return 0


def _checked(config: TrainConfig) -> TrainConfig:
    """``config`` checked against its data, on replica 0 (its line printed once)."""
    config.check(cache_info(config.cache))
    return config
