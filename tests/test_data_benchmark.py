"""The data benchmark runs every stage on a small cache and reports consistent figures."""

import subprocess
import sys
from pathlib import Path

import pytest

from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.data.benchmark import format_table, run_benchmark
from alexnet2012.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "imagenet"
    make_synthetic_imagenet(root, classes=2, train_per_class=6, val_per_class=1, seed=0)
    out = tmp_path_factory.mktemp("cache")
    prepare_cache(root, out, splits=("train",), workers=0, progress=False)
    return out


def test_every_stage_is_measured(cache):
    report = run_benchmark(cache, batch_size=4, workers=1, batches=5, decode_images=12)
    assert [s["stage"] for s in report["stages"]] == [
        "decode JPEG -> 256x256 (Pillow, 1 process)",
        "read cache rows (memmap gather)",
        "augment: crop, flip, lighting, mean (cpu)",
        "end to end: train_loader, workers=0 (cpu)",
        "end to end: train_loader, workers=1 (cpu)",
    ]
    assert report["stages"][0]["images"] == 10  # 12 files, 2 of them unreadable
    for stage in report["stages"][1:]:
        assert stage["images"] == 5 * 4  # 5 batches of 4, over epochs of 10 // 4 = 2 batches
    for stage in report["stages"]:
        assert stage["images_per_s"] == pytest.approx(stage["images"] / stage["seconds"])
    assert report["settings"]["train_images"] == 10 and report["machine"]["cpu_cores"] >= 1
    table = format_table(report)
    assert "end to end: train_loader, workers=1 (cpu)" in table and "img/cpu-s" in table


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(threads=0), "--threads must be at least 1, not 0"),
        (dict(batches=0), "--batches must be at least 1, not 0"),
        (dict(batches=-3), "--batches must be at least 1, not -3"),
        (dict(decode_images=-1), "--decode-images must be at least 1, not -1"),
        (dict(batch_size=11), "--batch-size must be at most the 10 training images .*, not 11"),
        (dict(workers=-1), "--workers must be 0 .* or more, not -1"),
        (dict(device="cuda:99"), "--device: CUDA device cuda:99 does not exist on this machine"),
    ],
)
def test_bad_settings_are_refused_before_measuring(cache, kwargs, message):
    with pytest.raises(UsageError, match=message):
        run_benchmark(cache, **{"batch_size": 4, "batches": 1, "decode_images": 1, **kwargs})


def test_a_cache_path_that_is_no_folder_is_named_as_such(tmp_path):
    (tmp_path / "afile").write_text("x")
    for path, what in [("nope", "does not exist"), ("afile", "is a file, not a folder")]:
        with pytest.raises(
            UsageError,
            match=f"^{tmp_path / path} {what}: check the path \\(a cache is the folder made by "
            "scripts/prepare_imagenet.py SRC CACHE\\)$",
        ):
            run_benchmark(tmp_path / path, batch_size=4, batches=1, decode_images=1)


def test_a_source_that_is_not_the_caches_is_refused(cache, tmp_path):
    other = tmp_path / "other"
    make_synthetic_imagenet(other, classes=1, train_per_class=1, val_per_class=1, seed=9)
    with pytest.raises(UsageError, match=f"{other} is not the cache's source .*give --src"):
        run_benchmark(cache, src=other, batch_size=4, batches=1, decode_images=1)


@pytest.mark.slow
def test_the_script_checks_json_before_measuring(tmp_path):
    # A cache that does not exist: the --json check must come first.
    script, missing = str(REPO / "scripts/benchmark_data.py"), str(tmp_path / "none")
    for path, message in [
        ("/proc/x/d.json", "folder /proc/x does not exist"),
        ("/proc/d.json", "cannot write a file there"),
    ]:
        run = subprocess.run(
            [sys.executable, script, "--cache", missing, "--json", path],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and run.stdout == ""
        assert run.stderr.startswith(f"error: --json {path}: {message}")
        assert run.stderr.count("\n") == 1
