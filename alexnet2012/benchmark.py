"""Training and inference speed of the paper's AlexNet next to torchvision's, in one process.

Every model (the one-device net, the two-device path, the one-column net and
``torchvision.models.alexnet``) trains with the same step: ``PaperSGD``, cross-entropy,
``zero_grad(set_to_none=True)``, on the same synthetic batch on the same device. Timing runs in
rounds: each round runs ``steps`` steps of every (model, train/infer) entry, the entries' order
rotated by one from round to round, so that noise from other processes hits every model alike.
A model's rate is its batch size over the median, across rounds, of its per-step time.

With a data cache, one more row trains the one-device net on the real loader's batches, so that
the end-to-end rate (data included) sits next to the model-only rate.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from tqdm import tqdm

from alexnet2012 import paper
from alexnet2012.data import TrainStream
from alexnet2012.devices import configure_backends
from alexnet2012.devices import parse as parse_device_list
from alexnet2012.errors import UsageError
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD
from alexnet2012.step import TrainStep, autocast

IMAGES_PER_EPOCH = paper.TRAIN_IMAGES_2012  # ILSVRC-2012 train
REFERENCE = "torchvision alexnet"
COMPILED = ", compiled"  # the suffix of the --compile rows' names
ONE_DEVICE_ROW = "AlexNet"
TWO_DEVICE_ROW = "AlexNet two-device"
DATA_ROW = "AlexNet + data loader"
CPU_MEMORY_METHOD = (
    "process RSS: /proc/self/status VmHWM during the step minus VmRSS before "
    "it, after glibc malloc_trim(0) and a peak reset via /proc/self/clear_refs"
)
CUDA_MEMORY_METHOD = (
    "torch.cuda.max_memory_allocated during the step minus "
    "torch.cuda.memory_allocated before it, after reset_peak_memory_stats"
)
PEAK_MEMORY = (
    "weights (+ PaperSGD velocity when training) + the peak growth of one step started "
    "with no gradients held, measured after the timed rounds"
)
# steps, warmup, repeats when not given: a CPU step takes about a second at batch 32, a GPU
# step milliseconds, and cudnn.benchmark tries its algorithms in the first steps.
DEFAULT_SCHEDULE = {"cpu": (1, 2, 11), "cuda": (20, 10, 5)}


@dataclass(frozen=True)
class Settings:
    """What to run: devices (one, or two for the two-device row), batch and timing schedule."""

    devices: tuple[torch.device, ...]
    batch_size: int
    steps: int
    warmup: int
    repeats: int
    compile: bool = False
    bf16: bool = False
    data: str | None = None
    workers: int = 4
    seed: int = 0


@dataclass
class Case:
    """One table row: a model, its optimizer, the devices it runs on, where its batches come from,
    and what was measured (per-step seconds per round and the step's peak memory, per mode).

    ``batches`` (the data row only): the loader's ``(x, y)`` batches, one iterator for the
    whole run.
    """

    name: str
    model: nn.Module
    optimizer: PaperSGD
    devices: tuple[torch.device, ...]
    modes: tuple[str, ...] = ("train", "infer")
    batches: Iterator[tuple[Tensor, Tensor]] | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    step_peak: dict[str, int | None] = field(default_factory=dict)
    step: TrainStep | None = None  # its training step (build_cases makes it)


def parse_devices(spec: str | None) -> tuple[torch.device, ...]:
    """``"cuda:0,cuda:1"`` -> devices; empty or ``None``: ``cuda:0`` if there is one, else CPU."""
    return parse_device_list(spec)


def default_schedule(device: torch.device) -> tuple[int, int, int]:
    """``(steps, warmup, repeats)`` suited to the device's speed."""
    return DEFAULT_SCHEDULE["cuda" if device.type == "cuda" else "cpu"]


def projected_seconds(
    images_per_s: float, epochs: int = paper.EPOCHS, images_per_epoch: int = IMAGES_PER_EPOCH
) -> float:
    """Wall time of ``epochs`` ImageNet epochs at ``images_per_s``."""
    return epochs * images_per_epoch / images_per_s


def format_duration(seconds: float) -> str:
    """``h:mm`` under a day, else ``Nd Mh`` (rounded to the minute, resp. the hour)."""
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60}:{minutes % 60:02d}"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days}d {hours}h"


