"""Tests for ptychopinn.simulate: geometry, physics, statistics, CLI and the test fixture.

The physics is checked against independent numpy code written here (explicit slicing,
hand-written bilinear loops, np.fft with explicit shifts, a Fresnel transfer function).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptychopinn import simulate as sim
from ptychopinn.cli import simulate as simulate_cli
from ptychopinn.simulate import (
    AMPLITUDE_RANGE,
    PHASE_MAX_RAD,
    SimulationError,
    extract_patches,
    make_object,
    make_probe,
    make_scan,
    simulate_dataset,
    simulate_diffraction,
)

FIXTURE = Path(__file__).parent / "fixtures" / "minimal_dataset_v1.npz"


def _random_complex(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.2, 1.0, shape) * np.exp(1j * rng.uniform(-3, 3, shape))).astype(np.complex64)


def _far_field_reference(psi: np.ndarray) -> np.ndarray:
    """conventions.md far field written out: centred, orthonormal (1/N) 2-D DFT."""
    n = psi.shape[-1]
    centred = np.fft.ifftshift(psi, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(centred), axes=(-2, -1)) / n


def _bilinear_loop(obj, x, y, N):
    """Patch by explicit per-pixel bilinear interpolation, zero outside the object."""
    h, w = obj.shape

    def px(r, c):
        return obj[r, c] if 0 <= r < h and 0 <= c < w else 0.0

    out = np.zeros((N, N), np.complex128)
    for i in range(N):
        for j in range(N):
            yy = y - N / 2 + i
            xx = x - N / 2 + j
            r0, c0 = int(np.floor(yy)), int(np.floor(xx))
            ty, tx = yy - r0, xx - c0
            out[i, j] = ((1 - ty) * (1 - tx) * px(r0, c0) + (1 - ty) * tx * px(r0, c0 + 1)
                         + ty * (1 - tx) * px(r0 + 1, c0) + ty * tx * px(r0 + 1, c0 + 1))
    return out


# --------------------------------------------------------------------------- patches


def test_extract_patches_integer_positions_are_exact_slices():
    obj = _random_complex((50, 60), 1)
    N = 16
    xs = np.array([8.0, 20.0, 51.0, 30.0])
    ys = np.array([8.0, 33.0, 41.0, 25.0])
    patches = extract_patches(obj, xs, ys, N)
    assert patches.dtype == np.complex64 and patches.shape == (4, N, N)
    for k, (x, y) in enumerate(zip(xs.astype(int), ys.astype(int), strict=True)):
        np.testing.assert_array_equal(patches[k], obj[y - N // 2: y + N // 2, x - N // 2: x + N // 2])
    # the patch centre pixel sits on the position
    assert patches[1, N // 2, N // 2] == obj[33, 20]


def test_extract_patches_subpixel_matches_hand_written_bilinear_loop():
    obj = _random_complex((20, 24), 2)
    N = 8
    # includes positions whose patches run off the object (zero outside)
    xs = np.array([10.3, 5.75, 20.5, 2.1])
    ys = np.array([9.6, 4.25, 17.9, 15.5])
    patches = extract_patches(obj, xs, ys, N)
    for k in range(len(xs)):
        np.testing.assert_allclose(patches[k], _bilinear_loop(obj.astype(np.complex128), xs[k], ys[k], N),
                                   rtol=0, atol=1e-6)


def test_extract_patches_rejects_bad_input():
    obj = _random_complex((20, 20), 0)
    with pytest.raises(SimulationError, match="differ in length"):
        extract_patches(obj, np.zeros(3), np.zeros(2), 8)
    with pytest.raises(SimulationError, match="2-D"):
        extract_patches(obj[None], np.zeros(1), np.zeros(1), 8)
    with pytest.raises(SimulationError, match="finite"):
        extract_patches(obj, np.array([np.nan]), np.zeros(1), 8)


# --------------------------------------------------------------------------- diffraction


def test_noise_free_diffraction_matches_independent_fft_integer_positions():
    N = 32
    obj = _random_complex((80, 80), 3)
    probe = make_probe("gaussian", N)
    xs = np.array([20.0, 40.0, 55.0])
    ys = np.array([30.0, 25.0, 50.0])
    nphotons = 5e4
    amp = simulate_diffraction(obj, probe, xs, ys, nphotons, seed=0, poisson=False)
    assert amp.dtype == np.float32 and amp.shape == (3, N, N)

    exit_waves = np.stack([
        probe.astype(np.complex128) * obj[int(y) - N // 2: int(y) + N // 2, int(x) - N // 2: int(x) + N // 2]
        for x, y in zip(xs, ys, strict=True)
    ])
    intensity = np.abs(_far_field_reference(exit_waves)) ** 2
    # Parseval with the orthonormal FFT
    np.testing.assert_allclose(intensity.sum(axis=(1, 2)), (np.abs(exit_waves) ** 2).sum(axis=(1, 2)),
                               rtol=1e-10)
    expected = np.sqrt(intensity * nphotons / intensity.sum(axis=(1, 2)).mean())
    np.testing.assert_allclose(amp, expected, rtol=2e-5, atol=1e-5 * expected.max())
    # DC at the array centre: |sum(exit wave)| / N, scaled
    scale = np.sqrt(nphotons / intensity.sum(axis=(1, 2)).mean())
    np.testing.assert_allclose(amp[:, N // 2, N // 2], np.abs(exit_waves.sum(axis=(1, 2))) / N * scale,
                               rtol=1e-5)


def test_noise_free_diffraction_subpixel_uses_bilinear_patches():
    N = 16
    obj = _random_complex((40, 40), 4)
    probe = make_probe("gaussian", N, sigma_px=3.0)
    xs, ys = np.array([19.4]), np.array([21.7])
    amp = simulate_diffraction(obj, probe, xs, ys, 1e3, poisson=False)
    exit_wave = probe * _bilinear_loop(obj.astype(np.complex128), xs[0], ys[0], N)
    intensity = np.abs(_far_field_reference(exit_wave)) ** 2
    np.testing.assert_allclose(amp[0], np.sqrt(intensity * 1e3 / intensity.sum()), rtol=1e-4,
                               atol=1e-4)


def test_mean_total_counts_equals_nphotons():
    obj = make_object("dead_leaves", 120, seed=5)
    probe = make_probe("aperture", 64)
    xs, ys = make_scan("spiral", 40, obj.shape, 64, 6.0, seed=0)
    nphotons = 2e5
    exact = simulate_diffraction(obj, probe, xs, ys, nphotons, poisson=False)
    totals = (exact.astype(np.float64) ** 2).sum(axis=(1, 2))
    assert totals.mean() == pytest.approx(nphotons, rel=1e-5)
    noisy = simulate_diffraction(obj, probe, xs, ys, nphotons, seed=3)
    noisy_mean = (noisy.astype(np.float64) ** 2).sum(axis=(1, 2)).mean()
    # total counts per pattern are Poisson(~nphotons): the mean of 40 has sd sqrt(nphotons/40)
    assert abs(noisy_mean - nphotons) < 5 * np.sqrt(nphotons / 40)


def test_poisson_statistics_and_seeding():
    N = 32
    obj = np.ones((64, 64), np.complex64)
    probe = make_probe("gaussian", N, sigma_px=2.0)
    n = 600  # the same position repeated: every pattern has the same expected counts
    xs = np.full(n, 32.0)
    ys = np.full(n, 32.0)
    nphotons = 2e4
    expected = simulate_diffraction(obj, probe, xs[:1], ys[:1], nphotons, poisson=False)[0] ** 2
    counts = simulate_diffraction(obj, probe, xs, ys, nphotons, seed=11).astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3 * counts.max())  # integers
    bright = expected > 20
    assert bright.sum() > 20
    mean = counts[:, bright].mean(axis=0)
    var = counts[:, bright].var(axis=0, ddof=1)
    np.testing.assert_allclose(mean, expected[bright], rtol=0.1)
    ratio = var / mean  # Poisson: variance == mean
    assert abs(ratio.mean() - 1.0) < 0.05
    again = simulate_diffraction(obj, probe, xs[:5], ys[:5], nphotons, seed=11)
    np.testing.assert_array_equal(again, simulate_diffraction(obj, probe, xs[:5], ys[:5], nphotons, seed=11))
    assert not np.array_equal(again, simulate_diffraction(obj, probe, xs[:5], ys[:5], nphotons, seed=12))


def test_simulate_diffraction_rejects_bad_nphotons_and_probe():
    obj = np.ones((64, 64), np.complex64)
    probe = make_probe("gaussian", 16)
    with pytest.raises(SimulationError, match="nphotons"):
        simulate_diffraction(obj, probe, np.array([32.0]), np.array([32.0]), 0.0)
    with pytest.raises(SimulationError, match="probe"):
        simulate_diffraction(obj, np.ones((16, 8)), np.array([32.0]), np.array([32.0]), 1e3)


# --------------------------------------------------------------------------- dataset


def test_simulate_dataset_probe_and_data_are_consistent():
    nphotons = 3e5
    raw = simulate_dataset(object_kind="lines", probe_kind="aperture", N=64, n_positions=24,
                           scan_kind="spiral", step_px=7.0, jitter_px=0.5, nphotons=nphotons,
                           seed=2, poisson=False)
    assert raw.diffraction.shape == (24, 64, 64) and raw.diffraction.dtype == np.float32
    assert raw.probe_guess.dtype == np.complex64 and raw.probe_guess.shape == (64, 64)
    assert raw.object_guess.dtype == np.complex64
    assert raw.labels.shape == (24, 64, 64) and raw.labels.dtype == np.complex64
    np.testing.assert_array_equal(raw.scan_index, np.zeros(24))
    np.testing.assert_array_equal(raw.labels, extract_patches(raw.object_guess, raw.xcoords, raw.ycoords, 64))
    # |FFT(probe_guess * patch)|^2 are the expected counts, with no further scale factor
    predicted = np.abs(_far_field_reference(raw.probe_guess.astype(np.complex128) * raw.labels)) ** 2
    np.testing.assert_allclose(raw.diffraction.astype(np.float64) ** 2, predicted, rtol=1e-4,
                               atol=1e-6 * predicted.max())
    assert predicted.sum(axis=(1, 2)).mean() == pytest.approx(nphotons, rel=1e-5)


def test_simulate_dataset_defaults_size_object_to_scan_and_is_seeded():
    a = simulate_dataset(object_kind="dead_leaves", n_positions=10, nphotons=1e4, seed=4)
    b = simulate_dataset(object_kind="dead_leaves", n_positions=10, nphotons=1e4, seed=4)
    c = simulate_dataset(object_kind="dead_leaves", n_positions=10, nphotons=1e4, seed=5)
    np.testing.assert_array_equal(a.diffraction, b.diffraction)
    assert not np.array_equal(a.diffraction, c.diffraction)
    assert a.object_guess.shape == sim.required_object_size_px("spiral", 10, 64, 8.0)
    with pytest.raises(SimulationError, match="N=100"):
        simulate_dataset(N=100, n_positions=4)
    with pytest.raises(SimulationError, match="object_kind"):
        simulate_dataset(object_kind="cats", n_positions=4)


# --------------------------------------------------------------------------- scans


@pytest.mark.parametrize("kind", ["raster", "spiral"])
@pytest.mark.parametrize("jitter_px", [0.0, 2.5])
def test_scans_stay_inside_object(kind, jitter_px):
    N, n, step = 64, 50, 9.0
    shape = sim.required_object_size_px(kind, n, N, step, jitter_px)
    x, y = make_scan(kind, n, shape, N, step, jitter_px=jitter_px, seed=3)
    assert x.dtype == np.float64 and y.dtype == np.float64 and x.shape == (n,) == y.shape
    lo = N / 2 + 1
    assert x.min() >= lo and y.min() >= lo
    assert x.max() <= shape[1] - 1 - lo and y.max() <= shape[0] - 1 - lo
    # every patch lies fully inside the object
    patches = extract_patches(np.ones(shape, np.complex64), x, y, N)
    np.testing.assert_allclose(np.abs(patches), 1.0, atol=1e-6)
    # larger object: still inside, and (without jitter) the scan is centred
    x2, y2 = make_scan(kind, n, (shape[0] + 40, shape[1] + 60), N, step, jitter_px, seed=3)
    assert x2.min() >= lo and x2.max() <= shape[1] + 60 - 1 - lo
    if jitter_px == 0:
        assert abs((x2.min() + x2.max()) / 2 - (shape[1] + 60 - 1) / 2) <= 1.0


def test_raster_and_spiral_spacing():
    x, y = make_scan("raster", 16, (200, 200), 64, 10.0)
    assert np.allclose(x, np.round(x)) and np.allclose(y, np.round(y))  # integer positions
    assert sorted(set(np.diff(np.unique(x)))) == [10.0] and sorted(set(np.diff(np.unique(y)))) == [10.0]
    xs, ys = make_scan("spiral", 300, (400, 400), 64, 10.0)
    pts = np.stack([xs, ys], 1)
    d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    # a Fermat spiral is nearly hexagonal: nearest neighbour ~ 1.07 x sqrt(area per point)
    assert 0.8 * 10 < np.median(d.min(axis=1)) < 1.3 * 10


def test_scan_that_does_not_fit_names_sizes():
    with pytest.raises(SimulationError, match=r"100 x 100 px.*N=64.*at least"):
        make_scan("raster", 100, (100, 100), 64, 10.0)
    with pytest.raises(SimulationError, match="step_px"):
        make_scan("raster", 4, (200, 200), 64, -1.0)
    with pytest.raises(SimulationError, match="n_positions"):
        make_scan("spiral", 0, (200, 200), 64, 5.0)
    with pytest.raises(SimulationError, match="allowed"):
        make_scan("zigzag", 4, (200, 200), 64, 5.0)


# --------------------------------------------------------------------------- objects & probes


@pytest.mark.parametrize("kind", sim.OBJECT_KINDS)
def test_objects_dtype_range_seeds_and_band_limit(kind):
    obj = make_object(kind, (96, 112), seed=0)
    assert obj.dtype == np.complex64 and obj.shape == (96, 112)
    amp, phase = np.abs(obj), np.angle(obj)
    assert amp.min() > 0 and amp.max() <= 1.0 + 1e-6
    assert amp.min() >= AMPLITUDE_RANGE[0] - 1e-6
    assert np.abs(phase).max() <= PHASE_MAX_RAD + 1e-5
    assert amp.std() > 0.05 and phase.std() > 0.2  # real contrast in both
    assert abs(np.corrcoef(amp.ravel(), phase.ravel())[0, 1]) < 0.9  # phase is not the amplitude
    np.testing.assert_array_equal(obj, make_object(kind, (96, 112), seed=0))
    assert np.abs(obj - make_object(kind, (96, 112), seed=1)).mean() > 0.05
    # band-limited: little power near Nyquist
    spec = np.abs(np.fft.fft2(obj - obj.mean())) ** 2
    f = np.hypot(np.fft.fftfreq(96)[:, None], np.fft.fftfreq(112)[None, :])
    assert spec[f > 0.4].sum() / spec.sum() < 0.01


def test_make_object_rejects_bad_input():
    with pytest.raises(SimulationError, match="allowed: lines, dead_leaves, natural"):
        make_object("clouds", 64, 0)
    with pytest.raises(SimulationError, match="size_px"):
        make_object("lines", 4, 0)
    with pytest.raises(SimulationError, match="seed"):
        make_object("lines", 64, -1)


def test_gaussian_probe_matches_formula():
    N, sigma, q = 64, 6.0, 1.5
    probe = make_probe("gaussian", N, sigma_px=sigma, quadratic_phase_rad=q)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    yy, xx = np.mgrid[0:N, 0:N] - N // 2
    r2 = (yy**2 + xx**2) / sigma**2
    np.testing.assert_allclose(probe, np.exp(-r2 / 2) * np.exp(1j * q * r2), atol=1e-6)


def test_aperture_probe_matches_fresnel_propagation_and_is_compact():
    N = 64
    radius_px, z_m, lam_m, dx_m = 8.0, 30e-6, 1.24e-10, 10e-9
    probe = make_probe("aperture", N, aperture_radius_px=radius_px, defocus_m=z_m,
                       wavelength_m=lam_m, pixel_size_m=dx_m)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    assert np.abs(probe).max() == pytest.approx(1.0, abs=1e-6)
    # independent: paraxial Fresnel transfer function exp(-i pi lambda z f^2) on a 4N grid
    big = 4 * N
    gy, gx = np.mgrid[0:big, 0:big] - big // 2
    aperture = np.clip(radius_px + 0.5 - np.hypot(gy, gx), 0, 1)
    f = np.fft.fftfreq(big, d=dx_m)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    field = np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(aperture)) * np.exp(-1j * np.pi * lam_m * z_m * f2))
    field = np.fft.fftshift(field)[big // 2 - N // 2: big // 2 + N // 2, big // 2 - N // 2: big // 2 + N // 2]
    field /= np.abs(field).max()
    np.testing.assert_allclose(probe, field, atol=2e-3)
    # default probe: most power in the central N/2 and Fresnel rings (radial profile not monotonic)
    default = make_probe("aperture", N)
    power = np.abs(default) ** 2
    assert power[N // 4: 3 * N // 4, N // 4: 3 * N // 4].sum() / power.sum() > 0.99
    profile = np.abs(default[N // 2, N // 2: N // 2 + N // 4])
    assert np.any(np.diff(profile) > 0)


def test_make_probe_rejects_bad_input():
    with pytest.raises(SimulationError, match="allowed"):
        make_probe("bessel", 64)
    with pytest.raises(SimulationError, match="even"):
        make_probe("gaussian", 63)
    with pytest.raises(SimulationError, match="defocus_m"):
        make_probe("aperture", 64, defocus_m=-1.0)


# --------------------------------------------------------------------------- CLI


def test_cli_writes_loadable_file(tmp_path, capsys):
    from ptychopinn.data import RawData

    out = tmp_path / "sim.npz"
    rc = simulate_cli.main(["--output", str(out), "--object", "dead_leaves", "--probe", "gaussian",
                   "--scan", "raster", "--n-positions", "9", "--step-px", "6", "--nphotons", "1e4",
                   "--seed", "3", "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and captured.err == ""
    raw = RawData.from_file(out)
    assert raw.diffraction.shape == (9, 64, 64)
    assert raw.labels is not None and raw.object_guess is not None
    totals = (raw.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2))
    assert abs(totals.mean() - 1e4) < 5 * np.sqrt(1e4 / 9)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--n-positions", "0"], "--n-positions"),
        (["--nphotons", "-5"], "--nphotons"),
        (["--nphotons", "nan"], "--nphotons"),
        (["--step-px", "0"], "--step-px"),
        (["--jitter-px", "-1"], "--jitter-px"),
        (["--seed", "-2"], "--seed"),
        (["--N", "100"], "--N"),
        (["--object", "cats"], "--object"),
        (["--n-positions", "ten"], "--n-positions"),
    ],
)
def test_cli_rejects_bad_values_with_exit_code_2(tmp_path, capsys, args, needle):
    out = tmp_path / "x.npz"
    with pytest.raises(SystemExit) as exc:
        simulate_cli.main(["--output", str(out), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_rejects_bad_output_paths(tmp_path, capsys):
    for output, needle in [(tmp_path / "x.txt", ".npz"), (tmp_path / "missing" / "x.npz", "directory")]:
        with pytest.raises(SystemExit) as exc:
            simulate_cli.main(["--output", str(output)])
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        simulate_cli.main([])
    assert exc.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_cli_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        simulate_cli.main(["--help"])
    assert exc.value.code == 0
    assert "--nphotons" in capsys.readouterr().out


# --------------------------------------------------------------------------- fixture


def test_committed_fixture_is_small_complete_and_consistent():
    from ptychopinn.data import RawData

    assert FIXTURE.is_file(), "run python scripts/make_test_fixture.py"
    assert FIXTURE.stat().st_size < 1_000_000
    raw = RawData.from_file(FIXTURE)
    assert raw.diffraction.shape == (64, 64, 64) and raw.diffraction.dtype == np.float32
    assert raw.xcoords.shape == (64,) and raw.probe_guess.shape == (64, 64)
    assert raw.object_guess is not None and raw.labels is not None
    with zipfile.ZipFile(FIXTURE) as zf:
        assert {"objectGuess.npy", "Y.npy"} <= set(zf.namelist())
    # integer positions: labels are exact slices of the object
    x, y = raw.xcoords.astype(int), raw.ycoords.astype(int)
    np.testing.assert_array_equal(raw.xcoords, x)
    for k in (0, 27, 63):
        np.testing.assert_array_equal(raw.labels[k], raw.object_guess[y[k] - 32: y[k] + 32, x[k] - 32: x[k] + 32])
    counts = raw.diffraction.astype(np.float64) ** 2
    expected = np.abs(_far_field_reference(raw.probe_guess.astype(np.complex128) * raw.labels)) ** 2
    assert expected.sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=1e-4)
    assert abs(counts.sum(axis=(1, 2)).mean() - 1e5) < 5 * np.sqrt(1e5 / 64)


def test_fixture_generation_is_deterministic(tmp_path):
    a = sim.make_minimal_fixture(tmp_path / "a.npz")
    b = sim.make_minimal_fixture(tmp_path / "b.npz")
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(b.read_bytes()).hexdigest()
    with np.load(a) as fa, np.load(FIXTURE) as fc:
        assert sorted(fa.files) == sorted(fc.files)
        for key in fa.files:
            np.testing.assert_array_equal(fa[key], fc[key])


# ------------------------------------------------------------ seed 002's datagen knobs
def test_beamstop_zeroes_the_centre_of_every_pattern():
    plain = sim.simulate_dataset("dead_leaves", "aperture", 64, 9, "raster", step_px=6.0,
                                 nphotons=1e5, seed=2)
    stopped = sim.simulate_dataset("dead_leaves", "aperture", 64, 9, "raster", step_px=6.0,
                                   nphotons=1e5, seed=2, beamstop_diameter=4)
    mask = sim.beamstop_mask(64, 4)
    assert mask.sum() == 9 and mask[32, 32] and mask[33, 33] and not mask[32, 34]  # r < 2 px
    assert np.all(stopped.diffraction[:, mask] == 0) and np.all(plain.diffraction[:, mask] > 0)
    np.testing.assert_array_equal(stopped.diffraction[:, ~mask], plain.diffraction[:, ~mask])
    with pytest.raises(sim.SimulationError, match="beamstop_diameter"):
        sim.simulate_dataset(N=64, n_positions=4, beamstop_diameter=64)


def test_objects_per_probe_share_one_probe_and_differ_in_object():
    sets = sim.simulate_datasets(3, seed=1, object_kind="dead_leaves", N=64, n_positions=9,
                                 scan_kind="raster", step_px=6.0, nphotons=1e5)
    assert len(sets) == 3
    for other in sets[1:]:
        np.testing.assert_array_equal(other.probe_guess, sets[0].probe_guess)
        assert not np.array_equal(other.object_guess, sets[0].object_guess)
    single = sim.simulate_dataset("dead_leaves", N=64, n_positions=9, scan_kind="raster",
                                  step_px=6.0, nphotons=1e5, seed=1)
    np.testing.assert_array_equal(sets[0].diffraction, single.diffraction)


def test_cli_seed_datagen_flags(tmp_path, capsys):
    out = tmp_path / "scan.npz"
    rc = simulate_cli.main(["--output", str(out), "--object_class", "dead_leaves",
                            "--diff_per_object", "9", "--objects_per_probe", "2",
                            "--beamstop_diameter", "2", "--scan", "raster", "--step_px", "6",
                            "--nphotons", "1e4", "--quiet"])
    assert rc == 0
    paths = capsys.readouterr().out.split()
    assert paths == [str(tmp_path / "scan_obj0.npz"), str(tmp_path / "scan_obj1.npz")]
    from ptychopinn.data import RawData

    first, second = (RawData.from_file(p) for p in paths)
    assert first.n_positions == second.n_positions == 9
    np.testing.assert_array_equal(first.probe_guess, second.probe_guess)
    assert np.all(first.diffraction[:, 32, 32] == 0)
    assert not out.exists()
    with pytest.raises(SystemExit) as info:
        simulate_cli.main(["--output", str(out), "--objects_per_probe", "0"])
    assert info.value.code == 2
    assert "--objects_per_probe" in capsys.readouterr().err


def test_probe_radius_and_integer_positions() -> None:
    small = simulate_dataset("dead_leaves", n_positions=9, scan_kind="spiral", seed=1)
    wide = simulate_dataset("dead_leaves", n_positions=9, scan_kind="spiral", seed=1,
                            probe_radius_px=16, integer_positions=True)

    def rms_radius(probe: np.ndarray) -> float:
        w = np.abs(probe) ** 2
        yy, xx = np.mgrid[0:64, 0:64] - 32
        return float(np.sqrt((w * (xx**2 + yy**2)).sum() / w.sum()))

    assert rms_radius(wide.probe_guess) > 1.6 * rms_radius(small.probe_guess)
    assert np.any(small.xcoords % 1) and not np.any(wide.xcoords % 1)
    assert not np.any(wide.ycoords % 1)
    np.testing.assert_allclose(wide.xcoords, np.round(small.xcoords))
    gauss = simulate_dataset("lines", probe_kind="gaussian", n_positions=4, probe_radius_px=4)
    assert rms_radius(gauss.probe_guess) < rms_radius(simulate_dataset(
        "lines", probe_kind="gaussian", n_positions=4).probe_guess)


def test_cli_probe_radius_and_integer_positions(tmp_path) -> None:
    from ptychopinn.cli.simulate import main

    out = tmp_path / "scan.npz"
    assert main(["--output", str(out), "--n-positions", "9", "--probe-radius-px", "16",
                 "--integer-positions", "--quiet"]) == 0
    with np.load(out) as saved:
        assert not np.any(saved["xcoords"] % 1)
    with pytest.raises(SystemExit) as exc:
        main(["--output", str(out), "--probe-radius-px", "40"])
    assert exc.value.code == 2
