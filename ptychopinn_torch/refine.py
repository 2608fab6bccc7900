"""Physics refinement of a reconstructed object against the measured diffraction.

After the network (or from a flat start, with no network at all) the whole object is
improved against every measured pattern with the training forward model
(``physics.far_field`` of probe x bilinearly extracted patch) and the Poisson likelihood
(``physics.poisson_nll``). Specified in ``specs/physics_and_losses.md`` (section
"Refinement").

One iteration visits every pattern once, in chunks of ``batch_size`` (memory is the object
plus one chunk), and then takes one step:

* each pattern's far field ``Psi`` gets the correction ``Psi * (k / |Psi|**2 - 1) / 2``
  (``k`` measured counts): the gradient of the Poisson negative log-likelihood with
  respect to ``conj(Psi)``, halved so that near a fit it equals the classical amplitude
  correction, and capped (at most doubling a pixel) where the prediction is far too
  dark;
* the corrections are propagated back, multiplied by ``conj(P)``, summed over all
  patterns and divided by the regularised illumination ``(1 - alpha) sum|P|**2 +
  alpha max sum|P|**2`` (the rPIE preconditioner): a full-batch preconditioned gradient
  step on the likelihood, so the result does not depend on the chunk size and its fixed
  point is the maximum-likelihood object;
* momentum 0.9 in the look-ahead form of mPIE (``v = 0.9 v + step``, ``O += step +
  0.9 v``) accelerates the slowly converging low spatial frequencies; it is reset
  whenever the loss rises (adaptive restart);
* with ``refine_probe`` the probe takes the same kind of step (``conj(O)`` and the
  object's illumination in place of the probe's), halved, after each object step from
  iteration 5 on.

Refinement stops after ``max_iterations`` or as soon as the loss improves by less than
``tolerance`` (relative) from one iteration to the next.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ptychopinn.grouping import mean_total_counts
from ptychopinn_torch.physics import POISSON_EPS, checkerboard, far_field, inverse_far_field
from ptychopinn_torch.runtime import fits_on_device
from ptychopinn_torch.stitching import mirror_index

__all__ = [
    "ILLUMINATION_ALPHA",
    "MOMENTUM",
    "PatchTransform",
    "RefinementError",
    "RefinementResult",
    "flat_object",
    "refine_object",
]

logger = logging.getLogger(__name__)

#: Share of the peak illumination added to every pixel's preconditioner (rPIE alpha):
#: keeps the step bounded where the probe barely reaches.
ILLUMINATION_ALPHA = 0.1
#: Heavy-ball momentum of the object updates.
MOMENTUM = 0.9
#: First iteration that updates the probe (with refine_probe): before it the object takes
#: the data's structure, which a probe step from a flat object would otherwise absorb.
PROBE_START_ITERATION = 5
#: Probe step as a fraction of its preconditioned gradient step (joint updates of object
#: and probe overshoot at a full step).
PROBE_STEP = 0.5
#: Largest relative increase of a far-field pixel in one step (dimensionless).
MAX_FAR_FIELD_GAIN = 1.0

#: ``progress(iteration, max_iterations, loss)``, called after every iteration.
RefineProgress = Callable[[int, int, float], None]


class RefinementError(ValueError):
    """Invalid input to the refinement (shapes, values or settings)."""


@dataclass
class RefinementResult:
    """Outcome of :func:`refine_object`.

    ``object`` is on the canvas that was passed in (same shape and origin); ``probe`` is
    the probe used at the end (refined when asked). ``loss_history[t]`` is the Poisson
    deviance per detector pixel (nats) of the object at the start of iteration ``t + 1``;
    ``final_loss`` that of the returned object.
    """

    object: np.ndarray
    probe: np.ndarray
    loss_history: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    iterations: int = 0
    converged: bool = False
    time_s: float = 0.0


def flat_object(probe: Any, amplitudes: Any, shape: tuple[int, int]) -> np.ndarray:
    """A constant object (complex64, ``shape``) whose amplitude reproduces the mean total
    counts of the data with this probe (Parseval): ``sqrt(mean_counts / sum|P|**2)``."""
    probe_t = _probe_tensor(probe)
    mean_counts = mean_total_counts(amplitudes)  # in chunks: no float64 copy of the scan
    energy = float((probe_t.abs() ** 2).sum())
    if not (energy > 0 and math.isfinite(energy)):
        raise RefinementError("the probe has no finite energy; cannot start a flat object")
    level = math.sqrt(max(mean_counts, 0.0) / energy)
    return np.full(shape, level, dtype=np.complex64)


def _probe_tensor(probe: Any) -> Tensor:
    p = probe.detach().cpu() if isinstance(probe, Tensor) else torch.from_numpy(np.asarray(probe))
    if p.dim() == 3:
        p = p[0]  # conventions: mode 0 drives the forward model
    if p.dim() != 2 or p.shape[0] != p.shape[1]:
        raise RefinementError(f"probe must be (N, N) or (modes, N, N); got {tuple(p.shape)}")
    p = p.to(torch.complex64)
    if not torch.isfinite(torch.view_as_real(p)).all():
        raise RefinementError("probe contains non-finite values")
    return p


#: Bilinear taps (row, column offset) in the order their terms are summed.
_TAPS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Detector pixels per chunk of patterns when ``batch_size`` is None: 256 patterns at
#: N = 64, 64 at N = 128 (measured fastest on a CPU; larger chunks leave the caches).
CHUNK_PIXELS = 256 * 64 * 64
#: Host memory the window indices of every pattern may take to be kept between sweeps
#: (bytes); larger scans rebuild each chunk's indices per sweep.
INDEX_CACHE_BYTES = 64 * 2**20


class _Taps(NamedTuple):
    """The bilinear windows of a chunk of patterns: ``index`` (B, N+1, N+1), the flat
    canvas indices of each pattern's (N+1) x (N+1) window, and ``weights``
    [(row offset, column offset, weight (B, 1, 1))] of the taps that are not zero for
    every pattern of the chunk."""

    index: Tensor
    weights: list[tuple[int, int, Tensor]]


class _Geometry:
    """Where each pattern's N x N window lies on the (padded) work canvas.

    Bilinear extraction, as in ``physics.extract_patches``: patch pixel ``[i, j]`` of a
    pattern at ``(x, y)`` is the canvas at row ``y - N//2 + i``, column ``x - N//2 + j``
    (canvas coordinates). One (N+1) x (N+1) window per pattern is gathered and its four
    shifted N x N views are weighted (one gather instead of four); taps with zero weight
    for a whole chunk (integer positions) are skipped. Per-pattern offsets and weights
    live on the device; the window indices of a chunk are kept between sweeps while
    they fit in ``cache_bytes``.
    """

    def __init__(self, positions_px: np.ndarray, origin_px: tuple[int, int], width: int,
                 N: int, device: torch.device, cache_bytes: int = 0) -> None:  # noqa: N803
        self.width = width
        self.N = N
        self.device = device
        row0 = positions_px[:, 1] - N // 2 - origin_px[1]
        col0 = positions_px[:, 0] - N // 2 - origin_px[0]
        r = np.floor(row0).astype(np.int64)
        c = np.floor(col0).astype(np.int64)
        fr, fc = row0 - r, col0 - c
        weights = np.stack([wr * wc for wr in (1.0 - fr, fr) for wc in (1.0 - fc, fc)])
        self.nonzero = weights != 0  # (4, n), host: which taps a chunk needs
        self.weights = torch.from_numpy(weights.astype(np.float32)).to(device)
        side = N + 1
        self.base = torch.from_numpy(r * width + c).to(device)
        ar = torch.arange(side, device=device)
        self.window = (ar.view(side, 1) * width + ar.view(1, side)).view(1, side, side)
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[int, int], Tensor] = {}
        self._cached = 0

    def taps(self, sl: slice) -> _Taps:
        """The windows and tap weights of the patterns in ``sl``."""
        key = (sl.start, sl.stop)
        index = self._cache.get(key)
        if index is None:
            index = self.base[sl].view(-1, 1, 1) + self.window
            if self._cached + index.nbytes <= self.cache_bytes:
                self._cache[key] = index
                self._cached += index.nbytes
        weights = [(dr, dc, self.weights[t, sl].view(-1, 1, 1))
                   for t, (dr, dc) in enumerate(_TAPS) if self.nonzero[t, sl].any()]
        return _Taps(index, weights)


class _MeasuredCounts:
    """Measured counts ``(amplitude_scale * amplitude)**2`` of a chunk, float32 on the
    device. On an accelerator they are copied there once and kept while they fit in
    ``runtime.DEVICE_DATA_SHARE`` of its free memory; on the CPU the amplitudes are read in
    place (no copy of the scan)."""

    def __init__(self, amplitudes: np.ndarray, amplitude_scale: float,
                 device: torch.device) -> None:
        self.amplitudes = amplitudes
        self.scale = amplitude_scale
        self.device = device
        self._kept: dict[tuple[int, int], Tensor] | None = None
        if fits_on_device(amplitudes.size * 4, device):
            self._kept = {}

    def __call__(self, sl: slice, workspace: _Workspace) -> Tensor:
        key = (sl.start, sl.stop)
        if self._kept is not None and key in self._kept:
            return self._kept[key]
        measured = torch.from_numpy(np.asarray(self.amplitudes[sl], dtype=np.float32))
        if self._kept is None:
            out = workspace.get("counts", tuple(measured.shape), torch.float32)
            return torch.mul(measured.to(self.device), self.scale, out=out).square_()
        counts = (measured.to(self.device) * self.scale) ** 2
        self._kept[key] = counts
        return counts


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class PatchTransform:
    """Transpose, then mirror left-right (``flip_x``), then top-bottom (``flip_y``), each
    about the centre pixel ``N//2``: the stitcher's map from the probe's (detector) frame
    to the scan frame (``stitching.Stitcher``). ``to_probe`` is its inverse."""

    N: int
    flip_x: bool = False
    flip_y: bool = False
    transpose: bool = False

    def _mirror(self, x: Tensor) -> Tensor:
        return torch.from_numpy(mirror_index(self.N)).to(x.device)

    def to_scan(self, x: Tensor) -> Tensor:
        if self.transpose:
            x = x.transpose(-1, -2)
        if self.flip_x:
            x = x.index_select(-1, self._mirror(x))
        if self.flip_y:
            x = x.index_select(-2, self._mirror(x))
        return x

    def to_probe(self, x: Tensor) -> Tensor:
        if self.flip_y:
            x = x.index_select(-2, self._mirror(x))
        if self.flip_x:
            x = x.index_select(-1, self._mirror(x))
        if self.transpose:
            x = x.transpose(-1, -2)
        return x


class _Workspace:
    """Reusable chunk-sized buffers: the sweep writes into them (``out=`` and in-place
    operations) instead of allocating fresh tensors for every chunk; fresh large
    allocations cost page faults that, on a busy CPU, took as long as the arithmetic.
    A buffer is sized by the first (largest) chunk; a shorter chunk uses its head."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.shape[1:] != shape[1:] \
                or buffer.shape[0] < shape[0]:
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[: shape[0]]


