"""Inference workflow (ptychopinn_torch.inference): grouping, batching, stitching options,
outputs, model loading and refusal of pickled payloads.

Most tests replace the network by a stand-in whose "prediction" for each scan position is a
prescribed patch (each diffraction pattern carries its position's index as a one-hot
pixel), so the stitched object can be compared with an independent numpy stitch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ptychopinn.cli import infer as infer_cli
from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data import DataContractError, RawData
from ptychopinn_torch import inference as inf
from ptychopinn_torch.bundle import BUNDLE_FILENAME, BundleError
from ptychopinn_torch.module import PtychoPINNModule
from ptychopinn_torch.stitching import stitch_patches
from ptychopinn_torch.train import save_model_bundle
from ptychopinn_torch.trainer import CHECKPOINT_DIRNAME, LAST_CHECKPOINT

FIXTURE = Path(__file__).parent / "fixtures" / "minimal_dataset_v1.npz"
N = 64
CPU = ExecutionConfig(accelerator="cpu")


@pytest.fixture(scope="module")
def fixture_raw() -> RawData:
    return RawData.from_file(FIXTURE)


@pytest.fixture(scope="module")
def id_data(fixture_raw) -> RawData:
    """The fixture's scan with pattern k = one-hot at flat pixel k (identifies position k)."""
    n = fixture_raw.n_positions
    diffraction = np.zeros((n, N, N), dtype=np.float32)
    diffraction.reshape(n, -1)[np.arange(n), np.arange(n)] = 1.0
    return RawData(diffraction=diffraction, xcoords=fixture_raw.xcoords,
                   ycoords=fixture_raw.ycoords, probe_guess=fixture_raw.probe_guess,
                   object_guess=fixture_raw.object_guess)


