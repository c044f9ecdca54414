"""The replication harness end to end on a tiny synthetic set: outputs, exact resume, and the
failures a user meets (one line, non-zero exit, nothing overwritten)."""

import hashlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from alexnet2012 import sources
from alexnet2012.checkpoint import load_checkpoint, save_checkpoint
from alexnet2012.cli import replicate
from alexnet2012.config import TrainConfig, deviations
from alexnet2012.data import cache_info, make_synthetic_imagenet, prepare_cache
from alexnet2012.errors import SaveError, UsageError
from alexnet2012.step import TrainStep
from alexnet2012.train import Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-class synthetic ILSVRC folder (24 train, 9 val images) and its prepared cache."""
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_imagenet(
        root / "imagenet", classes=3, train_per_class=8, val_per_class=3, seed=1, workers=1
    )
    prepare_cache(root / "imagenet", root / "cache", workers=1, progress=False)
    return root


def config(tiny, out, **kw):
    settings = dict(
        cache=str(tiny / "cache"),
        out=str(out),
        batch_size=8,
        eval_batch_size=8,
        epochs=2,
        workers=0,
        dataset="synthetic test",
        ten_view=False,
    )
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """A finished run of ``config``'s settings (2 epochs, never interrupted): its folder."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(config(tiny, out), progress=False, log=lambda s: None).run()
    return out


