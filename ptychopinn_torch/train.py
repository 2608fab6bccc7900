"""Training workflow: data + configs -> trained module, checkpoints, logs and bundle.

Its command line is ``ptychopinn.cli.train`` (``ptychopinn train``); running this module
(``python -m ptychopinn_torch.train``) starts that command line before torch is imported.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # parse the flags first: --help must not wait for torch
    from ptychopinn.cli.train import main

    sys.exit(main(prog="python -m ptychopinn_torch.train"))

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ptychopinn._io import (
    atomic_write_text,
    check_output_dir,
    launched_worker,
    output_dir_lock,
)
from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.config_file import CONFIG_FILENAME, write_config_file
from ptychopinn.data import DataContractError, RawData, concatenate_scans
from ptychopinn.grouping import (
    GroupedData,
    ScanScales,
    group_for_training,
    regroup_raw_data,
)
from ptychopinn.symmetry import probe_symmetries
from ptychopinn_torch.bundle import BUNDLE_FILENAME, BundleError, bundle_sha256, save_bundle
from ptychopinn_torch.datamodule import PtychoDataModule
from ptychopinn_torch.inference import LoadedModel, load_model
from ptychopinn_torch.module import (
    NonFiniteLossError,
    PtychoPINNModule,
    intensity_scale_for,
    logged_metric_names,
)
from ptychopinn_torch.network_module import NetworkParts
from ptychopinn_torch.preflight import (
    ResumePoint,
    check_scan,
    check_training_resources,
    find_resume_point,
    warn_if_photons_disagree,
)
from ptychopinn_torch.runtime import torch_threads
from ptychopinn_torch.trainer import (
    CHECKPOINT_DIRNAME,
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
    already_complete: bool = False


def check_training_inputs(
    train_data: RawData, test_data: RawData | None, config: TrainingConfig
) -> None:
    """Everything about the data that can be known wrong before training starts raises
    here (and questionable data warns): see ``preflight.check_scan``."""
    for name, raw in (("training", train_data), ("test", test_data)):
        if raw is not None:
            check_scan(raw, config.model, name, training=True)
    warn_if_photons_disagree(train_data, config.nphotons, "training")
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
    train_data: RawData | Sequence[RawData],
    test_data: RawData | None,
    training_config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    epoch_callback: EpochCallback | None = None,
    resume: bool = False,
    write_bundle: bool = True,
    init_model: str | Path | LoadedModel | None = None,
    overwrite: bool = False,
    extra_summary: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Train a model on ``train_data`` (validation on ``test_data`` or a seeded split).

    ``train_data`` may be several scans (a sequence, joined by
    :func:`ptychopinn.data.concatenate_scans`, or one RawData whose ``scan_index`` tells
    them apart): groups never span two scans, each scan is normalised on its own and the
    Poisson loss sees each scan's own photon counts (``grouping.ScanScales``); the probe
    is the first scan's. ``extra_summary`` adds JSON-able keys to the bundle's training
    summary (e.g. what a pretraining simulated).

    Writes checkpoints under ``<output_dir>/checkpoints``, logs under
    ``<output_dir>/lightning_logs``, the configuration used as
    ``<output_dir>/resolved_config.yaml`` and the model bundle
    ``<output_dir>/ptychopinn_model.zip``. ``epoch_callback(report)`` runs after every
    epoch; returning False stops training.

    ``resume`` continues from ``<output_dir>/checkpoints/last.ckpt`` (an error when there
    is none, or when it was trained with other architecture settings); a run that already
    reached ``nepochs`` is left as it is (``already_complete``).  ``overwrite`` deletes the
    previous run's checkpoints once every check has passed; its bundle is replaced when
    the new one is written.  Everything that can be known wrong (data, memory, output
    directory, resume point) raises an ``InputError`` before anything is written, and
    the output directory is locked against a second run for the whole training.

    Fine-tuning: ``init_model`` (a bundle path or a loaded model; default
    ``training_config.init_model``) supplies the starting network weights, checked
    strictly against the configured architecture (:func:`load_initial_weights`); the
    learning rate is multiplied by ``fine_tune_gamma`` and the new bundle's summary records
    the parent's path and SHA-256.
    """
    config = training_config
    execution = execution_config or ExecutionConfig()
    output_dir = Path(config.output_dir)
    if not isinstance(train_data, RawData):
        train_data = concatenate_scans(train_data)
    if resume and overwrite:
        raise TrainingSetupError(
            "--resume continues the run in --output_dir and --overwrite replaces it; "
            "give one of them"
        )
    parent = None
    if init_model is not None or config.init_model is not None:
        parent = _parent_model(init_model if init_model is not None else config.init_model)
        config = config.replace(init_model=parent.source_path)
    check_training_inputs(train_data, test_data, config)
    check_training_resources(train_data, test_data, config, execution)
    check_output_dir(output_dir)
    resume_point = find_resume_point(config) if resume else None
    execution.log_advisories()
    with _debug_logging(config.debug):
        if launched_worker():  # a DDP worker process; its launcher holds the lock
            run = _prepare(train_data, test_data, config, execution, epoch_callback, parent)
            return _fit(run, config, execution, resume_point, write_bundle, extra_summary)
        with ExitStack() as lock:
            # An existing directory is locked at once, so a second run is refused before
            # it builds anything; a new one only after the setup checks (which may refuse
            # the run) so that a refused run creates no directory.
            locked_early = output_dir.is_dir()
            if locked_early:
                lock.enter_context(output_dir_lock(output_dir, "training"))
            run = _prepare(train_data, test_data, config, execution, epoch_callback, parent)
            if not locked_early:
                lock.enter_context(output_dir_lock(output_dir, "training"))
            if resume_point is not None and resume_point.complete:
                done = _completed_run(resume_point, output_dir, execution)
                if done is not None:
                    return done
            if overwrite:
                # Only now: every check has passed, so a refused run deletes nothing.
                shutil.rmtree(output_dir / CHECKPOINT_DIRNAME, ignore_errors=True)
            return _fit(run, config, execution, resume_point, write_bundle, extra_summary)


