"""README's command-line section, as written: every command parses, the simulations run and
the held-out scan really differs from the training scan."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _commands(section_title: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {section_title}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#", 1)[0].strip()
            if command:
                commands.append(shlex.split(command))
    return commands


def test_command_line_section_runs_as_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _commands("Command line")
    ran = []
    for argv in commands:
        if argv[:2] == ["mkdir", "-p"]:
            Path(argv[2]).mkdir(parents=True, exist_ok=True)
            continue
        if argv[0] != "python" or argv[1:3] != ["-m", "ptychopinn"]:
            continue  # torchrun / srun launch lines: multi-node, documented only
        sub, rest = argv[3], argv[4:]
        module = importlib.import_module(f"ptychopinn.cli.{sub}")
        if sub == "simulate":
            assert module.main(rest) == 0
        else:  # training and inference: every flag and value must parse
            module.build_parser().parse_args(rest)
        ran.append(sub)
    assert ran.count("simulate") == 2 and {"train", "infer", "pretrain"} <= set(ran)
    with np.load("work/train.npz") as a, np.load("work/scan2.npz") as b:
        assert a["diffraction"].shape == b["diffraction"].shape
        assert not np.array_equal(a["objectGuess"], b["objectGuess"])  # held out


@pytest.mark.parametrize("path", ["work/x.npz", "work/run1/ptychopinn_model.zip",
                                  "benchmark_outputs/quality.json", "demo_outputs/a.png"])
def test_generated_files_are_ignored_by_git(path: str) -> None:
    import subprocess

    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert result.returncode == 0, f"{path} is not ignored"
