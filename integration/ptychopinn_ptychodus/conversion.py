"""Conversion between Ptychodus data (ReconstructInput, Object) and PtychoPINN's data contract.

Ptychodus hands over photon *counts* with the DC term at the pattern centre, a bad-pixel
mask (``True`` = bad), probe positions in metres and an initial object with its
``ObjectGeometry``. PtychoPINN wants amplitudes, positions in object pixels and one
coherent probe mode. Going back, the stitched reconstruction is resampled onto the input
object's grid so the output ``Object`` keeps the input geometry.

Half-pixel convention: Ptychodus places probe pixel ``(N - 1) / 2`` on a scan position
(its centred-pixel convention, see ``ProbeGeometry.resolve_patch_bounds``) whereas
PtychoPINN places pixel ``N // 2`` there (``specs/conventions.md``). For even N the
positions handed to PtychoPINN are therefore the ``ObjectGeometry`` pixel coordinates plus
``0.5``, so that every probe pixel lands on the same object pixel in both programs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy
from ptychodus.api.object import Object
from ptychodus.api.preprocess.diffraction import inpaint_bad_pixels, zero_bad_pixels
from ptychodus.api.reconstruct import ReconstructInput
from scipy.ndimage import map_coordinates

from .errors import PtychodusInputError
from .settings import BAD_PIXEL_MODES

if TYPE_CHECKING:
    from ptychopinn.data import RawData

__all__ = [
    'PreparedData',
    'paste_reconstruction',
    'prepare_input',
    'probe_centre_offset_px',
    'repair_bad_pixels',
]

# Relative mismatch tolerated between probe and object pixel sizes (float round-off in
# geometry computed two ways); anything larger means the patches would not line up.
_PIXEL_SIZE_RTOL = 1e-3


def probe_centre_offset_px(n: int) -> float:
    """Pixels to add to a Ptychodus object-pixel position to get a PtychoPINN position.

    Ptychodus centres an ``n``-pixel probe at pixel ``(n - 1) / 2``, PtychoPINN at
    ``n // 2``: 0.5 for even ``n``, 0 for odd ``n``.
    """
    return n // 2 - (n - 1) / 2


def repair_bad_pixels(
    counts: numpy.ndarray, bad_pixels: numpy.ndarray | None, mode: str
) -> numpy.ndarray:
    """Fill the bad detector pixels of a count stack (n, N, N).

    ``mode='inpaint'`` uses Ptychodus's biharmonic inpainting (the repair Ptychodus's own
    training-data export uses), ``mode='zero'`` sets them to zero counts. Returns the
    input unchanged when no pixel is bad.
    """
    if mode not in BAD_PIXEL_MODES:
        raise PtychodusInputError(
            f'bad pixel mode {mode!r} is not one of {", ".join(BAD_PIXEL_MODES)}'
        )

    if mode == 'inpaint':
        return inpaint_bad_pixels(counts, bad_pixels)

    return zero_bad_pixels(counts, bad_pixels)


@dataclass(frozen=True)
class PreparedData:
    """A ReconstructInput in PtychoPINN's units (see ``specs/conventions.md``)."""

    amplitude: numpy.ndarray  # (n, N, N) float32, sqrt(photon counts), DC at [N//2, N//2]
    xcoords_px: numpy.ndarray  # (n,) float64, object pixels, PtychoPINN convention
    ycoords_px: numpy.ndarray  # (n,) float64
    probe: numpy.ndarray  # (N, N) complex64, incoherent mode 0 without OPR
    object_guess: numpy.ndarray  # (H, W) complex64, layer 0 of the input object

    @property
    def n_positions(self) -> int:
        return int(self.amplitude.shape[0])

    @property
    def N(self) -> int:  # noqa: N802 (the physics name)
        return int(self.amplitude.shape[-1])

    def to_raw_data(self) -> RawData:
        """Package as ``ptychopinn.data.RawData`` (all scan points get scan index 0)."""
        from ptychopinn.data import RawData

        return RawData(
            diffraction=self.amplitude,
            xcoords=self.xcoords_px,
            ycoords=self.ycoords_px,
            probe_guess=self.probe,
            object_guess=self.object_guess,
            scan_index=numpy.zeros(self.n_positions, dtype=numpy.int64),
            xcoords_start=self.xcoords_px.copy(),
            ycoords_start=self.ycoords_px.copy(),
        )


