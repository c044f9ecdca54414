"""The training benchmark's arithmetic, report and CLI; tiny settings and tiny stand-in models,
no timing assertions (the CPU and CUDA targets are checked by running the benchmark, not here)."""

import json
import runpy
import statistics
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from alexnet2012 import devices
from alexnet2012.bench import training
from alexnet2012.bench import training_report as report_module
from alexnet2012.bench.models import ONE_DEVICE, REFERENCE
from alexnet2012.bench.tables import training_table
from alexnet2012.bench.training import Case, Settings, build_cases, run_rounds
from alexnet2012.bench.training_report import projected_seconds, training_report
from alexnet2012.cli import benchmark as cli
from alexnet2012.errors import UsageError, check_writable
from alexnet2012.optim import PaperSGD
from alexnet2012.units import duration_text

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_projected_time_is_90_imagenet_epochs_at_the_rate():
    # 90 x 1,281,167 = 115,305,030 images; at 100 images/s 1,153,050.3 s = 320.29 h = 13 d 8 h.
    assert projected_seconds(100.0) == pytest.approx(1_153_050.3)
    assert duration_text(projected_seconds(100.0)) == "13d 8h"
    # at 4,000 images/s: 28,826.26 s = 8 h 0 min 26 s.
    assert duration_text(projected_seconds(4000.0)) == "8:00:26"


def test_devices_default_and_errors():
    assert devices.parse(None) == (torch.device("cuda:0" if torch.cuda.is_available() else "cpu"),)
    assert devices.parse("cpu, cpu") == (torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(UsageError, match="not a device name"):
        devices.parse("tpu")
    with pytest.raises(UsageError, match="one or two devices"):
        devices.parse("cpu,cpu,cpu")
    for other in (
        "mps",
        "meta",
        "xla",
        "cpu,meta",
    ):  # torch names them, this network can't use them
        with pytest.raises(UsageError, match="runs on 'cpu' and 'cuda"):
            devices.parse(other)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="does not exist"):
            devices.parse("cuda:0")


