"""Differentiable ptychography physics and training losses (PyTorch).

Everything here follows ``specs/conventions.md`` and is specified in
``specs/physics_and_losses.md``:

* positions and shifts are in object pixels, ordered ``(x, y)`` (x = column, y = row);
* translating an image by ``(dx, dy)`` gives ``out[i, j] = in[i - dy, j - dx]``, bilinear
  for sub-pixel shifts, zero outside the source;
* a patch of side N for position ``(x, y)`` covers rows ``y - N//2 + i`` and columns
  ``x - N//2 + j``;
* far field ``Psi = fftshift(fft2(ifftshift(psi), norm="ortho"))``;
* network amplitudes are in normalised units (mean total intensity ``(N/2)**2`` per
  pattern); ``intensity_scale**2`` converts normalised intensity to photon counts.

All complex tensors are complex64. Sampling is done with explicit bilinear gathers (not
``grid_sample``) so that integer shifts are exact and the backward pass is deterministic
on every device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ptychopinn.config import ModelConfig, TrainingConfig

__all__ = [
    "ForwardModel",
    "amplitude_mae",
    "canvas_size",
    "checkerboard",
    "circular_probe_mask",
    "extract_patches",
    "far_field",
    "far_field_amplitude",
    "intensity_scale_from",
    "inverse_far_field",
    "merge_and_reextract",
    "normalise_probe",
    "object_support",
    "poisson_nll",
    "realspace_mae",
    "supervised_loss",
    "total_loss",
    "translate",
    "wrap_phase",
]

#: Smallest overlap weight treated as "covered" when merging a group (dimensionless).
MERGE_EPS = 1e-6
#: Count floor inside the Poisson log, photons (keeps log finite for zero predictions).
POISSON_EPS = 1e-6


class PhysicsError(ValueError):
    """Invalid input to a physics function (shape, dtype or value)."""


# --------------------------------------------------------------------------- sampling
def _bilinear_sample(src: Tensor, row0: Tensor, col0: Tensor, out_h: int, out_w: int) -> Tensor:
    """Sample ``out[b, i, j] = src[b, row0[b] + i, col0[b] + j]`` bilinearly, zero outside.

    ``src`` is (B, H, W) (one source per output) or (H, W) (shared by all outputs);
    ``row0``/``col0`` are (B,) source coordinates, in pixels, of output pixel (0, 0).
    """
    shared = src.dim() == 2
    h, w = src.shape[-2], src.shape[-1]
    b = row0.shape[0]
    device = src.device
    real_dtype = src.real.dtype if src.is_complex() else src.dtype
    # floor/fraction in float64: positions of large objects keep sub-pixel accuracy.
    row0 = row0.detach().to(device=device, dtype=torch.float64)
    col0 = col0.detach().to(device=device, dtype=torch.float64)
    r_floor = torch.floor(row0)
    c_floor = torch.floor(col0)
    fr = (row0 - r_floor).to(real_dtype).view(b, 1, 1)
    fc = (col0 - c_floor).to(real_dtype).view(b, 1, 1)
    rows = r_floor.long().view(b, 1) + torch.arange(out_h, device=device).view(1, out_h)
    cols = c_floor.long().view(b, 1) + torch.arange(out_w, device=device).view(1, out_w)
    flat_src = src.reshape(-1) if shared else src.reshape(b, h * w)

    out = None
    for dr, wr in ((0, 1 - fr), (1, fr)):
        rr = rows + dr
        r_ok = (rr >= 0) & (rr < h)
        rr = rr.clamp(0, h - 1)
        for dc, wc in ((0, 1 - fc), (1, fc)):
            cc = cols + dc
            c_ok = (cc >= 0) & (cc < w)
            cc = cc.clamp(0, w - 1)
            idx = rr.view(b, out_h, 1) * w + cc.view(b, 1, out_w)
            if shared:
                vals = flat_src[idx]
            else:
                vals = torch.gather(flat_src, 1, idx.view(b, -1)).view(b, out_h, out_w)
            weight = wr * wc * (r_ok.view(b, out_h, 1) & c_ok.view(b, 1, out_w)).to(real_dtype)
            term = vals * weight
            out = term if out is None else out + term
    assert out is not None
    return out


def _check_shifts(shifts: Tensor, batch: int, name: str) -> None:
    if shifts.dim() != 2 or shifts.shape[0] != batch or shifts.shape[1] != 2:
        raise PhysicsError(
            f"{name} must have shape ({batch}, 2) as (dx, dy); got {tuple(shifts.shape)}"
        )
    if not torch.isfinite(shifts).all():
        raise PhysicsError(f"{name} contains non-finite values")


def translate(images: Tensor, shifts_px: Tensor) -> Tensor:
    """Translate each image by its ``(dx, dy)`` shift in pixels; ``out[i, j] = in[i - dy, j - dx]``.

    images: (B, H, W) real or complex. shifts_px: (B, 2), object pixels, last axis (dx, dy).
    Bilinear for sub-pixel shifts, exact for integer shifts, zero where the source is outside.
    """
    if images.dim() != 3:
        raise PhysicsError(f"images must be (B, H, W); got shape {tuple(images.shape)}")
    shifts_px = torch.as_tensor(shifts_px, device=images.device)
    _check_shifts(shifts_px, images.shape[0], "shifts_px")
    h, w = images.shape[-2:]
    return _bilinear_sample(images, -shifts_px[:, 1], -shifts_px[:, 0], h, w)


def extract_patches(obj: Tensor, positions_px: Tensor, N: int) -> Tensor:  # noqa: N803
    """Cut (n, N, N) patches from ``obj`` (H, W) at probe-centre positions (n, 2) = (x, y) px.

    Patch pixel ``[i, j]`` is ``obj[y - N//2 + i, x - N//2 + j]`` (bilinear for sub-pixel
    positions, zero outside the object), so the patch centre ``[N//2, N//2]`` sits on the
    position.
    """
    if obj.dim() != 2:
        raise PhysicsError(f"obj must be (H, W); got shape {tuple(obj.shape)}")
    if not isinstance(N, int) or N < 1:
        raise PhysicsError(f"N must be a positive integer; got {N!r}")
    positions_px = torch.as_tensor(positions_px, device=obj.device)
    if positions_px.dim() != 2 or positions_px.shape[1] != 2:
        raise PhysicsError(
            f"positions_px must be (n, 2) as (x, y); got {tuple(positions_px.shape)}"
        )
    _check_shifts(positions_px, positions_px.shape[0], "positions_px")
    half = N // 2
    return _bilinear_sample(obj, positions_px[:, 1] - half, positions_px[:, 0] - half, N, N)


# --------------------------------------------------------------------- object_big merge
def canvas_size(N: int, max_abs_offset_px: float) -> int:  # noqa: N803
    """Side (px) of the merge canvas for patches of side N with local offsets up to
    ``max_abs_offset_px`` in x or y: ``N + 2 * ceil(max_abs_offset_px)``.

    This is the smallest canvas that holds every translated patch, including the second
    bilinear tap of a sub-pixel shift; ``canvas - N`` is even so the canvas centre
    coincides with the patch centre (the group centroid).
    """
    if not math.isfinite(max_abs_offset_px) or max_abs_offset_px < 0:
        raise PhysicsError(f"max_abs_offset_px must be finite and >= 0; got {max_abs_offset_px!r}")
    return int(N + 2 * math.ceil(max_abs_offset_px))


def merge_and_reextract(
    patches: Tensor, local_offsets_px: Tensor, canvas_px: int | None = None
) -> Tensor:
    """Merge each group's C patches into one object and re-extract a patch per position.

    patches: (B, C, N, N) complex; local_offsets_px: (B, C, 2) = (dx, dy) object pixels
    (position minus group centroid). Patch c is translated by ``+offset_c`` onto a canvas
    of side ``canvas_px`` centred on the centroid; the canvas is divided by the summed
    translated ones-masks (overlap count; uncovered pixels stay 0); patch c is then read
    back by translating by ``-offset_c`` and cropping the central N x N.
    ``canvas_px`` defaults to :func:`canvas_size` of the largest offset in the batch; a
    given value must be at least that large (and ``canvas_px - N`` even).
    For C == 1 the input is returned unchanged.
    """
    if patches.dim() != 4 or patches.shape[-1] != patches.shape[-2]:
        raise PhysicsError(f"patches must be (B, C, N, N); got shape {tuple(patches.shape)}")
    b, c, n, _ = patches.shape
    local_offsets_px = torch.as_tensor(local_offsets_px, device=patches.device)
    if local_offsets_px.shape != (b, c, 2):
        raise PhysicsError(
            f"local_offsets_px must have shape ({b}, {c}, 2); got {tuple(local_offsets_px.shape)}"
        )
    if not torch.isfinite(local_offsets_px).all():
        raise PhysicsError("local_offsets_px contains non-finite values")
    if c == 1:
        return patches
    max_off = float(local_offsets_px.detach().abs().max()) if local_offsets_px.numel() else 0.0
    needed = canvas_size(n, max_off)
    if canvas_px is None:
        canvas_px = needed
    elif canvas_px < needed or (canvas_px - n) % 2:
        raise PhysicsError(
            f"canvas_px={canvas_px} too small or of wrong parity for N={n} and "
            f"max |offset|={max_off:.3f} px; need >= {needed} with canvas_px - N even"
        )
    pad = (canvas_px - n) // 2
    offs = local_offsets_px.reshape(b * c, 2)
    flat = patches.reshape(b * c, n, n)
    # Placing patch c at +offset: canvas[p, q] = patch[p - pad - dy, q - pad - dx].
    row0 = -pad - offs[:, 1]
    col0 = -pad - offs[:, 0]
    placed = _bilinear_sample(flat, row0, col0, canvas_px, canvas_px)
    ones = torch.ones((b * c, n, n), dtype=patches.real.dtype, device=patches.device)
    weight = _bilinear_sample(ones, row0, col0, canvas_px, canvas_px)
    summed = placed.view(b, c, canvas_px, canvas_px).sum(dim=1)
    count = weight.view(b, c, canvas_px, canvas_px).sum(dim=1)
    merged = summed / count.clamp_min(MERGE_EPS)
    # Re-extraction for position c: out[i, j] = merged[pad + dy + i, pad + dx + j].
    merged_rep = (
        merged.unsqueeze(1).expand(b, c, canvas_px, canvas_px).reshape(b * c, canvas_px, canvas_px)
    )
    out = _bilinear_sample(merged_rep, pad + offs[:, 1], pad + offs[:, 0], n, n)
    return out.view(b, c, n, n)


def _positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number > 0 (numpy scalars included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PhysicsError(f"{name} must be a finite number > 0; got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise PhysicsError(f"{name} must be a finite number > 0; got {value!r}")
    return out


# ----------------------------------------------------------------------------- optics
def checkerboard(n: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """``C = (-1)**(i + j)``, shape (n, n). For even n, ``fftshift(fft2(ifftshift(x))) =
    C * fft2(C * x)``, and likewise with ``ifft2``: two multiplications replace the
    four shifts (copies) of a far-field round trip."""
    i = torch.arange(n, device=device)
    return (1 - 2 * ((i.view(n, 1) + i.view(1, n)) % 2)).to(dtype)


def _centred(transform: Callable[..., Tensor], wave: Tensor) -> Tensor:
    """``fftshift(transform(ifftshift(wave), norm="ortho"))`` over the last two axes."""
    if not wave.is_complex():
        wave = wave.to(torch.complex64)
    rows, cols = wave.shape[-2:]
    if rows == cols and rows % 2 == 0:  # every supported pattern size
        c = checkerboard(rows, wave.device, wave.real.dtype)
        return c * transform(c * wave, norm="ortho")
    dims = (-2, -1)
    return torch.fft.fftshift(transform(torch.fft.ifftshift(wave, dim=dims), norm="ortho"),
                              dim=dims)


def far_field(exit_wave: Tensor) -> Tensor:
    """Far-field wave ``fftshift(fft2(ifftshift(psi), norm="ortho"))`` over the last two axes."""
    return _centred(torch.fft.fft2, exit_wave)


def inverse_far_field(wave: Tensor) -> Tensor:
    """Inverse of :func:`far_field`: ``fftshift(ifft2(ifftshift(wave), norm="ortho"))``."""
    return _centred(torch.fft.ifft2, wave)


def far_field_amplitude(exit_wave: Tensor) -> Tensor:
    """``|far_field(exit_wave)|``, in the amplitude units of the exit wave (real tensor)."""
    return far_field(exit_wave).abs()


def circular_probe_mask(N: int) -> Tensor:  # noqa: N803
    """Soft-edged disc of radius N/4 px centred on ``[N//2, N//2]`` (float32, (N, N)).

    Value 1 for distance <= N/4 - 0.5, 0 for distance >= N/4 + 0.5, linear in between
    (a one-pixel anti-aliased edge).
    """
    if not isinstance(N, int) or N < 4:
        raise PhysicsError(f"N must be an integer >= 4; got {N!r}")
    idx = torch.arange(N, dtype=torch.float64) - N // 2
    dist = torch.sqrt(idx.view(-1, 1) ** 2 + idx.view(1, -1) ** 2)
    return (N / 4 + 0.5 - dist).clamp(0.0, 1.0).to(torch.float32)


def object_support(N: int, pad_object: bool, probe_big: bool) -> Tensor:  # noqa: N803
    """Where the generator's object can be non-zero: the central N/2 x N/2 square when
    ``pad_object`` and not ``probe_big``, else everywhere (float32, (N, N))."""
    if pad_object and not probe_big:
        support = torch.zeros((N, N), dtype=torch.float32)
        lo = N // 4
        support[lo : lo + N // 2, lo : lo + N // 2] = 1.0
        return support
    return torch.ones((N, N), dtype=torch.float32)


def normalise_probe(probe: Tensor, probe_scale: float, support: Tensor | None = None) -> Tensor:
    """Scale ``probe`` (N, N) so that ``sum(support * |P|**2) == probe_scale * (N/2)**2``.

    With this normalisation an object of uniform amplitude ``1/sqrt(probe_scale)`` over
    ``support`` (default: everywhere) reproduces exactly the mean total normalised
    intensity ``(N/2)**2`` of a pattern (Parseval), so with the default probe_scale 4 the
    network needs amplitudes around 0.5: the middle of the sigmoid's (0, 1) range.
    Only the overall scale changes; the probe's shape and phase are kept.
    """
    if probe.dim() != 2 or probe.shape[0] != probe.shape[1]:
        raise PhysicsError(f"probe must be (N, N); got shape {tuple(probe.shape)}")
    probe_scale = _positive("probe_scale", probe_scale)
    probe = probe.to(torch.complex64)
    n = probe.shape[-1]
    weight = torch.ones_like(probe.real) if support is None else support.to(probe.real)
    energy = float((weight * probe.abs() ** 2).sum())
    if not math.isfinite(energy) or energy <= 0:
        raise PhysicsError(
            f"probe has no finite energy inside the object support (sum |P|^2 = {energy}); "
            "cannot normalise it"
        )
    factor = math.sqrt(probe_scale) * (n / 2) / math.sqrt(energy)
    return probe * factor


def intensity_scale_from(nphotons: float, N: int) -> float:  # noqa: N803
    """``sqrt(nphotons) / (N/2)``: multiplies normalised amplitude to give sqrt(photons)."""
    nphotons = _positive("nphotons", nphotons)
    if not isinstance(N, int) or N < 2:
        raise PhysicsError(f"N must be an integer >= 2; got {N!r}")
    return math.sqrt(nphotons) / (N / 2)


# ----------------------------------------------------------------------- forward model
def _probe_to_tensor(probe: Any, N: int) -> Tensor:  # noqa: N803
    if isinstance(probe, Tensor):
        arr = probe.detach().cpu()
    else:
        arr = torch.from_numpy(np.asarray(probe))
    if arr.dim() == 3:
        if arr.shape[0] < 1:
            raise PhysicsError("probe has zero modes")
        arr = arr[0]  # conventions: mode 0 drives the forward model
    if arr.dim() != 2 or tuple(arr.shape) != (N, N):
        raise PhysicsError(
            f"probe must be (N, N) or (modes, N, N) with N={N}; got shape {tuple(arr.shape)}"
        )
    arr = arr.to(torch.complex64)
    if not torch.isfinite(torch.view_as_real(arr)).all():
        raise PhysicsError("probe contains non-finite values")
    return arr


class ForwardModel(nn.Module):
    """Probe x object -> far-field amplitude, in normalised units.

    Holds the normalised probe (buffer ``probe``, or float parameters ``probe_real`` and
    ``probe_imag`` when trainable), the circular probe mask (buffer) when
    ``model_config.probe_mask``, the fixed data scale ``data_intensity_scale`` (buffer)
    and ``log_intensity_scale`` (parameter, trainable only if requested).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        probe: Any,
        probe_trainable: bool = False,
        intensity_scale: float = 1.0,
        intensity_scale_trainable: bool = True,
    ) -> None:
        super().__init__()
        n = int(model_config.N)
        intensity_scale = _positive("intensity_scale", intensity_scale)
        self.N = n
        self.C = int(model_config.gridsize) ** 2
        self.object_big = bool(model_config.object_big)
        self.probe_trainable = bool(probe_trainable)
        raw = _probe_to_tensor(probe, n)
        if model_config.probe_mask:
            self.register_buffer("probe_mask", circular_probe_mask(n))
            raw = raw * self.probe_mask
        else:
            self.probe_mask = None
        support = object_support(n, bool(model_config.pad_object), bool(model_config.probe_big))
        normalised = normalise_probe(raw, float(model_config.probe_scale), support)
        if self.probe_trainable:
            self.probe_real = nn.Parameter(normalised.real.clone())
            self.probe_imag = nn.Parameter(normalised.imag.clone())
        else:
            self.register_buffer("_probe", normalised.clone())
        self.register_buffer(
            "data_intensity_scale", torch.tensor(float(intensity_scale), dtype=torch.float32)
        )
        self.log_intensity_scale = nn.Parameter(
            torch.tensor(math.log(intensity_scale), dtype=torch.float32),
            requires_grad=bool(intensity_scale_trainable),
        )

    @property
    def probe(self) -> Tensor:
        """The normalised (and masked, if enabled) probe, complex64 (N, N)."""
        p = torch.complex(self.probe_real, self.probe_imag) if self.probe_trainable else self._probe
        if self.probe_mask is not None:
            p = p * self.probe_mask
        return p

    @property
    def intensity_scale(self) -> Tensor:
        """Model intensity scale (float32 scalar): predicted counts = (amplitude * scale)**2."""
        return torch.exp(self.log_intensity_scale)

    def object_for_positions(
        self, object_patches: Tensor, local_offsets: Tensor | None = None
    ) -> Tensor:
        """The object each position sees: merged and re-extracted per group when
        ``object_big`` and C > 1, else the patches themselves. (B, C, N, N) complex."""
        if object_patches.dim() != 4 or tuple(object_patches.shape[1:]) != (self.C, self.N, self.N):
            raise PhysicsError(
                f"object_patches must be (B, {self.C}, {self.N}, {self.N}); "
                f"got {tuple(object_patches.shape)}"
            )
        if self.object_big and self.C > 1:
            if local_offsets is None:
                raise PhysicsError("local_offsets (B, C, 2) are required when object_big and C > 1")
            return merge_and_reextract(object_patches, local_offsets)
        return object_patches

    def forward(self, object_patches: Tensor, local_offsets: Tensor | None = None) -> Tensor:
        """Predicted normalised diffraction amplitude (B, C, N, N) for object patches
        (B, C, N, N) complex and local offsets (B, C, 2) = (dx, dy) px."""
        obj = self.object_for_positions(object_patches, local_offsets)
        exit_wave = self.probe * obj.to(torch.complex64)
        return far_field_amplitude(exit_wave)


# ------------------------------------------------------------------------------ losses
def poisson_nll(
    pred_amp_norm: Tensor,
    meas_amp_norm: Tensor,
    intensity_scale: Tensor | float,
    meas_intensity_scale: Tensor | float | None = None,
    eps: float = POISSON_EPS,
) -> Tensor:
    """Poisson deviance per pixel (nats): the negative log-likelihood minus its value at a
    perfect fit, so it is >= 0 and 0 only where ``lam == k``.

    Predicted counts ``lam = (pred * intensity_scale)**2``, measured counts
    ``k = (meas * meas_intensity_scale)**2`` (default: ``intensity_scale``, detached, so the
    data never move with a trainable scale); returns
    ``mean(lam - k * log(lam + eps) - (k - k * log(k + eps)))``. Subtracting the data-only
    term changes no gradient; it makes the loss readable (and plottable on a log axis).
    """

    if pred_amp_norm.shape != meas_amp_norm.shape:
        raise PhysicsError(
            f"prediction {tuple(pred_amp_norm.shape)} and measurement "
            f"{tuple(meas_amp_norm.shape)} shapes differ"
        )
    s_pred = torch.as_tensor(
        intensity_scale, dtype=pred_amp_norm.dtype, device=pred_amp_norm.device
    )
    if meas_intensity_scale is None:
        s_meas = s_pred.detach()
    else:
        s_meas = torch.as_tensor(
            meas_intensity_scale, dtype=meas_amp_norm.dtype, device=meas_amp_norm.device
        ).detach()
    lam = (pred_amp_norm * s_pred) ** 2
    k = (meas_amp_norm * s_meas) ** 2
    saturated = k - k * torch.log(k + eps)
    return (lam - k * torch.log(lam + eps) - saturated).mean()


def amplitude_mae(pred: Tensor, meas: Tensor) -> Tensor:
    """Mean absolute amplitude difference, in normalised amplitude units."""
    if pred.shape != meas.shape:
        raise PhysicsError(f"shapes differ: {tuple(pred.shape)} vs {tuple(meas.shape)}")
    return (pred - meas).abs().mean()


def realspace_mae(obj: Tensor, label: Tensor) -> Tensor:
    """Mean complex modulus ``|O - L|`` between object and label patches (object units)."""
    if obj.shape != label.shape:
        raise PhysicsError(
            f"object {tuple(obj.shape)} and label {tuple(label.shape)} shapes differ"
        )
    return (obj.to(torch.complex64) - label.to(torch.complex64)).abs().mean()


def wrap_phase(phase: Tensor) -> Tensor:
    """Wrap radians into (-pi, pi]."""
    return torch.atan2(torch.sin(phase), torch.cos(phase))


def supervised_loss(amp_pred: Tensor, phase_pred: Tensor, label: Tensor) -> Tensor:
    """``mean|amp - |L|| + mean|wrap(phase - angle(L))|`` for a complex label (amplitude
    units + radians)."""
    if amp_pred.shape != label.shape or phase_pred.shape != label.shape:
        raise PhysicsError(
            f"amplitude {tuple(amp_pred.shape)}, phase {tuple(phase_pred.shape)} and label "
            f"{tuple(label.shape)} shapes differ"
        )
    label = label.to(torch.complex64)
    amp_term = (amp_pred - label.abs()).abs().mean()
    phase_term = wrap_phase(phase_pred - torch.angle(label)).abs().mean()
    return amp_term + phase_term


def total_loss(
    training_config: TrainingConfig,
    *,
    pred_amp: Tensor | None = None,
    meas_amp: Tensor | None = None,
    intensity_scale: Tensor | float | None = None,
    meas_intensity_scale: Tensor | float | None = None,
    obj: Tensor | None = None,
    amp: Tensor | None = None,
    phase: Tensor | None = None,
    label: Tensor | None = None,
    physics_weight: float | None = None,
) -> dict[str, Tensor]:
    """Weighted training loss; returns named components and their weighted sum ``"loss"``.

    model_type "pinn":
      * loss_mode "poisson": ``nll_weight * poisson + mae_weight * mae``; during training
        stages (``physics_weight`` w not None, ptychopinn_torch.stages) that physics loss
        is blended with the amplitude MAE: ``w * physics + (1 - w) * mae``;
      * loss_mode "mae": ``w * mae`` with ``w = mae_weight`` if it is > 0 else 1 (physics
        weight 0; ``nll_weight`` is not used and ``poisson`` is not computed);
      * plus ``realspace_weight * w_r * realspace`` when ``label`` is given and
        ``realspace_weight > 0``, ``w_r = realspace_mae_weight`` if it is > 0 else 1.
    model_type "supervised": ``supervised_loss(amp, phase, label)`` (label required);
    ``mae`` is reported (detached) when predicted and measured amplitudes are given.
    """
    cfg = training_config
    model_type = cfg.model.model_type
    parts: dict[str, Tensor] = {}
    if model_type == "supervised":
        if amp is None or phase is None or label is None:
            raise PhysicsError("supervised model_type needs amp, phase and label tensors")
        parts["supervised"] = supervised_loss(amp, phase, label)
        loss = parts["supervised"]
        if pred_amp is not None and meas_amp is not None:
            parts["mae"] = amplitude_mae(pred_amp, meas_amp).detach()
        parts["loss"] = loss
        return parts
    if model_type != "pinn":
        raise PhysicsError(f"model_type must be 'pinn' or 'supervised'; got {model_type!r}")
    if pred_amp is None or meas_amp is None:
        raise PhysicsError("pinn model_type needs pred_amp and meas_amp")
    parts["mae"] = amplitude_mae(pred_amp, meas_amp)
    if cfg.loss_mode == "poisson":
        if intensity_scale is None:
            raise PhysicsError("loss_mode 'poisson' needs intensity_scale")
        parts["poisson"] = poisson_nll(pred_amp, meas_amp, intensity_scale, meas_intensity_scale)
        loss = cfg.nll_weight * parts["poisson"] + cfg.mae_weight * parts["mae"]
        if physics_weight is not None:
            loss = physics_weight * loss + (1.0 - physics_weight) * parts["mae"]
    elif cfg.loss_mode == "mae":
        mae_w = cfg.mae_weight if cfg.mae_weight > 0 else 1.0
        loss = mae_w * parts["mae"]
    else:
        raise PhysicsError(f"loss_mode must be 'poisson' or 'mae'; got {cfg.loss_mode!r}")
    if label is not None and cfg.realspace_weight > 0:
        if obj is None:
            raise PhysicsError("a real-space loss term needs the predicted object patches")
        parts["realspace"] = realspace_mae(obj, label)
        inner_w = cfg.realspace_mae_weight if cfg.realspace_mae_weight > 0 else 1.0
        loss = loss + cfg.realspace_weight * inner_w * parts["realspace"]
    parts["loss"] = loss
    return parts
