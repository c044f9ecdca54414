"""The data-pipeline benchmark runs every stage on a small cache, in both formats and
torchvision's path, and reports consistent figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet2012.bench import data as bench_data
from alexnet2012.bench.data import measure_data_pipeline
from alexnet2012.bench.tables import data_pipeline_table
from alexnet2012.cli.benchmark_data import main
from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "imagenet"
    make_synthetic_imagenet(root, classes=2, train_per_class=6, val_per_class=1, seed=0)
    return root


@pytest.fixture(scope="module")
def cache(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    prepare_cache(source, out, splits=("train",), workers=0, progress=False)
    return out


def test_every_stage_is_measured(cache, capsys):
    report = measure_data_pipeline(cache, batch_size=4, workers=1, batches=5, decode_images=12)
    loaders = [
        "end to end: train_loader, workers=0 (cpu)",
        "end to end: train_loader, workers=1 (cpu)",
    ]
    augment = "augment: crop, flip, lighting, mean (cpu)"
    assert [(s["format"], s["stage"]) for s in report["stages"]] == [
        ("source", "decode source JPEG -> 256x256 (Pillow, 1 process)"),
        *[("raw", s) for s in ["read cache rows (memmap gather)", augment, *loaders]],
        *[
            ("jpeg", s)
            for s in [
                "read and decode JPEG rows (torchvision, 1 thread)",
                "decode JPEG rows (Pillow, 1 thread)",
                augment,
                *loaders,
            ]
        ],
        ("torchvision", "end to end: ImageFolder + DataLoader, workers=0 (cpu)"),
        ("torchvision", "end to end: ImageFolder + DataLoader, workers=1 (cpu)"),
    ]
    assert report["stages"][0]["images"] == 10  # the usable ones of the first 12 files
    for stage in report["stages"][1:]:
        assert stage["images"] == 5 * 4  # 5 batches of 4, over epochs of 10 // 4 = 2 batches
    for stage in report["stages"]:
        assert stage["images_per_s"] == pytest.approx(stage["images"] / stage["seconds"])
    assert report["settings"]["train_images"] == 10 and report["machine"]["cpu_cores"] >= 1
    assert report["settings"]["jpeg_quality"] == 90
    built = Path(report["settings"]["caches"]["jpeg"])
    assert not built.exists() and "preparing a jpeg cache" in capsys.readouterr().out
    sizes = report["cache_bytes"]
    assert sizes["raw"] == (cache / "train_images.npy").stat().st_size
    targets = {t["target"]: t for t in report["targets"]}
    ratio = targets["JPEG cache bytes / raw cache bytes"]
    assert ratio["value"] == sizes["jpeg"] / sizes["raw"] and ratio["met"]
    jpeg_e2e, tv = (
        report["stages"][-3]["images_per_cpu_s"],
        report["stages"][-1]["images_per_cpu_s"],
    )
    per_core = targets["end-to-end JPEG loader / torchvision ImageFolder, per core"]["value"]
    assert per_core == pytest.approx(jpeg_e2e / tv)
    table = data_pipeline_table(report)
    assert "end to end: train_loader, workers=1 (cpu)" in table and "img/cpu-s" in table
    assert "JPEG cache bytes / raw cache bytes" in table


def test_a_given_jpeg_cache_is_measured_and_checked(source, cache, tmp_path):
    jpeg = tmp_path / "jpeg"
    prepare_cache(source, jpeg, splits=("train",), workers=0, progress=False, format="jpeg")
    kw = dict(batch_size=4, workers=0, batches=1, decode_images=1, torchvision=False)
    report = measure_data_pipeline(cache, jpeg_cache=jpeg, formats=("jpeg",), **kw)
    assert report["settings"]["caches"] == {"jpeg": str(jpeg)}
    assert {s["format"] for s in report["stages"]} == {"source", "jpeg"}
    with pytest.raises(UsageError, match=f"--data {jpeg} is a JPEG cache: give a raw one"):
        measure_data_pipeline(jpeg, jpeg_cache=jpeg, **kw)
    with pytest.raises(UsageError, match=f"--jpeg-cache {cache} is a raw cache"):
        measure_data_pipeline(cache, jpeg_cache=cache, **kw)
    other = tmp_path / "other"
    make_synthetic_imagenet(other, classes=2, train_per_class=5, val_per_class=1, seed=0)
    prepare_cache(
        other, tmp_path / "o", splits=("train",), workers=0, progress=False, format="jpeg"
    )
    with pytest.raises(UsageError, match="holds other training images than --data"):
        measure_data_pipeline(cache, jpeg_cache=tmp_path / "o", **kw)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--batches", "0"], "--batches must be at least 1, got 0"),
        (["--batches", "-3"], "--batches must be at least 1, got -3"),
        (["--decode-images", "-1"], "--decode-images must be at least 1, got -1"),
        (["--batch-size", "11"], "--batch-size must be at most the 10 training images .*, got 11"),
        (["--workers", "-1"], "--workers must be 0 .* or more, got -1"),
        (["--input-size", "225"], "--input-size must be 224 .* or 227 .*, got 225"),
        (["--quality", "0"], "--quality must be at least 1, got 0"),
        (["--quality", "101"], "--quality must be at most 100, got 101"),
        (["--devices", "cuda:99"], "--devices: CUDA device cuda:99 does not exist on this machine"),
        (["--devices", "cpu,cpu"], "--devices: the data stages run on one device, got 2"),
    ],
)
def test_bad_settings_are_refused_before_measuring(cache, args, message, monkeypatch):
    stages = []
    monkeypatch.setattr(bench_data, "decode_source", lambda *a: stages.append(a))
    base = ["--data", str(cache), "--batch-size", "4", "--batches", "1", "--decode-images", "1"]
    with pytest.raises(UsageError, match=f"^{message}"):
        main([*base, *args])
    assert stages == []


def test_the_command_line_takes_the_input_size_and_writes_the_report(cache, tmp_path, capsys):
    out = tmp_path / "data.json"
    args = ["--batch-size", "4", "--workers", "0", "--batches", "2", "--decode-images", "2"]
    args += ["--formats", "raw", "--no-torchvision"]
    main(["--data", str(cache), *args, "--input-size", "227", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["settings"]["crop"] == 227 and report["settings"]["workers"] == 0
    assert len(report["stages"]) == 4 and "crop 227" in capsys.readouterr().out


def test_a_cache_path_that_is_no_folder_is_named_as_such(tmp_path):
    (tmp_path / "afile").write_text("x")
    for path, what in [("nope", "does not exist"), ("afile", "is a file, not a folder")]:
        with pytest.raises(
            UsageError,
            match=f"^{tmp_path / path} {what}: check the path \\(a cache is the folder made by "
            "scripts/prepare_imagenet.py SRC CACHE\\)$",
        ):
            measure_data_pipeline(tmp_path / path, batch_size=4, batches=1, decode_images=1)


def test_a_source_that_is_not_the_caches_is_refused(cache, tmp_path):
    other = tmp_path / "other"
    make_synthetic_imagenet(other, classes=1, train_per_class=1, val_per_class=1, seed=9)
    with pytest.raises(UsageError, match=f"{other} is not the cache's source .*give --src"):
        measure_data_pipeline(cache, src=other, batch_size=4, batches=1, decode_images=1)


@pytest.mark.slow
def test_the_script_checks_json_before_measuring(tmp_path):
    # A cache that does not exist: the --json check must come first.
    script, missing = str(REPO / "scripts/benchmark_data.py"), str(tmp_path / "none")
    for path, message in [
        ("/proc/x/d.json", "folder /proc/x does not exist"),
        ("/proc/d.json", "cannot write a file there"),
    ]:
        run = subprocess.run(
            [sys.executable, script, "--data", missing, "--json", path],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and run.stdout == ""
        assert run.stderr.startswith(f"error: --json {path}: {message}")
        assert run.stderr.count("\n") == 1