class _Recorder(nn.Module):
    """A tiny stand-in for a network (224 images -> 1000 logits) that logs each forward."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log
        self.fc = nn.Linear(3, 1000)

    def forward(self, x):
        self.log.append((self.name, "train" if self.training else "infer"))
        return self.fc(x.mean(dim=(2, 3)))


def _case(name: str, log: list, **kwargs) -> Case:
    model = _Recorder(name, log)
    return Case(name, model, PaperSGD(model.parameters()), (torch.device("cpu"),), **kwargs)


def _settings(**kwargs) -> Settings:
    return Settings(
        **{
            **dict(devices=(torch.device("cpu"),), batch_size=2, steps=2, warmup=1, repeats=3),
            **kwargs,
        }
    )


def test_rounds_alternate_models_with_the_order_rotated_and_keep_every_step_time():
    log = []
    cases = [_case("a", log), _case(REFERENCE, log)]
    run_rounds(cases, _settings(), progress=False)
    assert log[:4] == [
        ("a", "train"),
        ("a", "infer"),
        (REFERENCE, "train"),
        (REFERENCE, "infer"),
    ]  # warm-up
    rounds = [log[4 + 8 * r : 4 + 8 * (r + 1) : 2] for r in range(3)]
    entries = [("a", "train"), ("a", "infer"), (REFERENCE, "train"), (REFERENCE, "infer")]
    assert rounds == [entries[r:] + entries[:r] for r in range(3)]
    assert log[28:] == entries  # one step each for the memory pass
    assert len(log) == 4 + 3 * 8 + 4
    for case in cases:
        assert {mode: len(t) for mode, t in case.times.items()} == {"train": 3, "infer": 3}


def test_data_row_reads_one_loader_epoch_after_epoch_with_a_lead_in_each_round():
    log, epochs, closed = [], [], []

    def loader(epoch):
        epochs.append(epoch)
        try:
            for _ in range(3):  # three batches per epoch
                yield torch.randn(2, 3, 224, 224), torch.randint(0, 1000, (2,))
        finally:
            closed.append(epoch)

    batches = training.loader_batches(loader)
    case = _case("a", log, modes=("train",), batches=batches)
    run_rounds([case], _settings(workers=1, repeats=2), progress=False)
    # warm-up 1 step, then per round 2 lead-in + 2 timed steps, then 1 memory step: 10 batches
    # of 3-batch epochs 0, 1, 2 and the first of epoch 3.
    assert _settings(workers=1).lead_in_steps == 2
    assert len(log) == 1 + 2 * (2 + 2) + 1 and len(case.times["train"]) == 2
    assert epochs == [0, 1, 2, 3] and closed == [0, 1, 2]
    batches.close()  # stops the current epoch's loader (its workers)
    assert closed == [0, 1, 2, 3]


def test_compile_adds_compiled_twins_beside_the_eager_rows():
    cases = build_cases(_settings(compile=True))
    compiled = {
        c.name: c for c in cases if isinstance(c.model, torch._dynamo.eval_frame.OptimizedModule)
    }
    assert sorted(compiled) == [f"{ONE_DEVICE}, compiled", f"{REFERENCE}, compiled"]
    eager = {c.name: c for c in cases if c.name not in compiled}
    assert {ONE_DEVICE, REFERENCE} <= set(eager)  # the targets still read the eager rows
    for name in (ONE_DEVICE, REFERENCE):  # the same network, its own weights and optimizer
        twin = compiled[f"{name}, compiled"]
        assert type(twin.model._orig_mod) is type(eager[name].model)
        assert twin.optimizer is not eager[name].optimizer
        assert all(
            torch.equal(a, b)
            for a, b in zip(twin.model.parameters(), eager[name].model.parameters())
        )
    assert len(build_cases(_settings())) == len(cases) - 2


def test_an_empty_loader_is_a_usage_error():
    with pytest.raises(UsageError, match="yields no batch"):
        next(training.loader_batches(lambda epoch: []))


def test_report_and_table_name_every_row_the_ratios_and_the_options():
    log = []
    cases = [_case("a", log), _case("b", log), _case(REFERENCE, log)]
    settings = _settings(compile=True, bf16=True, repeats=2)
    run_rounds(cases, settings, progress=False)
    report = json.loads(json.dumps(training_report(cases, settings, {"cuda": False})))
    assert [r["name"] for r in report["models"]] == ["a", "b", REFERENCE]
    table = training_table(report)
    title = " ".join(table.split("\nmodel ")[0].split())  # the title, wrapped to 100 columns
    assert "torch.compile" in title and "bf16 autocast" in title
    assert report["settings"]["compile"] and report["settings"]["bf16_autocast"]
    _check_report(report, table, names=["a", "b", REFERENCE], repeats=2)


@pytest.mark.parametrize(
    "repeats, steps, warmup, counts",
    [
        (1, 1, 1, "median of 1 round x 1 step (after 1 warm-up step);"),
        (2, 3, 0, "median of 2 rounds x 3 steps (after 0 warm-up steps);"),
    ],
)
def test_table_footer_counts_and_durations_read_as_printed(
    repeats, steps, warmup, counts, monkeypatch
):
    monkeypatch.setattr(
        report_module, "code_version", lambda: {"commit": None, "uncommitted": None}
    )
    log = []
    cases = [_case("a", log), _case(REFERENCE, log)]
    settings = _settings(repeats=repeats, steps=steps, warmup=warmup)
    run_rounds(cases, settings, progress=False)
    lines = training_table(training_report(cases, settings, {"cuda": False})).splitlines()
    assert all(len(line) <= 100 for line in lines)  # the notes wrap to fit 100 columns
    first = next(i for i, line in enumerate(lines) if line.startswith("median of"))
    footer = " ".join(line.strip() for line in lines[first:])  # the notes below the rows
    assert footer.startswith(counts)
    long = duration_text(projected_seconds(100.0))  # the column's format above a day
    assert f"at the training rate (h:mm:ss under a day, else days and hours, e.g. {long})" in footer


def _check_report(report: dict, table: str, names: list, repeats: int) -> None:
    """Every row in the JSON and the table, ratios and projections from the JSON's own rates."""
    rows = {r["name"]: r for r in report["models"]}
    assert list(rows) == names
    ref = rows[REFERENCE]
    for name, row in rows.items():
        line = next(l for l in table.splitlines() if l.startswith(name + "  "))
        for mode in ("train", "infer"):
            r = row[mode]
            assert len(r["step_times_s"]) == repeats
            rate = report["settings"]["batch_size"] / statistics.median(r["step_times_s"])
            assert r["images_per_s"] == pytest.approx(rate)
            ratio = r["images_per_s"] / ref[mode]["images_per_s"]
            assert r["ratio_to_torchvision"] == pytest.approx(ratio)
            assert f"{ratio:.2f}x" in line and f"{r['images_per_s']:.1f}" in line
            best = min(r["step_times_s"]) / min(ref[mode]["step_times_s"])
            assert r["best_ratio_to_torchvision"] == pytest.approx(1 / best)
        seconds = 90 * 1_281_167 / row["train"]["images_per_s"]
        assert row["projected_90_epochs_s"] == pytest.approx(seconds)
        assert line.endswith(duration_text(seconds))


