"""Lightning Trainer, callbacks, loggers and LR schedulers built from ExecutionConfig."""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ptychopinn._io import atomic_output, save_failure
from ptychopinn.config import (
    LEARNING_RATE,
    TRAIN_LOSS,
    VAL_LOSS,
    ExecutionConfig,
    TrainingConfig,
)
from ptychopinn_torch.bundle import CHECKPOINT_DIRNAME, LAST_CHECKPOINT  # noqa: F401
from ptychopinn_torch.preflight import TrainingSetupError
from ptychopinn_torch.stages import StageLearningRate, learning_rate_factor, stages_enabled

logger = logging.getLogger(__name__)

# CHECKPOINT_DIRNAME, LAST_CHECKPOINT and TrainingSetupError live in modules inference
# imports without Lightning (bundle, preflight); training code finds them here as well.

#: The seeds' loss-named metrics (``<loss>_<stage>_loss``) are our ``<stage>_loss``.
_SEED_MONITOR = re.compile(r"^(?:poisson|mae|supervised)_(train|val)_loss$")


def resolve_monitor(requested: str, has_validation: bool, known_metrics: set[str]) -> str:
    """Metric name that checkpointing, early stopping and plateau scheduling follow.

    The seeds' names ``poisson_val_loss`` / ``poisson_train_loss`` (and ``mae_*``,
    ``supervised_*``) mean ``val_loss`` / ``train_loss``. ``val_loss`` (or any ``val_*``
    metric) falls back to the matching training metric when there is no validation data,
    because only logged metrics can be monitored.
    """
    seed_name = _SEED_MONITOR.match(requested)
    name = f"{seed_name.group(1)}_loss" if seed_name else requested
    if not has_validation and name.startswith("val_"):
        fallback = "train_" + name[len("val_") :]
        logger.info("no validation data: monitoring %s instead of %s", fallback, name)
        name = fallback
    if name not in known_metrics:
        raise TrainingSetupError(
            f"ExecutionConfig.checkpoint_monitor={requested!r} is not a logged metric; "
            f"choose one of {', '.join(sorted(known_metrics))}"
        )
    return name


