"""Nearest-neighbour groups of scan positions, their offsets, and input normalisation.

Grouping (``specs/data_contract.md``, section "Grouping")
    A group is ``C = gridsize**2`` scan positions drawn around a *seed* position:

    1. Seeds: ``n_groups`` positions sampled without replacement with
       ``np.random.default_rng(seed)`` and sorted, or the first ``n_groups`` positions in
       scan order when ``sequential``.  ``n_groups=None`` (or ``>= n``) means every
       position, in scan order; ``n_groups > n`` also warns.
    2. Members: the seed's ``K = neighbor_count`` nearest positions (``scipy`` cKDTree,
       Euclidean distance in object pixels, the seed itself included; K is capped at n).
       The seed is always a member; the other ``C - 1`` are drawn uniformly without
       replacement from the remaining ``K - 1`` with the same generator, or are the
       nearest ``C - 1`` when ``sequential``.
    3. Canonical order: members are sorted row-major.  They are sorted by y (then x, then
       scan index), cut into ``gridsize`` rows of ``gridsize``, and each row is sorted by
       x (then y, then index).  Channel ``c`` is thus row ``c // gridsize``, column
       ``c % gridsize`` of the group; on a regular lattice this is plain (y, x) order.

Offsets (``specs/conventions.md``): positions are (x, y) in object pixels; the global
offset of a group is the centroid of its C positions and the local offset of a member is
its position minus that centroid.

Normalisation (``specs/conventions.md``): ``mean_total_counts`` is the mean over
patterns of ``sum(amplitude**2)`` (photons per pattern); the network input is
``amplitude * input_scale`` with ``input_scale = (N/2) / sqrt(mean_total_counts)``, so a
mean pattern carries a total normalised intensity of ``(N/2)**2``.  Grouped diffraction
stays in raw amplitude units; callers apply the scale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from ptychopinn.data import DataContractError, RawData

if TYPE_CHECKING:
    from ptychopinn.config import TrainingConfig

__all__ = [
    "GroupedData",
    "find_groups",
    "group_for_training",
    "group_raw_data",
    "input_scale",
    "mean_total_counts",
]

# patterns per chunk when summing intensities, to bound temporary float64 memory
_CHUNK = 1024


def mean_total_counts(diffraction_amplitude: np.ndarray) -> float:
    """Mean over patterns of ``sum(amplitude**2)``: photons per pattern.

    Args:
        diffraction_amplitude: amplitude ``sqrt(counts)``, shape (..., N, N); every
            leading index is one pattern ((n, N, N) raw or (G, C, N, N) grouped).
    """
    amp = np.asarray(diffraction_amplitude)
    if amp.ndim < 2:
        raise ValueError(f"diffraction must have shape (..., N, N), got {amp.shape}")
    patterns = amp.reshape(-1, amp.shape[-2], amp.shape[-1])
    if patterns.shape[0] == 0:
        raise ValueError("diffraction holds no patterns; mean total counts is undefined")
    total = 0.0
    for start in range(0, patterns.shape[0], _CHUNK):
        block = patterns[start : start + _CHUNK]
        total += float(np.square(block, dtype=np.float64).sum())
    return total / patterns.shape[0]


def input_scale(diffraction_amplitude: np.ndarray) -> float:
    """``(N/2) / sqrt(mean_total_counts)``: factor taking amplitude to network input.

    Raises:
        DataContractError: the patterns are not square, or the mean total counts is zero
            or not finite (no photons: nothing to normalise).
    """
    amp = np.asarray(diffraction_amplitude)
    if amp.ndim < 2 or amp.shape[-1] != amp.shape[-2]:
        raise DataContractError(f"diffraction must have shape (..., N, N), got {amp.shape}")
    counts = mean_total_counts(amp)
    if not np.isfinite(counts) or counts <= 0:
        raise DataContractError(
            f"mean total counts per pattern is {counts}; input_scale needs a positive, "
            "finite photon count"
        )
    return float((amp.shape[-1] / 2) / np.sqrt(counts))


@dataclass(frozen=True, eq=False)
class GroupedData:
    """Groups of C neighbouring scan positions (see module docstring).

    Attributes:
        diffraction: float32 (G, C, N, N) amplitude, not normalised.
        positions_px: float64 (G, C, 2), member positions (x, y), object pixels.
        global_offsets_px: float64 (G, 2), group centroids (x, y), object pixels.
        local_offsets_px: float64 (G, C, 2), ``positions_px - global_offsets_px``.
        indices: int64 (G, C), member indices into the raw scan.
        seed_indices: int64 (G,), the seed position of each group.
        labels: complex64 (G, C, N, N) ground-truth object patches, or None.
        gridsize: int, ``C == gridsize**2``.
    """

    diffraction: np.ndarray
    positions_px: np.ndarray
    global_offsets_px: np.ndarray
    local_offsets_px: np.ndarray
    indices: np.ndarray
    seed_indices: np.ndarray
    labels: np.ndarray | None
    gridsize: int

    def __post_init__(self) -> None:
        coerce = {
            "diffraction": np.float32,
            "positions_px": np.float64,
            "global_offsets_px": np.float64,
            "local_offsets_px": np.float64,
            "indices": np.int64,
            "seed_indices": np.int64,
        }
        for name, dtype in coerce.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(dtype, copy=False))
        if self.labels is not None:
            object.__setattr__(
                self, "labels", np.asarray(self.labels).astype(np.complex64, copy=False)
            )
        g = self.gridsize
        if isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 1:
            raise ValueError(f"gridsize must be an integer >= 1, got {g!r}")
        object.__setattr__(self, "gridsize", int(g))
        diff = self.diffraction
        if diff.ndim != 4 or diff.shape[1] != g * g or diff.shape[2] != diff.shape[3]:
            raise ValueError(
                f"diffraction must have shape (G, C={g * g}, N, N), got {diff.shape}"
            )
        n_groups, c = diff.shape[:2]
        expected = {
            "positions_px": (n_groups, c, 2),
            "global_offsets_px": (n_groups, 2),
            "local_offsets_px": (n_groups, c, 2),
            "indices": (n_groups, c),
            "seed_indices": (n_groups,),
        }
        if self.labels is not None:
            expected["labels"] = diff.shape
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"{name} must have shape {shape}, got {got}")

    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return int(self.diffraction.shape[0])

    @property
    def C(self) -> int:  # noqa: N802 - the physics symbol
        """Positions per group, ``gridsize**2``."""
        return int(self.diffraction.shape[1])

    @property
    def N(self) -> int:  # noqa: N802 - the physics symbol
        """Diffraction pattern side, pixels."""
        return int(self.diffraction.shape[-1])


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _coords(xcoords: Any, ycoords: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(
            f"xcoords and ycoords must be 1-D arrays of equal length, got shapes {x.shape} "
            f"and {y.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("xcoords and ycoords must be finite")
    return x, y


def _select_seeds(
    n: int, n_groups: int | None, rng: np.random.Generator, sequential: bool
) -> np.ndarray:
    if n_groups is None:
        return np.arange(n, dtype=np.int64)
    count = _check_int("n_groups", n_groups, 1)
    if count > n:
        warnings.warn(
            f"n_groups={count} exceeds the {n} scan positions; using all {n} positions as "
            "group seeds",
            UserWarning,
            stacklevel=3,
        )
        count = n
    if sequential or count == n:
        return np.arange(count, dtype=np.int64)
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def _canonical_order(members: np.ndarray, x: np.ndarray, y: np.ndarray, g: int) -> np.ndarray:
    """Sort each group's members row-major: rows by y, each row of g by x."""
    order = np.lexsort((members, x[members], y[members]), axis=-1)
    members = np.take_along_axis(members, order, axis=-1)
    rows = members.reshape(members.shape[0], g, g)
    order = np.lexsort((rows, y[rows], x[rows]), axis=-1)
    rows = np.take_along_axis(rows, order, axis=-1)
    return rows.reshape(members.shape)