def _cli_report(
    tmp_path, devices: str, batch_size: int, steps: int, warmup: int, capsys, monkeypatch
) -> tuple[dict, str]:
    """One round of scripts/benchmark.py writing JSON; (the JSON report, stdout)."""
    out = tmp_path / "report.json"
    code, stdout, stderr = _cli(
        [
            "--devices",
            devices,
            "--batch-size",
            str(batch_size),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--repeats",
            "1",
            "--quiet",
            "--json",
            str(out),
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, stderr
    return json.loads(out.read_text()), stdout


def _cli(args: list, capsys, monkeypatch) -> tuple[int, str, str]:
    """Run scripts/benchmark.py in this process; (exit status, stdout, stderr)."""
    script = ROOT / "scripts" / "benchmark.py"
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_the_same_as_json(tmp_path, capsys, monkeypatch):
    report, stdout = _cli_report(tmp_path, "cpu", 2, 1, 0, capsys, monkeypatch)
    names = ["AlexNet", "AlexNet two-device (cpu, cpu)", "AlexNet columns=1", REFERENCE]
    _check_report(report, stdout, names, repeats=1)
    assert report["device"]["cpu_cores"] >= 1 and report["versions"]["torch"] == torch.__version__
    isa = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2 or AVX512: in the JSON and the title
    assert report["device"]["cpu_isa"] == isa and f", {isa}, " in stdout.splitlines()[0]
    assert report["settings"]["batch_size"] == 2 and report["settings"]["precision"] == "fp32"
    assert "memory_method" in report["settings"]
    assert set(report["code"]) == {"commit", "uncommitted"}
    rate = {r["name"]: r["train"]["images_per_s"] for r in report["models"]}
    assert report["targets"] == pytest.approx(
        {
            "alexnet_train_vs_torchvision": rate["AlexNet"] / rate[REFERENCE],
            "two_device_train_vs_one_device": rate["AlexNet two-device (cpu, cpu)"]
            / rate["AlexNet"],
        }
    )
    assert "targets: AlexNet trains at" in stdout
    assert "(target >= 0.80x on a CPU)" in stdout  # torchvision's net has no LRN to pay for
    for row in report["models"]:  # weights alone are 61M float32 = 233 MiB for every model here
        assert row["train"]["peak_memory_bytes"] > row["infer"]["peak_memory_bytes"] > 200 << 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "tpu"], "not a device name"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--workers", "-1"], "--workers must be 0 (work in this process) or more, got -1"),
        (["--data", "/no/such/cache"], "no such directory"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, capsys, monkeypatch):
    code, _, stderr = _cli(
        ["--devices", "cpu", *args, "--batch-size", "2", "--quiet"], capsys, monkeypatch
    )
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "json_path, message",
    [
        ("{tmp}", "is a directory: give a file name"),
        ("{tmp}/no/report.json", "folder {tmp}/no does not exist"),
        pytest.param(
            "/proc/report.json",
            "cannot write a file there",
            marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc"),
        ),
    ],
)
def test_cli_refuses_an_unwritable_json_before_measuring(
    json_path, message, tmp_path, capsys, monkeypatch
):
    runs = []
    monkeypatch.setattr(cli, "measure_training", lambda *a, **k: runs.append(a))
    json_path, message = (text.format(tmp=tmp_path) for text in (json_path, message))
    code, _, stderr = _cli(
        ["--devices", "cpu", "--batch-size", "2", "--quiet", "--json", json_path],
        capsys,
        monkeypatch,
    )
    assert code == 2 and stderr.startswith(f"error: --json {json_path}") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert runs == [] and list(tmp_path.iterdir()) == []