def prepare_input(
    parameters: ReconstructInput,
    *,
    bad_pixel_mode: str = 'inpaint',
    model_n: int | None = None,
    group_size: int = 1,
) -> PreparedData:
    """Validate a ReconstructInput and convert it to PtychoPINN's units.

    Checks, before any work: a (n, N, N) stack of square patterns; N equal to
    ``model_n`` when given; a position per pattern and at least ``group_size``
    (= gridsize**2) of them; a bad-pixel mask of the pattern shape that leaves some
    pixel good; an object with pixel geometry; a probe of N x N pixels whose pixel size
    equals the object's. Raises :class:`PtychodusInputError` naming the problem.
    """
    patterns = parameters.diffraction_patterns

    if patterns.ndim != 3:
        raise PtychodusInputError(
            f'diffraction patterns must be a stack (n, N, N); got shape {patterns.shape}'
        )

    n_patterns, height_px, width_px = (int(s) for s in patterns.shape)

    if height_px != width_px:
        raise PtychodusInputError(
            f'PtychoPINN needs square diffraction patterns; got {height_px} x {width_px} '
            'pixels (crop them to a square in the Diffraction view)'
        )

    n = width_px

    if model_n is not None and n != model_n:
        raise PtychodusInputError(
            f'diffraction patterns are {n} x {n} pixels but the loaded model was trained '
            f'on {model_n} x {model_n}; crop the patterns to {model_n} or load a matching model'
        )

    if bad_pixel_mode not in BAD_PIXEL_MODES:
        raise PtychodusInputError(
            f'bad pixel mode {bad_pixel_mode!r} is not one of {", ".join(BAD_PIXEL_MODES)}'
        )

    positions = parameters.product.probe_positions

    if len(positions) != n_patterns:
        raise PtychodusInputError(
            f'{n_patterns} diffraction patterns but {len(positions)} probe positions'
        )

    if n_patterns < group_size:
        raise PtychodusInputError(
            f'{n_patterns} scan positions, but a group needs {group_size} '
            f'(gridsize**2); use more positions or a smaller gridsize'
        )

    bad_pixels = parameters.bad_pixels

    if bad_pixels is not None:
        bad_pixels = numpy.asarray(bad_pixels, dtype=bool)

        if bad_pixels.shape != (n, n):
            raise PtychodusInputError(
                f'bad-pixel mask has shape {bad_pixels.shape}; patterns are {n} x {n}'
            )

        if bad_pixels.all():
            raise PtychodusInputError('every detector pixel is marked bad')

    object_ = parameters.product.object_

    if object_.width_px == 0 or object_.height_px == 0:
        raise PtychodusInputError('the product has an empty object; build an object first')

    try:
        geometry = object_.get_geometry()
    except ValueError as exc:
        raise PtychodusInputError(f'the input object has no geometry: {exc}') from exc

    probes = parameters.product.probes
    probe_stack = probes.get_probe_no_opr().get_array()

    if probe_stack.shape[-2:] != (n, n):
        raise PtychodusInputError(
            f'probe is {probe_stack.shape[-2]} x {probe_stack.shape[-1]} pixels; '
            f'PtychoPINN needs it the size of the patterns ({n} x {n})'
        )

    probe_pixels = probes.get_pixel_geometry()

    for label, probe_m, object_m in (
        ('width', probe_pixels.width_m, geometry.pixel_width_m),
        ('height', probe_pixels.height_m, geometry.pixel_height_m),
    ):
        if not numpy.isclose(probe_m, object_m, rtol=_PIXEL_SIZE_RTOL, atol=0.0):
            raise PtychodusInputError(
                f'probe pixel {label} ({probe_m:g} m) differs from object pixel {label} '
                f'({object_m:g} m); PtychoPINN needs them equal'
            )

    offset_px = probe_centre_offset_px(n)
    xcoords = geometry.map_probe_positions_to_object_x_px(positions) + offset_px
    ycoords = geometry.map_probe_positions_to_object_y_px(positions) + offset_px

    if not (numpy.all(numpy.isfinite(xcoords)) and numpy.all(numpy.isfinite(ycoords))):
        raise PtychodusInputError('probe positions contain NaN or infinite values')

    from ptychopinn.data import counts_to_amplitude

    counts = repair_bad_pixels(numpy.asarray(patterns), bad_pixels, bad_pixel_mode)
    amplitude = numpy.asarray(counts_to_amplitude(counts), dtype=numpy.float32)

    return PreparedData(
        amplitude=amplitude,
        xcoords_px=numpy.asarray(xcoords, dtype=numpy.float64),
        ycoords_px=numpy.asarray(ycoords, dtype=numpy.float64),
        probe=numpy.asarray(probe_stack[0], dtype=numpy.complex64),
        object_guess=numpy.asarray(object_.get_layer(0), dtype=numpy.complex64),
    )


def paste_reconstruction(
    object_in: Object, reconstruction: numpy.ndarray, origin_px: Sequence[float]
) -> Object:
    """Put a stitched reconstruction onto the input object's grid.

    ``reconstruction`` (H, W) complex has its pixel ``[0, 0]`` at object pixel
    ``origin_px = (x0, y0)`` of ``object_in`` (fractional origins are resampled
    bilinearly). Pixels the reconstruction covers (non-zero, finite) take its value in
    layer 0 and vacuum (1) in any further layer, so the layer product equals the
    reconstruction; every other pixel keeps the input object's values. Partially covered
    edge pixels blend the two with the bilinear weights. The result has the input's
    shape, dtype, pixel geometry, centre and layer spacing.
    """
    recon = numpy.asarray(reconstruction)

    if recon.ndim != 2:
        raise PtychodusInputError(f'reconstruction must be 2-D; got shape {recon.shape}')

    x0, y0 = (float(v) for v in origin_px)
    array_in = object_in.get_array()
    height_px, width_px = array_in.shape[-2:]

    covered = numpy.isfinite(recon) & (recon != 0)
    values = numpy.where(covered, recon, 0).astype(numpy.complex128)

    rows, cols = numpy.mgrid[0:height_px, 0:width_px].astype(numpy.float64)
    coordinates = numpy.stack((rows - y0, cols - x0))

    def sample(image: numpy.ndarray) -> numpy.ndarray:
        # grid-constant interpolates against zeros beyond the edge, matching `covered`
        return map_coordinates(image, coordinates, order=1, mode='grid-constant', cval=0.0)

    weight = sample(covered.astype(numpy.float64))
    sampled = sample(values.real) + 1j * sample(values.imag)
    keep = 1.0 - weight

    array_out = numpy.empty_like(array_in)
    array_out[0] = sampled + keep * array_in[0]

    for layer in range(1, array_in.shape[0]):
        array_out[layer] = weight + keep * array_in[layer]

    return Object(
        array=array_out,
        pixel_geometry=object_in.get_pixel_geometry().copy(),
        center=object_in.get_center().copy(),
        layer_spacing_m=list(object_in.layer_spacing_m),
    )
