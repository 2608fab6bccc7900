"""Tests for ptychopinn.metrics with known answers and an independent SSIM written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptychopinn.metrics import (
    FRC_THRESHOLD_HALF,
    FRC_THRESHOLD_ONE_SEVENTH,
    MetricsError,
    apply_shift,
    evaluate_reconstruction,
    frc,
    frc_resolution,
    psnr,
    register_shift,
    remove_phase_offset,
    ssim,
)
from ptychopinn.simulate import make_object


def _smooth_random(shape, seed, cutoff=0.15):
    """A periodic, band-limited real random image with values around 0.5."""
    rng = np.random.default_rng(seed)
    spec = np.fft.fft2(rng.normal(size=shape))
    f = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    img = np.fft.ifft2(spec * (f < cutoff)).real
    return 0.5 + 0.15 * img / img.std()


def _ssim_reference(a, b, data_range):
    """Straightforward SSIM: explicit 11 x 11 Gaussian (sigma 1.5) window at every position
    where it fits, population statistics, mean of the local values."""
    r, sigma = 5, 1.5
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(r, a.shape[0] - r):
        for j in range(r, a.shape[1] - r):
            pa = a[i - r: i + r + 1, j - r: j + r + 1]
            pb = b[i - r: i + r + 1, j - r: j + r + 1]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


# --------------------------------------------------------------------------- SSIM / PSNR


def test_identical_images_give_ssim_one_and_psnr_inf():
    a = _smooth_random((48, 40), 0)
    assert ssim(a, a, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a, data_range=1.0) == math.inf


def test_ssim_matches_independent_implementation():
    rng = np.random.default_rng(1)
    a = _smooth_random((24, 20), 2)
    b = 0.8 * a + 0.1 + rng.normal(0, 0.05, a.shape)
    for data_range in (1.0, 0.3):
        expected = _ssim_reference(a, b, data_range)
        assert ssim(a, b, data_range) == pytest.approx(expected, abs=1e-10)
    assert ssim(a, b, 1.0) < 0.95  # a real difference is seen


def test_ssim_matches_scikit_image_if_installed():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    a = _smooth_random((64, 64), 3)
    b = a + rng.normal(0, 0.05, a.shape)
    expected = skm.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
    assert ssim(a, b, 1.0) == pytest.approx(expected, abs=1e-8)


def test_ssim_and_psnr_validate_input():
    a = _smooth_random((32, 32), 4)
    with pytest.raises(TypeError):
        ssim(a, a)  # data_range is required
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(MetricsError, match="data_range"):
            ssim(a, a, bad)
        with pytest.raises(MetricsError, match="data_range"):
            psnr(a, a, bad)
    with pytest.raises(MetricsError, match="differ in shape"):
        ssim(a, a[:-1], 1.0)
    with pytest.raises(MetricsError, match="at least 11"):
        ssim(a[:8, :8], a[:8, :8], 1.0)
    with pytest.raises(MetricsError, match="real"):
        psnr(a + 0j, a, 1.0)


def test_psnr_of_known_noise_variance():
    rng = np.random.default_rng(5)
    a = _smooth_random((256, 256), 5)
    sigma, data_range = 0.02, 0.8
    noisy = a + rng.normal(0, sigma, a.shape)
    analytic = 10 * math.log10(data_range**2 / sigma**2)
    value = psnr(noisy, a, data_range)
    assert value == pytest.approx(analytic, abs=0.1)
    assert value == pytest.approx(10 * math.log10(data_range**2 / np.mean((noisy - a) ** 2)), abs=1e-10)


# --------------------------------------------------------------------------- FRC


def test_frc_identical_is_one_and_independent_noise_near_zero():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(128, 128))
    freq, curve = frc(a, a)
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5) and len(freq) == 65
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    _, noise_curve = frc(a, rng.normal(size=(128, 128)))
    assert abs(noise_curve[4:].mean()) < 0.03
    assert np.abs(noise_curve[4:]).max() < 0.3
    # complex images work too
    z = a + 1j * rng.normal(size=a.shape)
    np.testing.assert_allclose(frc(z, z)[1], 1.0, atol=1e-12)


def test_frc_resolution_of_band_limited_signal_plus_white_noise():
    rng = np.random.default_rng(7)
    n, cutoff = 128, 0.2
    signal = _smooth_random((n, n), 8, cutoff=cutoff)
    # the signal dominates the noise inside the band; outside it there is only noise
    a = signal + rng.normal(0, 0.05, (n, n))
    b = signal + rng.normal(0, 0.05, (n, n))
    freq, curve = frc(a, b, apodize=False)  # the signal is periodic: no window needed
    for threshold in (FRC_THRESHOLD_HALF, FRC_THRESHOLD_ONE_SEVENTH):
        assert frc_resolution(freq, curve, threshold) == pytest.approx(cutoff, abs=2.0 / n)
    # the default edge taper broadens the spectrum by a few rings
    freq, curve = frc(a, b)
    for threshold in (FRC_THRESHOLD_HALF, FRC_THRESHOLD_ONE_SEVENTH):
        assert cutoff - 2.0 / n <= frc_resolution(freq, curve, threshold) <= cutoff + 0.05


def test_frc_resolution_interpolates_first_crossing():
    freq = np.linspace(0, 0.5, 51)
    curve = 1 - freq / 0.5
    assert frc_resolution(freq, curve, 0.5) == pytest.approx(0.25, abs=1e-12)
    assert frc_resolution(freq, curve, 1 / 7) == pytest.approx(0.5 * 6 / 7, abs=1e-12)
    # first crossing wins even if the curve recovers
    bumpy = curve.copy()
    bumpy[30:] = 0.9
    assert frc_resolution(freq, bumpy, 0.5) == pytest.approx(0.25, abs=1e-12)
    assert frc_resolution(freq, np.ones(51), 0.5) is None  # never crosses: not reached
    with pytest.raises(MetricsError):
        frc_resolution(freq, curve[:-1], 0.5)


# --------------------------------------------------------------------------- alignment


def test_apply_shift_sign_matches_conventions():
    img = _smooth_random((32, 40), 9)
    shifted = apply_shift(img, (3, -5))
    # out[i, j] = in[i - dy, j - dx]
    np.testing.assert_allclose(shifted, np.roll(img, (3, -5), axis=(0, 1)), atol=1e-12)
    assert shifted.dtype == np.float64
    assert np.iscomplexobj(apply_shift(img + 0j, (0.5, 0.5)))


def test_register_circular_subpixel_shift_and_align():
    truth = make_object("dead_leaves", 96, seed=3)
    moved = apply_shift(truth, (2.3, -1.7))
    dy, dx = register_shift(truth, moved)
    assert dy == pytest.approx(2.3, abs=0.02) and dx == pytest.approx(-1.7, abs=0.02)
    aligned = apply_shift(moved, (-dy, -dx))
    amp = np.abs(truth).astype(np.float64)
    data_range = float(np.ptp(amp))
    assert ssim(np.abs(aligned), amp, data_range) > 0.99
    assert ssim(np.abs(moved), amp, data_range) < 0.9  # the shift mattered


@pytest.mark.parametrize("kind", ["dead_leaves", "lines", "natural"])
def test_register_shift_of_crops_from_larger_object(kind):
    big = make_object(kind, 192, seed=1)
    crop = (slice(48, 144), slice(48, 144))
    for shift in [(2.3, -1.7), (-7.45, 11.2)]:
        dy, dx = register_shift(big[crop], apply_shift(big, shift)[crop])
        assert dy == pytest.approx(shift[0], abs=0.05) and dx == pytest.approx(shift[1], abs=0.05)
    # integer shifts of real images: content entering the crop does not bias the estimate
    dy, dx = register_shift(np.abs(big[crop]), np.abs(np.roll(big, (-4, 6), axis=(0, 1))[crop]))
    assert (dy, dx) == (pytest.approx(-4, abs=0.02), pytest.approx(6, abs=0.02))


def test_register_shift_validates_input():
    a = _smooth_random((32, 32), 10)
    with pytest.raises(MetricsError, match="upsample"):
        register_shift(a, a, upsample=0)
    with pytest.raises(MetricsError, match="differ in shape"):
        register_shift(a, a[1:])
    with pytest.raises(MetricsError, match="whitening"):
        register_shift(a, a, whitening=2.0)


def test_constant_phase_offset_removed_exactly():
    truth = make_object("natural", 64, seed=2).astype(np.complex128)
    recon = truth * np.exp(1j * 1.234)
    np.testing.assert_allclose(remove_phase_offset(recon, truth), truth, atol=1e-12)
    # the offset is found even where it wraps past pi
    recon = truth * np.exp(-1j * 3.0)
    np.testing.assert_allclose(remove_phase_offset(recon, truth), truth, atol=1e-12)


def test_phase_ramp_removed():
    truth = make_object("dead_leaves", 80, seed=4).astype(np.complex128)
    yy, xx = np.mgrid[0:80, 0:80]
    recon = truth * np.exp(1j * (0.3 + 0.02 * yy - 0.15 * xx))  # 12 rad across: wraps
    np.testing.assert_allclose(remove_phase_offset(recon, truth, remove_phase_ramp=True), truth,
                               atol=1e-8)
    # without the ramp option only the mean offset goes
    assert np.abs(remove_phase_offset(recon, truth) - truth).max() > 0.5


# --------------------------------------------------------------------------- evaluation


def test_evaluate_perfect_reconstruction():
    truth = make_object("dead_leaves", 64, seed=5)
    result = evaluate_reconstruction(truth, truth)
    assert result["amplitude_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert result["phase_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert result["amplitude_psnr_db"] > 100 and result["phase_psnr_db"] > 100
    assert result["shift_dy_px"] == 0.0 and result["shift_dx_px"] == 0.0
    # A perfect match never drops below either FRC threshold: "not reached", not Nyquist.
    for key in ("frc50", "frc1_7"):
        for name in ("amplitude", "phase"):
            assert result[f"{name}_{key}_cycles_per_px"] is None
            assert result[f"{name}_{key}_period_px"] is None
    assert result["n_pixels"] == 64 * 64
    assert all(isinstance(v, float) for v in result.values() if v is not None)
    assert json.loads(json.dumps(result))["phase_frc1_7_period_px"] is None


def test_evaluate_aligns_shift_phase_offset_and_amplitude_scale():
    truth = make_object("natural", 128, seed=3)
    recon = 2.5 * apply_shift(truth, (2.3, -1.7)) * np.exp(1j * 0.7)
    region = (slice(20, 108), slice(20, 108))
    result = evaluate_reconstruction(recon, truth, region=region)
    assert result["shift_dy_px"] == pytest.approx(2.3, abs=0.05)
    assert result["shift_dx_px"] == pytest.approx(-1.7, abs=0.05)
    assert result["phase_offset_rad"] == pytest.approx(0.7, abs=0.01)
    assert result["amplitude_ssim"] > 0.99 and result["phase_ssim"] > 0.99
    assert result["n_pixels"] == 88 * 88
    amp = np.abs(truth[region]) / np.abs(truth[region]).mean()
    assert result["amplitude_data_range"] == pytest.approx(float(np.ptp(amp)), rel=1e-6)
    assert result["phase_data_range_rad"] == pytest.approx(float(np.ptp(np.angle(truth[region]))), rel=1e-6)
    unaligned = evaluate_reconstruction(recon, truth, region=region, align_shift=False)
    assert unaligned["amplitude_ssim"] < 0.9
    assert unaligned["shift_dy_px"] == 0.0


def test_evaluate_with_mask_region_and_phase_plane():
    truth = make_object("dead_leaves", 96, seed=6)
    yy, xx = np.mgrid[0:96, 0:96]
    recon = truth * np.exp(1j * (0.4 + 0.05 * yy - 0.03 * xx))
    mask = np.hypot(yy - 48, xx - 48) < 35
    result = evaluate_reconstruction(recon, truth, region=mask, remove_phase_plane=True)
    assert result["phase_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["phase_ramp_y_rad_per_px"] == pytest.approx(0.05, abs=1e-6)
    assert result["phase_ramp_x_rad_per_px"] == pytest.approx(-0.03, abs=1e-6)
    assert result["n_pixels"] == float(mask.sum())
    plain = evaluate_reconstruction(recon, truth, region=mask)
    assert plain["phase_ssim"] < 0.9


def test_evaluate_noisy_reconstruction_scores_lower():
    rng = np.random.default_rng(11)
    truth = make_object("lines", 96, seed=7)
    noisy = truth + 0.1 * (rng.normal(size=truth.shape) + 1j * rng.normal(size=truth.shape))
    result = evaluate_reconstruction(noisy, truth, region=(slice(8, 88), slice(8, 88)))
    assert 0.2 < result["amplitude_ssim"] < 0.95
    assert 5 < result["amplitude_psnr_db"] < 40
    assert result["amplitude_frc50_cycles_per_px"] < 0.5
    assert result["amplitude_frc1_7_cycles_per_px"] >= result["amplitude_frc50_cycles_per_px"]


def test_evaluate_validates_input():
    truth = make_object("lines", 32, seed=0)
    with pytest.raises(MetricsError, match="differ in shape"):
        evaluate_reconstruction(truth[:-1], truth)
    with pytest.raises(MetricsError, match="at least 11"):
        evaluate_reconstruction(truth, truth, region=(slice(0, 8), slice(0, 20)))
    with pytest.raises(MetricsError, match="region"):
        evaluate_reconstruction(truth, truth, region=np.zeros((32, 32), bool))
    with pytest.raises(MetricsError, match="region"):
        evaluate_reconstruction(truth, truth, region="centre")
    bad = truth.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MetricsError, match="non-finite"):
        evaluate_reconstruction(bad, truth)


def test_illumination_map_sums_the_probe_intensity_at_each_position() -> None:
    from ptychopinn.metrics import illumination_map

    probe = np.zeros((8, 8), np.complex64)
    probe[3:5, 3:5] = 2.0  # |P|^2 = 4 on a 2 x 2 block around the centre pixel [4, 4]
    positions = np.array([[10.0, 10.0], [11.0, 10.0], [10.7, 10.2]])  # (x, y); floor -> 10
    lit = illumination_map(probe, positions, (5, 5), (12, 14))
    expected = np.zeros((12, 14))
    for x, y in np.floor(positions).astype(int):
        rows = slice(y - 4 + 3 - 5, y - 4 + 5 - 5)
        cols = slice(x - 4 + 3 - 5, x - 4 + 5 - 5)
        expected[rows, cols] += 4.0
    np.testing.assert_array_equal(lit, expected)
    assert lit.sum() == 3 * 16
    # a position far outside the canvas adds nothing
    far = illumination_map(probe, np.array([[500.0, 500.0]]), (5, 5), (12, 14))
    assert not far.any()
