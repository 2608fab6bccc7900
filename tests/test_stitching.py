"""Patch reassembly: geometry (conventions.md), weighting, transforms, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, map_coordinates

from ptychopinn_torch.stitching import Stitcher, stitch_patches

N = 16
C = N // 2


def _random_object(shape=(70, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def _smooth_object(shape=(70, 80)) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    amp = 1.0 + 0.3 * np.sin(2 * np.pi * cols / 23.0) * np.cos(2 * np.pi * rows / 29.0)
    phase = 0.8 * np.sin(2 * np.pi * (rows + 0.5 * cols) / 31.0)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def _cut_integer(obj: np.ndarray, positions: np.ndarray) -> np.ndarray:
    # conventions.md: object[y - N//2 : y + N//2, x - N//2 : x + N//2]
    return np.stack([obj[y - C : y + C, x - C : x + C] for x, y in positions.astype(int)])


def _cut_subpixel(obj: np.ndarray, positions: np.ndarray) -> np.ndarray:
    # Independent bilinear sampler: patch pixel (i, j) <- object(y - N/2 + i, x - N/2 + j).
    i, j = np.mgrid[0:N, 0:N].astype(np.float64)
    out = []
    for x, y in positions:
        coords = np.stack([y - C + i, x - C + j])
        re = map_coordinates(obj.real, coords, order=1, mode="constant", cval=0.0)
        im = map_coordinates(obj.imag, coords, order=1, mode="constant", cval=0.0)
        out.append(re + 1j * im)
    return np.stack(out).astype(np.complex64)


def _grid(step: int, lo: int, hi_x: int, hi_y: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(lo, hi_x, step), np.arange(lo, hi_y, step))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def _expected_coverage(positions: np.ndarray, crop: int, shape, origin) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0 = origin
    for x, y in positions.astype(int):
        r = y - crop // 2 - y0
        c = x - crop // 2 - x0
        mask[r : r + crop, c : c + crop] = True
    return mask


def test_integer_positions_reassemble_object_exactly():
    obj = _random_object()
    pos = _grid(4, 12, 68, 58)
    res = stitch_patches(_cut_integer(obj, pos), pos)
    x0, y0 = res.origin_px
    # default crop N//2: the canvas spans the central 8x8 regions only
    assert (x0, y0) == (12 - 4, 12 - 4)
    h, w = res.object.shape
    assert (h, w) == (int(pos[:, 1].max()) + 4 - y0, int(pos[:, 0].max()) + 4 - x0)
    assert res.object.dtype == np.complex64
    truth = obj[y0 : y0 + h, x0 : x0 + w]
    assert res.coverage.all()  # 4-px steps with 8-px crops tile the extent
    np.testing.assert_array_equal(res.object, truth)


def test_subpixel_positions_match_object_to_bilinear_accuracy():
    obj = _smooth_object()
    rng = np.random.default_rng(1)
    pos = _grid(3, 14, 64, 54) + rng.uniform(-0.5, 0.5, size=_grid(3, 14, 64, 54).shape)
    patches = _cut_subpixel(obj, pos)
    res = stitch_patches(patches, pos)
    x0, y0 = res.origin_px
    h, w = res.object.shape
    truth = obj[y0 : y0 + h, x0 : x0 + w]
    # The outermost covered ring is only partly reached by patches and holds the nearest
    # patch edge value (an extrapolation); judge the region inside it.
    full = binary_erosion(res.coverage, border_value=0)
    assert full.mean() > 0.9
    err = np.abs(res.object - truth)[full]
    # bilinear sampling followed by bilinear placement of a smooth object
    assert err.max() < 0.05
    assert err.mean() < 0.015

    # With one common fraction, placing at the rounded positions or translating with the
    # wrong sign shifts the whole image and is clearly worse: the sign is tested.
    shifted = _grid(3, 14, 64, 54) + np.array([0.3, 0.7])
    patches = _cut_subpixel(obj, shifted)

    def interior_error(placed_at):
        res = stitch_patches(patches, placed_at)
        x0, y0 = res.origin_px
        h, w = res.object.shape
        inside = binary_erosion(res.coverage, border_value=0)
        return np.abs(res.object - obj[y0 : y0 + h, x0 : x0 + w])[inside].mean()

    good = interior_error(shifted)
    assert good < 0.015
    assert interior_error(np.round(shifted)) > 2 * good  # a 0.3 px error
    assert interior_error(np.floor(shifted) - np.array([0.3, 0.7])) > 3 * good


def test_subpixel_constant_object_is_reproduced_exactly_including_edges():
    pos = np.array([[20.3, 17.8], [26.6, 19.1], [23.5, 24.25]])
    patches = np.full((3, N, N), 2.0 - 1.0j, dtype=np.complex64)
    res = stitch_patches(patches, pos)
    # weight normalisation: no darkening where a patch only partly covers a pixel
    np.testing.assert_allclose(res.object[res.coverage], 2.0 - 1.0j, rtol=1e-6)
    assert np.all(res.object[~res.coverage] == 0)


def test_single_patch_origin_integer_and_subpixel():
    x, y = 37, 21
    patch = np.zeros((1, N, N), dtype=np.complex64)
    patch[0, C, C] = 1.0
    res = stitch_patches(patch, np.array([[x, y]]), crop_px=N)
    assert res.origin_px == (x - C, y - C)
    x0, y0 = res.origin_px
    assert res.object.shape == (N, N)
    assert np.argwhere(res.object != 0).tolist() == [[y - y0, x - x0]]

    # fraction (0.25, 0.5): the delta spreads bilinearly around column x - x0 + 0.25,
    # row y - y0 + 0.5 (out[i, j] = in[i - dy, j - dx]).
    res = stitch_patches(patch, np.array([[x + 0.25, y + 0.5]]), crop_px=N)
    x0, y0 = res.origin_px
    assert (x0, y0) == (x - C, y - C)
    assert res.object.shape == (N + 1, N + 1)
    r, c = y - y0, x - x0
    expected = {(r, c): 0.75 * 0.5, (r, c + 1): 0.25 * 0.5, (r + 1, c): 0.75 * 0.5,
                (r + 1, c + 1): 0.25 * 0.5}
    got = {tuple(ij): res.object[tuple(ij)].real for ij in np.argwhere(np.abs(res.object) > 1e-9)}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    rows, cols = np.mgrid[0 : N + 1, 0 : N + 1]
    wsum = res.object.real.sum()
    assert (cols * res.object.real).sum() / wsum + x0 == pytest.approx(x + 0.25)
    assert (rows * res.object.real).sum() / wsum + y0 == pytest.approx(y + 0.5)


def _gaussian_probe(sigma: float) -> np.ndarray:
    i, j = np.mgrid[0:N, 0:N]
    return np.exp(-((i - C) ** 2 + (j - C) ** 2) / (4 * sigma**2)).astype(np.complex64)


def test_probe_weighting_favours_patch_with_brighter_probe():
    probe = _gaussian_probe(3.0)
    pos = np.array([[30.0, 30.0], [34.0, 30.0]])
    patches = np.stack([np.full((N, N), 1.0), np.full((N, N), 2.0)]).astype(np.complex64)
    uni = stitch_patches(patches, pos, crop_px=N)
    prb = stitch_patches(patches, pos, crop_px=N, weighting="probe", probe=probe)
    x0, y0 = uni.origin_px
    assert prb.origin_px == (x0, y0)
    row = 30 - y0
    intensity = np.abs(probe) ** 2 / (np.abs(probe) ** 2).max()
    for x in (29, 31, 32, 33, 35):
        col = x - x0
        assert uni.object[row, col] == pytest.approx(1.5)  # plain average
        w_a = intensity[C, x - 30 + C]
        w_b = intensity[C, x - 34 + C]
        expected = (w_a * 1.0 + w_b * 2.0) / (w_a + w_b)
        assert prb.object[row, col].real == pytest.approx(expected, rel=1e-6)
    # nearer patch A's centre -> closer to A's value; nearer B -> closer to B's
    assert prb.object[row, 31 - x0].real < 1.5 < prb.object[row, 33 - x0].real
    # outside the overlap both weightings return the single patch's value
    assert prb.object[row, 24 - x0] == pytest.approx(1.0)
    # weight maps: probe-weighted sums are |probe|^2 sums, uniform counts patches
    assert uni.weight[row, 32 - x0] == pytest.approx(2.0)
    assert prb.weight[row, 32 - x0] == pytest.approx(2 * intensity[C, C - 2])


@pytest.mark.parametrize(
    ("kwargs", "src", "dest"),
    [
        ({"flip_x": True}, (C, C + 3), (0, -3)),
        ({"flip_y": True}, (C + 2, C), (-2, 0)),
        ({"transpose": True}, (C + 2, C + 5), (5, 2)),
        # order: transpose first, then flip_x, then flip_y
        ({"transpose": True, "flip_x": True}, (C + 2, C + 5), (5, -2)),
        ({"transpose": True, "flip_x": True, "flip_y": True}, (C + 2, C + 5), (-5, -2)),
        ({}, (C + 2, C + 5), (2, 5)),
    ],
)
def test_patch_transforms_move_pixels_as_documented(kwargs, src, dest):
    x, y = 40, 25
    patch = np.zeros((1, N, N), dtype=np.complex64)
    patch[0][src] = 1.0
    patch[0, C, C] = 0.5  # the centre pixel stays on the scan position
    res = stitch_patches(patch, np.array([[x, y]]), crop_px=N, **kwargs)
    x0, y0 = res.origin_px
    assert res.object[y - y0 + dest[0], x - x0 + dest[1]] == 1.0
    assert res.object[y - y0, x - x0] == 0.5
    assert np.count_nonzero(res.object) == 2


def test_probe_weight_map_follows_the_patch_transform():
    # An off-centre probe: its weight must travel with the patch pixel it belongs to.
    i, j = np.mgrid[0:N, 0:N]
    probe = np.exp(-((i - C - 2) ** 2 + (j - C + 3) ** 2) / 8.0).astype(np.complex64)
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    intensity /= intensity.max()
    patch = np.ones((1, N, N), dtype=np.complex64)
    pos = np.array([[30.0, 30.0]])
    plain = stitch_patches(patch, pos, crop_px=N, weighting="probe", probe=probe)
    np.testing.assert_allclose(plain.weight, intensity, rtol=1e-12)
    flipped = stitch_patches(patch, pos, crop_px=N, weighting="probe", probe=probe, flip_x=True)
    mirror = (2 * C - np.arange(N)) % N
    np.testing.assert_allclose(flipped.weight, intensity[:, mirror], rtol=1e-12)
    swapped = stitch_patches(patch, pos, crop_px=N, weighting="probe", probe=probe, transpose=True)
    np.testing.assert_allclose(swapped.weight, intensity.T, rtol=1e-12)


def test_flip_x_undoes_mirrored_detector_patches():
    obj = _random_object(seed=3)
    pos = _grid(4, 12, 68, 58)
    patches = _cut_integer(obj, pos)
    # mirror about the centre column N//2 (independent of the module): roll(flip, 1)
    mirrored = np.roll(patches[:, :, ::-1], 1, axis=2)
    assert not np.allclose(mirrored, patches)
    plain = stitch_patches(patches, pos)
    fixed = stitch_patches(mirrored, pos, flip_x=True)
    np.testing.assert_array_equal(fixed.object, plain.object)
    both = np.roll(np.roll(patches[:, ::-1, ::-1], 1, axis=1), 1, axis=2).transpose(0, 2, 1)
    fixed_all = stitch_patches(both, pos, flip_x=True, flip_y=True, transpose=True)
    np.testing.assert_array_equal(fixed_all.object, plain.object)


def test_streaming_batches_equal_all_at_once_and_torch_input():
    obj = _smooth_object()
    rng = np.random.default_rng(5)
    pos = _grid(3, 14, 64, 54) + rng.uniform(-0.5, 0.5, size=_grid(3, 14, 64, 54).shape)
    patches = _cut_subpixel(obj, pos)
    kw = {"weighting": "probe", "probe": _gaussian_probe(4.0), "crop_px": 12}
    whole = stitch_patches(patches, pos, **kw)

    stitcher = Stitcher(N, pos, **kw)
    for start in range(0, len(pos), 7):
        stitcher.add(torch.from_numpy(patches[start : start + 7]),
                     torch.from_numpy(pos[start : start + 7]))
    streamed = stitcher.result()
    assert stitcher.n_added == len(pos)
    assert streamed.origin_px == whole.origin_px
    np.testing.assert_allclose(streamed.object, whole.object, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(streamed.weight, whole.weight, rtol=1e-12)


def test_crop_px_sets_coverage():
    pos = np.array([[20.0, 20.0], [34.0, 20.0], [20.0, 31.0]])
    patches = np.ones((3, N, N), dtype=np.complex64)
    for crop in (4, 8, 12, N):
        res = stitch_patches(patches, pos, crop_px=crop)
        assert res.origin_px == (20 - crop // 2, 20 - crop // 2)
        expected = _expected_coverage(pos, crop, res.object.shape, res.origin_px)
        np.testing.assert_array_equal(res.coverage, expected)
        assert res.coverage.sum() == expected.sum()
    small = stitch_patches(patches, pos, crop_px=4).coverage.sum()
    large = stitch_patches(patches, pos, crop_px=12).coverage.sum()
    # crop 4: three disjoint 4x4 squares; crop 12: squares 1 and 3 share one 12-px row
    assert small == 3 * 16
    assert large == 3 * 144 - 12


def test_memory_does_not_grow_with_number_of_positions():
    def array_bytes(n_pos: int) -> int:
        rng = np.random.default_rng(0)
        pos = rng.uniform(10, 50, size=(n_pos, 2))
        pos[0] = (10, 10)
        pos[1] = (50, 50)
        st = Stitcher(N, pos)
        return sum(v.nbytes for v in vars(st).values() if isinstance(v, np.ndarray))

    assert array_bytes(10) == array_bytes(20000)


def test_bad_inputs_raise_clear_errors():
    pos = np.array([[20.0, 20.0]])
    with pytest.raises(ValueError, match="outside the canvas"):
        Stitcher(N, pos).add(np.zeros((1, N, N)), np.array([[40.0, 20.0]]))
    with pytest.raises(ValueError, match="needs the probe"):
        Stitcher(N, pos, weighting="probe")
    with pytest.raises(ValueError, match="weighting must be one of"):
        Stitcher(N, pos, weighting="gaussian")
    with pytest.raises(ValueError, match="crop_px"):
        Stitcher(N, pos, crop_px=N + 1)
    with pytest.raises(ValueError, match=r"shape \(P, 2\)"):
        Stitcher(N, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Stitcher(N, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="must match"):
        Stitcher(N, pos).add(np.zeros((2, N, N)), pos)
    with pytest.raises(ValueError, match=r"shape \(B, 16, 16\)"):
        Stitcher(N, pos).add(np.zeros((1, N, N + 1)), pos)
    with pytest.raises(ValueError, match="probe must have shape"):
        Stitcher(N, pos, weighting="probe", probe=np.ones((N + 2, N + 2)))


def test_align_phase_removes_per_patch_constant_phase_offsets() -> None:
    # Patches cut from one object, each multiplied by its own random constant phase: the
    # diffraction data could never tell these offsets apart, so stitching must.
    rng = np.random.default_rng(5)
    n, step = 16, 4
    yy, xx = np.mgrid[0:40, 0:40]
    obj = (0.6 + 0.3 * np.cos(xx / 5.0)) * np.exp(1j * 0.8 * np.sin(yy / 7.0))
    positions = np.array([(x, y) for y in range(8, 33, step) for x in range(8, 33, step)], float)
    patches = np.stack([obj[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2]
                        for x, y in positions.astype(int)])
    offsets = np.exp(1j * rng.uniform(-np.pi, np.pi, len(patches)))
    scrambled = patches * offsets[:, None, None]

    plain = stitch_patches(scrambled, positions)
    aligned = stitch_patches(scrambled, positions, align_phase=True)
    x0, y0 = aligned.origin_px
    h, w = aligned.object.shape
    truth = obj[y0 : y0 + h, x0 : x0 + w]
    mask = aligned.coverage
    # one global phase remains free: remove it, then compare
    glob = np.vdot(aligned.object[mask], truth[mask])
    np.testing.assert_allclose(aligned.object[mask] * glob / abs(glob), truth[mask], atol=1e-6)
    glob_plain = np.vdot(plain.object[mask], truth[mask])
    err_plain = np.abs(plain.object[mask] * glob_plain / abs(glob_plain) - truth[mask]).max()
    assert err_plain > 0.1
    # without offsets, alignment changes nothing but the (zero) global phase
    np.testing.assert_allclose(
        stitch_patches(patches, positions, align_phase=True).object,
        stitch_patches(patches, positions).object, atol=1e-6)
