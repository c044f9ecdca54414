"""The paper's preprocessing into the cache: 256x256 rows, aspect handling, the ILSVRC oddities,
the bad-file report, resuming after an interruption, parallel workers (P §2)."""

import csv
import json
import re
import shutil
import subprocess
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from alexnet2012.data import cache_info, make_synthetic_imagenet, prepare_cache, train_loader
from alexnet2012.data import prepare as prepare_module
from alexnet2012.data import writers as writers_module
from alexnet2012.data.prepare import load_256
from alexnet2012.errors import UsageError, ignore_interrupt

REPO = Path(__file__).resolve().parents[1]
TORCHVISION_256 = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256)])


def reference_row(path) -> np.ndarray:
    """What torchvision's standard pipeline makes of the file: Pillow decode, RGB, Resize(256),
    CenterCrop(256)."""
    with Image.open(path) as img:
        return np.asarray(TORCHVISION_256(img.convert("RGB")))


def cache_rows(cache: Path, split: str) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """The cache read back with plain numpy/csv: images, index rows, status."""
    images = np.load(cache / f"{split}_images.npy")
    with open(cache / f"{split}_index.tsv") as f:
        index = list(csv.reader(f, delimiter="\t"))[1:]
    return images, index, np.load(cache / f"{split}_status.npy")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "imagenet"
    make_synthetic_imagenet(root, classes=3, train_per_class=5, val_per_class=3, seed=1)
    return root


@pytest.fixture(scope="module")
def prepared(synthetic, tmp_path_factory) -> tuple[Path, dict]:
    cache = tmp_path_factory.mktemp("cache")
    return cache, prepare_cache(synthetic, cache, workers=0, progress=False)


@pytest.mark.parametrize("size", [(640, 480), (300, 700), (256, 256), (100, 60), (257, 1000)])
def test_decode_matches_torchvision_resize_and_centre_crop(tmp_path, size):
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 3] = (255, 0, 0)  # structure, so that a wrong crop offset shows
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    row = load_256(path)
    assert row.shape == (256, 256, 3) and row.dtype == np.uint8
    np.testing.assert_array_equal(row, reference_row(path))


