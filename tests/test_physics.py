"""Physics and losses of ptychopinn_torch.physics, checked against independent numpy code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn_torch.networks import Generator
from ptychopinn_torch.physics import (
    ForwardModel,
    amplitude_mae,
    canvas_size,
    circular_probe_mask,
    extract_patches,
    far_field,
    far_field_amplitude,
    intensity_scale_from,
    merge_and_reextract,
    normalise_probe,
    object_support,
    poisson_nll,
    realspace_mae,
    supervised_loss,
    total_loss,
    translate,
    wrap_phase,
)

RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------ numpy references
def np_shift_int(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """out[i, j] = img[i - dy, j - dx], zero fill (np.roll without wrap-around)."""
    out = np.roll(img, (dy, dx), axis=(0, 1))
    h, w = img.shape
    if dy > 0:
        out[:dy, :] = 0
    elif dy < 0:
        out[h + dy :, :] = 0
    if dx > 0:
        out[:, :dx] = 0
    elif dx < 0:
        out[:, w + dx :] = 0
    return out


def np_bilinear_at(img: np.ndarray, y: float, x: float) -> complex:
    """Bilinear value of img at (row y, column x), zero outside, written pixel by pixel."""
    h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    fy, fx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy, xx]
    return total


def np_translate(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    h, w = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            out[i, j] = np_bilinear_at(img, i - dy, j - dx)
    return out


def np_far_field(psi: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(psi, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )


def rand_complex(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def gaussian_probe(n: int, sigma: float) -> np.ndarray:
    idx = np.arange(n) - n // 2
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    return (np.exp(-r2 / (2 * sigma**2)) * np.exp(1j * 0.01 * r2)).astype(np.complex64)


# ---------------------------------------------------------------------- translation
@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (-4, 5), (7, -1), (0, 0)])
def test_translate_integer_equals_roll_with_zero_fill(dx: int, dy: int) -> None:
    img = rand_complex(12, 10)
    got = translate(torch.from_numpy(img)[None], torch.tensor([[dx, dy]], dtype=torch.float64))[0]
    np.testing.assert_array_equal(got.numpy(), np_shift_int(img, dx, dy))


def test_translate_sign_moves_content_towards_plus_x_and_plus_y() -> None:
    img = np.zeros((9, 9), np.float32)
    img[4, 4] = 1.0
    out = translate(torch.from_numpy(img)[None], torch.tensor([[2.0, -3.0]]))[0].numpy()
    assert out[1, 6] == 1.0  # row 4 + dy, column 4 + dx
    assert out.sum() == 1.0


def test_translate_subpixel_matches_numpy_bilinear_batched() -> None:
    imgs = rand_complex(3, 11, 13)
    shifts = np.array([[0.3, -1.7], [-2.25, 0.5], [4.9, 3.1]])
    got = translate(torch.from_numpy(imgs), torch.from_numpy(shifts)).numpy()
    for b in range(3):
        ref = np_translate(imgs[b], shifts[b, 0], shifts[b, 1])
        np.testing.assert_allclose(got[b], ref, rtol=1e-5, atol=1e-5)


def test_translate_real_input_stays_real_and_rejects_bad_shapes() -> None:
    img = torch.rand(2, 8, 8)
    out = translate(img, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="shifts_px"):
        translate(img, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        translate(img[0], torch.zeros(1, 2))


# -------------------------------------------------------------------- extraction
def test_extract_patches_integer_positions_equal_numpy_slicing() -> None:
    obj = rand_complex(40, 50)
    n = 16
    positions = np.array([[10, 12], [25, 20], [30.0, 31.0], [8, 8]])  # (x, y)
    got = extract_patches(torch.from_numpy(obj), torch.from_numpy(positions), n).numpy()
    for k, (x, y) in enumerate(positions.astype(int)):
        np.testing.assert_array_equal(got[k], obj[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2])


def test_extract_patches_subpixel_and_outside_match_numpy_bilinear() -> None:
    obj = rand_complex(20, 24)
    n = 8
    positions = np.array([[5.4, 6.75], [22.5, 3.2]])  # the second runs off the object
    got = extract_patches(torch.from_numpy(obj), torch.from_numpy(positions), n).numpy()
    for k, (x, y) in enumerate(positions):
        ref = np.array(
            [
                [np_bilinear_at(obj, y - n // 2 + i, x - n // 2 + j) for j in range(n)]
                for i in range(n)
            ]
        )
        np.testing.assert_allclose(got[k], ref, rtol=1e-5, atol=1e-5)


def test_extract_patches_rejects_bad_positions() -> None:
    with pytest.raises(ValueError, match="positions_px"):
        extract_patches(torch.zeros(10, 10), torch.zeros(4, 3), 4)
    with pytest.raises(ValueError, match="non-finite"):
        extract_patches(torch.zeros(10, 10), torch.tensor([[1.0, float("nan")]]), 4)


# ---------------------------------------------------------------------- far field
def test_far_field_matches_numpy_and_parseval() -> None:
    psi = rand_complex(2, 3, 32, 32)
    got = far_field(torch.from_numpy(psi)).numpy()
    ref = np_far_field(psi.astype(np.complex128))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(
        (np.abs(got) ** 2).sum(axis=(-2, -1)), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-5
    )
    amp = far_field_amplitude(torch.from_numpy(psi)).numpy()
    np.testing.assert_allclose(amp, np.abs(ref), rtol=1e-4, atol=2e-5)


def test_far_field_puts_dc_at_centre() -> None:
    psi = np.ones((16, 16), np.complex64)
    amp = far_field_amplitude(torch.from_numpy(psi)).numpy()
    assert amp[8, 8] == pytest.approx(16.0, rel=1e-6)
    assert np.abs(amp).sum() == pytest.approx(16.0, rel=1e-6)


# ------------------------------------------------------------- merge / re-extract
def _group_from_object(
    obj: np.ndarray, centroid: np.ndarray, offsets: np.ndarray, n: int
) -> np.ndarray:
    patches = []
    for off in offsets:
        x, y = (centroid + off).astype(int)
        patches.append(obj[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2])
    return np.stack(patches)


def test_merge_and_reextract_returns_consistent_patches() -> None:
    n = 16
    obj = rand_complex(64, 64)
    offsets = np.array(
        [[[-3, -2], [4, -3], [-2, 5], [3, 2]], [[0, 0], [6, 0], [0, -6], [-5, 4]]], float
    )
    centroids = np.array([[30, 31], [33, 29]])
    patches = np.stack(
        [_group_from_object(obj, c, o, n) for c, o in zip(centroids, offsets, strict=True)]
    )
    got = merge_and_reextract(torch.from_numpy(patches), torch.from_numpy(offsets)).numpy()
    np.testing.assert_allclose(got, patches, rtol=1e-5, atol=1e-6)
    # Wrong-sign offsets put the patches in the wrong places, so the merge must disagree.
    wrong = merge_and_reextract(torch.from_numpy(patches), torch.from_numpy(-offsets)).numpy()
    assert np.abs(wrong - patches).max() > 0.1


def test_merge_averages_overlapping_patches_by_count() -> None:
    n = 8
    patches = np.zeros((1, 2, n, n), np.complex64)
    patches[0, 0] = 1.0
    patches[0, 1] = 3.0
    offsets = np.array([[[-2.0, 0.0], [2.0, 0.0]]])  # overlap: columns 2..5 of patch 0
    got = merge_and_reextract(torch.from_numpy(patches), torch.from_numpy(offsets)).numpy()[0, 0]
    # patch 0 sees: its own region alone (1), the shared region (mean 2).
    np.testing.assert_allclose(got[:, :4].real, 1.0, atol=1e-6)
    np.testing.assert_allclose(got[:, 4:].real, 2.0, atol=1e-6)


def test_merge_subpixel_offsets_smooth_object_close() -> None:
    n, size = 16, 64
    yy, xx = np.mgrid[0:size, 0:size]
    obj = (np.exp(1j * 0.2 * np.sin(xx / 6.0)) * (0.8 + 0.1 * np.cos(yy / 7.0))).astype(
        np.complex64
    )
    centroid = np.array([32.3, 31.6])
    offsets = np.array([[[-2.4, -1.7], [2.6, -2.1], [-1.9, 2.8], [1.7, 1.0]]])
    positions = centroid + offsets[0]
    patches = extract_patches(torch.from_numpy(obj), torch.from_numpy(positions), n)[None]
    got = merge_and_reextract(patches, torch.from_numpy(offsets)).numpy()
    inner = slice(2, n - 2)
    np.testing.assert_allclose(
        got[..., inner, inner], patches.numpy()[..., inner, inner], atol=5e-3
    )


def test_merge_gridsize_one_is_identity_and_bad_canvas_rejected() -> None:
    p = torch.from_numpy(rand_complex(3, 1, 8, 8))
    assert merge_and_reextract(p, torch.zeros(3, 1, 2)) is p
    p4 = torch.from_numpy(rand_complex(1, 4, 8, 8))
    off = torch.tensor([[[3.5, 0.0], [-3.5, 0.0], [0.0, 1.0], [0.0, -1.0]]])
    assert canvas_size(8, 3.5) == 16
    torch.testing.assert_close(
        merge_and_reextract(p4, off, canvas_px=16), merge_and_reextract(p4, off, canvas_px=30)
    )
    with pytest.raises(ValueError, match="canvas_px"):
        merge_and_reextract(p4, off, canvas_px=10)
    with pytest.raises(ValueError, match="local_offsets_px"):
        merge_and_reextract(p4, torch.zeros(1, 3, 2))


# ------------------------------------------------------------------ probe / scales
def test_normalise_probe_energy_and_probe_scale() -> None:
    n = 32
    probe = torch.from_numpy(gaussian_probe(n, 5.0))
    for scale in (1.0, 4.0, 9.0):
        p = normalise_probe(probe, scale).numpy()
        assert (np.abs(p) ** 2).sum() == pytest.approx(scale * (n / 2) ** 2, rel=1e-5)
        # shape and phase kept: a real positive multiple of the input
        ratio = p / probe.numpy()
        np.testing.assert_allclose(ratio.imag, 0, atol=1e-5)
        assert np.ptp(ratio.real) < 1e-4 * ratio.real.mean()
    support = object_support(n, pad_object=True, probe_big=False)
    p = normalise_probe(probe, 4.0, support).numpy()
    assert ((np.abs(p) ** 2) * support.numpy()).sum() == pytest.approx(4.0 * (n / 2) ** 2, rel=1e-5)
    with pytest.raises(ValueError, match="probe_scale"):
        normalise_probe(probe, 0.0)
    with pytest.raises(ValueError, match="energy"):
        normalise_probe(torch.zeros(n, n, dtype=torch.complex64), 4.0)


def test_uniform_object_of_inverse_sqrt_probe_scale_reproduces_mean_intensity() -> None:
    n = 64
    for scale in (4.0, 10.0):
        cfg = ModelConfig(N=n, probe_scale=scale)
        fm = ForwardModel(cfg, gaussian_probe(n, 8.0))
        obj = torch.full((1, 1, n, n), 1 / math.sqrt(scale), dtype=torch.complex64)
        total = float((fm(obj) ** 2).sum())
        assert total == pytest.approx((n / 2) ** 2, rel=1e-4)


def test_circular_probe_mask_radius_and_soft_edge() -> None:
    n = 64
    m = circular_probe_mask(n).numpy()
    assert m[n // 2, n // 2] == 1.0
    assert m[0, 0] == 0.0
    assert m[n // 2, n // 2 + 15] == 1.0  # inside radius 16
    assert m[n // 2, n // 2 + 17] == 0.0  # outside
    assert 0.0 < m[n // 2 + 11, n // 2 + 11] < 1.0  # distance 15.56: on the soft edge
    assert m.sum() == pytest.approx(math.pi * 16**2, rel=0.02)


def test_intensity_scale_from_conventions() -> None:
    assert intensity_scale_from(1e6, 64) == pytest.approx(1000 / 32)
    with pytest.raises(ValueError, match="nphotons"):
        intensity_scale_from(0.0, 64)


# ------------------------------------------------------------------ forward model
def test_forward_model_matches_numpy_pipeline() -> None:
    n = 64
    cfg = ModelConfig(N=n, gridsize=1, probe_scale=4.0)
    probe = gaussian_probe(n, 8.0)
    fm = ForwardModel(cfg, np.stack([probe, 0.5 * probe[::-1]]), intensity_scale=3.0)
    obj = rand_complex(2, 1, n, n)
    got = fm(torch.from_numpy(obj)).numpy()
    p_ref = probe.astype(np.complex128)
    p_ref *= math.sqrt(4.0) * (n / 2) / math.sqrt((np.abs(p_ref) ** 2).sum())
    ref = np.abs(np_far_field(p_ref * obj))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert float(fm.intensity_scale.detach()) == pytest.approx(3.0, rel=1e-6)


def test_forward_model_probe_scale_and_mask_change_output() -> None:
    n = 64
    obj = torch.from_numpy(rand_complex(1, 1, n, n))
    probe = gaussian_probe(n, 14.0)
    base = ForwardModel(ModelConfig(N=n), probe)(obj)
    other_scale = ForwardModel(ModelConfig(N=n, probe_scale=9.0), probe)(obj)
    masked = ForwardModel(ModelConfig(N=n, probe_mask=True), probe)
    torch.testing.assert_close(other_scale, base * 1.5, rtol=1e-4, atol=1e-4)
    assert (masked(obj) - base).abs().max() > 1e-2
    assert float(masked.probe.abs()[0, 0]) == 0.0


def test_forward_model_object_big_merges_groups() -> None:
    n = 64
    obj = torch.from_numpy(rand_complex(2, 4, n, n))
    off = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]]).expand(2, 4, 2)
    probe = gaussian_probe(n, 8.0)
    big = ForwardModel(ModelConfig(N=n, gridsize=2, object_big=True), probe)
    small = ForwardModel(ModelConfig(N=n, gridsize=2, object_big=False), probe)
    assert (big(obj, off) - small(obj, off)).abs().max() > 1e-2
    torch.testing.assert_close(small(obj, off), small(obj))
    with pytest.raises(ValueError, match="local_offsets"):
        big(obj)


def test_forward_model_rejects_bad_probe_and_shapes() -> None:
    with pytest.raises(ValueError, match="probe"):
        ForwardModel(ModelConfig(N=64), np.ones((32, 32), np.complex64))
    with pytest.raises(ValueError, match="intensity_scale"):
        ForwardModel(ModelConfig(N=64), np.ones((64, 64), np.complex64), intensity_scale=-1.0)
    fm = ForwardModel(ModelConfig(N=64), np.ones((64, 64), np.complex64))
    with pytest.raises(ValueError, match="object_patches"):
        fm(torch.zeros(1, 4, 64, 64, dtype=torch.complex64))


# ------------------------------------------------------------------------- losses
def test_poisson_nll_equals_numpy_formula() -> None:
    pred = RNG.uniform(0.0, 2.0, (2, 1, 8, 8)).astype(np.float32)
    meas = RNG.uniform(0.0, 2.0, (2, 1, 8, 8)).astype(np.float32)
    s = 7.5
    lam = (pred.astype(np.float64) * s) ** 2
    k = (meas.astype(np.float64) * s) ** 2
    ref = np.mean(lam - k * np.log(lam + 1e-6) - (k - k * np.log(k + 1e-6)))
    got = poisson_nll(torch.from_numpy(pred), torch.from_numpy(meas), s)
    assert float(got) == pytest.approx(ref, rel=1e-5)
    # a separate data scale converts the measurement only
    got2 = poisson_nll(torch.from_numpy(pred), torch.from_numpy(meas), s, meas_intensity_scale=2.0)
    k2 = (meas.astype(np.float64) * 2.0) ** 2
    ref2 = np.mean(lam - k2 * np.log(lam + 1e-6) - (k2 - k2 * np.log(k2 + 1e-6)))
    assert float(got2) == pytest.approx(ref2, rel=1e-5)


def test_poisson_nll_minimum_at_pred_equals_meas() -> None:
    meas = torch.from_numpy(RNG.uniform(0.2, 2.0, (1, 1, 8, 8)).astype(np.float32))
    pred = meas.clone().requires_grad_(True)
    loss = poisson_nll(pred, meas, 10.0)
    loss.backward()
    assert pred.grad.abs().max() < 1e-5
    assert abs(float(loss.detach())) < 1e-4  # the deviance is zero at a perfect fit
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert float(poisson_nll(meas * factor, meas, 10.0)) > float(loss.detach())


def test_mae_realspace_and_supervised_losses() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.5, 2.0], [2.0, 4.0]])
    assert float(amplitude_mae(a, b)) == pytest.approx(1.5 / 4)
    o = torch.tensor([1 + 1j, 0j], dtype=torch.complex64)
    lbl = torch.tensor([1 + 0j, 3j], dtype=torch.complex64)
    assert float(realspace_mae(o, lbl)) == pytest.approx((1 + 3) / 2)
    label = torch.polar(torch.tensor([1.0, 0.5]), torch.tensor([3.0, -3.0]))
    amp = torch.tensor([0.8, 0.5])
    phase = torch.tensor([-3.0, 3.0])  # wrapped differences 2*pi - 6 and 6 - 2*pi
    expected = (0.2 + 0.0) / 2 + (2 * (2 * math.pi - 6)) / 2
    assert float(supervised_loss(amp, phase, label)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(
        wrap_phase(torch.tensor([3 * math.pi / 2, -7.0])).numpy(),
        [-math.pi / 2, -7 + 2 * math.pi],
        atol=1e-6,
    )


def _loss_inputs() -> dict[str, torch.Tensor]:
    shape = (2, 1, 8, 8)
    meas = torch.from_numpy(RNG.uniform(0.1, 1.0, shape).astype(np.float32))
    pred = meas * 1.2
    obj = torch.from_numpy(rand_complex(*shape))
    label = torch.from_numpy(rand_complex(*shape))
    return {"pred_amp": pred, "meas_amp": meas, "obj": obj, "label": label}


def test_total_loss_modes_and_weights() -> None:
    x = _loss_inputs()
    mae = float(amplitude_mae(x["pred_amp"], x["meas_amp"]))
    pois = float(poisson_nll(x["pred_amp"], x["meas_amp"], 5.0))
    rs = float(realspace_mae(x["obj"], x["label"]))

    cfg = TrainingConfig(loss_mode="poisson", nll_weight=2.0, mae_weight=0.5)
    out = total_loss(cfg, pred_amp=x["pred_amp"], meas_amp=x["meas_amp"], intensity_scale=5.0)
    assert float(out["loss"]) == pytest.approx(2.0 * pois + 0.5 * mae, rel=1e-5)
    assert set(out) == {"loss", "poisson", "mae"}

    cfg = TrainingConfig(loss_mode="mae")  # physics weight 0, MAE weight defaults to 1
    out = total_loss(cfg, pred_amp=x["pred_amp"], meas_amp=x["meas_amp"], intensity_scale=5.0)
    assert float(out["loss"]) == pytest.approx(mae, rel=1e-6)
    assert "poisson" not in out
    cfg = TrainingConfig(loss_mode="mae", mae_weight=3.0)
    out = total_loss(cfg, pred_amp=x["pred_amp"], meas_amp=x["meas_amp"])
    assert float(out["loss"]) == pytest.approx(3.0 * mae, rel=1e-6)

    cfg = TrainingConfig(realspace_weight=0.5, realspace_mae_weight=2.0)
    out = total_loss(cfg, intensity_scale=5.0, **x)
    assert float(out["loss"]) == pytest.approx(pois + 0.5 * 2.0 * rs, rel=1e-5)
    no_label = total_loss(cfg, intensity_scale=5.0, pred_amp=x["pred_amp"], meas_amp=x["meas_amp"])
    assert "realspace" not in no_label
    with pytest.raises(ValueError, match="intensity_scale"):
        total_loss(TrainingConfig(), pred_amp=x["pred_amp"], meas_amp=x["meas_amp"])


def test_total_loss_model_type_selects_supervised_terms() -> None:
    x = _loss_inputs()
    amp, phase = x["obj"].abs(), torch.angle(x["obj"])
    sup_cfg = TrainingConfig(model=ModelConfig(model_type="supervised"))
    out = total_loss(
        sup_cfg,
        amp=amp,
        phase=phase,
        label=x["label"],
        pred_amp=x["pred_amp"],
        meas_amp=x["meas_amp"],
        intensity_scale=5.0,
    )
    assert float(out["loss"]) == pytest.approx(
        float(supervised_loss(amp, phase, x["label"])), rel=1e-6
    )
    assert "poisson" not in out and not out["mae"].requires_grad
    pinn = total_loss(TrainingConfig(), intensity_scale=5.0, **x)
    assert float(pinn["loss"]) != pytest.approx(float(out["loss"]))
    with pytest.raises(ValueError, match="label"):
        total_loss(sup_cfg, amp=amp, phase=phase)


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("probe_trainable, scale_trainable", [(False, True), (True, False)])
def test_gradients_reach_network_probe_and_scale_only_when_trainable(
    probe_trainable: bool, scale_trainable: bool
) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(N=64, gridsize=2, n_filters_scale=1)
    gen = Generator(cfg)
    fm = ForwardModel(
        cfg,
        gaussian_probe(64, 8.0),
        probe_trainable=probe_trainable,
        intensity_scale=4.0,
        intensity_scale_trainable=scale_trainable,
    )
    x = torch.rand(2, 4, 64, 64)
    off = torch.tensor([[-1.5, -1.0], [1.5, -1.0], [-1.5, 1.0], [1.5, 1.0]]).expand(2, 4, 2)
    out = gen(x)
    pred = fm(out.obj, off)
    parts = total_loss(
        TrainingConfig(model=cfg), pred_amp=pred, meas_amp=x, intensity_scale=fm.intensity_scale
    )
    parts["loss"].backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().max()) > 0 for p in gen.parameters())
    if probe_trainable:
        assert (
            float(fm.probe_real.grad.abs().max()) > 0 and float(fm.probe_imag.grad.abs().max()) > 0
        )
        assert "_probe" not in dict(fm.named_buffers())
    else:
        assert not any(n.startswith("probe_") for n, _ in fm.named_parameters())
    if scale_trainable:
        assert (
            fm.log_intensity_scale.grad is not None and float(fm.log_intensity_scale.grad.abs()) > 0
        )
    else:
        assert not fm.log_intensity_scale.requires_grad and fm.log_intensity_scale.grad is None


def test_trainable_intensity_scale_has_finite_optimum() -> None:
    # With the data converted by the fixed data scale, the model scale is pulled to the
    # value that matches counts; it must not run away when predictions are too bright.
    cfg = ModelConfig(N=64)
    fm = ForwardModel(
        cfg, gaussian_probe(64, 8.0), intensity_scale=4.0, intensity_scale_trainable=True
    )
    meas = torch.rand(1, 1, 8, 8) + 0.5
    pred = meas * 2.0  # twice too bright
    opt = torch.optim.Adam([fm.log_intensity_scale], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = poisson_nll(pred, meas, fm.intensity_scale, fm.data_intensity_scale)
        loss.backward()
        opt.step()
    assert float(fm.intensity_scale.detach()) == pytest.approx(2.0, rel=0.02)