def _count(n: int, word: str) -> str:
    """``1 round``, ``3 rounds``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_bytes(n: int | None) -> str:
    """``812 MiB`` / ``1.23 GiB``; ``n/a`` when unknown."""
    if n is None:
        return "n/a"
    if n < 1 << 30:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / (1 << 30):.2f} GiB"


def build_cases(settings: Settings) -> list[Case]:
    """The model rows: one device, two-device path, one column, torchvision (the reference);
    with ``settings.compile``, ``torch.compile``d twins of the one-device and reference rows
    (named ``..., compiled``) run beside them, so that one run shows what compiling changes."""
    d0 = settings.devices[0]
    pair = (d0, settings.devices[-1])
    builders: list[tuple[str, Callable[[], nn.Module], tuple[torch.device, ...]]] = [
        (ONE_DEVICE_ROW, lambda: AlexNet().to(d0), (d0,)),
        (f"{TWO_DEVICE_ROW} ({pair[0]}, {pair[1]})", lambda: AlexNet(devices=pair), pair),
        ("AlexNet columns=1", lambda: AlexNet(columns=1).to(d0), (d0,)),
        (REFERENCE, lambda: torchvision.models.alexnet().to(d0), (d0,)),
    ]
    if settings.compile:
        builders += [
            (f"{name}{COMPILED}", build, devices)
            for name, build, devices in builders
            if name in (ONE_DEVICE_ROW, REFERENCE)
        ]
    cases = []
    for name, build, devices in builders:
        torch.manual_seed(settings.seed)
        model = build()
        optimizer = PaperSGD(
            model.parameters(),
            lr=paper.LEARNING_RATE,
            momentum=paper.MOMENTUM,
            weight_decay=paper.WEIGHT_DECAY,
        )
        eager = None
        if name.endswith(COMPILED):  # trains with TrainStep(compile=True), infers compiled
            eager, model = model, torch.compile(model)
        step = TrainStep(eager or model, optimizer, bf16=settings.bf16, compile=eager is not None)
        cases.append(Case(name, model, optimizer, devices, step=step))
    return cases


def start_loader(settings: Settings) -> Generator[tuple[Tensor, Tensor], None, None]:
    """The end-to-end row's batches: the training run's loader (``TrainStream``: workers that
    persist across epochs) over the cache ``settings.data``, epoch after epoch, its workers
    started now. Call it before building the models: workers forked from a process that already
    holds them would make every later write to the models' pages a copy-on-write fault, slowing
    the other rows' next steps."""
    if not Path(settings.data).is_dir():
        raise UsageError(f"--data {settings.data}: no such directory (give a prepared data cache)")
    stream = TrainStream(
        settings.data,
        batch_size=settings.batch_size,
        crop=paper.CROP_SIZE,
        seed=settings.seed,
        workers=settings.workers,
        device=str(settings.devices[0]),
    )
    batches = loader_batches(stream.epoch, stream.close)
    next(batches)  # starts the workers
    return batches


def loader_batches(
    loader: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    close: Callable[[], None] = lambda: None,
) -> Generator[tuple[Tensor, Tensor], None, None]:
    """Batches of ``loader(0)``, then ``loader(1)``, ... without end; ``close()`` on the
    generator calls ``close`` (stops the loader's workers)."""
    try:
        for epoch in itertools.count():
            empty = True
            for batch in loader(epoch):
                empty = False
                yield batch
            if empty:
                raise UsageError(
                    "the data cache's train loader yields no batch (cache empty, "
                    "or fewer images than --batch-size)"
                )
    finally:
        close()


def synthetic_batch(batch_size: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random images ``(B, 3, 224, 224)`` and labels, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, paper.CROP_SIZE, paper.CROP_SIZE, generator=g)
    y = torch.randint(0, paper.NUM_CLASSES, (batch_size,), generator=g)
    return x.to(device), y.to(device)


def train_step(case: Case, x: Tensor, y: Tensor, bf16: bool) -> None:
    """One training step, the training run's own (:class:`step.TrainStep`): forward,
    cross-entropy, backward, ``PaperSGD`` update."""
    if case.step is None:
        case.step = TrainStep(case.model, case.optimizer, bf16=bf16)
    case.step(x, y)


def infer_step(case: Case, x: Tensor, bf16: bool) -> None:
    """One inference step: the forward pass without autograd."""
    with torch.no_grad(), autocast({d.type for d in case.devices}, bf16):
        case.model(x)


