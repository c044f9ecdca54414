"""The README's commands are the ones CI runs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_starts_with_the_demo_and_the_test_command():
    demo, tests = readme_commands()[:2]
    assert demo.startswith("pip install") and "scripts/replicate.py" in demo
    assert tests.startswith("pip install") and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command_in_a_fresh_venv():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci
    assert readme_commands()[1] in [line.strip() for line in ci.splitlines()]


# -- the codebase's own rules (issue 15): layering, size, prose, lint ---------------------------

PACKAGE = REPO / "alexnet2012"
# who may import whom: a module of a layer imports only its own layer and those below it
LAYERS = {
    "cli": 5,
    "bench": 4,
    "train": 3,  # the trainer and what builds on a run: config, run folder, resume, report
    "model": 2,
    "data": 2,
    "base": 1,  # paper, errors, devices, options, files, units, progress
}
BASE = {"paper", "errors", "devices", "options", "files", "units", "progress"}
MODEL = {
    "model",
    "layers",
    "fused_lrn",
    "fused_dropout",
    "triton_support",
    "optim",
    "schedule",
    "step",
    "interchange",
    "summary",
    "evaluate",
}


def layer_of(module: str) -> str:
    """The layer of ``alexnet2012.x.y`` (the package's __init__ re-exports: a layer of its own)."""
    parts = module.split(".")[1:]
    if not parts:
        return "cli"
    if parts[0] in ("cli", "bench", "data"):
        return parts[0]
    if parts[0] in BASE:
        return "base"
    return "model" if parts[0] in MODEL else "train"


def package_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(path: Path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            yield from (n if _is_module(n) else node.module for n in names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _is_module(name: str) -> bool:
    parts = name.split(".")
    return (REPO.joinpath(*parts).with_suffix(".py")).exists() or REPO.joinpath(*parts).is_dir()


def test_nothing_imports_upwards_and_data_never_imports_the_model():
    wrong = []
    for module, path in package_modules():
        if module == "alexnet2012":
            continue
        mine = layer_of(module)
        for target in imports_of(path):
            if not target.startswith("alexnet2012."):
                continue
            theirs = layer_of(target)
            upward = LAYERS[theirs] > LAYERS[mine]
            sideways = LAYERS[theirs] == LAYERS[mine] and theirs != mine
            if upward or sideways:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


# the one composed command: the ablations are replicate.py's runs, one per ablation
CLI_USES = {"alexnet2012.cli.ablations": ["alexnet2012.cli.replicate"]}


def test_no_cli_module_imports_another_and_scripts_are_thin():
    for module, path in package_modules():
        if module.startswith("alexnet2012.cli."):
            others = [t for t in imports_of(path) if t.startswith("alexnet2012.cli.")]
            assert others == CLI_USES.get(module, []), f"{module} imports {others}"
    for script in (REPO / "scripts").glob("*.py"):
        own = [t for t in imports_of(script) if t.startswith("alexnet2012")]
        assert any(t.startswith("alexnet2012.cli.") for t in own), f"{script.name}: no cli module"
        assert len(script.read_text().splitlines()) <= 25, f"{script.name} is not a thin wrapper"


def test_no_module_is_over_350_lines():
    long = [
        f"{p.relative_to(REPO)}: {n}"
        for p in [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py")]
        if (n := len(p.read_text().splitlines())) > 350
    ]
    assert not long, long


def prose_lines(text: str) -> int:
    """Lines of ``text`` (Python source) that are comments or docstrings."""
    import ast
    import io
    import tokenize

    lines = {
        t.start[0]
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type == tokenize.COMMENT
    }
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return len(lines)


def test_prose_counter_counts_docstrings_and_comments_only():
    source = 'def f():\n    """Two\n    lines."""\n    x = 1  # one\n    return "not a doc"\n'
    assert prose_lines(source) == 3


def test_docstrings_and_comments_are_at_most_12_percent_of_the_package():
    texts = [p.read_text() for p in PACKAGE.rglob("*.py")]
    code = sum(sum(1 for line in t.splitlines() if line.strip()) for t in texts)
    prose = sum(prose_lines(t) for t in texts)
    assert prose / code <= 0.12, f"{prose} of {code} non-blank lines are prose ({prose / code:.1%})"


def test_no_dates_hashes_or_timings_in_the_code():
    date = re.compile(r"\b20[12]\d-[01]\d(-[0-3]\d)?\b")
    commit = re.compile(r"\b[0-9a-f]{7,40}\b")
    timing = re.compile(r"\b\d+(\.\d+)?\s?(ms|img/s|images/s|GB/s|TFLOP/s)\b")
    found = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pattern in (date, timing):
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
            words = commit.findall(line)
            if any(re.search(r"\d", w) and re.search(r"[a-f]", w) for w in words):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_no_file_cites_a_document_outside_the_repo():
    """The repo stands alone: the team's notes beside it are no source (the names are built here,
    so that this file does not match itself)."""
    import subprocess

    forbidden = ["PAPER" + "_NOTES", "GPU" + "_FACTS", ".." + "/shared"]
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    found = []
    for name in filter(None, listed.decode().split("\0")):
        path = REPO / name
        text = path.read_bytes().decode(errors="replace") if path.is_file() else ""
        found += [f"{name}: {word}" for word in forbidden if word in text]
    assert not found, "\n".join(found)


def test_the_public_api_is_exported():
    import alexnet2012
    from alexnet2012.data import ImageNet  # noqa: F401

    for name in (
        "AlexNet",
        "PaperSGD",
        "PaperSchedule",
        "grouped_state_dict",
        "load_grouped_state_dict",
        "load_trained_model",
    ):
        assert name in alexnet2012.__all__ and hasattr(alexnet2012, name)
