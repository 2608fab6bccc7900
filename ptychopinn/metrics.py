"""Image-quality metrics for reconstructions: SSIM, PSNR, FRC, with shift and phase alignment.

All functions take numpy arrays and return plain Python floats (or float64 arrays), so the
results serialise to JSON. Shifts are in pixels with the sign of ``specs/conventions.md``:
translating an image by ``(dy, dx)`` gives ``out[i, j] = in[i - dy, j - dx]``. Spatial
frequencies are in cycles per pixel (Nyquist = 0.5). Definitions, data ranges and the order
of the alignment steps are in ``specs/simulation_and_metrics.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "FRC_THRESHOLD_HALF",
    "FRC_THRESHOLD_ONE_SEVENTH",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA_PX",
    "SSIM_TRUNCATE",
    "MetricsError",
    "apply_shift",
    "evaluate_reconstruction",
    "frc",
    "frc_resolution",
    "illumination_map",
    "psnr",
    "register_shift",
    "remove_phase_offset",
    "ssim",
    "ssim_map",
    "WELL_LIT_FRACTION",
]

#: Pixels whose summed probe intensity reaches this fraction of its maximum are "well lit":
#: the region reconstructions are compared over (the rim beyond is barely measured).
WELL_LIT_FRACTION = 0.5

#: SSIM constants (Wang et al. 2004): Gaussian window sigma (pixels), truncated at
#: SSIM_TRUNCATE sigma (an 11 x 11 window), stabilisers C1 = (K1 L)^2, C2 = (K2 L)^2.
SSIM_SIGMA_PX = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Half-width (pixels) of the SSIM window; map values closer than this to a border are
#: excluded from the mean because their window extends beyond the image.
SSIM_RADIUS_PX = int(SSIM_TRUNCATE * SSIM_SIGMA_PX + 0.5)
#: FRC thresholds: the 0.5 criterion and the 1/7 criterion.
FRC_THRESHOLD_HALF = 0.5
FRC_THRESHOLD_ONE_SEVENTH = 1.0 / 7.0
# Fraction of each side over which frc() / register_shift() taper images to zero (Tukey);
# registration tolerates (and benefits from) a wider taper than FRC.
_FRC_TAPER_FRACTION = 0.125
_REGISTER_TAPER_FRACTION = 0.25


class MetricsError(ValueError):
    """Invalid input to a metric (shape mismatch, non-finite values, bad data range)."""


# --------------------------------------------------------------------------- helpers


def _pair(a: Any, b: Any, *, real: bool, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    for name, x in zip(names, (a, b), strict=True):
        if x.ndim != 2:
            raise MetricsError(f"{name} must be a 2-D image, got shape {x.shape}")
        if real and np.iscomplexobj(x):
            raise MetricsError(f"{name} must be real (take abs() or angle() first), got {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise MetricsError(f"{name} contains non-finite values")
    if a.shape != b.shape:
        raise MetricsError(f"{names[0]} and {names[1]} differ in shape: {a.shape} vs {b.shape}")
    dtype = np.float64 if real else np.complex128
    return a.astype(dtype), b.astype(dtype)


def _check_range(data_range: float) -> float:
    if data_range is None or not np.isfinite(data_range) or data_range <= 0:
        raise MetricsError(f"data_range must be a finite number > 0, got {data_range!r}")
    return float(data_range)


# --------------------------------------------------------------------------- SSIM / PSNR


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Local SSIM of two real images (float64, same shape), Gaussian window sigma 1.5 px.

    Local means, variances and covariance are Gaussian-weighted (population form, no
    n/(n-1) factor); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``.
    Values within ``SSIM_RADIUS_PX`` (5 px) of the border use reflected data.
    """
    a, b = _pair(a, b, real=True)
    L = _check_range(data_range)
    if min(a.shape) < 2 * SSIM_RADIUS_PX + 1:
        raise MetricsError(
            f"SSIM needs images of at least {2 * SSIM_RADIUS_PX + 1} x {2 * SSIM_RADIUS_PX + 1}"
            f" px (the Gaussian window), got {a.shape[0]} x {a.shape[1]}"
        )

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, SSIM_SIGMA_PX, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def _interior(shape: tuple[int, ...]) -> np.ndarray:
    r = SSIM_RADIUS_PX
    inside = np.zeros(shape, bool)
    inside[r:shape[0] - r, r:shape[1] - r] = True
    return inside


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean structural similarity of two real images (1 = identical).

    The mean of :func:`ssim_map` over pixels at least 5 px from the border (the windows that
    fit inside the image), as in Wang et al. 2004. ``data_range`` (the dynamic range L of the
    reference image, same units as the images) is required.
    """
    smap = ssim_map(a, b, data_range)
    return float(smap[_interior(smap.shape)].mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mean((a - b)^2))`` in dB.

    Returns ``inf`` for identical images.
    """
    a, b = _pair(a, b, real=True)
    return _psnr_values(a.ravel(), b.ravel(), _check_range(data_range))


