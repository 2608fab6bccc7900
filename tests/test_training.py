"""Training: LightningModule, DataModule, Trainer from ExecutionConfig and train().

Every run is tiny (N=64, n_filters_scale=1, 8-16 groups, 1-6 epochs, one optimizer step
per epoch unless stated) so the file stays fast on two shared CPU cores.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.plugins.precision import DoublePrecision, MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import RandomSampler, SequentialSampler

from ptychopinn.config import ModelConfig
from ptychopinn.data import DataContractError
from ptychopinn.grouping import group_raw_data, input_scale
from ptychopinn_torch import physics
from ptychopinn_torch.bundle import read_bundle, read_lightning_checkpoint
from ptychopinn_torch.datamodule import PtychoDataModule, split_indices
from ptychopinn_torch.module import NonFiniteLossError, PtychoPINNModule
from ptychopinn_torch.train import TrainingSetupError, train
from ptychopinn_torch.trainer import (
    HistoryCallback,
    build_scheduler,
    build_trainer,
    resolve_monitor,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LR = 1e-3


# ----------------------------------------------------------------------------- helpers
pytestmark = pytest.mark.usefixtures("restore_torch_determinism")


def read_metrics_csv(output_dir: Path, version: int = 0) -> dict[int, dict[str, float]]:
    """metrics.csv rows merged per epoch (Lightning writes train and val rows apart)."""
    path = output_dir / "lightning_logs" / f"version_{version}" / "metrics.csv"
    per_epoch: dict[int, dict[str, float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            epoch = int(row["epoch"])
            merged = per_epoch.setdefault(epoch, {})
            for key, value in row.items():
                if key in ("epoch", "step") or value == "":
                    continue
                assert key not in merged, f"{key} logged twice in epoch {epoch}"
                merged[key] = float(value)
    return per_epoch


def checkpoint_epochs(checkpoint_dir: Path) -> dict[int, Path]:
    """Top-k checkpoints by the epoch in their file name (last.ckpt excluded)."""
    found = {}
    for path in checkpoint_dir.glob("*.ckpt"):
        if path.name == "last.ckpt":
            continue
        match = re.match(r"epoch(\d{3})-", path.name)
        assert match, f"unexpected checkpoint name {path.name}"
        found[int(match.group(1))] = path
    return found


def one_batch(raw, config) -> dict[str, torch.Tensor]:
    """The first group batch of ``raw``, normalised as the DataModule does."""
    grouped = group_raw_data(raw, gridsize=config.model.gridsize, n_groups=4, seed=0)
    scale = np.float32(input_scale(raw.diffraction))
    return {
        "diffraction": torch.from_numpy(grouped.diffraction * scale),
        "local_offsets_px": torch.from_numpy(grouped.local_offsets_px.astype(np.float32)),
    }


def expected_learning_rates(scheduler: str, lr: float, nepochs: int) -> list[float]:
    """Per-epoch LR written out from build_scheduler's docstring (not its code)."""
    out = []
    for epoch in range(nepochs):
        if scheduler == "Default":
            factor = 1.0
        elif scheduler == "Exponential":  # x0.95 per epoch
            factor = 0.95**epoch
        elif scheduler == "MultiStage":  # x0.1 at 50 % and again at 75 % of the epochs
            factor = (0.1 if epoch >= nepochs // 2 else 1.0) * (
                0.1 if epoch >= (3 * nepochs) // 4 else 1.0
            )
        elif scheduler == "WarmupCosine":  # linear warm-up over 10 %, cosine to 5 %
            warm = max(1, nepochs // 10)
            if epoch < warm:
                factor = (epoch + 1) / warm
            else:
                t = (epoch - warm) / (nepochs - warm)
                factor = 0.05 + 0.95 * (1 + math.cos(math.pi * t)) / 2
        else:
            raise AssertionError(scheduler)
        out.append(lr * factor)
    return out


# ----------------------------------------------------------------------------- schedulers
@pytest.mark.parametrize("scheduler", ["Default", "Exponential", "MultiStage", "WarmupCosine"])
def test_scheduler_learning_rate_per_epoch(
    scheduler, tiny_raw, tiny_training_config, cpu_execution
):
    nepochs = 4
    config = tiny_training_config(nepochs=nepochs)
    result = train(
        tiny_raw, None, config, cpu_execution(scheduler=scheduler, learning_rate=LR),
        write_bundle=False,
    )
    expected = expected_learning_rates(scheduler, LR, nepochs)
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-12)
    logged = read_metrics_csv(result.output_dir)
    assert sorted(logged) == list(range(nepochs))
    # The logger stores float32.
    np.testing.assert_allclose(
        [logged[e]["learning_rate"] for e in range(nepochs)], expected, rtol=1e-6
    )
    if scheduler != "Default":
        assert len(set(result.history["learning_rate"])) > 1


