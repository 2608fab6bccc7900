"""Training workflow and command line (``python -m ptychopinn_torch.train``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data import DataContractError, RawData
from ptychopinn.grouping import group_for_training, input_scale, mean_total_counts
from ptychopinn_torch.bundle import BUNDLE_FILENAME, bundle_sha256, save_bundle
from ptychopinn_torch.cli_common import (
    CliArgumentParser,
    accelerator_unavailable,
    add_execution_flags,
    build_or_exit,
    configure_console_logging,
    error_naming_flag,
    positive_float,
    positive_int,
    resolve_accelerator,
    show_deprecation_warnings,
)
from ptychopinn_torch.datamodule import PtychoDataModule
from ptychopinn_torch.module import NonFiniteLossError, PtychoPINNModule, intensity_scale_for
from ptychopinn_torch.trainer import (
    CHECKPOINT_DIRNAME,
    LAST_CHECKPOINT,
    EpochCallback,
    HistoryCallback,
    TrainingSetupError,
    build_trainer,
    resolve_monitor,
)

logger = logging.getLogger(__name__)

__all__ = ["TrainingResult", "train", "main", "NonFiniteLossError", "TrainingSetupError"]


@dataclass
class TrainingResult:
    """Outcome of :func:`train`. Losses per epoch; paths may be None when not written."""

    history: dict[str, list[float]]
    module: PtychoPINNModule
    output_dir: Path
    bundle_path: Path | None
    checkpoint_dir: Path | None
    training_time_s: float
    stopped_by_caller: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


def check_training_inputs(
    train_data: RawData, test_data: RawData | None, config: TrainingConfig
) -> None:
    """Everything that can be known wrong before training starts raises here."""
    N = config.model.N
    for name, raw in (("training", train_data), ("test", test_data)):
        if raw is None:
            continue
        if raw.N != N:
            raise DataContractError(
                f"{name} data has {raw.N}x{raw.N} patterns but ModelConfig.N={N}"
            )
        if raw.n_positions < config.model.C:
            raise DataContractError(
                f"{name} data has {raw.n_positions} positions; a group needs "
                f"gridsize**2 = {config.model.C}"
            )
    if config.model.model_type == "supervised":
        for name, raw in (("training", train_data), ("test", test_data)):
            if raw is not None and raw.labels is None:
                raise DataContractError(
                    "model_type='supervised' needs ground-truth labels (NPZ key 'Y', or "
                    f"'label_amp' and 'label_phase'); the {name} data has none. Use "
                    "model_type='pinn' for unsupervised training."
                )
    if config.realspace_weight > 0 and config.model.model_type == "pinn":
        if train_data.labels is None:
            raise DataContractError(
                "realspace_weight > 0 needs ground-truth labels in the training data"
            )


def train(
    train_data: RawData,
    test_data: RawData | None,
    training_config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    epoch_callback: EpochCallback | None = None,
    resume: bool = False,
    write_bundle: bool = True,
) -> TrainingResult:
    """Train a model on ``train_data`` (validation on ``test_data`` or a seeded split).

    Writes checkpoints under ``<output_dir>/checkpoints``, logs under
    ``<output_dir>/lightning_logs`` and the model bundle ``<output_dir>/ptychopinn_model.zip``.
    ``epoch_callback(report)`` runs after every epoch; returning False stops training.
    ``resume`` continues from ``<output_dir>/checkpoints/last.ckpt`` when it exists.
    """
    config = training_config
    execution = execution_config or ExecutionConfig()
    check_training_inputs(train_data, test_data, config)

    if execution.deterministic and config.subsample_seed is None:
        logger.warning("deterministic training with subsample_seed=None: the groups drawn "
                       "and the validation split differ from run to run")
    L.seed_everything(execution.seed, workers=True, verbose=False)
    if execution.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    train_grouped = group_for_training(train_data, config)
    val_grouped = group_for_training(test_data, config) if test_data is not None else None
    train_input_scale = input_scale(train_data.diffraction)
    counts = mean_total_counts(train_data.diffraction)
    intensity_scale = intensity_scale_for(config.nphotons, counts, config.model.N)

    datamodule = PtychoDataModule(
        train_grouped,
        train_input_scale,
        config,
        execution,
        val_grouped=val_grouped,
        val_input_scale=input_scale(test_data.diffraction) if test_data is not None else None,
    )
    probe = train_data.probe_guess if train_data.probe_guess.ndim == 2 else train_data.probe_guess[0]
    module = PtychoPINNModule(
        model_config=config.model.to_dict(),
        training_config=config.to_dict(),
        execution_config=execution.to_dict(),
        intensity_scale=intensity_scale,
        input_scale=train_input_scale,
        probe=probe,
    )
    monitor = resolve_monitor(
        execution.checkpoint_monitor,
        datamodule.has_validation,
        module.logged_metric_names(datamodule.has_validation, train_data.labels is not None),
    )
    module.monitor = module.hparams.monitor = monitor

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    history = HistoryCallback(epoch_callback=epoch_callback,
                              log_each_epoch=not execution.enable_progress_bar)
    trainer = build_trainer(config, execution, monitor, history, datamodule.has_validation)
    checkpoint_dir = output_dir / CHECKPOINT_DIRNAME
    ckpt_path = None
    if resume and (checkpoint_dir / LAST_CHECKPOINT).exists():
        ckpt_path = str(checkpoint_dir / LAST_CHECKPOINT)
        logger.info("resuming from %s", ckpt_path)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    elapsed = time.perf_counter() - start

    summary = {
        "epochs_completed": history.epochs_completed(trainer),
        "n_train_groups": len(datamodule.train_set),
        "n_val_groups": len(datamodule.val_set) if datamodule.has_validation else 0,
        "final_train_loss": history.history["train_loss"][-1] if history.history["train_loss"] else None,
        "final_val_loss": history.history["val_loss"][-1] if history.history["val_loss"] else None,
        "train_loss_history": list(history.history["train_loss"]),
        "val_loss_history": list(history.history["val_loss"]),
        "training_time_s": elapsed,
        "monitor": monitor,
        "input_scale": train_input_scale,
        "mean_total_counts": counts,
        "torch_version": torch.__version__,
    }
    bundle_path = None
    if write_bundle and trainer.is_global_zero:
        bundle_path = save_model_bundle(module, output_dir / BUNDLE_FILENAME, summary)
    return TrainingResult(
        history=history.history,
        module=module,
        output_dir=output_dir,
        bundle_path=bundle_path,
        checkpoint_dir=checkpoint_dir if execution.enable_checkpointing else None,
        training_time_s=elapsed,
        stopped_by_caller=history.stopped_by_caller,
        summary=summary,
    )


def save_model_bundle(module: PtychoPINNModule, path: Path, summary: dict[str, Any]) -> Path:
    """Write the module, its configs, intensity scale and probe as one bundle file."""
    hp = module.hparams
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return save_bundle(
        path,
        state_dict=state,
        configs={
            "model": dict(hp["model_config"]),
            "training": dict(hp["training_config"]),
            "execution": dict(hp["execution_config"]),
            "scales": {"input_scale": float(hp["input_scale"]),
                       "intensity_scale": float(hp["intensity_scale"]),
                       "monitor": str(hp["monitor"])},
        },
        intensity_scale=float(module.forward_model.intensity_scale.detach().cpu()),
        probe=module.forward_model.probe.detach().cpu(),
        training_summary=summary,
    )


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = CliArgumentParser(
        prog="python -m ptychopinn_torch.train",
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
                   help="Continue from <output_dir>/checkpoints/last.ckpt if present.")
    return p


def configs_from_args(
    args: argparse.Namespace, N: int
) -> tuple[TrainingConfig, ExecutionConfig]:
    """The configs a parsed command line describes (ConfigError on invalid values)."""
    logger_kind = args.logger
    if args.disable_mlflow:
        import warnings

        warnings.warn("--disable_mlflow is deprecated; use --logger none (and --quiet).",
                      DeprecationWarning, stacklevel=2)
        logger_kind = "none"
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    show_deprecation_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    # Validate every flag before touching the data (N is checked once it is known).
    _, pre_execution = build_or_exit(parser, lambda: configs_from_args(args, N=args.N or 64))
    problem = accelerator_unavailable(pre_execution.accelerator)
    if problem is not None:
        parser.error(f"argument --accelerator: {problem}")
    for flag, path in (("--train_data_file", args.train_data_file),
                       ("--test_data_file", args.test_data_file)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file")
    try:
        train_data = RawData.from_file(args.train_data_file)
        test_data = RawData.from_file(args.test_data_file) if args.test_data_file else None
    except DataContractError as exc:
        parser.error(str(exc))
    training, execution = build_or_exit(
        parser, lambda: configs_from_args(args, N=args.N or train_data.N)
    )
    try:
        result = train(train_data, test_data, training, execution, resume=args.resume)
    except (DataContractError, TrainingSetupError) as exc:
        error_naming_flag(parser, str(exc))
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.bundle_path is not None:
        print(f"bundle_path: {result.bundle_path}")
        print(f"bundle_sha256: {bundle_sha256(result.bundle_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
