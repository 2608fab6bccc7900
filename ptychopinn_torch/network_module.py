"""The network half of a PtychoPINN model, without Lightning.

:class:`NetworkParts` builds the generator network and the differentiable forward model
from the configs and maps diffraction to object patches; it holds no training logic.
Training uses it through :class:`ptychopinn_torch.module.PtychoPINNModule` (a
LightningModule), inference through :class:`PtychoPINNNetwork` (a plain
``torch.nn.Module``), so reconstructing a scan never imports Lightning (about 2 s of
start-up). Both have the same submodules under the same names, so one state dict
(``generator.*``, ``forward_model.*``) loads into either: bundles and checkpoints are
the same files for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ptychopinn.config import TRAIN_LOSS, ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn_torch import physics
from ptychopinn_torch.networks import Generator

__all__ = ["NetworkParts", "PtychoPINNNetwork"]


class NetworkParts:
    """Generator + forward model of a ``torch.nn.Module`` subclass (a mixin placed
    before the module class), built from the module's ``hparams``: ``model_config``,
    ``training_config``, ``execution_config`` (config dicts) and ``intensity_scale``
    (normalised amplitude -> sqrt(photon counts), see specs/conventions.md).
    """

    model_config: ModelConfig
    training_config: TrainingConfig
    execution_config: ExecutionConfig
    generator: Generator
    forward_model: physics.ForwardModel

    def _build_network(
        self, hparams: Mapping[str, Any], probe: np.ndarray | torch.Tensor | None
    ) -> None:
        """Set the configs and build ``generator`` and ``forward_model`` from the
        module's ``hparams`` (call from ``__init__`` after ``torch.nn.Module.__init__``)."""
        self.model_config = ModelConfig.from_dict(hparams["model_config"])
        self.training_config = TrainingConfig.from_dict(hparams["training_config"])
        self.execution_config = ExecutionConfig.from_dict(hparams["execution_config"])
        N = self.model_config.N
        if probe is None:
            # Placeholder with the right shape; load_state_dict fills in the real probe.
            probe = np.ones((N, N), dtype=np.complex64)
        self.generator = Generator(self.model_config)
        self.forward_model = physics.ForwardModel(
            self.model_config,
            probe,
            probe_trainable=self.training_config.probe_trainable,
            intensity_scale=hparams["intensity_scale"],
            intensity_scale_trainable=self.training_config.intensity_scale_trainable,
        )

    def forward(self, diffraction: torch.Tensor) -> torch.Tensor:
        """Complex object patches (B, C, N, N) from normalised amplitudes (B, C, N, N)."""
        return self.generator(diffraction, self.forward_model.probe).obj

    def predict_patches(
        self, diffraction: torch.Tensor, local_offsets_px: torch.Tensor
    ) -> torch.Tensor:
        """Object patches at each position of a group, after the object_big merge (what
        the physics sees), complex (B, C, N, N)."""
        patches = self(diffraction)  # type: ignore[operator]  # an nn.Module at run time
        return self.forward_model.object_for_positions(patches, local_offsets_px)


class PtychoPINNNetwork(NetworkParts, torch.nn.Module):
    """The trained network for inference: :class:`NetworkParts` as a plain module.

    Takes the arguments of :class:`~ptychopinn_torch.module.PtychoPINNModule` (so
    ``inference.load_model`` builds either from a file) and keeps them (all but the
    probe, which is in the state dict) in ``hparams``, as that module's
    ``save_hyperparameters`` does, so either can be written as a bundle.
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
        self.hparams: dict[str, Any] = {
            "model_config": model_config,
            "training_config": training_config,
            "execution_config": execution_config,
            "intensity_scale": intensity_scale,
            "input_scale": input_scale,
            "monitor": monitor,
        }
        self._build_network(self.hparams, probe)