def test_adaptive_scheduler_halves_lr_when_the_loss_stalls(
    tiny_raw, tiny_training_config, cpu_execution
):
    # A learning rate of 1e-7 leaves the (negative) Poisson loss flat to ~1e-5, so the
    # monitor stops improving: epoch 0 sets the best, epochs 1-3 are not better, and
    # the LR is halved for epoch 4 (patience 2 tolerates two such epochs). Not smaller:
    # ReduceLROnPlateau ignores LR changes below 1e-8.
    lr = 1e-7
    # The legacy layout: the U-Net still moves the loss by ~1e-4 per epoch at this LR.
    config = tiny_training_config(
        nepochs=6, model=ModelConfig(n_filters_scale=1, generator="cnn")
    )
    result = train(
        tiny_raw, None, config, cpu_execution(scheduler="Adaptive", learning_rate=lr),
        write_bundle=False,
    )
    losses = result.history["train_loss"]
    assert max(losses) - min(losses) < 1e-4
    np.testing.assert_allclose(
        result.history["learning_rate"], [lr] * 4 + [lr / 2] * 2, rtol=1e-12
    )


def _scheduler_lrs(scheduler: str, nepochs: int, metrics: list[float] | None = None):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    config = build_scheduler(optimizer, scheduler, nepochs, "train_loss")
    lrs = []
    for epoch in range(nepochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if metrics is None:
            config["scheduler"].step()
        else:
            config["scheduler"].step(metrics[epoch])
    return lrs, config


@pytest.mark.parametrize("scheduler,nepochs", [("WarmupCosine", 20), ("MultiStage", 10),
                                               ("Exponential", 7)])
def test_build_scheduler_long_schedules_follow_the_formula(scheduler, nepochs):
    lrs, config = _scheduler_lrs(scheduler, nepochs)
    assert config["interval"] == "epoch"
    np.testing.assert_allclose(lrs, expected_learning_rates(scheduler, LR, nepochs), rtol=1e-12)
    if scheduler == "WarmupCosine":  # 2 warm-up epochs: half, then full LR
        assert lrs[:3] == pytest.approx([LR / 2, LR, LR])
        assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False))


def test_build_scheduler_default_is_constant():
    param = torch.nn.Parameter(torch.zeros(1))
    assert build_scheduler(torch.optim.SGD([param], lr=LR), "Default", 5, "train_loss") is None


def test_plateau_scheduler_on_negative_losses():
    # Flat at -96 (a typical Poisson NLL): halved after three epochs without improvement.
    lrs, config = _scheduler_lrs("Adaptive", 8, [-96.0] * 8)
    assert config["monitor"] == "train_loss"
    assert lrs == pytest.approx([LR] * 4 + [LR / 2] * 3 + [LR / 4])
    # Steadily improving by 0.01 per epoch: never reduced.
    lrs, _ = _scheduler_lrs("Adaptive", 8, [-96.0 - 0.01 * e for e in range(8)])
    assert lrs == pytest.approx([LR] * 8)


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("top_k,mode", [(2, "min"), (2, "max"), (0, "min"), (-1, "max")])
def test_checkpoints_last_plus_top_k_by_monitor_and_mode(
    top_k, mode, tiny_raw, tiny_training_config, cpu_execution
):
    nepochs = 3
    config = tiny_training_config(nepochs=nepochs)
    execution = cpu_execution(
        checkpoint_monitor="train_loss", checkpoint_mode=mode, checkpoint_save_top_k=top_k,
        logger="none",
    )
    result = train(tiny_raw, None, config, execution, write_bundle=False)
    ckpt_dir = config.output_dir / "checkpoints"
    assert result.checkpoint_dir == ckpt_dir
    assert (ckpt_dir / "last.ckpt").is_file()
    losses = np.array(result.history["train_loss"])
    order = np.argsort(losses if mode == "min" else -losses)
    kept = checkpoint_epochs(ckpt_dir)
    n_kept = nepochs if top_k == -1 else top_k
    assert set(kept) == set(order[:n_kept].tolist())
    for epoch, path in kept.items():
        # The file name carries the monitored value of that epoch (5 significant digits).
        value = float(re.search(r"train_loss(-?[0-9.e+-]+)\.ckpt$", path.name).group(1))
        assert value == pytest.approx(losses[epoch], rel=1e-4)
        assert torch.load(path, weights_only=True)["epoch"] == epoch
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["epoch"] == nepochs - 1


