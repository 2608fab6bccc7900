"""Training workflow: data + configs -> trained module, checkpoints, logs and bundle.

Its command line is ``ptychopinn.cli.train`` (``ptychopinn train``); running this module
(``python -m ptychopinn_torch.train``) starts that command line before torch is imported.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # parse the flags first: --help must not wait for torch
    from ptychopinn.cli.train import main

    sys.exit(main(prog="python -m ptychopinn_torch.train"))

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.data import DataContractError, RawData
from ptychopinn.grouping import group_for_training, input_scale, mean_total_counts
from ptychopinn_torch.bundle import BUNDLE_FILENAME, save_bundle
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

__all__ = ["TrainingResult", "train", "NonFiniteLossError", "TrainingSetupError"]


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
        "epochs_completed": trainer.current_epoch,
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
