"""Ptychodus data <-> PtychoPINN data: units, positions, bad pixels, pasting, export files.

Inputs are built from Ptychodus's own classes; expectations are computed here with numpy
(or with Ptychodus's own patch rule), independently of the adapter.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.geometry import PixelGeometry  # noqa: E402
from ptychodus.api.io import StandardFileLayout  # noqa: E402
from ptychodus.api.object import Object, ObjectCenter  # noqa: E402
from ptychodus.api.probe import ProbeGeometry, ProbeSequence  # noqa: E402
from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence  # noqa: E402
from ptychodus.api.product import Product, ProductMetadata  # noqa: E402
from ptychodus.api.reconstruct import ReconstructInput  # noqa: E402
from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychopinn_ptychodus.conversion import (  # noqa: E402
    paste_reconstruction,
    prepare_input,
    probe_centre_offset_px,
)
from ptychopinn_ptychodus.errors import PtychodusInputError  # noqa: E402
from ptychopinn_ptychodus.library import PtychoPINNReconstructorLibrary  # noqa: E402
from ptychopinn_ptychodus.training_data import resolve_training_data  # noqa: E402

from ptychopinn.data import RawData  # noqa: E402

# A power of two (about 7.5 nm) so that pixel <-> metre conversions are exact.
PIXEL_M = 2.0**-27
CENTER = (40 * PIXEL_M, -64 * PIXEL_M)


def _metadata() -> ProductMetadata:
    return ProductMetadata(
        name='unit', comments='', detector_distance_m=1.0, photon_energy_eV=8000.0,
        probe_photon_count=0.0, exposure_time_s=0.0, mass_attenuation_m2_per_kg=0.0,
        tomography_angle_deg=0.0,
    )


def _positions_m(x_px, y_px, width_px, height_px, n_side):
    """Metres for PtychoPINN pixel positions, inverting Ptychodus's centred-pixel map."""
    offset = n_side // 2 - (n_side - 1) / 2
    x_m = CENTER[0] + PIXEL_M * (np.asarray(x_px) - offset - (width_px - 1) / 2)
    y_m = CENTER[1] + PIXEL_M * (np.asarray(y_px) - offset - (height_px - 1) / 2)
    return ProbePositionSequence(
        [ProbePosition(index=k, x_m=float(x), y_m=float(y)) for k, (x, y) in enumerate(zip(x_m, y_m, strict=True))]
    )


