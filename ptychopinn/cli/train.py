"""Training command line: ``ptychopinn train`` (also ``ptychopinn-train`` and
``python -m ptychopinn_torch.train``).

Flags (and ``--config FILE``) -> ``ModelConfig`` + ``TrainingConfig`` + ``ExecutionConfig``
-> ``ptychopinn.workflows`` (the backend dispatcher). Defaults are the config dataclasses'
own. Nothing here imports torch, so ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptychopinn import workflows
from ptychopinn._io import file_sha256
from ptychopinn.cli.common import (
    TWIN_NOTE,
    CliArgumentParser,
    ResolvedValues,
    add_config_flags,
    add_execution_flags,
    add_field_flag,
    add_switch,
    build_or_exit,
    check_accelerator,
    check_fresh_output_dir,
    check_input_file,
    command_line_process,
    integer,
    non_negative_int,
    number,
    parse_command_line,
    positive_float,
    positive_int,
    require,
    resolve_values,
    run_reporting_errors,
    text_value,
)
from ptychopinn.config import (
    CHECKPOINT_MODES,
    DDP_BACKENDS,
    GENERATORS,
    LOGGERS,
    LOSS_MODES,
    MODEL_TYPES,
    PHYSICS_WEIGHT_SCHEDULES,
    PRECISIONS,
    SCHEDULERS,
    STRATEGIES,
    SUPPORTED_N,
    ExecutionConfig,
    ModelConfig,
    TrainingConfig,
)
from ptychopinn.data import RawData

PROG = "ptychopinn train"
SECTIONS = ("model", "training", "execution")
#: (section, field, flag) that must be set by a flag or the config file.
REQUIRED = (("training", "train_data_file", "--train_data_file"),
            ("training", "output_dir", "--output_dir"))


def add_data_flags(p: argparse.ArgumentParser, *, train_data_file: bool = True) -> None:
    """--train_data_file (unless told not: pretraining simulates its training data),
    --test_data_file, --output_dir, --init-model, --fine_tune_gamma, --resume, --overwrite."""
    if train_data_file:
        add_field_flag(p, "--train_data_file", section="training", name="train_data_file",
                       type=Path, metavar="NPZ", default_text="required",
                       help="Training NPZ dataset (specs/data_contract.md)")
    add_field_flag(p, "--test_data_file", section="training", name="test_data_file",
                   type=Path, metavar="NPZ", default_text="none: a seeded --val_split of "
                   "the training groups",
                   help="NPZ used for validation")
    add_field_flag(p, "--output_dir", section="training", name="output_dir", type=Path,
                   metavar="DIR", default_text="required",
                   help="Directory for checkpoints, logs, the model bundle and "
                        "resolved_config.yaml")
    add_field_flag(p, "--init-model", section="training", name="init_model", type=Path,
                   metavar="BUNDLE",
                   help="Fine-tune: start from this trained bundle (its architecture must "
                        "match the configured one); the new bundle records its SHA-256")
    add_field_flag(p, "--fine_tune_gamma", section="training", name="fine_tune_gamma",
                   type=number, metavar="FACTOR",
                   help="Learning-rate factor when fine-tuning with --init-model, in (0, 1]")
    p.add_argument("--resume", action="store_true",
                   help="Continue the training in --output_dir from its "
                        "checkpoints/last.ckpt (an error if there is none, or if it was "
                        "trained with other architecture flags; a finished run is left "
                        "as it is)")
    p.add_argument("--overwrite", action="store_true",
                   help="Train into an --output_dir that holds an earlier run: its "
                        "checkpoints are deleted once every check has passed, its bundle "
                        "replaced when the new one is written. Without --overwrite or "
                        "--resume such a directory is refused")


def add_training_flags(
    p: argparse.ArgumentParser, *,
    nphotons_help: tuple[str, str] = ("from the data", "Photons per pattern for the Poisson "
                                      "scale"),
) -> None:
    """The TrainingConfig flags; ``nphotons_help`` is (default text, help) of --nphotons."""
    add_field_flag(p, "--max_epochs", "--nepochs", section="training", name="nepochs",
                   type=positive_int, metavar="INT", help="Maximum training epochs")
    add_field_flag(p, "--n_images", "--n_groups", section="training", name="n_groups",
                   type=positive_int, metavar="INT",
                   help="Number of diffraction groups to train on")
    add_field_flag(p, "--n_subsample", section="training", name="n_subsample",
                   type=positive_int, metavar="INT",
                   help="Scan positions drawn (seeded by --subsample_seed) from the training "
                        "data before grouping; the indices are written to <output_dir>/"
                        "subsample_seed<seed>_indices.txt (none: every position)")
    add_field_flag(p, "--subsample_seed", section="training", name="subsample_seed",
                   type=non_negative_int, metavar="INT",
                   help="Seed of the position subsample and of the group sampling")
    for name, help_on, help_off in (
        ("sequential_sampling", "Take positions in scan order instead of sampling them",
         "Sample positions at random (seeded)"),
        ("regroup_each_epoch", "Draw each group's other members again every epoch from the "
         "seed's --neighbor_count nearest (seeded by the epoch; needs --gridsize > 1 and "
         "--neighbor_count > gridsize**2)", "Keep the groups drawn at the start for every "
         "epoch"),
        ("augment_flips", "Augment the training groups with the flips, transposes and "
         "quarter turns about the centre pixel under which the probe is invariant (within "
         "--augment_probe_tolerance); the log names those used", "No flip augmentation"),
    ):
        add_switch(p, [f"--{name}"], [f"--no-{name}"], section="training", name=name,
                   help_on=help_on, help_off=help_off)
    add_field_flag(p, "--augment_probe_tolerance", section="training",
                   name="augment_probe_tolerance", type=number, metavar="FRACTION",
                   help="Largest relative asymmetry of the probe (L2 norm, best constant "
                        "phase) under a transform for --augment_flips to use it, in [0, 1]")
    add_field_flag(p, "--batch_size", section="training", name="batch_size",
                   type=positive_int, metavar="INT",
                   help="Training batch size in groups; also the default inference batch size")
    add_field_flag(p, "--nphotons", section="training", name="nphotons", type=positive_float,
                   metavar="FLOAT", default_text=nphotons_help[0], help=nphotons_help[1])
    add_field_flag(p, "--neighbor_count", section="training", name="neighbor_count",
                   type=positive_int, metavar="INT", default_text="max(4, gridsize**2)",
                   help="Nearest neighbours to draw each group from")
    add_field_flag(p, "--torch-loss-mode", "--loss_mode", section="training", name="loss_mode",
                   choices=LOSS_MODES,
                   help="poisson: Poisson NLL on counts (physics); mae: amplitude MAE only")
    add_field_flag(p, "--val_split", "--validation_fraction", section="training",
                   name="validation_fraction", type=number, metavar="FRACTION",
                   help="Share of the training groups held out for validation when there is "
                        "no --test_data_file, in [0, 1)")
    add_field_flag(p, "--val_seed", section="training", name="val_seed",
                   type=non_negative_int, metavar="INT",
                   help="Seed of the train/validation split")
    for stage, meaning in ((1, "amplitude MAE only"),
                           (2, "the MAE -> Poisson transition (--physics_weight_schedule)"),
                           (3, "Poisson only, learning rate x --stage_3_lr_factor")):
        add_field_flag(p, f"--stage_{stage}_epochs", section="training",
                       name=f"stage_{stage}_epochs", type=non_negative_int, metavar="INT",
                       help=f"Epochs of training stage {stage}: {meaning}; all three 0 = no "
                            "stages")
    add_field_flag(p, "--physics_weight_schedule", section="training",
                   name="physics_weight_schedule", choices=PHYSICS_WEIGHT_SCHEDULES,
                   help="Shape of the stage-2 rise of the physics-loss weight from 0 to 1")
    add_field_flag(p, "--stage_3_lr_factor", section="training", name="stage_3_lr_factor",
                   type=number, metavar="FACTOR",
                   help="Learning-rate factor during stage 3, in (0, 1]")
    add_field_flag(p, "--experiment_name", section="training", name="experiment_name",
                   type=text_value, metavar="NAME", help="MLflow experiment (--logger mlflow)")
    add_field_flag(p, "--notes", section="training", name="notes", type=text_value,
                   metavar="TEXT", default_text="empty",
                   help="MLflow run notes (mlflow.note.content tag)")
    add_field_flag(p, "--model_name", section="training", name="model_name", type=text_value,
                   metavar="NAME", help="MLflow model_name tag")
    add_switch(p, ["--debug"], ["--no-debug"], section="training", name="debug",
               help_on="Progress bars and debug-level log lines during training, even "
                       "with --quiet",
               help_off="Normal verbosity")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The ModelConfig flags."""
    add_field_flag(p, "--N", section="model", name="N", type=int, choices=SUPPORTED_N,
                   default_text="from the data", help="Pattern size in pixels")
    add_field_flag(p, "--gridsize", section="model", name="gridsize", type=positive_int,
                   metavar="INT",
                   help="Group side: gridsize**2 neighbouring patterns per group")
    add_field_flag(p, "--model_type", section="model", name="model_type", choices=MODEL_TYPES,
                   help="pinn (unsupervised, physics loss) or supervised (needs labels)")
    add_field_flag(p, "--generator", section="model", name="generator", choices=GENERATORS,
                   help="Network layout: unet_lite (probe back-projection + U-Net with one "
                        "shared decoder), unet (two full decoders, about 2x the arithmetic) "
                        "or cnn (legacy encoder/decoder)")
    add_field_flag(p, "--n_filters_scale", section="model", name="n_filters_scale",
                   type=positive_int, metavar="INT",
                   help="Multiplies every convolution width (2 is ~4x the arithmetic of 1)")
    for name, where in (("eca_encoder", "efficient channel attention after each encoder "
                         "level"),
                        ("cbam_encoder", "CBAM after each encoder level"),
                        ("cbam_bottleneck", "CBAM in the bottleneck"),
                        ("cbam_decoder", "CBAM after each decoder level"),
                        ("eca_decoder", "efficient channel attention after each decoder "
                         "level"),
                        ("spatial_decoder", "spatial attention after each decoder level")):
        add_switch(p, [f"--{name}"], [f"--no-{name}"], section="model", name=name,
                   help_on=f"Add {where}", help_off=f"No {name.replace('_', ' ')} attention")
    add_field_flag(p, "--decoder_spatial_kernel", section="model",
                   name="decoder_spatial_kernel", type=positive_int, metavar="PX",
                   help="Odd side of the decoder's spatial-attention kernel, pixels")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The ExecutionConfig flags of training."""
    add_execution_flags(p, inference=False)
    add_field_flag(p, "--devices", section="execution", name="devices", metavar="INT|auto",
                   help="Devices per node, or auto")
    add_field_flag(p, "--num-nodes", section="execution", name="num_nodes", type=positive_int,
                   metavar="INT",
                   help="Nodes of a multi-node DDP run (Lightning reads the launcher's "
                        "environment; README shows torchrun and SLURM)")
    add_field_flag(p, "--strategy", section="execution", name="strategy", choices=STRATEGIES,
                   help="Distributed strategy")
    for name, meaning in (("ddp_find_unused_parameters",
                           "DDP looks for parameters without gradients every step"),
                          ("ddp_static_graph", "DDP assumes the same graph every step"),
                          ("ddp_gradient_as_bucket_view",
                           "DDP gradients are views into its communication buckets")):
        add_switch(p, [f"--{name}"], [f"--no-{name}"], section="execution", name=name,
                   help_on=meaning, help_off=f"not: {meaning}")
    add_field_flag(p, "--ddp_backend", section="execution", name="ddp_backend",
                   choices=DDP_BACKENDS, default_text="nccl with CUDA, else gloo",
                   help="DDP process-group backend")
    add_switch(p, ["--deterministic"], ["--no-deterministic"], section="execution",
               name="deterministic",
               help_on="Deterministic training for reproducibility",
               help_off="Disable deterministic training (may be faster; not reproducible)")
    add_switch(p, ["--drop_last"], ["--no-drop_last"], section="execution", name="drop_last",
               help_on="Drop the last, incomplete training batch of each epoch",
               help_off="Keep the last, incomplete training batch")
    add_field_flag(p, "--learning-rate", section="execution", name="learning_rate",
                   type=positive_float, metavar="FLOAT",
                   help="Adam learning rate (typical 1e-5 to 1e-2)")
    add_switch(p, ["--scale_lr_with_batch"], ["--no-scale_lr_with_batch"],
               section="execution", name="scale_lr_with_batch",
               help_on="Multiply the learning rate by sqrt(devices x nodes x "
                       "accumulate-grad-batches) (effective over per-device batch)",
               help_off="Use the learning rate as given")
    add_field_flag(p, "--scheduler", section="execution", name="scheduler", choices=SCHEDULERS,
                   help="Learning-rate schedule (Default = constant)")
    add_field_flag(p, "--precision", section="execution", name="precision",
                   choices=PRECISIONS,
                   help="Lightning's training precision (bf16-mixed: bfloat16 autocast, "
                        "about 1.7x the patterns/s on CPUs with AVX512-BF16 or AMX and on "
                        "recent GPUs)")
    add_field_flag(p, "--accumulate-grad-batches", section="execution",
                   name="accumulate_grad_batches", type=positive_int, metavar="INT",
                   help="Accumulate gradients over this many batches")
    add_field_flag(p, "--gradient_clip_val", section="execution", name="gradient_clip_val",
                   type=positive_float, metavar="FLOAT", help="Gradient-norm bound")
    add_field_flag(p, "--check_val_every_n_epoch", section="execution",
                   name="check_val_every_n_epoch", type=positive_int, metavar="INT",
                   help="Validate every this many epochs")
    add_switch(p, ["--enable-checkpointing"], ["--disable-checkpointing"],
               section="execution", name="enable_checkpointing",
               help_on="Save checkpoints (last.ckpt every epoch, plus the best)",
               help_off="Save no checkpoints at all")
    add_field_flag(p, "--checkpoint-save-top-k", section="execution",
                   name="checkpoint_save_top_k", type=integer, metavar="INT",
                   help="Best checkpoints to keep: 1 = best only, -1 = all, 0 = none (only "
                        "last.ckpt)")
    add_field_flag(p, "--checkpoint-monitor", section="execution", name="checkpoint_monitor",
                   metavar="METRIC",
                   help="Metric for checkpoint selection, early stopping and Adaptive; val_* "
                        "falls back to train_* without validation data; the seeds' "
                        "poisson_val_loss / poisson_train_loss mean val_loss / train_loss")
    add_field_flag(p, "--checkpoint-mode", section="execution", name="checkpoint_mode",
                   choices=CHECKPOINT_MODES, help="min for losses, max for scores")
    add_field_flag(p, "--early-stop-patience", section="execution", name="early_stop_patience",
                   type=positive_int, metavar="INT",
                   help="Epochs without improvement before stopping")
    add_field_flag(p, "--logger", section="execution", name="logger", choices=LOGGERS,
                   help="Metrics logger: csv (<output_dir>/lightning_logs/version_N/"
                        "metrics.csv), tensorboard, mlflow (--mlflow-tracking-uri), none")
    p.add_argument("--disable_mlflow", action="store_true",
                   help="DEPRECATED: use --logger none (and --quiet)")
    add_field_flag(p, "--seed", section="execution", name="seed", type=integer, metavar="INT",
                   help="Random seed (seed_everything, shuffling, PYTHONHASHSEED)")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The training command line's parser (every flag, its default and help)."""
    p = CliArgumentParser(
        prog=prog,
        description="Train a PtychoPINN model (PyTorch Lightning) on a data-contract NPZ. "
                    "Defaults are those of the configs (specs/configuration.md).",
        epilog=TWIN_NOTE + "; every execution flag also answers to --torch-<flag>.",
    )
    add_config_flags(p, PROG)
    add_data_flags(p)
    add_training_flags(p)
    add_model_flags(p)
    add_run_flags(p)
    return p


