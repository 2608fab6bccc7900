"""The ``ptychopinn`` command: one entry point, a subcommand per workflow.

``ptychopinn train|infer|simulate|pretrain [flags]`` (also ``python -m ptychopinn``).
Each subcommand is the same parser as its own command line (``ptychopinn.cli.train``,
``.pretrain``, ``.infer``, ``.simulate``); the work goes through ``ptychopinn.workflows``. Modules here
import no torch: parsing, ``--help`` and flag errors are fast.
"""

from __future__ import annotations

import importlib
import sys

from ptychopinn import __version__

PROG = "ptychopinn"
#: subcommand -> (module under ptychopinn.cli, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model on a data-contract NPZ and write a model bundle"),
    "infer": ("infer", "reconstruct a scan with a trained model"),
    "simulate": ("simulate", "simulate a synthetic data set (NPZ)"),
    "pretrain": ("pretrain", "pretrain a model on synthetic scans made with an experiment's "
                 "probe and positions"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [f"usage: {PROG} {{{','.join(SUBCOMMANDS)}}} [flags]   ({PROG} COMMAND --help)",
             "", "PtychoPINN: physics-informed neural-network ptychography.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``ptychopinn COMMAND [flags]``; returns the exit code (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(_usage())
        return 2
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        sys.stderr.write(f"{PROG}: error: unknown command {command!r}; choose from "
                         f"{', '.join(SUBCOMMANDS)} (see {PROG} --help)\n")
        return 2
    module = importlib.import_module(f"ptychopinn.cli.{SUBCOMMANDS[command][0]}")
    return module.main(rest, prog=f"{PROG} {command}")
