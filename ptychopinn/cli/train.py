"""Training command line: ``ptychopinn train`` (also ``ptychopinn-train`` and
``python -m ptychopinn_torch.train``).

Flags -> ``TrainingConfig`` + ``ExecutionConfig`` -> ``ptychopinn.workflows`` (the backend
dispatcher). Nothing here imports torch, so ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ptychopinn import workflows
from ptychopinn._io import file_sha256
from ptychopinn.cli.common import (
    CliArgumentParser,
    add_execution_flags,
    build_or_exit,
    check_fresh_output_dir,
    check_input_file,
    command_line_process,
    configure_console_logging,
    positive_float,
    positive_int,
    resolve_accelerator,
    run_reporting_errors,
)
from ptychopinn.config import SUPPORTED_N, ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData

PROG = "ptychopinn train"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The training command line's parser (every flag, its default and help)."""
    p = CliArgumentParser(
        prog=prog,
        description="Train a PtychoPINN model (PyTorch Lightning) on a data-contract NPZ.",
    )
    p.add_argument("--train_data_file", type=Path, required=True,
                   help="Path to the training NPZ dataset (required).")
    p.add_argument("--test_data_file", type=Path, default=None,
                   help="Optional NPZ used for validation (default: a seeded 5%% split).")
    p.add_argument("--output_dir", type=Path, required=True,
                   help="Directory for checkpoints, logs and the model bundle (required).")
    p.add_argument("--max_epochs", type=positive_int, default=100,
                   help="Maximum training epochs (default: 100).")
    p.add_argument("--n_images", type=positive_int, default=512,
                   help="Number of diffraction groups to train on (default: 512).")
    p.add_argument("--gridsize", type=positive_int, default=2,
                   help="Group side: gridsize**2 neighbouring patterns per group (default: 2).")
    p.add_argument("--batch_size", type=positive_int, default=4,
                   help="Training batch size in groups (default: 4).")
    p.add_argument("--N", type=int, choices=(64, 128, 256), default=None,
                   help="Pattern size (default: taken from the data).")
    p.add_argument("--model_type", choices=("pinn", "supervised"), default="pinn",
                   help="pinn (unsupervised, physics loss) or supervised (needs labels). "
                        "Default: pinn.")
    p.add_argument("--generator", choices=("unet", "cnn"), default="unet",
                   help="Network layout: unet (probe back-projection + U-Net, default) or "
                        "cnn (legacy encoder/decoder).")
    p.add_argument("--n_filters_scale", type=positive_int, default=2,
                   help="Multiplies every convolution width (default: 2; 1 is ~4x "
                        "cheaper, for CPUs).")
    p.add_argument("--torch-loss-mode", dest="loss_mode", choices=("poisson", "mae"),
                   default="poisson",
                   help="poisson: Poisson NLL on counts (physics); mae: amplitude MAE only. "
                        "Default: poisson.")
    p.add_argument("--nphotons", type=positive_float, default=None,
                   help="Photons per pattern for the Poisson scale (default: from the data).")
    p.add_argument("--neighbor_count", type=positive_int, default=None,
                   help="Nearest neighbours to draw each group from "
                        "(default: max(4, gridsize**2)).")
    add_execution_flags(p, inference=False)
    p.add_argument("--devices", default="1",
                   help="Number of devices, or 'auto' (default: 1).")
    p.add_argument("--strategy", choices=("auto", "ddp", "ddp_spawn"), default="auto",
                   help="Distributed strategy (default: auto).")
    p.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                   help="Deterministic training for reproducibility (default: enabled).")
    p.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                   help="Disable deterministic training (may be faster; not reproducible).")
    p.add_argument("--learning-rate", dest="learning_rate", type=positive_float, default=1e-3,
                   help="Adam learning rate (default: 1e-3; typical 1e-5 to 1e-2).")
    p.add_argument("--scheduler",
                   choices=("Default", "Exponential", "MultiStage", "Adaptive", "WarmupCosine"),
                   default="Default",
                   help="Learning-rate schedule (default: Default = constant).")
    p.add_argument("--accumulate-grad-batches", dest="accumulate_grad_batches",
                   type=positive_int, default=1,
                   help="Accumulate gradients over this many batches (default: 1).")
    p.add_argument("--enable-checkpointing", dest="enable_checkpointing", action="store_true",
                   default=True, help="Save checkpoints (default: enabled).")
    p.add_argument("--disable-checkpointing", dest="enable_checkpointing",
                   action="store_false", help="Do not save checkpoints.")
    p.add_argument("--checkpoint-save-top-k", dest="checkpoint_save_top_k", type=int, default=1,
                   help="Best checkpoints to keep (1 = best only, -1 = all, 0 = only last). "
                        "Default: 1.")
    p.add_argument("--checkpoint-monitor", dest="checkpoint_monitor", default="val_loss",
                   help="Metric for checkpoint selection (default: val_loss; falls back to "
                        "train_loss without validation data).")
    p.add_argument("--checkpoint-mode", dest="checkpoint_mode", choices=("min", "max"),
                   default="min", help="min for losses, max for scores (default: min).")
    p.add_argument("--early-stop-patience", dest="early_stop_patience", type=positive_int,
                   default=100, help="Epochs without improvement before stopping "
                                     "(default: 100).")
    p.add_argument("--logger", choices=("csv", "tensorboard", "mlflow", "none"), default="csv",
                   help="Metrics logger: csv (<output_dir>/lightning_logs/version_N/"
                        "metrics.csv, default), tensorboard, mlflow (local store under "
                        "output_dir), none.")
    p.add_argument("--disable_mlflow", action="store_true",
                   help="DEPRECATED: use --logger none (and --quiet).")
    p.add_argument("--seed", type=int, default=42, help="Random seed (default: 42).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the training in --output_dir from its "
                        "checkpoints/last.ckpt (an error if there is none, or if it was "
                        "trained with other architecture flags; a finished run is left "
                        "as it is).")
    p.add_argument("--overwrite", action="store_true",
                   help="Train into an --output_dir that holds an earlier run: its "
                        "checkpoints are deleted once every check has passed, its bundle "
                        "replaced when the new one is written. Without --overwrite or "
                        "--resume such a directory is refused.")
    return p


