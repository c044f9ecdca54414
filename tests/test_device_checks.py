"""scripts/device_checks.sh: it refuses a bad argument at once and leaves nothing, its stage
limits fit the GPU loan, and its small mode (the CPU) runs every stage's command line and
writes the files the GPU run returns."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "device_checks.sh"


def checks(*args, cwd=REPO):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".git" not in p.parts}


def test_help_prints_the_usage():
    result = checks("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: scripts/device_checks.sh")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "unknown option --bogus"),
        (["a", "b"], "exactly one OUT_DIR"),
        ([], "exactly one OUT_DIR"),
        (["README.md"], "not an empty folder"),
    ],
)
def test_a_bad_argument_is_refused_at_once_and_leaves_nothing(tmp_path, args, message):
    before = tree(REPO)
    result = checks(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(REPO) == before


def test_an_interpreter_without_torch_is_refused(tmp_path):
    env = dict(os.environ, PYTHON="/bin/false")
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "cannot import torch" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_stage_limits_fit_the_loan():
    limits = [
        int(n) for n in re.findall(r'^\s*stage (?:"[^"]*"|\S+) (\d+) ', SCRIPT.read_text(), re.M)
    ]
    assert len(limits) == 10, limits  # every stage, the 2+ GPU one included
    assert sum(limits) <= 420, limits


@pytest.mark.slow
def test_small_mode_runs_every_stage_and_writes_its_files(tmp_path):
    out = tmp_path / "out"
    result = checks("--small", out)
    log = (out / "log.txt").read_text()
    ends = re.findall(r"^=== (.*): exit (\d+) after", log, re.M)
    assert len(ends) == 9 and all(code == "0" for _, code in ends), (ends, log[-3000:])
    assert result.returncode == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        ["log.txt", "smoke.json", "pytest_cuda.log", "bench_b128.json", "bench_e2e.json",
         "data.json", "runs.tar.gz"]
    )  # fmt: skip
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["versions"]["torch"] and smoke["step_compiled_bf16"]["ok"], smoke
    assert all(v["ok"] for k, v in smoke.items() if k.startswith("step_")), smoke
    for name in ("bench_b128.json", "bench_e2e.json", "data.json"):
        assert json.loads((out / name).read_text()), name
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"./one-device/results.json", "./two-replicas/results.json"} <= names
    assert "./one-device/figures/fig3_kernels.png" in names
    assert not any("checkpoint" in n for n in names)