def true_patches(raw: RawData) -> np.ndarray:
    """Object patches at each (integer) position, by conventions.md patch geometry."""
    out = []
    for x, y in zip(raw.xcoords.astype(int), raw.ycoords.astype(int), strict=True):
        out.append(raw.object_guess[y - N // 2:y + N // 2, x - N // 2:x + N // 2])
    return np.stack(out).astype(np.complex64)



def stitch_only_config(**changes) -> InferenceConfig:
    """The network's stitched image alone, plainly averaged: what these tests check against
    an independent numpy stitcher (refinement has its own tests, test_refine.py)."""
    return InferenceConfig(**{"refine_iterations": 0, "stitch_weighting": "uniform", **changes})


class IdNetwork:
    """Stands in for PtychoPINNModule: returns ``patches[k]`` for the pattern of position k
    and records every call (member indices, local offsets) and device move."""

    def __init__(self, patches: np.ndarray, probe: np.ndarray):
        self.patches = torch.from_numpy(patches)
        self.forward_model = SimpleNamespace(probe=torch.from_numpy(probe.astype(np.complex64)))
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.devices: list[torch.device] = []

    def to(self, device):
        self.devices.append(torch.device(device))
        return self

    def eval(self):
        return self

    def predict_patches(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        ids = x.reshape(B, C, -1).argmax(-1)
        self.calls.append((ids.numpy().copy(), offsets.numpy().copy()))
        return self.patches[ids]


def fake_model(patches, probe, gridsize=1, batch_size=8) -> tuple[inf.LoadedModel, IdNetwork]:
    net = IdNetwork(patches, probe)
    mc = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1)
    tc = TrainingConfig(model=mc, batch_size=batch_size, neighbor_count=max(4, gridsize**2))
    model = inf.LoadedModel(module=net, model_config=mc, training_config=tc,
                            execution_config=ExecutionConfig(), source_path=Path("fake"),
                            training_summary={})
    return model, net


# ------------------------------------------------------------ independent numpy stitcher
def mirror(a: np.ndarray, axis: int) -> np.ndarray:
    """Mirror about the centre pixel N//2 (even N): out[j] = in[(N - j) % N]."""
    return np.roll(np.flip(a, axis=axis), 1, axis=axis)


def transform(p: np.ndarray, flip_x: bool, flip_y: bool, transpose: bool) -> np.ndarray:
    if transpose:
        p = np.swapaxes(p, -1, -2)
    if flip_x:
        p = mirror(p, -1)
    if flip_y:
        p = mirror(p, -2)
    return p


def numpy_stitch(patches, positions, crop, weights):
    """Weighted average of the central crop x crop of each patch, integer positions (x, y)."""
    h = crop // 2
    c0 = N // 2 - h
    pos = positions.astype(int)
    xmin, ymin = pos[:, 0].min(), pos[:, 1].min()
    W = pos[:, 0].max() - xmin + crop
    H = pos[:, 1].max() - ymin + crop
    num = np.zeros((H, W), complex)
    den = np.zeros((H, W))
    for p, (x, y) in zip(patches, pos, strict=True):
        r, c = y - ymin, x - xmin
        num[r:r + crop, c:c + crop] += weights * p[c0:c0 + crop, c0:c0 + crop]
        den[r:r + crop, c:c + crop] += weights
    obj = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
    return obj, (xmin - h, ymin - h), den > 0


def weight_map(kind, probe, crop, flips):
    if kind == "uniform":
        return np.ones((crop, crop))
    c0 = N // 2 - crop // 2
    intensity = np.abs(transform(probe.astype(complex), *flips)) ** 2
    w = intensity[c0:c0 + crop, c0:c0 + crop]
    return w / w.max()


def random_patches(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, (n, N, N)) *
            np.exp(1j * rng.uniform(-1, 1, (n, N, N)))).astype(np.complex64)


# ------------------------------------------------------------------------------ tests
def test_perfect_patches_reproduce_the_object_at_origin_px(id_data, tmp_path):
    model, net = fake_model(true_patches(id_data), id_data.probe_guess)
    recon = inf.reconstruct(model, id_data, stitch_only_config(), CPU)
    x0, y0 = recon.origin_px
    # Raster 36..92 step 8, crop N//2 = 32: canvas starts 16 px before the first position.
    assert (x0, y0) == (20.0, 20.0)
    assert recon.object.shape == (88, 88) and recon.object.dtype == np.complex64
    assert recon.coverage.all()
    truth = id_data.object_guess[int(y0):int(y0) + 88, int(x0):int(x0) + 88]
    np.testing.assert_allclose(recon.object, truth, rtol=0, atol=1e-6)
    assert np.array_equal(recon.amplitude, np.abs(recon.object))
    assert np.array_equal(recon.phase, np.angle(recon.object))
    metrics = inf.compute_metrics(recon, id_data.object_guess)
    assert metrics["amplitude_ssim"] > 0.999 and metrics["phase_ssim"] > 0.999
    # The FRC of an exact reconstruction never crosses 1/7: "not reached", written as null.
    assert metrics["phase_frc1_7_period_px"] is None
    paths = inf.write_outputs(recon, tmp_path / "exact", {}, id_data.object_guess)
    assert json.loads(paths["metrics"].read_text())["phase_frc1_7_period_px"] is None
    assert abs(metrics["shift_dx_px"]) < 0.05 and abs(metrics["shift_dy_px"]) < 0.05
    assert net.devices == [torch.device("cpu")]


STITCH_CASES = [
    # weighting, flip_x, flip_y, transpose, crop
    ("uniform", False, False, False, None),
    ("probe", False, False, False, None),
    ("uniform", True, False, False, None),
    ("uniform", False, True, False, None),
    ("uniform", False, False, True, None),
    ("probe", True, True, True, 48),
    ("uniform", False, False, False, 64),
]


@pytest.mark.parametrize(("weighting", "flip_x", "flip_y", "transpose", "crop"), STITCH_CASES)
def test_stitching_options_match_numpy(id_data, weighting, flip_x, flip_y, transpose, crop):
    patches = random_patches(id_data.n_positions)
    model, net = fake_model(patches, id_data.probe_guess)
    cfg = stitch_only_config(stitch_weighting=weighting, stitch_align_phase=False,
                          flip_x=flip_x, flip_y=flip_y,
                          transpose=transpose, stitch_crop_px=crop)
    recon = inf.reconstruct(model, id_data, cfg, CPU)
    ids = np.concatenate([c[0] for c in net.calls]).ravel()
    assert sorted(ids) == list(range(id_data.n_positions))  # one group per position
    positions = np.stack([id_data.xcoords, id_data.ycoords], -1)[ids]
    side = crop or N // 2
    flips = (flip_x, flip_y, transpose)
    expected, origin, covered = numpy_stitch(
        transform(patches[ids], *flips), positions, side,
        weight_map(weighting, id_data.probe_guess, side, flips))
    assert recon.origin_px == origin
    assert np.array_equal(recon.coverage, covered)
    np.testing.assert_allclose(recon.object, expected, rtol=1e-5, atol=1e-6)


def test_probe_weighting_differs_from_uniform(id_data):
    # Constant patches make the weighting visible: a plain average vs a probe-weighted one.
    n = id_data.n_positions
    patches = (np.arange(1, n + 1, dtype=np.complex64)[:, None, None]
               * np.ones((1, N, N), np.complex64))
    recons = {}
    for kind in ("uniform", "probe"):
        model, _ = fake_model(patches, id_data.probe_guess)
        recons[kind] = inf.reconstruct(model, id_data, stitch_only_config(stitch_weighting=kind),
                                       CPU).object
    assert np.abs(recons["uniform"] - recons["probe"]).max() > 0.1


@pytest.mark.parametrize(("inference_batch_size", "expected_sizes"),
                         [(None, [16] * 4), (5, [5] * 12 + [4]), (64, [64]), (100, [64])])
def test_batches_default_to_the_measured_best_not_the_training_batch_size(
        id_data, inference_batch_size, expected_sizes):
    # None: runtime.CPU_BATCH_PIXELS = 16 patterns of 64 x 64 on a CPU, whatever the
    # training batch size (8 here) was.
    model, net = fake_model(true_patches(id_data), id_data.probe_guess, batch_size=8)
    progress = []
    recon = inf.reconstruct(model, id_data, stitch_only_config(),
                            ExecutionConfig(accelerator="cpu",
                                            inference_batch_size=inference_batch_size),
                            progress_callback=lambda done, total: progress.append((done, total)))
    sizes = [c[0].shape[0] for c in net.calls]
    assert sizes == expected_sizes
    assert progress == [(int(d), 64) for d in np.cumsum(expected_sizes)]
    assert recon.n_groups == 64
    reference = inf.reconstruct(fake_model(true_patches(id_data), id_data.probe_guess)[0],
                                id_data, stitch_only_config(), CPU)
    np.testing.assert_allclose(recon.object, reference.object, rtol=1e-6, atol=1e-7)


def test_gridsize2_groups_offsets_and_stitch(id_data):
    patches = random_patches(id_data.n_positions, seed=1)
    model, net = fake_model(patches, id_data.probe_guess, gridsize=2, batch_size=16)
    recon = inf.reconstruct(model, id_data, stitch_only_config(stitch_align_phase=False), CPU)
    ids = np.concatenate([c[0] for c in net.calls])
    offsets = np.concatenate([c[1] for c in net.calls])
    assert ids.shape == (64, 4) and recon.n_groups == 64
    assert all(len(set(g)) == 4 for g in ids)
    positions = np.stack([id_data.xcoords, id_data.ycoords], -1)
    # local offset = member position minus the group centroid, (x, y)
    expected = positions[ids] - positions[ids].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(offsets, expected, atol=1e-6)
    flat = ids.ravel()
    obj, origin, covered = numpy_stitch(patches[flat], positions[flat], N // 2,
                                        np.ones((N // 2, N // 2)))
    assert recon.origin_px == origin and np.array_equal(recon.coverage, covered)
    np.testing.assert_allclose(recon.object, obj, rtol=1e-5, atol=1e-6)


def test_n_groups_limits_the_reconstruction(id_data):
    model, net = fake_model(true_patches(id_data), id_data.probe_guess)
    recon = inf.reconstruct(model, id_data, stitch_only_config(n_groups=10), CPU)
    ids = np.concatenate([c[0] for c in net.calls]).ravel()
    assert recon.n_groups == 10 and ids.size == 10 and len(set(ids)) == 10
    assert not recon.coverage.all()


def test_more_groups_than_positions_uses_every_position_once(id_data):
    model, net = fake_model(true_patches(id_data), id_data.probe_guess)
    with pytest.warns(UserWarning, match="exceeds"):
        recon = inf.reconstruct(model, id_data, stitch_only_config(n_groups=1000), CPU)
    ids = np.concatenate([c[0] for c in net.calls]).ravel()
    assert recon.n_groups == 64 and sorted(ids) == list(range(64))


def test_num_workers_give_the_same_result(id_data):
    patches = random_patches(id_data.n_positions, seed=2)
    serial = inf.reconstruct(fake_model(patches, id_data.probe_guess)[0], id_data,
                             stitch_only_config(), CPU)
    parallel = inf.reconstruct(fake_model(patches, id_data.probe_guess)[0], id_data,
                               stitch_only_config(),
                               ExecutionConfig(accelerator="cpu", num_workers=1,
                                               deterministic=False))
    assert np.array_equal(serial.object, parallel.object)


def test_inputs_are_checked_before_prediction(id_data):
    model, net = fake_model(true_patches(id_data), id_data.probe_guess)
    small = RawData(diffraction=np.ones((8, 32, 32), np.float32), xcoords=np.arange(8.0),
                    ycoords=np.zeros(8), probe_guess=np.ones((32, 32), np.complex64))
    with pytest.raises(DataContractError, match="N=64"):
        inf.reconstruct(model, small, stitch_only_config(), CPU)
    model2, net2 = fake_model(true_patches(id_data), id_data.probe_guess, gridsize=3)
    few = RawData(diffraction=id_data.diffraction[:5], xcoords=id_data.xcoords[:5],
                  ycoords=id_data.ycoords[:5], probe_guess=id_data.probe_guess)
    with pytest.raises(DataContractError, match="gridsize"):
        inf.reconstruct(model2, few, stitch_only_config(), CPU)
    assert net.calls == [] and net2.calls == []


def test_select_device():
    assert inf.select_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="TPU"):
        inf.select_device("tpu")
    if torch.cuda.is_available():
        assert inf.select_device("gpu").type == "cuda"
        assert inf.select_device("auto").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            inf.select_device("gpu")
        if not torch.backends.mps.is_available():
            assert inf.select_device("auto") == torch.device("cpu")


# ----------------------------------------------------------------------------- outputs
def test_write_outputs(id_data, tmp_path):
    model, _ = fake_model(true_patches(id_data), id_data.probe_guess)
    recon = inf.reconstruct(model, id_data, stitch_only_config(n_groups=40), CPU)
    configs = {"model": model.model_config.to_dict(), "inference": {"flip_x": False}}
    paths = inf.write_outputs(recon, tmp_path / "out", configs, id_data.object_guess)
    assert set(paths) == {"amplitude_png", "phase_png", "npz", "metrics"}
    import matplotlib.image

    for key in ("amplitude_png", "phase_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[key].stat().st_size > 1024
        image = matplotlib.image.imread(paths[key])
        # a figure with axes and a colour bar, wider than tall, many colours
        assert image.shape[1] > image.shape[0] > 200
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50
    with np.load(paths["npz"], allow_pickle=False) as saved:
        assert saved["object"].dtype == np.complex64
        assert np.array_equal(saved["object"], recon.object)
        assert np.array_equal(saved["origin_px"], np.array(recon.origin_px))
        assert np.array_equal(saved["coverage"], recon.coverage)
        assert json.loads(str(saved["configs_json"])) == json.loads(json.dumps(configs))
    metrics = json.loads(paths["metrics"].read_text())
    # 40 of 64 positions leave holes in the canvas; only covered, well-lit pixels are
    # compared, and there the reconstruction is exact.
    assert not recon.coverage.all()
    assert metrics["n_pixels"] == inf.truth_region(recon, id_data.object_guess)[1].sum()
    assert 0 < metrics["n_pixels"] < recon.coverage.sum()
    assert metrics["amplitude_psnr_db"] > 100 and metrics["phase_psnr_db"] > 100
    assert metrics["amplitude_ssim"] > 0.95
    # Without a known object there is no metrics.json.
    paths = inf.write_outputs(recon, tmp_path / "no_truth", configs, None)
    assert "metrics" not in paths and not (tmp_path / "no_truth" / "metrics.json").exists()


def test_truth_region_outside_the_object_gives_no_metrics(id_data):
    recon = inf.Reconstruction(object=np.ones((10, 10), np.complex64), origin_px=(500.0, 500.0),
                               coverage=np.ones((10, 10), bool), n_groups=1)
    assert inf.truth_region(recon, id_data.object_guess) is None
    assert inf.compute_metrics(recon, id_data.object_guess) is None


# -------------------------------------------------------------- real module and bundles
@pytest.fixture(scope="module")
def untrained(fixture_raw, tmp_path_factory):
    """A real (untrained, small) module and its bundle: no training needed here."""
    torch.manual_seed(0)
    mc = ModelConfig(N=N, gridsize=2, n_filters_scale=1)
    tc = TrainingConfig(model=mc, batch_size=4)
    module = PtychoPINNModule(model_config=mc.to_dict(), training_config=tc.to_dict(),
                              execution_config=CPU.to_dict(), intensity_scale=12.0,
                              input_scale=0.5, probe=fixture_raw.probe_guess).eval()
    path = save_model_bundle(module, tmp_path_factory.mktemp("bundle") / BUNDLE_FILENAME,
                             {"note": "untrained"})
    return module, path


def test_real_module_batching_and_bundle_round_trip(untrained, fixture_raw):
    module, path = untrained
    loaded = inf.load_model(path)
    assert loaded.model_config == ModelConfig(N=N, gridsize=2, n_filters_scale=1)
    assert loaded.training_config.batch_size == 4 and loaded.source_path == path
    assert loaded.training_summary == {"note": "untrained"}
    assert np.array_equal(loaded.probe, module.forward_model.probe.detach().numpy())
    cfg = stitch_only_config(n_groups=12)
    a = inf.reconstruct(loaded, fixture_raw, cfg, CPU)
    b = inf.reconstruct(loaded, fixture_raw, cfg,
                        ExecutionConfig(accelerator="cpu", inference_batch_size=12))
    assert a.n_groups == b.n_groups == 12
    np.testing.assert_allclose(a.object, b.object, rtol=1e-4, atol=1e-5)
    # A path is accepted in place of a LoadedModel.
    c = inf.reconstruct(path, fixture_raw, cfg, CPU)
    assert np.array_equal(a.object, c.object)


def test_resolve_model_path(tmp_path, untrained):
    _, bundle = untrained
    out = tmp_path / "run"
    (out / CHECKPOINT_DIRNAME).mkdir(parents=True)
    ckpt = out / CHECKPOINT_DIRNAME / LAST_CHECKPOINT
    ckpt.write_bytes(b"x")
    assert inf.resolve_model_path(out) == ckpt
    (out / BUNDLE_FILENAME).write_bytes(bundle.read_bytes())
    assert inf.resolve_model_path(out) == out / BUNDLE_FILENAME  # the bundle is preferred
    assert inf.resolve_model_path(ckpt) == ckpt
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="holds no model"):
        inf.resolve_model_path(tmp_path / "empty")
    with pytest.raises(BundleError, match="does not exist"):
        inf.resolve_model_path(tmp_path / "missing.zip")


def test_load_lightning_checkpoint(untrained, fixture_raw, tmp_path):
    module, path = untrained
    hp = {k: module.hparams[k] for k in ("model_config", "training_config",
                                         "execution_config", "intensity_scale",
                                         "input_scale", "monitor")}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp}, ckpt)
    from_ckpt = inf.load_model(ckpt)
    from_bundle = inf.load_model(path)
    cfg = stitch_only_config(n_groups=6)
    assert np.array_equal(inf.reconstruct(from_ckpt, fixture_raw, cfg, CPU).object,
                          inf.reconstruct(from_bundle, fixture_raw, cfg, CPU).object)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {}}, ckpt)
    with pytest.raises(BundleError, match="lacks"):
        inf.load_model(ckpt)


