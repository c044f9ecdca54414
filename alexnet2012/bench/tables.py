"""The benchmarks' reports as text tables: training, the cost model, the data pipeline."""

from __future__ import annotations

import textwrap
from typing import Any

from alexnet2012 import paper
from alexnet2012.bench.cost import MEMORY
from alexnet2012.bench.models import DATA_ROW, ONE_DEVICE
from alexnet2012.units import size_text

WIDTH = 100  # every printed line fits this many columns: prose wraps, tables stay narrower


def _wrap(text: str) -> str:
    """A line of prose in lines of at most :data:`WIDTH` columns; a line that fits as it is."""
    if len(text) <= WIDTH:
        return text
    return textwrap.fill(
        text, WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _columns(lines: list[tuple[str, ...]]) -> list[str]:
    """The first column left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    ]


def training_title(report: dict[str, Any]) -> str:
    """Batch, devices, precision and the options that are on."""
    s, dev = report["settings"], report["device"]
    where = ", ".join(dev["gpus"].values()) or (
        f"{dev['cpu']}, {dev['cpu_isa']}, {dev['cpu_cores']} cores, {dev['torch_threads']} threads"
    )
    options = [s["precision"]] + (["compiled rows: torch.compile"] if s["compile"] else [])
    return (
        f"AlexNet vs {report['reference']}: batch {s['batch_size']} on "
        f"{','.join(s['devices'])} ({where}), {', '.join(options)}"
    )


def training_table(report: dict[str, Any]) -> str:
    """Images/s, ratio to torchvision, peak memory and 90 epochs per row, then notes."""
    head = ("model", "train/s", "x tv", "infer/s", "x tv", "train mem", "infer mem")
    lines = [(*head, f"{paper.EPOCHS} epochs")]
    for row in report["models"]:
        cells = [row["name"]]
        for r in (row["train"], row["infer"]):
            rate = None if r is None else (r["images_per_s"], r["ratio_to_torchvision"])
            cells += ["-", "-"] if rate is None else [f"{rate[0]:.1f}", f"{rate[1]:.2f}x"]
        for r in (row["train"], row["infer"]):
            cells.append("-" if r is None else size_text(r["peak_memory_bytes"]))
        cells.append(row.get("projected_90_epochs", "-"))
        lines.append(tuple(cells))
    s = report["settings"]
    notes = [
        f"median of {_count(s['repeats'], 'round')} x {_count(s['steps'], 'step')} "
        f"(after {_count(s['warmup'], 'warm-up step')}); train/s, infer/s: images per second; "
        f"x tv: images/s over {report['reference']}'s in this run; mem: peak memory; "
        f"{paper.EPOCHS} epochs = {paper.EPOCHS} x "
        f"{paper.TRAIN_IMAGES_2012:,} images at the training rate (h:mm:ss under a day, else "
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
        on_cpu = all(d == "cpu" for d in report["device"]["devices"])
        notes.append(
            f"targets: AlexNet trains at {t['alexnet_train_vs_torchvision']:.2f}x "
            f"torchvision (target >= {'0.80x on a CPU' if on_cpu else '1.00x'}); "
            f"the two-device path at "
            f"{t['two_device_train_vs_one_device']:.2f}x the one-device net (target on "
            f"one GPU: >= 0.90x)"
        )
    if s["data"] is not None:
        notes.append(
            f"{DATA_ROW}: end to end (loader from {s['data']['cache']}, "
            f"{s['data']['workers']} workers) with the AlexNet row's model; compare "
            f"with the AlexNet row (model only)"
        )
    return "\n".join([_wrap(training_title(report)), *_columns(lines), *map(_wrap, notes)])


def top_ops(row: dict[str, Any], n: int = 5) -> str:
    """``aten.x 1.23 GB (12), ...``: the ``n`` memory-bound op types with the most bytes."""
    mem = [(name, r) for name, r in row["by_op"].items() if r["kind"] == MEMORY][:n]
    return ", ".join(f"{name} {size_text(r['bytes'])} ({r['count']})" for name, r in mem)


def cost_table(report: dict[str, Any]) -> str:
    """The counts and ratios to torchvision's, the projections, peaks, top ops and targets."""
    head = ("model", "mem ops", "x tv", "mem bytes", "x tv", "comp ops", "GFLOP", "comp bytes")
    lines = [(*head, "not counted")]
    for row in report["models"]:
        r = row["ratio_to_torchvision"] or {}
        lines.append(
            (
                row["name"],
                str(row["memory_ops"]),
                _x(r.get("memory_ops")),
                size_text(row["memory_bytes"]),
                _x(r.get("memory_bytes")),
                str(row["compute_ops"]),
                f"{row['flops'] / 1e9:.0f}",
                size_text(row["compute_bytes"]),
                str(sum(row["not_counted"].values())),
            )
        )
    text = [
        f"Cost of one training step at batch {report['batch_size']}, counted on the meta "
        f"device (CUDA code path, fp32): memory-bound ops and the bytes they read + write; "
        f"comp(ute) = convolutions and matrix products; not counted: views, allocations, "
        f"metadata ops",
        *_columns(lines),
    ]
    a = report["assumptions"]
    projected = []
    for i, g in enumerate(a["gpus"]):
        lines = [("model", "launch ms", f"{g['name']} ms", "img/s", "+launch ms", "img/s", "x tv")]
        for row in report["models"]:
            p = row["projection"][i]
            lines.append(
                (
                    row["name"],
                    f"{p['launch_s'] * 1e3:.2f}",
                    f"{p['step_s'] * 1e3:.2f}",
                    f"{p['images_per_s']:,.0f}",
                    f"{p['step_s_with_launch'] * 1e3:.2f}",
                    f"{p['images_per_s_with_launch']:,.0f}",
                    _x(p.get("step_s_with_launch_ratio_to_torchvision")),
                )
            )
        projected += _columns(lines)
    peaks = "; ".join(
        f"{g['name']}: TF32 tensor {g['tf32_flops'] / 1e12:g}, FP32 "
        f"{g['fp32_flops'] / 1e12:g}, BF16 {g['bf16_flops'] / 1e12:g} TFLOP/s, "
        f"{g['bandwidth'] / 1e12:g} TB/s"
        for g in a["gpus"]
    )
    text += [
        "",
        f"Projected step time, ESTIMATE (not a measurement) from datasheet figures: per op "
        f"max(FLOPs / ({a['compute_efficiency']:.0%} of peak), bytes / "
        f"({a['memory_efficiency']:.0%} of bandwidth)), summed; fp32 products at the "
        f"{'TF32 tensor' if a['tf32'] else 'FP32'} peak; launch ms: "
        f"{a['launch_s'] * 1e6:g} us of host time per op; +launch: each kernel starts "
        f"once launched and the previous one is done; x tv: +launch time over "
        f"torchvision's",
        *projected,
        f"peaks assumed ({a['peak_source']}): {peaks}",
    ]
    for row in report["models"]:
        if row["name"] in (ONE_DEVICE, report["reference"]):
            text.append(f"top memory-bound op types by bytes, {row['name']}: {top_ops(row)}")
    for name, t in report["targets"].items():
        text.append(
            f"target, {name}: memory-bound ops {t['memory_ops_ratio']:.2f}x and bytes "
            f"{t['memory_bytes_ratio']:.2f}x torchvision's (target <= "
            f"{t['target']:.1f}x each): {'met' if t['met'] else 'NOT met'}"
        )
    return "\n".join(map(_wrap, text))


def data_pipeline_table(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    caches = ", ".join(f"{fmt} {path}" for fmt, path in s["caches"].items())
    sizes = report["cache_bytes"]
    size_line = "training images' bytes: " + ", ".join(
        f"{fmt} {size_text(n)}" for fmt, n in sizes.items()
    )
    lines = [
        f"{m['cpu']}, {m['cores_available']} cores, "
        f"load average {m['load_average_at_start'][0]:.2f} at start, "
        f"{m['load_average_at_end'][0]:.2f} at end; "
        f"torch {m['torch']}; device {m['device_name']}",
        f"caches: {caches}" + (f" (JPEG quality {s['jpeg_quality']})" if s["jpeg_quality"] else ""),
        f"{s['train_images']} train images, batch {s['batch_size']}, crop {s['crop']}, "
        f"torch threads {s['torch_threads']}; {size_line}",
        "",
    ]
    rows = [("stage", "format", "images", "img/s", "cores", "img/s/core", "img/cpu-s")]
    for st in report["stages"]:
        per_cpu = st["images_per_cpu_s"]
        rows.append(
            (
                st["stage"],
                st["format"],
                str(st["images"]),
                f"{st['images_per_s']:.0f}",
                str(st["cores"]),
                f"{st['images_per_s_per_core']:.0f}",
                "-" if per_cpu is None else f"{per_cpu:.0f}",
            )
        )
    lines += _columns(rows)
    lines += ["", "targets (img/cpu-s: images per CPU-second of this process and its workers):"]
    for t in report["targets"]:
        v = t["value"]
        value = "not measured" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.3g}"
        verdict = {None: "-", True: "met", False: "NOT met"}[t["met"]]
        bound = f"{'<=' if t['at_most'] else '>='} {t['bound']:g}"
        lines.append(f"  {t['target']}: {value} (target {bound}): {verdict}")
    return "\n".join(lines)
