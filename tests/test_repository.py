"""The README's two set-up commands and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_setup_commands_installing_torch_first() -> None:
    commands = _setup_commands()
    assert len(commands) == 2
    demo, tests = commands
    for command in commands:
        assert "\n" not in command
        first = command.split("&&")[0]
        assert "torch==" in first, "torch must be installed explicitly, before the project"
    assert "ptychopinn_torch.demo" in demo
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    test_command = _setup_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
