"""Training and inference speed of the compared models, each trained by the run's own step on
the same synthetic batch. Each round runs ``steps`` steps of every (model, mode) entry in an order
rotated each round, so that noise hits every model alike. With a data cache, one more row trains
the one-device net on the real loader."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alexnet2012 import devices, distributed, paper
from alexnet2012.bench import models
from alexnet2012.bench.training_report import MemoryMeter, training_report
from alexnet2012.data import TrainStream
from alexnet2012.errors import UsageError
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD
from alexnet2012.progress import Progress
from alexnet2012.step import TrainStep, autocast

# (steps, warmup, repeats) when not given: few long steps on the CPU; on a GPU many short ones,
# and warm-up for cudnn.benchmark, which tries its algorithms in the first steps.
DEFAULT_SCHEDULE = {"cpu": (1, 2, 11), "cuda": (20, 10, 5)}


@dataclass(frozen=True)
class Settings:
    """What to run: devices (the two-device row uses the first and last), batch and schedule."""

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

    @property
    def lead_in_steps(self) -> int:
        """Untimed data-row steps each round: what the workers prefetched meanwhile (2 each)."""
        return 2 * max(self.workers, 1)


@dataclass
class Case:
    """One row; ``batches``: the data row's loader; per mode, each round's step time and a peak."""

    name: str
    model: nn.Module
    optimizer: PaperSGD
    devices: tuple[torch.device, ...]
    modes: tuple[str, ...] = ("train", "infer")
    batches: Iterator[tuple[Tensor, Tensor]] | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    step_peak: dict[str, int | None] = field(default_factory=dict)
    step: TrainStep | None = None


def default_schedule(device: torch.device) -> tuple[int, int, int]:
    """``(steps, warmup, repeats)`` suited to the device's speed."""
    return DEFAULT_SCHEDULE["cuda" if device.type == "cuda" else "cpu"]


def build_cases(settings: Settings) -> list[Case]:
    """The model rows; ``settings.compile``: with compiled twins of the one-device and reference."""
    builders = models.on_devices(settings.devices)
    if settings.compile:
        builders += [
            (f"{name}{models.COMPILED}", build, devs)
            for name, build, devs in builders
            if name in (models.ONE_DEVICE, models.REFERENCE)
        ]
    cases = []
    for name, build, devs in builders:
        torch.manual_seed(settings.seed)
        model = build()
        optimizer = PaperSGD(model.parameters())
        eager = None
        if name.endswith(models.COMPILED):  # trains with TrainStep(compile=True), infers compiled
            eager, model = model, torch.compile(model)
        step = TrainStep(eager or model, optimizer, bf16=settings.bf16, compile=eager is not None)
        cases.append(Case(name, model, optimizer, devs, step=step))
    return cases


def start_loader(settings: Settings) -> Generator[tuple[Tensor, Tensor], None, None]:
    """The data row's batches, workers started before the models exist (no copy-on-write faults)."""
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
    """Batches of ``loader(0)``, ``loader(1)``, ... without end; closing it calls ``close``."""
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


