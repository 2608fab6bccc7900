"""Inference command line: ``ptychopinn infer`` (also ``ptychopinn-inference`` and
``python -m ptychopinn_torch.inference``).

Flags -> ``InferenceConfig`` + ``ExecutionConfig`` -> ``ptychopinn.workflows`` (the backend
dispatcher). Nothing here imports torch, so ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptychopinn import workflows
from ptychopinn.cli.common import (
    CliArgumentParser,
    add_execution_flags,
    build_or_exit,
    check_fresh_output_dir,
    check_input_file,
    command_line_process,
    configure_console_logging,
    positive_int,
    resolve_accelerator,
    run_reporting_errors,
)
from ptychopinn.config import ExecutionConfig, InferenceConfig
from ptychopinn.data import RawData

PROG = "ptychopinn infer"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The inference command line's parser (every flag, its default and help)."""
    p = CliArgumentParser(
        prog=prog,
        description="Reconstruct a scan with a trained PtychoPINN model.",
    )
    p.add_argument("--model_path", type=Path, required=True,
                   help="Model bundle (.zip), Lightning checkpoint (.ckpt), or a training "
                        "output directory holding one (required).")
    p.add_argument("--test_data", type=Path, required=True,
                   help="NPZ scan to reconstruct (required).")
    p.add_argument("--output_dir", type=Path, required=True,
                   help="Directory for the images, reconstruction.npz and metrics.json "
                        "(required; one that holds earlier outputs needs --overwrite).")
    p.add_argument("--overwrite", action="store_true",
                   help="Write into an --output_dir that holds earlier outputs, replacing "
                        "them (an earlier metrics.json is removed when no metrics can be "
                        "computed).")
    p.add_argument("--n_images", type=positive_int, default=None,
                   help="Number of groups to reconstruct (default: one per scan position, "
                        "i.e. the whole scan).")
    add_execution_flags(p, inference=True)
    p.add_argument("--inference-batch-size", dest="inference_batch_size", type=positive_int,
                   default=None,
                   help="Groups per inference batch (default: the training batch size).")
    p.add_argument("--stitch-weighting", dest="stitch_weighting",
                   choices=("uniform", "probe"), default="uniform",
                   help="Weights of overlapping patches (default: uniform).")
    p.add_argument("--no-align-phase", dest="stitch_align_phase", action="store_false",
                   help="Do not remove each patch's constant phase offset against its "
                        "neighbours while stitching (default: align).")
    p.add_argument("--flip_x", action="store_true", help="Flip each patch left-right.")
    p.add_argument("--flip_y", action="store_true", help="Flip each patch up-down.")
    p.add_argument("--transpose", action="store_true", help="Transpose each patch.")
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[InferenceConfig, ExecutionConfig]:
    """The configs a parsed command line describes (ConfigError on invalid values)."""
    inference = InferenceConfig(
        model_path=args.model_path,
        test_data_file=args.test_data,
        n_groups=args.n_images,
        output_dir=args.output_dir,
        stitch_weighting=args.stitch_weighting,
        stitch_align_phase=args.stitch_align_phase,
        flip_x=args.flip_x,
        flip_y=args.flip_y,
        transpose=args.transpose,
    )
    execution = ExecutionConfig(
        accelerator=resolve_accelerator(args),
        num_workers=args.num_workers,
        inference_batch_size=args.inference_batch_size,
        enable_progress_bar=not args.quiet,
    )
    return inference, execution


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the process exit code.

    Order (specs/errors.md): flags and configs, accelerator, input files, output
    directory (writable; earlier outputs only with --overwrite), model, data; then the
    workflow checks data against the model and memory before anything is written.
    """
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    inference, execution = build_or_exit(parser, lambda: configs_from_args(args))
    if execution.accelerator == "tpu":
        parser.error("argument --accelerator: inference on TPU is not supported; use cpu or gpu")
    problem = workflows.accelerator_problem_with_backend(execution.accelerator,
                                                         inference.backend)
    if problem is not None:
        parser.error(f"argument --accelerator: {problem}")
    check_input_file(parser, "--test_data", args.test_data)
    check_fresh_output_dir(parser, "--output_dir", args.output_dir, overwrite=args.overwrite)
    model = run_reporting_errors(
        parser, lambda: workflows.load_inference_bundle_with_backend(args.model_path,
                                                                     inference.backend))
    data = run_reporting_errors(parser, lambda: RawData.from_file(args.test_data))
    _, paths = run_reporting_errors(parser, lambda: workflows.run_inference_with_backend(
        inference, execution, data=data, model=model))
    if not args.quiet:
        for name, path in paths.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
