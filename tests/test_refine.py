"""Physics refinement (ptychopinn_torch.refine): checked against independent numpy code,
and for what a user relies on: it converges from a flat start, it does not damage a good
start, its result does not depend on the chunk size, and it stops by itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptychopinn.metrics import evaluate_reconstruction
from ptychopinn.simulate import extract_patches as numpy_extract_patches
from ptychopinn.simulate import simulate_dataset
from ptychopinn_torch.refine import (
    ILLUMINATION_ALPHA,
    MOMENTUM,
    RefinementError,
    _gather,
    _Geometry,
    _scatter,
    flat_object,
    refine_object,
)

N = 64


def _scan(nphotons: float, poisson: bool = True, seed: int = 5):
    # 5 x 5 raster, 8 px steps, integer positions: dense overlap, object of ~100 px.
    return simulate_dataset("dead_leaves", "aperture", N=N, n_positions=25, scan_kind="raster",
                            step_px=8.0, nphotons=nphotons, seed=seed, poisson=poisson)


def _positions(data) -> np.ndarray:
    return np.stack([data.xcoords, data.ycoords], axis=-1)


def _scores(obj: np.ndarray, data) -> tuple[float, float]:
    """Amplitude and phase SSIM over the well-lit region (>= half the peak illumination)."""
    pos = _positions(data)
    illum = np.zeros(data.object_guess.shape)
    p2 = np.abs(data.probe_guess) ** 2
    for x, y in pos.astype(int):
        illum[y - N // 2: y + N // 2, x - N // 2: x + N // 2] += p2
    m = evaluate_reconstruction(obj, data.object_guess, region=illum >= 0.5 * illum.max())
    return m["amplitude_ssim"], m["phase_ssim"]


def test_gather_matches_numpy_extraction_and_scatter_is_its_adjoint() -> None:
    rng = np.random.default_rng(0)
    obj = (rng.normal(size=(90, 100)) + 1j * rng.normal(size=(90, 100))).astype(np.complex64)
    pos = np.array([[40.0, 41.0], [50.25, 44.5], [60.7, 57.1]])  # (x, y), sub-pixel too
    geometry = _Geometry(pos, (0, 0), 100, N, torch.device("cpu"))
    taps = geometry.taps(slice(0, 3))
    patches = _gather(torch.from_numpy(obj).reshape(-1), taps).numpy()
    expected = numpy_extract_patches(obj, pos[:, 0], pos[:, 1], N)
    np.testing.assert_allclose(patches, expected, atol=1e-5)
    # Dot-product test: <E x, y> == <x, E^T y>.
    y = (rng.normal(size=(3, N, N)) + 1j * rng.normal(size=(3, N, N))).astype(np.complex64)
    back = torch.zeros(90 * 100, dtype=torch.complex64)
    _scatter(back, taps, torch.from_numpy(y))
    lhs = np.vdot(y, patches)
    rhs = np.vdot(back.numpy(), obj.reshape(-1))
    assert abs(lhs - rhs) < 1e-3 * abs(lhs)


def _numpy_first_step(obj: np.ndarray, probe: np.ndarray, amps: np.ndarray,
                      pos: np.ndarray) -> np.ndarray:
    """One refinement iteration from zero momentum, written out in numpy (integer
    positions, canvas origin (0, 0))."""
    def ff(x):
        return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                               axes=(-2, -1))

    def iff(x):
        return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"),
                               axes=(-2, -1))

    grad = np.zeros(obj.shape, np.complex128)
    illum = np.zeros(obj.shape)
    for (x, y), amp in zip(pos.astype(int), amps, strict=True):
        rows, cols = slice(y - N // 2, y + N // 2), slice(x - N // 2, x + N // 2)
        psi = ff(probe * obj[rows, cols])
        lam = np.abs(psi) ** 2
        k = amp.astype(np.float64) ** 2
        factor = np.minimum(0.5 * (k / (lam + 1e-6) - 1.0), 1.0)
        grad[rows, cols] += np.conj(probe) * iff(psi * factor)
        illum[rows, cols] += np.abs(probe) ** 2
    step = grad / ((1 - ILLUMINATION_ALPHA) * illum + ILLUMINATION_ALPHA * illum.max())
    return obj + (1 + MOMENTUM) * step  # look-ahead momentum: step + 0.9 * (0.9*0 + step)


def test_one_iteration_equals_numpy_poisson_gradient_step() -> None:
    data = _scan(1e6)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    result = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=1, tolerance=0.0)
    expected = _numpy_first_step(start.astype(np.complex128), data.probe_guess.astype(np.complex128),
                                 data.diffraction, _positions(data))
    np.testing.assert_allclose(result.object, expected, rtol=0, atol=2e-4 * np.abs(expected).max())
    assert result.iterations == 1 and len(result.loss_history) == 1


def test_flat_start_converges() -> None:
    data = _scan(1e6)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    result = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=60, tolerance=0.0)
    history = result.loss_history
    assert result.iterations == 60
    assert result.final_loss < history[0] / 20  # the loss falls by more than 20x
    amp_ssim, phase_ssim = _scores(result.object, data)
    start_amp, start_phase = _scores(start + 1e-3 * np.random.default_rng(0).normal(size=start.shape), data)
    assert amp_ssim > 0.9 and phase_ssim > 0.9, (amp_ssim, phase_ssim)
    assert amp_ssim > start_amp + 0.3 and phase_ssim > start_phase + 0.3


@pytest.mark.parametrize("iterations", [1, 5, 20])
def test_a_perfect_start_is_not_damaged(iterations: int) -> None:
    # At 1e8 photons the maximum-likelihood object is the true one to within SSIM 0.001, so
    # whatever the iterations do to the truth is their own noise (a fixed-size Adam step
    # would add noise of its step size here). At 1e6 photons the likelihood optimum itself
    # lies ~0.015 below perfect amplitude SSIM (photon noise), which says nothing about the
    # optimiser.
    data = _scan(1e8)
    truth = data.object_guess
    result = refine_object(truth, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=iterations, tolerance=0.0)
    amp_ssim, phase_ssim = _scores(result.object, data)
    assert amp_ssim >= 0.99 and phase_ssim >= 0.99, (amp_ssim, phase_ssim)


def test_result_does_not_depend_on_the_chunk_size() -> None:
    data = _scan(1e5)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    runs = [refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                          max_iterations=5, tolerance=0.0, batch_size=b) for b in (3, 25, 1000)]
    for other in runs[1:]:
        np.testing.assert_allclose(other.object, runs[0].object, rtol=0, atol=1e-4)
        np.testing.assert_allclose(other.loss_history, runs[0].loss_history, rtol=1e-5)


def test_stops_by_itself_when_the_loss_stops_improving() -> None:
    data = _scan(1e6)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    loose = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                          max_iterations=200, tolerance=0.02)
    assert loose.converged and loose.iterations < 200
    last = loose.loss_history
    assert 0 <= (last[-2] - last[-1]) / last[-2] < 0.02
    strict = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=8, tolerance=0.0)
    assert not strict.converged and strict.iterations == 8


def test_progress_is_reported_every_iteration() -> None:
    data = _scan(1e5)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    seen: list[tuple[int, int, float]] = []
    result = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=4, tolerance=0.0,
                           progress=lambda i, n, loss: seen.append((i, n, loss)))
    assert [s[0] for s in seen] == [1, 2, 3, 4] and all(s[1] == 4 for s in seen)
    assert [s[2] for s in seen] == pytest.approx(result.loss_history)


def test_canvas_margin_is_filled_and_result_keeps_the_given_canvas() -> None:
    # A canvas that covers only the centre of the scan: the windows reach beyond it, the
    # refinement grows its own canvas, and returns the caller's canvas and origin.
    data = _scan(1e7)
    truth = data.object_guess
    y0, x0, h, w = 30, 35, 40, 30
    inner = truth[y0:y0 + h, x0:x0 + w]
    result = refine_object(inner, (x0, y0), data.probe_guess, data.diffraction, _positions(data),
                           max_iterations=30, tolerance=0.0)
    assert result.object.shape == (h, w)
    m = evaluate_reconstruction(result.object, inner)
    assert m["amplitude_ssim"] > 0.95 and m["phase_ssim"] > 0.95, m


def test_probe_refinement_fixes_a_wrong_probe() -> None:
    data = _scan(1e7)
    wrong = data.probe_guess * np.exp(1j * 0.3 * np.random.default_rng(1).normal(size=(N, N)))
    start = flat_object(wrong, data.diffraction, data.object_guess.shape)
    kwargs = dict(max_iterations=40, tolerance=0.0)
    fixed = refine_object(start, (0, 0), wrong, data.diffraction, _positions(data), **kwargs)
    refined = refine_object(start, (0, 0), wrong, data.diffraction, _positions(data),
                            refine_probe=True, **kwargs)
    assert refined.final_loss < 0.7 * fixed.final_loss
    assert not np.allclose(refined.probe, wrong)
    np.testing.assert_allclose(fixed.probe, wrong.astype(np.complex64))


def test_amplitude_scale_is_the_same_as_scaling_the_data() -> None:
    data = _scan(1e5)
    start = flat_object(data.probe_guess, data.diffraction, data.object_guess.shape)
    a = refine_object(start, (0, 0), data.probe_guess, data.diffraction * 2.0, _positions(data),
                      max_iterations=3, tolerance=0.0)
    b = refine_object(start, (0, 0), data.probe_guess, data.diffraction, _positions(data),
                      max_iterations=3, tolerance=0.0, amplitude_scale=2.0)
    np.testing.assert_allclose(a.object, b.object, atol=1e-5)


@pytest.mark.parametrize("kwargs, phrase", [
    ({"max_iterations": -1}, "max_iterations"),
    ({"max_iterations": 2, "tolerance": -0.1}, "tolerance"),
    ({"max_iterations": 2, "batch_size": 0}, "batch_size"),
    ({"max_iterations": 2, "amplitude_scale": 0.0}, "amplitude_scale"),
    ({"max_iterations": 2, "coverage": np.ones((3, 3), bool)}, "coverage"),
])
def test_bad_settings_are_named(kwargs: dict, phrase: str) -> None:
    data = _scan(1e5)
    with pytest.raises(RefinementError, match=phrase):
        refine_object(data.object_guess, (0, 0), data.probe_guess, data.diffraction,
                      _positions(data), **kwargs)


def test_bad_shapes_are_named() -> None:
    data = _scan(1e5)
    pos = _positions(data)
    with pytest.raises(RefinementError, match="amplitudes"):
        refine_object(data.object_guess, (0, 0), data.probe_guess, data.diffraction[:, :32],
                      pos, max_iterations=1)
    with pytest.raises(RefinementError, match="positions_px"):
        refine_object(data.object_guess, (0, 0), data.probe_guess, data.diffraction, pos[:3],
                      max_iterations=1)
    with pytest.raises(RefinementError, match="initial_object"):
        refine_object(np.ones(5, np.complex64), (0, 0), data.probe_guess, data.diffraction, pos,
                      max_iterations=1)


@pytest.mark.parametrize("flips", [dict(flip_x=True), dict(transpose=True, flip_y=True),
                                   dict(transpose=True, flip_x=True, flip_y=True)])
def test_patch_transform_models_a_detector_frame_unlike_the_scan(flips: dict) -> None:
    # Data whose detector frame is T^-1 of the scan frame: pattern k is the far field of
    # P * T^-1(patch_k). With the transform the truth fits and a flat start converges to it.
    from ptychopinn.simulate import far_field as numpy_far_field
    from ptychopinn_torch.refine import PatchTransform

    base = _scan(1e7, poisson=False)
    transform = PatchTransform(N, **flips)
    patches = numpy_extract_patches(base.object_guess, base.xcoords, base.ycoords, N)
    detector_frame = transform.to_probe(torch.from_numpy(patches)).numpy()
    amps = np.abs(numpy_far_field(detector_frame * base.probe_guess)).astype(np.float32)
    pos = _positions(base)
    with_t = refine_object(base.object_guess, (0, 0), base.probe_guess, amps, pos,
                           max_iterations=1, tolerance=0.0, patch_transform=transform)
    without = refine_object(base.object_guess, (0, 0), base.probe_guess, amps, pos,
                            max_iterations=1, tolerance=0.0)
    assert with_t.loss_history[0] < 1e-3 < without.loss_history[0]
    assert transform.to_scan(transform.to_probe(torch.from_numpy(patches))).numpy() == \
        pytest.approx(patches)


def test_patch_transform_is_the_stitchers() -> None:
    from ptychopinn_torch.refine import PatchTransform
    from ptychopinn_torch.stitching import Stitcher

    rng = np.random.default_rng(2)
    patches = rng.normal(size=(3, N, N)).astype(np.float32)
    for flips in (dict(flip_x=True), dict(flip_y=True), dict(transpose=True, flip_x=True),
                  dict(transpose=True, flip_x=True, flip_y=True)):
        stitcher = Stitcher(N, np.zeros((1, 2)), **flips)
        expected = stitcher.transform_patches(patches)
        got = PatchTransform(N, **flips).to_scan(torch.from_numpy(patches)).numpy()
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ through inference
@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A tiny model trained 2 epochs on a 25-position scan (weak on purpose: refinement
    has a lot to add)."""
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn_torch.train import train

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    out = tmp_path_factory.mktemp("trained")
    config = TrainingConfig(model=ModelConfig(N=N, n_filters_scale=1), n_groups=25,
                            batch_size=8, nepochs=2, validation_fraction=0.0,
                            output_dir=out / "run")
    result = train(_scan(1e6, seed=8), None, config,
                   ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none"))
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    return result.bundle_path


def test_inference_refines_and_records_it(trained_bundle, tmp_path) -> None:
    from ptychopinn.config import ExecutionConfig, InferenceConfig
    from ptychopinn_torch import inference as inf

    data = _scan(1e6, seed=9)
    model = inf.load_model(trained_bundle)
    cpu = ExecutionConfig(accelerator="cpu", enable_progress_bar=False)
    plain = inf.reconstruct(model, data, InferenceConfig(refine_iterations=0), cpu)
    refined = inf.reconstruct(model, data, InferenceConfig(refine_iterations=15,
                                                           refine_tolerance=0.0), cpu)
    assert plain.refinement is None and plain.network_object is None
    np.testing.assert_array_equal(refined.network_object, plain.object)
    assert refined.refinement.iterations == 15 and len(refined.refinement.loss_history) == 15
    assert refined.refinement.final_loss < refined.refinement.loss_history[0] / 5
    assert set(refined.timings_s) == {"network", "refinement"}
    assert refined.object.shape == plain.object.shape
    assert refined.origin_px == plain.origin_px
    np.testing.assert_array_equal(refined.coverage, plain.coverage)
    before = inf.compute_metrics(plain, data.object_guess)
    after = inf.compute_metrics(refined, data.object_guess)
    assert after["amplitude_ssim"] > before["amplitude_ssim"] + 0.1
    assert after["phase_ssim"] > before["phase_ssim"] + 0.1

    paths = inf.write_outputs(refined, tmp_path / "out", {}, data.object_guess)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["refinement"]["iterations"] == 15
    assert metrics["refinement"]["loss_per_iteration"] == pytest.approx(
        refined.refinement.loss_history)
    assert metrics["timings_s"]["refinement"] == pytest.approx(refined.refinement.time_s)
    assert metrics["timings_s"]["network"] > 0
    assert metrics["network"]["amplitude_ssim"] == pytest.approx(before["amplitude_ssim"])
    assert metrics["amplitude_ssim"] == pytest.approx(after["amplitude_ssim"])
    with np.load(paths["npz"], allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["network_object"], plain.object)
        assert json.loads(str(saved["record_json"]))["refinement"]["iterations"] == 15


def test_inference_command_line_refines(trained_bundle, tmp_path) -> None:
    from ptychopinn.cli.infer import main

    data = _scan(1e6, seed=9)
    data.save(tmp_path / "scan.npz")
    code = main(["--model_path", str(trained_bundle), "--test_data", str(tmp_path / "scan.npz"),
                 "--output_dir", str(tmp_path / "recon"), "--refine-iterations", "4",
                 "--refine-tolerance", "0", "--refine-probe", "--accelerator", "cpu",
                 "--quiet"])
    assert code == 0
    metrics = json.loads((tmp_path / "recon" / "metrics.json").read_text())
    assert metrics["refinement"]["iterations"] == 4
    code = main(["--model_path", str(trained_bundle), "--test_data", str(tmp_path / "scan.npz"),
                 "--output_dir", str(tmp_path / "plain"), "--refine-iterations", "0",
                 "--accelerator", "cpu", "--quiet"])
    assert code == 0
    metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert "refinement" not in metrics and "network" not in metrics