def _completed_run(
    resume_point: ResumePoint, output_dir: Path, execution: ExecutionConfig
) -> TrainingResult | None:
    """The result of a run that already reached ``nepochs`` and whose bundle was written
    from its last checkpoint; None when that bundle is missing or older (then the bundle
    is written from the checkpoint without training)."""
    bundle_path = output_dir / BUNDLE_FILENAME
    if not bundle_path.is_file():
        return None
    loaded = load_model(bundle_path, module_class=PtychoPINNModule)
    if loaded.training_summary.get("epochs_completed") != resume_point.epochs_completed:
        return None
    logger.info("training in %s is already complete (%d epochs); bundle left unchanged",
                output_dir, resume_point.epochs_completed)
    history = {name: list(values) for name, values in resume_point.history.items()}
    return TrainingResult(
        history=history,
        module=loaded.module,
        output_dir=output_dir,
        bundle_path=bundle_path,
        checkpoint_dir=output_dir / CHECKPOINT_DIRNAME if execution.enable_checkpointing
        else None,
        training_time_s=0.0,
        summary=dict(loaded.training_summary),
        already_complete=True,
    )


@dataclass
class _PreparedRun:
    """Everything built before the output directory is touched."""

    module: PtychoPINNModule
    datamodule: PtychoDataModule
    trainer: L.Trainer
    history: HistoryCallback
    monitor: str
    scales: ScanScales
    train_data: RawData  # after n_subsample
    parent: LoadedModel | None
    augmentation: dict[str, Any] | None


