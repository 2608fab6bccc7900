"""Training stages: from the amplitude MAE to the Poisson (physics) loss.

With ``TrainingConfig.stage_{1,2,3}_epochs`` (all 0: no stages) the loss of epoch ``e``
(0-based) is ``w * physics + (1 - w) * mae`` where the physics weight ``w`` is

* 0 during stage 1 (``e < s1``): amplitude MAE only;
* rising from 0 to 1 during stage 2 (``s1 <= e < s1 + s2``) along
  ``physics_weight_schedule`` at progress ``p = (e - s1 + 1) / (s2 + 1)``:
  linear ``p``, cosine ``(1 - cos(pi p)) / 2``, exponential
  ``(exp(5 p) - 1) / (exp(5) - 1)``;
* 1 from stage 3 on (``e >= s1 + s2``), where the learning rate is also multiplied by
  ``stage_3_lr_factor``. Epochs after the last stage stay in stage 3.

``physics`` is the configured Poisson loss (``nll_weight * poisson + mae_weight * mae``),
so a run whose stages are all 0 trains exactly as without stages.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ptychopinn.config import TrainingConfig

#: Steepness of the exponential schedule (weight e-folds 5 times over stage 2).
EXPONENTIAL_RATE = 5.0


def stages_enabled(training_config: TrainingConfig) -> bool:
    tc = training_config
    return tc.stage_1_epochs + tc.stage_2_epochs + tc.stage_3_epochs > 0


def physics_weight(epoch: int, training_config: TrainingConfig) -> float | None:
    """The physics-loss weight in [0, 1] of ``epoch``, or None without stages."""
    tc = training_config
    if not stages_enabled(tc):
        return None
    s1, s2 = tc.stage_1_epochs, tc.stage_2_epochs
    if epoch < s1:
        return 0.0
    if epoch >= s1 + s2:
        return 1.0
    p = (epoch - s1 + 1) / (s2 + 1)
    if tc.physics_weight_schedule == "linear":
        return p
    if tc.physics_weight_schedule == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * p))
    return math.expm1(EXPONENTIAL_RATE * p) / math.expm1(EXPONENTIAL_RATE)


def learning_rate_factor(epoch: int, training_config: TrainingConfig) -> float:
    """``stage_3_lr_factor`` from the first stage-3 epoch on, else 1."""
    tc = training_config
    if stages_enabled(tc) and epoch >= tc.stage_1_epochs + tc.stage_2_epochs:
        return tc.stage_3_lr_factor
    return 1.0


class StageLearningRate(Callback):
    """Applies the stage-3 learning-rate factor to each optimizer step only, so the
    schedulers, the checkpoints and a resumed run all see the unscaled rate."""

    def __init__(self, training_config: TrainingConfig) -> None:
        super().__init__()
        self.training_config = training_config
        self._scaled: float | None = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        factor = learning_rate_factor(trainer.current_epoch, self.training_config)
        if factor != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= factor
            self._scaled = factor

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._scaled is not None:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] /= self._scaled
            self._scaled = None