def configs_from_args(
    args: argparse.Namespace, N: int
) -> tuple[TrainingConfig, ExecutionConfig]:
    """The configs a parsed command line describes (ConfigError on invalid values)."""
    logger_kind = "none" if args.disable_mlflow else args.logger
    devices: int | str = args.devices if args.devices == "auto" else _int_or_text(args.devices)
    model = ModelConfig(N=N, gridsize=args.gridsize, model_type=args.model_type,
                        generator=args.generator, n_filters_scale=args.n_filters_scale)
    training = TrainingConfig(
        model=model,
        train_data_file=args.train_data_file,
        test_data_file=args.test_data_file,
        n_groups=args.n_images,
        batch_size=args.batch_size,
        nepochs=args.max_epochs,
        nphotons=args.nphotons,
        neighbor_count=args.neighbor_count or max(4, model.C),
        loss_mode=args.loss_mode,
        output_dir=args.output_dir,
    )
    execution = ExecutionConfig(
        accelerator=resolve_accelerator(args),
        devices=devices,
        strategy=args.strategy,
        deterministic=args.deterministic,
        num_workers=args.num_workers,
        learning_rate=args.learning_rate,
        scheduler=args.scheduler,
        accumulate_grad_batches=args.accumulate_grad_batches,
        enable_progress_bar=not args.quiet,
        enable_checkpointing=args.enable_checkpointing,
        checkpoint_save_top_k=args.checkpoint_save_top_k,
        checkpoint_monitor=args.checkpoint_monitor,
        checkpoint_mode=args.checkpoint_mode,
        early_stop_patience=args.early_stop_patience,
        logger=logger_kind,
        seed=args.seed,
    )
    return training, execution


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the process exit code.

    Order (specs/errors.md): flags and configs, accelerator, input files, data contract,
    pattern size, output directory (writable; earlier outputs only with --resume or
    --overwrite); then the workflow checks data, memory, resume point and the lock
    before training starts.
    """
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --output_dir and --overwrite replaces "
                     "it; give one of them")
    if args.disable_mlflow:  # warned here, once (the configs are built twice)
        warnings.warn("--disable_mlflow is deprecated; use --logger none (and --quiet).",
                      DeprecationWarning, stacklevel=1)
    # Validate every flag before touching the data (N is checked once it is known).
    pre_training, pre_execution = build_or_exit(
        parser, lambda: configs_from_args(args, N=args.N or SUPPORTED_N[0]))
    problem = workflows.accelerator_problem_with_backend(pre_execution.accelerator,
                                                         pre_training.backend)
    if problem is not None:
        parser.error(f"argument --accelerator: {problem}")
    check_input_file(parser, "--train_data_file", args.train_data_file)
    check_input_file(parser, "--test_data_file", args.test_data_file)
    train_data, test_data = run_reporting_errors(parser, lambda: (
        RawData.from_file(args.train_data_file),
        RawData.from_file(args.test_data_file) if args.test_data_file else None,
    ))
    if args.N is None and train_data.N not in SUPPORTED_N:
        parser.error(
            f"--train_data_file {args.train_data_file} has {train_data.N}x{train_data.N} "
            f"patterns; PtychoPINN supports {', '.join(map(str, SUPPORTED_N))} px patterns: "
            "crop or resample the patterns and the probe to one of these sizes"
        )
    training, execution = build_or_exit(
        parser, lambda: configs_from_args(args, N=args.N or train_data.N)
    )
    check_fresh_output_dir(parser, "--output_dir", args.output_dir,
                           overwrite=args.overwrite, resume=args.resume)
    result = run_reporting_errors(parser, lambda: workflows.train_cdi_model_with_backend(
        train_data, test_data, training, execution, resume=args.resume,
        overwrite=args.overwrite))
    if result.already_complete:
        print(f"{prog}: training in {args.output_dir} is already complete "
              f"({result.summary.get('epochs_completed')} of --max_epochs "
              f"{args.max_epochs}); the bundle was left unchanged. Resume with a larger "
              "--max_epochs to train further", file=sys.stderr)
    if result.bundle_path is not None:
        print(f"bundle_path: {result.bundle_path}")
        print(f"bundle_sha256: {file_sha256(result.bundle_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
