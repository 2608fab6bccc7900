"""Named simulated scans for benchmarks and the demo: one place for their definitions.

Every scenario is a natural-image object (amplitude from a photograph, phase from a
terrain model; ``simulate.make_object``), N = 64, an aperture probe of radius N/4 (its
central disc holds 90 % of the power within a diameter of about 34 px), whole-pixel spiral
positions (so iterative solvers that shift the probe by Fourier interpolation model the
data exactly) and Poisson noise:

* ``dense``: 441 positions 9 px apart (linear overlap about 75 %), 1e6 photons/pattern;
* ``low_dose``: the same scan at 1e4 photons per pattern;
* ``sparse``: 100 positions 32 px apart (N/2: neighbouring probes barely overlap),
  1e6 photons per pattern.

Seeds: scans used for training take seeds < 1000; a scan for reporting takes
``HELD_OUT_SEED`` (another view of the images, other noise), which no training uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ptychopinn.data import RawData

__all__ = ["HELD_OUT_SEED", "SCENARIOS", "scenario_scan"]

#: Seed of the held-out scans (training scans use seeds below 1000).
HELD_OUT_SEED = 1000

_COMMON: dict[str, Any] = {
    "object_kind": "natural",
    "probe_kind": "aperture",
    "N": 64,
    "probe_radius_px": 16.0,
    "scan_kind": "spiral",
    "integer_positions": True,
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "dense": {**_COMMON, "n_positions": 441, "step_px": 9.0, "nphotons": 1e6},
    "low_dose": {**_COMMON, "n_positions": 441, "step_px": 9.0, "nphotons": 1e4},
    "sparse": {**_COMMON, "n_positions": 100, "step_px": 32.0, "nphotons": 1e6},
}


def scenario_scan(name: str, seed: int = HELD_OUT_SEED, **changes: Any) -> RawData:
    """The scan of scenario ``name`` simulated with ``seed`` (``changes`` override any
    ``simulate_dataset`` argument, e.g. ``object_kind`` or ``n_positions``)."""
    from ptychopinn.simulate import simulate_dataset

    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return simulate_dataset(**{**SCENARIOS[name], **changes, "seed": seed})
