"""The training recipe: its network, its rate measurement and its time budget."""

from __future__ import annotations

import time

import pytest

from ptychopinn.config import ExecutionConfig
from ptychopinn_torch import recipes


def test_recipe_network_is_the_cheap_unet() -> None:
    assert recipes.RECIPE_MODEL.generator == "unet_lite"
    assert recipes.RECIPE_MODEL.n_filters_scale == 1
    assert recipes.measure_training_rate(recipes.RECIPE_MODEL, batch_size=2, steps=1) > 0


def test_training_stops_when_the_next_epoch_would_overrun_the_budget(
        tiny_raw, tmp_path, monkeypatch, restore_torch_determinism) -> None:
    # Claim a huge rate so the epoch count is large; the clock must still stop training.
    monkeypatch.setattr(recipes, "measure_training_rate", lambda *a, **k: 1e6)
    execution = ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none",
                                enable_checkpointing=False)
    start = time.perf_counter()
    bundle = recipes.train_network_for_probe(tiny_raw, tmp_path / "run", minutes=0.05,
                                             execution=execution)
    elapsed = time.perf_counter() - start
    from ptychopinn_torch.inference import load_model

    summary = load_model(bundle).training_summary
    planned = int(0.85 * 3 * 1e6 / tiny_raw.n_positions)
    assert 1 <= summary["epochs_completed"] < planned
    assert elapsed < 60
    with pytest.raises(ValueError, match="minutes"):
        recipes.train_network_for_probe(tiny_raw, tmp_path / "x", minutes=0)
