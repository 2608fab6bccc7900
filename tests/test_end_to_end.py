"""End to end on the committed fixture: train -> save -> load -> infer, once through the
command lines (separate processes) and once from Python.

The command-line run also proves that a bundle loaded in a fresh process reconstructs
bit for bit what this process reconstructs from the same bundle (CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.cli import infer as infer_cli
from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn_torch import inference as inf
from ptychopinn_torch.bundle import BUNDLE_FILENAME, read_bundle
from ptychopinn_torch.train import train
from ptychopinn_torch.trainer import CHECKPOINT_DIRNAME, LAST_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "minimal_dataset_v1.npz"
CPU = ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False)
# What the command-line inference below uses, for the in-process comparison.
CLI_INFERENCE_BATCH = 16


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=600)
    assert proc.returncode == 0, f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def raw() -> RawData:
    return RawData.from_file(FIXTURE)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """python -m ptychopinn_torch.train, then the ptychopinn-inference console script."""
    root = tmp_path_factory.mktemp("cli")
    train_dir, infer_dir = root / "train", root / "infer"
    trained = _run([
        sys.executable, "-m", "ptychopinn_torch.train",
        "--train_data_file", FIXTURE, "--test_data_file", FIXTURE, "--output_dir", train_dir,
        "--max_epochs", "1", "--n_images", "16", "--gridsize", "2", "--batch_size", "8",
        "--accelerator", "cpu", "--learning-rate", "1e-3", "--disable_mlflow", "--quiet",
    ], cwd=root)
    script = shutil.which("ptychopinn-inference")
    assert script is not None, "console script ptychopinn-inference is not installed " \
                               "(pip install -e .)"
    inferred = _run([
        script, "--model_path", train_dir, "--test_data", FIXTURE, "--output_dir", infer_dir,
        "--device", "cpu", "--inference-batch-size", str(CLI_INFERENCE_BATCH),
    ], cwd=root)
    return {"train_dir": train_dir, "infer_dir": infer_dir, "train": trained,
            "infer": inferred}


@pytest.mark.slow  # two fresh interpreters: ~20-40 s on 2 cores
def test_cli_training_prints_bundle_path_and_sha256(cli_run):
    bundle = cli_run["train_dir"] / BUNDLE_FILENAME
    lines = cli_run["train"].stdout.strip().splitlines()
    assert lines[-2:] == [
        f"bundle_path: {bundle}",
        f"bundle_sha256: {hashlib.sha256(bundle.read_bytes()).hexdigest()}",
    ]
    contents = read_bundle(bundle)
    assert contents.configs["model"]["gridsize"] == 2
    assert contents.configs["training"]["n_groups"] == 16
    assert contents.configs["execution"]["logger"] == "none"  # from --disable_mlflow
    assert contents.training_summary["epochs_completed"] == 1
    assert np.isfinite(contents.training_summary["final_train_loss"])
    # --disable_mlflow is deprecated (visible on the command line) and disables logging.
    assert "DeprecationWarning" in cli_run["train"].stderr
    assert "--disable_mlflow" in cli_run["train"].stderr
    assert not (cli_run["train_dir"] / "lightning_logs").exists()
    assert (cli_run["train_dir"] / CHECKPOINT_DIRNAME / LAST_CHECKPOINT).is_file()


@pytest.mark.slow  # two fresh interpreters: ~20-40 s on 2 cores
def test_cli_inference_writes_every_output(cli_run):
    out = cli_run["infer_dir"]
    for name in ("reconstructed_amplitude.png", "reconstructed_phase.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024
    for key in ("amplitude_png", "phase_png", "npz", "metrics"):
        assert f"{key}: " in cli_run["infer"].stdout
    assert "--device is deprecated" in cli_run["infer"].stderr
    with np.load(out / "reconstruction.npz", allow_pickle=False) as saved:
        obj = saved["object"]
        configs = json.loads(str(saved["configs_json"]))
        assert obj.dtype == np.complex64 and obj.ndim == 2
        assert np.isfinite(obj).all() and np.abs(obj[saved["coverage"]]).max() > 0
        assert saved["origin_px"].shape == (2,)
    bundle = read_bundle(cli_run["train_dir"] / BUNDLE_FILENAME)
    assert configs["model"] == bundle.configs["model"]
    assert configs["training"] == bundle.configs["training"]
    assert configs["inference"]["test_data_file"] == str(FIXTURE)
    assert configs["execution"]["accelerator"] == "cpu"  # --device cpu
    assert configs["execution"]["inference_batch_size"] == CLI_INFERENCE_BATCH
    assert configs["model_source"] == str(cli_run["train_dir"] / BUNDLE_FILENAME)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("amplitude_ssim", "phase_ssim", "amplitude_psnr_db", "phase_psnr_db"):
        assert np.isfinite(metrics[key])
    assert -1 <= metrics["amplitude_ssim"] <= 1


@pytest.mark.slow  # two fresh interpreters: ~20-40 s on 2 cores
def test_fresh_process_reconstruction_is_bit_identical(cli_run, raw):
    model = inf.load_model(cli_run["train_dir"])
    recon = inf.reconstruct(model, raw, InferenceConfig(),
                            ExecutionConfig(accelerator="cpu",
                                            inference_batch_size=CLI_INFERENCE_BATCH))
    with np.load(cli_run["infer_dir"] / "reconstruction.npz", allow_pickle=False) as saved:
        assert np.array_equal(saved["object"], recon.object)
        assert tuple(saved["origin_px"]) == recon.origin_px
        assert np.array_equal(saved["coverage"], recon.coverage)


@pytest.mark.slow  # two fresh interpreters: ~20-40 s on 2 cores
def test_last_checkpoint_and_bundle_hold_the_same_model(cli_run, raw):
    cfg, ex = InferenceConfig(n_groups=8), ExecutionConfig(accelerator="cpu")
    from_bundle = inf.reconstruct(inf.load_model(cli_run["train_dir"] / BUNDLE_FILENAME),
                                  raw, cfg, ex)
    ckpt_model = inf.load_model(cli_run["train_dir"] / CHECKPOINT_DIRNAME / LAST_CHECKPOINT)
    assert ckpt_model.model_config.gridsize == 2
    assert np.array_equal(inf.reconstruct(ckpt_model, raw, cfg, ex).object, from_bundle.object)


# ------------------------------------------------------------------------- Python path
@pytest.fixture(scope="module")
def python_run(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("py")
    config = TrainingConfig(model=ModelConfig(N=64, gridsize=1, n_filters_scale=1),
                            n_groups=16, batch_size=8, nepochs=2, output_dir=root / "train")
    result = train(raw, None, config, CPU.replace(enable_checkpointing=False))
    return root, config, result


def test_python_train_save_load_infer(python_run, raw):
    root, config, result = python_run
    assert result.bundle_path == root / "train" / BUNDLE_FILENAME
    assert len(result.history["train_loss"]) == 2
    assert np.isfinite(result.history["train_loss"]).all()
    model = inf.load_model(result.bundle_path)
    assert model.model_config == config.model and model.training_config == config
    recon, paths = inf.run_inference(
        InferenceConfig(model_path=result.bundle_path, test_data_file=FIXTURE,
                        output_dir=root / "infer", stitch_weighting="probe"), CPU)
    assert set(paths) == {"amplitude_png", "phase_png", "npz", "metrics", "config"}
    assert paths["config"] == root / "infer" / "resolved_config.yaml"
    for key in ("amplitude_png", "phase_png"):
        assert paths[key].stat().st_size > 1024
    assert recon.n_groups == raw.n_positions and recon.coverage.all()
    # The bundle holds exactly the trained weights: same result as the in-memory model.
    direct = inf.reconstruct(inf.loaded_model_from_training(result), raw,
                             InferenceConfig(stitch_weighting="probe"), CPU)
    assert np.array_equal(direct.object, recon.object)
    with np.load(paths["npz"]) as saved:
        assert np.array_equal(saved["object"], recon.object)
        assert json.loads(str(saved["configs_json"]))["inference"]["stitch_weighting"] == "probe"


def test_data_without_object_guess_gives_no_metrics(python_run, raw, tmp_path):
    _, _, result = python_run
    unknown = RawData(diffraction=raw.diffraction, xcoords=raw.xcoords, ycoords=raw.ycoords,
                      probe_guess=raw.probe_guess)
    _, paths = inf.run_inference(InferenceConfig(output_dir=tmp_path, n_groups=8), CPU,
                                 data=unknown, model=inf.load_model(result.bundle_path))
    assert "metrics" not in paths and not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "reconstruction.npz").is_file()


def test_inference_cli_rejects_data_of_another_pattern_size(python_run, tmp_path, capsys):
    _, _, result = python_run
    small = RawData(diffraction=np.ones((8, 32, 32), np.float32), xcoords=np.arange(8.0) * 4,
                    ycoords=np.zeros(8), probe_guess=np.ones((32, 32), np.complex64))
    small.save(tmp_path / "n32.npz")
    with pytest.raises(SystemExit) as info:
        infer_cli.main(["--model_path", str(result.bundle_path), "--test_data",
                  str(tmp_path / "n32.npz"), "--output_dir", str(tmp_path / "out"),
                  "--accelerator", "cpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "32x32" in err[0] and "N=64" in err[0]
    assert not (tmp_path / "out").exists()