def synchronize(devices: Sequence[torch.device]) -> None:
    """Wait for the queued work of every CUDA device in ``devices`` (no-op on the CPU)."""
    for device in {d for d in devices if d.type == "cuda"}:
        torch.cuda.synchronize(device)


class MemoryMeter:
    """Peak memory of a block above what was in use when it started, over ``devices``: CUDA
    allocator statistics per GPU; for the CPU, the process's resident set (Linux ``/proc``),
    after returning the allocator's free pages to the system (glibc ``malloc_trim``) so that
    the block's pages count even where earlier blocks had left them cached."""

    def __init__(self, devices: Sequence[torch.device]):
        self.gpus = sorted({d for d in devices if d.type == "cuda"}, key=str)
        self.cpu = any(d.type == "cpu" for d in devices) and _rss_measurable()
        self.baseline = 0

    def start(self) -> None:
        """Record what is in use now and reset the peaks."""
        self.baseline = sum(torch.cuda.memory_allocated(d) for d in self.gpus)
        for d in self.gpus:
            torch.cuda.reset_peak_memory_stats(d)
        if self.cpu:
            _libc().malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline += _proc_status_bytes("VmRSS")

    def stop(self) -> int | None:
        """Peak since :meth:`start` minus the baseline (``None`` where nothing is measured)."""
        if not (self.gpus or self.cpu):
            return None
        peak = sum(torch.cuda.max_memory_allocated(d) for d in self.gpus)
        if self.cpu:
            peak += _proc_status_bytes("VmHWM")
        return max(0, peak - self.baseline)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_measurable() -> bool:
    try:
        _proc_status_bytes("VmHWM")
        return os.access("/proc/self/clear_refs", os.W_OK) and hasattr(_libc(), "malloc_trim")
    except (OSError, KeyError):
        return False


def persistent_bytes(case: Case, mode: str) -> int:
    """Bytes the model holds between steps: its weights, plus the optimizer's velocity when
    training."""
    tensors = list(case.model.parameters())
    if mode == "train":
        tensors += [
            t for s in case.optimizer.state.values() for t in s.values() if isinstance(t, Tensor)
        ]
    return sum(t.numel() * t.element_size() for t in tensors)


def run_block(
    case: Case, mode: str, batches: Iterator[tuple[Tensor, Tensor]], steps: int, bf16: bool
) -> float:
    """Run ``steps`` steps of ``case`` in ``mode``; return seconds per step (the devices are
    synchronised before and after the block, never inside it)."""
    case.model.train(mode == "train")
    synchronize(case.devices)
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        if mode == "train":
            train_step(case, x, y, bf16)
        else:
            infer_step(case, x, bf16)
    synchronize(case.devices)
    return (time.perf_counter() - start) / steps


def lead_in_steps(workers: int) -> int:
    """Untimed steps before the data row's timed ones in each round: as many batches as the
    loader's workers may have made ready ahead while the other rows ran (DataLoader's default
    prefetch_factor 2 per worker; then they wait), so that the timed steps see the steady state
    rather than a full queue."""
    return 2 * max(workers, 1)


def run_rounds(cases: list[Case], settings: Settings, progress: bool = True) -> None:
    """Warm every entry up, then time ``repeats`` rounds of ``steps`` steps per entry, the order
    rotated by one each round (per-step times into ``case.times``), then measure each entry's
    peak memory over one more step (into ``case.step_peak``)."""
    synthetic = itertools.repeat(
        synthetic_batch(settings.batch_size, settings.devices[0], settings.seed)
    )
    entries = [(case, mode) for case in cases for mode in case.modes]
    blocks = len(entries) * (settings.repeats + 1 + (settings.warmup > 0))
    with tqdm(
        total=blocks, file=sys.stderr, disable=not progress, unit="block", desc="benchmark"
    ) as bar:

        def each(label: str, order: list[tuple[Case, str]]) -> Iterator[tuple[Case, str, Iterator]]:
            for case, mode in order:
                bar.set_postfix_str(f"{label}: {case.name} {mode}")
                yield case, mode, synthetic if case.batches is None else case.batches
                bar.update()

        if settings.warmup > 0:
            for case, mode, batches in each("warm-up", entries):
                run_block(case, mode, batches, settings.warmup, settings.bf16)
        for r in range(settings.repeats):
            shift = r % len(entries)
            for case, mode, batches in each(f"round {r + 1}", entries[shift:] + entries[:shift]):
                if case.batches is not None:
                    run_block(case, mode, batches, lead_in_steps(settings.workers), settings.bf16)
                case.times.setdefault(mode, []).append(
                    run_block(case, mode, batches, settings.steps, settings.bf16)
                )
        for case, mode, batches in each("memory", entries):
            case.optimizer.zero_grad(set_to_none=True)
            meter = MemoryMeter(case.devices)
            meter.start()
            run_block(case, mode, batches, 1, settings.bf16)
            case.step_peak[mode] = meter.stop()


