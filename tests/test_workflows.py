"""Backend dispatcher ``ptychopinn.workflows`` (specs/workflows.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ptychopinn import workflows
from ptychopinn.config import (
    ConfigError,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)
from ptychopinn.data import RawData

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "minimal_dataset_v1.npz"
CPU = ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False,
                      enable_checkpointing=False)


# ------------------------------------------------------------------- unknown backends
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "PyTorch", ""])
@pytest.mark.parametrize("part", ["train", "inference"])
def test_backend_resolver_rejects_unknown_backends(backend, part):
    with pytest.raises(ValueError, match="pytorch") as info:
        workflows._backend(backend, part)
    assert not isinstance(info.value, RuntimeError)
    if backend == "tensorflow":
        assert "no TensorFlow backend" in str(info.value)
    else:
        assert repr(backend) in str(info.value)


def test_pytorch_backend_resolves_to_the_torch_modules():
    from ptychopinn_torch import inference, train

    assert workflows._backend("pytorch", "train") is train
    assert workflows._backend("pytorch", "inference") is inference


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_every_entry_point_checks_the_backend_first(backend, tmp_path):
    # Objects that carry only a backend: the check must come before any use of the data.
    config = SimpleNamespace(backend=backend)
    with pytest.raises(ValueError, match=backend if backend == "jax" else "TensorFlow"):
        workflows.train_cdi_model_with_backend(None, None, config)
    with pytest.raises(ValueError):
        workflows.run_cdi_example_with_backend(None, None, config, do_stitching=True)
    with pytest.raises(ValueError):
        workflows.reconstruct_with_backend(None, None, config)
    with pytest.raises(ValueError) as info:
        workflows.load_inference_bundle_with_backend(tmp_path / "missing.zip", backend=backend)
    assert "missing.zip" not in str(info.value)


def test_configs_themselves_reject_tensorflow():
    with pytest.raises(ConfigError, match="TensorFlow"):
        TrainingConfig(backend="tensorflow")
    with pytest.raises(ConfigError, match="TensorFlow"):
        InferenceConfig(backend="tensorflow")


# ------------------------------------------------------------------ torch not importable
BLOCKED_TORCH = textwrap.dedent("""
    import json, sys
    import ptychopinn.config, ptychopinn.data, ptychopinn.grouping, ptychopinn.workflows
    report = {"torch_imported_by_core": "torch" in sys.modules}
    sys.modules["torch"] = None  # as if torch were not installed
    from ptychopinn import workflows
    from ptychopinn.config import TrainingConfig
    calls = {
        "train": lambda: workflows.train_cdi_model_with_backend(None, None, TrainingConfig()),
        "run": lambda: workflows.run_cdi_example_with_backend(None, None, TrainingConfig()),
        "load": lambda: workflows.load_inference_bundle_with_backend("model.zip"),
        "reconstruct": lambda: workflows.reconstruct_with_backend(None, None),
    }
    for name, call in calls.items():
        try:
            call()
            report[name] = ["no error"]
        except BaseException as exc:
            report[name] = [type(exc).__name__, str(exc), type(exc.__cause__).__name__]
    try:
        workflows._backend("jax", "train")
    except BaseException as exc:
        report["jax"] = [type(exc).__name__]
    print(json.dumps(report))
