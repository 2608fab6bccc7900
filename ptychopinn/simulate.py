"""Synthetic ptychography data: objects, probes, scans and Poisson diffraction.

Everything here follows ``specs/conventions.md``: positions are probe-centre positions in
object pixels (x = column, y = row), a patch of side N for position (x, y) covers object
pixels ``x - N/2 + j`` / ``y - N/2 + i`` (bilinear interpolation for sub-pixel positions,
zero outside the object), and the far field is
``fftshift(fft2(ifftshift(psi), norm="ortho"))``. Diffraction is returned as amplitude,
``sqrt(photon counts)``, float32, shape (n, N, N).

The generators are seeded and deterministic. ``specs/simulation_and_metrics.md`` describes
them in full. Command line: ``ptychopinn simulate --help`` (``ptychopinn.cli.simulate``).
"""

from __future__ import annotations

import io
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ptychopinn.errors import InputError

if TYPE_CHECKING:  # data.py is imported lazily so this module works on its own
    from ptychopinn.data import RawData

__all__ = [
    "AMPLITUDE_RANGE",
    "FIXTURE_NAME",
    "OBJECT_KINDS",
    "PHASE_MAX_RAD",
    "PRETRAIN_N_OBJECTS",
    "PRETRAIN_OBJECT_KINDS",
    "PROBE_KINDS",
    "SCAN_KINDS",
    "SimulationError",
    "extract_patches",
    "far_field",
    "make_minimal_fixture",
    "make_object",
    "make_probe",
    "make_scan",
    "required_object_size_px",
    "scale_probe_to_photons",
    "beamstop_mask",
    "check_pretraining_inputs",
    "simulate_at_positions",
    "simulate_dataset",
    "simulate_pretraining_scans",
    "simulation_memory_bytes",
    "simulate_datasets",
    "simulate_diffraction",
]

OBJECT_KINDS = ("lines", "dead_leaves", "natural")
PROBE_KINDS = ("aperture", "gaussian")
SCAN_KINDS = ("raster", "spiral")
SUPPORTED_N = (64, 128, 256)

#: Object amplitude range (transmission, dimensionless) used by every object kind.
AMPLITUDE_RANGE = (0.3, 1.0)
#: Largest |phase| (radians) of the objects; phases lie in [-PHASE_MAX_RAD, PHASE_MAX_RAD].
PHASE_MAX_RAD = 0.75 * math.pi
#: Gaussian smoothing (pixels) applied to amplitude and phase maps so that objects are
#: band-limited enough to be reconstructed at N = 64.
DEFAULT_SMOOTHING_PX = 1.0
#: Fresnel number a^2 / (lambda z) of the default aperture probe (bright centre, few rings).
APERTURE_FRESNEL_NUMBER = 2.5
#: Distance kept between any scan position and the object edge beyond N/2, pixels.
EDGE_MARGIN_PX = 1.0
#: File name of the small committed test data set.
FIXTURE_NAME = "minimal_dataset_v1.npz"
# Golden angle of the Fermat spiral (radians).
_GOLDEN_ANGLE_RAD = math.pi * (3.0 - math.sqrt(5.0))


class SimulationError(InputError):
    """Invalid simulation input (bad kind, size, count, or positions that do not fit)."""


# --------------------------------------------------------------------------- validation


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise SimulationError(f"{name}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return value


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SimulationError(f"{name} must be a positive integer, got {value!r}")
        return
    if not np.isfinite(value) or value <= 0:
        raise SimulationError(f"{name} must be a finite number > 0, got {value!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")


def _check_photons(nphotons: float) -> None:
    from ptychopinn.data import PHOTONS_PER_PATTERN_RANGE

    low, high = PHOTONS_PER_PATTERN_RANGE
    if not low <= nphotons <= high:
        raise SimulationError(
            f"nphotons={nphotons:g} photons per pattern is outside the range PtychoPINN "
            f"computes with ({low:g} to {high:g})"
        )


#: Bytes per pattern pixel while simulating: patches (complex64), exit waves and far
#: fields (complex128, with shift copies), intensities and counts (float64), amplitude.
SIMULATION_BYTES_PER_PIXEL = 96


def simulation_memory_bytes(kind: str, n_positions: int, N: int, step_px: float,
                            jitter_px: float = 0.0,
                            object_shape: tuple[int, int] | None = None) -> float:
    """Estimated peak memory of :func:`simulate_dataset`, bytes, from the sizes alone
    (nothing is allocated: the scan itself would need 16 bytes per position)."""
    if kind == "raster":
        span = math.ceil(math.sqrt(n_positions)) * step_px
    else:  # Fermat spiral of radius step/sqrt(pi) * sqrt(n)
        span = 2 * step_px / math.sqrt(math.pi) * math.sqrt(n_positions)
    h, w = object_shape or (span + N + 2 * (EDGE_MARGIN_PX + jitter_px) + 2,) * 2
    # extract_patches pads the object to about three times its larger side (complex128).
    padded_side = 3 * max(h, w) + 2 * N + 6
    return (float(n_positions) * N * N * SIMULATION_BYTES_PER_PIXEL
            + 16.0 * padded_side**2 + 64.0 * h * w)


def _check_simulation_memory(kind: str, n_positions: int, N: int, step_px: float,
                             jitter_px: float, object_shape: tuple[int, int] | None) -> None:
    from ptychopinn.resources import memory_shortfall

    needed = simulation_memory_bytes(kind, n_positions, N, step_px, jitter_px, object_shape)
    shortfall = memory_shortfall(needed, f"simulating {n_positions} patterns of {N}x{N} px")
    if shortfall is not None:
        raise SimulationError(f"{shortfall}; simulate fewer positions (n_positions)")


def _as_shape(size_px: int | tuple[int, int]) -> tuple[int, int]:
    shape = (size_px, size_px) if np.isscalar(size_px) else tuple(size_px)
    if len(shape) != 2 or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 8 for s in shape
    ):
        raise SimulationError(f"object size_px must be an int or (H, W) of ints >= 8, got {size_px!r}")
    return int(shape[0]), int(shape[1])


