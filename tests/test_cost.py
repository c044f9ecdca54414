"""The cost model (alexnet2012/bench: cost, cost_report) against counts, bytes, FLOPs
and times worked out by hand, and scripts/benchmark.py's --cost and --cost-only."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.bench import models
from alexnet2012.bench.cost import (
    COMPUTE,
    MEMORY,
    Op,
    StepCost,
    count,
    tensor_bytes,
    training_step_cost,
)
from alexnet2012.bench.cost_report import (
    GPU,
    Assumptions,
    cost_report,
    launch_bound_seconds,
    op_seconds,
    project,
)
from alexnet2012.bench.tables import cost_table
from alexnet2012.cli import benchmark as cli

ROOT = Path(__file__).resolve().parents[1]
F32 = 4


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_one_relu_is_one_memory_bound_op_reading_and_writing_its_tensor():
    x = meta(2, 3, 4, 5)
    c = count(lambda _: F.relu(x))
    assert [(op.name, op.kind) for op in c.ops] == [("aten.relu", MEMORY)]
    assert c.memory_ops == 1 and c.compute_ops == 0 and c.flops == 0
    assert c.memory_bytes == 2 * 120 * F32 and c.ops[0].bytes_read == 120 * F32


def test_a_linear_layer_is_one_compute_bound_addmm_of_2_n_in_out_flops():
    n, fan_in, fan_out = 8, 16, 4
    with torch.device("meta"):
        layer = nn.Linear(fan_in, fan_out)
    x = meta(n, fan_in)
    c = count(lambda _: layer(x))
    assert [(op.name, op.kind) for op in c.ops] == [("aten.addmm", COMPUTE)]  # bias add inside
    assert c.skipped == {"aten.t": 1}  # the weight's transpose is a view
    assert c.flops == c.ops[0].flops == 2 * n * fan_in * fan_out
    assert c.memory_ops == 0 and c.memory_bytes == 0
    assert c.compute_bytes == (n * fan_in + fan_out * fan_in + fan_out + n * fan_out) * F32


def test_views_and_allocations_launch_nothing():
    x = meta(4, 6, 8)

    def views(_):
        x.view(24, 8), x.reshape(4, 48), x.permute(2, 0, 1), x.transpose(0, 1), x[0].t()
        x[:, :1].expand(4, 6, 8), x[1:3], x.select(0, 1), x.unsqueeze(0).squeeze(0)
        x.detach(), x.as_strided((2, 2), (1, 1)), x.flatten(1), x.chunk(2, dim=1)
        torch.empty(3, device="meta"), torch.empty_like(x), x.new_empty(5)

    c = count(views)
    assert c.ops == [] and sum(c.skipped.values()) > 10 and "aten.empty_like" in c.skipped


def test_in_place_ops_read_and_write_the_mutated_tensor_and_out_tensors_are_only_written():
    a, b, out = meta(10), meta(10), meta(10)
    c = count(lambda _: a.add_(b))
    assert c.memory_ops == 1 and (c.ops[0].bytes_read, c.ops[0].bytes_written) == (80, 40)
    c = count(lambda _: a.zero_())  # the rule: a mutated tensor counts as read and written
    assert c.memory_ops == 1 and c.memory_bytes == 2 * 40
    c = count(lambda _: torch.add(a, b, out=out))
    assert c.memory_ops == 1 and (c.ops[0].bytes_read, c.ops[0].bytes_written) == (80, 40)
    c = count(lambda _: torch.zeros(10, device="meta"))
    assert c.memory_ops == 1 and (c.ops[0].bytes_read, c.ops[0].bytes_written) == (0, 40)


def test_a_foreach_op_is_one_op_over_all_its_tensors():
    ws, gs = [meta(3), meta(5, 2)], [meta(3), meta(5, 2)]
    c = count(lambda _: torch._foreach_add_(ws, gs, alpha=-0.1))
    assert [op.name for op in c.ops] == ["aten._foreach_add_"]
    assert (c.ops[0].bytes_read, c.ops[0].bytes_written) == (2 * 13 * F32, 13 * F32)


def test_an_expanded_input_counts_the_elements_it_stores():
    bias = meta(6)
    assert tensor_bytes(bias.view(1, 6, 1).expand(4, 6, 9)) == 6 * F32
    assert tensor_bytes(meta(4, 6, 9)[:, :2]) == 4 * 2 * 9 * F32
    assert tensor_bytes(meta(3, dtype=torch.uint8)) == 3 and tensor_bytes(meta(0, 7)) == 0


def test_dropout_counts_as_cudas_fused_kernel():
    x = meta(4, 256)
    c = count(lambda _: F.dropout(x, 0.5, training=True))
    assert [op.name for op in c.ops] == ["aten.native_dropout"]
    assert (c.ops[0].bytes_read, c.ops[0].bytes_written) == (1024 * F32, 1024 * F32 + 1024)
    assert count(lambda _: F.dropout(x, 0.5, training=False)).ops == []


def test_a_channels_last_convolution_keeps_cudnns_layout_so_no_copy_follows():
    x, weight = meta(2, 8, 9, 9), meta(16, 8, 3, 3)
    x_cl, weight_cl = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))

    def conv_then_channels_last(_):
        for inputs in ((x_cl, weight_cl), (x_cl, weight), (x, weight_cl)):
            y = F.conv2d(*inputs)
            assert y.is_contiguous(memory_format=torch.channels_last)
            y.contiguous(memory_format=torch.channels_last)
        assert F.conv2d(x, weight).contiguous().is_contiguous()  # NCHW stays NCHW

    c = count(conv_then_channels_last)
    assert [op.name for op in c.ops] == ["aten.convolution"] * 4
    assert c.flops == 4 * (2 * 2 * 16 * 7 * 7 * 8 * 3 * 3)


def test_a_training_step_counts_forward_backward_and_the_paper_sgd_update_by_phase():
    n, classes, size = 4, 10, 8
    fan_in = 3 * size * size
    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(fan_in, classes))
    c = training_step_cost(model, n, input_size=size)
    names = {
        phase: [op.name for op in c.ops if op.phase == phase]
        for phase in ("forward", "backward", "optimizer")
    }
    assert names["forward"] == ["aten.addmm", "aten._log_softmax", "aten.nll_loss_forward"]
    assert names["backward"].count("aten.mm") == 1  # the weight's gradient; the input needs none
    # PaperSGD's foreach update, steady state (the velocity exists): weights mul, add w, add g,
    # add v; biases (no decay) mul, add g, add v
    assert sorted(names["optimizer"]) == sorted(
        ["aten._foreach_mul_"] * 2 + ["aten._foreach_add_"] * 5
    )
    w, b = fan_in * classes, classes
    optimizer_bytes = sum(op.bytes for op in c.ops if op.phase == "optimizer")
    assert optimizer_bytes == F32 * (w * (2 + 3 + 3 + 3) + b * (2 + 3 + 3))
    assert c.flops == sum(op.flops for op in c.ops) == 2 * (2 * n * fan_in * classes)


def test_roofline_of_a_synthetic_op_list_is_the_formula():
    gpu = GPU("test", fp32_flops=1e12, tf32_flops=2e12, bf16_flops=4e12, bandwidth=1e9)
    assume = Assumptions(compute_efficiency=0.5, memory_efficiency=0.25, launch_s=1e-3)
    product = Op("aten.mm", COMPUTE, "forward", 3e12, 1e6, 1e6, torch.float32)
    half = Op("aten.mm", COMPUTE, "forward", 3e12, 0, 0, torch.bfloat16)
    copy = Op("aten.clone", MEMORY, "forward", 0, 5e8, 5e8, torch.float32)
    assert op_seconds(product, gpu, assume) == pytest.approx(3e12 / (0.5 * 2e12))  # TF32: 3 s
    assert op_seconds(half, gpu, assume) == pytest.approx(3e12 / (0.5 * 4e12))
    assert op_seconds(product, gpu, Assumptions(0.5, 0.25, tf32=False)) == pytest.approx(6.0)
    assert op_seconds(copy, gpu, assume) == pytest.approx(1e9 / (0.25 * 1e9))  # 4 s
    p = project(StepCost([product, copy]), gpu, batch_size=70, assume=assume)
    assert p["step_s"] == pytest.approx(7.0) and p["images_per_s"] == pytest.approx(10.0)
    assert p["step_s_with_launch"] == pytest.approx(1e-3 + 7.0)  # the first launch, then busy
    assert (p["compute_ops_s"], p["memory_ops_s"], p["launch_s"]) == pytest.approx((3, 4, 2e-3))
    # launch-bound: kernels of 0.5 ms behind 1 ms launches end 0.5 ms after the last launch
    assert launch_bound_seconds([5e-4] * 4, 1e-3) == pytest.approx(4.5e-3)
    # the second waits for its launch at 2 ms, the third for the second kernel
    assert launch_bound_seconds([5e-4, 3e-3, 5e-4], 1e-3) == pytest.approx(2e-3 + 3e-3 + 5e-4)


@pytest.fixture(scope="module")
def report():
    return cost_report(batch_size=2)


def test_torchvision_alexnet_counts_its_known_layers_flops_and_optimizer_bytes(report):
    tv = next(r for r in report["models"] if r["name"] == models.REFERENCE)
    # torchvision alexnet's forward: 714,188,480 multiply-adds per image (conv1 70,276,800;
    # conv2 223,948,800; conv3 112,140,288; conv4 149,520,384; conv5 99,680,256; fc6 37,748,736;
    # fc7 16,777,216; fc8 4,096,000)
    assert tv["by_phase"]["forward"]["flops"] == 2 * 2 * 714_188_480
    # forward: 7 ReLU, 3 max-pool, the adaptive pool, 2 dropouts, log-softmax, NLL
    assert tv["by_phase"]["forward"]["memory_ops"] == 7 + 3 + 1 + 2 + 1 + 1
    assert (
        tv["by_op"]["aten.relu_"]["count"] == tv["by_op"]["aten.threshold_backward"]["count"] == 7
    )
    assert tv["by_phase"]["forward"]["compute_ops"] == 5 + 3
    weights = 61_100_840 - 10_344  # torchvision alexnet's parameters, of which 10,344 biases
    assert tv["by_phase"]["optimizer"]["memory_bytes"] == F32 * (weights * 11 + 10_344 * 8)


def test_report_has_the_four_models_their_ratios_and_the_targets(report):
    names = [r["name"] for r in report["models"]]
    assert names == [models.ONE_DEVICE, models.TWO_DEVICE, models.ONE_COLUMN, models.REFERENCE]
    tv = report["models"][-1]
    for row in report["models"]:
        r = row["ratio_to_torchvision"]
        assert r["memory_ops"] == pytest.approx(row["memory_ops"] / tv["memory_ops"])
        assert r["memory_bytes"] == pytest.approx(row["memory_bytes"] / tv["memory_bytes"])
        assert row["memory_ops"] > 0 and row["compute_ops"] > 0 and row["flops"] > 0
        assert sum(v["count"] for v in row["by_op"].values()) == (
            row["memory_ops"] + row["compute_ops"]
        )
        assert [p["gpu"] for p in row["projection"]] == ["H100 SXM5", "H200 SXM"]
        # same ops, more bandwidth: the H200 is no slower
        assert row["projection"][1]["step_s"] <= row["projection"][0]["step_s"]
    assert tv["ratio_to_torchvision"]["memory_ops"] == 1.0
    assert set(report["targets"]) == {models.ONE_DEVICE, models.TWO_DEVICE}
    for t in report["targets"].values():
        assert t["met"] == (t["memory_ops_ratio"] <= 1.5 and t["memory_bytes_ratio"] <= 1.5)
    printed = cost_table(report)
    assert all(len(line) <= 100 for line in printed.splitlines())
    text = " ".join(printed.split())  # notes wrap at 100 columns: read them as one text
    assert "ESTIMATE (not a measurement)" in text and "TF32 tensor 495" in text
    assert "3.35 TB/s" in text and "4.8 TB/s" in text and "60% of peak" in text
    assert f"top memory-bound op types by bytes, {models.ONE_DEVICE}: " in text


def _cli(args: list, capsys, monkeypatch) -> tuple[int, str, str]:
    script = ROOT / "scripts" / "benchmark.py"
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_cost_only_prints_the_table_and_writes_the_peaks_and_ratios(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "cost.json"
    code, stdout, stderr = _cli(
        ["--cost-only", "--batch-size", "2", "--json", str(out)], capsys, monkeypatch
    )
    assert code == 0, stderr
    written = json.loads(out.read_text())["cost"]
    assert written["batch_size"] == 2
    gpus = {g["name"]: g for g in written["assumptions"]["gpus"]}
    assert gpus["H100 SXM5"]["tf32_flops"] == 495e12 and gpus["H100 SXM5"]["bandwidth"] == 3.35e12
    assert gpus["H200 SXM"]["bf16_flops"] == 989e12 and gpus["H200 SXM"]["bandwidth"] == 4.8e12
    assert written["assumptions"]["compute_efficiency"] == 0.6
    assert written["assumptions"]["memory_efficiency"] == 0.8
    assert written["assumptions"]["launch_s"] == 4e-6
    assert len(written["models"]) == 4
    for row in written["models"]:
        assert row["ratio_to_torchvision"]["memory_bytes"] > 0 and row["by_op"]
        assert f"{row['ratio_to_torchvision']['memory_ops']:.2f}x" in stdout
    assert stdout.startswith("Cost of one training step at batch 2")


def test_cli_cost_prints_both_tables_and_adds_cost_to_the_timed_report(
    report, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "measure_training", lambda settings, progress: {"timed": True})
    monkeypatch.setattr(cli, "training_table", lambda r: "TIMED TABLE")
    monkeypatch.setattr(cli, "cost_report", lambda batch_size: report)
    out = tmp_path / "r.json"
    code, stdout, stderr = _cli(
        ["--cost", "--devices", "cpu", "--batch-size", "2", "--json", str(out)], capsys, monkeypatch
    )
    assert code == 0, stderr
    assert stdout.index("TIMED TABLE") < stdout.index("ESTIMATE (not a measurement)")
    assert json.loads(out.read_text()) == json.loads(json.dumps({"timed": True, "cost": report}))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cost-only", "--steps", "3"], "--cost-only times nothing: --steps"),
        (["--cost-only", "--devices", "cpu", "--compile"], "--devices, --compile would not apply"),
        (["--cost", "--bf16"], "--cost counts the fp32 step"),
    ],
)
def test_cli_cost_refuses_options_it_would_not_apply(args, message, capsys, monkeypatch):
    monkeypatch.setattr(cli, "cost_report", lambda batch_size: pytest.fail("ran"))
    code, _, stderr = _cli(args, capsys, monkeypatch)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