""")


def test_missing_torch_is_a_runtime_error_with_the_install_command():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", BLOCKED_TORCH], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch_imported_by_core"] is False
    for name in ("train", "run", "load", "reconstruct"):
        kind, message, cause = report[name]
        assert kind == "BackendUnavailableError", report[name]  # a RuntimeError
        assert "pip install 'torch>=2.2' 'lightning>=2.2'" in message and "PyTorch" in message
        assert cause in ("ImportError", "ModuleNotFoundError")  # no silent fallback
    # An unknown backend is still a ValueError, even without torch.
    assert report["jax"] == ["ValueError"]


# ------------------------------------------------------------------- routing (stubbed)
def test_run_without_stitching_trains_only(monkeypatch):
    from ptychopinn_torch import inference, train

    seen = {}

    def fake_train(train_data, test_data, config, execution_config, epoch_callback=None,
                   resume=False):
        seen["args"] = (train_data, test_data, config, execution_config, epoch_callback)
        return SimpleNamespace(history={"train_loss": [1.0]}, bundle_path=Path("b.zip"),
                               module="trained module")

    def no_reconstruct(*args, **kwargs):
        raise AssertionError("reconstruct ran without do_stitching")

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(inference, "reconstruct", no_reconstruct)
    config, ex = TrainingConfig(), ExecutionConfig(accelerator="cpu")
    amp, phase, results = workflows.run_cdi_example_with_backend("tr", "te", config, ex)
    assert amp is None and phase is None
    assert seen["args"] == ("tr", "te", config, ex, None)
    assert results["backend"] == "pytorch"
    assert results["history"] == {"train_loss": [1.0]}
    assert results["bundle_path"] == Path("b.zip")
    assert results["training_result"].bundle_path == Path("b.zip")
    assert results["models"] == {"lightning_module": "trained module"}  # seed 001's key
    assert "reconstruction" not in results


def test_train_forwards_the_epoch_callback(monkeypatch):
    from ptychopinn_torch import train

    seen = {}
    monkeypatch.setattr(train, "train", lambda *a, **k: seen.update(args=a, kwargs=k) or "R")

    def callback(report):
        return True

    config = TrainingConfig()
    assert workflows.train_cdi_model_with_backend("a", None, config, CPU, callback) == "R"
    assert seen["args"] == ("a", None, config, CPU)
    assert seen["kwargs"] == {"epoch_callback": callback, "resume": False}


def test_reconstruct_forwards_configs_and_progress(monkeypatch):
    from ptychopinn_torch import inference

    seen = {}
    monkeypatch.setattr(inference, "reconstruct",
                        lambda *a, **k: seen.update(args=a, kwargs=k) or "recon")
    cfg = InferenceConfig(flip_x=True)
    progress = print
    assert workflows.reconstruct_with_backend("m", "d", cfg, CPU, progress) == "recon"
    assert seen["args"] == ("m", "d", cfg, CPU)
    assert seen["kwargs"] == {"progress_callback": progress}


# ------------------------------------------------------------------ routing (real, tiny)
@pytest.fixture(scope="module")
def raw() -> RawData:
    return RawData.from_file(FIXTURE)


@pytest.fixture(scope="module")
def stitched_run(raw, tmp_path_factory):
    test = RawData(diffraction=raw.diffraction[:32], xcoords=raw.xcoords[:32],
                   ycoords=raw.ycoords[:32], probe_guess=raw.probe_guess,
                   object_guess=raw.object_guess)
    config = TrainingConfig(model=ModelConfig(N=64, gridsize=1, n_filters_scale=1),
                            n_groups=16, batch_size=8, nepochs=1,
                            output_dir=tmp_path_factory.mktemp("wf"))
    return test, config, workflows.run_cdi_example_with_backend(raw, test, config, CPU,
                                                                do_stitching=True)


def test_run_with_stitching_returns_amplitude_phase_results(stitched_run):
    from ptychopinn_torch.inference import Reconstruction
    from ptychopinn_torch.train import TrainingResult

    test, config, (amplitude, phase, results) = stitched_run
    assert results["backend"] == "pytorch"
    result = results["training_result"]
    assert isinstance(result, TrainingResult)
    assert results["history"] is result.history and len(result.history["train_loss"]) == 1
    assert results["bundle_path"] == Path(config.output_dir) / "ptychopinn_model.zip"
    assert results["bundle_path"].is_file()
    recon = results["reconstruction"]
    assert isinstance(recon, Reconstruction)
    # The test scan (32 positions, one group each) is what gets reconstructed.
    assert recon.n_groups == test.n_positions
    assert amplitude.dtype == np.float32 and phase.dtype == np.float32
    assert np.array_equal(amplitude, np.abs(recon.object))
    assert np.array_equal(phase, np.angle(recon.object))
    assert np.isfinite(amplitude).all() and amplitude[recon.coverage].max() > 0


def test_loaded_bundle_reconstructs_like_the_run(stitched_run):
    from ptychopinn_torch.inference import LoadedModel

    test, config, (_, _, results) = stitched_run
    model = workflows.load_inference_bundle_with_backend(Path(config.output_dir))
    assert isinstance(model, LoadedModel)
    assert model.model_config == config.model and model.training_config == config
    assert model.execution_config == CPU and model.N == 64
    assert model.probe.shape == (64, 64) and model.probe.dtype == np.complex64
    recon = workflows.reconstruct_with_backend(model, test, InferenceConfig(), CPU)
    assert np.array_equal(recon.object, results["reconstruction"].object)
    assert recon.origin_px == results["reconstruction"].origin_px