# --------------------------------------------------------------------------- objects


def _to_complex(amp_map: np.ndarray, phase_map: np.ndarray, smoothing_px: float) -> np.ndarray:
    """Map two maps in [0, 1] to amplitude in AMPLITUDE_RANGE and phase in +-PHASE_MAX_RAD."""
    if smoothing_px > 0:
        amp_map = ndimage.gaussian_filter(amp_map, smoothing_px, mode="reflect")
        phase_map = ndimage.gaussian_filter(phase_map, smoothing_px, mode="reflect")
    lo, hi = AMPLITUDE_RANGE
    amplitude = lo + (hi - lo) * np.clip(amp_map, 0.0, 1.0)
    phase = PHASE_MAX_RAD * (2.0 * np.clip(phase_map, 0.0, 1.0) - 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def _segment_coverage(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased bars of random orientation, width and length; two weighted sums."""
    h, w = shape
    amp = np.zeros(shape)
    phase = np.zeros(shape)
    size = min(h, w)
    widths_px = np.array([1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    # Orientations come in families so the pattern has bars at several distinct angles.
    family_angles = rng.uniform(0.0, np.pi, size=6)
    n_bars = max(10, int(40 * h * w / 128**2))
    for _ in range(n_bars):
        angle = family_angles[rng.integers(len(family_angles))] + rng.normal(0.0, 0.02)
        width = widths_px[rng.integers(len(widths_px))]
        length = rng.uniform(0.1, 0.6) * size
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        dy, dx = np.sin(angle), np.cos(angle)
        half = 0.5 * length
        reach = half + width + 2
        y0, y1 = int(max(0, cy - reach)), int(min(h, cy + reach + 1))
        x0, x1 = int(max(0, cx - reach)), int(min(w, cx + reach + 1))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        along = (yy - cy) * dy + (xx - cx) * dx
        across = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
        beyond = np.maximum(np.abs(along) - half, 0.0)
        # 1 inside the bar, a one-pixel linear ramp at the edges (anti-aliasing).
        cover = np.clip(0.5 * width + 0.5 - across, 0.0, 1.0) * np.clip(1.0 - beyond, 0.0, 1.0)
        amp[y0:y1, x0:x1] += rng.uniform(0.3, 1.0) * cover
        phase[y0:y1, x0:x1] += rng.uniform(-1.0, 1.0) * cover
    return amp, phase


def _lines_object(shape: tuple[int, int], rng: np.random.Generator, smoothing_px: float) -> np.ndarray:
    amp, phase = _segment_coverage(shape, rng)
    # Bars absorb (amplitude 1 -> lower) and shift the phase either way.
    amp_map = 1.0 - np.clip(amp, 0.0, 1.0)
    phase_map = 0.5 + 0.5 * np.clip(phase, -1.0, 1.0)
    return _to_complex(amp_map, phase_map, smoothing_px)


def _dead_leaves_object(shape: tuple[int, int], rng: np.random.Generator,
                        smoothing_px: float) -> np.ndarray:
    h, w = shape
    amp = np.full(shape, rng.uniform(0.0, 1.0))
    phase = np.full(shape, rng.uniform(0.0, 1.0))
    r_min, r_max = 2.0, max(4.0, min(h, w) / 5.0)
    # Radii follow the scale-invariant density p(r) ~ r^-3 (inverse-CDF sampling).
    n_shapes = max(40, int(400 * h * w / 128**2))
    u = rng.uniform(size=n_shapes)
    radii = 1.0 / np.sqrt(1.0 / r_min**2 - u * (1.0 / r_min**2 - 1.0 / r_max**2))
    for r in radii:
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        y0, y1 = int(max(0, cy - r - 2)), int(min(h, cy + r + 3))
        x0, x1 = int(max(0, cx - r - 2)), int(min(w, cx + r + 3))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ry, rx = yy - cy, xx - cx
        kind = rng.integers(3)
        if kind == 0:  # disc
            dist = np.hypot(ry, rx) - r
        elif kind == 1:  # ellipse (approximate signed distance is enough for a soft edge)
            theta, aspect = rng.uniform(0, np.pi), rng.uniform(0.4, 1.0)
            u_ = rx * np.cos(theta) + ry * np.sin(theta)
            v_ = (-rx * np.sin(theta) + ry * np.cos(theta)) / aspect
            dist = np.hypot(u_, v_) - r
        else:  # rotated square
            theta = rng.uniform(0, np.pi / 2)
            u_ = rx * np.cos(theta) + ry * np.sin(theta)
            v_ = -rx * np.sin(theta) + ry * np.cos(theta)
            dist = np.maximum(np.abs(u_), np.abs(v_)) - r / math.sqrt(2.0)
        cover = np.clip(0.5 - dist, 0.0, 1.0)
        amp[y0:y1, x0:x1] += cover * (rng.uniform(0.0, 1.0) - amp[y0:y1, x0:x1])
        phase[y0:y1, x0:x1] += cover * (rng.uniform(0.0, 1.0) - phase[y0:y1, x0:x1])
    return _to_complex(amp, phase, smoothing_px)


def _sample_data_dir() -> Path:
    try:
        import matplotlib
    except ImportError as exc:  # matplotlib is a declared dependency
        raise SimulationError("object kind 'natural' needs matplotlib (its sample images)") from exc
    return Path(matplotlib.get_data_path()) / "sample_data"


def _natural_images() -> tuple[np.ndarray, np.ndarray]:
    """Two unrelated natural images shipped with matplotlib, as float64 in [0, 1]."""
    folder = _sample_data_dir()
    photo_path = folder / "grace_hopper.jpg"  # portrait photograph -> amplitude
    terrain_path = folder / "jacksboro_fault_dem.npz"  # elevation model -> phase
    missing = [str(p) for p in (photo_path, terrain_path) if not p.is_file()]
    if missing:
        raise SimulationError(
            "object kind 'natural' needs matplotlib's sample images, not found: "
            + ", ".join(missing) + "; use kind 'lines' or 'dead_leaves' instead"
        )
    from matplotlib import image as mpl_image

    photo = np.asarray(mpl_image.imread(photo_path), dtype=np.float64)
    if photo.ndim == 3:
        photo = photo[..., :3] @ np.array([0.299, 0.587, 0.114])
    with np.load(terrain_path) as f:
        terrain = np.asarray(f["elevation"], dtype=np.float64)

    def unit(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / (a.max() - a.min())

    return unit(photo), unit(terrain)


def _random_view(image: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A seeded random crop (60-100 % of the short side), flip and quarter turn, resized."""
    k = int(rng.integers(4))
    image = np.rot90(image, k)
    if rng.integers(2):
        image = image[:, ::-1]
    h, w = image.shape
    aspect = shape[1] / shape[0]
    side = rng.uniform(0.6, 1.0) * min(h, w / aspect)
    ch, cw = max(8, int(side)), max(8, int(side * aspect))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = image[y0:y0 + ch, x0:x0 + cw]
    zoom = (shape[0] / crop.shape[0], shape[1] / crop.shape[1])
    out = ndimage.zoom(crop, zoom, order=1, grid_mode=True, mode="nearest")
    out = out[: shape[0], : shape[1]]
    if out.shape != shape:  # zoom may come out one pixel short
        out = np.pad(out, [(0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])], mode="edge")
    return out


def _natural_object(shape: tuple[int, int], rng: np.random.Generator, smoothing_px: float) -> np.ndarray:
    photo, terrain = _natural_images()
    amp_map = _random_view(photo, shape, rng)
    phase_map = _random_view(terrain, shape, rng)
    # Rescale each to the full [0, 1] span so every view uses the whole amplitude/phase range.
    amp_map = (amp_map - amp_map.min()) / max(np.ptp(amp_map), 1e-12)
    phase_map = (phase_map - phase_map.min()) / max(np.ptp(phase_map), 1e-12)
    return _to_complex(amp_map, phase_map, smoothing_px)


def make_object(kind: str, size_px: int | tuple[int, int], seed: int = 0,
                smoothing_px: float = DEFAULT_SMOOTHING_PX) -> np.ndarray:
    """A seeded synthetic complex object, complex64 of shape (H, W).

    Amplitude (transmission) lies in ``AMPLITUDE_RANGE`` = [0.3, 1.0], phase (radians) in
    ``[-PHASE_MAX_RAD, PHASE_MAX_RAD]`` (+-0.75 pi). Kinds:

    - ``"lines"``: bars of widths 1-6 px at six random orientations, each bar absorbing and
      shifting the phase by its own random amount.
    - ``"dead_leaves"``: overlapping discs, ellipses and squares (radii 2 px to min(H, W)/5,
      density ~ r^-3), each with a random amplitude and phase, later shapes on top.
    - ``"natural"``: amplitude from a photograph and phase from a terrain elevation model,
      both shipped with matplotlib; the seed picks the crop, flip and rotation.

    ``smoothing_px`` is the sigma (pixels) of the Gaussian applied to the amplitude and phase
    maps so that edges are soft (band-limited); 0 disables it.
    """
    _check_choice("kind", kind, OBJECT_KINDS)
    shape = _as_shape(size_px)
    _check_seed(seed)
    if not np.isfinite(smoothing_px) or smoothing_px < 0:
        raise SimulationError(f"smoothing_px must be >= 0, got {smoothing_px!r}")
    rng = np.random.default_rng(seed)
    if kind == "lines":
        return _lines_object(shape, rng, smoothing_px)
    if kind == "dead_leaves":
        return _dead_leaves_object(shape, rng, smoothing_px)
    return _natural_object(shape, rng, smoothing_px)


# --------------------------------------------------------------------------- probes


def _angular_spectrum(field: np.ndarray, distance_m: float, wavelength_m: float,
                      pixel_size_m: float) -> np.ndarray:
    """Propagate a field (origin at [0, 0]) by distance_m with the angular spectrum method."""
    n_y, n_x = field.shape
    fy = np.fft.fftfreq(n_y, d=pixel_size_m)[:, None]
    fx = np.fft.fftfreq(n_x, d=pixel_size_m)[None, :]
    f2 = fx**2 + fy**2
    k_inv = 1.0 / wavelength_m
    arg = k_inv**2 - f2
    propagating = arg > 0
    # exp(2 pi i z (sqrt(1/lam^2 - f^2) - 1/lam)), rewritten to avoid cancellation; the
    # dropped exp(2 pi i z / lam) is a global phase.
    phase = -2.0 * np.pi * distance_m * f2 / (k_inv + np.sqrt(np.where(propagating, arg, 0.0)))
    transfer = np.where(propagating, np.exp(1j * phase), 0.0)
    return np.fft.ifft2(np.fft.fft2(field) * transfer)


def make_probe(kind: str, N: int, *, aperture_radius_px: float | None = None,
               defocus_m: float | None = None, wavelength_m: float = 1.24e-10,
               pixel_size_m: float = 10e-9, sigma_px: float | None = None,
               quadratic_phase_rad: float = 1.0) -> np.ndarray:
    """A complex64 probe of shape (N, N), centred on pixel [N//2, N//2], peak amplitude 1.

    - ``"aperture"``: a circular aperture of radius ``aperture_radius_px`` (default N/8 px,
      one-pixel soft edge) propagated by ``defocus_m`` metres (angular spectrum, on a 4N
      grid so nothing wraps) at ``wavelength_m`` with object pixels of ``pixel_size_m``.
      The default distance gives the Fresnel number a^2 / (lambda z) = 2.5 (a = radius in
      metres): a bright centre inside Fresnel rings, with >99 % of the power inside the
      central N/2 x N/2 region.
    - ``"gaussian"``: amplitude exp(-r^2 / (2 sigma_px^2)) (default sigma N/12 px) times the
      quadratic phase exp(i quadratic_phase_rad (r / sigma_px)^2).

    The absolute scale is set later by :func:`scale_probe_to_photons`.
    """
    _check_choice("kind", kind, PROBE_KINDS)
    _check_positive("N", N, integer=True)
    if N % 2:
        raise SimulationError(f"N must be even, got {N}")
    yy, xx = np.mgrid[0:N, 0:N] - N // 2
    if kind == "gaussian":
        sigma_px = N / 12.0 if sigma_px is None else sigma_px
        _check_positive("sigma_px", sigma_px)
        if not np.isfinite(quadratic_phase_rad):
            raise SimulationError(f"quadratic_phase_rad must be finite, got {quadratic_phase_rad!r}")
        r2 = (yy**2 + xx**2) / sigma_px**2
        probe = np.exp(-0.5 * r2) * np.exp(1j * quadratic_phase_rad * r2)
    else:
        aperture_radius_px = N / 8.0 if aperture_radius_px is None else aperture_radius_px
        _check_positive("aperture_radius_px", aperture_radius_px)
        _check_positive("wavelength_m", wavelength_m)
        _check_positive("pixel_size_m", pixel_size_m)
        if aperture_radius_px > N / 2:
            raise SimulationError(f"aperture_radius_px={aperture_radius_px} exceeds N/2={N / 2}")
        radius_m = aperture_radius_px * pixel_size_m
        if defocus_m is None:
            defocus_m = radius_m**2 / (wavelength_m * APERTURE_FRESNEL_NUMBER)
        _check_positive("defocus_m", defocus_m)
        big = 4 * N
        gy, gx = np.mgrid[0:big, 0:big] - big // 2
        aperture = np.clip(aperture_radius_px + 0.5 - np.hypot(gy, gx), 0.0, 1.0)
        field = np.fft.fftshift(_angular_spectrum(np.fft.ifftshift(aperture), defocus_m,
                                                  wavelength_m, pixel_size_m))
        c = big // 2
        probe = field[c - N // 2: c + N // 2, c - N // 2: c + N // 2]
    probe = probe / np.abs(probe).max()
    return probe.astype(np.complex64)


# --------------------------------------------------------------------------- scans


def _scan_offsets(kind: str, n_positions: int, step_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions relative to the scan's bounding-box origin (min x = min y = 0)."""
    if kind == "raster":
        n_cols = math.ceil(math.sqrt(n_positions))
        idx = np.arange(n_positions)
        x = (idx % n_cols) * step_px
        y = (idx // n_cols) * step_px
    else:
        # Fermat spiral r = c sqrt(k): uniform density of one position per step_px^2.
        k = np.arange(n_positions, dtype=np.float64)
        r = step_px / math.sqrt(math.pi) * np.sqrt(k)
        theta = k * _GOLDEN_ANGLE_RAD
        x, y = r * np.cos(theta), r * np.sin(theta)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return x - x.min(), y - y.min()


def required_object_size_px(kind: str, n_positions: int, N: int, step_px: float,
                            jitter_px: float = 0.0) -> tuple[int, int]:
    """Smallest (H, W) object in which :func:`make_scan` fits these positions, pixels."""
    _check_choice("scan kind", kind, SCAN_KINDS)
    x, y = _scan_offsets(kind, n_positions, step_px)
    pad = N + 2 * (EDGE_MARGIN_PX + jitter_px) + 2  # +2: integer rounding of the origin
    return int(math.ceil(np.ptp(y) + pad)), int(math.ceil(np.ptp(x) + pad))


def make_scan(kind: str, n_positions: int, object_shape: tuple[int, int], N: int, step_px: float,
              jitter_px: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probe-centre scan positions ``(xcoords, ycoords)``, float64 object pixels, shape (n,).

    ``"raster"``: a grid of ceil(sqrt(n)) columns, row by row, spacing ``step_px``.
    ``"spiral"``: a Fermat spiral (golden-angle increments, radius ~ sqrt(k)) with one
    position per ``step_px``^2 of area, so its mean spacing matches a raster of ``step_px``.
    The pattern is centred in ``object_shape`` (the bounding-box origin is rounded to whole
    pixels, so integer steps give integer raster positions), then each coordinate gets a
    uniform jitter in [-jitter_px, jitter_px]. Every position is at least N/2 + 1 pixels from
    every object edge: x in [N/2 + 1, W - 1 - (N/2 + 1)], likewise y.
    """
    _check_choice("scan kind", kind, SCAN_KINDS)
    _check_positive("n_positions", n_positions, integer=True)
    _check_positive("N", N, integer=True)
    _check_positive("step_px", step_px)
    if not np.isfinite(jitter_px) or jitter_px < 0:
        raise SimulationError(f"jitter_px must be >= 0, got {jitter_px!r}")
    _check_seed(seed)
    h, w = _as_shape(tuple(object_shape))
    x, y = _scan_offsets(kind, n_positions, step_px)
    lo = N / 2 + EDGE_MARGIN_PX
    need_h, need_w = required_object_size_px(kind, n_positions, N, step_px, jitter_px)
    span_y, span_x = np.ptp(y) + 2 * jitter_px, np.ptp(x) + 2 * jitter_px
    if span_y > (h - 1 - 2 * lo) or span_x > (w - 1 - 2 * lo):
        raise SimulationError(
            f"{n_positions} {kind} positions with step_px={step_px} and jitter_px={jitter_px} "
            f"span {span_y:.1f} x {span_x:.1f} px (H x W) but an object of {h} x {w} px with "
            f"N={N} leaves room for {h - 1 - 2 * lo:.1f} x {w - 1 - 2 * lo:.1f} px; "
            f"use an object of at least {need_h} x {need_w} px"
        )
    x0 = max(lo + jitter_px, min(round((w - 1 - np.ptp(x)) / 2), w - 1 - lo - jitter_px - np.ptp(x)))
    y0 = max(lo + jitter_px, min(round((h - 1 - np.ptp(y)) / 2), h - 1 - lo - jitter_px - np.ptp(y)))
    x = x + x0
    y = y + y0
    if jitter_px > 0:
        rng = np.random.default_rng(seed)
        x = x + rng.uniform(-jitter_px, jitter_px, size=n_positions)
        y = y + rng.uniform(-jitter_px, jitter_px, size=n_positions)
    return x.astype(np.float64), y.astype(np.float64)


# --------------------------------------------------------------------------- forward model


def extract_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> np.ndarray:
    """Object patches of side N at probe-centre positions, complex64 (n, N, N).

    Patch ``[k, i, j]`` is the object at column ``x_k - N/2 + j`` and row ``y_k - N/2 + i``
    (object pixels), bilinearly interpolated for sub-pixel positions and zero outside the
    object; integer positions give exact copies of ``obj[y-N//2 : y+N//2, x-N//2 : x+N//2]``.
    """
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise SimulationError(f"object must be 2-D (H, W), got shape {obj.shape}")
    _check_positive("N", N, integer=True)
    x = np.asarray(xcoords, dtype=np.float64).reshape(-1)
    y = np.asarray(ycoords, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise SimulationError(f"xcoords and ycoords differ in length: {x.size} vs {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise SimulationError("xcoords and ycoords must be finite")
    h, w = obj.shape
    # Pad so that every bilinear neighbour of every patch pixel is an array element.
    pad = N + 2
    span_max = max(h, w) + pad
    if np.any(np.abs(x) > span_max) or np.any(np.abs(y) > span_max):
        raise SimulationError(
            f"positions lie far outside the {h} x {w} object (x in [{x.min():.1f}, {x.max():.1f}],"
            f" y in [{y.min():.1f}, {y.max():.1f}])"
        )
    big = np.zeros((h + 2 * pad + 2 * span_max, w + 2 * pad + 2 * span_max), np.complex128)
    off = pad + span_max
    big[off:off + h, off:off + w] = obj
    left = x - N / 2
    top = y - N / 2
    ix = np.floor(left).astype(np.int64)
    iy = np.floor(top).astype(np.int64)
    fx = (left - ix)[:, None, None]
    fy = (top - iy)[:, None, None]
    ar = np.arange(N)
    out = np.empty((x.size, N, N), np.complex64)
    chunk = 512
    for s in range(0, x.size, chunk):
        sl = slice(s, s + chunk)
        rows = (iy[sl] + off)[:, None, None] + ar[None, :, None]
        cols = (ix[sl] + off)[:, None, None] + ar[None, None, :]
        a00 = big[rows, cols]
        a01 = big[rows, cols + 1]
        a10 = big[rows + 1, cols]
        a11 = big[rows + 1, cols + 1]
        fxs, fys = fx[sl], fy[sl]
        out[sl] = ((1 - fys) * ((1 - fxs) * a00 + fxs * a01)
                   + fys * ((1 - fxs) * a10 + fxs * a11))
    return out


def far_field(exit_wave: np.ndarray) -> np.ndarray:
    """Far field of (..., N, N) exit waves, DC at [N//2, N//2], orthonormal FFT (Parseval)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(exit_wave, axes=axes), norm="ortho"),
                           axes=axes)


def _probe_2d(probe: np.ndarray) -> np.ndarray:
    probe = np.asarray(probe)
    if probe.ndim == 3:  # (modes, N, N): the forward model uses mode 0 (conventions.md)
        probe = probe[0]
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise SimulationError(f"probe must be (N, N) or (modes, N, N), got shape {probe.shape}")
    if not np.all(np.isfinite(probe)):
        raise SimulationError("probe contains non-finite values")
    return probe


def _noise_free_intensity(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray,
                          ycoords: np.ndarray) -> np.ndarray:
    probe = _probe_2d(probe)
    patches = extract_patches(obj, xcoords, ycoords, probe.shape[0])
    return np.abs(far_field(patches.astype(np.complex128) * probe)) ** 2


def scale_probe_to_photons(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray,
                           ycoords: np.ndarray, nphotons: float) -> np.ndarray:
    """The probe times the real factor that makes the mean total noise-free counts equal
    ``nphotons`` (photons per pattern) for this object and scan; complex64 like the probe."""
    _check_positive("nphotons", nphotons)
    intensity = _noise_free_intensity(obj, probe, xcoords, ycoords)
    mean_total = intensity.sum(axis=(-2, -1)).mean()
    if not mean_total > 0:
        raise SimulationError("probe x object is zero everywhere; cannot scale to nphotons")
    return (np.asarray(probe) * math.sqrt(nphotons / mean_total)).astype(np.complex64)


def _counts_to_amplitude(expected: np.ndarray, seed: int, poisson: bool) -> np.ndarray:
    if poisson:
        counts = np.random.default_rng(seed).poisson(expected).astype(np.float64)
    else:
        counts = expected
    return np.sqrt(counts).astype(np.float32)


def simulate_diffraction(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray,
                         ycoords: np.ndarray, nphotons: float, seed: int = 0,
                         poisson: bool = True) -> np.ndarray:
    """Diffraction amplitude sqrt(counts), float32 (n, N, N).

    Exit wave = probe x patch (``extract_patches``); far field per conventions.md;
    intensities are scaled so that the mean over patterns of the total noise-free counts is
    ``nphotons``; with ``poisson`` the counts are drawn from
    ``np.random.default_rng(seed).poisson``. A (modes, N, N) probe uses mode 0.
    """
    _check_positive("nphotons", nphotons)
    _check_seed(seed)
    intensity = _noise_free_intensity(obj, probe, xcoords, ycoords)
    mean_total = intensity.sum(axis=(-2, -1)).mean()
    if not mean_total > 0:
        raise SimulationError("probe x object is zero everywhere; cannot scale to nphotons")
    return _counts_to_amplitude(intensity * (nphotons / mean_total), seed, poisson)


def beamstop_mask(N: int, diameter_px: float) -> np.ndarray:
    """True where a centred beamstop of ``diameter_px`` pixels blocks the detector: pixels
    whose centre lies closer than ``diameter_px / 2`` to the DC pixel (N/2, N/2)."""
    yy, xx = np.mgrid[0:N, 0:N]
    return (yy - N // 2) ** 2 + (xx - N // 2) ** 2 < (diameter_px / 2.0) ** 2


def simulate_dataset(object_kind: str = "natural", probe_kind: str = "aperture", N: int = 64,
                     n_positions: int = 512, scan_kind: str = "spiral",
                     step_px: float | None = None, jitter_px: float = 0.0,
                     nphotons: float = 1e6, object_size_px: int | tuple[int, int] | None = None,
                     seed: int = 0, poisson: bool = True, beamstop_diameter: float = 0.0,
                     probe: np.ndarray | None = None, probe_radius_px: float | None = None,
                     integer_positions: bool = False) -> RawData:
    """A complete synthetic data set as ``ptychopinn.data.RawData``.

    ``step_px`` defaults to N/8 pixels; ``object_size_px`` defaults to the smallest object
    that holds the scan (:func:`required_object_size_px`). The probe is scaled with
    :func:`scale_probe_to_photons` and the data are simulated from that scaled probe, so
    ``|far_field(probe_guess * labels[k])|**2`` is the noise-free expected count of pattern k
    (mean total ``nphotons`` photons). A given ``probe`` (complex (N, N), already in photon
    units, e.g. another data set's ``probe_guess``) is used as is instead. ``object_guess``
    is the true object, ``labels`` the true patches, ``scan_index`` zeros.
    ``beamstop_diameter`` (pixels, 0 = none) zeroes the measured amplitude behind a
    centred beamstop (:func:`beamstop_mask`). ``probe_radius_px`` is the aperture radius
    (aperture probe) or the Gaussian sigma (gaussian probe), pixels (default:
    :func:`make_probe`'s). ``integer_positions`` rounds every position to a whole pixel
    (no interpolation in the simulation; iterative solvers that shift the probe by
    Fourier interpolation then model the data exactly). Seeds: object ``seed``, scan
    jitter ``seed + 1``, Poisson noise ``seed + 2``.
    """
    _check_choice("object_kind", object_kind, OBJECT_KINDS)
    _check_choice("probe_kind", probe_kind, PROBE_KINDS)
    _check_choice("scan_kind", scan_kind, SCAN_KINDS)
    _check_positive("N", N, integer=True)
    if N not in SUPPORTED_N:
        raise SimulationError(f"N={N} is not supported; allowed: {', '.join(map(str, SUPPORTED_N))}")
    _check_positive("n_positions", n_positions, integer=True)
    step_px = N / 8.0 if step_px is None else step_px
    _check_positive("step_px", step_px)
    if not np.isfinite(jitter_px) or jitter_px < 0:
        raise SimulationError(f"jitter_px must be >= 0, got {jitter_px!r}")
    _check_positive("nphotons", nphotons)
    _check_photons(nphotons)
    _check_seed(seed)
    _check_simulation_memory(scan_kind, n_positions, N, step_px, jitter_px,
                             None if object_size_px is None else _as_shape(object_size_px))
    if not (np.isfinite(beamstop_diameter) and 0 <= beamstop_diameter < N):
        raise SimulationError(f"beamstop_diameter must be a number of pixels in [0, {N}), "
                              f"got {beamstop_diameter!r}")
    if object_size_px is None:
        shape = required_object_size_px(scan_kind, n_positions, N, step_px, jitter_px)
    else:
        shape = _as_shape(object_size_px)

    xcoords, ycoords = make_scan(scan_kind, n_positions, shape, N, step_px, jitter_px, seed + 1)
    if integer_positions:
        xcoords, ycoords = np.round(xcoords), np.round(ycoords)
    obj = make_object(object_kind, shape, seed)
    if probe is None:
        size = ({} if probe_radius_px is None else
                {"aperture_radius_px" if probe_kind == "aperture" else "sigma_px": probe_radius_px})
        probe = scale_probe_to_photons(obj, make_probe(probe_kind, N, **size), xcoords, ycoords,
                                       nphotons)
    else:
        probe = _probe_2d(np.asarray(probe)).astype(np.complex64)
        if probe.shape != (N, N):
            raise SimulationError(f"probe must be ({N}, {N}), got {probe.shape}")
    return _scan_of_object(obj, probe, xcoords, ycoords, seed + 2, poisson, beamstop_diameter)


def _scan_of_object(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray,
                    ycoords: np.ndarray, noise_seed: int, poisson: bool = True,
                    beamstop_diameter: float = 0.0, with_labels: bool = True) -> RawData:
    """The scan of ``obj`` with ``probe`` (photon units) at the positions: diffraction
    (Poisson noise seeded by ``noise_seed``), the object and, if asked, the labels."""
    from ptychopinn.data import RawData

    n_big = probe.shape[-1]
    labels = extract_patches(obj, xcoords, ycoords, n_big)
    expected = np.abs(far_field(labels.astype(np.complex128) * probe.astype(np.complex128))) ** 2
    diffraction = _counts_to_amplitude(expected, noise_seed, poisson)
    if beamstop_diameter > 0:
        diffraction[:, beamstop_mask(n_big, beamstop_diameter)] = 0.0
    return RawData(
        diffraction=diffraction,
        xcoords=xcoords,
        ycoords=ycoords,
        probe_guess=probe,
        object_guess=obj,
        scan_index=np.zeros(xcoords.size, dtype=np.int64),
        labels=labels if with_labels else None,
    )


def simulate_datasets(objects_per_probe: int = 1, seed: int = 0, **kwargs: object
                      ) -> list[RawData]:
    """``objects_per_probe`` data sets of different objects scanned with one probe (the
    seeds' datagen): data set ``i`` is :func:`simulate_dataset` with seed ``seed + 3 i``,
    and every one uses the first one's photon-scaled probe. ``kwargs`` go to
    :func:`simulate_dataset` (``n_positions`` is the seeds' ``diff_per_object``)."""
    _check_positive("objects_per_probe", objects_per_probe, integer=True)
    first = simulate_dataset(seed=seed, **kwargs)  # type: ignore[arg-type]
    return [first] + [
        simulate_dataset(seed=seed + 3 * i, probe=first.probe_guess, **kwargs)  # type: ignore[arg-type]
        for i in range(1, objects_per_probe)
    ]


# --------------------------------------------------------------------------- pretraining
#: Object kinds of a pretraining, used in turn (``ptychopinn pretrain --object-kinds``).
PRETRAIN_OBJECT_KINDS: tuple[str, ...] = ("dead_leaves", "lines")
#: Synthetic objects (one scan each) of a pretraining (``ptychopinn pretrain --n-objects``).
PRETRAIN_N_OBJECTS = 8


def _positions_in_object(xcoords: np.ndarray, ycoords: np.ndarray, N: int
                         ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """The positions moved by a whole number of pixels (sub-pixel geometry kept) into the
    smallest object that holds them with the margins of :func:`make_scan`: returns
    ``(x, y, (H, W), (dx, dy))``."""
    lo = N / 2 + EDGE_MARGIN_PX
    dx = math.ceil(lo - float(np.min(xcoords)))
    dy = math.ceil(lo - float(np.min(ycoords)))
    x = np.asarray(xcoords, dtype=np.float64) + dx
    y = np.asarray(ycoords, dtype=np.float64) + dy
    shape = (int(math.ceil(float(y.max()) + lo)) + 1, int(math.ceil(float(x.max()) + lo)) + 1)
    return x, y, shape, (dx, dy)


def simulate_at_positions(object_kind: str, probe: np.ndarray, xcoords: np.ndarray,
                          ycoords: np.ndarray, nphotons: float, seed: int = 0,
                          poisson: bool = True, with_labels: bool = True) -> RawData:
    """A scan of a new synthetic object with a given probe and scan geometry.

    The positions (object pixels) are moved by a whole number of pixels, so their
    sub-pixel pattern stays, into the smallest object that holds every patch with the
    margins of :func:`make_scan`; the object is ``make_object(object_kind, that shape,
    seed)``. The probe (mode 0 of a (modes, N, N) probe) is rescaled by one real factor
    (:func:`scale_probe_to_photons`) so that the mean total noise-free counts are
    ``nphotons``; Poisson noise is seeded by ``seed + 2`` (as in :func:`simulate_dataset`).
    """
    _check_choice("object_kind", object_kind, OBJECT_KINDS)
    probe = _probe_2d(np.asarray(probe))
    _check_positive("nphotons", nphotons)
    _check_photons(nphotons)
    _check_seed(seed)
    x, y, shape, _ = _positions_in_object(xcoords, ycoords, probe.shape[0])
    obj = make_object(object_kind, shape, seed)
    scaled = scale_probe_to_photons(obj, probe, x, y, nphotons)
    return _scan_of_object(obj, scaled, x, y, seed + 2, poisson, with_labels=with_labels)


def check_pretraining_inputs(scan: RawData, n_objects: int = PRETRAIN_N_OBJECTS,
                             object_kinds: Sequence[str] = PRETRAIN_OBJECT_KINDS,
                             nphotons: float | None = None, with_labels: bool = False,
                             what: str = "the probe scan") -> float:
    """Everything :func:`simulate_pretraining_scans` can refuse, checked before any
    simulation: the object kinds and count, the probe (finite, not zero), the photons per
    pattern (``nphotons``, else the scan's mean total counts, within
    ``data.PHOTONS_PER_PATTERN_RANGE``) and the memory of the simulated scans. Returns
    the photons per pattern to simulate."""
    from ptychopinn.data import check_photon_scale
    from ptychopinn.grouping import mean_total_counts
    from ptychopinn.resources import memory_shortfall

    if isinstance(n_objects, bool) or not isinstance(n_objects, int | np.integer) \
            or n_objects < 1:
        raise SimulationError(f"n_objects must be an integer >= 1, got {n_objects!r}")
    kinds = list(object_kinds)
    if not kinds:
        raise SimulationError(f"object_kinds is empty; choose from {', '.join(OBJECT_KINDS)}")
    for kind in kinds:
        _check_choice("object kind", kind, OBJECT_KINDS)
    probe = _probe_2d(scan.probe_guess)
    if not np.any(probe):
        raise SimulationError(f"the probeGuess of {what} is zero everywhere; a pretraining "
                              "simulates with that probe, so it needs a real one")
    if nphotons is None:
        nphotons = mean_total_counts(scan.diffraction)
        check_photon_scale(nphotons, f"{what}'s mean total counts (sum of amplitude**2 per "
                           "pattern)", "the diffraction must be amplitude, sqrt(photon "
                           "counts); or give the photons per pattern to simulate (--nphotons)")
    else:
        _check_positive("nphotons", nphotons)
        _check_photons(nphotons)
    n, big_n = scan.n_positions, scan.N
    kept = n_objects * n * big_n * big_n * (4 + (8 if with_labels else 0))
    _, _, shape, _ = _positions_in_object(scan.xcoords, scan.ycoords, big_n)
    peak = kept + simulation_memory_bytes("raster", n, big_n, 1.0, object_shape=shape)
    shortfall = memory_shortfall(peak, f"simulating {n_objects} scans of {n} patterns of "
                                       f"{big_n}x{big_n} px")
    if shortfall is not None:
        raise SimulationError(f"{shortfall}; simulate fewer objects (n_objects)")
    return float(nphotons)


def simulate_pretraining_scans(
    scan: RawData,
    n_objects: int = PRETRAIN_N_OBJECTS,
    object_kinds: Sequence[str] = PRETRAIN_OBJECT_KINDS,
    nphotons: float | None = None,
    seed: int = 0,
    with_labels: bool = False,
    progress: Callable[[int, int, RawData], None] | None = None,
) -> list[RawData]:
    """``n_objects`` synthetic scans for pretraining a network for the experiment ``scan``.

    Scan i images a new object of kind ``object_kinds[i % len(object_kinds)]`` made with
    seed ``seed + 3 i`` (Poisson noise ``seed + 3 i + 2``), with the experiment's own
    probe (``scan.probe_guess``, mode 0) rescaled by a real factor to ``nphotons``
    photons per pattern (default: ``scan``'s mean total counts), at the experiment's own
    positions (moved into an object just large enough: :func:`simulate_at_positions`).
    Labels are kept only ``with_labels`` (supervised training). ``progress(i, n_objects,
    raw)`` is called after each scan. Inputs are checked first
    (:func:`check_pretraining_inputs`).
    """
    nphotons = check_pretraining_inputs(scan, n_objects, object_kinds, nphotons, with_labels)
    _check_seed(seed)
    kinds = list(object_kinds)
    scans = []
    for i in range(n_objects):
        raw = simulate_at_positions(kinds[i % len(kinds)], scan.probe_guess, scan.xcoords,
                                    scan.ycoords, nphotons, seed + 3 * i,
                                    with_labels=with_labels)
        scans.append(raw)
        if progress is not None:
            progress(i + 1, n_objects, raw)
    return scans


# --------------------------------------------------------------------------- fixture


def _write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz archive (readable by np.load) with LZMA-compressed members in sorted order and
    fixed timestamps, so the bytes (and the SHA-256) depend only on the arrays; atomic."""
    from numpy.lib import format as npy_format

    from ptychopinn._io import atomic_output

    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            npy_format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            # LZMA's large dictionary finds the overlap between neighbouring label patches,
            # which lies beyond deflate's 32 KiB window (labels shrink ~20x instead of ~1.1x).
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_LZMA)


def make_minimal_fixture(path: str | os.PathLike) -> Path:
    """Write the small deterministic test data set (``tests/fixtures/minimal_dataset_v1.npz``).

    64 positions on an 8 x 8 raster with 8 px steps (integer positions), N = 64, a
    ``dead_leaves`` object of 128 x 128 px, aperture probe, 1e5 photons per pattern, seed 7,
    with ``objectGuess`` and labels (``Y``). Keys and dtypes are those of ``RawData.save``;
    the archive is LZMA-compressed with fixed timestamps, so the same code gives the same
    bytes (about 0.35 MB).
    """
    path = Path(path)
    raw = simulate_dataset(object_kind="dead_leaves", probe_kind="aperture", N=64, n_positions=64,
                           scan_kind="raster", step_px=8.0, jitter_px=0.0, nphotons=1e5,
                           object_size_px=128, seed=7)
    _write_npz_deterministic(path, raw.to_arrays())
    return path


if __name__ == "__main__":  # python -m ptychopinn.simulate: the command line lives in cli/
    from ptychopinn.cli.simulate import main

    sys.exit(main(prog="python -m ptychopinn.simulate"))