def run_cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "scripts/replicate.py", "--quiet", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_two_epochs_write_every_output(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code = replicate.main(
        [
            str(a)
            for a in (
                "--data",
                tiny / "cache",
                "--out",
                out,
                "--epochs",
                2,
                "--batch-size",
                8,
                "--workers",
                0,
                "--quiet",
            )
        ]
    )
    assert code == 0
    for name in (
        "config.json",
        "metrics.jsonl",
        "drops.json",
        "results.json",
        "report.md",
        "curves.png",
        "checkpoint.pt",
    ):
        assert (out / name).is_file(), name
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    for l in lines:
        assert 0 <= l["val_top1"] <= 1 and 0 <= l["val_top5"] <= 1 and l["images_per_s"] > 0
        assert l["lr"] == 0.01
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"center", "ten_view", "wall_time_s", "epochs_trained"}
    assert results["epochs_trained"] == 2
    usable_val = cache_info(tiny / "cache").val_images  # the set plants unreadable files
    assert 0 < usable_val <= 9
    assert results["center"]["images"] == usable_val == results["ten_view"]["images"]
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 3 and config["train_images"] > 0
    assert config["backends"] == {"cuda": False}  # a CPU run sets no CUDA flags
    assert any("batch 8 instead of 128" in d for d in config["deviations"])
    report = (out / "report.md").read_text()
    assert f"{100 * results['center']['top1']:.2f}" in report
    assert "differences from the paper" in capsys.readouterr().out
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The checkpoint evaluates on the two-device placement to the same ten-view error.
    result = subprocess.run(
        [
            sys.executable,
            "scripts/evaluate.py",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--data",
            str(tiny / "cache"),
            "--views",
            "10",
            "--devices",
            "cpu,cpu",
            "--workers",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"top-1 error {100 * results['ten_view']['top1']:.2f}%" in result.stdout
    assert f"top-5 error {100 * results['ten_view']['top5']:.2f}%" in result.stdout


class Crash(Exception):
    pass


def test_bf16_and_compile_are_recorded_listed_and_taken_by_the_step(tiny, tmp_path, monkeypatch):
    # --bf16 --compile: in config.json and the report's deviations (bf16), and the run's step
    # takes them (tests/test_step.py trains with both)
    monkeypatch.setattr(replicate, "demo_cache", lambda workers, progress: str(tiny / "cache"))

    def demo_config(out, *args):
        argv = [
            "--devices",
            "cpu",
            "--out",
            str(tmp_path / out),
            "--workers",
            "0",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-ten-view",
            *args,
        ]
        return replicate.config_from_args(replicate.build_parser().parse_args(argv))

    config = demo_config("compiled", "--bf16", "--compile")
    assert config.bf16 and config.compile
    assert any(d.startswith("bf16 autocast") for d in deviations(config, 3))
    assert not any("bf16" in d for d in deviations(replace(config, bf16=False), 3))
    run = Trainer(config, progress=False)
    assert run.step.bf16 and run.step.forward_loss is not run.step._forward_loss
    recorded = json.loads((tmp_path / "compiled" / "config.json").read_text())
    assert recorded["settings"]["bf16"] and recorded["settings"]["compile"]


def test_the_demo_keeps_only_the_lr_drops_that_a_shorter_epochs_leaves(tiny, tmp_path, monkeypatch):
    # The demo drops the lr at epoch 5 of 10; `--epochs 3` used to stop with an error about
    # drop epochs the user never gave.
    monkeypatch.setattr(replicate, "demo_cache", lambda workers, progress: str(tiny / "cache"))

    def demo_config(*args):
        argv = ["--devices", "cpu", "--out", str(tmp_path / "run"), "--workers", "0", *args]
        return replicate.config_from_args(replicate.build_parser().parse_args(argv))

    full = demo_config()
    assert (full.epochs, full.lr_drops) == (8, (5,))
    assert demo_config("--epochs", "5").lr_drops == (5,)
    assert demo_config("--epochs", "3").lr_drops == ()
    assert demo_config("--epochs", "3", "--lr-drops", "2").lr_drops == (2,)
    short = demo_config("--epochs", "1", "--batch-size", "8", "--no-ten-view")
    assert any("lr never divided" in d for d in deviations(short, 3))
    assert not any("TF32" in d for d in deviations(short, 3))  # on the CPU: no TF32
    gpu = replace(short, devices=("cuda:0",))
    assert any(d.startswith("TF32 products on CUDA") for d in deviations(gpu, 3))
    assert not any("TF32" in d for d in deviations(replace(gpu, tf32=False), 3))
    assert demo_config("--no-tf32").tf32 is False and full.tf32 is True
    Trainer(short, progress=False).run()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(l["epoch"], l["lr"]) for l in lines] == [(1, 0.01)]


def test_a_run_killed_and_resumed_ends_with_the_same_weights(tiny, finished, tmp_path, monkeypatch):
    expected = load_checkpoint(finished / "checkpoint.pt")["model"]

    per_epoch = cache_info(tiny / "cache").train_images // 8
    assert per_epoch >= 2
    steps = {"n": 0}
    real_step = TrainStep.__call__

    def crashing_step(self, x, y):
        steps["n"] += 1
        if steps["n"] == per_epoch + 2:  # epoch 2, batch 2: after a mid-epoch checkpoint
            raise Crash()
        return real_step(self, x, y)

    monkeypatch.setattr(TrainStep, "__call__", crashing_step)
    cut = config(tiny, tmp_path / "cut", checkpoint_minutes=0.0)  # a checkpoint after every step
    with pytest.raises(Crash):
        Trainer(cut, progress=False, log=lambda s: None).run()
    monkeypatch.setattr(TrainStep, "__call__", real_step)
    saved = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (saved["epoch"], saved["batch"]) == (2, 1)  # resumes mid-epoch

    torch.manual_seed(12345)  # a different process state: the checkpoint must restore it all
    resumed = Trainer.resume(str(tmp_path / "cut"), progress=False, log=lambda s: None)
    resumed.run()
    got = resumed.model.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    metrics = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in metrics] == [1, 2]