def test_checkpointing_disabled_and_logger_none_write_nothing(
    tiny_raw, tiny_training_config, cpu_execution
):
    config = tiny_training_config(nepochs=1)
    execution = cpu_execution(enable_checkpointing=False, logger="none")
    result = train(tiny_raw, None, config, execution, write_bundle=False)
    assert result.checkpoint_dir is None
    assert not (config.output_dir / "checkpoints").exists()
    assert not (config.output_dir / "lightning_logs").exists()
    assert len(result.history["train_loss"]) == 1


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_with_patience_one_stops_when_the_monitor_cannot_improve(
    tiny_raw, tiny_training_config, cpu_execution
):
    # A constant learning rate monitored in "max" mode never improves: epoch 0 sets the
    # best, epoch 1 is not better, so patience 1 stops after two of the five epochs.
    config = tiny_training_config(nepochs=5)
    execution = cpu_execution(
        checkpoint_monitor="learning_rate", checkpoint_mode="max", early_stop_patience=1,
        logger="none",
    )
    result = train(tiny_raw, None, config, execution, write_bundle=False)
    assert len(result.history["train_loss"]) == 2
    assert result.summary["epochs_completed"] == 2
    assert not result.stopped_by_caller
    stopper = [c for c in result.module.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(stopper) == 1 and stopper[0].stopped_epoch == 1


def test_early_stopping_callback_follows_the_config(tmp_path, tiny_training_config,
                                                    cpu_execution):
    config = tiny_training_config()
    trainer = build_trainer(config, cpu_execution(early_stop_patience=None), "train_loss",
                            HistoryCallback())
    assert not [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    trainer = build_trainer(
        config, cpu_execution(early_stop_patience=7, checkpoint_mode="max"), "train_mae",
        HistoryCallback(),
    )
    (stopper,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.patience, stopper.monitor, stopper.mode) == (7, "train_mae", "max")


# ----------------------------------------------------------------------------- loggers
def test_csv_logger_default_has_stable_per_epoch_names(
    tiny_raw, tiny_test_raw, tiny_training_config, cpu_execution
):
    reports = []
    config = tiny_training_config(nepochs=2)
    result = train(tiny_raw, tiny_test_raw, config, cpu_execution(scheduler="Exponential"),
                   epoch_callback=reports.append, write_bundle=False)
    # Validation comes from the test data, grouped like the training data.
    assert result.summary["n_train_groups"] == 8
    assert result.summary["n_val_groups"] == 8
    assert result.summary["monitor"] == "val_loss"
    logged = read_metrics_csv(result.output_dir)
    assert sorted(logged) == [0, 1]
    for epoch in (0, 1):
        row = logged[epoch]
        assert {"train_loss", "val_loss", "learning_rate"} <= set(row)
        assert row["train_loss"] == pytest.approx(result.history["train_loss"][epoch], rel=1e-6)
        assert row["val_loss"] == pytest.approx(result.history["val_loss"][epoch], rel=1e-6)
        assert row["learning_rate"] == pytest.approx(
            result.history["learning_rate"][epoch], rel=1e-6
        )
    # The callback saw the same numbers, and returning None did not stop training.
    assert [r.epoch for r in reports] == [0, 1]
    assert [r.train_loss for r in reports] == result.history["train_loss"]
    assert [r.val_loss for r in reports] == result.history["val_loss"]
    assert not result.stopped_by_caller
    # Validation really used the test scan: its loss differs from the training loss.
    assert result.history["val_loss"][0] != pytest.approx(result.history["train_loss"][0])


def test_tensorboard_logger_writes_event_files(tiny_raw, tiny_training_config, cpu_execution):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_training_config(nepochs=2)
    result = train(tiny_raw, None, config, cpu_execution(logger="tensorboard"),
                   write_bundle=False)
    run_dir = config.output_dir / "lightning_logs" / "version_0"
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    values = [s.value for s in acc.Scalars("train_loss")]
    np.testing.assert_allclose(values, result.history["train_loss"], rtol=1e-6)
    assert "learning_rate" in acc.Tags()["scalars"]
    assert not (config.output_dir / "lightning_logs" / "version_0" / "metrics.csv").exists()


@pytest.mark.parametrize("package,logger", [("tensorboard", "tensorboard"),
                                            ("mlflow", "mlflow")])
def test_missing_logger_package_is_a_clear_setup_error(
    package, logger, monkeypatch, tiny_raw, tiny_training_config, cpu_execution
):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    config = tiny_training_config(nepochs=1)
    with pytest.raises(TrainingSetupError, match=rf"logger='{logger}' needs the {package}"):
        train(tiny_raw, None, config, cpu_execution(logger=logger), write_bundle=False)
    assert not (config.output_dir / "checkpoints").exists()


def test_mlflow_logger_uses_a_local_store_under_output_dir(
    monkeypatch, tiny_raw, tiny_training_config, cpu_execution
):
    pytest.importorskip("mlflow")
    # No server may be contacted: a tracking URI from the environment must not win.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    config = tiny_training_config(nepochs=2)
    result = train(tiny_raw, None, config, cpu_execution(logger="mlflow"), write_bundle=False)
    store = config.output_dir / "mlruns"
    metric_files = list(store.glob("*/*/metrics/train_loss"))
    assert len(metric_files) == 1
    values = [float(line.split()[1]) for line in metric_files[0].read_text().splitlines()]
    np.testing.assert_allclose(values, result.history["train_loss"], rtol=1e-6)
    assert not (config.output_dir / "lightning_logs").exists()


# ----------------------------------------------------------------------------- monitor
def test_val_loss_monitor_falls_back_to_train_loss_without_validation(
    tiny_raw, tiny_training_config, cpu_execution
):
    config = tiny_training_config(nepochs=1, validation_fraction=0.0)
    result = train(tiny_raw, None, config, cpu_execution(checkpoint_monitor="val_loss"),
                   write_bundle=False)
    assert result.summary["monitor"] == "train_loss"
    assert result.module.hparams["monitor"] == "train_loss"
    assert result.history["val_loss"] == []
    (path,) = checkpoint_epochs(config.output_dir / "checkpoints").values()
    assert "train_loss" in path.name
    (stopper,) = [c for c in result.module.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stopper.monitor == "train_loss"


def test_resolve_monitor():
    names = {"train_loss", "train_mae", "learning_rate", "val_loss", "val_mae"}
    train_only = {"train_loss", "train_mae", "learning_rate"}
    assert resolve_monitor("val_loss", True, names) == "val_loss"
    assert resolve_monitor("val_loss", False, train_only) == "train_loss"
    assert resolve_monitor("val_mae", False, train_only) == "train_mae"
    assert resolve_monitor("learning_rate", False, train_only) == "learning_rate"
    with pytest.raises(TrainingSetupError, match=r"'val_psnr'.*learning_rate, train_loss"):
        resolve_monitor("val_psnr", False, train_only)


def test_unknown_monitor_fails_before_training(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(nepochs=1)
    with pytest.raises(TrainingSetupError, match=r"checkpoint_monitor='val_psnr'.*train_loss"):
        train(tiny_raw, None, config, cpu_execution(checkpoint_monitor="val_psnr"))
    assert not config.output_dir.exists()


# ----------------------------------------------------------------------------- DataModule
def _datamodule(raw, config, execution, val_raw=None):
    grouped = group_raw_data(raw, gridsize=1, n_groups=config.n_groups,
                             seed=config.subsample_seed, sequential=config.sequential_sampling)
    val = None
    if val_raw is not None:
        val = group_raw_data(val_raw, gridsize=1, n_groups=5, seed=1)
    return PtychoDataModule(grouped, 0.5, config, execution, val_grouped=val,
                            val_input_scale=0.25 if val is not None else None), grouped, val


def test_validation_from_test_data(tiny_raw, tiny_test_raw, tiny_training_config,
                                   cpu_execution):
    config = tiny_training_config(n_groups=12, validation_fraction=0.25)
    dm, grouped, val = _datamodule(tiny_raw, config, cpu_execution(), tiny_test_raw)
    # With test data the training groups are not split.
    assert (len(dm.train_set), len(dm.val_set)) == (12, 5)
    assert dm.has_validation
    np.testing.assert_allclose(
        dm.val_set[3]["diffraction"].numpy(), val.diffraction[3] * 0.25, rtol=1e-6
    )
    np.testing.assert_allclose(
        dm.train_set[3]["diffraction"].numpy(), grouped.diffraction[3] * 0.5, rtol=1e-6
    )
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, SequentialSampler)
    assert sum(b["diffraction"].shape[0] for b in loader) == 5


def _split_rows(dm):
    rows = []
    for subset in (dm.train_set, dm.val_set):
        rows.append(sorted(subset.indices))
    return rows


def test_seeded_validation_split(tiny_raw, tiny_training_config, cpu_execution):
    # --val_split / --val_seed (seed 002): the split is seeded by val_seed alone.
    config = tiny_training_config(n_groups=16, validation_fraction=0.25, val_seed=5)
    dm, grouped, _ = _datamodule(tiny_raw, config, cpu_execution())
    train_idx, val_idx = _split_rows(dm)
    assert (len(train_idx), len(val_idx)) == (12, 4)
    assert set(train_idx).isdisjoint(val_idx)
    assert sorted(train_idx + val_idx) == list(range(16))
    # The validation items really are those groups.
    np.testing.assert_allclose(
        dm.val_set[0]["diffraction"].numpy(), grouped.diffraction[val_idx[0]] * 0.5, rtol=1e-6
    )
    again, _, _ = _datamodule(tiny_raw, config, cpu_execution())
    assert _split_rows(again) == [train_idx, val_idx]
    other, _, _ = _datamodule(tiny_raw, config.replace(val_seed=6), cpu_execution())
    assert _split_rows(other)[1] != val_idx
    # The group sampling seed does not move the split.
    same, _, _ = _datamodule(tiny_raw, config.replace(subsample_seed=6), cpu_execution())
    assert _split_rows(same)[1] == val_idx
    # split_indices itself: seeded, at least one validation item, never all of them.
    assert split_indices(16, 0.25, 5)[1].tolist() == val_idx
    assert len(split_indices(3, 0.01, 0)[1]) == 1
    assert len(split_indices(2, 0.9, 0)[0]) == 1
    none_train, none_val = split_indices(10, 0.0, 0)
    assert none_train.tolist() == list(range(10)) and none_val.size == 0


def test_no_validation_when_fraction_is_zero(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(n_groups=8, validation_fraction=0.0)
    dm, _, _ = _datamodule(tiny_raw, config, cpu_execution())
    assert not dm.has_validation
    assert len(dm.train_set) == 8
    assert dm.val_dataloader() == []


def test_shuffling_unless_sequential_sampling(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(n_groups=16, batch_size=4)
    dm, grouped, _ = _datamodule(tiny_raw, config, cpu_execution())
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, RandomSampler)
    assert loader.batch_size == 4
    first, second = list(loader.sampler), list(loader.sampler)
    assert sorted(first) == list(range(16))
    assert first != second  # a new order each epoch
    # Seeded by ExecutionConfig.seed: a fresh loader repeats the first order.
    assert list(dm.train_dataloader().sampler) == first

    seq = tiny_training_config(n_groups=16, batch_size=4, sequential_sampling=True)
    dm, grouped, _ = _datamodule(tiny_raw, seq, cpu_execution())
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, SequentialSampler)
    batches = [b["diffraction"] for b in loader]
    assert len(batches) == 4
    np.testing.assert_allclose(
        torch.cat(batches).numpy(), grouped.diffraction * np.float32(0.5), rtol=1e-6
    )


def test_loader_options_reach_the_dataloader(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(n_groups=16, validation_fraction=0.25, batch_size=3)
    execution = cpu_execution(num_workers=2, pin_memory=True, persistent_workers=True,
                              prefetch_factor=3, deterministic=False)
    dm, _, _ = _datamodule(tiny_raw, config, execution)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.batch_size == 3
        assert loader.num_workers == 2
        assert loader.pin_memory is True
        assert loader.persistent_workers is True
        assert loader.prefetch_factor == 3
    plain, _, _ = _datamodule(tiny_raw, config, cpu_execution())
    loader = plain.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)


# ----------------------------------------------------------------------------- optimisation
def _record_gradients(monkeypatch) -> list[dict[str, torch.Tensor]]:
    seen: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, optimizer):
        seen.append({n: p.grad.detach().clone() for n, p in self.named_parameters()
                     if p.grad is not None})

    monkeypatch.setattr(PtychoPINNModule, "on_before_optimizer_step", on_before_optimizer_step)
    return seen


def test_gradient_accumulation_halves_steps_and_matches_the_full_batch(
    monkeypatch, tiny_raw, tiny_training_config, cpu_execution
):
    grads = _record_gradients(monkeypatch)
    base = {"n_groups": 8, "nepochs": 1, "sequential_sampling": True}
    full = train(tiny_raw, None, tiny_training_config(batch_size=8, **base),
                 cpu_execution(logger="none", enable_checkpointing=False), write_bundle=False)
    accumulated = train(
        tiny_raw, None, tiny_training_config(batch_size=4, **base),
        cpu_execution(logger="none", enable_checkpointing=False, accumulate_grad_batches=2),
        write_bundle=False,
    )
    plain = train(tiny_raw, None, tiny_training_config(batch_size=4, **base),
                  cpu_execution(logger="none", enable_checkpointing=False), write_bundle=False)
    assert full.module.automatic_optimization
    assert full.module.trainer.global_step == 1
    assert accumulated.module.trainer.global_step == 1
    assert accumulated.module.trainer.accumulate_grad_batches == 2
    assert plain.module.trainer.global_step == 2
    assert len(grads) == 4
    # Two accumulated half batches give the gradient of the whole batch.
    g_full, g_acc = grads[0], grads[1]
    assert g_full.keys() == g_acc.keys() and len(g_full) > 10
    for name in g_full:
        scale = g_full[name].abs().max().item() + 1e-12
        torch.testing.assert_close(g_acc[name], g_full[name], rtol=1e-4, atol=1e-5 * scale)
    # A single half batch does not.
    assert not all(torch.allclose(grads[2][n], g_full[n], rtol=1e-3) for n in g_full)


def test_gradient_clipping_bounds_the_gradient_norm(
    tiny_raw, tiny_training_config, cpu_execution
):
    norms: list[float] = []

    def after_step(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_post_hook(after_step)
    try:
        clip = 1e-3
        config = tiny_training_config(nepochs=1)
        clipped = train(tiny_raw, None, config,
                        cpu_execution(gradient_clip_val=clip, logger="none"),
                        write_bundle=False)
        unclipped = train(tiny_raw, None, config.replace(output_dir=config.output_dir / "b"),
                          cpu_execution(logger="none"), write_bundle=False)
    finally:
        handle.remove()
    assert clipped.module.trainer.gradient_clip_val == clip
    assert unclipped.module.trainer.gradient_clip_val is None
    assert len(norms) == 2
    assert norms[1] > 10 * clip  # the natural gradient is far larger than the bound
    assert norms[0] == pytest.approx(clip, rel=1e-3)


def test_double_precision_trains_on_cpu(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(nepochs=1)
    result = train(tiny_raw, None, config, cpu_execution(precision="64-true", logger="none"),
                   write_bundle=False)
    trainer = result.module.trainer
    assert trainer.precision == "64-true"
    assert isinstance(trainer.precision_plugin, DoublePrecision)
    assert all(p.dtype == torch.float64 for p in result.module.generator.parameters())
    assert math.isfinite(result.history["train_loss"][0])


def test_bf16_mixed_precision_reaches_the_trainer(tiny_training_config, cpu_execution):
    trainer = build_trainer(tiny_training_config(), cpu_execution(precision="bf16-mixed"),
                            "train_loss", HistoryCallback())
    assert trainer.precision == "bf16-mixed"
    assert isinstance(trainer.precision_plugin, MixedPrecision)
    assert trainer.precision_plugin.precision == "bf16-mixed"


# ----------------------------------------------------------------------------- determinism
def test_seeded_runs_give_identical_histories(tiny_raw, tiny_training_config, cpu_execution):
    histories = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        config = tiny_training_config(nepochs=2, n_groups=12, batch_size=4,
                                      validation_fraction=0.25,
                                      output_dir=tiny_training_config().output_dir / name)
        result = train(tiny_raw, None, config, cpu_execution(seed=seed, logger="none"),
                       write_bundle=False)
        histories.append(result.history)
        assert torch.are_deterministic_algorithms_enabled()
    assert histories[0] == histories[1]  # bit for bit (exact float equality)
    assert histories[0]["train_loss"] != histories[2]["train_loss"]


def test_deterministic_flag_reaches_torch(tiny_training_config, cpu_execution):
    build_trainer(tiny_training_config(), cpu_execution(deterministic=True), "train_loss",
                  HistoryCallback())
    assert torch.are_deterministic_algorithms_enabled()
    build_trainer(tiny_training_config(), cpu_execution(deterministic=False), "train_loss",
                  HistoryCallback())
    assert not torch.are_deterministic_algorithms_enabled()


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(
    bad, monkeypatch, tiny_raw, tiny_training_config, cpu_execution
):
    real_total_loss = physics.total_loss
    training_calls = []

    def poisoned(*args, **kwargs):
        terms = real_total_loss(*args, **kwargs)
        if torch.is_grad_enabled():  # a training step (validation runs without grad)
            training_calls.append(1)
            if len(training_calls) >= 2:  # one step per epoch: epoch index 1
                terms["loss"] = terms["loss"] * bad
        return terms

    monkeypatch.setattr(physics, "total_loss", poisoned)
    config = tiny_training_config(nepochs=3)
    with pytest.raises(NonFiniteLossError, match=r"train loss became (nan|-?inf) at epoch 1") as info:
        train(tiny_raw, None, config, cpu_execution(logger="none"))
    assert "last.ckpt" in str(info.value)
    last = config.output_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 1
    module = PtychoPINNModule.load_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    with torch.no_grad():
        out = module.eval()(one_batch(tiny_raw, config)["diffraction"])
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert not (config.output_dir / "ptychopinn_model.zip").exists()


def test_supervised_without_labels_fails_before_training(
    tiny_raw_unlabelled, tiny_training_config, cpu_execution
):
    config = tiny_training_config(model={"model_type": "supervised"})
    with pytest.raises(DataContractError, match="supervised.*labels"):
        train(tiny_raw_unlabelled, None, config, cpu_execution())
    assert not config.output_dir.exists()


def test_supervised_with_labels_learns(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(model={"model_type": "supervised"}, nepochs=3)
    result = train(tiny_raw, None, config, cpu_execution(logger="none", learning_rate=3e-3),
                   write_bundle=False)
    losses = result.history["train_loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    metrics = result.module.trainer.callback_metrics
    assert float(metrics["train_supervised"]) == pytest.approx(losses[-1])
    assert "train_poisson" not in metrics


# ----------------------------------------------------------------------------- resume, reload
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_raw):
    """Four uninterrupted epochs (sequential sampling, so runs are comparable)."""
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig

    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=1, n_filters_scale=1), n_groups=8, batch_size=8,
        nepochs=4, validation_fraction=0.0, sequential_sampling=True,
        output_dir=tmp_path_factory.mktemp("reference"),
    )
    execution = ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none")
    result = train(tiny_raw, None, config, execution, write_bundle=False)
    return config, execution, result


def test_resume_continues_from_last_checkpoint(tmp_path, reference_run, tiny_raw):
    config, execution, reference = reference_run
    config = config.replace(output_dir=tmp_path / "run", nepochs=2)
    first = train(tiny_raw, None, config, execution, write_bundle=False)
    assert len(first.history["train_loss"]) == 2
    resumed = train(tiny_raw, None, config.replace(nepochs=4), execution, resume=True,
                    write_bundle=False)
    # Two more epochs, not four from scratch.
    assert len(resumed.history["train_loss"]) == 2
    assert resumed.module.trainer.global_step == 4
    assert resumed.summary["epochs_completed"] == 4
    np.testing.assert_allclose(resumed.history["train_loss"],
                               reference.history["train_loss"][2:], rtol=1e-5)
    last = torch.load(config.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3


def test_resume_after_an_interruption(tmp_path, reference_run, tiny_raw):
    config, execution, reference = reference_run
    config = config.replace(output_dir=tmp_path / "run")

    def crash(report):
        if report.epoch == 1:
            raise RuntimeError("simulated power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny_raw, None, config, execution, epoch_callback=crash, write_bundle=False)
    # Epoch 1 never finished, so last.ckpt holds epoch 0.
    last = config.output_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = train(tiny_raw, None, config, execution, resume=True, write_bundle=False)
    assert len(resumed.history["train_loss"]) == 3
    np.testing.assert_allclose(resumed.history["train_loss"],
                               reference.history["train_loss"][1:], rtol=1e-5)


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference_run, tiny_raw):
    config, execution, reference = reference_run
    config = config.replace(output_dir=tmp_path / "fresh", nepochs=1)
    result = train(tiny_raw, None, config, execution, resume=True, write_bundle=False)
    assert result.module.trainer.global_step == 1
    assert result.history["train_loss"][0] == pytest.approx(
        reference.history["train_loss"][0], rel=1e-6)


def test_load_from_checkpoint_needs_no_other_argument(reference_run, tiny_raw):
    config, _, reference = reference_run
    last = config.output_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)  # plain data only
    assert set(ckpt["hyper_parameters"]) >= {"model_config", "training_config",
                                             "execution_config", "intensity_scale",
                                             "input_scale", "monitor"}
    state, hparams = read_lightning_checkpoint(last)
    assert hparams["model_config"]["n_filters_scale"] == 1
    loaded = PtychoPINNModule.load_from_checkpoint(last).eval()
    trained = reference.module.eval()
    batch = one_batch(tiny_raw, config)
    with torch.no_grad():
        assert torch.equal(loaded(batch["diffraction"]), trained(batch["diffraction"]))
        assert torch.equal(loaded.forward_model(loaded(batch["diffraction"])),
                           trained.forward_model(trained(batch["diffraction"])))
    # The probe comes from the state dict, not the placeholder.
    assert torch.equal(loaded.forward_model.probe, trained.forward_model.probe)
    assert not torch.allclose(loaded.forward_model.probe.abs(),
                              torch.ones_like(loaded.forward_model.probe.abs()))
    assert loaded.hparams == trained.hparams
    assert loaded.model_config.n_filters_scale == 1


def test_epoch_callback_returning_false_stops_training(
    tiny_raw, tiny_training_config, cpu_execution
):
    reports = []

    def stop_after_first(report):
        reports.append(report)
        return False

    config = tiny_training_config(nepochs=3)
    result = train(tiny_raw, None, config, cpu_execution(scheduler="Exponential"),
                   epoch_callback=stop_after_first)
    assert result.stopped_by_caller
    assert len(result.history["train_loss"]) == 1
    assert len(reports) == 1
    assert reports[0].epoch == 0
    assert reports[0].train_loss == result.history["train_loss"][0]
    assert reports[0].learning_rate == pytest.approx(LR)
    assert reports[0].val_loss is None
    # The stopped run still writes its bundle and output paths.
    assert result.bundle_path is not None and result.bundle_path.is_file()
    assert read_bundle(result.bundle_path).configs["training"]["nepochs"] == 3


# ----------------------------------------------------------------------------- Trainer setup
def test_progress_bar_on_by_default_off_when_quiet(tiny_training_config, cpu_execution):
    from ptychopinn.config import ExecutionConfig

    assert ExecutionConfig().enable_progress_bar is True
    trainer = build_trainer(tiny_training_config(), cpu_execution(enable_progress_bar=True),
                            "train_loss", HistoryCallback())
    assert trainer.progress_bar_callback is not None
    trainer = build_trainer(tiny_training_config(), cpu_execution(enable_progress_bar=False),
                            "train_loss", HistoryCallback())
    assert trainer.progress_bar_callback is None


def test_accelerator_auto_picks_what_is_present(tiny_training_config, cpu_execution):
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    trainer = build_trainer(tiny_training_config(), cpu_execution(accelerator="auto"),
                            "train_loss", HistoryCallback())
    expected = CUDAAccelerator if torch.cuda.is_available() else CPUAccelerator
    assert isinstance(trainer.accelerator, expected)


@pytest.mark.parametrize("strategy,launcher", [("ddp", "_SubprocessScriptLauncher"),
                                               ("ddp_spawn", "_MultiProcessingLauncher")])
def test_ddp_strategies_on_cpu_use_gloo(strategy, launcher, tiny_training_config,
                                        cpu_execution):
    trainer = build_trainer(tiny_training_config(),
                            cpu_execution(devices=2, strategy=strategy), "train_loss",
                            HistoryCallback())
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy.process_group_backend == "gloo"
    assert trainer.world_size == 2
    assert type(trainer.strategy.launcher).__name__ == launcher


# The second run reuses the directory on purpose; Lightning's warning about that is right.
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_trainer_writes_under_output_dir(tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(nepochs=1)
    result = train(tiny_raw, None, config, cpu_execution())
    out = config.output_dir
    assert result.output_dir == out
    assert result.bundle_path == out / "ptychopinn_model.zip" and result.bundle_path.is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert result.training_time_s > 0
    assert isinstance(result.module, PtychoPINNModule)
    assert isinstance(result.module.trainer, L.Trainer)
    # A second run in the same directory logs to the next version.
    train(tiny_raw, None, config, cpu_execution(), write_bundle=False)
    assert (out / "lightning_logs" / "version_1" / "metrics.csv").is_file()


# ----------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_cpu_processes_via_the_cli(tmp_path, tiny_raw):
    data = tmp_path / "tiny.npz"
    tiny_raw.save(data)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "ptychopinn_torch.train", "--train_data_file", str(data),
           "--output_dir", str(out), "--max_epochs", "1", "--n_images", "8", "--gridsize", "1",
           "--batch_size", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
           "--logger", "none"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "MEMBER: 2/2" in log  # the second process joined the group
    assert "distributed_backend=gloo" in log
    bundle = out / "ptychopinn_model.zip"
    assert bundle.is_file()
    assert f"bundle_path: {bundle}" in proc.stdout
    contents = read_bundle(bundle)
    assert contents.configs["execution"]["strategy"] == "ddp"
    assert contents.configs["execution"]["devices"] == 2
    assert (out / "checkpoints" / "last.ckpt").is_file()