def synthetic_batch(
    batch_size: int, device: torch.device, seed: int = 0, size: int = paper.CROP_SIZE
) -> tuple[Tensor, Tensor]:
    """Random inputs laid out as the loader feeds them (channels-last), so none recompiles."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, size, size, generator=g)
    y = torch.randint(0, paper.NUM_CLASSES, (batch_size,), generator=g)
    return x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)


def train_step(case: Case, x: Tensor, y: Tensor, bf16: bool) -> None:
    if case.step is None:
        case.step = TrainStep(case.model, case.optimizer, bf16=bf16)
    case.step(x, y)


def infer_step(case: Case, x: Tensor, bf16: bool) -> None:
    with torch.no_grad(), autocast({d.type for d in case.devices}, bf16):
        case.model(x)


def run_block(
    case: Case, mode: str, batches: Iterator[tuple[Tensor, Tensor]], steps: int, bf16: bool
) -> float:
    """Seconds per step over ``steps`` steps, the devices synchronised only before and after."""
    case.model.train(mode == "train")
    devices.synchronize(case.devices)
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        if mode == "train":
            train_step(case, x, y, bf16)
        else:
            infer_step(case, x, bf16)
    devices.synchronize(case.devices)
    return (time.perf_counter() - start) / steps


def run_rounds(cases: list[Case], settings: Settings, progress: bool = True) -> None:
    """Warm-up, ``repeats`` rotated rounds (``case.times``), a step's peak (``case.step_peak``)."""
    synthetic = itertools.repeat(
        synthetic_batch(settings.batch_size, settings.devices[0], settings.seed)
    )
    entries = [(case, mode) for case in cases for mode in case.modes]
    blocks = len(entries) * (settings.repeats + 1 + (settings.warmup > 0))
    with Progress("benchmark", blocks, enabled=progress, unit="blocks") as bar:

        def each(label: str, order: list[tuple[Case, str]]) -> Iterator[tuple[Case, str, Iterator]]:
            for case, mode in order:
                bar.postfix(f"{label}: {case.name} {mode}")
                yield case, mode, synthetic if case.batches is None else case.batches
                bar.update(1)

        if settings.warmup > 0:
            for case, mode, batches in each("warm-up", entries):
                run_block(case, mode, batches, settings.warmup, settings.bf16)
        for r in range(settings.repeats):
            shift = r % len(entries)
            for case, mode, batches in each(f"round {r + 1}", entries[shift:] + entries[:shift]):
                if case.batches is not None:
                    run_block(case, mode, batches, settings.lead_in_steps, settings.bf16)
                case.times.setdefault(mode, []).append(
                    run_block(case, mode, batches, settings.steps, settings.bf16)
                )
        for case, mode, batches in each("memory", entries):
            case.optimizer.zero_grad(set_to_none=True)
            meter = MemoryMeter(case.devices)
            meter.start()
            run_block(case, mode, batches, 1, settings.bf16)
            case.step_peak[mode] = meter.stop()


def measure_training(settings: Settings, progress: bool = True) -> dict[str, Any]:
    """Build the rows, time them in rotated rounds, return the report (:mod:`training_report`)."""
    backends = devices.configure_backends(settings.devices)
    batches = None if settings.data is None else start_loader(settings)
    try:
        cases = build_cases(settings)
        if batches is not None:  # the one-device net (its compiled twin if any), real batches
            name = models.ONE_DEVICE + models.COMPILED
            model_only = next((c for c in cases if c.name == name), cases[0])
            cases.append(
                Case(
                    models.DATA_ROW,
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
    return training_report(cases, settings, backends)


def measure_replicas(
    names: tuple[str, ...],
    batch_size: int,
    input_size: int,
    steps: int,
    warmup: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """Under torchrun: the job's training images/s (DDP) against replica 0's alone."""
    world = distributed.environment()
    first = torch.device(names[0])
    if first.type == "cuda":  # before NCCL starts: each rank's communicator on its own GPU
        torch.cuda.set_device(first)
    distributed.start(world, devices.any_cuda(names))
    torch.manual_seed(0)
    if len(names) == 1:
        model = AlexNet(input_size=input_size).to(names[0])
    else:
        model = AlexNet(input_size=input_size, devices=names)
    x, y = synthetic_batch(batch_size, first, size=input_size)

    def rate(step: TrainStep, n: int, warm: int) -> float:
        for _ in range(warm):
            step(x[:n], y[:n])
        devices.synchronize(names)
        started = time.perf_counter()
        for _ in range(steps):
            step(x[:n], y[:n])
        devices.synchronize(names)
        return steps * n / (time.perf_counter() - started)

    single = TrainStep(model, PaperSGD(model.parameters()))
    share = batch_size // world.size
    ddp = TrainStep(distributed.wrap(model, names), PaperSGD(model.parameters()))
    alones, jobs = [], []
    for round_ in range(repeats):
        warm = warmup if round_ == 0 else 0
        alones.append(rate(single, batch_size, warm) if world.main else 0.0)
        distributed.barrier()
        mine = rate(ddp, share, warm)
        jobs.append(float(distributed.all_sum(torch.tensor([mine], dtype=torch.float64))))
    alone, job = statistics.median(alones), statistics.median(jobs)
    return {
        "replicas": world.size,
        "batch_size": batch_size,
        "per_replica": share,
        "devices": list(names),
        "one_replica_images_per_s": alone,
        "job_images_per_s": job,
        "rounds": {"one_replica": alones, "job": jobs},
        "speedup": job / alone if alone else None,
        "scaling_efficiency": job / (world.size * alone) if alone else None,
    }
