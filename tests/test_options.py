"""Each user-facing value is checked in one function (options.py, devices.parse): a bad value
given to every script that takes it gets the same one line, exit status 2, before any work;
and every script's help states each option's default one way."""

import importlib
import pkgutil
import re
import runpy
import sys
from pathlib import Path

import pytest

import alexnet2012.cli

ROOT = Path(__file__).resolve().parents[1]

# the least each script needs besides the bad value (nothing here exists: the check comes first)
NEEDS = {
    "replicate.py": ["--out", "{tmp}/run"],
    "evaluate.py": ["--checkpoint", "{tmp}/none.pt", "--data", "{tmp}/none"],
    "prepare_imagenet.py": ["{tmp}/none", "{tmp}/cache"],
    "make_synthetic_imagenet.py": ["{tmp}/synthetic"],
    "benchmark.py": [],
    "benchmark_data.py": ["--data", "{tmp}/none"],
    "summary.py": [],
}
# bad value -> (the one line, the scripts that take the option)
BAD = {
    ("--workers", "-1"): (
        "--workers must be 0 (work in this process) or more, got -1",
        [
            "replicate.py",
            "evaluate.py",
            "prepare_imagenet.py",
            "make_synthetic_imagenet.py",
            "benchmark.py",
            "benchmark_data.py",
        ],
    ),
    ("--batch-size", "0"): (
        "--batch-size must be at least 1, got 0",
        ["replicate.py", "evaluate.py", "benchmark.py", "benchmark_data.py"],
    ),
    ("--devices", "mps"): (
        "--devices: 'mps': this network runs on 'cpu' and 'cuda[:N]' devices only",
        ["replicate.py", "evaluate.py", "benchmark.py", "benchmark_data.py"],
    ),
    ("--devices", "cuda:7"): (
        "--devices: CUDA device cuda:7 does not exist on this machine",
        ["replicate.py", "evaluate.py", "benchmark.py", "benchmark_data.py"],
    ),
    ("--devices", "cpu,cpu,cpu"): (
        "--devices takes one or two devices (one per column), got 3",
        ["replicate.py", "evaluate.py", "benchmark.py", "benchmark_data.py"],
    ),
    ("--input-size", "225"): (
        "--input-size must be 224 (the paper) or 227 (Caffe's geometry), got 225",
        ["replicate.py", "summary.py", "benchmark_data.py"],
    ),
    ("--columns", "3"): (
        "--columns must be one of 1, 2 (P §3.2's one-column net, or the paper's two), got 3",
        ["replicate.py"],
    ),
    ("--recipe", "bogus"): (
        "--recipe must be one of paper, 2012-code, caffe, got bogus",
        ["replicate.py"],
    ),
    ("--subset", "0"): (
        "--subset takes CLASSES or CLASSES:TRAIN_PER_CLASS, whole numbers from 1",
        ["replicate.py", "prepare_imagenet.py"],
    ),
    ("--seed", "-1"): (
        "--seed must be from 0 to 2**63-1, got -1",
        ["replicate.py", "make_synthetic_imagenet.py"],
    ),
}
CASES = [
    (opt, val, line, script) for (opt, val), (line, scripts) in BAD.items() for script in scripts
]


@pytest.mark.parametrize(
    "option, value, line, script", CASES, ids=[f"{c[3]}{c[0]}={c[1]}" for c in CASES]
)
def test_a_bad_value_gets_the_same_line_from_every_script(
    option, value, line, script, tmp_path, capsys, monkeypatch
):
    if "cuda:7" in value and __import__("torch").cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    argv = [a.format(tmp=tmp_path) for a in NEEDS[script]] + [option, value]
    path = ROOT / "scripts" / script
    monkeypatch.chdir(tmp_path)  # the demo's data folder, if anything went that far
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("error: "), err
    assert len(err) == 1 and line in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "work was done before the check"


# they print their result and nothing while they work
NO_PROGRESS = {"summary.py", "benchmark_data.py", "classify.py", "export.py", "import_weights.py"}


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_every_script_that_shows_progress_takes_quiet(script, capsys, monkeypatch):
    path = ROOT / "scripts" / script
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_.value.code == 0
    assert ("--quiet" in capsys.readouterr().out) == (script not in NO_PROGRESS)


CLI = sorted(m.name for m in pkgutil.iter_modules(alexnet2012.cli.__path__))
# the one style, at the end of the help: "(default: X)", X may hold a pair of parentheses
DEFAULT_LAST = re.compile(r"\(default: [^()]*(\([^()]*\)[^()]*)*\)$")
# the old styles: "(default 4)", "(default bgr: ...)", "(30)", "paper (default): ..."
OLD = re.compile(r"\(default[^:]|\(\d[\d.]*\)")


def _helps(name):
    """Each action of the script's parser and its help as --help prints it."""
    module = importlib.import_module(f"alexnet2012.cli.{name}")
    p = (getattr(module, "parser", None) or module.build_parser)()
    return [(a, (a.help or "") % dict(vars(a), prog=p.prog)) for a in p._actions]


def test_every_script_has_its_cli_module():
    assert CLI == sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", CLI)
def test_every_option_states_its_default_one_way(name):
    for action, text in _helps(name):
        assert not OLD.search(text), (name, action.option_strings, text)
        if action.option_strings and action.nargs != 0 and not action.required:
            assert DEFAULT_LAST.search(text), (name, action.option_strings, text)
            assert text.count("(default") == 1, (name, action.option_strings, text)
