"""The execution knobs of seed 002 and the parity items of issue 10, each shown to change
behaviour: validation frequency, drop_last, the validation split seed, DDP tuning and
nodes, the scaled learning rate, training stages, fine-tuning, MLflow tags / tracking URI
/ run id, PYTHONHASHSEED, TrainingConfig.debug, n_subsample with its indices file, the
seeds' monitor names, hparams.yaml, the resolved configuration, the seeds' model-file
names, the inference progress bar and the filtered third-party noise.

Runs are tiny (N=64, n_filters_scale=1, 8 groups, 1-3 epochs) to keep the suite fast.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.config_file import CONFIG_FILENAME, read_config_file
from ptychopinn.data import DataContractError
from ptychopinn_torch import inference as inf
from ptychopinn_torch import physics, stages
from ptychopinn_torch.bundle import BundleError, bundle_sha256
from ptychopinn_torch.datamodule import PtychoDataModule
from ptychopinn_torch.module import PtychoPINNModule
from ptychopinn_torch.train import TrainingSetupError, load_initial_weights, train
from ptychopinn_torch.trainer import (
    HistoryCallback,
    _build_strategy,
    build_trainer,
    initial_learning_rate,
    resolve_monitor,
    silence_third_party_noise,
)

pytestmark = pytest.mark.usefixtures("restore_torch_determinism")


# ------------------------------------------------------------------ validation, loaders
def test_check_val_every_n_epoch_validates_less_often(tiny_raw, tiny_training_config,
                                                      cpu_execution):
    config = tiny_training_config(nepochs=3, validation_fraction=0.25)
    every = train(tiny_raw, None, config, cpu_execution(logger="none"), write_bundle=False)
    sparse = train(tiny_raw, None, config.replace(output_dir=config.output_dir / "b"),
                   cpu_execution(logger="none", check_val_every_n_epoch=2),
                   write_bundle=False)
    assert len(every.history["val_loss"]) == 3
    assert len(sparse.history["val_loss"]) == 1  # epoch 2 only (epochs 1..3, 1-based)
    assert len(sparse.history["train_loss"]) == 3


def _datamodule(raw, config, execution):
    from ptychopinn.grouping import group_for_training, input_scale

    return PtychoDataModule(group_for_training(raw, config), input_scale(raw.diffraction),
                            config, execution)


def test_drop_last_drops_the_incomplete_training_batch(tiny_raw, tiny_training_config,
                                                       cpu_execution):
    config = tiny_training_config(n_groups=10, batch_size=4)
    keep = _datamodule(tiny_raw, config, cpu_execution()).train_dataloader()
    drop = _datamodule(tiny_raw, config, cpu_execution(drop_last=True)).train_dataloader()
    assert [len(b["diffraction"]) for b in keep] == [4, 4, 2]
    assert [len(b["diffraction"]) for b in drop] == [4, 4]
    with pytest.raises(TrainingSetupError, match="drop_last=True drops every batch"):
        train(tiny_raw, None, tiny_training_config(n_groups=4, batch_size=8),
              cpu_execution(drop_last=True), write_bundle=False)


# ------------------------------------------------------------------------- distributed
def test_ddp_knobs_reach_lightnings_ddp_strategy():
    default = _build_strategy(ExecutionConfig(accelerator="cpu", strategy="ddp"))
    assert default.process_group_backend == "gloo"
    assert default._ddp_kwargs == {"find_unused_parameters": False, "static_graph": True,
                                   "gradient_as_bucket_view": True}
    tuned = _build_strategy(ExecutionConfig(
        accelerator="cpu", strategy="ddp_spawn", ddp_find_unused_parameters=True,
        ddp_static_graph=False, ddp_gradient_as_bucket_view=False, ddp_backend="mpi"))
    assert tuned.process_group_backend == "mpi" and tuned._start_method == "spawn"
    assert tuned._ddp_kwargs == {"find_unused_parameters": True, "static_graph": False,
                                 "gradient_as_bucket_view": False}
    assert _build_strategy(ExecutionConfig()) == "auto"


def test_num_nodes_reaches_the_trainer(tiny_training_config):
    config = tiny_training_config()
    trainer = build_trainer(config, ExecutionConfig(accelerator="cpu", strategy="ddp",
                                                    num_nodes=2, logger="none"),
                            "train_loss", HistoryCallback(), has_validation=False)
    assert trainer.num_nodes == 2
    assert build_trainer(config, ExecutionConfig(accelerator="cpu", logger="none"),
                         "train_loss", HistoryCallback(), False).num_nodes == 1


# ------------------------------------------------------------------------- learning rate
def test_scaled_learning_rate_is_sqrt_of_effective_over_per_device_batch():
    tc = TrainingConfig()
    plain = ExecutionConfig(learning_rate=1e-3, accumulate_grad_batches=4)
    scaled = plain.replace(scale_lr_with_batch=True)
    assert initial_learning_rate(tc, plain, world_size=2) == 1e-3
    assert initial_learning_rate(tc, scaled, world_size=1) == pytest.approx(2e-3)
    assert initial_learning_rate(tc, scaled, world_size=4) == pytest.approx(4e-3)
    fine = tc.replace(init_model="parent.zip", fine_tune_gamma=0.25)
    assert initial_learning_rate(fine, plain) == pytest.approx(2.5e-4)


def test_scaled_learning_rate_reaches_the_optimizer(tiny_raw, tiny_training_config,
                                                    cpu_execution):
    config = tiny_training_config(nepochs=1)
    result = train(tiny_raw, None, config, cpu_execution(
        logger="none", accumulate_grad_batches=4, scale_lr_with_batch=True),
        write_bundle=False)
    assert result.history["learning_rate"] == [pytest.approx(2e-3)]


# ------------------------------------------------------------------------------ stages
def test_physics_weight_schedules():
    def weights(schedule):
        tc = TrainingConfig(nepochs=8, stage_1_epochs=2, stage_2_epochs=3, stage_3_epochs=2,
                            physics_weight_schedule=schedule)
        return [stages.physics_weight(e, tc) for e in range(8)]

    p = [0.25, 0.5, 0.75]  # (e - s1 + 1) / (s2 + 1) over stage 2
    assert weights("linear") == [0, 0, *p, 1, 1, 1]
    assert weights("cosine")[2:5] == pytest.approx([0.5 * (1 - math.cos(math.pi * x))
                                                    for x in p])
    assert weights("exponential")[2:5] == pytest.approx([math.expm1(5 * x) / math.expm1(5)
                                                         for x in p])
    assert stages.physics_weight(3, TrainingConfig()) is None  # no stages
    tc = TrainingConfig(nepochs=4, stage_1_epochs=1, stage_3_epochs=1, stage_3_lr_factor=0.2)
    assert [stages.learning_rate_factor(e, tc) for e in range(4)] == [1.0, 0.2, 0.2, 0.2]


def test_stage_weight_blends_mae_into_the_physics_loss():
    pred = torch.rand(2, 1, 8, 8) + 0.1
    meas = torch.rand(2, 1, 8, 8) + 0.1
    tc = TrainingConfig()
    kwargs = dict(pred_amp=pred, meas_amp=meas, intensity_scale=3.0)
    plain = physics.total_loss(tc, **kwargs)
    for w in (0.0, 0.3, 1.0):
        staged = physics.total_loss(tc, physics_weight=w, **kwargs)
        expected = w * plain["loss"] + (1 - w) * plain["mae"]
        torch.testing.assert_close(staged["loss"], expected)
    torch.testing.assert_close(physics.total_loss(tc, physics_weight=0.0, **kwargs)["loss"],
                               plain["mae"])


def test_training_stages_log_the_weight_and_scale_the_stage_3_rate(
        tiny_raw, tiny_training_config, cpu_execution, tmp_path):
    config = tiny_training_config(nepochs=3, stage_1_epochs=1, stage_2_epochs=1,
                                  stage_3_epochs=1, physics_weight_schedule="linear",
                                  stage_3_lr_factor=0.5)
    result = train(tiny_raw, None, config, cpu_execution(), write_bundle=False)
    path = config.output_dir / "lightning_logs" / "version_0" / "metrics.csv"
    rows = [r for r in csv.DictReader(path.open()) if r.get("physics_weight")]
    assert [float(r["physics_weight"]) for r in rows] == [0.0, 0.5, 1.0]
    assert result.history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4])
    # Checkpoints keep the unscaled rate, so a resumed run does not apply the factor twice.
    ckpt = torch.load(config.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    # Stage 1 trains on the MAE alone: its loss is the MAE term.
    first = {k: float(v) for k, v in rows[0].items() if v}
    csv_rows = list(csv.DictReader(path.open()))
    epoch0 = {k: float(v) for r in csv_rows if r["epoch"] == "0" for k, v in r.items() if v}
    assert epoch0["train_loss"] == pytest.approx(epoch0["train_mae"], rel=1e-5)
    assert first["physics_weight"] == 0.0


# --------------------------------------------------------------------------- fine-tuning
def test_fine_tuning_starts_from_the_parent_weights_and_records_it(
        tiny_raw, tiny_test_raw, tiny_training_config, cpu_execution, tmp_path):
    parent = train(tiny_raw, None, tiny_training_config(nepochs=1),
                   cpu_execution(logger="none", enable_checkpointing=False))
    child_config = tiny_training_config(nepochs=1, output_dir=tmp_path / "child",
                                        fine_tune_gamma=0.5)
    seen = {}

    def first_epoch(report):
        seen.setdefault("lr", report.learning_rate)

    child = train(tiny_test_raw, None, child_config,
                  cpu_execution(logger="none", enable_checkpointing=False),
                  epoch_callback=first_epoch, init_model=parent.bundle_path)
    assert seen["lr"] == pytest.approx(1e-3 * 0.5)  # learning_rate x fine_tune_gamma
    assert child.summary["parent_bundle"] == str(parent.bundle_path)
    assert child.summary["parent_bundle_sha256"] == bundle_sha256(parent.bundle_path)
    saved = inf.load_model(child.bundle_path)
    assert saved.training_summary["parent_bundle_sha256"] == bundle_sha256(parent.bundle_path)
    assert saved.training_config.init_model == parent.bundle_path
    # The weights really came from the parent: load_initial_weights copies them exactly.
    fresh = PtychoPINNModule(child_config.model.to_dict(), child_config.to_dict(),
                             ExecutionConfig().to_dict(), 1.0, 1.0)
    load_initial_weights(fresh, inf.load_model(parent.bundle_path))
    for key, value in inf.load_model(parent.bundle_path).module.generator.state_dict().items():
        assert torch.equal(fresh.generator.state_dict()[key], value)
    # The probe stays the new data's (the forward model is not copied).
    assert not torch.equal(fresh.forward_model.probe,
                           inf.load_model(parent.bundle_path).module.forward_model.probe)


def test_fine_tuning_refuses_a_parent_of_another_architecture(
        tiny_raw, tiny_training_config, cpu_execution, tmp_path):
    parent = train(tiny_raw, None, tiny_training_config(nepochs=1),
                   cpu_execution(logger="none", enable_checkpointing=False))
    wider = tiny_training_config(model=ModelConfig(N=64, n_filters_scale=2, eca_decoder=True),
                                 output_dir=tmp_path / "child")
    with pytest.raises(TrainingSetupError) as info:
        train(tiny_raw, None, wider, cpu_execution(logger="none"),
              init_model=parent.bundle_path)
    message = str(info.value)
    assert "TrainingConfig.init_model=" in message
    assert "n_filters_scale (bundle 1, configured 2)" in message
    assert "eca_decoder (bundle False, configured True)" in message
    assert not (tmp_path / "child").exists()
    with pytest.raises(TrainingSetupError, match="does not exist"):
        train(tiny_raw, None, wider.replace(init_model=tmp_path / "nope.zip"), cpu_execution())


# ------------------------------------------------------------------------------ MLflow
def test_mlflow_tags_tracking_uri_and_the_run_id_model(
        monkeypatch, tiny_raw, tiny_training_config, cpu_execution, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "elsewhere" / "mlruns").resolve().as_uri()
    config = tiny_training_config(nepochs=1, experiment_name="exp-1", notes="first try",
                                  model_name="tiny-net")
    result = train(tiny_raw, None, config,
                   cpu_execution(logger="mlflow", mlflow_tracking_uri=store,
                                 enable_checkpointing=False))
    assert not (config.output_dir / "mlruns").exists()  # the given store, not the default
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = client.get_run(result.summary["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "exp-1"
    assert run.data.tags["model_name"] == "tiny-net"
    assert run.data.tags["mlflow.note.content"] == "first try"
    # The run's model is the bundle: inference --run_id loads it.
    model = inf.load_model(run_id=run.info.run_id, tracking_uri=store)
    assert bundle_sha256(model.source_path) == bundle_sha256(result.bundle_path)
    recon, paths = inf.run_inference(
        InferenceConfig(run_id=run.info.run_id, test_data_file=None,
                        output_dir=tmp_path / "recon"),
        ExecutionConfig(accelerator="cpu", enable_progress_bar=False,
                        mlflow_tracking_uri=store), data=tiny_raw)
    assert paths["npz"].exists()
    with pytest.raises(BundleError, match="InferenceConfig.run_id='no-such-run'"):
        inf.load_model(run_id="no-such-run", tracking_uri=store)


# ----------------------------------------------------------------- seeding and logging
def test_training_sets_pythonhashseed(monkeypatch, tiny_raw, tiny_training_config,
                                      cpu_execution):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    train(tiny_raw, None, tiny_training_config(nepochs=1),
          cpu_execution(seed=123, logger="none", enable_checkpointing=False), write_bundle=False)
    assert os.environ["PYTHONHASHSEED"] == "123"


def test_debug_turns_progress_and_debug_lines_on(caplog, tiny_raw, tiny_training_config,
                                                 cpu_execution):
    quiet = cpu_execution(logger="none", enable_checkpointing=False)
    ours = logging.getLogger("ptychopinn_torch")
    level = ours.level
    ours.setLevel(logging.INFO)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        normal = train(tiny_raw, None, tiny_training_config(nepochs=1), quiet,
                       write_bundle=False)
        assert normal.module.trainer.progress_bar_callback is None
        assert not [r for r in caplog.records if r.levelno == logging.DEBUG]
        debug = train(tiny_raw, None, tiny_training_config(nepochs=1, debug=True), quiet,
                      write_bundle=False)
        assert debug.module.trainer.progress_bar_callback is not None
        debug_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("training groups" in line for line in debug_lines)
        assert ours.level == logging.INFO  # restored after the run
    finally:
        ours.setLevel(level)


# ------------------------------------------------------------------- sampled positions
def test_subsample_keeps_the_sampled_indices(tiny_raw):
    sub = tiny_raw.subsample(10, seed=4)
    assert sub.n_positions == 10 and sub.sample_indices.tolist() == sorted(
        sub.sample_indices.tolist())
    np.testing.assert_array_equal(sub.xcoords, tiny_raw.xcoords[sub.sample_indices])
    assert tiny_raw.subsample(10, seed=4).sample_indices.tolist() == sub.sample_indices.tolist()
    assert tiny_raw.subsample(10, seed=5).sample_indices.tolist() != sub.sample_indices.tolist()
    again = sub.subsample(4, seed=0)  # indices stay relative to the original file
    assert set(again.sample_indices) <= set(sub.sample_indices)
    np.testing.assert_array_equal(again.ycoords, tiny_raw.ycoords[again.sample_indices])
    assert tiny_raw.sample_indices is None
    assert tiny_raw.subsample(100, seed=0).sample_indices.tolist() == list(range(36))
    with pytest.raises(DataContractError, match="n_subsample"):
        tiny_raw.subsample(0, seed=0)


def test_n_subsample_trains_on_the_sample_and_writes_its_indices(
        tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(nepochs=1, n_subsample=12, n_groups=None, subsample_seed=7)
    result = train(tiny_raw, None, config, cpu_execution(logger="none",
                                                         enable_checkpointing=False),
                   write_bundle=False)
    written = (config.output_dir / "subsample_seed7_indices.txt").read_text().split()
    assert [int(i) for i in written] == tiny_raw.subsample(12, seed=7).sample_indices.tolist()
    assert result.summary["n_train_groups"] == 12  # one group per sampled position


# ---------------------------------------------------------------------------- monitors
def test_seed_monitor_names_map_to_ours():
    known = {"train_loss", "val_loss", "learning_rate"}
    assert resolve_monitor("poisson_val_loss", True, known) == "val_loss"
    assert resolve_monitor("poisson_val_loss", False, known) == "train_loss"
    assert resolve_monitor("poisson_train_loss", True, known) == "train_loss"
    assert resolve_monitor("mae_val_loss", True, known) == "val_loss"
    with pytest.raises(TrainingSetupError, match="poisson_loss"):
        resolve_monitor("poisson_loss", True, known)


def test_hparams_yaml_records_the_monitor_used(tiny_raw, tiny_test_raw, tiny_training_config,
                                               cpu_execution):
    config = tiny_training_config(nepochs=1)
    result = train(tiny_raw, tiny_test_raw, config,
                   cpu_execution(checkpoint_monitor="poisson_val_loss"), write_bundle=False)
    hparams = yaml.safe_load((config.output_dir / "lightning_logs" / "version_0" /
                              "hparams.yaml").read_text())
    assert hparams["monitor"] == "val_loss" == result.summary["monitor"]


# ------------------------------------------------------------------- resolved configs
def test_training_writes_a_resolved_config_that_config_reads_back(
        tiny_raw, tiny_training_config, cpu_execution):
    config = tiny_training_config(nepochs=1, n_subsample=20)
    execution = cpu_execution(logger="none", enable_checkpointing=False, seed=9)
    train(tiny_raw, None, config, execution, write_bundle=False)
    values = read_config_file(config.output_dir / CONFIG_FILENAME,
                              ("model", "training", "execution"))
    assert ModelConfig(**values["model"]) == config.model
    assert TrainingConfig(model=config.model, **values["training"]) == config
    assert ExecutionConfig(**values["execution"]) == execution


# ------------------------------------------------------------- the seeds' model files
def _module() -> PtychoPINNModule:
    tc = TrainingConfig(model=ModelConfig(n_filters_scale=1))
    return PtychoPINNModule(tc.model.to_dict(), tc.to_dict(), ExecutionConfig().to_dict(),
                            intensity_scale=2.0, input_scale=0.5)


@pytest.mark.parametrize("name", ["wts.pt", "model.pt"])
def test_model_directory_lookup_tries_the_seeds_weight_files(name, tmp_path):
    module = _module()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               tmp_path / name)
    assert inf.resolve_model_path(tmp_path) == tmp_path / name
    loaded = inf.load_model(tmp_path)
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)


def test_a_pickled_weight_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, tmp_path / "wts.pt")
    with pytest.raises(BundleError, match="refused"):
        inf.load_model(tmp_path)
    assert not marker.exists()


# --------------------------------------------------------------- inference progress bar
def test_inference_shows_a_progress_bar_over_the_groups_unless_quiet(tiny_raw, capsys):
    tc = TrainingConfig(model=ModelConfig(n_filters_scale=1), batch_size=8)
    module = PtychoPINNModule(tc.model.to_dict(), tc.to_dict(), ExecutionConfig().to_dict(),
                              intensity_scale=2.0, input_scale=0.5)
    model = inf.LoadedModel(module, tc.model, tc, ExecutionConfig(), Path("m"), {})
    inf.reconstruct(model, tiny_raw, InferenceConfig(), ExecutionConfig(accelerator="cpu"))
    err = capsys.readouterr().err
    assert "reconstructing" in err and "/36" in err and "group/s" in err
    inf.reconstruct(model, tiny_raw, InferenceConfig(),
                    ExecutionConfig(accelerator="cpu", enable_progress_bar=False))
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------- third-party noise
def test_lightning_adverts_and_pytree_warning_are_filtered_narrowly(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    silence_third_party_noise()
    silence_third_party_noise()  # idempotent
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert "GPU available: False, used: False" in messages
    assert not any("Tip" in m for m in messages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        module = "lightning.pytorch.utilities._pytree"
        text = ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
                "TreeSpec) and treespec.is_leaf()` instead.")
        warnings.warn_explicit(text, FutureWarning, "_pytree.py", 21, module=module)
        warnings.warn_explicit("something else", FutureWarning, "_pytree.py", 22,
                               module=module)
        warnings.warn_explicit(text, FutureWarning, "user.py", 1, module="user_code")
    assert [str(w.message) for w in caught] == ["something else", text]


def test_a_training_run_emits_no_pytree_warning(tiny_raw, tiny_training_config, cpu_execution):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_raw, None, tiny_training_config(nepochs=1),
              cpu_execution(logger="none", enable_checkpointing=False), write_bundle=False)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
