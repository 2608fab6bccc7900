"""Synthetic Ptychodus inputs built from Ptychodus's own classes (demos, tests, smoke runs).

:func:`simulated_reconstruct_input` simulates a small scan with ``ptychopinn.simulate``
and packages it exactly as Ptychodus would hand it to a reconstructor: photon counts,
positions in metres about an object centre, a probe sequence and an initial object.
:func:`write_standard_layout` writes such an input as the ``diffraction.h5`` +
``product.h5`` pair that ``ptychodus -b`` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy
from ptychodus.api.assemble import AssembledDiffractionData
from ptychodus.api.constants import energy_eV_to_wavelength_m
from ptychodus.api.geometry import ImageExtent, PixelGeometry
from ptychodus.api.io import StandardFileLayout, save_diffraction_data, save_product
from ptychodus.api.object import Object, ObjectCenter
from ptychodus.api.probe import ProbeSequence
from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
from ptychodus.api.product import Product, ProductMetadata
from ptychodus.api.propagate import compute_far_field_pixel_geometry
from ptychodus.api.reconstruct import ReconstructInput

from ptychopinn.data import RawData
from ptychopinn.simulate import simulate_dataset

from .conversion import probe_centre_offset_px

__all__ = ['simulated_reconstruct_input', 'write_standard_layout']

_PHOTON_ENERGY_EV = 10_000.0
_DETECTOR_DISTANCE_M = 2.0


def simulated_reconstruct_input(
    *,
    N: int = 64,  # noqa: N803 (the physics name)
    n_positions: int = 16,
    step_px: float = 8.0,
    nphotons: float = 1e5,
    seed: int = 1,
    object_center_m: tuple[float, float] = (1e-6, -2e-6),
    initial_object: str = 'ones',
    object_kind: str = 'dead_leaves',
) -> tuple[ReconstructInput, RawData]:
    """A raster scan as a Ptychodus ReconstructInput, plus the simulated truth.

    Far-field geometry at 10 keV and 2 m; the object pixel size follows from a detector
    pixel size chosen so that it is about 10 nm. ``initial_object`` is ``'ones'`` (a
    typical starting guess) or ``'truth'`` (the simulated object, e.g. for supervised
    training). ``object_kind`` is one of ``ptychopinn.simulate.OBJECT_KINDS``. Patterns are
    integer photon counts (uint32), the bad-pixel mask is empty.
    """
    if initial_object not in ('ones', 'truth'):
        raise ValueError(f"initial_object must be 'ones' or 'truth', got {initial_object!r}")

    truth = simulate_dataset(
        object_kind=object_kind,
        probe_kind='aperture',
        N=N,
        n_positions=n_positions,
        scan_kind='raster',
        step_px=step_px,
        nphotons=nphotons,
        seed=seed,
    )
    wavelength_m = energy_eV_to_wavelength_m(_PHOTON_ENERGY_EV)
    detector_pixel_m = wavelength_m * _DETECTOR_DISTANCE_M / (N * 1e-8)
    pixel = compute_far_field_pixel_geometry(
        PixelGeometry(detector_pixel_m, detector_pixel_m),
        ImageExtent(N, N),
        wavelength_m=wavelength_m,
        propagation_distance_m=_DETECTOR_DISTANCE_M,
    )
    height_px, width_px = truth.object_guess.shape
    center_x_m, center_y_m = object_center_m
    offset_px = probe_centre_offset_px(N)
    x_m = center_x_m + pixel.width_m * (truth.xcoords - offset_px - (width_px - 1) / 2)
    y_m = center_y_m + pixel.height_m * (truth.ycoords - offset_px - (height_px - 1) / 2)
    positions = ProbePositionSequence(
        [ProbePosition(index=k, x_m=float(x), y_m=float(y)) for k, (x, y) in enumerate(zip(x_m, y_m, strict=True))]
    )

    if initial_object == 'ones':
        object_array = numpy.ones((height_px, width_px), dtype=numpy.complex64)
    else:
        object_array = truth.object_guess.copy()

    object_ = Object(
        array=object_array,
        pixel_geometry=pixel,
        center=ObjectCenter(x_m=center_x_m, y_m=center_y_m),
        layer_spacing_m=[],
    )
    probes = ProbeSequence(array=truth.probe_guess.copy(), opr_weights=None, pixel_geometry=pixel)
    metadata = ProductMetadata(
        name='synthetic',
        comments='simulated with ptychopinn.simulate',
        detector_distance_m=_DETECTOR_DISTANCE_M,
        photon_energy_eV=_PHOTON_ENERGY_EV,
        probe_photon_count=nphotons,
        exposure_time_s=1.0,
        mass_attenuation_m2_per_kg=0.0,
        tomography_angle_deg=0.0,
    )
    product = Product(
        metadata=metadata, probe_positions=positions, probes=probes, object_=object_, losses=[]
    )
    counts = numpy.rint(truth.diffraction.astype(numpy.float64) ** 2).astype(numpy.uint32)
    bad_pixels = numpy.zeros((N, N), dtype=bool)
    return ReconstructInput(counts, bad_pixels, product), truth


def write_standard_layout(directory: Path, reconstruct_input: ReconstructInput) -> None:
    """Write ``diffraction.h5`` and ``product.h5`` (Ptychodus batch-mode input) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    patterns = numpy.asarray(reconstruct_input.diffraction_patterns)
    product = reconstruct_input.product
    n_side = patterns.shape[-1]
    detector_pixels = compute_far_field_pixel_geometry(
        product.object_.get_pixel_geometry(),
        ImageExtent(n_side, n_side),
        wavelength_m=product.metadata.photon_wavelength_m,
        propagation_distance_m=product.metadata.detector_distance_m,
    )
    save_diffraction_data(
        directory / StandardFileLayout.DIFFRACTION,
        AssembledDiffractionData(
            indexes=product.probe_positions.get_indexes().copy(),
            patterns=patterns,
            pixel_geometry=detector_pixels,
            bad_pixels=numpy.asarray(reconstruct_input.bad_pixels, dtype=bool),
        ),
    )
    save_product(directory / StandardFileLayout.PRODUCT, product)