def _prepare(
    train_data: RawData,
    test_data: RawData | None,
    config: TrainingConfig,
    execution: ExecutionConfig,
    epoch_callback: EpochCallback | None,
    parent: LoadedModel | None,
) -> _PreparedRun:
    """Groups, data module, module and trainer; raises TrainingSetupError for a monitor
    that is never logged, a logger whose package is missing or batches that drop every
    group (nothing written yet)."""
    if execution.deterministic and config.subsample_seed is None:
        logger.warning("deterministic training with subsample_seed=None: the groups drawn "
                       "differ from run to run")
    # The seeds set the hash seed with the others; it reaches the processes started from
    # here (DataLoader workers, DDP), not this interpreter's own str hashes.
    os.environ["PYTHONHASHSEED"] = str(execution.seed)
    L.seed_everything(execution.seed, workers=True, verbose=False)
    if execution.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    if config.n_subsample is not None:
        train_data = train_data.subsample(config.n_subsample, config.subsample_seed)
        logger.debug("subsampled %d of the training positions", train_data.n_positions)
    train_grouped = group_for_training(train_data, config)
    val_grouped = group_for_training(test_data, config) if test_data is not None else None
    # One scale per scan (one scan: as before); the first scan is the photon reference.
    scales = ScanScales.of(train_data)
    train_input_scale = float(scales.input_scales[0])
    counts = scales.reference_counts
    intensity_scale = intensity_scale_for(config.nphotons, counts, config.model.N)
    group_input_scales, group_photon_scales = scales.for_groups(train_grouped)
    val_scales = (ScanScales.of(test_data, reference_counts=counts).for_groups(val_grouped)
                  if val_grouped is not None else (None, None))
    regroup = None
    if config.regroup_each_epoch:
        def regroup(epoch: int) -> GroupedData:
            return regroup_raw_data(train_data, train_grouped, config.neighbor_count,
                                    config.subsample_seed, epoch)

    datamodule = PtychoDataModule(
        train_grouped,
        group_input_scales,
        config,
        execution,
        val_grouped=val_grouped,
        val_input_scale=val_scales[0],
        photon_scale=group_photon_scales,
        val_photon_scale=val_scales[1],
        regroup=regroup,
    )
    if execution.drop_last and len(datamodule.train_set) < config.batch_size:
        raise TrainingSetupError(
            f"ExecutionConfig.drop_last=True drops every batch: {len(datamodule.train_set)} "
            f"training groups are fewer than batch_size={config.batch_size}"
        )
    monitor = resolve_monitor(
        execution.checkpoint_monitor,
        datamodule.has_validation,
        logged_metric_names(config, datamodule.has_validation, train_data.labels is not None),
    )
    probe = train_data.probe_guess if train_data.probe_guess.ndim == 2 else train_data.probe_guess[0]
    module = PtychoPINNModule(
        model_config=config.model.to_dict(),
        training_config=config.to_dict(),
        execution_config=execution.to_dict(),
        intensity_scale=intensity_scale,
        input_scale=train_input_scale,
        probe=probe,
        monitor=monitor,
    )
    if parent is not None:
        load_initial_weights(module, parent)
    augmentation = _set_up_augmentation(datamodule, module, config) if config.augment_flips \
        else None
    logger.debug("%d training groups, %d validation groups, %d scan(s), input scale %.4g, "
                 "intensity scale %.4g, monitor %s", len(datamodule.train_set),
                 len(datamodule.val_set) if datamodule.has_validation else 0, scales.n_scans,
                 train_input_scale, intensity_scale, monitor)
    history = HistoryCallback(epoch_callback=epoch_callback,
                              log_each_epoch=not execution.enable_progress_bar)
    trainer = build_trainer(config, execution, monitor, history, datamodule.has_validation)
    return _PreparedRun(module, datamodule, trainer, history, monitor, scales, train_data,
                        parent, augmentation)


