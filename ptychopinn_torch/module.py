"""LightningModule: generator network + differentiable forward model + losses.

The network half (shared with inference, which runs without Lightning) is
:mod:`ptychopinn_torch.network_module`; this module adds the losses, the NaN check, the
optimiser and the Lightning hooks.

Hyperparameters are plain dicts (the four configs plus two scales), so
``PtychoPINNModule.load_from_checkpoint(path)`` needs no other argument and the checkpoint
loads with ``weights_only=True``. The probe is a buffer (or parameter) in the state dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ptychopinn import config as configs
from ptychopinn.config import (
    LEARNING_RATE,
    PHYSICS_WEIGHT,
    TRAIN_LOSS,
    TrainingConfig,
)
from ptychopinn.errors import RuntimeFault
from ptychopinn_torch import physics, stages
from ptychopinn_torch.network_module import NetworkParts
from ptychopinn_torch.runtime import channels_last
from ptychopinn_torch.trainer import (
    CHECKPOINT_DIRNAME,
    LAST_CHECKPOINT,
    build_scheduler,
    initial_learning_rate,
)


class NonFiniteLossError(RuntimeFault):
    """Training produced a NaN or Inf loss; the last good checkpoint is kept."""


class PtychoPINNModule(NetworkParts, L.LightningModule):
    """Maps grouped, normalised diffraction amplitudes to complex object patches and
    trains on them; the network itself (``generator``, ``forward_model``, ``forward``,
    ``predict_patches``) is :class:`~ptychopinn_torch.network_module.NetworkParts`.

    ``input_scale``: amplitude -> normalised units of the training data.
    ``intensity_scale``: normalised amplitude -> sqrt(photon counts), see
    specs/conventions.md.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        training_config: dict[str, Any],
        execution_config: dict[str, Any],
        intensity_scale: float,
        input_scale: float,
        probe: np.ndarray | torch.Tensor | None = None,
        monitor: str = TRAIN_LOSS,
    ):
        super().__init__()
        # The probe lives in the state dict, not in the hyperparameters.
        self.save_hyperparameters(ignore=["probe"])
        self._build_network(self.hparams, probe)
        self.monitor = monitor
        # Deferred NaN check: per stage, (any non-finite loss so far, the first one).
        self._non_finite: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ training
    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x = batch["diffraction"]
        out = self.generator(x, self.forward_model.probe)
        labels = batch.get("labels")
        fm = self.forward_model
        supervised = self.model_config.model_type == "supervised"
        predicted = None if supervised else fm(out.obj, batch["local_offsets_px"])
        intensity_scale, data_intensity_scale = fm.intensity_scale, fm.data_intensity_scale
        photon_scale = batch.get("photon_scale")
        if photon_scale is not None:
            # Several scans of different dose: each pattern's counts are its own scan's
            # (grouping.ScanScales), the normalised amplitudes are dose-free.
            photon_scale = photon_scale.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            intensity_scale = intensity_scale * photon_scale
            data_intensity_scale = data_intensity_scale * photon_scale
        terms = physics.total_loss(
            self.training_config,
            pred_amp=predicted,
            meas_amp=x,
            intensity_scale=intensity_scale,
            meas_intensity_scale=data_intensity_scale,
            obj=out.obj,
            amp=out.amplitude,
            phase=out.phase,
            label=labels,
            physics_weight=stages.physics_weight(self.current_epoch, self.training_config),
        )
        loss = terms["loss"]
        self._check_finite(loss, stage)
        batch_size = x.shape[0]
        for name, value in terms.items():
            metric = f"{stage}_loss" if name == "loss" else f"{stage}_{name}"
            self.log(
                metric,
                value.detach(),
                on_step=False,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=True,
            )
        return loss

    # ------------------------------------------------------------------ NaN check
    #: Check every step's loss at once (True) or keep a flag on the device and check it
    #: at the end of each epoch (False); None: at once on the CPU, where reading a value
    #: costs nothing, deferred on accelerators, where it would stall the queue of
    #: kernels every step (a host sync).
    check_finite_every_step: bool | None = None

    def _check_finite(self, loss: torch.Tensor, stage: str) -> None:
        every_step = self.check_finite_every_step
        if every_step is None:
            every_step = loss.device.type == "cpu"
        if every_step:
            if not torch.isfinite(loss):
                self._raise_non_finite(stage, float(loss.detach()))
            return
        loss = loss.detach()
        flag, value = self._non_finite.get(stage, (None, None))
        if flag is None:
            flag, value = ~torch.isfinite(loss), loss
        else:  # keep the first non-finite value once one was seen
            value = torch.where(flag, value, loss)
            flag = flag | ~torch.isfinite(loss)
        self._non_finite[stage] = (flag, value)

    def _check_deferred(self, stage: str) -> None:
        """Raise for a non-finite loss the deferred check flagged during this epoch (one
        host sync per epoch), before the epoch's checkpoints are written."""
        flag, value = self._non_finite.pop(stage, (None, None))
        if flag is not None and bool(flag):
            self._raise_non_finite(stage, float(value))

    def _raise_non_finite(self, stage: str, value: float) -> None:
        last = Path(self.training_config.output_dir) / CHECKPOINT_DIRNAME / LAST_CHECKPOINT
        kept = (
            f"The last good checkpoint is {last}. "
            if last.exists()
            else "No checkpoint was written before the failure. "
        )
        # Data and photon magnitudes are checked before training starts, so the step
        # size is what is left to blame; name only the flag that sets it.
        lr = self.execution_config.learning_rate
        raise NonFiniteLossError(
            f"{stage} loss became {value} at epoch {self.current_epoch}; "
            f"training stopped. {kept}The likely cause is a learning rate too high "
            f"for this data: lower --learning-rate (now {lr:g}), e.g. to {lr / 10:g}."
        )

    def on_validation_epoch_end(self) -> None:
        # Validation runs inside the training epoch: a non-finite training loss of this
        # epoch is reported before validation ranks (and saves) checkpoints.
        self._check_deferred("train")
        self._check_deferred("val")

    def on_train_epoch_end(self) -> None:
        self._check_deferred("train")

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        # Before the optimiser exists: convolution weights channels-last (NHWC) when
        # ExecutionConfig.channels_last, so every convolution runs in that layout.
        channels_last(self.generator, self.execution_config.channels_last)

    def teardown(self, stage: str) -> None:
        # The trained module leaves fit in the plain layout: it then computes exactly
        # what the same weights loaded from its checkpoint or bundle compute.
        channels_last(self.generator, False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_start(self) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        lr *= stages.learning_rate_factor(self.current_epoch, self.training_config)
        self.log(LEARNING_RATE, float(lr), on_step=False, on_epoch=True, sync_dist=True)
        weight = stages.physics_weight(self.current_epoch, self.training_config)
        if weight is not None:
            self.log(PHYSICS_WEIGHT, weight, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        world_size = self.trainer.world_size if self._trainer is not None else 1
        lr = initial_learning_rate(self.training_config, self.execution_config, world_size)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        scheduler = build_scheduler(
            optimizer, self.execution_config.scheduler, self.training_config.nepochs, self.monitor
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ names
    def logged_metric_names(self, has_validation: bool, has_labels: bool) -> set[str]:
        """Every metric this module logs per epoch (see :func:`logged_metric_names`)."""
        return logged_metric_names(self.training_config, has_validation, has_labels)


def logged_metric_names(
    training_config: TrainingConfig, has_validation: bool, has_labels: bool
) -> set[str]:
    """Every metric a module with these configs logs per epoch
    (:func:`ptychopinn.config.logged_metric_names`), used to check a checkpoint monitor
    before the module exists."""
    tc = training_config
    return configs.logged_metric_names(
        tc.model.model_type,
        tc.loss_mode,
        has_labels=has_labels,
        realspace_weight=tc.realspace_weight,
        has_validation=has_validation,
        staged=stages.stages_enabled(tc),
    )


def intensity_scale_for(nphotons: float | None, mean_total_counts: float, N: int) -> float:
    """sqrt(photons per pattern) / (N/2): maps normalised amplitudes to sqrt(counts)."""
    return physics.intensity_scale_from(
        nphotons if nphotons is not None else mean_total_counts, N
    )
