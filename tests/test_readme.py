"""The set-up contract: README's two commands exist and .ci/run runs the test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("## What it does")[0]
    return re.findall(r"```bash\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_the_two_setup_commands():
    cmds = _commands()
    assert len(cmds) == 2
    main, tests = cmds
    for c in cmds:
        assert "python3 -m venv .venv" in c and "torch==2.13.0" in c
        assert c.index("torch==2.13.0") < c.index("-e ")  # torch before the project
    assert "simulations/launch.py" in main
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci
