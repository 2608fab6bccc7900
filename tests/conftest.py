"""Shared fixtures: a tiny simulated data set, tiny configs and a CPU execution config.

Everything here is sized for a test suite that runs on two shared CPU cores: N = 64,
36 scan positions, one-filter-scale networks, a handful of groups and epochs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn.simulate import simulate_dataset

# Inference precision "auto" picks bfloat16 on CPUs with native bf16 instructions: tests
# (and the command lines they start in subprocesses) compute in float32 on every machine,
# except those that test the detection itself (they unset this).
os.environ["PTYCHOPINN_NATIVE_BF16"] = "0"

try:  # ptychopinn must be testable without torch; only set threads when it is there.
    import torch
except ImportError:  # pragma: no cover - torch-free environments
    torch = None

if torch is not None:
    # Several test processes share two cores: more intra-op threads than free cores make
    # tiny convolutions spin-wait, 10-50x slower than one thread.
    torch.set_num_threads(1)

TINY_N = 64
TINY_POSITIONS = 36


def _tiny_raw(seed: int) -> RawData:
    # A 6 x 6 raster with 8 px steps: integer positions, dense overlap, labels included.
    return simulate_dataset(
        object_kind="dead_leaves",
        probe_kind="aperture",
        N=TINY_N,
        n_positions=TINY_POSITIONS,
        scan_kind="raster",
        step_px=8.0,
        nphotons=1e5,
        seed=seed,
    )


@pytest.fixture(scope="session")
def tiny_raw() -> RawData:
    """36 simulated N=64 patterns with labels (cached for the session; do not mutate)."""
    return _tiny_raw(seed=3)


@pytest.fixture(scope="session")
def tiny_test_raw() -> RawData:
    """A second, independent tiny scan (other object and noise), e.g. for validation."""
    return _tiny_raw(seed=11)


@pytest.fixture(scope="session")
def tiny_raw_unlabelled(tiny_raw: RawData) -> RawData:
    """``tiny_raw`` without ground-truth labels."""
    return dataclasses.replace(tiny_raw, labels=None)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """gridsize 1, smallest network (n_filters_scale=1)."""
    return ModelConfig(N=TINY_N, gridsize=1, n_filters_scale=1)


@pytest.fixture
def tiny_training_config(
    tmp_path: Path, tiny_model_config: ModelConfig
) -> Callable[..., TrainingConfig]:
    """Factory: ``tiny_training_config(**overrides)`` -> TrainingConfig writing under
    ``tmp_path/"run"``; 8 groups, batch 8, 2 epochs, no validation split by default, so
    one optimizer step per epoch."""

    def make(**overrides: Any) -> TrainingConfig:
        model = overrides.pop("model", tiny_model_config)
        if isinstance(model, dict):
            model = tiny_model_config.replace(**model)
        values: dict[str, Any] = {
            "model": model,
            "n_groups": 8,
            "batch_size": 8,
            "nepochs": 2,
            "validation_fraction": 0.0,
            "output_dir": tmp_path / "run",
        }
        values.update(overrides)
        return TrainingConfig(**values)

    return make


@pytest.fixture
def cpu_execution() -> Callable[..., ExecutionConfig]:
    """Factory: ``cpu_execution(**overrides)`` -> ExecutionConfig on the CPU, one device,
    no progress bar; everything else at its default unless overridden."""

    def make(**overrides: Any) -> ExecutionConfig:
        values: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
        }
        values.update(overrides)
        return ExecutionConfig(**values)

    return make


@pytest.fixture
def add_trainer_callback(monkeypatch) -> Callable[[Any], None]:
    """``add_trainer_callback(callback)``: every trainer that ``ptychopinn_torch.train``
    builds during the test gets this Lightning callback too (to observe a run)."""
    import ptychopinn_torch.train as train_module

    original = train_module.build_trainer

    def add(callback: Any) -> None:
        def build(*args: Any, **kwargs: Any) -> Any:
            trainer = original(*args, **kwargs)
            trainer.callbacks.append(callback)
            return trainer

        monkeypatch.setattr(train_module, "build_trainer", build)

    return add


@pytest.fixture
def restore_torch_determinism():
    """train() switches deterministic algorithms on process-wide; put the flag back."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