def make_input(
    *, n_side=16, n_positions=9, object_shape=(48, 40), counts=None, bad_pixels=None,
    probe=None, probe_pixel_m=PIXEL_M, object_array=None, seed=0,
) -> tuple[ReconstructInput, np.ndarray, np.ndarray]:
    """A small ReconstructInput on a 3x3 integer raster; returns it with x_px, y_px."""
    rng = np.random.default_rng(seed)
    height_px, width_px = object_shape
    grid = np.arange(n_positions)
    x_px = (n_side // 2 + 4 + 5 * (grid % 3)).astype(np.float64)
    y_px = (n_side // 2 + 3 + 6 * (grid // 3)).astype(np.float64)
    if counts is None:
        counts = rng.poisson(50.0, size=(n_positions, n_side, n_side)).astype(np.uint32)
    if bad_pixels is None:
        bad_pixels = np.zeros(counts.shape[1:], dtype=bool)
    if probe is None:
        probe = (rng.normal(size=(n_side, n_side)) + 1j * rng.normal(size=(n_side, n_side)))
    if object_array is None:
        object_array = np.exp(1j * rng.uniform(-1, 1, size=object_shape)).astype(np.complex64)
    product = Product(
        metadata=_metadata(),
        probe_positions=_positions_m(x_px, y_px, width_px, height_px, n_side),
        probes=ProbeSequence(np.asarray(probe, dtype=complex), None,
                             PixelGeometry(probe_pixel_m, probe_pixel_m)),
        object_=Object(object_array, PixelGeometry(PIXEL_M, PIXEL_M), ObjectCenter(*CENTER), []),
        losses=[],
    )
    return ReconstructInput(counts, bad_pixels, product), x_px, y_px


# ------------------------------------------------------------------------- units
def test_counts_become_float32_amplitude_and_positions_pixels():
    parameters, x_px, y_px = make_input()
    prepared = prepare_input(parameters)

    expected = np.sqrt(parameters.diffraction_patterns.astype(np.float64))
    assert prepared.amplitude.dtype == np.float32
    np.testing.assert_allclose(prepared.amplitude, expected, rtol=1e-6)
    assert prepared.xcoords_px.dtype == np.float64
    np.testing.assert_allclose(prepared.xcoords_px, x_px, atol=1e-9)
    np.testing.assert_allclose(prepared.ycoords_px, y_px, atol=1e-9)
    np.testing.assert_array_equal(prepared.object_guess, parameters.product.object_.get_layer(0))
    assert prepared.N == 16 and prepared.n_positions == 9


@pytest.mark.parametrize(('n_side', 'offset'), [(16, 0.5), (15, 0.0), (64, 0.5)])
def test_half_pixel_offset_between_conventions(n_side, offset):
    assert probe_centre_offset_px(n_side) == offset


@pytest.mark.parametrize('n_side', [16, 15])
def test_patches_cover_the_object_pixels_ptychodus_assigns_to_the_probe(n_side):
    """PtychoPINN's patch rule (conventions.md) must select the same object pixels as
    Ptychodus's own ProbeGeometry.resolve_patch_bounds for every position."""
    parameters, _, _ = make_input(n_side=n_side)
    prepared = prepare_input(parameters)
    geometry = parameters.product.object_.get_geometry()
    positions = parameters.product.probe_positions
    obj = parameters.product.object_.get_layer(0)
    probe_geometry = ProbeGeometry(n_side, n_side, PIXEL_M, PIXEL_M)

    for k, (cx, cy) in enumerate(zip(geometry.map_probe_positions_to_object_x_px(positions),
                                     geometry.map_probe_positions_to_object_y_px(positions), strict=True)):
        bounds = probe_geometry.resolve_patch_bounds(float(cx), float(cy))
        assert abs(bounds.dx) < 1e-9 and abs(bounds.dy) < 1e-9
        ptychodus_patch = obj[bounds.y_slice, bounds.x_slice]
        x, y = int(round(prepared.xcoords_px[k])), int(round(prepared.ycoords_px[k]))
        ours = obj[y - n_side // 2 : y + (n_side - n_side // 2), x - n_side // 2 : x + (n_side - n_side // 2)]
        np.testing.assert_array_equal(ours, ptychodus_patch)


def test_probe_is_incoherent_mode_zero_without_opr():
    rng = np.random.default_rng(3)
    # 2 OPR (coherent) modes x 3 incoherent modes
    stack = rng.normal(size=(2, 3, 16, 16)) + 1j * rng.normal(size=(2, 3, 16, 16))
    parameters, _, _ = make_input(probe=stack)
    prepared = prepare_input(parameters)
    assert prepared.probe.dtype == np.complex64
    np.testing.assert_allclose(prepared.probe, stack[0, 0].astype(np.complex64))


# ------------------------------------------------------------------------- bad pixels
def test_zero_mode_sets_bad_pixels_to_zero_and_keeps_the_rest():
    bad = np.zeros((16, 16), dtype=bool)
    bad[3, 5] = bad[10, 1] = True
    parameters, _, _ = make_input(bad_pixels=bad)
    prepared = prepare_input(parameters, bad_pixel_mode='zero')
    expected = np.sqrt(parameters.diffraction_patterns.astype(np.float64))
    expected[:, bad] = 0.0
    np.testing.assert_allclose(prepared.amplitude, expected, rtol=1e-6)


def test_inpaint_mode_restores_a_smooth_pattern():
    rows, cols = np.mgrid[0:16, 0:16]
    smooth = 100.0 + 3.0 * rows + 2.0 * cols  # a plane: biharmonic fill reproduces it
    counts = np.repeat(smooth[None], 9, axis=0)
    bad = np.zeros((16, 16), dtype=bool)
    bad[7, 8] = bad[2, 12] = True
    corrupted = counts.copy()
    corrupted[:, bad] = 1e6
    parameters, _, _ = make_input(counts=corrupted, bad_pixels=bad)
    prepared = prepare_input(parameters, bad_pixel_mode='inpaint')
    np.testing.assert_allclose(prepared.amplitude, np.sqrt(counts), rtol=1e-4)


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ('kwargs', 'prepare_kwargs', 'message'),
    [
        ({'counts': np.ones((9, 16, 12))}, {}, 'square'),
        ({}, {'model_n': 64}, 'trained on 64'),
        ({}, {'group_size': 16}, 'group needs 16'),
        ({'bad_pixels': np.zeros((8, 8), dtype=bool)}, {}, 'bad-pixel mask'),
        ({'bad_pixels': np.ones((16, 16), dtype=bool)}, {}, 'every detector pixel'),
        ({'probe': np.ones((12, 12), dtype=complex)}, {}, 'probe is 12 x 12'),
        ({'probe_pixel_m': 2 * PIXEL_M}, {}, 'probe pixel width'),
        ({'object_array': np.zeros((0, 0), dtype=complex)}, {}, 'empty object'),
        ({}, {'bad_pixel_mode': 'median'}, 'bad pixel mode'),
    ],
)
def test_unusable_input_is_refused_with_a_clear_error(kwargs, prepare_kwargs, message):
    parameters, _, _ = make_input(**kwargs)
    with pytest.raises(PtychodusInputError, match=message):
        prepare_input(parameters, **prepare_kwargs)


def test_negative_counts_are_refused():
    counts = np.full((9, 16, 16), 4.0)
    counts[0, 0, 0] = -1.0
    parameters, _, _ = make_input(counts=counts)
    with pytest.raises(ValueError, match='negative'):
        prepare_input(parameters)


def test_position_count_must_match_pattern_count():
    parameters, _, _ = make_input()
    short = ReconstructInput(parameters.diffraction_patterns[:5], parameters.bad_pixels,
                             parameters.product)
    with pytest.raises(PtychodusInputError, match='5 diffraction patterns but 9'):
        prepare_input(short)


# ------------------------------------------------------------------------- pasting
def _object(array: np.ndarray, spacing=()) -> Object:
    return Object(array, PixelGeometry(PIXEL_M, 2 * PIXEL_M), ObjectCenter(*CENTER), list(spacing))


def _expected_paste(layer0, recon, x0, y0):
    """Bilinear sample of recon (zero outside, zeros = uncovered) blended with layer0."""
    height_px, width_px = layer0.shape
    out = np.empty_like(layer0, dtype=np.complex128)
    weights = np.zeros(layer0.shape)
    covered = recon != 0
    for i in range(height_px):
        for j in range(width_px):
            sy, sx = i - y0, j - x0
            iy, ix = int(np.floor(sy)), int(np.floor(sx))
            fy, fx = sy - iy, sx - ix
            value, weight = 0j, 0.0
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    r, c = iy + dy, ix + dx
                    if 0 <= r < recon.shape[0] and 0 <= c < recon.shape[1] and covered[r, c]:
                        value += wy * wx * recon[r, c]
                        weight += wy * wx
            out[i, j] = value + (1 - weight) * layer0[i, j]
            weights[i, j] = weight
    return out, weights


def test_integer_origin_pastes_exactly_and_keeps_the_rest():
    rng = np.random.default_rng(5)
    layer0 = (rng.normal(size=(30, 25)) + 1j * rng.normal(size=(30, 25))).astype(np.complex64)
    recon = (rng.normal(size=(10, 12)) + 1j * rng.normal(size=(10, 12))).astype(np.complex64)
    result = paste_reconstruction(_object(layer0), recon, (7.0, 4.0))

    out = result.get_layer(0)
    assert out.shape == layer0.shape and out.dtype == layer0.dtype
    np.testing.assert_allclose(out[4:14, 7:19], recon, rtol=1e-6)
    outside = np.ones(layer0.shape, dtype=bool)
    outside[4:14, 7:19] = False
    np.testing.assert_array_equal(out[outside], layer0[outside])
    assert result.get_geometry() == _object(layer0).get_geometry()


def test_uncovered_zeros_keep_the_input_object():
    layer0 = np.full((20, 20), 2 + 1j, dtype=np.complex64)
    recon = np.full((6, 6), 0.5j, dtype=np.complex64)
    recon[0, 0] = 0  # a pixel no patch reached
    recon[5, 5] = np.nan
    out = paste_reconstruction(_object(layer0), recon, (3, 3)).get_layer(0)
    assert out[3, 3] == layer0[3, 3]
    assert out[8, 8] == layer0[8, 8]
    assert out[4, 4] == pytest.approx(0.5j)


def test_fractional_origin_blends_bilinearly():
    rng = np.random.default_rng(6)
    layer0 = (rng.normal(size=(14, 16)) + 1j * rng.normal(size=(14, 16))).astype(np.complex128)
    recon = rng.normal(size=(6, 5)) + 1j * rng.normal(size=(6, 5))
    recon[2, 2] = 0
    x0, y0 = 4.25, 3.6
    expected, _ = _expected_paste(layer0, recon, x0, y0)
    out = paste_reconstruction(_object(layer0), recon, (x0, y0)).get_layer(0)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_multilayer_object_keeps_spacing_and_layer_product_equals_reconstruction():
    rng = np.random.default_rng(7)
    layers = np.exp(1j * rng.uniform(-1, 1, size=(3, 20, 22)))
    recon = np.exp(1j * rng.uniform(-1, 1, size=(5, 6)))
    result = paste_reconstruction(_object(layers, spacing=(1e-6, 2e-6)), recon, (2, 9))

    assert list(result.layer_spacing_m) == [1e-6, 2e-6]
    assert result.get_array().shape == layers.shape
    flattened = result.get_layers_flattened()
    np.testing.assert_allclose(flattened[9:14, 2:8], recon, rtol=1e-12)
    np.testing.assert_array_equal(result.get_array()[:, 0, 0], layers[:, 0, 0])


def test_paste_refuses_a_non_2d_reconstruction():
    with pytest.raises(PtychodusInputError, match='2-D'):
        paste_reconstruction(_object(np.ones((4, 4), complex)), np.ones((1, 2, 2)), (0, 0))


# ------------------------------------------------------------------------- export files
def _library() -> PtychoPINNReconstructorLibrary:
    return PtychoPINNReconstructorLibrary(SettingsRegistry())


def test_pinn_export_writes_the_data_contract(tmp_path):
    parameters, x_px, y_px = make_input(n_side=16)
    library = _library()
    library.pinn.export_training_data(tmp_path / 'train_data', parameters)

    raw = RawData.from_file(tmp_path / 'train_data.npz')  # suffix added
    np.testing.assert_allclose(
        raw.diffraction, np.sqrt(parameters.diffraction_patterns.astype(np.float64)), rtol=1e-6
    )
    np.testing.assert_allclose(raw.xcoords, x_px, atol=1e-9)
    np.testing.assert_allclose(raw.ycoords, y_px, atol=1e-9)
    np.testing.assert_allclose(raw.xcoords_start, x_px, atol=1e-9)
    np.testing.assert_allclose(raw.probe_guess,
                               parameters.product.probes.get_array()[0, 0].astype(np.complex64))
    np.testing.assert_array_equal(raw.object_guess, parameters.product.object_.get_layer(0))
    np.testing.assert_array_equal(raw.scan_index, np.zeros(9, dtype=np.int64))
    assert raw.labels is None


def test_supervised_export_adds_the_object_patches_as_labels(tmp_path):
    parameters, x_px, y_px = make_input(n_side=16)
    library = _library()
    library.settings.inference.bad_pixel_mode.set_value('zero')
    library.supervised.export_training_data(tmp_path / 'sup.npz', parameters)

    raw = RawData.from_file(tmp_path / 'sup.npz')
    obj = parameters.product.object_.get_layer(0)
    expected = np.stack([obj[int(y) - 8 : int(y) + 8, int(x) - 8 : int(x) + 8]
                         for x, y in zip(x_px, y_px, strict=True)])
    np.testing.assert_allclose(raw.labels, expected, rtol=1e-6)


# ------------------------------------------------------------------------- training data
def _touch(path):
    path.write_bytes(b'')
    return path


def test_training_data_resolution(tmp_path):
    single = _touch(tmp_path / 'scan.npz')
    assert resolve_training_data(single).train_file == single

    with pytest.raises(PtychodusInputError, match='not an .npz'):
        resolve_training_data(_touch(tmp_path / 'scan.h5'))

    directory = tmp_path / 'dir'
    directory.mkdir()
    with pytest.raises(PtychodusInputError, match='Export Training Data first'):
        resolve_training_data(directory)

    lone = _touch(directory / 'exported.npz')
    assert resolve_training_data(directory).train_file == lone  # no standard layout here
    _touch(directory / 'another.npz')
    with pytest.raises(PtychodusInputError, match='several .npz'):
        resolve_training_data(directory)

    # a standard layout beats stray .npz files, which are named as ignored
    _touch(directory / StandardFileLayout.DIFFRACTION)
    _touch(directory / StandardFileLayout.PRODUCT)
    source = resolve_training_data(directory)
    assert source.standard_layout_dir == directory and source.train_file is None
    assert [p.name for p in source.ignored] == ['another.npz', 'exported.npz']
    assert 'ignoring another.npz, exported.npz' in source.description
    assert 'standard layout' in source.description

    train = _touch(directory / 'train_data.npz')
    source = resolve_training_data(directory)
    assert (source.train_file, source.test_file) == (train, None)

    test = _touch(directory / 'test_data.npz')
    source = resolve_training_data(directory)
    assert (source.train_file, source.test_file) == (train, test)
    assert source.description == f'{train} with validation data test_data.npz'

    with pytest.raises(PtychodusInputError, match='does not exist'):
        resolve_training_data(tmp_path / 'missing')