def test_aspect_is_kept_and_the_centre_is_cut(tmp_path):
    # A 1024x512 image: left quarter red, middle half green, right quarter blue. Scaled to 512x256,
    # the central 256 columns are exactly the green half.
    pixels = np.zeros((512, 1024, 3), np.uint8)
    pixels[:, :256] = (255, 0, 0)
    pixels[:, 256:768] = (0, 255, 0)
    pixels[:, 768:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    row = load_256(tmp_path / "wide.png")
    assert (row[:, 1:-1] == (0, 255, 0)).all()  # the outer columns may blend with the neighbours


def test_rows_are_the_decoded_images_and_oddities_are_handled(synthetic, prepared):
    cache, summary = prepared
    oddities = {
        row[0]: (row[1], row[2])
        for row in csv.reader(open(synthetic / "oddities.tsv"), delimiter="\t")
    }
    oddities.pop("path")
    kinds = sorted(kind for kind, _ in oddities.values())
    assert kinds == [
        "cmyk",
        "cmyk",
        "empty",
        "grayscale",
        "grayscale",
        "png",
        "truncated",
        "truncated",
    ]
    # The oddities are what they claim to be.
    for path, (kind, _) in oddities.items():
        file = synthetic / path
        if kind == "empty":
            assert file.stat().st_size == 0
        elif kind == "truncated":
            with pytest.raises(OSError), Image.open(file) as img:
                img.load()
        else:
            with Image.open(file) as img:
                assert (img.format, img.mode) == {
                    "grayscale": ("JPEG", "L"),
                    "cmyk": ("JPEG", "CMYK"),
                    "png": ("PNG", "RGB"),
                }[kind]

    for split in ("train", "val"):
        images, index, status = cache_rows(cache, split)
        assert images.shape == (len(index), 256, 256, 3)
        bad = {
            path: reason
            for path, reason in csv.reader(open(cache / f"{split}_bad.tsv"), delimiter="\t")
        }
        bad.pop("path")
        expected_bad = {
            p for p, (_, outcome) in oddities.items() if outcome == "bad" and p.startswith(split)
        }
        assert set(bad) == expected_bad
        assert {p: r for p, r in summary[split]["bad_files"]} == bad
        for (path, _label), state, row in zip(index, status, images):
            if path in bad:
                assert state == 2
                assert bad[path] == (
                    "empty file (0 bytes)"
                    if oddities[path][0] == "empty"
                    else "cannot decode: image file is truncated "
                    + bad[path].split("truncated ")[1]
                )
            else:
                assert state == 1
                np.testing.assert_array_equal(row, reference_row(synthetic / path))
        assert summary[split]["done"] == len(index) - len(bad) == (status == 1).sum()
    info = cache_info(cache)
    assert (info.num_classes, info.train_images, info.val_images) == (3, 15 - 2, 9 - 1)


def test_labels_follow_sorted_wnids_and_the_devkit(synthetic, prepared):
    cache, _ = prepared
    wnids = sorted(p.name for p in (synthetic / "train").iterdir())
    _, index, _ = cache_rows(cache, "train")
    assert [int(label) for _, label in index] == [
        wnids.index(Path(p).parent.name) for p, _ in index
    ]
    # Val: the devkit's ID -> WNID map, read here with scipy the way torchvision's parser does.
    import scipy.io

    meta = scipy.io.loadmat(
        synthetic / "ILSVRC2012_devkit_t12" / "data" / "meta.mat", squeeze_me=True
    )["synsets"]
    id_to_wnid = {int(m[0]): str(m[1]) for m in meta if int(m[4]) == 0}
    truth = [
        int(x)
        for x in (
            synthetic / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
        )
        .read_text()
        .split()
    ]
    _, index, _ = cache_rows(cache, "val")
    assert [int(label) for _, label in index] == [
        wnids.index(id_to_wnid[truth[int(p[-13:-5]) - 1]]) for p, _ in index
    ]


def test_unreadable_files_of_every_kind_are_reported_not_fatal(tmp_path):
    root = tmp_path / "root"
    wnid = root / "train" / "n00000001"
    wnid.mkdir(parents=True)
    Image.new("RGB", (300, 200), (1, 2, 3)).save(wnid / "good.JPEG")
    (wnid / "html.JPEG").write_text("<html>404 not found</html>")
    (wnid / "empty.JPEG").write_bytes(b"")
    summary = prepare_cache(root, tmp_path / "cache", splits=("train",), workers=0, progress=False)
    assert dict(summary["train"]["bad_files"]) == {
        "train/n00000001/html.JPEG": "not an image Pillow can identify",
        "train/n00000001/empty.JPEG": "empty file (0 bytes)",
    }
    assert summary["train"]["done"] == 1


def test_resume_after_interruption_redoes_nothing(synthetic, prepared, tmp_path, monkeypatch):
    calls = []

    def interrupted_after_7(path):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(path)
        return load_256(path)

    monkeypatch.setattr(prepare_module, "CHUNK", 4)  # rows per task: finished tasks are recorded
    monkeypatch.setattr(prepare_module, "load_256", interrupted_after_7)
    cache = tmp_path / "cache"
    hint = f"finished work is kept in {cache}; run the same command again to continue"
    with pytest.raises(KeyboardInterrupt, match=hint):
        prepare_cache(synthetic, cache, workers=0, progress=False)
    images, index, status = cache_rows(cache, "train")
    # The first task's rows were recorded on the way out.
    assert list(status != 0) == [True] * 4 + [False] * 11
    recorded = {str(synthetic / path) for path, _ in index[:4]}
    assert recorded < set(calls)

    calls.clear()
    monkeypatch.setattr(
        prepare_module, "load_256", lambda path: calls.append(path) or load_256(path)
    )
    summary = prepare_cache(synthetic, cache, workers=0, progress=False)
    assert summary["train"]["decoded_now"] == 15 - 4 and summary["val"]["decoded_now"] == 9
    assert not recorded & set(calls) and len(calls) == 15 - 4 + 9
    reference, _ = prepared
    for split in ("train", "val"):
        for a, b in zip(cache_rows(cache, split), cache_rows(reference, split)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (cache / "stats.json").read_text() == (reference / "stats.json").read_text()

    calls.clear()
    summary = prepare_cache(synthetic, cache, workers=0, progress=False)
    assert calls == [] and summary["train"]["decoded_now"] == 0


def test_progress_in_a_log_is_a_line_per_pass(synthetic, tmp_path, capsys):
    cache = tmp_path / "cache"
    prepare_cache(synthetic, cache, workers=0)  # capsys: stderr is not a terminal
    lines = capsys.readouterr().err.splitlines()
    expected = [
        f"train: decoding 15 of 15 images into {cache} in this process",
        r"train: done, 15 images in \d+:\d\d:\d\d",
        f"val: decoding 9 of 9 images into {cache} in this process",
        r"val: done, 9 images in \d+:\d\d:\d\d",
        "stats: mean image and RGB covariance of 13 training images",  # 2 of 15 unreadable
        r"stats: done, 13 images in \d+:\d\d:\d\d",
    ]
    assert len(lines) == len(expected)
    assert all(re.fullmatch(e, line) for e, line in zip(expected, lines)), lines
    prepare_cache(synthetic, cache, workers=0)  # again: nothing left to do, and it says so
    assert capsys.readouterr().err.splitlines()[0::2] == [
        f"train: all 15 images already in {cache}",
        f"val: all 9 images already in {cache}",
    ]


def test_parallel_workers_give_the_same_cache(synthetic, prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK", 4)  # several tasks, so that the pool is used
    pools = []
    monkeypatch.setattr(
        prepare_module.multiprocessing,
        "Pool",
        lambda n, **kw: pools.append((n, kw.get("initializer"))) or Pool(n, **kw),
    )
    cache = tmp_path / "cache"
    prepare_cache(synthetic, cache, workers=2, progress=False)
    assert pools == [(2, ignore_interrupt)] * 2  # Ctrl-C is the parent's: no worker tracebacks
    reference, _ = prepared
    for name in (
        "train_images.npy",
        "train_index.tsv",
        "train_status.npy",
        "train_bad.tsv",
        "val_images.npy",
        "val_bad.tsv",
        "stats.json",
        "mean_image.npy",
        "manifest.json",
    ):
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_different_source_is_refused(synthetic, prepared, tmp_path):
    cache, _ = prepared
    other = tmp_path / "other"
    make_synthetic_imagenet(other, classes=3, train_per_class=4, val_per_class=1, seed=1)
    with pytest.raises(
        UsageError, match="already holds a train split made from a different list of files"
    ):
        prepare_cache(other, cache, workers=0, progress=False)


def test_a_source_with_other_classes_names_the_cache_source(synthetic, prepared, tmp_path):
    cache, _ = prepared
    other = tmp_path / "other"
    make_synthetic_imagenet(other, classes=3, train_per_class=4, val_per_class=1, seed=7)
    with pytest.raises(UsageError, match=f"{cache} was made from {synthetic}, .*new CACHE folder"):
        prepare_cache(other, cache, workers=0, progress=False)


def test_an_unusable_cache_folder_is_a_usage_error(synthetic, tmp_path):
    (tmp_path / "afile").write_text("x")
    for cache, message in [
        ("/proc/nope", "cannot create the folder /proc/nope"),
        (tmp_path / "afile", "afile is a file, not a folder"),
        (tmp_path / "afile" / "sub", "cannot create the folder .*afile/sub"),
    ]:
        with pytest.raises(UsageError, match=message):
            prepare_cache(synthetic, cache, workers=0, progress=False)
    assert (tmp_path / "afile").read_text() == "x"


def test_the_cache_is_not_src_nor_inside_or_around_it(synthetic, tmp_path):
    (tmp_path / "link").symlink_to(synthetic)
    before = sorted(synthetic.rglob("*"))
    for cache, relation in [
        (synthetic, "is"),
        (tmp_path / "link", "is"),
        (synthetic / "cache", "lies inside"),
        (synthetic / "train" / "x" / "cache", "lies inside"),
        (synthetic.parent, "contains"),
    ]:
        with pytest.raises(
            UsageError,
            match=f"CACHE {cache} {relation} the ImageNet folder SRC {synthetic}: give the cache "
            f"a folder of its own, e.g. {synthetic.resolve()}_cache",
        ):
            prepare_cache(synthetic, cache, workers=0, progress=False)
    assert sorted(synthetic.rglob("*")) == before  # nothing written


def test_a_folder_holding_other_files_is_refused_untouched(synthetic, tmp_path):
    run = tmp_path / "run"  # e.g. a finished training run
    run.mkdir()
    files = {"config.json": "{}", "metrics.jsonl": "{}\n", "model.pt": "x", "results.json": "{}"}
    for name, text in files.items():
        (run / name).write_text(text)
    with pytest.raises(
        UsageError,
        match=f"{run} is not empty and not a cache \\(config.json, metrics.jsonl, model.pt, "
        "...\\): give CACHE a new or empty folder, so that none of your files is overwritten",
    ):
        prepare_cache(synthetic, run, workers=0, progress=False)
    assert {p.name: p.read_text() for p in run.iterdir()} == files


def test_an_empty_folder_or_what_a_killed_prepare_left_is_used(synthetic, prepared, tmp_path):
    empty, killed, disk = tmp_path / "empty", tmp_path / "killed", tmp_path / "disk"
    empty.mkdir()
    killed.mkdir()
    (killed / "manifest.json.tmp").write_text('{"form')  # killed while writing its first file
    (disk / "lost+found").mkdir(parents=True)  # a freshly formatted disk, as empty as they come
    (disk / ".DS_Store").write_text("hidden")
    for cache in (empty, killed, disk):
        prepare_cache(synthetic, cache, splits=("train",), workers=0, progress=False)
        for name in ("train_images.npy", "train_status.npy", "manifest.json"):
            assert (cache / name).read_bytes() == (prepared[0] / name).read_bytes()
    # killed later, while saving the row status: the manifest marks the folder as a cache
    (killed / "train_status.tmp.npy").write_bytes(b"half")
    summary = prepare_cache(synthetic, killed, workers=0, progress=False)
    assert summary["train"]["decoded_now"] == 0 and summary["val"]["decoded_now"] == 9


def test_negative_workers_are_refused(synthetic, tmp_path):
    with pytest.raises(AssertionError):  # an option value: checked by alexnet2012.options
        prepare_cache(synthetic, tmp_path / "cache", workers=-2, progress=False)
    assert not (tmp_path / "cache").exists()


def _copy(cache: Path, tmp_path: Path) -> Path:
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache"


def _readers(synthetic: Path, cache: Path) -> dict:
    """Every reader of a cache: the training/eval side and a prepare re-run."""
    return {
        "cache_info": lambda: cache_info(cache),
        "train_loader": lambda: train_loader(cache, batch_size=2, workers=0),
        "prepare again": lambda: prepare_cache(synthetic, cache, workers=0, progress=False),
    }


REDO_TRAIN = r"delete .*/train_\* and re-run scripts/prepare_imagenet.py SRC .* to prepare train"
NEW_CACHE = "prepare the cache again with scripts/prepare_imagenet.py SRC CACHE into a new CACHE"


@pytest.mark.parametrize(
    "name, damage, fix",
    [
        ("manifest.json", lambda p: p.write_text(""), NEW_CACHE),
        ("manifest.json", lambda p: p.write_text('{"format": 1, "wnids": 3}'), NEW_CACHE),
        ("train_status.npy", lambda p: p.write_bytes(b"\x80garbage"), REDO_TRAIN),
        ("train_status.npy", lambda p: np.save(p, np.ones(3, np.uint8)), REDO_TRAIN),
        ("train_images.npy", lambda p: p.write_bytes(p.read_bytes()[:-1000]), REDO_TRAIN),
        ("train_index.tsv", lambda p: p.write_text(""), REDO_TRAIN),
        ("train_index.tsv", lambda p: p.write_text("path\tlabel\nx\t99\n"), REDO_TRAIN),
        ("stats.json", lambda p: p.write_text(""), "delete .*stats.json and re-run"),
        ("mean_image.npy", lambda p: np.save(p, np.zeros(3)), "delete .*stats.json and re-run"),
    ],
    ids=[
        "empty manifest",
        "manifest without fields",
        "garbage status",
        "status of other length",
        "truncated images",
        "empty index",
        "index with a bad label",
        "empty stats",
        "mean image of other shape",
    ],
)
def test_a_damaged_cache_file_is_named_by_every_reader(
    synthetic, prepared, tmp_path, name, damage, fix
):
    cache = _copy(prepared[0], tmp_path)
    damage(cache / name)
    damaged = (cache / name).read_bytes()
    readers = _readers(synthetic, cache)
    if name in ("stats.json", "mean_image.npy"):
        del readers["cache_info"]  # it does not read the statistics
    for reader in readers.values():
        with pytest.raises(UsageError, match=f"{cache / name} is damaged .*: {fix}"):
            reader()
    assert (cache / name).read_bytes() == damaged  # a re-run refuses; it does not overwrite


def test_a_cache_of_another_format_is_refused(synthetic, prepared, tmp_path):
    cache = _copy(prepared[0], tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    (cache / "manifest.json").write_text(json.dumps({**manifest, "format": 3}))
    for reader in _readers(synthetic, cache).values():
        with pytest.raises(UsageError, match="made by another version .*into a new CACHE folder"):
            reader()


def test_an_unfinished_split_is_refused_to_its_readers(synthetic, prepared, tmp_path):
    cache = _copy(prepared[0], tmp_path)
    status = np.load(cache / "train_status.npy")
    status[:5] = 0
    np.save(cache / "train_status.npy", status)
    (cache / "stats.json").unlink()  # as after an interrupted first run
    message = (
        f"the train cache in {cache} is unfinished \\(5 of 15 images not done\\): "
        f"re-run scripts/prepare_imagenet.py {synthetic} {cache}"
    )
    info = cache_info(cache)  # sizes of the finished splits only: val can still be used
    assert "train" not in info.split_sizes and info.val_images == cache_info(prepared[0]).val_images
    for reader in (
        lambda: train_loader(cache, batch_size=2, workers=0),
        # what replicate.py and evaluate.py do with a cache that has no stats.json yet
        lambda: prepare_cache(cache, tmp_path / "cache_cache", workers=0, progress=False),
    ):
        with pytest.raises(UsageError, match=message):
            reader()
    with pytest.raises(UsageError, match=f"{prepared[0]} is a prepared cache, not an ImageNet"):
        prepare_cache(prepared[0], tmp_path / "other", workers=0, progress=False)


@pytest.mark.parametrize("damage", ["", "garbage without a header\n"])
def test_a_damaged_list_of_bad_files_does_not_block_a_re_run(synthetic, prepared, tmp_path, damage):
    # the list is a report (the status file says which rows are bad): start it again, keeping
    # every bad row, its reason marked lost
    cache = _copy(prepared[0], tmp_path)
    before = dict(l.split("\t") for l in (cache / "train_bad.tsv").read_text().splitlines()[1:])
    assert before  # the synthetic set plants unreadable files
    (cache / "train_bad.tsv").write_text(damage)
    summary = prepare_cache(synthetic, cache, splits=("train",), workers=0, progress=False)
    assert dict(summary["train"]["bad_files"]).keys() == before.keys()
    assert {r for _, r in summary["train"]["bad_files"]} == {
        "unreadable (its reason was lost with the old list)"
    }
    assert summary["train"]["decoded_now"] == 0


def test_not_enough_disk_is_a_usage_error(synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(
        writers_module.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**6})()
    )
    with pytest.raises(
        UsageError, match=r"the train cache needs [0-9.]+ [KMG]B in .*, which has 1.0 MB free"
    ):
        prepare_cache(synthetic, tmp_path / "cache", workers=0, progress=False)


@pytest.mark.slow
def test_scripts_end_to_end(tmp_path):
    run = [sys.executable, "-X", "faulthandler"]
    out = subprocess.run(
        [
            *run,
            str(REPO / "scripts/make_synthetic_imagenet.py"),
            str(tmp_path / "src"),
            "--classes",
            "2",
            "--train-per-class",
            "3",
            "--val-per-class",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 2 classes" in out.stdout
    out = subprocess.run(
        [
            *run,
            str(REPO / "scripts/prepare_imagenet.py"),
            str(tmp_path / "src"),
            str(tmp_path / "cache"),
            "--workers",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "train: 5 of 6 images usable, 1 unreadable" in out.stdout
    assert (tmp_path / "cache" / "stats.json").is_file()
    bad = subprocess.run(
        [
            *run,
            str(REPO / "scripts/prepare_imagenet.py"),
            str(tmp_path / "nothing"),
            str(tmp_path / "cache2"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.count("\n") == 1
        and bad.stderr.startswith("error: ")
        and "is not a folder" in bad.stderr
    )