def _set_up_augmentation(datamodule: PtychoDataModule, module: PtychoPINNModule,
                         config: TrainingConfig) -> dict[str, Any]:
    """TrainingConfig.augment_flips: the dihedral transforms under which the forward
    model's probe is invariant (ptychopinn.symmetry) augment the training groups; the
    log says which were kept and which skipped. Returns that, for the summary."""
    probe = module.forward_model.probe.detach().cpu().numpy()
    kept, skipped = probe_symmetries(probe, config.augment_probe_tolerance)
    datamodule.set_augmentation(kept)
    names = [t.name for t in kept]
    why = ", ".join(f"{name} ({value:.3g})" for name, value in skipped.items())
    if len(kept) > 1:
        logger.info("augmentation: dihedral transforms used: %s%s", ", ".join(names),
                    f"; skipped, the probe is not invariant within "
                    f"{config.augment_probe_tolerance:g} (relative asymmetry): {why}"
                    if skipped else "")
    else:
        logger.warning("augment_flips: the probe is invariant under no dihedral transform "
                       "within augment_probe_tolerance=%g (relative asymmetry: %s); "
                       "training without flips", config.augment_probe_tolerance, why)
    return {"transforms": names, "skipped_asymmetry": dict(skipped),
            "probe_tolerance": config.augment_probe_tolerance}