# ---------------------------------------------------------------------- pickle payloads
class Payload:
    """Unpickling this calls open(marker, "w"): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_bundle(path: Path, weights: bytes) -> Path:
    """A bundle zip whose manifest is valid and whose checksum matches the payload."""
    manifest = {
        "format": "ptychopinn-bundle", "format_version": 1, "package_version": "0.1.0",
        "configs": {"model": ModelConfig().to_dict()}, "intensity_scale": 1.0,
        "training_summary": {}, "probe_key": "__probe__", "tensors": {},
        "weights_file": "weights.pt", "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("weights.pt", weights)
    return path


def _payloads(marker: Path) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "evil": Payload(marker)}, buffer)
    return {"torch.save": buffer.getvalue(),
            "raw pickle": pickle.dumps(Payload(marker), protocol=2)}


def test_payloads_are_live(tmp_path):
    # Guard for the refusal tests: an unrestricted unpickler does run these payloads.
    marker = tmp_path / "ran"
    for name, blob in _payloads(marker).items():
        if name == "raw pickle":
            pickle.loads(blob)
        else:
            torch.load(io.BytesIO(blob), weights_only=False)
        assert marker.exists()
        marker.unlink()


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_pickle_payload_in_bundle_is_refused(kind, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bundle = _crafted_bundle(tmp_path / "evil.zip", _payloads(marker)[kind])
    with pytest.raises(BundleError, match="refused"):
        inf.load_model(bundle)
    assert not marker.exists()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        infer_cli.main(["--model_path", str(bundle), "--test_data", str(FIXTURE),
                  "--output_dir", str(out), "--accelerator", "cpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "evil.zip" in err[0]
    assert not marker.exists()
    assert not out.exists() or not os.listdir(out)


def test_pickle_payload_in_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload(marker)}}, ckpt)
    with pytest.raises(BundleError, match="refused"):
        inf.load_model(ckpt)
    assert not marker.exists()


def test_stitch_align_phase_reaches_the_stitcher(id_data):
    patches = random_patches(id_data.n_positions, seed=3)
    model, _ = fake_model(patches, id_data.probe_guess, gridsize=1, batch_size=16)
    aligned = inf.reconstruct(model, id_data, stitch_only_config(), CPU)
    plain = inf.reconstruct(model, id_data, stitch_only_config(stitch_align_phase=False), CPU)
    positions = np.stack([id_data.xcoords, id_data.ycoords], -1)
    reference = stitch_patches(patches, positions, align_phase=True)
    np.testing.assert_allclose(aligned.object, reference.object, rtol=1e-5, atol=1e-6)
    assert not np.allclose(aligned.object, plain.object, atol=1e-3)


def test_metrics_cover_only_the_well_lit_pixels(id_data):
    model, _ = fake_model(true_patches(id_data), id_data.probe_guess)
    recon = inf.reconstruct(model, id_data, stitch_only_config(), CPU)
    assert recon.illumination is not None and recon.illumination.shape == recon.object.shape
    _, region = inf.truth_region(recon, id_data.object_guess)
    lit = recon.illumination >= 0.5 * recon.illumination.max()
    assert region.sum() < recon.coverage.sum()  # the dim rim is left out
    assert np.array_equal(region, lit & recon.coverage)
    unlit = dataclasses.replace(recon, illumination=None)
    assert inf.truth_region(unlit, id_data.object_guess)[1].sum() == recon.coverage.sum()


# -------------------------------------------------------------- inference without Lightning
# Run in a fresh interpreter: the command line's path (load a bundle, reconstruct with
# refinement, write the outputs) and a checkpoint loaded through the Python API.
_WITHOUT_LIGHTNING = """
import json, sys
import numpy as np
import ptychopinn_torch.inference as inf
from ptychopinn.cli.infer import main
from ptychopinn.config import InferenceConfig
from ptychopinn.data import RawData

