"""The paper's ablations (P §3.2-§3.4, §4.1, §4.2, §7): the baseline and one run per ablation, each
changed from the baseline in one thing only, with the same seed, data and schedule; then
``ablations.md``. Finished runs are reused and an interrupted one is resumed, so the same command
continues where it stopped. Without ``--data``: on the demo's synthetic set."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from alexnet2012 import devices, options, paper
from alexnet2012.cli import replicate
from alexnet2012.config import default_workers
from alexnet2012.errors import UsageError
from alexnet2012.evidence.ablations import BASELINE, outcome, table, training_error
from alexnet2012.files import write_file
from alexnet2012.runfolder import CONFIG, RESULTS, RunFolder

LEDGER = "ablations.json"  # each run's command line and training-set error
TABLE = "ablations.md"
# replicate.py's options that switch each feature off (paper.ABLATIONS' names)
SWITCHES = {
    "one-column": ["--columns", "1"],
    "no-lrn": ["--no-lrn"],
    "no-overlap": ["--no-overlap"],
    "no-lighting": ["--lighting", "none"],
    "no-dropout": ["--no-dropout"],
}
MIDDLE = "no-middle-conv"  # paper.ABLATIONS' name of P §7's comparison, one run per layer
MIDDLE_RUNS = {f"no-{layer}": layer for layer in paper.MIDDLE_CONVS}
ARGV = {**SWITCHES, **{run: ["--remove-conv", layer] for run, layer in MIDDLE_RUNS.items()}}
RUNS = (*SWITCHES, *MIDDLE_RUNS)  # the names of --only, the run folders and ablations.md
REMOVED = "conv4"  # the middle layer of the full set


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", help="ImageNet root or prepared cache (default: the demo's set)")
    p.add_argument("--out", required=True, help="folder of the runs and ablations.md")
    p.add_argument("--epochs", type=int, help="epochs of every run (default: replicate.py's)")
    p.add_argument(
        "--subset",
        metavar="CLASSES[:TRAIN_PER_CLASS]",
        help="as replicate.py's (default: all classes)",
    )
    p.add_argument("--seed", type=int, default=0, help="every run's seed (default: 0)")
    p.add_argument("--batch-size", type=int, help="images per SGD step (default: replicate.py's)")
    p.add_argument(
        "--remove-conv",
        help=f"P §7's middle layer(s) the full set removes, one run each: "
        f"{' or '.join(paper.MIDDLE_CONVS)}, or both comma-separated; with --only, name their "
        f"runs there (default: {REMOVED})",
    )
    p.add_argument(
        "--only",
        help=f"run the baseline and these ablations only, comma-separated, of: {', '.join(RUNS)} "
        "(default: the full set)",
    )
    p.add_argument(
        "--devices",
        help="as replicate.py's, may change when a run is resumed "
        "(default: cuda:0 if available, else cpu)",
    )
    p.add_argument(
        "--workers", type=int, help="as replicate.py's (default: 0 on CPU, else up to 8)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def plan(args: argparse.Namespace) -> dict[str, tuple[list[str], paper.Ablation | None]]:
    """Each run's name, replicate.py's options and ablation (None: the baseline, first)."""
    if args.only is not None and args.remove_conv is not None:
        raise UsageError(
            f"--remove-conv chooses the full set's middle layers: with --only, name their runs "
            f"there ({', '.join(MIDDLE_RUNS)})"
        )
    layers = [n.strip() for n in (args.remove_conv or REMOVED).split(",")]
    for layer in layers:  # each as replicate.py checks it (comma-separated here)
        options.remove_conv(layer or None)
    full = [*SWITCHES, *(f"no-{layer}" for layer in layers)]
    chosen = full if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in chosen if n not in RUNS]
    if unknown or not chosen:
        raise UsageError(f"--only takes ablations of {', '.join(RUNS)}, got {args.only!r}")
    common = []
    for option in ("data", "subset", "epochs", "batch_size"):
        if getattr(args, option) is not None:
            common += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    common += ["--seed", str(args.seed)]
    runs: dict[str, tuple[list[str], paper.Ablation | None]] = {BASELINE: (common, None)}
    for name in dict.fromkeys(chosen):
        runs[name] = (common + ARGV[name], paper.ablation(MIDDLE if name in MIDDLE_RUNS else name))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is not None:
        options.count("--epochs", args.epochs)
    options.seed(args.seed)
    options.workers(args.workers)
    names = tuple(str(d) for d in devices.parse(args.devices))
    workers = args.workers if args.workers is not None else default_workers(names)
    runs = plan(args)
    out = Path(args.out)
    ledger = _read_ledger(out)
    for name, (given, _) in runs.items():
        recorded = ledger.get(name, {}).get("argv")
        if recorded is None and (out / name).exists():
            raise UsageError(
                f"{out / name} exists but is not one of this command's runs ({out / LEDGER} "
                "does not list it): give another --out"
            )
        if recorded is not None and recorded != given:
            raise UsageError(
                f"{out / name} was run as {shlex.join(recorded)}, not {shlex.join(given)}: "
                "give another --out for other settings"
            )
    out.mkdir(parents=True, exist_ok=True)
    places = ["--workers", str(workers)] + (["--devices", args.devices] if args.devices else [])
    places += ["--quiet"] if args.quiet else []
    failed: dict[str, str] = {}
    for number, (name, (given, _)) in enumerate(runs.items(), start=1):
        run = out / name
        ledger.setdefault(name, {})["argv"] = given
        _write_ledger(out, ledger)
        state = "resumed" if (run / CONFIG).exists() else "new"
        state = "reused" if (run / RESULTS).exists() else state
        print(f"[{number}/{len(runs)}] {name}: {state} ({run})")
        try:
            if state != "reused":
                resume = ["--resume", "--out", str(run)] if state == "resumed" else None
                replicate.main((resume or [*given, "--out", str(run)]) + places)
            if "train" not in ledger[name]:
                batch = args.batch_size or paper.BATCH_SIZE
                ledger[name]["train"] = training_error(run, names, batch, workers)
                _write_ledger(out, ledger)
        except UsageError as exc:  # e.g. a run whose loss diverged: the others still run
            print(f"error: {name}: {exc}", file=sys.stderr)
            failed[name] = str(exc)
        except KeyboardInterrupt:
            again = shlex.join(["python", "scripts/ablations.py", *(argv or sys.argv[1:])])
            raise KeyboardInterrupt(f"continue with: {again}") from None
    outcomes = [
        outcome(out / name, ablation, ledger[name]["train"])
        for name, (_, ablation) in runs.items()
        if name not in failed
    ]
    if BASELINE in failed:
        raise UsageError(f"the baseline did not finish ({failed[BASELINE]}): no table to write")
    dataset = RunFolder(out / BASELINE).read().config["dataset"]
    write_file(out / TABLE, table(outcomes, dataset, failed))
    print(f"wrote {out / TABLE}")
    return 1 if failed else 0


def _read_ledger(out: Path) -> dict:
    path = out / LEDGER
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg}): remove it to start over") from None


def _write_ledger(out: Path, ledger: dict) -> None:
    write_file(out / LEDGER, json.dumps(ledger, indent=2) + "\n")