def _psnr_values(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


# --------------------------------------------------------------------------- FRC


def _tukey_2d(shape: tuple[int, int], fraction: float) -> np.ndarray:
    def tukey(n: int) -> np.ndarray:
        w = np.ones(n)
        m = max(1, int(round(fraction * n)))
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(m) + 0.5) / m))
        w[:m] = ramp
        w[n - m:] = ramp[::-1]
        return w

    return np.outer(tukey(shape[0]), tukey(shape[1]))


def frc(a: np.ndarray, b: np.ndarray, apodize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images (real or complex, same 2-D shape).

    Each image has its mean removed and, with ``apodize``, is tapered to zero over the outer
    1/8 of each side (Tukey window) so the image edges do not correlate. Ring k holds the
    Fourier coefficients whose radial frequency rounds to ``k / min(H, W)`` cycles/pixel;
    ``curve[k] = Re sum(F_a conj(F_b)) / sqrt(sum |F_a|^2 sum |F_b|^2)`` (0 for a ring with
    no power). Returns ``(spatial_frequency, curve)``, frequencies in cycles/pixel from 0 to
    0.5, both float64.
    """
    a, b = _pair(a, b, real=False)
    if min(a.shape) < 8:
        raise MetricsError(f"FRC needs images of at least 8 x 8 px, got {a.shape[0]} x {a.shape[1]}")
    a = a - a.mean()
    b = b - b.mean()
    if apodize:
        window = _tukey_2d(a.shape, _FRC_TAPER_FRACTION)
        a, b = a * window, b * window
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    h, w = a.shape
    n = min(h, w)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    ring = np.rint(np.hypot(fy, fx) * n).astype(np.int64).ravel()
    n_rings = n // 2 + 1
    keep = ring < n_rings
    ring = ring[keep]
    cross = np.bincount(ring, (fa * np.conj(fb)).real.ravel()[keep], minlength=n_rings)
    pa = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], minlength=n_rings)
    pb = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], minlength=n_rings)
    denom = np.sqrt(pa * pb)
    curve = np.divide(cross, denom, out=np.zeros(n_rings), where=denom > 0)
    return np.arange(n_rings) / n, curve


def frc_resolution(
    spatial_frequency: np.ndarray, curve: np.ndarray, threshold: float
) -> float | None:
    """First frequency (cycles/pixel) where the FRC curve drops below ``threshold``.

    The search starts at ring 1 (ring 0 is the mean); the crossing is linearly
    interpolated between the last ring at or above the threshold and the first below it.
    If the curve never drops below the threshold, the crossing is not reached and None is
    returned (the curve says nothing about where the resolution lies, so it must not be
    read as full, Nyquist resolution); if ring 1 is already below it, ring 1's frequency
    is returned. The resolved period in pixels is ``1 / frequency``.
    """
    f = np.asarray(spatial_frequency, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    if f.ndim != 1 or f.shape != c.shape or f.size < 2:
        raise MetricsError(f"spatial_frequency and curve must be 1-D of equal length >= 2, "
                           f"got {f.shape} and {c.shape}")
    if not np.isfinite(threshold):
        raise MetricsError(f"threshold must be finite, got {threshold!r}")
    below = np.nonzero(c[1:] < threshold)[0]
    if below.size == 0:
        return None
    k = int(below[0]) + 1
    if k == 1:
        return float(f[1])
    c0, c1 = c[k - 1], c[k]
    t = (c0 - threshold) / (c0 - c1)
    return float(f[k - 1] + t * (f[k] - f[k - 1]))


# --------------------------------------------------------------------------- alignment


def _upsampled_cc(product: np.ndarray, centre: tuple[float, float], upsample: int,
                  size: int) -> np.ndarray:
    """Inverse DFT of ``product`` evaluated on a size x size grid of spacing 1/upsample
    pixels centred on ``centre`` (matrix-multiply DFT; Guizar-Sicairos et al. 2008)."""
    h, w = product.shape
    offsets = (np.arange(size) - size // 2) / upsample
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    ey = np.exp(2j * np.pi * np.outer(centre[0] + offsets, ky) / h)
    ex = np.exp(2j * np.pi * np.outer(kx, centre[1] + offsets) / w)
    return ey @ product @ ex


def _tukey_at(coords: np.ndarray, n: int, fraction: float) -> np.ndarray:
    """Continuous Tukey window of an n-sample axis evaluated at (shifted) pixel coordinates;
    it equals the window of :func:`_tukey_2d` at integer coordinates and is 0 outside."""
    m = max(1, int(round(fraction * n)))
    t = np.minimum(coords + 0.5, n - 0.5 - coords)  # distance into the axis from its nearer end
    ramp = 0.5 * (1 - np.cos(np.pi * np.clip(t, 0.0, m) / m))
    return np.where(t <= 0, 0.0, ramp)


def _correlation_peak(a: np.ndarray, b: np.ndarray, upsample: int,
                      whitening: float) -> tuple[float, float]:
    product = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    if whitening > 0:
        modulus = np.abs(product)
        floor = 1e-12 * modulus.max() if modulus.max() > 0 else 1.0
        product = product / np.maximum(modulus, floor) ** whitening
    cc = np.abs(np.fft.ifft2(product))
    h, w = a.shape
    py, px = np.unravel_index(int(np.argmax(cc)), cc.shape)
    dy = float(py - h if py > h // 2 else py)
    dx = float(px - w if px > w // 2 else px)
    if upsample > 1:
        size = int(math.ceil(1.5 * upsample)) | 1  # odd, so the coarse peak is on the grid
        fine = np.abs(_upsampled_cc(product, (dy, dx), upsample, size))
        my, mx = np.unravel_index(int(np.argmax(fine)), fine.shape)
        dy += (my - size // 2) / upsample
        dx += (mx - size // 2) / upsample
    return dy, dx


def register_shift(ref: np.ndarray, moving: np.ndarray, upsample: int = 100,
                   whitening: float = 0.5, apodize: bool = True) -> tuple[float, float]:
    """Sub-pixel translation ``(dy, dx)`` (pixels) of ``moving`` relative to ``ref``.

    ``moving[i, j] ~ ref[i - dy, j - dx]``, so ``apply_shift(moving, (-dy, -dx))`` aligns
    it with ``ref``. Method: the cross-power spectrum ``F_moving conj(F_ref)`` of the
    mean-subtracted images (real or complex) is divided by its modulus to the power
    ``whitening`` (0 = plain cross-correlation, 1 = phase correlation; 0.5 balances the
    sharp peak of phase correlation against its noise sensitivity); its inverse FFT peaks
    at the shift, found to one pixel and refined to ``1/upsample`` pixel by an upsampled DFT
    over +-0.75 px (Guizar-Sicairos et al. 2008). With ``apodize`` both images are tapered
    to zero over the outer 1/4 of each side (Tukey window) so their edges do not correlate,
    and the estimate is iterated with the window of ``moving`` translated by the current
    estimate, so both tapered images hold the same content (removes the bias that content
    entering or leaving the field of view causes). Noise-free shifted copies, circular or
    cropped from a larger image, are recovered to about ``1/upsample`` pixel.
    """
    ref, moving = _pair(ref, moving, real=False, names=("ref", "moving"))
    if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or upsample < 1:
        raise MetricsError(f"upsample must be an integer >= 1, got {upsample!r}")
    if not (np.isfinite(whitening) and 0.0 <= whitening <= 1.0):
        raise MetricsError(f"whitening must be in [0, 1], got {whitening!r}")
    if not apodize:
        return _correlation_peak(ref - ref.mean(), moving - moving.mean(), int(upsample), whitening)
    h, w = ref.shape
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)

    def tapered(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
        window = np.outer(_tukey_at(rows - dy, h, _REGISTER_TAPER_FRACTION),
                          _tukey_at(cols - dx, w, _REGISTER_TAPER_FRACTION))
        weight = window.sum()
        mean = (image * window).sum() / weight if weight > 0 else image.mean()
        return (image - mean) * window

    a = tapered(ref, 0.0, 0.0)
    shift = _correlation_peak(a, tapered(moving, 0.0, 0.0), int(upsample), whitening)
    for _ in range(3):
        if max(abs(shift[0]) / h, abs(shift[1]) / w) >= _REGISTER_TAPER_FRACTION:
            break  # the translated window would leave the image: keep the first estimate
        new = _correlation_peak(a, tapered(moving, *shift), int(upsample), whitening)
        converged = max(abs(new[0] - shift[0]), abs(new[1] - shift[1])) < 0.5 / upsample
        shift = new
        if converged:
            break
    return shift


def apply_shift(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Translate an image by ``shift = (dy, dx)`` pixels with a Fourier phase ramp.

    ``out[i, j] = image[i - dy, j - dx]`` (circular, band-limited interpolation). Real input
    gives float64 output, complex input complex128.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise MetricsError(f"image must be 2-D, got shape {image.shape}")
    dy, dx = (float(s) for s in shift)
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise MetricsError(f"shift must be finite, got {shift!r}")
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    out = np.fft.ifft2(np.fft.fft2(image) * np.exp(-2j * np.pi * (fy * dy + fx * dx)))
    return out if np.iscomplexobj(image) else out.real


def _phase_fit(recon: np.ndarray, truth: np.ndarray, weights: np.ndarray,
               ramp: bool) -> tuple[float, float, float]:
    """Offset (rad) and, with ``ramp``, gradients (rad/px along y, x) of the phase of
    ``recon`` relative to ``truth``; the plane is centred on the image centre."""
    h, w = recon.shape
    yy, xx = np.mgrid[0:h, 0:w]
    yc, xc = yy - (h - 1) / 2, xx - (w - 1) / 2
    z = recon * np.conj(truth) * weights
    gy = gx = 0.0
    if ramp:
        # Coarse gradient from the Fourier peak of z (a phase ramp is a peak off-centre),
        # then weighted least squares on the wrapped residual, iterated.
        spec = np.abs(np.fft.fft2(z))
        py, px = np.unravel_index(int(np.argmax(spec)), spec.shape)
        gy = 2 * np.pi * np.fft.fftfreq(h)[py]
        gx = 2 * np.pi * np.fft.fftfreq(w)[px]
        wt = np.abs(z).ravel()
        design = np.stack([np.ones(h * w), yc.ravel(), xc.ravel()], axis=1)
        offset = float(np.angle(np.sum(z * np.exp(-1j * (gy * yc + gx * xc)))))
        for _ in range(5):
            model = offset + gy * yc + gx * xc
            resid = np.angle(z * np.exp(-1j * model)).ravel()
            sol, *_ = np.linalg.lstsq(design * wt[:, None], resid * wt, rcond=None)
            offset, gy, gx = offset + sol[0], gy + sol[1], gx + sol[2]
        z = z * np.exp(-1j * (gy * yc + gx * xc))
    offset = float(np.angle(np.sum(z)))
    return offset, float(gy), float(gx)


def _ramp(shape: tuple[int, int], offset: float, gy: float, gx: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-1j * (offset + gy * (yy - (h - 1) / 2) + gx * (xx - (w - 1) / 2)))


def remove_phase_offset(recon: np.ndarray, truth: np.ndarray, remove_phase_ramp: bool = False,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """``recon`` (complex128) with its global phase offset relative to ``truth`` removed.

    The offset is ``angle(sum(recon * conj(truth)))`` over ``mask`` (all pixels if None),
    the least-squares optimum. With ``remove_phase_ramp`` a phase plane
    ``offset + gy (y - yc) + gx (x - xc)`` is fitted (amplitude-weighted least squares on
    the wrapped phase difference) and removed instead.
    """
    recon, truth = _pair(recon, truth, real=False, names=("recon", "truth"))
    weights = _mask_or_all(mask, recon.shape).astype(np.float64)
    offset, gy, gx = _phase_fit(recon, truth, weights, remove_phase_ramp)
    return recon * _ramp(recon.shape, offset, gy, gx)


# --------------------------------------------------------------------------- evaluation


def _mask_or_all(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != shape:
        raise MetricsError(f"mask must be a boolean array of shape {shape}, got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise MetricsError("mask selects no pixels")
    return mask


def _region_box(region: Any, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """(bounding-box slices, boolean mask inside the box) for a region specification."""
    if region is None:
        return (slice(0, shape[0]), slice(0, shape[1])), np.ones(shape, bool)
    if isinstance(region, tuple) and len(region) == 2 and all(isinstance(s, slice) for s in region):
        if any(s.step not in (None, 1) for s in region):
            raise MetricsError(f"region slices must have step 1, got {region!r}")
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, shape, strict=True))
        size = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        if min(size) <= 0:
            raise MetricsError(f"region {region!r} is empty for images of shape {shape}")
        return box, np.ones(size, bool)  # type: ignore[return-value]
    mask = np.asarray(region)
    if mask.dtype != bool or mask.shape != shape:
        raise MetricsError(
            f"region must be None, a (slice, slice) pair or a boolean mask of shape {shape}, "
            f"got {type(region).__name__}"
            + (f" {mask.dtype} {mask.shape}" if isinstance(region, np.ndarray) else "")
        )
    if not mask.any():
        raise MetricsError("region mask selects no pixels")
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return box, mask[box]


def evaluate_reconstruction(recon_complex: np.ndarray, truth_complex: np.ndarray,
                            region: Any = None, align_shift: bool = True,
                            remove_phase_plane: bool = False,
                            upsample: int = 100) -> dict[str, float | None]:
    """Compare a complex reconstruction with the true object; returns a dict of floats
    (None for an FRC resolution that is not reached).

    Steps (see specs/simulation_and_metrics.md):

    1. ``region`` (None = everything, a ``(slice, slice)`` pair, or a boolean mask of the
       scanned area) selects the compared pixels; metrics use its bounding box (>= 11 x 11).
    2. With ``align_shift``, the shift of the reconstruction relative to the truth is found
       on the box (:func:`register_shift`) and removed from the whole reconstruction with
       :func:`apply_shift` before cropping. With ``remove_phase_plane`` a phase plane is
       removed first so it cannot bias the registration.
    3. The global phase offset (and with ``remove_phase_plane`` a linear phase plane) is
       removed over the region (:func:`remove_phase_offset`).
    4. Amplitude: each amplitude is divided by its own mean over the region; data range =
       max - min of the normalised true amplitude (1.0 if the truth amplitude is constant).
    5. Phase (rad): truth phase, and reconstruction phase = truth phase + wrapped phase
       difference (so no spurious 2 pi jumps); data range = max - min of the truth phase
       (2 pi if it is constant).
    6. SSIM (mean of the SSIM map over region pixels >= 5 px inside the box), PSNR (over
       region pixels), FRC (box, pixels outside the region set to the image mean) with the
       0.5 and 1/7 resolutions in cycles/pixel and as periods in pixels.

    Keys: ``amplitude_ssim``, ``amplitude_psnr_db``, ``phase_ssim``, ``phase_psnr_db``,
    ``{amplitude,phase}_frc{50,1_7}_cycles_per_px`` and ``..._period_px``, ``shift_dy_px``,
    ``shift_dx_px`` (recon relative to truth, removed), ``phase_offset_rad``,
    ``phase_ramp_y_rad_per_px``, ``phase_ramp_x_rad_per_px``, ``amplitude_data_range``,
    ``phase_data_range_rad``, ``n_pixels``. PSNR is ``inf`` for a perfect match; an FRC
    resolution whose threshold is never crossed ("not reached") is None.
    """
    recon, truth = _pair(recon_complex, truth_complex, real=False, names=("recon", "truth"))
    box, mask = _region_box(region, recon.shape)
    box_shape = mask.shape
    minimum = 2 * SSIM_RADIUS_PX + 1
    if min(box_shape) < minimum:
        raise MetricsError(
            f"region bounding box is {box_shape[0]} x {box_shape[1]} px; metrics need at least "
            f"{minimum} x {minimum} px"
        )
    if not np.any(mask & _interior(box_shape)):
        raise MetricsError("region has no pixel at least 5 px inside its bounding box (SSIM)")

    pre_gy = pre_gx = 0.0
    if remove_phase_plane:
        _, pre_gy, pre_gx = _phase_fit(recon[box], truth[box], mask.astype(np.float64), True)
        full_h, full_w = recon.shape
        # Re-centre the plane on the full array so it matches the one fitted on the box.
        yy, xx = np.mgrid[0:full_h, 0:full_w]
        y0 = box[0].start + (box_shape[0] - 1) / 2
        x0 = box[1].start + (box_shape[1] - 1) / 2
        recon = recon * np.exp(-1j * (pre_gy * (yy - y0) + pre_gx * (xx - x0)))

    dy = dx = 0.0
    if align_shift:
        dy, dx = register_shift(truth[box], recon[box], upsample=upsample)
        recon = apply_shift(recon, (-dy, -dx))

    r, t = recon[box], truth[box]
    weights = mask.astype(np.float64)
    offset, gy, gx = _phase_fit(r, t, weights, remove_phase_plane)
    r = r * _ramp(box_shape, offset, gy, gx)

    amp_r, amp_t = np.abs(r), np.abs(t)
    mean_r, mean_t = amp_r[mask].mean(), amp_t[mask].mean()
    amp_r = amp_r / mean_r if mean_r > 0 else amp_r
    amp_t = amp_t / mean_t if mean_t > 0 else amp_t
    amp_range = float(np.ptp(amp_t[mask])) or 1.0

    phase_t = np.angle(t)
    phase_r = phase_t + np.angle(r * np.conj(t))
    phase_range = float(np.ptp(phase_t[mask])) or 2 * math.pi

    result: dict[str, float | None] = {}
    ssim_mask = mask & _interior(box_shape)
    for name, rec, tru, rng in (("amplitude", amp_r, amp_t, amp_range),
                                ("phase", phase_r, phase_t, phase_range)):
        result[f"{name}_ssim"] = float(ssim_map(rec, tru, rng)[ssim_mask].mean())
        result[f"{name}_psnr_db"] = _psnr_values(rec[mask], tru[mask], rng)
        rec_f = np.where(mask, rec, rec[mask].mean())
        tru_f = np.where(mask, tru, tru[mask].mean())
        freq, curve = frc(rec_f, tru_f)
        for label, threshold in (("frc50", FRC_THRESHOLD_HALF), ("frc1_7", FRC_THRESHOLD_ONE_SEVENTH)):
            f_cut = frc_resolution(freq, curve, threshold)
            result[f"{name}_{label}_cycles_per_px"] = f_cut
            result[f"{name}_{label}_period_px"] = None if f_cut is None else 1.0 / f_cut
    result.update(
        shift_dy_px=float(dy),
        shift_dx_px=float(dx),
        phase_offset_rad=float(offset),
        phase_ramp_y_rad_per_px=float(gy + pre_gy),
        phase_ramp_x_rad_per_px=float(gx + pre_gx),
        amplitude_data_range=amp_range,
        phase_data_range_rad=phase_range,
        n_pixels=float(mask.sum()),
    )
    return result


def illumination_map(probe: Any, positions_px: Any, origin_px: tuple[float, float],
                     shape: tuple[int, int]) -> np.ndarray:
    """Summed probe intensity ``sum_k |P|**2`` placed at every scan position, on a canvas
    of ``shape`` (H, W) whose pixel [0, 0] is at ``origin_px`` = (x, y) object pixels.

    ``probe`` is (N, N) (or (modes, N, N): mode 0); position (x, y) puts the probe's
    pixel [0, 0] at column ``floor(x) - N//2``, row ``floor(y) - N//2`` (the sub-pixel
    part is ignored: this is for masks). float64 (H, W).
    """
    pr = np.asarray(probe)
    if pr.ndim == 3:
        pr = pr[0]
    n = pr.shape[-1]
    intensity = np.abs(pr.astype(np.complex128)) ** 2
    pos = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    x0, y0 = (int(round(v)) for v in origin_px)
    canvas = np.zeros((h + 2 * n, w + 2 * n))
    cols = np.floor(pos[:, 0]).astype(np.int64) - n // 2 - x0 + n
    rows = np.floor(pos[:, 1]).astype(np.int64) - n // 2 - y0 + n
    for r, c in zip(rows, cols, strict=True):
        if 0 <= r <= h + n and 0 <= c <= w + n:
            canvas[r:r + n, c:c + n] += intensity
    return canvas[n:n + h, n:n + w]
