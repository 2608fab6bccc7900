"""Generator network: C diffraction amplitudes -> C complex object patches.

An encoder/decoder CNN (specified in ``specs/physics_and_losses.md``). The encoder takes
the ``C = gridsize**2`` normalised diffraction amplitudes of a group as channels and pools
down to an 8 x 8 bottleneck; two decoders (amplitude, phase) upsample back to real space.
Two layouts (``ModelConfig.generator``):

* ``"unet"`` (default): the amplitudes are first turned into a real-space estimate by one
  physics step (:func:`backproject`: inverse far field with the probe's far-field phase,
  divided by the probe), so that input and output pixels correspond; a U-Net with skip
  connections then refines [amplitude, Re, Im of the estimate] into the object.
* ``"cnn"``: the legacy layout, amplitudes straight into an encoder/decoder with no skip
  connections (a diffraction pixel and the object pixel at the same index are unrelated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ptychopinn_torch.attention import bottleneck_attention, decoder_attention, encoder_attention
from ptychopinn_torch.physics import far_field, inverse_far_field

if TYPE_CHECKING:
    from ptychopinn.config import ModelConfig

__all__ = ["Generator", "GeneratorOutput", "amplitude_activation", "gaussian_kernel_1d"]

SUPPORTED_N = (64, 128, 256)
GENERATORS = ("unet", "unet_lite", "cnn")
#: Width of the first encoder level per unit of ``n_filters_scale``.
BASE_FILTERS = 16
#: Spatial side of the bottleneck, pixels.
BOTTLENECK_PX = 8
#: min over x of SiLU(x) = x * sigmoid(x), reached at x ~= -1.2785.
_SILU_MIN = -0.2784645427610738


class NetworkError(ValueError):
    """Invalid network configuration or input."""


class GeneratorOutput(NamedTuple):
    """Generator output; all (B, C, N, N)."""

    obj: Tensor  #: complex64 object patches, ``amplitude * exp(1j * phase)``
    amplitude: Tensor  #: float32, >= 0, object amplitude (dimensionless transmission)
    phase: Tensor  #: float32, radians in (-pi, pi)


def amplitude_activation(name: str) -> nn.Module:
    """Non-negative activation for the amplitude head.

    sigmoid -> (0, 1); softplus -> (0, inf); relu -> [0, inf); swish (alias silu) ->
    ``SiLU(x) - min SiLU`` = [0, inf): SiLU shifted up by its minimum (~0.2785) so the
    amplitude is non-negative while keeping SiLU's smooth shape and gradients.
    """
    key = "swish" if name in ("silu", "SiLU", "SILU") else name
    if key == "sigmoid":
        return nn.Sigmoid()
    if key == "softplus":
        return nn.Softplus()
    if key == "relu":
        return nn.ReLU()
    if key == "swish":
        return _ShiftedSiLU()
    raise NetworkError(
        f"amp_activation={name!r} is not supported; use sigmoid, swish (silu), softplus or relu"
    )


class _ShiftedSiLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x) - _SILU_MIN


def gaussian_kernel_1d(sigma_px: float) -> Tensor:
    """Normalised 1-D Gaussian, radius ``ceil(3 sigma)`` px (float32)."""
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise NetworkError(f"gaussian sigma must be finite and > 0; got {sigma_px!r}")
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return (k / k.sum()).to(torch.float32)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class _Decoder(nn.Module):
    """One head: bottleneck features -> C maps, centre branch + optional border branch."""

    def __init__(
        self,
        widths: list[int],
        n_out: int,
        n: int,
        pad_object: bool,
        probe_big: bool,
        act: nn.Module,
        attention: Callable[[int], nn.Module] = lambda channels: nn.Identity(),
    ) -> None:
        super().__init__()
        self.N = n
        self.pad_object = pad_object
        self.probe_big = probe_big
        self.act = act
        rev = widths[::-1]
        # Up to N/2: len(widths) - 1 upsampling stages from the 8 px bottleneck.
        self.up_blocks = nn.ModuleList(_conv_block(rev[i], rev[i + 1]) for i in range(len(rev) - 1))
        self.attention = nn.ModuleList(attention(rev[i + 1]) for i in range(len(rev) - 1))
        w0 = widths[0]
        self.centre = nn.Conv2d(w0, n_out, 3, padding=1)
        if probe_big:
            self.border = nn.Sequential(
                nn.Conv2d(w0, max(w0 // 2, n_out), 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(max(w0 // 2, n_out), n_out, 3, padding=1),
            )
            mask = torch.ones((n, n), dtype=torch.float32)
            lo = n // 4
            mask[lo : lo + n // 2, lo : lo + n // 2] = 0.0
            self.register_buffer("border_mask", mask)
        else:
            self.border = None

    def forward(self, z: Tensor) -> Tensor:
        for block, attend in zip(self.up_blocks, self.attention, strict=True):
            z = attend(block(F.interpolate(z, scale_factor=2, mode="nearest")))
        # z is at N/2 x N/2 here.
        full = None
        if self.probe_big:
            full = F.interpolate(z, scale_factor=2, mode="nearest")
        if self.pad_object:
            centre = self.act(self.centre(z))
            q = self.N // 4
            out = F.pad(centre, (q, q, q, q))
        else:
            up = full if full is not None else F.interpolate(z, scale_factor=2, mode="nearest")
            out = self.act(self.centre(up))
        if self.border is not None:
            out = out + self.act(self.border(full)) * self.border_mask
        return out


def backproject(amplitude: Tensor, probe: Tensor | None) -> Tensor:
    """Real-space object estimate from normalised amplitudes (B, C, N, N), complex.

    One error-reduction step started from the probe: give the measured amplitude the phase
    of the probe's own far field, propagate back (inverse of ``physics.far_field``) and
    divide by the probe where it is bright (Tikhonov floor 5 % of max |P|^2). ``probe``
    None means plane-wave illumination (P = 1).
    """
    n = amplitude.shape[-1]
    if probe is None:
        probe = torch.ones((n, n), dtype=torch.complex64, device=amplitude.device)
    probe = probe.to(device=amplitude.device, dtype=torch.complex64)
    probe_ff = far_field(probe)
    unit_phase = probe_ff / (probe_ff.abs() + 1e-12)
    exit_wave = inverse_far_field(amplitude.to(torch.float32) * unit_phase)
    power = probe.abs() ** 2
    return exit_wave * probe.conj() / (power + 0.05 * power.max())


def _centre_mask(n: int, pad_object: bool) -> Tensor:
    """float32 (n, n): 1 on the central n/2 square with ``pad_object`` (0 around it),
    else 1 everywhere; the decoders' centre branch is multiplied by it."""
    mask = torch.ones((n, n), dtype=torch.float32)
    if pad_object:
        mask.zero_()
        lo = n // 4
        mask[lo : lo + n // 2, lo : lo + n // 2] = 1.0
    return mask


class _UNetDecoder(nn.Module):
    """One head of the U-Net: upsampling with skip features back to N x N, then the
    centre branch (masked to the central N/2 when ``pad_object``) and the optional border
    branch (``probe_big``)."""

    def __init__(
        self, widths: list[int], n_out: int, n: int, pad_object: bool, probe_big: bool,
        act: nn.Module, attention: Callable[[int], nn.Module] = lambda channels: nn.Identity(),
    ) -> None:
        super().__init__()
        self.act = act
        self.up_blocks = nn.ModuleList(
            _conv_block(widths[min(level + 1, len(widths) - 1)] + widths[level], widths[level])
            for level in reversed(range(len(widths)))
        )
        self.attention = nn.ModuleList(attention(widths[level])
                                       for level in reversed(range(len(widths))))
        self.centre = nn.Conv2d(widths[0], n_out, 3, padding=1)
        self.border = nn.Conv2d(widths[0], n_out, 3, padding=1) if probe_big else None
        self.register_buffer("centre_mask", _centre_mask(n, pad_object))

    def forward(self, z: Tensor, skips: list[Tensor]) -> Tensor:
        for block, attend, skip in zip(self.up_blocks, self.attention, reversed(skips),
                                       strict=True):
            z = block(torch.cat([F.interpolate(z, size=skip.shape[-2:], mode="nearest"), skip], 1))
            z = attend(z)
        out = self.act(self.centre(z)) * self.centre_mask
        if self.border is not None:
            out = out + self.act(self.border(z)) * (1.0 - self.centre_mask)
        return out


class _SharedUNetDecoder(nn.Module):
    """The "unet_lite" decoder: one decoder for both heads, one convolution per level.

    Upsampling with skip features back to N x N, one 3x3 convolution + ReLU per level,
    then a centre convolution (and a border one with ``probe_big``) giving 2C maps: the
    first C feed the amplitude activation, the last C the phase head.
    """

    def __init__(
        self, widths: list[int], n_out: int, n: int, pad_object: bool, probe_big: bool,
        amp_act: nn.Module, attention: Callable[[int], nn.Module] = lambda channels: nn.Identity(),
    ) -> None:
        super().__init__()
        self.n_out = n_out
        self.amp_act = amp_act
        self.phase_act = _PiTanh()
        self.up_blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[min(level + 1, len(widths) - 1)] + widths[level],
                          widths[level], 3, padding=1),
                nn.ReLU(inplace=True),
            )
            for level in reversed(range(len(widths)))
        )
        self.attention = nn.ModuleList(attention(widths[level])
                                       for level in reversed(range(len(widths))))
        self.centre = nn.Conv2d(widths[0], 2 * n_out, 3, padding=1)
        self.border = nn.Conv2d(widths[0], 2 * n_out, 3, padding=1) if probe_big else None
        self.register_buffer("centre_mask", _centre_mask(n, pad_object))

    def _heads(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        return self.amp_act(maps[:, : self.n_out]), self.phase_act(maps[:, self.n_out :])

    def forward(self, z: Tensor, skips: list[Tensor]) -> tuple[Tensor, Tensor]:
        for block, attend, skip in zip(self.up_blocks, self.attention, reversed(skips),
                                       strict=True):
            z = attend(block(torch.cat(
                [F.interpolate(z, size=skip.shape[-2:], mode="nearest"), skip], 1)))
        amp, phase = self._heads(self.centre(z))
        amp, phase = amp * self.centre_mask, phase * self.centre_mask
        if self.border is not None:
            border_amp, border_phase = self._heads(self.border(z))
            outside = 1.0 - self.centre_mask
            amp, phase = amp + border_amp * outside, phase + border_phase * outside
        return amp, phase


class Generator(nn.Module):
    """Encoder/decoder mapping (B, C, N, N) normalised amplitudes to complex object patches.

    * widths: level l has ``16 * n_filters_scale * 2**min(l, 2)`` channels; there are
      ``log2(N / 8)`` pooling levels (3, 4, 5 for N = 64, 128, 256) so the bottleneck is
      always 8 x 8;
    * amplitude head -> ``amp_activation`` (>= 0); phase head -> ``pi * tanh`` in (-pi, pi);
    * ``pad_object``: the centre branch predicts the central N/2 x N/2 region only and is
      zero-padded to N; otherwise it predicts the full N x N;
    * ``probe_big``: an extra border branch predicts the region outside the central
      N/2 x N/2 square and is added;
    * ``gaussian_smoothing_sigma`` > 0: the complex object is blurred by a fixed (not
      trainable) normalised Gaussian; ``amplitude``/``phase`` are then those of the
      blurred object.
    """

    def __init__(self, model_config: ModelConfig) -> None:
        super().__init__()
        self.kind = str(model_config.generator)
        if self.kind not in GENERATORS:
            raise NetworkError(f"generator={self.kind!r} is not one of {GENERATORS}")
        n = model_config.N
        if n not in SUPPORTED_N:
            raise NetworkError(f"N={n!r} is not supported; use one of {SUPPORTED_N}")
        if not isinstance(model_config.n_filters_scale, int) or model_config.n_filters_scale < 1:
            raise NetworkError(
                f"n_filters_scale={model_config.n_filters_scale!r} must be an integer >= 1"
            )
        sigma = float(model_config.gaussian_smoothing_sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise NetworkError(f"gaussian_smoothing_sigma={sigma!r} must be finite and >= 0")
        self.N = n
        self.C = int(model_config.gridsize) ** 2
        levels = int(round(math.log2(n / BOTTLENECK_PX)))
        widths = [
            BASE_FILTERS * model_config.n_filters_scale * 2 ** min(level, 2)
            for level in range(levels)
        ]
        self.widths = widths
        enc: list[nn.Module] = []
        # The U-Net also sees the real and imaginary parts of the back-projected estimate.
        c_in = self.C if self.kind == "cnn" else 3 * self.C
        for w in widths:
            enc.append(_conv_block(c_in, w))
            c_in = w
        self.encoder = nn.ModuleList(enc)
        # Attention blocks (ptychopinn_torch.attention); Identity when switched off.
        self.encoder_attention = nn.ModuleList(encoder_attention(w, model_config) for w in widths)
        self.bottleneck = _conv_block(widths[-1], widths[-1])
        self.bottleneck_attention = bottleneck_attention(widths[-1], model_config)
        pad_object = bool(model_config.pad_object)
        probe_big = bool(model_config.probe_big)
        attend = lambda channels: decoder_attention(channels, model_config)  # noqa: E731
        if self.kind == "unet_lite":
            self.decoder = _SharedUNetDecoder(
                widths, self.C, n, pad_object, probe_big,
                amplitude_activation(model_config.amp_activation), attend)
        else:
            decoder = _UNetDecoder if self.kind == "unet" else _Decoder
            self.amp_decoder = decoder(widths, self.C, n, pad_object, probe_big,
                                       amplitude_activation(model_config.amp_activation),
                                       attend)
            self.phase_decoder = decoder(widths, self.C, n, pad_object, probe_big, _PiTanh(),
                                         attend)
        if sigma > 0:
            k = gaussian_kernel_1d(sigma)
            self.register_buffer("smooth_kernel", k)
            # Normalised convolution: divide by the blurred ones-image so edges keep their
            # level (zero padding alone would darken them) without replicate padding, whose
            # CUDA backward is non-deterministic.
            ones = torch.ones((1, 1, n, n))
            self.register_buffer("smooth_norm", self._blur_real(ones, k)[0, 0])
        else:
            self.smooth_kernel = None

    @staticmethod
    def _blur_real(x: Tensor, k: Tensor) -> Tensor:
        ch = x.shape[1]
        r = k.numel() // 2
        kx = k.view(1, 1, 1, -1).expand(ch, 1, 1, k.numel())
        ky = k.view(1, 1, -1, 1).expand(ch, 1, k.numel(), 1)
        x = F.conv2d(x, kx, padding=(0, r), groups=ch)
        return F.conv2d(x, ky, padding=(r, 0), groups=ch)

    def forward(self, x: Tensor, probe: Tensor | None = None) -> GeneratorOutput:
        """x: (B, C, N, N) normalised diffraction amplitude -> :class:`GeneratorOutput`.

        ``probe`` (N, N) complex, in the forward model's normalised units, feeds the
        U-Net's back-projection (None: plane wave); the "cnn" layout does not use it.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.C, self.N, self.N):
            raise NetworkError(
                f"input must be (B, {self.C}, {self.N}, {self.N}); got {tuple(x.shape)}"
            )
        z = x
        if self.kind != "cnn":
            estimate = backproject(x, probe)
            z = torch.cat([x, estimate.real, estimate.imag], dim=1)
        skips = []
        for block, attend in zip(self.encoder, self.encoder_attention, strict=True):
            features = attend(block(z))
            skips.append(features)
            z = F.max_pool2d(features, 2)
        z = self.bottleneck_attention(self.bottleneck(z))
        # float32 before polar: under mixed precision the heads may run in half precision,
        # and the object must be complex64 for the FFT forward model.
        if self.kind == "unet_lite":
            amp, phase = (t.float() for t in self.decoder(z, skips))
        elif self.kind == "unet":
            amp = self.amp_decoder(z, skips).float()
            phase = self.phase_decoder(z, skips).float()
        else:
            amp = self.amp_decoder(z).float()
            phase = self.phase_decoder(z).float()
        obj = torch.polar(amp, phase)
        if self.smooth_kernel is not None:
            obj = self._smooth(obj)
            amp = obj.abs()
            phase = _safe_angle(obj)
        return GeneratorOutput(obj=obj, amplitude=amp, phase=phase)

    def _smooth(self, obj: Tensor) -> Tensor:
        b, c, n, _ = obj.shape
        parts = torch.cat([obj.real, obj.imag], dim=1)
        blurred = self._blur_real(parts, self.smooth_kernel) / self.smooth_norm
        return torch.complex(blurred[:, :c], blurred[:, c:])


class _PiTanh(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return math.pi * torch.tanh(x)


def _safe_angle(z: Tensor) -> Tensor:
    """angle(z) with a zero (not NaN) gradient where z == 0."""
    re, im = z.real, z.imag
    tiny = (re * re + im * im) < 1e-30
    return torch.atan2(
        torch.where(tiny, torch.zeros_like(im), im), torch.where(tiny, torch.ones_like(re), re)
    )