def device_description(devices: Sequence[torch.device]) -> dict[str, Any]:
    """What the benchmark ran on: the GPUs' names, the CPU model, the vector instructions that
    PyTorch's CPU kernels use on it (these machines differ: AVX2 on some, AVX512 on others), its
    cores and torch's threads."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpus = sorted({d for d in devices if d.type == "cuda"}, key=str)
    return {
        "devices": [str(d) for d in devices],
        "gpus": {str(d): torch.cuda.get_device_name(d) for d in gpus},
        "cpu": cpu,
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def versions() -> dict[str, str | None]:
    """Python, torch, torchvision, CUDA and cuDNN versions."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
    }


def code_version() -> dict[str, Any]:
    """The git commit of the package measured, and its files with uncommitted changes (a
    benchmark of a working tree is not a benchmark of the commit); ``None`` outside git."""
    package = Path(__file__).resolve().parent
    try:
        git = ["git", "-C", str(package)]
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted": None}
    return {"commit": commit, "uncommitted": sorted(line[3:] for line in status)}


def summarise(cases: list[Case], settings: Settings, backends: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: device, versions, settings and one entry per row."""
    rows = []
    for case in cases:
        row: dict[str, Any] = {"name": case.name, "devices": [str(d) for d in case.devices]}
        for mode in ("train", "infer"):
            times = case.times.get(mode)
            if not times:
                row[mode] = None
                continue
            median = statistics.median(times)
            step_peak = case.step_peak.get(mode)
            row[mode] = {
                "images_per_s": settings.batch_size / median,
                "median_step_s": median,
                "step_times_s": times,
                "best_images_per_s": settings.batch_size / min(times),
                "peak_memory_bytes": (
                    None if step_peak is None else persistent_bytes(case, mode) + step_peak
                ),
            }
        rows.append(row)
    reference = next(r for r in rows if r["name"] == REFERENCE)
    for row in rows:
        for mode in ("train", "infer"):
            if row[mode] is not None:
                for rate, ratio in (
                    ("images_per_s", "ratio_to_torchvision"),
                    ("best_images_per_s", "best_ratio_to_torchvision"),
                ):
                    row[mode][ratio] = row[mode][rate] / reference[mode][rate]
        if row["train"] is not None:
            seconds = projected_seconds(row["train"]["images_per_s"])
            row["projected_90_epochs_s"] = seconds
            row["projected_90_epochs"] = format_duration(seconds)
    cuda = any(d.type == "cuda" for d in settings.devices)
    return {
        "device": device_description(settings.devices),
        "versions": versions(),
        "code": code_version(),
        "settings": {
            "devices": [str(d) for d in settings.devices],
            "batch_size": settings.batch_size,
            "steps": settings.steps,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
            "timing": "images_per_s: batch over the median, across rounds, of per-step time "
            "(best_*: over the fastest round); each round runs `steps` steps of every "
            "entry, in an order rotated by one each round",
            "compile": settings.compile,
            "bf16_autocast": settings.bf16,
            "precision": "bf16 autocast" if settings.bf16 else ("fp32/TF32" if cuda else "fp32"),
            "backends": backends,
            "memory_method": {
                "cpu": CPU_MEMORY_METHOD,
                "cuda": CUDA_MEMORY_METHOD,
                "peak_memory": PEAK_MEMORY,
            },
            "data": None
            if settings.data is None
            else {
                "cache": settings.data,
                "workers": settings.workers,
                "lead_in_steps_per_round": lead_in_steps(settings.workers),
            },
            "epochs": paper.EPOCHS,
            "images_per_epoch": IMAGES_PER_EPOCH,
            "seed": settings.seed,
        },
        "reference": REFERENCE,
        "models": rows,
        "targets": targets(rows),
    }


def targets(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The issue's targets as ratios of training rates: the one-device AlexNet over torchvision's
    (target >= 1.0) and the two-device path over the one-device net (on one GPU: >= 0.9)."""
    rate = {r["name"].split(" (")[0]: r["train"]["images_per_s"] for r in rows if r["train"]}
    one = rate.get(ONE_DEVICE_ROW)
    return {
        "alexnet_train_vs_torchvision": None if one is None else one / rate[REFERENCE],
        "two_device_train_vs_one_device": (
            None if one is None or TWO_DEVICE_ROW not in rate else rate[TWO_DEVICE_ROW] / one
        ),
    }


def title(report: dict[str, Any]) -> str:
    """The table's first line: batch, device, precision and the options that are on."""
    s, dev = report["settings"], report["device"]
    where = ", ".join(dev["gpus"].values()) or (
        f"{dev['cpu']}, {dev['cpu_isa']}, {dev['cpu_cores']} cores, {dev['torch_threads']} threads"
    )
    options = [s["precision"]] + (["compiled rows: torch.compile"] if s["compile"] else [])
    return (
        f"AlexNet vs {report['reference']}: batch {s['batch_size']} on "
        f"{','.join(s['devices'])} ({where}), {', '.join(options)}"
    )


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: images/s, ratio to torchvision, peak memory, 90 epochs."""
    header = (
        "model",
        "train img/s",
        "x tv",
        "infer img/s",
        "x tv",
        "train peak mem",
        "infer peak mem",
        f"{paper.EPOCHS} epochs",
    )
    lines = [header]
    for row in report["models"]:
        cells = [row["name"]]
        for mode in ("train", "infer"):
            r = row[mode]
            cells += (
                ["-", "-"]
                if r is None
                else [f"{r['images_per_s']:.1f}", f"{r['ratio_to_torchvision']:.2f}x"]
            )
        for mode in ("train", "infer"):
            r = row[mode]
            cells.append("-" if r is None else format_bytes(r["peak_memory_bytes"]))
        cells.append(row.get("projected_90_epochs", "-"))
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    s = report["settings"]
    notes = [
        f"median of {_count(s['repeats'], 'round')} x {_count(s['steps'], 'step')} "
        f"(after {_count(s['warmup'], 'warm-up step')}); x tv: images/s over "
        f"{report['reference']}'s in this run; {paper.EPOCHS} epochs = {paper.EPOCHS} x "
        f"{IMAGES_PER_EPOCH:,} images at the training rate (h:mm under a day, else "
        f"days and hours, e.g. 13d 8h)",
        "train x tv in the fastest rounds: "
        + ", ".join(
            f"{row['name']} {row['train']['best_ratio_to_torchvision']:.2f}x"
            for row in report["models"]
            if row["name"] != report["reference"]
        ),
    ]
    code = report["code"]
    if code["commit"] is not None:
        changed = code["uncommitted"]
        notes.append(
            f"code: commit {code['commit'][:10]}"
            + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")
        )
    t = report["targets"]
    if t["alexnet_train_vs_torchvision"] is not None:
        notes.append(
            f"targets: AlexNet trains at {t['alexnet_train_vs_torchvision']:.2f}x "
            f"torchvision (target >= 1.00x); the two-device path at "
            f"{t['two_device_train_vs_one_device']:.2f}x the one-device net (target on "
            f"one GPU: >= 0.90x)"
        )
    if s["data"] is not None:
        notes.append(
            f"{DATA_ROW}: end to end (loader from {s['data']['cache']}, "
            f"{s['data']['workers']} workers) with the AlexNet row's model; compare "
            f"with the AlexNet row (model only)"
        )
    return "\n".join([title(report), *text, *notes])


def run_benchmark(settings: Settings, progress: bool = True) -> dict[str, Any]:
    """Build the rows, time them in alternating rounds, return the report."""
    backends = configure_backends(settings.devices)
    batches = None if settings.data is None else start_loader(settings)
    try:
        cases = build_cases(settings)
        if batches is not None:  # the one-device AlexNet's model and optimizer (compiled when
            # there is a compiled row), real batches
            model_only = next((c for c in cases if c.name == ONE_DEVICE_ROW + COMPILED), cases[0])
            cases.append(
                Case(
                    DATA_ROW,
                    model_only.model,
                    model_only.optimizer,
                    model_only.devices,
                    modes=("train",),
                    batches=batches,
                    step=model_only.step,
                )
            )
        run_rounds(cases, settings, progress)
    finally:
        if batches is not None:
            batches.close()
    return summarise(cases, settings, backends)
