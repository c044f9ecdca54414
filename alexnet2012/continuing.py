"""One command for the life of a run: the command that started a run continues it (after a
torchrun restart, when run again, when a scheduler requeues the job) once its folder holds a
checkpoint. Settings that differ from the run's are refused in one line; ``--resume`` continues
with the saved settings and accepts the options that repeat them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from alexnet2012 import distributed, options, preempt
from alexnet2012.config import NOT_COMPUTATION, TrainConfig
from alexnet2012.data import cache_info
from alexnet2012.data.subset import Subset
from alexnet2012.errors import UsageError
from alexnet2012.resume import check_same_data, resumed_config
from alexnet2012.runfolder import CHECKPOINT, RunFolder
from alexnet2012.sources import default_cache

# what --resume may change: where and how the run computes, not what it computes
RESUME_OPTIONS = ("out", "resume", "data", "cache", "year", "subset", "devices")
RESUME_OPTIONS += ("devices_per_replica", "epochs", "workers", "checkpoint_minutes", "quiet")
RESUME_OPTIONS += ("replica_timeout",)

# the option that sets each setting of the computation
OPTION_OF = {
    "input_size": "--input-size",
    "batch_size": "--batch-size",
    "eval_batch_size": "--batch-size",
    "accumulate": "--accumulate",
    "seed": "--seed",
    "columns": "--columns",
    "lrn": "--no-lrn",
    "overlapping_pool": "--no-overlap",
    "dropout": "--no-dropout",
    "remove_conv": "--remove-conv",
    "lighting": "--lighting",
    "tf32": "--no-tf32",
    "bf16": "--bf16",
    "compile": "--compile",
    "recipe": "--recipe",
    "bias_lr": "--bias-lr",
    "lr": "--lr",
    "lr_drops": "--lr-drops",
    "patience": "--patience",
    "threshold": "--threshold",
    "ten_view": "--no-ten-view",
}
COMPUTATION = tuple(f.name for f in fields(TrainConfig) if f.name not in NOT_COMPUTATION)


FIELDS_OF: dict[str, tuple[str, ...]] = {"per_replica_batch": ("batch_size", "lr")}
for _field, _option in OPTION_OF.items():  # an option's destination -> the settings it sets
    _dest = _option[2:].replace("-", "_")
    FIELDS_OF[_dest] = (*FIELDS_OF.get(_dest, ()), _field)


def given_options(
    build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> dict[str, str]:
    """The options on the command line, destination -> name: what was given, even where its
    value equals the parser's default."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS  # the namespace then holds only what was given
    given = vars(probe.parse_args(list(argv)))
    return {a.dest: a.option_strings[0] for a in probe._actions if a.dest in given}


def differences(
    intended: TrainConfig, saved: TrainConfig, names: Sequence[str]
) -> list[tuple[str, str]]:
    """How the settings ``names`` of ``intended`` differ from the run's: (option, how)."""
    said = []
    for name in dict.fromkeys(names):
        here, there = getattr(intended, name), getattr(saved, name)
        if here != there and name != "eval_batch_size":
            said.append((OPTION_OF.get(name, name), f"{name} {here} here, {there} in the run"))
    return said


def saved_settings(out: str) -> TrainConfig | None:
    """The settings of the run in ``out`` as its config.json records them (None: unreadable)."""
    try:
        return TrainConfig.from_dict(RunFolder(out).recorded("settings"))
    except (TypeError, ValueError, AttributeError):
        return None


def continues(
    args: argparse.Namespace,
    given: dict[str, str],
    intended: Callable[[int], TrainConfig],
) -> bool:
    """Replica 0's decision: whether this command continues the run in ``--out`` (with
    ``--resume``, or when the folder holds a checkpoint), or starts one. ``intended(replicas)``:
    the settings the command gives, on the run's number of replicas. Refuses, in one line, what
    would change the computation."""
    fixed = [option for option in given if option not in RESUME_OPTIONS]
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out, the run folder to continue")
        saved = saved_settings(args.out) if fixed else None
        if fixed and saved is None:  # nothing to compare with: what cannot apply is refused
            raise UsageError(
                f"--resume continues {args.out} with its saved settings: drop "
                f"{', '.join(given[o] for o in fixed)} (to change them, start a new run with "
                "another --out)"
            )
        names = [name for option in fixed for name in FIELDS_OF.get(option, ())]
        said = differences(intended(saved.replicas), saved, names) if fixed else []
        if said:
            drop = ", ".join(dict.fromkeys(option for option, _ in said))
            raise UsageError(
                f"--resume continues {args.out} with its saved settings: drop {drop} "
                f"({'; '.join(how for _, how in said)}; to change them, start a new run with "
                "another --out)"
            )
        return True
    if not args.out or not (Path(args.out) / CHECKPOINT).exists():
        return False
    saved = saved_settings(args.out)
    if saved is None:
        raise UsageError(
            f"{args.out} holds a run (checkpoint.pt) whose config.json cannot be read: "
            f"continue it with --resume --out {args.out}, or give another --out"
        )
    said = differences(intended(saved.replicas), saved, COMPUTATION)
    if said:
        raise UsageError(
            f"{args.out} holds a run with other settings: "
            f"{'; '.join(f'{option} ({how})' for option, how in said)}: to continue it, "
            f"give the run's values (or --resume --out {args.out} alone); for a new run, "
            "another --out"
        )
    return True


def resume_cache(args: argparse.Namespace) -> str | None:
    """The prepared cache that ``--data`` names for a run that continues (a cache, or the
    ImageNet root whose cache is ``--cache`` or ``DATA_cache``, as when the run started, with
    the suffix of ``--subset``); None without ``--data``."""
    if args.data is None:
        return None
    data = Path(args.data).resolve()
    if (data / "stats.json").exists():
        return str(data)
    if args.cache:
        return str(Path(args.cache).resolve())
    subset = options.subset(getattr(args, "subset", None))
    return str(default_cache(data, None if subset is None else Subset(*subset)))


def check_resume(out: str, overrides: dict, replicas: int) -> str:
    """On replica 0, before the others load anything: the checks of a run that continues (the
    checkpoint, the settings, the same data); the run's cache."""
    config, checkpoint, _ = resumed_config(out, dict(overrides))
    info = cache_info(config.cache)
    if checkpoint is not None:
        check_same_data(checkpoint, RunFolder(out), config.cache, info)
    config.replicas = replicas
    config.check(info)
    return config.cache


def stopped(
    exc: preempt.Stopped, argv: list[str], out: Path | None, world: distributed.World
) -> BaseException:
    """The end of a run stopped by a signal: replica 0's one line (where the run is saved, and
    the command that continues), the others quiet; the exit status of the signal."""
    if not world.main:
        return SystemExit(exc.code)
    path = None if out is None else out / CHECKPOINT
    if exc.where:
        saved = f"saved {path} at {exc.where}"
    elif path is not None and path.exists():
        saved = f"{str(exc) + '; ' if str(exc) else ''}its last checkpoint {path} is intact"
    else:
        saved = str(exc) or "nothing saved yet"
    again = preempt.continue_command(argv, None if out is None else str(out))
    line = f"stopped by {exc.name}: {saved}; continue with: {again}"
    return preempt.Stopped(exc.signum, exc.where, line)
