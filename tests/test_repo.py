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
    assert readme_commands()[1] in ci.splitlines()
