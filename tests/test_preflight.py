"""The checks behind specs/errors.md, one function at a time: scan checks, counts
detection, memory estimates, output locations, the lock, temporaries of killed writers,
--overwrite and resume details, metrics that cannot be computed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from ptychopinn import resources
from ptychopinn._io import (
    atomic_write_text,
    check_output_dir,
    existing_outputs,
    output_dir_lock,
)
from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig
from ptychopinn.data import (
    DataContractError,
    check_photon_scale,
    check_positions,
    counts_suspicion,
    counts_to_amplitude,
)
from ptychopinn.errors import InputError, InputWarning, OutputLocationError, RuntimeFault
from ptychopinn.simulate import SimulationError, simulate_dataset, simulation_memory_bytes
from ptychopinn_torch import preflight
from ptychopinn_torch.train import train


# ------------------------------------------------------------------ error kinds
def test_every_user_error_is_one_of_two_kinds():
    from ptychopinn.config import ConfigError
    from ptychopinn.errors import SaveError
    from ptychopinn_torch.bundle import BundleError
    from ptychopinn_torch.module import NonFiniteLossError
    from ptychopinn_torch.trainer import TrainingSetupError

    for cls in (ConfigError, DataContractError, BundleError, TrainingSetupError,
                SimulationError, OutputLocationError, preflight.ResourceError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError)
    for cls in (NonFiniteLossError, SaveError):
        assert issubclass(cls, RuntimeFault) and issubclass(cls, RuntimeError)


# ------------------------------------------------------------------ counts
def test_counts_are_told_from_amplitudes():
    rng = np.random.default_rng(0)
    counts = rng.poisson(30.0, size=(4, 16, 16)).astype(np.float32)
    assert "not perfect squares" in counts_suspicion(counts)
    assert counts_suspicion(counts_to_amplitude(counts)) is None
    # Only 0 and 1 (too few photons to tell) and empty patterns are not flagged.
    assert counts_suspicion(rng.integers(0, 2, size=(4, 16, 16)).astype(np.float32)) is None
    assert counts_suspicion(np.zeros((2, 4, 4), np.float32)) is None
    # Large whole numbers in float32 say nothing (every float32 above 2**24 is whole).
    assert counts_suspicion(counts_to_amplitude(counts) * np.float32(1e30)) is None


def test_photon_scale_range_and_zero():
    check_photon_scale(1e5, "x", "fix")
    with pytest.raises(DataContractError, match="outside the range .* fix it"):
        check_photon_scale(1e20, "the data", "fix it")
    with pytest.raises(DataContractError, match="holds no photons"):
        check_photon_scale(0.0, "the data", "fix it")


def test_nphotons_far_from_the_data_warns(tiny_raw):
    held = float((tiny_raw.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight.warn_if_photons_disagree(tiny_raw, None, "training")
        preflight.warn_if_photons_disagree(tiny_raw, held * 10, "training")
    # counts given as amplitude hold about counts**2 photons: far above the true count
    with pytest.warns(InputWarning, match=r"--nphotons is .* scaled 1e\+04x away"):
        preflight.warn_if_photons_disagree(tiny_raw, held / 1e4, "training")


# ------------------------------------------------------------------ positions
def test_identical_positions_warn_with_gridsize_1(tiny_raw):
    raw = dataclasses.replace(tiny_raw, xcoords=np.full(36, 50.0), ycoords=np.full(36, 50.0))
    with pytest.warns(InputWarning, match="all 36 training scan positions are identical"):
        check_positions(raw, 1, "training")
    with pytest.raises(DataContractError, match="only 1 distinct"):
        check_positions(raw, 2, "training")


def test_positions_inside_the_object_pass_and_one_pixel_is_tolerated(tiny_raw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_positions(tiny_raw, 2, "training")  # simulated scans lie inside
    height, width = tiny_raw.object_guess.shape
    x = tiny_raw.xcoords.copy()
    x[0] = width - 32 + 1  # the patch reaches one pixel beyond the edge: tolerated
    check_positions(dataclasses.replace(tiny_raw, xcoords=x), 1, "training")
    x[0] = width - 32 + 2
    with pytest.raises(DataContractError, match="1 of the 36 training scan positions"):
        check_positions(dataclasses.replace(tiny_raw, xcoords=x), 1, "training")


# ------------------------------------------------------------------ memory
def test_grouped_data_larger_than_memory_is_refused(tiny_raw, monkeypatch, tmp_path):
    from ptychopinn.config import TrainingConfig

    config = TrainingConfig(model=ModelConfig(N=64, gridsize=2, n_filters_scale=1),
                            output_dir=tmp_path / "run")
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(preflight.ResourceError,
                       match="grouping the training data needs about .* lower --n_images"):
        preflight.check_training_resources(tiny_raw, None, config, ExecutionConfig("cpu"))


def test_network_estimate_grows_with_filters():
    small = preflight._network_bytes(ModelConfig(N=64, n_filters_scale=1), 4)
    large = preflight._network_bytes(ModelConfig(N=64, n_filters_scale=2), 4)
    assert 0 < small[0] < large[0] and 0 < small[1] < large[1]


@pytest.mark.parametrize("generator", ["unet_lite", "unet", "cnn"])
def test_network_estimate_on_the_cpu_equals_the_meta_trace(monkeypatch, generator):
    model = ModelConfig(N=64, n_filters_scale=1, generator=generator)
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    on_cpu = preflight._network_bytes(model, 16)  # small network: one real group
    assert torch.equal(torch.rand(3), expected_draw)  # the random stream is untouched
    monkeypatch.setattr(preflight, "REAL_TRACE_MAX_PARAMETERS", 0)  # force the meta trace
    on_meta = preflight._network_bytes(model, 16)
    assert on_cpu == on_meta and on_cpu[1] > 0


def test_simulation_memory_is_estimated_without_building_the_scan(monkeypatch):
    needed = simulation_memory_bytes("spiral", 10**9, 64, 8.0)
    assert needed > 10**9 * 64 * 64 * 90
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 1 << 30)
    with pytest.raises(SimulationError, match="simulating 100000 patterns .* needs about"):
        simulate_dataset(n_positions=100_000)
    with pytest.raises(SimulationError, match="nphotons=1e\\+20 .* outside the range"):
        simulate_dataset(n_positions=4, nphotons=1e20)


# ------------------------------------------------------------------ output locations
def test_existing_outputs_ignore_the_lock(tmp_path):
    assert existing_outputs(tmp_path / "absent") == []
    with output_dir_lock(tmp_path, "training"):
        assert existing_outputs(tmp_path) == []
        (tmp_path / "checkpoints").mkdir()
        assert existing_outputs(tmp_path) == ["checkpoints/"]


def test_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
    with output_dir_lock(tmp_path, "inference"):
        with pytest.raises(OutputLocationError, match=rf"in use by another inference "
                                                      rf"\(process {os.getpid()} on "):
            with output_dir_lock(tmp_path, "training"):
                pass
    with output_dir_lock(tmp_path, "training"):  # released: free again
        pass
    assert not (tmp_path / ".ptychopinn.lock.json").exists()


def test_check_output_dir_refuses_a_file_and_creates_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputLocationError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputLocationError, match="lies under"):
        check_output_dir(tmp_path / "f" / "deeper" / "run")
    check_output_dir(tmp_path / "new" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_temporaries_of_live_writers_are_kept_dead_ones_removed(tmp_path):
    from ptychopinn._io import _HOST

    target = tmp_path / "out.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_tmp = tmp_path / f".out.json.{_HOST}-{dead.stdout.strip()}.abc123.tmp.json"
    live_tmp = tmp_path / f".out.json.{_HOST}-{os.getpid()}.xyz789.tmp.json"
    other_host = tmp_path / ".out.json.elsewhere-1.abc.tmp.json"
    for path in (dead_tmp, live_tmp, other_host):
        path.write_text("partial")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert not dead_tmp.exists()
    assert live_tmp.exists() and other_host.exists()


# ------------------------------------------------------------------ training: overwrite, resume
@pytest.fixture
def tiny_run(tiny_training_config, cpu_execution):
    def run(raw, **kwargs):
        config = tiny_training_config(nepochs=kwargs.pop("nepochs", 1),
                                      validation_fraction=kwargs.pop("validation_fraction", 0.0))
        return train(raw, None, config, cpu_execution(logger="none"), **kwargs)
    return run


def test_overwrite_deletes_the_old_checkpoints_only(tiny_raw, tiny_run):
    first = tiny_run(tiny_raw)
    stale = first.output_dir / "checkpoints" / "epoch099-train_loss1.ckpt"
    stale.write_bytes(b"from the earlier run")
    notes = first.output_dir / "notes.txt"
    notes.write_text("mine")
    second = tiny_run(tiny_raw, overwrite=True)
    assert not stale.exists() and (second.output_dir / "checkpoints" / "last.ckpt").exists()
    assert notes.read_text() == "mine"
    with pytest.raises(InputError, match="give one of them"):
        tiny_run(tiny_raw, overwrite=True, resume=True)


def test_resume_with_validation_keeps_every_epoch_and_the_complete_run_alone(
    tiny_raw, tiny_run
):
    first = tiny_run(tiny_raw, nepochs=2, validation_fraction=0.25)
    assert len(first.summary["val_loss_history"]) == 2
    resumed = tiny_run(tiny_raw, nepochs=3, validation_fraction=0.25, resume=True)
    assert len(resumed.summary["train_loss_history"]) == 3
    assert len(resumed.summary["val_loss_history"]) == 3
    assert resumed.summary["train_loss_history"][:2] == first.summary["train_loss_history"]
    bundle = resumed.bundle_path
    stamp = bundle.stat().st_mtime_ns
    again = tiny_run(tiny_raw, nepochs=3, validation_fraction=0.25, resume=True)
    assert again.already_complete and again.training_time_s == 0.0
    assert bundle.stat().st_mtime_ns == stamp
    assert again.summary["train_loss_history"] == resumed.summary["train_loss_history"]


def test_complete_run_without_its_bundle_gets_the_bundle_without_training(tiny_raw, tiny_run):
    first = tiny_run(tiny_raw, nepochs=1)
    first.bundle_path.unlink()
    again = tiny_run(tiny_raw, nepochs=1, resume=True)
    assert not again.already_complete and again.bundle_path.is_file()
    assert again.module.trainer.global_step == first.module.trainer.global_step
    assert again.summary["train_loss_history"] == first.summary["train_loss_history"]


# ------------------------------------------------------------------ inference: metrics
def test_metrics_that_cannot_be_computed_say_why_and_stale_ones_go(
    tiny_raw, tiny_test_raw, tiny_run, tmp_path, caplog
):
    from ptychopinn_torch.inference import load_model, run_inference

    model = load_model(tiny_run(tiny_raw).bundle_path)
    out = tmp_path / "recon"
    _, paths = run_inference(InferenceConfig(output_dir=out), ExecutionConfig("cpu"),
                             data=tiny_test_raw, model=model)
    assert paths["metrics"].is_file()
    # Same directory, data without objectGuess: the earlier metrics.json would lie.
    small = dataclasses.replace(tiny_test_raw, object_guess=None)
    with caplog.at_level("INFO", logger="ptychopinn_torch"):
        _, paths = run_inference(InferenceConfig(output_dir=out), ExecutionConfig("cpu"),
                                 data=small, model=model)
    assert "metrics" not in paths and not (out / "metrics.json").exists()
    assert "no metrics.json: the test data has no objectGuess" in caplog.text