def find_groups(
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    gridsize: int,
    neighbor_count: int = 4,
    n_groups: int | None = None,
    seed: int | None = 42,
    sequential: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose groups of ``gridsize**2`` neighbouring scan positions.

    Args:
        xcoords, ycoords: (n,) probe positions, object pixels.
        gridsize: groups hold ``C = gridsize**2`` positions.
        neighbor_count: K, members are drawn from the seed's K nearest positions
            (the seed included); must be >= C.
        n_groups: number of groups; None = one per scan position.
        seed: seeds ``np.random.default_rng`` for seed sampling and member draws.
        sequential: first ``n_groups`` positions as seeds and nearest neighbours as
            members, no randomness.

    Returns:
        ``(indices, seed_indices)``: int64 (G, C) member indices in canonical row-major
        order, and int64 (G,) the seed position of each group.

    Raises:
        ValueError: bad coordinates, ``gridsize < 1``, ``neighbor_count < C``, fewer
            than C positions, ``n_groups < 1``.
    """
    x, y = _coords(xcoords, ycoords)
    n = x.size
    g = _check_int("gridsize", gridsize, 1)
    c = g * g
    k = _check_int("neighbor_count", neighbor_count, 1)
    if k < c:
        raise ValueError(
            f"neighbor_count={k} is smaller than the group size C = gridsize**2 = {c}"
        )
    if n < c:
        raise ValueError(
            f"a group needs C = {c} positions (gridsize {g}), the scan has {n}"
        )
    rng = np.random.default_rng(seed)
    seeds = _select_seeds(n, n_groups, rng, bool(sequential))
    if c == 1:
        return seeds[:, None].copy(), seeds

    k = min(k, n)
    points = np.column_stack([x, y])
    _, nbr = cKDTree(points).query(points[seeds], k=k)
    nbr = np.asarray(nbr, dtype=np.int64).reshape(seeds.size, k)
    # With duplicate positions the seed may be missing from its own list; then the
    # farthest neighbour makes room so that every group keeps K - 1 candidates.
    drop = nbr == seeds[:, None]
    drop[~drop.any(axis=1), -1] = True
    candidates = nbr[~drop].reshape(seeds.size, k - 1)
    if sequential:
        chosen = candidates[:, : c - 1]
    else:
        pick = np.argsort(rng.random(candidates.shape), axis=1)[:, : c - 1]
        chosen = np.take_along_axis(candidates, pick, axis=1)
    members = np.concatenate([seeds[:, None], chosen], axis=1)
    return _canonical_order(members, x, y, g), seeds


def group_raw_data(
    raw: RawData,
    gridsize: int,
    neighbor_count: int = 4,
    n_groups: int | None = None,
    seed: int | None = 42,
    sequential: bool = False,
) -> GroupedData:
    """Group a scan (see :func:`find_groups`) and gather patterns, offsets and labels."""
    indices, seeds = find_groups(
        raw.xcoords, raw.ycoords, gridsize, neighbor_count, n_groups, seed, sequential
    )
    positions = np.stack([raw.xcoords, raw.ycoords], axis=-1)[indices]
    centroids = positions.mean(axis=1)
    return GroupedData(
        diffraction=raw.diffraction[indices],
        positions_px=positions,
        global_offsets_px=centroids,
        local_offsets_px=positions - centroids[:, None, :],
        indices=indices,
        seed_indices=seeds,
        labels=None if raw.labels is None else raw.labels[indices],
        gridsize=int(gridsize),
    )


def group_for_training(raw: RawData, training_config: TrainingConfig) -> GroupedData:
    """Group ``raw`` with ``model.gridsize``, ``neighbor_count``, ``n_groups``,
    ``subsample_seed`` and ``sequential_sampling`` from a TrainingConfig."""
    return group_raw_data(
        raw,
        gridsize=training_config.model.gridsize,
        neighbor_count=training_config.neighbor_count,
        n_groups=training_config.n_groups,
        seed=training_config.subsample_seed,
        sequential=training_config.sequential_sampling,
    )