def test_a_finished_run_is_not_silently_left_unextended(finished, tmp_path):
    # A finished run given a new --epochs must say it cannot be extended (it used to re-test
    # and train nothing) and leave the run as it was; with its own --epochs it re-tests.
    out = tmp_path / "done"
    shutil.copytree(finished, out)
    before = {p.name: digest(p) for p in out.iterdir()}
    result = run_cli("--resume", "--out", out, "--epochs", 3, "--workers", 0)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"error: --resume: the run in {out} has finished (the epoch limit of 2 is reached) and "
        "cannot be extended to --epochs 3; start a new run (--out) with --epochs 3"
    )
    assert {p.name: digest(p) for p in out.iterdir()} == before
    again = Trainer.resume(str(out), progress=False, log=lambda s: None, epochs=2)
    assert again.finished and again.epoch == 3


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    out = tmp_path / "nan"
    result = run_cli(
        "--data",
        tiny / "cache",
        "--out",
        out,
        "--batch-size",
        8,
        "--workers",
        0,
        "--lr",
        "1e30",
        "--checkpoint-minutes",
        0,
    )
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in result.stderr
    assert (
        message[0].startswith("error: the training loss became") and "epoch 1, batch" in message[0]
    )
    bad_batch = int(message[0].split("batch ")[1].split(";")[0])
    assert bad_batch >= 2  # the first step is finite; the huge update breaks the next ones
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["batch"] == bad_batch - 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/no/such/dir"], "no such directory"),
        (["--devices", "cuda:9"], "does not exist"),
        (["--batch-size", 8, "--accumulate", 3], "not divisible by --accumulate 3"),
        (["--batch-size", 100], "larger than the training set"),
        (["--batch-size", 8, "--epochs", 0], "--epochs must be at least 1"),
        (["--batch-size", 8, "--lr-drops", "100"], "--lr-drops must be increasing epochs from 2"),
        (["--batch-size", 8, "--accumulate", 0], "--accumulate must be at least 1, got 0"),
        (["--batch-size", 8, "--checkpoint-minutes", -5], "--checkpoint-minutes must be 0"),
        (["--batch-size", 8, "--seed", -1], "--seed must be from 0 to 2**63-1, got -1"),
        (["--devices", "mps"], "runs on 'cpu' and 'cuda[:N]' devices only"),
        (["--data", __file__], "is a file: give the ImageNet root folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, args, message, capsys, monkeypatch):
    full = ["--data", tiny / "cache", "--out", tmp_path / "run", "--workers", 0]
    if args[0] == "--data":
        full = full[2:]
    if args[0] == "--devices" and args[1] == "mps":  # one case as a real process, the rest here
        result = run_cli(*full, *args)
        code, stderr = result.returncode, result.stderr
    else:
        script = REPO / "scripts" / "replicate.py"
        monkeypatch.setattr(sys, "argv", [str(script), "--quiet", *map(str, full + args)])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
        code, stderr = exit_.value.code, capsys.readouterr().err
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed must be from 0"),
        (["--lr", "0"], "--lr must be positive"),
        (["--out", "FILE"], "is a file: give a folder for the run"),
        (["--out", "RUN"], "already holds a run (metrics.jsonl)"),
    ],
)
def test_settings_and_the_run_folder_are_checked_before_the_data_is_prepared(
    tmp_path, monkeypatch, args, message
):
    def prepare(*args, **kwargs):  # hours on ImageNet: a typo must not wait for it
        raise AssertionError("prepared before the settings were checked")

    monkeypatch.setattr(sources, "prepare_cache", prepare)
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "FILE").write_text("mine")
    (tmp_path / "RUN").mkdir()
    (tmp_path / "RUN" / "metrics.jsonl").write_text("{}\n")
    args = [str(tmp_path / a) if a in ("FILE", "RUN") else a for a in args]
    with pytest.raises(UsageError, match=re.escape(message)):
        replicate.main(
            ["--data", str(tmp_path / "imagenet"), "--out", str(tmp_path / "new"), *args, "--quiet"]
        )
    assert not (tmp_path / "new").exists() and (tmp_path / "FILE").read_text() == "mine"


