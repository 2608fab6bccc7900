"""Generator network: shapes, activations, and that every ModelConfig field has an effect."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn_torch.networks import Generator, amplitude_activation, backproject
from ptychopinn_torch.physics import ForwardModel, total_loss


def val(t: torch.Tensor) -> float:
    return float(t.detach())


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build(seed: int = 0, **fields: object) -> Generator:
    torch.manual_seed(seed)
    return Generator(ModelConfig(**fields))


def inputs(cfg: ModelConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, cfg.C, cfg.N, cfg.N), generator=g) * 2.0


def gaussian_probe(n: int, sigma: float) -> np.ndarray:
    idx = np.arange(n) - n // 2
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.complex64)


def stand_in(**changes: object) -> SimpleNamespace:
    """A config-like object that bypasses ModelConfig validation, to reach the network's own
    checks."""
    base = dataclasses.asdict(ModelConfig())
    base.update(changes)
    return SimpleNamespace(**base)


def test_default_output_shapes_dtypes_and_ranges() -> None:
    cfg = ModelConfig()
    gen = build()
    out = gen(inputs(cfg))
    assert out.obj.shape == out.amplitude.shape == out.phase.shape == (2, 1, 64, 64)
    assert out.obj.dtype == torch.complex64 and out.amplitude.dtype == torch.float32
    assert val(out.amplitude.min()) >= 0.0 and val(out.amplitude.max()) < 1.0
    assert val(out.phase.abs().max()) < math.pi
    torch.testing.assert_close(out.obj, torch.polar(out.amplitude, out.phase))


def test_input_shape_is_checked() -> None:
    gen = build()
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\)"):
        gen(torch.zeros(2, 4, 64, 64))
    with pytest.raises(ValueError, match="input"):
        gen(torch.zeros(1, 64, 64))


# ------------------------------------------------------------- one check per field
def check_N() -> None:  # noqa: N802
    sizes = {}
    for n in (64, 128, 256):
        cfg = ModelConfig(N=n)
        gen = build(N=n)
        out = gen(inputs(cfg, batch=1))
        assert out.obj.shape == (1, 1, n, n)
        sizes[n] = n_params(gen)
    assert sizes[64] < sizes[128] < sizes[256]  # one more pooling level per doubling
    with pytest.raises(ValueError, match="N=96"):
        Generator(stand_in(N=96))


def check_gridsize() -> None:
    cfg = ModelConfig(gridsize=2)
    gen = build(gridsize=2)
    assert gen(inputs(cfg)).obj.shape == (2, 4, 64, 64)
    assert n_params(gen) != n_params(build())
    with pytest.raises(ValueError, match="input"):
        gen(torch.zeros(1, 1, 64, 64))


def check_n_filters_scale() -> None:
    one, two = n_params(build(n_filters_scale=1)), n_params(build(n_filters_scale=2))
    assert 3.0 < two / one < 4.5  # conv parameters grow ~ width**2
    with pytest.raises(ValueError, match="n_filters_scale"):
        Generator(stand_in(n_filters_scale=0))


def check_model_type() -> None:
    # The generator is shared: model_type selects the losses, not the architecture.
    pinn, sup = build(model_type="pinn"), build(model_type="supervised")
    x = inputs(ModelConfig())
    torch.testing.assert_close(pinn(x).obj, sup(x).obj)
    out = sup(x)
    meas = x * 0.5
    label = torch.polar(torch.full_like(out.amplitude, 0.5), torch.zeros_like(out.phase))
    common = {"pred_amp": out.amplitude, "meas_amp": meas, "intensity_scale": 5.0, "obj": out.obj}
    sup_cfg = TrainingConfig(model=ModelConfig(model_type="supervised"))
    sup_loss = total_loss(sup_cfg, amp=out.amplitude, phase=out.phase, label=label, **common)
    pinn_loss = total_loss(TrainingConfig(), **common)
    assert "supervised" in sup_loss and "poisson" not in sup_loss
    assert "poisson" in pinn_loss and "supervised" not in pinn_loss
    with pytest.raises(ValueError, match="label"):
        total_loss(sup_cfg, amp=out.amplitude, phase=out.phase, **common)


def check_amp_activation() -> None:
    x = inputs(ModelConfig())
    amps = {
        name: build(amp_activation=name)(x).amplitude
        for name in ("sigmoid", "swish", "softplus", "relu")
    }
    for name, a in amps.items():
        assert val(a.min()) >= 0.0, name
    names = list(amps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (amps[a] - amps[b]).abs().max() > 1e-3, (a, b)
    # the alias is accepted and identical to swish
    torch.testing.assert_close(build(amp_activation="silu")(x).amplitude, amps["swish"])
    with pytest.raises(ValueError, match="amp_activation"):
        Generator(stand_in(amp_activation="tanh"))


def check_object_big() -> None:
    cfg_big = ModelConfig(gridsize=2, object_big=True)
    cfg_small = ModelConfig(gridsize=2, object_big=False)
    obj = build(gridsize=2)(inputs(cfg_big)).obj
    off = torch.tensor([[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]).expand(2, 4, 2)
    probe = gaussian_probe(64, 8.0)
    big = ForwardModel(cfg_big, probe)(obj, off)
    small = ForwardModel(cfg_small, probe)(obj, off)
    assert (big - small).abs().max() > 1e-3


def check_probe_big() -> None:
    x = inputs(ModelConfig())
    with_border, without = build(probe_big=True), build(probe_big=False)
    assert n_params(with_border) > n_params(without)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[16:48, 16:48] = False
    assert val(without(x).amplitude[..., outside].abs().max()) == 0.0
    assert val(with_border(x).amplitude[..., outside].min()) > 0.0


def check_probe_mask() -> None:
    obj = build()(inputs(ModelConfig())).obj
    probe = gaussian_probe(64, 16.0)
    plain = ForwardModel(ModelConfig(probe_mask=False), probe)(obj)
    masked_model = ForwardModel(ModelConfig(probe_mask=True), probe)
    assert (masked_model(obj) - plain).abs().max() > 1e-3
    assert "probe_mask" in dict(masked_model.named_buffers())


def check_pad_object() -> None:
    x = inputs(ModelConfig())
    padded = build(pad_object=True, probe_big=False)(x).amplitude
    full = build(pad_object=False, probe_big=False)(x).amplitude
    assert val(padded[..., :16, :].abs().max()) == 0.0
    assert val(full[..., :16, :].min()) > 0.0


def check_probe_scale() -> None:
    obj = build()(inputs(ModelConfig())).obj
    probe = gaussian_probe(64, 8.0)
    a4 = ForwardModel(ModelConfig(probe_scale=4.0), probe)(obj)
    a16 = ForwardModel(ModelConfig(probe_scale=16.0), probe)(obj)
    torch.testing.assert_close(a16, 2.0 * a4, rtol=1e-4, atol=1e-4)


def check_gaussian_smoothing_sigma() -> None:
    sigma = 1.5
    x = inputs(ModelConfig())
    raw_gen, smooth_gen = build(), build(gaussian_smoothing_sigma=sigma)
    assert n_params(raw_gen) == n_params(smooth_gen)  # fixed blur, nothing trainable
    raw = raw_gen(x).obj.detach().numpy()
    got = smooth_gen(x)
    # independent reference: normalised (zero-padded) Gaussian convolution in scipy
    r = math.ceil(3 * sigma)
    t = np.arange(-r, r + 1)
    k1 = np.exp(-0.5 * (t / sigma) ** 2)
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    norm = ndimage.correlate(np.ones((64, 64)), k2, mode="constant", cval=0.0)
    for b in range(raw.shape[0]):
        re = ndimage.correlate(raw[b, 0].real.astype(np.float64), k2, mode="constant") / norm
        im = ndimage.correlate(raw[b, 0].imag.astype(np.float64), k2, mode="constant") / norm
        np.testing.assert_allclose(got.obj[b, 0].detach().numpy(), re + 1j * im, atol=2e-5)
    torch.testing.assert_close(got.amplitude, got.obj.abs())
    assert val(got.phase.abs().max()) <= math.pi


def check_generator() -> None:
    x = inputs(ModelConfig())
    unet, cnn, lite = build(generator="unet"), build(generator="cnn"), build(generator="unet_lite")
    assert len({n_params(unet), n_params(cnn), n_params(lite)}) == 3
    assert unet(x).obj.shape == cnn(x).obj.shape == lite(x).obj.shape == (2, 1, 64, 64)
    # only the U-Nets look at the probe (through the back-projection)
    probe = torch.from_numpy(gaussian_probe(64, 8.0))
    assert (unet(x, probe).obj - unet(x).obj).abs().max() > 1e-6
    assert (lite(x, probe).obj - lite(x).obj).abs().max() > 1e-6
    torch.testing.assert_close(cnn(x, probe).obj, cnn(x).obj)
    # unet_lite: one shared decoder, one convolution per level, about half the cost
    assert not hasattr(lite, "amp_decoder") and hasattr(lite, "decoder")
    from torch.utils.flop_counter import FlopCounterMode

    def flops(net: Generator) -> int:
        with FlopCounterMode(display=False) as counter:
            net(x[:1])
        return counter.get_total_flops()

    assert 0.4 < flops(lite) / flops(unet) < 0.6
    out = lite(x, probe)
    assert (out.amplitude >= 0).all() and (out.amplitude <= 1).all()  # sigmoid
    assert out.phase.abs().max() <= math.pi
    with pytest.raises(ValueError, match="generator"):
        Generator(stand_in(generator="resnet"))


def _attention_check(name: str, block: type, where: str):
    def check() -> None:
        from ptychopinn_torch import attention

        for generator in ("unet", "unet_lite", "cnn"):
            plain = build(generator=generator, n_filters_scale=1)
            attended = build(generator=generator, n_filters_scale=1, **{name: True})
            new_keys = set(attended.state_dict()) - set(plain.state_dict())
            # Off: no extra weights at all (old bundles load); on: weights only at `where`.
            assert set(plain.state_dict()) <= set(attended.state_dict())
            assert new_keys and all(k.startswith(where) or (generator == "unet_lite" and
                                    k.startswith("decoder.attention")) for k in new_keys), new_keys
            assert any(isinstance(m, block) for m in attended.modules())
            assert not any(isinstance(m, block) for m in plain.modules())
            x = inputs(ModelConfig())
            out = attended(x)
            assert out.obj.shape == plain(x).obj.shape == (2, 1, 64, 64)
            assert torch.isfinite(out.amplitude).all()
            # The attention is in the path: it changes what the same other weights give.
            attended.load_state_dict(plain.state_dict(), strict=False)
            assert (attended(x).obj - plain(x).obj).abs().max() > 1e-6
        assert issubclass(block, torch.nn.Module) and block.__module__ == attention.__name__

    return check


def _decoder_names(prefix: str) -> tuple[str, ...]:
    return (f"amp_decoder.{prefix}", f"phase_decoder.{prefix}")


def check_decoder_spatial_kernel() -> None:
    from ptychopinn_torch.attention import SpatialAttention

    for kernel in (3, 7):
        net = build(n_filters_scale=1, spatial_decoder=True, decoder_spatial_kernel=kernel)
        convs = [m.conv for m in net.modules() if isinstance(m, SpatialAttention)]
        assert convs and all(c.kernel_size == (kernel, kernel) for c in convs)
    # Without spatial_decoder the kernel size builds nothing.
    assert set(build(decoder_spatial_kernel=3).state_dict()) == set(build().state_dict())


def _attention_checks() -> dict:
    from ptychopinn_torch.attention import CBAM, ECA, SpatialAttention

    return {
        "eca_encoder": _attention_check("eca_encoder", ECA, "encoder_attention"),
        "cbam_encoder": _attention_check("cbam_encoder", CBAM, "encoder_attention"),
        "cbam_bottleneck": _attention_check("cbam_bottleneck", CBAM, "bottleneck_attention"),
        "cbam_decoder": _attention_check("cbam_decoder", CBAM, _decoder_names("attention")),
        "eca_decoder": _attention_check("eca_decoder", ECA, _decoder_names("attention")),
        "spatial_decoder": _attention_check("spatial_decoder", SpatialAttention,
                                            _decoder_names("attention")),
        "decoder_spatial_kernel": check_decoder_spatial_kernel,
    }


FIELD_CHECKS = {
    **_attention_checks(),
    "generator": check_generator,
    "N": check_N,
    "gridsize": check_gridsize,
    "n_filters_scale": check_n_filters_scale,
    "model_type": check_model_type,
    "amp_activation": check_amp_activation,
    "object_big": check_object_big,
    "probe_big": check_probe_big,
    "probe_mask": check_probe_mask,
    "pad_object": check_pad_object,
    "probe_scale": check_probe_scale,
    "gaussian_smoothing_sigma": check_gaussian_smoothing_sigma,
}


def test_every_model_config_field_has_a_check() -> None:
    assert {f.name for f in dataclasses.fields(ModelConfig)} == set(FIELD_CHECKS)


@pytest.mark.parametrize("field", sorted(FIELD_CHECKS))
def test_model_config_field_changes_behaviour(field: str) -> None:
    FIELD_CHECKS[field]()


# ------------------------------------------------------------------------ details
def test_swish_amplitude_is_shifted_silu_with_zero_minimum() -> None:
    act = amplitude_activation("swish")
    x = torch.linspace(-10, 10, 20001)
    y = act(x)
    assert val(y.min()) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(y - y[10000], torch.nn.functional.silu(x))  # y(0) = shift


def test_smoothing_with_zero_padded_region_has_finite_gradients() -> None:
    gen = build(gaussian_smoothing_sigma=1.0, probe_big=False)
    out = gen(inputs(ModelConfig()))
    (out.amplitude.sum() + out.phase.sum()).backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_backproject_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    amp = rng.uniform(0, 2, (2, 1, 16, 16)).astype(np.float32)
    probe = (gaussian_probe(16, 3.0) * np.exp(1j * rng.uniform(-1, 1, (16, 16)))).astype(
        np.complex64
    )
    probe_ff = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(probe), norm="ortho"))
    field = amp * probe_ff / np.abs(probe_ff)
    psi = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(field, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    power = np.abs(probe) ** 2
    expected = psi * probe.conj() / (power + 0.05 * power.max())
    got = backproject(torch.from_numpy(amp), torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # a noise-free pattern of a plane-wave-lit object back-projects to that object
    obj = np.exp(1j * 0.3) * np.ones((16, 16), np.complex64)
    meas = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj), norm="ortho")))
    flat = backproject(torch.from_numpy(meas[None, None].astype(np.float32)), None).numpy()
    np.testing.assert_allclose(np.abs(flat[0, 0]), np.ones((16, 16)) / 1.05, atol=1e-5)