def _devices(value: object) -> object:
    if isinstance(value, str) and value != "auto":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def configs_from_values(
    resolved: ResolvedValues, N: int | None = None
) -> tuple[TrainingConfig, ExecutionConfig]:
    """The configs resolved values describe (ConfigError on invalid values); ``N`` is
    the data's pattern size, used unless --N or the file sets one."""
    model_values = dict(resolved.values["model"])
    if "N" not in model_values and N is not None:
        model_values["N"] = N
    model = ModelConfig(**model_values)
    training = TrainingConfig(model=model, **resolved.values["training"])
    execution_values = dict(resolved.values["execution"])
    if "devices" in execution_values:
        execution_values["devices"] = _devices(execution_values["devices"])
    return training, ExecutionConfig(**execution_values)


def configs_from_args(
    args: argparse.Namespace, N: int | None = None, parser: argparse.ArgumentParser | None = None
) -> tuple[TrainingConfig, ExecutionConfig]:
    """The configs a parsed command line (and its --config file) describes."""
    resolved = resolve_values(parser or build_parser(), args, SECTIONS)
    return configs_from_values(resolved, N)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the process exit code.

    Order (specs/errors.md): flags, config file and configs, accelerator, input files,
    data contract, pattern size, output directory (writable; earlier outputs only with
    --resume or --overwrite); then the workflow checks data, memory, resume point and the
    lock before training starts.
    """
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    parser, args, resolved = parse_command_line(build_parser, argv, prog, SECTIONS)
    require(parser, resolved, REQUIRED)
    train_data, test_data, training, execution = checked_inputs(
        parser, args, resolved, "--train_data_file", lambda config: config.train_data_file)
    check_fresh_output_dir(parser, "--output_dir", training.output_dir,
                           overwrite=args.overwrite, resume=args.resume)
    result = run_reporting_errors(parser, lambda: workflows.train_cdi_model_with_backend(
        train_data, test_data, training, execution, resume=args.resume,
        overwrite=args.overwrite), resolved)
    return report_result(result, training, prog)


def checked_inputs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, resolved: ResolvedValues,
    data_flag: str, data_path: Callable[[TrainingConfig], Path | None],
) -> tuple[RawData, RawData | None, TrainingConfig, ExecutionConfig]:
    """The checks of a training command line up to its data, in order (exit 2 on the
    first failure): --resume with --overwrite, every value (configs, with N checked once
    the data tell it), the accelerator, the input files (``data_flag`` names the one
    ``data_path(config)`` returns), --init-model, the data contract, the pattern size.
    Returns the data, the test data and the configs."""
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --output_dir and --overwrite replaces "
                     "it; give one of them")
    # Validate every value before touching the data (N is checked once it is known).
    pre_training, pre_execution = build_or_exit(
        parser, lambda: configs_from_values(resolved, N=SUPPORTED_N[0]), resolved)
    check_accelerator(parser, resolved, pre_execution.accelerator, pre_training.backend)
    path = data_path(pre_training)
    for flag, file in ((data_flag, path), ("--test_data_file", pre_training.test_data_file)):
        check_input_file(parser, flag, file)
    if pre_training.init_model is not None and not pre_training.init_model.exists():
        parser.error(f"--init-model {pre_training.init_model}: no such file")
    data, test_data = run_reporting_errors(parser, lambda: (
        RawData.from_file(path),
        RawData.from_file(pre_training.test_data_file) if pre_training.test_data_file
        else None,
    ), resolved)
    if resolved.get("model", "N") is None and data.N not in SUPPORTED_N:
        parser.error(
            f"{data_flag} {path} has {data.N}x{data.N} patterns; PtychoPINN supports "
            f"{', '.join(map(str, SUPPORTED_N))} px patterns: crop or resample the patterns "
            "and the probe to one of these sizes"
        )
    training, execution = build_or_exit(
        parser, lambda: configs_from_values(resolved, N=data.N), resolved)
    return data, test_data, training, execution


def report_result(result: Any, training: TrainingConfig, prog: str) -> int:
    """Print what a finished training wrote (the bundle's path and SHA-256); exit code 0."""
    if result.already_complete:
        print(f"{prog}: training in {training.output_dir} is already complete "
              f"({result.summary.get('epochs_completed')} of --max_epochs "
              f"{training.nepochs}); the bundle was left unchanged. Resume with a larger "
              "--max_epochs to train further", file=sys.stderr)
    if result.bundle_path is not None:
        print(f"bundle_path: {result.bundle_path}")
        print(f"bundle_sha256: {file_sha256(result.bundle_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