def test_a_file_is_refused_as_out(tiny, tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(UsageError, match="--out .*run is a file: give a folder"):
        Trainer(config(tiny, tmp_path / "run"), progress=False)
    assert (tmp_path / "run").read_text() == "mine"


def test_a_wrong_layout_names_what_was_expected(tmp_path):
    (tmp_path / "imagenet" / "something").mkdir(parents=True)
    result = run_cli("--data", tmp_path / "imagenet", "--out", tmp_path / "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train" in lines[0]


def test_an_existing_run_is_never_overwritten(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = digest(out / "metrics.jsonl")
    result = run_cli("--data", tiny / "cache", "--out", out, "--workers", 0, "--batch-size", 8)
    assert result.returncode == 2 and "--resume" in result.stderr
    assert digest(out / "metrics.jsonl") == before


def test_a_corrupt_checkpoint_is_reported_and_left_alone(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    before = digest(out / "checkpoint.pt")
    result = run_cli("--resume", "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and str(out / "checkpoint.pt") in lines[0]
    assert "cannot continue: start a new run with another --out, or delete" in lines[0]
    assert digest(out / "checkpoint.pt") == before


def test_a_run_that_lost_its_checkpoint_is_not_sent_round_in_circles(tiny, tmp_path):
    # "start without --resume" would be refused: the folder already holds a run
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="cannot continue: start a new run with another --out"):
        replicate.main(["--resume", "--out", str(out), "--quiet"])
    (out / "metrics.jsonl").unlink()  # a folder with no run in it: start it afresh
    with pytest.raises(UsageError, match="start without --resume$"):
        replicate.main(["--resume", "--out", str(out), "--quiet"])


def test_one_class_is_refused_before_the_run_folder_is_made(tmp_path):
    make_synthetic_imagenet(
        tmp_path / "one", classes=1, train_per_class=2, val_per_class=1, seed=0, workers=1
    )
    prepare_cache(tmp_path / "one", tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(UsageError, match="holds 1 class: classifying needs at least 2"):
        Trainer(
            TrainConfig(cache=str(tmp_path / "cache"), out=str(tmp_path / "run")), progress=False
        )
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_other_files_is_refused_as_out(tiny, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    with pytest.raises(UsageError, match=r"mine is not empty \(report.md\): give --out a new"):
        Trainer(config(tiny, out), progress=False, log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "my own report"
    (out / "report.md").unlink()
    (out / "config.json").write_text("{}")  # a run that never started: started again
    Trainer(config(tiny, out), progress=False, log=lambda s: None)
    assert json.loads((out / "config.json").read_text())["num_classes"] == 3


def test_the_demo_never_replaces_a_folder_holding_files_it_did_not_make(tmp_path, monkeypatch):
    demo = tmp_path / "experiments" / "demo_data"
    (demo / "images").mkdir(parents=True)
    (demo / "spec.json").write_text('{"classes": 2}')  # an older demo set: may be replaced
    monkeypatch.setattr(sources, "DEMO_DATA", demo)
    sources.check_demo_folder()
    (demo / "precious.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds files the demo did not make .precious.txt."):
        sources.demo_cache(workers=0, progress=False)
    assert (demo / "precious.txt").read_text() == "mine"


def test_resume_refuses_options_that_change_the_computation(tmp_path):
    with pytest.raises(UsageError, match="saved settings: drop --batch-size, --no-lrn, --lr "):
        replicate.main(
            [
                "--resume",
                "--out",
                str(tmp_path / "run"),
                "--lr",
                "0.5",
                "--batch-size",
                "4",
                "--no-lrn",
                "--epochs",
                "3",
                "--quiet",
            ]
        )
    assert not (tmp_path / "run").exists()
    # a value equal to the default is still an option the run would not apply
    with pytest.raises(UsageError, match="saved settings: drop --seed, --lighting "):
        replicate.main(
            [
                "--resume",
                "--out",
                str(tmp_path / "run"),
                "--seed",
                "0",
                "--lighting=paper",
                "--quiet",
            ]
        )


def test_resume_finds_a_moved_cache_and_records_changed_settings(tiny, tmp_path, monkeypatch):
    shutil.copytree(tiny / "cache", tmp_path / "cache_a")
    per_epoch, steps = cache_info(tiny / "cache").train_images // 8, [0]
    real_step = TrainStep.__call__

    def stop_in_epoch_2(self, x, y):  # at its first step, after epoch 1's checkpoint
        steps[0] += 1
        if steps[0] > per_epoch:
            raise Crash()
        return real_step(self, x, y)

    monkeypatch.setattr(TrainStep, "__call__", stop_in_epoch_2)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        Trainer(
            config(tiny, out, cache=str(tmp_path / "cache_a"), epochs=3),
            progress=False,
            log=lambda s: None,
        ).run()
    monkeypatch.setattr(TrainStep, "__call__", real_step)
    (tmp_path / "cache_a").rename(tmp_path / "cache_b")
    with pytest.raises(
        UsageError, match="cache_a is gone; if it moved, give its new place with --data"
    ):
        Trainer.resume(str(out), progress=False, log=lambda s: None)
    make_synthetic_imagenet(
        tmp_path / "other", classes=2, train_per_class=2, val_per_class=1, seed=1, workers=1
    )
    prepare_cache(tmp_path / "other", tmp_path / "other_cache", workers=1, progress=False)
    with pytest.raises(
        UsageError,
        match=r"holds other classes than the run's data \(2 classes, "
        r"the network's 3\)",
    ):
        Trainer.resume(
            str(out), progress=False, log=lambda s: None, cache=str(tmp_path / "other_cache")
        )
    recorded = json.loads((out / "config.json").read_text())
    images = recorded["train_images"]
    (out / "config.json").write_text(json.dumps({**recorded, "train_images": images + 1}))
    with pytest.raises(
        UsageError, match=f"cache_b holds {images} training images, the run's data had {images + 1}"
    ):
        Trainer.resume(
            str(out), progress=False, log=lambda s: None, cache=str(tmp_path / "cache_b")
        )
    (out / "config.json").write_text(json.dumps(recorded))
    # a checkpoint from before the classes and TF32 were recorded: the class count must do
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["wnids"] == cache_info(tmp_path / "cache_b").wnids
    del ckpt["wnids"], ckpt["config"]["tf32"]
    save_checkpoint(out / "checkpoint.pt", ckpt)
    assert (
        Trainer.resume(
            str(out), progress=False, log=lambda s: None, cache=str(tmp_path / "cache_b")
        ).config.tf32
        is False
    )  # fp32, as it ran
    run = Trainer.resume(
        str(out), progress=False, log=lambda s: None, cache=str(tmp_path / "cache_b"), epochs=2
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["settings"]["cache"] == str(tmp_path / "cache_b")
    assert (
        saved["settings"]["epochs"] == 2
        and "at most 2 epochs instead of about 90" in saved["deviations"]
    )
    run.run()
    assert json.loads((out / "results.json").read_text())["epochs_trained"] == 2


@pytest.mark.parametrize("written", ["nothing", "an epoch's metrics", "a checkpoint"])
def test_ctrl_c_says_how_to_continue(tiny, tmp_path, monkeypatch, written):
    # once the run folder holds the run's config.json, --resume continues it (from the beginning
    # while it has no checkpoint)
    out = tmp_path / "run"

    def interrupted(self):
        if written == "a checkpoint":
            self.save()
        elif written == "an epoch's metrics":  # Ctrl-C during the first checkpoint's write
            (self.folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", interrupted)
    argv = ["--data", str(tiny / "cache"), "--out", str(out), "--batch-size", "8", "--quiet"]
    with pytest.raises(KeyboardInterrupt) as info:
        replicate.main(argv)
    kept = f"its last checkpoint {out / 'checkpoint.pt'} is intact"
    said = kept if written == "a checkpoint" else "nothing saved yet"
    again = f"continue with: {sys.executable} {REPO / 'scripts' / 'replicate.py'}"
    assert str(info.value) == f"stopped by SIGINT: {said}; {again} {' '.join(argv)}"
    assert info.value.code == 130  # the same command continues, from any folder
    if written == "a checkpoint":  # interrupted again after a resume: the same command again
        resume = ["--resume", "--out", str(out), "--workers", "0", "--quiet"]
        with pytest.raises(KeyboardInterrupt) as info:
            replicate.main(resume)
        assert str(info.value) == f"stopped by SIGINT: {kept}; {again} {' '.join(resume)}"


@pytest.mark.parametrize("saved", [False, True])
def test_a_failed_save_says_how_to_continue(tiny, tmp_path, monkeypatch, saved):
    out = tmp_path / "run"

    def disk_full(self):
        if saved:
            self.save()
        raise SaveError(
            f"cannot write {self.folder / 'metrics.jsonl'} (No space left on device): "
            "it needs 1.2 KB, 0 bytes left on its disk",
            "metrics.jsonl",
            no_space=True,
        )

    monkeypatch.setattr(Trainer, "run", disk_full)
    argv = ["--data", str(tiny / "cache"), "--out", str(out), "--batch-size", "8", "--quiet"]
    with pytest.raises(UsageError) as info:
        replicate.main(argv)
    assert str(info.value) == (
        f"cannot write {out / 'metrics.jsonl'} (No space left on device): it needs 1.2 KB, 0 bytes "
        f"left on its disk{'; the last checkpoint is intact' if saved else ''}: free space, then "
        f"continue with: {sys.executable} {REPO / 'scripts' / 'replicate.py'} {' '.join(argv)}"
    )


def test_a_run_that_saved_no_checkpoint_is_started_again(tiny, tmp_path):
    # killed at the end of its first epoch, while its first checkpoint was written
    out, said = tmp_path / "run", []
    Trainer(config(tiny, out), progress=False, log=said.append)
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "drops.json").write_text("[]\n")
    (out / ".checkpoint.pt.0123abcd.tmp").write_bytes(b"PK half a checkpoint")
    (out / ".drops.json.tmp").write_text("[")  # as versions before wrote JSON files
    assert said == []
    with pytest.raises(UsageError, match=r"already holds a run \(metrics.jsonl\); use --resume"):
        Trainer(config(tiny, out, lr=0.02), progress=False)  # other settings: another run
    (out / ".mine.tmp").write_text("mine")
    with pytest.raises(UsageError, match=r"run is not empty \(.mine.tmp\)"):
        Trainer(config(tiny, out), progress=False)
    (out / ".mine.tmp").unlink()
    # the same settings (more epochs and other workers may differ, as on --resume): this run
    Trainer(config(tiny, out, epochs=3, workers=1), progress=False, log=said.append)
    restart = (
        f"no checkpoint in {out}: the run starts from the beginning with the settings in "
        "its config.json"
    )
    assert said == [
        (
            f"removed 2 temporary files left by a killed save in {out}: "
            ".checkpoint.pt.0123abcd.tmp, .drops.json.tmp"
        ),
        restart,
    ]
    assert sorted(os.listdir(out)) == ["config.json"]  # the epochs it logged are redone
    assert json.loads((out / "config.json").read_text())["settings"]["epochs"] == 3
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    said.clear()
    resumed = Trainer.resume(str(out), progress=False, log=said.append, epochs=2)
    assert said == [restart]
    assert (resumed.epoch, resumed.config.epochs) == (1, 2)
    assert sorted(os.listdir(out)) == ["config.json"]


def test_ctrl_c_while_the_data_is_prepared_says_to_run_it_again(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "prepare_cache", interrupted)
    (tmp_path / "imagenet").mkdir()
    argv = ["--data", str(tmp_path / "imagenet"), "--out", str(tmp_path / "run"), "--quiet"]
    with pytest.raises(KeyboardInterrupt) as info:
        replicate.main(argv)
    again = f"{sys.executable} {REPO / 'scripts' / 'replicate.py'} {' '.join(argv)}"
    assert str(info.value) == f"stopped by SIGINT: nothing saved yet; continue with: {again}"
    assert not (tmp_path / "run").exists()


def test_resume_data_may_name_the_cache_or_the_root_it_was_prepared_beside(tmp_path):
    (tmp_path / "imagenet_cache").mkdir()
    (tmp_path / "imagenet_cache" / "stats.json").write_text("{}")
    (tmp_path / "imagenet").mkdir()
    parse = replicate.build_parser().parse_args
    cache = str(tmp_path / "imagenet_cache")
    assert replicate.resume_cache(parse(["--data", cache])) == cache
    assert replicate.resume_cache(parse(["--data", str(tmp_path / "imagenet")])) == cache
    assert replicate.resume_cache(
        parse(["--data", str(tmp_path / "imagenet"), "--cache", str(tmp_path / "elsewhere")])
    ) == str(tmp_path / "elsewhere")
    assert replicate.resume_cache(parse([])) is None