def _real_view(x: Tensor) -> Tensor:
    # Weighted sums of strided complex views are several times slower than the same
    # arithmetic on their (..., 2) real views (measured, torch 2.13 CPU).
    return torch.view_as_real(x) if x.is_complex() else x


def _tap_weight(w: Tensor, flat: Tensor) -> Tensor:
    return w.unsqueeze(-1) if flat.is_complex() else w


def _gather(flat: Tensor, taps: _Taps, workspace: _Workspace | None = None) -> Tensor:
    """Bilinearly extracted N x N patches (B, N, N) of the flat canvas ``flat``."""
    ws = workspace or _Workspace(flat.device)
    b, side = taps.index.shape[0], taps.index.shape[-1]
    n = side - 1
    raw = ws.get("window", (b * side * side,), flat.dtype)
    torch.index_select(flat, 0, taps.index.reshape(-1), out=raw)
    window = _real_view(raw.view(b, side, side))
    out = ws.get("patches", (b, n, n), flat.dtype)
    out_real = _real_view(out)
    for k, (dr, dc, w) in enumerate(taps.weights):
        term = window[:, dr : dr + n, dc : dc + n]
        if k == 0:
            torch.mul(term, _tap_weight(w, flat), out=out_real)
        else:
            out_real.addcmul_(term, _tap_weight(w, flat))
    return out


