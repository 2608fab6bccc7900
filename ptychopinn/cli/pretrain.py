"""Pretraining command line: ``ptychopinn pretrain --probe-from scan.npz --output_dir DIR``.

Simulates synthetic scans with the experiment's own probe and scan geometry and trains a
bundle on them (``ptychopinn_torch.pretrain``), which ``ptychopinn train --init-model
DIR/ptychopinn_model.zip --train_data_file scan.npz`` then fine-tunes. Every training flag
is the training command line's own (``ptychopinn.cli.train``; one place for each flag)
except ``--train_data_file``: the training data are simulated. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptychopinn import workflows
from ptychopinn.cli import train as train_cli
from ptychopinn.cli.common import (
    TWIN_NOTE,
    CliArgumentParser,
    add_config_flags,
    check_fresh_output_dir,
    command_line_process,
    parse_command_line,
    positive_int,
    require,
    run_reporting_errors,
)
from ptychopinn.simulate import (
    OBJECT_KINDS,
    PRETRAIN_N_OBJECTS,
    PRETRAIN_OBJECT_KINDS,
    check_pretraining_inputs,
)

PROG = "ptychopinn pretrain"
SECTIONS = train_cli.SECTIONS
REQUIRED = (("training", "output_dir", "--output_dir"),)


def object_kinds(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated object kinds, each one of ``OBJECT_KINDS``."""
    kinds = tuple(kind.strip() for kind in text.split(","))
    unknown = [kind for kind in kinds if kind not in OBJECT_KINDS]
    if not text.strip() or unknown:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated object kinds from {', '.join(OBJECT_KINDS)}, got "
            f"{text!r}")
    return kinds


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The pretraining command line's parser: its own flags, then the training flags."""
    p = CliArgumentParser(
        prog=prog,
        description="Pretrain a PtychoPINN model on synthetic scans made with an "
                    "experiment's own probe and scan positions, for `ptychopinn train "
                    "--init-model` to fine-tune on the experiment.",
        epilog=TWIN_NOTE + "; every execution flag also answers to --torch-<flag>. --seed "
               "also seeds the synthetic objects and their noise.",
    )
    p.add_argument("--probe-from", required=True, type=Path, metavar="NPZ",
                   help="The experiment's scan (data contract NPZ): its probeGuess (mode 0), "
                        "scan positions and, unless --nphotons, mean photon count per "
                        "pattern are those of the simulated scans (required)")
    p.add_argument("--n-objects", type=positive_int, default=PRETRAIN_N_OBJECTS,
                   metavar="INT",
                   help=f"Synthetic objects, one scan each (default: {PRETRAIN_N_OBJECTS})")
    p.add_argument("--object-kinds", type=object_kinds, default=PRETRAIN_OBJECT_KINDS,
                   metavar="KIND[,KIND...]",
                   help=f"Object kinds used in turn, from {', '.join(OBJECT_KINDS)} (default: "
                        f"{','.join(PRETRAIN_OBJECT_KINDS)})")
    add_config_flags(p, PROG)
    train_cli.add_data_flags(p, train_data_file=False)
    train_cli.add_training_flags(p, nphotons_help=(
        "the --probe-from scan's mean total counts",
        "Photons per pattern of the simulated scans (and of the Poisson scale)"))
    train_cli.add_model_flags(p)
    train_cli.add_run_flags(p)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the process exit code.

    Order: flags, config file and configs, accelerator, input files, data contract,
    pattern size, the pretraining inputs (object kinds, probe, photons, memory), the
    output directory; then the workflow checks the probe scan against the model and
    simulates, and training checks the rest before its first epoch.
    """
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    parser, args, resolved = parse_command_line(build_parser, argv, prog, SECTIONS)
    require(parser, resolved, REQUIRED)
    scan, test_data, training, execution = train_cli.checked_inputs(
        parser, args, resolved, "--probe-from", lambda config: args.probe_from)
    run_reporting_errors(parser, lambda: check_pretraining_inputs(
        scan, args.n_objects, args.object_kinds, training.nphotons, training.uses_labels,
        what=f"--probe-from {args.probe_from}"), resolved)
    check_fresh_output_dir(parser, "--output_dir", training.output_dir,
                           overwrite=args.overwrite, resume=args.resume)
    result = run_reporting_errors(parser, lambda: workflows.pretrain_with_backend(
        scan, training, execution, n_objects=args.n_objects,
        object_kinds=args.object_kinds, test_data=test_data, resume=args.resume,
        overwrite=args.overwrite, probe_source=args.probe_from), resolved)
    return train_cli.report_result(result, training, prog)


if __name__ == "__main__":
    sys.exit(main())