bundle, checkpoint, scan, out = sys.argv[1:5]
code = main(["--model_path", bundle, "--test_data", scan, "--output_dir", out,
             "--accelerator", "cpu", "--refine-iterations", "2", "--quiet"])
loaded = inf.load_model(checkpoint)
recon = inf.reconstruct(loaded, RawData.from_file(scan), InferenceConfig(refine_iterations=2))
np.save(out + "/checkpoint_object.npy", recon.object)
print(json.dumps({"code": code, "module": type(loaded.module).__name__,
                  "lightning": sorted(m for m in sys.modules
                                      if m.split(".")[0] in ("lightning", "pytorch_lightning"))}))
"""


def test_inference_runs_without_importing_lightning(
    tiny_raw, tiny_test_raw, tiny_training_config, cpu_execution, tmp_path
):
    import subprocess
    import sys

    from ptychopinn_torch.train import train

    result = train(tiny_raw, None, tiny_training_config(nepochs=1), cpu_execution())
    scan, out = tmp_path / "scan.npz", tmp_path / "out"
    tiny_test_raw.save(scan)
    checkpoint = result.output_dir / CHECKPOINT_DIRNAME / LAST_CHECKPOINT
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_LIGHTNING, str(result.bundle_path),
                           str(checkpoint), str(scan), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "module": "PtychoPINNNetwork", "lightning": []}
    # The Lightning-free network computes what the trained LightningModule computes.
    trained = inf.loaded_model_from_training(result)
    expected = inf.reconstruct(trained, tiny_test_raw, InferenceConfig(refine_iterations=2),
                               CPU).object
    with np.load(out / "reconstruction.npz") as written:
        np.testing.assert_allclose(written["object"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "checkpoint_object.npy"), expected,
                               rtol=1e-4, atol=1e-5)


def test_network_and_lightning_module_share_one_state_dict(untrained):
    from ptychopinn_torch.network_module import PtychoPINNNetwork

    module, path = untrained
    plain = inf.load_model(path)
    assert type(plain.module) is PtychoPINNNetwork
    assert list(plain.module.state_dict()) == list(module.state_dict())
    assert plain.module.hparams == dict(module.hparams)
    lightning = inf.load_model(path, module_class=PtychoPINNModule)
    assert isinstance(lightning.module, PtychoPINNModule)
    x = torch.rand(2, 4, N, N)
    offsets = torch.rand(2, 4, 2)
    with torch.no_grad():
        assert torch.equal(plain.module.predict_patches(x, offsets),
                           lightning.module.predict_patches(x, offsets))
    # A loaded network is written back as the same bundle contents.
    again = save_model_bundle(plain.module, path.parent / "again.zip", {"note": "untrained"})
    reread = inf.load_model(again)
    assert reread.module.hparams == plain.module.hparams
    for key, value in plain.module.state_dict().items():
        assert torch.equal(reread.module.state_dict()[key], value)
