"""The data benchmark runs every stage on a small cache and reports consistent figures."""

import pytest

from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.data.benchmark import format_table, run_benchmark


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