def test_a_writable_json_path_is_left_as_it_was(tmp_path):
    (tmp_path / "old.json").write_text("kept")
    check_writable(tmp_path / "old.json")
    check_writable(tmp_path / "new.json")
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "kept"


@cuda
@pytest.mark.cuda
def test_cuda_run_reports_the_gpu_and_tf32(tmp_path, capsys, monkeypatch):
    report, _ = _cli_report(tmp_path, "cuda:0", 4, 2, 1, capsys, monkeypatch)
    assert report["device"]["gpus"]["cuda:0"] == torch.cuda.get_device_name(0)
    assert (
        report["settings"]["backends"]["tf32_matmul"]
        and report["settings"]["precision"] == "fp32/TF32"
    )
    assert {r["name"] for r in report["models"]} >= {
        "AlexNet two-device (cuda:0, cuda:0)",
        REFERENCE,
    }


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_steps_never_wait_for_the_host(bf16):
    # CUDA's sync debug mode raises on any synchronisation (an .item(), a blocking copy, a
    # tensor-valued condition) in the steps of every row with no CPU in it
    gpu = torch.device("cuda", 0)
    settings = Settings(devices=(gpu, gpu), batch_size=4, steps=1, warmup=1, repeats=1, bf16=bf16)
    x, y = training.synthetic_batch(4, gpu)
    for case in build_cases(settings):
        training.train_step(case, x, y, bf16)  # first steps may pick algorithms, allocate
        training.infer_step(case, x, bf16)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            training.train_step(case, x, y, bf16)
            training.infer_step(case, x, bf16)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_the_synthetic_batch_has_the_loaders_layout():
    """What the timed steps get is laid out as what the loader feeds (``augment.to_input``):
    a step compiled on another layout would recompile inside the timed stage."""
    from alexnet2012.data.augment import to_input

    x, y = training.synthetic_batch(4, torch.device("cpu"))
    crops = torch.zeros(4, 224, 224, 3, dtype=torch.uint8)
    fed = to_input(crops, torch.zeros(3, 224, 224))
    assert x.shape == fed.shape and x.stride() == fed.stride() and x.dtype == fed.dtype
    assert y.shape == (4,) and y.dtype == torch.int64


def test_under_torchrun_each_rank_takes_its_gpu_before_nccl_starts(monkeypatch):
    """NCCL binds a rank's communicator to the current CUDA device: it must be the rank's own
    before the process group starts (here, the calls are recorded and the run stops there)."""
    calls = []

    class Started(Exception):
        pass

    def start(world, gpu, shared=False):
        calls.append(("start", gpu))
        raise Started

    world = training.distributed.World(rank=1, size=2, local_rank=1)
    monkeypatch.setattr(training.distributed, "environment", lambda: world)
    monkeypatch.setattr(training.distributed, "start", start)
    monkeypatch.setattr(training.devices, "any_cuda", lambda names: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    with pytest.raises(Started):
        training.measure_replicas(("cuda:1",), 8, 224, steps=1, warmup=0)
    assert calls == [("set_device", "cuda:1"), ("start", True)]