def _fit(
    run: _PreparedRun,
    config: TrainingConfig,
    execution: ExecutionConfig,
    resume_point: ResumePoint | None,
    write_bundle: bool,
    extra_summary: Mapping[str, Any] | None = None,
) -> TrainingResult:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_config_file(output_dir / CONFIG_FILENAME,
                      {"model": config.model, "training": config, "execution": execution},
                      "ptychopinn train")
    if run.train_data.sample_indices is not None:
        seed = config.subsample_seed if config.subsample_seed is not None else "None"
        atomic_write_text(output_dir / f"subsample_seed{seed}_indices.txt",
                          "".join(f"{i}\n" for i in run.train_data.sample_indices))
    checkpoint_dir = output_dir / CHECKPOINT_DIRNAME
    ckpt_path = None
    if resume_point is not None:
        ckpt_path = str(resume_point.checkpoint)
        logger.info("resuming from %s (%d epochs done)", ckpt_path,
                    resume_point.epochs_completed)

    trainer, history, module, parent = run.trainer, run.history, run.module, run.parent
    start = time.perf_counter()
    # Only when resuming: resetting the filters would show once-only warnings again.
    with warnings.catch_warnings() if ckpt_path is not None else contextlib.nullcontext():
        if ckpt_path is not None:
            # Resuming writes into the existing checkpoint directory on purpose.
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty",
                module=r"lightning\.pytorch\.callbacks\.model_checkpoint")
        with torch_threads(execution.num_threads):
            trainer.fit(module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    elapsed = time.perf_counter() - start

    losses = history.history
    summary = {
        "epochs_completed": history.epochs_completed(trainer),
        "n_train_groups": len(run.datamodule.train_set),
        "n_val_groups": len(run.datamodule.val_set) if run.datamodule.has_validation else 0,
        "final_train_loss": losses["train_loss"][-1] if losses["train_loss"] else None,
        "final_val_loss": losses["val_loss"][-1] if losses["val_loss"] else None,
        "train_loss_history": list(losses["train_loss"]),
        "val_loss_history": list(losses["val_loss"]),
        "training_time_s": elapsed,
        "monitor": run.monitor,
        "input_scale": float(run.scales.input_scales[0]),
        "mean_total_counts": run.scales.reference_counts,
        "torch_version": torch.__version__,
    }
    if run.scales.n_scans > 1:
        summary["scans"] = run.scales.summary()
    if run.augmentation is not None:
        summary["augmentation"] = run.augmentation
    summary.update(extra_summary or {})
    if parent is not None:
        summary["parent_bundle"] = str(parent.source_path)
        summary["parent_bundle_sha256"] = (bundle_sha256(parent.source_path)
                                           if parent.source_path.is_file() else None)
    mlflow_logger = _mlflow_logger(trainer)
    if mlflow_logger is not None:
        summary["mlflow_run_id"] = mlflow_logger.run_id
    bundle_path = None
    if write_bundle and trainer.is_global_zero:
        bundle_path = save_model_bundle(module, output_dir / BUNDLE_FILENAME, summary)
        if mlflow_logger is not None:
            # The bundle is the run's model: inference --run_id loads it from here.
            mlflow_logger.experiment.log_artifact(mlflow_logger.run_id, str(bundle_path))
    return TrainingResult(
        history=losses,
        module=module,
        output_dir=output_dir,
        bundle_path=bundle_path,
        checkpoint_dir=checkpoint_dir if execution.enable_checkpointing else None,
        training_time_s=elapsed,
        stopped_by_caller=history.stopped_by_caller,
        summary=summary,
    )


def _mlflow_logger(trainer: L.Trainer) -> Any:
    for candidate in trainer.loggers:
        if type(candidate).__name__ == "MLFlowLogger":
            return candidate
    return None


@contextlib.contextmanager
def _debug_logging(debug: bool) -> Iterator[None]:
    """TrainingConfig.debug: debug-level log lines from our loggers during the run."""
    if not debug:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ptychopinn", "ptychopinn_torch")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


#: ModelConfig fields that shape the network's weights or what they compute; a parent
#: bundle for fine-tuning must agree on all of them.
NETWORK_FIELDS = (
    "N", "gridsize", "n_filters_scale", "generator", "amp_activation", "probe_big",
    "pad_object", "gaussian_smoothing_sigma", "eca_encoder", "cbam_encoder",
    "cbam_bottleneck", "cbam_decoder", "eca_decoder", "spatial_decoder",
    "decoder_spatial_kernel",
)


def _parent_model(init_model: str | Path | LoadedModel) -> LoadedModel:
    if isinstance(init_model, LoadedModel):
        return init_model
    try:
        return load_model(init_model)
    except BundleError as exc:
        raise TrainingSetupError(f"TrainingConfig.init_model={str(init_model)!r} is "
                                 f"invalid: {exc}") from exc


def load_initial_weights(module: PtychoPINNModule, parent: LoadedModel) -> None:
    """Copy ``parent``'s network weights into ``module`` (fine-tuning).

    Only the generator is copied: the probe and intensity scale belong to the new data.
    The parent must have the same network (:data:`NETWORK_FIELDS` and every weight's
    name and shape); otherwise TrainingSetupError lists what differs.
    """
    new, old = module.model_config, parent.model_config
    differ = [f"{name} (bundle {getattr(old, name)!r}, configured {getattr(new, name)!r})"
              for name in NETWORK_FIELDS if getattr(old, name) != getattr(new, name)]
    source = parent.module.generator.state_dict()
    target = module.generator.state_dict()
    shapes = [k for k in source.keys() & target.keys() if source[k].shape != target[k].shape]
    missing, unexpected = sorted(target.keys() - source.keys()), sorted(source.keys() - target.keys())
    if differ or shapes or missing or unexpected:
        details = "; ".join(filter(None, [
            f"ModelConfig differs in {', '.join(differ)}" if differ else "",
            f"weights missing from the bundle: {missing[:5]}" if missing else "",
            f"weights the model lacks: {unexpected[:5]}" if unexpected else "",
            f"weights of another shape: {sorted(shapes)[:5]}" if shapes else "",
        ]))
        raise TrainingSetupError(
            f"TrainingConfig.init_model={str(parent.source_path)!r} is invalid: its network "
            f"does not match the configured one ({details}); configure the same "
            "architecture as the bundle or start without --init-model"
        )
    module.generator.load_state_dict(source, strict=True)
    logger.info("fine-tuning from %s", parent.source_path)


def save_model_bundle(module: NetworkParts, path: Path, summary: dict[str, Any]) -> Path:
    """Write the module (a trained ``PtychoPINNModule`` or a loaded
    ``PtychoPINNNetwork``: both keep their arguments in ``hparams``), its configs,
    intensity scale and probe as one bundle file."""
    hp = module.hparams
    # Contiguous: the file does not depend on the memory format the network trained in.
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
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