def _scatter(flat: Tensor, taps: _Taps, values: Tensor,
             workspace: _Workspace | None = None) -> None:
    """Adjoint of :func:`_gather`: add ``values`` (B, N, N) back onto ``flat`` in place."""
    ws = workspace or _Workspace(flat.device)
    b, side = taps.index.shape[0], taps.index.shape[-1]
    n = side - 1
    window = ws.get("scatter", (b, side, side), flat.dtype).zero_()
    real, vals = _real_view(window), _real_view(values.to(flat.dtype))
    for dr, dc, w in taps.weights:
        real[:, dr : dr + n, dc : dc + n].addcmul_(vals, _tap_weight(w, flat))
    flat.index_add_(0, taps.index.reshape(-1), window.reshape(-1))


def _check_inputs(initial_object: Any, probe: Tensor, amplitudes: Any, positions_px: Any,
                  coverage: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    obj = np.asarray(initial_object)
    if obj.ndim != 2 or obj.size == 0:
        raise RefinementError(f"initial_object must be (H, W); got shape {obj.shape}")
    if not np.all(np.isfinite(obj)):
        raise RefinementError("initial_object contains non-finite values")
    amps = np.asarray(amplitudes)
    n_pix = probe.shape[-1]
    if amps.ndim != 3 or amps.shape[1:] != (n_pix, n_pix):
        raise RefinementError(
            f"amplitudes must be (n, {n_pix}, {n_pix}) like the probe; got {amps.shape}"
        )
    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.shape != (amps.shape[0], 2):
        raise RefinementError(
            f"positions_px must be ({amps.shape[0]}, 2) as (x, y); got {pos.shape}"
        )
    if not np.all(np.isfinite(pos)):
        raise RefinementError("positions_px contains non-finite values")
    cov = np.ones(obj.shape, bool) if coverage is None else np.asarray(coverage, dtype=bool)
    if cov.shape != obj.shape:
        raise RefinementError(f"coverage must have the object's shape {obj.shape}; got {cov.shape}")
    return obj, amps, pos, cov


def refine_object(
    initial_object: Any,
    origin_px: tuple[float, float],
    probe: Any,
    amplitudes: Any,
    positions_px: Any,
    *,
    max_iterations: int,
    tolerance: float = 1e-3,
    refine_probe: bool = False,
    amplitude_scale: float = 1.0,
    batch_size: int | None = None,
    coverage: Any = None,
    patch_transform: PatchTransform | None = None,
    device: torch.device | str = "cpu",
    progress: RefineProgress | None = None,
) -> RefinementResult:
    """Refine ``initial_object`` (complex (H, W), pixel [0, 0] at ``origin_px`` = (x, y)
    in the positions' object-pixel frame) against measured ``amplitudes`` (n, N, N),
    sqrt(counts), at ``positions_px`` (n, 2) = (x, y) object pixels.

    ``probe`` (N, N) complex is in sqrt(count) units: the expected counts of pattern k are
    ``|far_field(probe * patch_k)|**2`` with measured counts ``(amplitude_scale *
    amplitudes[k])**2`` (the scale saves a scaled copy of a large scan). Pixels outside ``coverage`` (bool (H, W); default
    all) and the margin the patterns need beyond the canvas start at the covered mean.
    ``patch_transform`` maps the probe's (detector) frame to the scan frame when they
    differ (the stitcher's flips and transpose); the object stays in the scan frame.
    Returns the object on the same canvas (see :class:`RefinementResult`).
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 0:
        raise RefinementError(f"max_iterations must be an integer >= 0; got {max_iterations!r}")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise RefinementError(f"tolerance must be a finite number >= 0; got {tolerance!r}")
    if not (isinstance(amplitude_scale, int | float) and math.isfinite(amplitude_scale)
            and amplitude_scale > 0):
        raise RefinementError(f"amplitude_scale must be a finite number > 0; got {amplitude_scale!r}")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, int) or batch_size < 1):
        raise RefinementError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")
    device = torch.device(device)
    probe_t = _probe_tensor(probe)
    obj0, amps, pos, cov = _check_inputs(initial_object, probe_t, amplitudes, positions_px, coverage)
    n_pix = probe_t.shape[-1]
    h, w = obj0.shape
    x0, y0 = (int(round(v)) for v in origin_px)

    # Work canvas: the given one, grown to hold every window (plus the second bilinear tap).
    left = min(x0, int(np.floor(pos[:, 0].min())) - n_pix // 2)
    top = min(y0, int(np.floor(pos[:, 1].min())) - n_pix // 2)
    right = max(x0 + w, int(np.floor(pos[:, 0].max())) - n_pix // 2 + n_pix + 1)
    bottom = max(y0 + h, int(np.floor(pos[:, 1].max())) - n_pix // 2 + n_pix + 1)
    work_w, work_h = right - left, bottom - top
    covered = obj0[cov]
    if covered.size:
        fill = np.abs(covered).mean() * np.exp(1j * np.angle(covered.sum()))
    else:
        fill = 1.0
    work = np.full((work_h, work_w), fill, dtype=np.complex64)
    inner = (slice(y0 - top, y0 - top + h), slice(x0 - left, x0 - left + w))
    work[inner] = np.where(cov, obj0, fill)

    start = time.perf_counter()
    geometry = _Geometry(pos, (left, top), work_w, n_pix, device, INDEX_CACHE_BYTES)
    obj = torch.from_numpy(work).to(device).reshape(-1)
    n = amps.shape[0]
    if batch_size is None:
        batch_size = max(1, CHUNK_PIXELS // (n_pix * n_pix))
    chunks = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    counts_of = _MeasuredCounts(amps, amplitude_scale, device)

    to_scan = patch_transform.to_scan if patch_transform is not None else _identity
    to_probe = patch_transform.to_probe if patch_transform is not None else _identity
    # Even N: the probe is kept multiplied by the checkerboard C and the far field is a
    # plain FFT (see physics.checkerboard); |far field|, the corrections and the gradients are
    # then exactly those of the shifted transforms, without their copies.
    checker = checkerboard(n_pix, device, torch.complex64) if n_pix % 2 == 0 else None

    def forward(wave: Tensor, out: Tensor) -> Tensor:
        if checker is None:
            return far_field(wave)
        return torch.fft.fft2(wave, norm="ortho", out=out)

    def inverse(wave: Tensor, out: Tensor) -> Tensor:
        if checker is None:
            return inverse_far_field(wave)
        return torch.fft.ifft2(wave, norm="ortho", out=out)

    p = probe_t.to(device)
    if checker is not None:
        p = p * checker

    workspace = _Workspace(device)

    def illumination(pr: Tensor) -> Tensor:
        acc = torch.zeros(obj.shape, dtype=torch.float32, device=device)
        weight = to_scan(pr.abs() ** 2)
        for sl in chunks:
            taps = geometry.taps(sl)
            _scatter(acc, taps, weight.expand(taps.index.shape[0], n_pix, n_pix), workspace)
        return acc

    def preconditioner(acc: Tensor) -> Tensor:
        return (1.0 - ILLUMINATION_ALPHA) * acc + ILLUMINATION_ALPHA * acc.max().clamp_min(1e-30)

    obj_denominator = preconditioner(illumination(p))
    velocity = torch.zeros_like(obj)
    history: list[float] = []
    n_pixels_total = float(n * n_pix * n_pix)
    converged = False

    def sweep(with_update: bool) -> tuple[float, Tensor | None, Tensor | None, Tensor | None]:
        """Loss of the current object; with_update also the summed corrections."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        grad_obj = torch.zeros_like(obj) if with_update else None
        grad_probe = torch.zeros_like(p) if (with_update and refine_probe) else None
        probe_norm = torch.zeros(p.shape, dtype=torch.float32, device=device) if grad_probe is not None else None
        for sl in chunks:
            taps = geometry.taps(sl)
            shape = (taps.index.shape[0], n_pix, n_pix)
            patches = to_probe(_gather(obj, taps, workspace))
            exit_wave = torch.mul(p, patches, out=workspace.get("wave", shape, torch.complex64))
            psi = forward(exit_wave, workspace.get("psi", shape, torch.complex64))
            counts = counts_of(sl, workspace)
            parts = torch.view_as_real(psi)
            lam = torch.mul(parts[..., 0], parts[..., 0],
                            out=workspace.get("lam", shape, torch.float32))
            lam.addcmul_(parts[..., 1], parts[..., 1])
            inv_lam = torch.add(lam, POISSON_EPS, out=workspace.get("inv", shape, torch.float32))
            inv_lam.reciprocal_()
            # Poisson deviance (physics.poisson_nll): k log((k + eps) / (lam + eps)) + lam - k.
            work = torch.add(counts, POISSON_EPS, out=workspace.get("work", shape, torch.float32))
            work.mul_(inv_lam).log_().mul_(counts).add_(lam).sub_(counts)
            loss_sum += work.sum(dtype=torch.float64)  # on the device: no sync per chunk
            if not with_update:
                continue
            # Gradient of the Poisson NLL with respect to conj(psi), halved so that a
            # step of 1 is the amplitude correction near a fit; capped (at most doubling
            # a far-field pixel) where the prediction is far too dark.
            factor = torch.mul(counts, inv_lam, out=work)
            factor.sub_(1.0).mul_(0.5).clamp_(max=MAX_FAR_FIELD_GAIN)
            correction = inverse(psi.mul_(factor), exit_wave)  # exit_wave's buffer is free
            if grad_probe is not None:
                grad_probe += (patches.conj() * correction).sum(dim=0)
                probe_norm += (patches.abs() ** 2).sum(dim=0)
            _scatter(grad_obj, taps, to_scan(correction.mul_(p.conj())), workspace)
        return float(loss_sum) / n_pixels_total, grad_obj, grad_probe, probe_norm

    iterations = 0
    for it in range(1, max_iterations + 1):
        loss, grad_obj, grad_probe, probe_norm = sweep(with_update=True)
        if not math.isfinite(loss):
            raise RefinementError(
                f"the refinement loss became {loss} at iteration {it}; check that the probe "
                "and the data are in consistent units"
            )
        if history and loss > history[-1]:
            velocity.zero_()  # adaptive restart: momentum overshot
        history.append(loss)
        iterations = it
        assert grad_obj is not None
        step = grad_obj / obj_denominator
        velocity.mul_(MOMENTUM).add_(step)  # in place, same arithmetic as v = 0.9 v + step
        obj.add_(step).add_(MOMENTUM * velocity)
        if grad_probe is not None and probe_norm is not None and it >= PROBE_START_ITERATION:
            p = p + PROBE_STEP * grad_probe / preconditioner(probe_norm)
            obj_denominator = preconditioner(illumination(p))
        if progress is not None:
            progress(it, max_iterations, loss)
        if len(history) >= 2:
            improvement = (history[-2] - history[-1]) / max(abs(history[-2]), 1e-30)
            if 0 <= improvement < tolerance:
                converged = True
                break
    final_loss, *_ = sweep(with_update=False)
    elapsed = time.perf_counter() - start
    refined = obj.reshape(work_h, work_w).cpu().numpy()[inner].astype(np.complex64)
    return RefinementResult(
        object=refined,
        probe=(p if checker is None else p * checker).cpu().numpy().astype(np.complex64),
        loss_history=history,
        final_loss=final_loss,
        iterations=iterations,
        converged=converged,
        time_s=elapsed,
    )
