"""Training recipes: how the demo and the benchmarks train a network in a time budget.

One place for the recipe the measurements chose (``specs/workflows.md``, "Recipe"), so
the demo, ``benchmarks/versus_iterative.py`` and a user's notebook train the same way.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData

__all__ = ["RECIPE_MODEL", "measure_training_rate", "recipe_training_config",
           "train_network_for_probe"]

logger = logging.getLogger(__name__)

#: The network of the recipe: the half-cost U-Net at the smallest width.
RECIPE_MODEL = ModelConfig(N=64, gridsize=1, generator="unet_lite", n_filters_scale=1)
RECIPE_BATCH_SIZE = 16
RECIPE_LEARNING_RATE = 2e-3
RECIPE_SCHEDULER = "WarmupCosine"


def measure_training_rate(model_config: ModelConfig, batch_size: int = RECIPE_BATCH_SIZE,
                          steps: int = 3) -> float:
    """Training patterns per second of ``model_config`` on this machine (generator, forward
    model and Poisson loss, forward and backward, Adam), from ``steps`` timed steps."""
    from ptychopinn_torch.networks import Generator
    from ptychopinn_torch.physics import ForwardModel, poisson_nll

    n = model_config.N
    generator = Generator(model_config)
    forward = ForwardModel(model_config, np.ones((n, n), np.complex64), intensity_scale=10.0)
    optimiser = torch.optim.Adam(generator.parameters(), 1e-4)
    x = torch.rand(batch_size, model_config.C, n, n)
    offsets = torch.zeros(batch_size, model_config.C, 2)

    def step() -> None:
        out = generator(x, forward.probe)
        loss = poisson_nll(forward(out.obj, offsets), x, forward.intensity_scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()  # warm-up: allocations, kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def recipe_training_config(scan: RawData, output_dir: Path, epochs: int,
                           model_config: ModelConfig = RECIPE_MODEL) -> TrainingConfig:
    """The recipe's training configuration for ``scan`` (every position one group, no
    validation split: the held-out scans are the test)."""
    return TrainingConfig(model=model_config.replace(N=scan.N), n_groups=scan.n_positions,
                          batch_size=RECIPE_BATCH_SIZE, nepochs=epochs,
                          validation_fraction=0.0, output_dir=output_dir)


def train_network_for_probe(scan: RawData, output_dir: Path, minutes: float,
                            execution: ExecutionConfig | None = None,
                            model_config: ModelConfig = RECIPE_MODEL) -> Path:
    """Train the recipe's network on ``scan`` for about ``minutes`` of wall time and return
    the bundle path: the epoch count comes from the measured training rate, and training
    stops early when the next epoch would overrun the budget (at least one epoch runs).
    Checkpoints of an earlier run in ``output_dir`` are replaced."""
    from ptychopinn_torch.train import train

    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a finite number > 0, got {minutes!r}")
    execution = (execution or ExecutionConfig()).replace(
        learning_rate=RECIPE_LEARNING_RATE, scheduler=RECIPE_SCHEDULER)
    budget_s = minutes * 60
    rate = measure_training_rate(model_config.replace(N=scan.N))
    # 85 %: an epoch also logs, checkpoints and shuffles. The count sets the learning-rate
    # schedule; the clock below still stops a slower run (a busy machine) in time.
    epochs = max(1, int(0.85 * budget_s * rate / scan.n_positions))
    logger.info("training %d epochs (%.0f patterns/s measured) for a %.1f min budget",
                epochs, rate, minutes)
    config = recipe_training_config(scan, Path(output_dir), epochs, model_config)
    start = time.perf_counter()
    done = 0

    def within_budget(_report: object) -> bool:
        nonlocal done
        done += 1
        elapsed = time.perf_counter() - start
        return elapsed + elapsed / done <= budget_s  # would the next epoch still fit?

    result = train(scan, None, config, execution, epoch_callback=within_budget,
                   overwrite=True)
    assert result.bundle_path is not None
    return result.bundle_path