def build_scheduler(
    optimizer: torch.optim.Optimizer, scheduler: str, nepochs: int, monitor: str
) -> dict[str, Any] | None:
    """Epoch-wise LR scheduler config for ``configure_optimizers`` (None for Default).

    Exponential: x0.95 per epoch. MultiStage: x0.1 at 50 % and 75 % of the epochs.
    Adaptive: x0.5 once ``monitor`` has not improved by more than 1e-4 for 3 epochs in
    a row (torch ``patience=2``: two such epochs are tolerated).
    WarmupCosine: linear warm-up over 10 % of the epochs, then cosine decay to 5 %.
    """
    if scheduler == "Default":
        return None
    if scheduler == "Exponential":
        sched: Any = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    elif scheduler == "MultiStage":
        milestones = sorted({max(1, nepochs // 2), max(1, (3 * nepochs) // 4)})
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    elif scheduler == "Adaptive":
        # Absolute threshold: with the default relative one, a negative loss (the Poisson
        # NLL is) counts a slightly worse value as an improvement and never reduces.
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=2, threshold=1e-4, threshold_mode="abs"
        )
        return {"scheduler": sched, "interval": "epoch", "monitor": monitor}
    elif scheduler == "WarmupCosine":
        warmup = max(1, nepochs // 10)
        floor = 0.05

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / warmup
            progress = min(1.0, (epoch - warmup) / max(1, nepochs - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
    else:  # ExecutionConfig validates the name; this guards programming errors.
        raise ValueError(f"unknown scheduler {scheduler!r}")
    return {"scheduler": sched, "interval": "epoch"}


@dataclass
class EpochReport:
    """What one finished epoch produced (losses in the units of specs/physics_and_losses.md)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    learning_rate: float


EpochCallback = Callable[[EpochReport], bool | None]
"""Called after every epoch; returning ``False`` stops training after that epoch.

An epoch callback may also have a method ``stop_requested() -> bool``. It is polled after
every training batch; ``True`` stops training within that batch (see
:class:`HistoryCallback`), e.g. for a Stop button that should not wait for an epoch.
"""


@dataclass
class HistoryCallback(Callback):
    """Collects per-epoch metrics, logs a line per epoch when quiet bars are off, and lets
    a caller stop training (its callback returning ``False``).

    When ``epoch_callback.stop_requested()`` turns true during an epoch, that epoch is cut
    short after the current batch: it is not reported or recorded, not validated, and the
    module goes back to the weights of the last completed epoch (kept as a CPU copy after
    every epoch; with no completed epoch the partly trained weights stay).
    """

    epoch_callback: EpochCallback | None = None
    log_each_epoch: bool = False
    history: dict[str, list[float]] = field(
        default_factory=lambda: {TRAIN_LOSS: [], VAL_LOSS: [], LEARNING_RATE: []}
    )
    stopped_by_caller: bool = False
    cut_short_epoch: int | None = None
    """0-based epoch that a mid-epoch stop cut short (not counted as completed)."""
    _epoch_lr: float = math.nan
    _last_completed_state: dict[str, torch.Tensor] | None = None
    _validated: bool = False

    def __post_init__(self) -> None:
        super().__init__()

    # Stored in every checkpoint, so that a resumed run reports the losses of all its
    # epochs, not only those after the restart.
    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: list(values) for name, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("history", {})
        for name in self.history:
            self.history[name] = [float(v) for v in saved.get(name, [])]

    def _stop_requested(self) -> bool:
        poll = getattr(self.epoch_callback, "stop_requested", None)
        return bool(poll()) if callable(poll) else False

    def epochs_completed(self, trainer: L.Trainer) -> int:
        """Epochs trained to the end (Lightning also counts an epoch that was cut short)."""
        return trainer.current_epoch - (self.cut_short_epoch is not None)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # callback_metrics keeps the last val_loss in epochs that do not validate
        # (check_val_every_n_epoch > 1): only an epoch that validated reports one.
        self._validated = not trainer.sanity_checking

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Read here: epoch-wise schedulers step before on_train_epoch_end callbacks run.
        factor = learning_rate_factor(trainer.current_epoch, pl_module.training_config)
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"]) * factor

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches or not self._stop_requested():
            return  # the last batch ends the epoch anyway; the epoch callback stops it
        self.stopped_by_caller = True
        self.cut_short_epoch = trainer.current_epoch
        trainer.should_stop = True
        trainer.limit_val_batches = 0  # no validation of a cut-short epoch
        if self._last_completed_state is not None:
            pl_module.load_state_dict(self._last_completed_state)
        logger.info(
            "stop requested: epoch %d cut short after batch %d of %d; %s",
            trainer.current_epoch + 1, batch_idx + 1, trainer.num_training_batches,
            f"kept the model of epoch {trainer.current_epoch}"
            if self._last_completed_state is not None
            else "no epoch completed, kept the partly trained model",
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.cut_short_epoch is not None:
            return
        metrics = trainer.callback_metrics
        train = float(metrics[TRAIN_LOSS]) if TRAIN_LOSS in metrics else math.nan
        val = float(metrics[VAL_LOSS]) if VAL_LOSS in metrics and self._validated else None
        self._validated = False
        lr = self._epoch_lr
        self.history[TRAIN_LOSS].append(train)
        if val is not None:
            self.history[VAL_LOSS].append(val)
        self.history[LEARNING_RATE].append(lr)
        if callable(getattr(self.epoch_callback, "stop_requested", None)):
            # Only a caller that can stop mid-epoch needs the weights to go back to.
            self._last_completed_state = {
                name: value.detach().to("cpu", copy=True)
                for name, value in pl_module.state_dict().items()
            }
        report = EpochReport(trainer.current_epoch, train, val, lr)
        if self.log_each_epoch and trainer.is_global_zero:
            val_text = f" val_loss={val:.5g}" if val is not None else ""
            logger.info(
                "epoch %d/%d train_loss=%.5g%s lr=%.3g",
                report.epoch + 1, trainer.max_epochs, train, val_text, lr,
            )
        if self.epoch_callback is not None and self.epoch_callback(report) is False:
            self.stopped_by_caller = True
            trainer.should_stop = True


class CompletedEpochCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that saves nothing at the end of an epoch a Stop cut short
    (``history.cut_short_epoch``): Lightning counts that epoch as done while the weights
    went back to the last completed one, so ``--resume`` from it would skip an epoch.
    The checkpoints of the last completed epoch stay the newest."""

    def __init__(self, history: HistoryCallback, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history = history

    @property
    def state_key(self) -> str:
        # The plain ModelCheckpoint's key: checkpoints written before this class existed
        # resume without a "missing callback" warning.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._history.cut_short_epoch is None:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._history.cut_short_epoch is None:
            super().on_validation_end(trainer, pl_module)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError that ``exc`` is or was raised while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written like bundles (``ptychopinn._io.atomic_output``): a temporary
    in the checkpoint directory, fsynced and renamed, so a killed or failed save leaves
    the previous checkpoint intact; a full disk raises :class:`SaveError`.  Read back
    with ``weights_only=True`` only."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        try:
            with atomic_output(target) as tmp, open(tmp, "wb") as handle:
                # A Python file object: a failed write surfaces as its OSError (torch's own
                # writer reports only "unexpected pos").
                torch.save(checkpoint, handle)
        except (OSError, RuntimeError) as exc:
            cause = _os_error_in(exc)
            if cause is None:
                raise
            raise save_failure(target, cause) from exc

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def _require_package(package: str, logger_kind: str) -> None:
    """Fail before training when an optional logger's package is missing."""
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise TrainingSetupError(
            f"ExecutionConfig.logger={logger_kind!r} needs the {package} package: "
            f"pip install 'ptychopinn[{package}]'"
        ) from exc


def _build_logger(kind: str, output_dir: Path, training_config: TrainingConfig | None = None,
                  tracking_uri: str | None = None) -> Any:
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="lightning_logs")
    if kind == "tensorboard":
        _require_package("tensorboard", kind)
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name="lightning_logs")
    if kind == "mlflow":
        _require_package("mlflow", kind)
        from lightning.pytorch.loggers import MLFlowLogger

        tc = training_config or TrainingConfig()
        if tracking_uri is None:
            # A local file store under output_dir: no tracking server is needed. MLflow 3
            # refuses file stores unless opted in; a user's explicit setting is kept.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            tracking_uri = (output_dir / "mlruns").resolve().as_uri()
        tags = {"model_name": tc.model_name}
        if tc.notes:
            tags["mlflow.note.content"] = tc.notes  # shown as the run's description
        return MLFlowLogger(experiment_name=tc.experiment_name, tracking_uri=tracking_uri,
                            tags=tags)
    raise TrainingSetupError(f"unknown logger {kind!r}")


def _build_strategy(execution_config: ExecutionConfig) -> Any:
    ex = execution_config
    if ex.strategy in ("ddp", "ddp_spawn"):
        from lightning.pytorch.strategies import DDPStrategy

        backend = ex.ddp_backend
        if backend is None:  # NCCL only exists for CUDA; CPU processes talk over gloo.
            on_cpu = ex.accelerator == "cpu" or not torch.cuda.is_available()
            backend = "gloo" if on_cpu else "nccl"
        return DDPStrategy(
            process_group_backend=backend,
            start_method="spawn" if ex.strategy == "ddp_spawn" else "popen",
            find_unused_parameters=ex.ddp_find_unused_parameters,
            static_graph=ex.ddp_static_graph,
            gradient_as_bucket_view=ex.ddp_gradient_as_bucket_view,
        )
    return ex.strategy


def initial_learning_rate(
    training_config: TrainingConfig, execution_config: ExecutionConfig, world_size: int = 1
) -> float:
    """The Adam learning rate a run starts from: ``learning_rate``, x ``fine_tune_gamma``
    when fine-tuning (``init_model``), x ``sqrt(effective batch / per-device batch)`` =
    ``sqrt(world_size * accumulate_grad_batches)`` with ``scale_lr_with_batch``."""
    lr = execution_config.learning_rate
    if training_config.init_model is not None:
        lr *= training_config.fine_tune_gamma
    if execution_config.scale_lr_with_batch:
        lr *= math.sqrt(world_size * execution_config.accumulate_grad_batches)
    return lr


#: Lightning's own advertisements, logged at INFO on this logger (not the user's business).
_ADVERT_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def silence_third_party_noise() -> None:
    """Hide what is not the user's business, narrowly (idempotent): Lightning's "Tip"
    adverts for its cloud products, and the FutureWarning torch raises when Lightning's
    ``_pytree`` helper builds a ``LeafSpec`` (Lightning's code, not ours or the user's)."""
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree",
    )
    advert_logger = logging.getLogger(_ADVERT_LOGGER)
    if not any(isinstance(f, _DropAdverts) for f in advert_logger.filters):
        advert_logger.addFilter(_DropAdverts())


def build_trainer(
    training_config: TrainingConfig,
    execution_config: ExecutionConfig,
    monitor: str,
    history: HistoryCallback,
    has_validation: bool = True,
) -> L.Trainer:
    """A Trainer configured from the execution config; checkpoints under
    ``<output_dir>/checkpoints`` and logs under ``<output_dir>/lightning_logs``."""
    ex = execution_config
    silence_third_party_noise()
    output_dir = Path(training_config.output_dir)
    callbacks: list[Callback] = [history]
    if stages_enabled(training_config):
        callbacks.append(StageLearningRate(training_config))
    if ex.enable_checkpointing:
        top_k = ex.checkpoint_save_top_k
        checkpoint_dir = str(output_dir / CHECKPOINT_DIRNAME)
        # last.ckpt is written by its own callback after every epoch: Lightning's
        # save_last only refreshes it when a top-k file is saved in the same epoch, so
        # resuming (or the NaN stop) would otherwise go back to an older epoch.
        # It is written at the end of each training epoch, after HistoryCallback has
        # recorded that epoch (Lightning runs checkpoint callbacks last), so the
        # history it carries is complete; with validation Lightning would otherwise
        # save it before the epoch's training loss exists.
        callbacks.append(
            CompletedEpochCheckpoint(
                history,
                dirpath=checkpoint_dir,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                monitor=None,
                save_top_k=1,
                enable_version_counter=False,
                save_on_train_epoch_end=True,
            )
        )
        if top_k != 0:
            callbacks.append(
                CompletedEpochCheckpoint(
                    history,
                    dirpath=checkpoint_dir,
                    filename="epoch{epoch:03d}-" + monitor + "{" + monitor + ":.5g}",
                    auto_insert_metric_name=False,
                    monitor=monitor,
                    mode=ex.checkpoint_mode,
                    save_top_k=top_k,
                )
            )
    if ex.early_stop_patience is not None:
        # strict=False: resolve_monitor has checked the name already, and an epoch that a
        # Stop cut short has no validation metrics to check.
        callbacks.append(
            EarlyStopping(monitor=monitor, patience=ex.early_stop_patience,
                          mode=ex.checkpoint_mode, strict=False)
        )
    # TrainingConfig.debug (the seeds' switch) turns progress output on whatever --quiet says.
    verbose = ex.enable_progress_bar or training_config.debug
    return L.Trainer(
        max_epochs=training_config.nepochs,
        accelerator=ex.accelerator,
        devices=ex.devices,
        num_nodes=ex.num_nodes,
        strategy=_build_strategy(ex),
        deterministic=ex.deterministic,
        precision=ex.precision,
        gradient_clip_val=ex.gradient_clip_val,
        accumulate_grad_batches=ex.accumulate_grad_batches,
        enable_checkpointing=ex.enable_checkpointing,
        enable_progress_bar=verbose,
        enable_model_summary=verbose,
        check_val_every_n_epoch=ex.check_val_every_n_epoch,
        logger=_build_logger(ex.logger, output_dir, training_config, ex.mlflow_tracking_uri),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(output_dir),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        # Without validation data the validation loop is skipped, not run on nothing.
        limit_val_batches=None if has_validation else 0,
        # Regrouping draws new training groups every epoch: the data module builds them
        # in train_dataloader, which Lightning then calls at each epoch's start.
        reload_dataloaders_every_n_epochs=1 if training_config.regroup_each_epoch else 0,
    )
