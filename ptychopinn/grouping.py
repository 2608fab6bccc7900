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
    Scans: positions with different ``scan_index`` (``RawData.scan_index``, e.g. the
    scans joined by :func:`ptychopinn.data.concatenate_scans`) are never grouped together:
    a seed's K nearest positions are searched among the positions of its own scan only
    (K is capped at that scan's size). With one scan (or no ``scan_index``) this is the
    plain search above, with the same random draws.
    3. Canonical order: members are sorted row-major.  They are sorted by y (then x, then
       scan index), cut into ``gridsize`` rows of ``gridsize``, and each row is sorted by
       x (then y, then index).  Channel ``c`` is thus row ``c // gridsize``, column
       ``c % gridsize`` of the group; on a regular lattice this is plain (y, x) order.

Regrouping (``TrainingConfig.regroup_each_epoch``): :func:`redraw_members` keeps each
group's seed and draws its other members again from the seed's K nearest, with
``np.random.default_rng([seed, epoch])``, so epoch ``e`` always gets the same groups.

Offsets (``specs/conventions.md``): positions are (x, y) in object pixels; the global
offset of a group is the centroid of its C positions and the local offset of a member is
its position minus that centroid.

Normalisation (``specs/conventions.md``): ``mean_total_counts`` is the mean over
patterns of ``sum(amplitude**2)`` (photons per pattern); the network input is
``amplitude * input_scale`` with ``input_scale = (N/2) / sqrt(mean_total_counts)``, so a
mean pattern carries a total normalised intensity of ``(N/2)**2``.  Grouped diffraction
stays in raw amplitude units; callers apply the scale. Several scans are normalised one
by one (:class:`ScanScales`): each with its own ``input_scale``, and each with a
``photon_scale = sqrt(its mean_total_counts / the first scan's)`` that the Poisson loss
multiplies its intensity scales by, so the loss sees every scan's own counts.
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
    "ScanScales",
    "canonical_member_order",
    "find_groups",
    "group_for_training",
    "group_raw_data",
    "input_scale",
    "mean_total_counts",
    "redraw_members",
    "regroup_raw_data",
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
class ScanScales:
    """Normalisation of each scan of a (possibly several-scan) data set.

    Scans are told apart by ``RawData.scan_index`` (one scan without it). Each scan has
    its own ``input_scale`` (so the network sees every scan in the units inference uses
    for it alone, whatever its dose) and a ``photon_scale = sqrt(counts /
    reference_counts)`` (dimensionless) by which the Poisson loss multiplies both
    intensity scales for that scan's patterns, so the likelihood sees its own photon
    counts. The reference is the first scan (smallest ``scan_index``) unless given.

    Attributes:
        scan_ids: int64 (S,), the distinct ``scan_index`` values, ascending ([0] for one).
        mean_total_counts: float64 (S,), photons per pattern of each scan.
        input_scales: float64 (S,), ``(N/2) / sqrt(mean_total_counts)``.
        position_scan: int64 (n,), each position's scan as an index into ``scan_ids``.
        reference_counts: photons per pattern that ``photon_scale`` 1 stands for.
    """

    scan_ids: np.ndarray
    mean_total_counts: np.ndarray
    input_scales: np.ndarray
    position_scan: np.ndarray
    reference_counts: float

    @classmethod
    def of(cls, raw: RawData, reference_counts: float | None = None) -> ScanScales:
        """The scales of ``raw``'s scans; ``reference_counts`` (photons per pattern)
        defaults to the first scan's mean total counts."""
        labels = _scan_labels(raw.scan_index, raw.n_positions)
        if labels is None:
            scan_ids = np.zeros(1, dtype=np.int64)
            position_scan = np.zeros(raw.n_positions, dtype=np.int64)
            counts = [mean_total_counts(raw.diffraction)]
            scales = [input_scale(raw.diffraction)]
        else:
            scan_ids, position_scan = np.unique(labels, return_inverse=True)
            parts = [raw.diffraction[position_scan == s] for s in range(scan_ids.size)]
            counts = [mean_total_counts(part) for part in parts]
            scales = [input_scale(part) for part in parts]
        counts_arr = np.asarray(counts, dtype=np.float64)
        reference = float(counts_arr[0] if reference_counts is None else reference_counts)
        if not (np.isfinite(reference) and reference > 0):
            raise DataContractError(
                f"reference photons per pattern must be positive and finite, got {reference}"
            )
        return cls(np.asarray(scan_ids, dtype=np.int64), counts_arr,
                   np.asarray(scales, dtype=np.float64),
                   np.asarray(position_scan, dtype=np.int64).reshape(-1), reference)

    @property
    def n_scans(self) -> int:
        """Number of scans S."""
        return int(self.scan_ids.size)

    @property
    def photon_scales(self) -> np.ndarray:
        """float64 (S,) ``sqrt(mean_total_counts / reference_counts)``."""
        return np.sqrt(self.mean_total_counts / self.reference_counts)

    def for_groups(self, grouped: GroupedData) -> tuple[np.ndarray, np.ndarray]:
        """``(input_scale, photon_scale)`` of each group, float64 (G,) each (a group lies
        in one scan: that of its seed)."""
        scan = self.position_scan[grouped.seed_indices]
        return self.input_scales[scan], self.photon_scales[scan]

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-able dict per scan: ``scan_index``, ``n_positions``,
        ``mean_total_counts``, ``input_scale``, ``photon_scale``."""
        sizes = np.bincount(self.position_scan, minlength=self.n_scans)
        return [
            {"scan_index": int(sid), "n_positions": int(size), "mean_total_counts": float(c),
             "input_scale": float(scale), "photon_scale": float(r)}
            for sid, size, c, scale, r in zip(self.scan_ids, sizes, self.mean_total_counts,
                                              self.input_scales, self.photon_scales,
                                              strict=True)
        ]


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


def canonical_member_order(positions_px: np.ndarray, gridsize: int) -> np.ndarray:
    """The permutation that puts one group's members, (C, 2) positions (x, y), in the
    canonical row-major order of :func:`find_groups` (ties kept in the given order)."""
    pos = np.asarray(positions_px, dtype=np.float64)
    order = np.arange(pos.shape[0])[None, :]
    return _canonical_order(order, pos[:, 0], pos[:, 1], int(gridsize))[0]


def _scan_labels(scan_index: Any, n: int) -> np.ndarray | None:
    """``scan_index`` as (n,) int64, or None when there is only one scan."""
    if scan_index is None:
        return None
    labels = np.asarray(scan_index).reshape(-1)
    if labels.shape != (n,):
        raise ValueError(f"scan_index must have shape ({n},), got {labels.shape}")
    if labels.size and np.all(labels == labels[0]):
        return None
    return labels.astype(np.int64, copy=False)


def _draw_members(
    x: np.ndarray, y: np.ndarray, seeds: np.ndarray, g: int, k: int,
    rng: np.random.Generator, sequential: bool, scans: np.ndarray | None,
) -> np.ndarray:
    """Members (G, C) around ``seeds``, canonical order (module docstring, step 2)."""
    c = g * g
    if c == 1:
        return seeds[:, None].copy()
    points = np.column_stack([x, y])
    members = np.empty((seeds.size, c), dtype=np.int64)
    if scans is None:
        parts = [(np.arange(x.size), np.arange(seeds.size))]
    else:
        seed_scans = scans[seeds]
        parts = [(np.flatnonzero(scans == s), np.flatnonzero(seed_scans == s))
                 for s in np.unique(seed_scans)]
    for pool, chosen_seeds in parts:
        if pool.size < c:
            raise ValueError(
                f"scan {int(scans[pool[0]])} has {pool.size} positions but a group needs "  # type: ignore[index]
                f"C = gridsize**2 = {c}; give every scan at least {c} positions"
            )
        k_scan = min(k, pool.size)
        part_seeds = seeds[chosen_seeds]
        _, nbr = cKDTree(points[pool]).query(points[part_seeds], k=k_scan)
        nbr = pool[np.asarray(nbr, dtype=np.int64).reshape(part_seeds.size, k_scan)]
        # With duplicate positions the seed may be missing from its own list; then the
        # farthest neighbour makes room so that every group keeps K - 1 candidates.
        drop = nbr == part_seeds[:, None]
        drop[~drop.any(axis=1), -1] = True
        candidates = nbr[~drop].reshape(part_seeds.size, k_scan - 1)
        if sequential:
            chosen = candidates[:, : c - 1]
        else:
            pick = np.argsort(rng.random(candidates.shape), axis=1)[:, : c - 1]
            chosen = np.take_along_axis(candidates, pick, axis=1)
        members[chosen_seeds] = np.concatenate([part_seeds[:, None], chosen], axis=1)
    return _canonical_order(members, x, y, g)


def _check_group_size(n: int, gridsize: int, neighbor_count: int) -> tuple[int, int]:
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
    return g, k


def find_groups(
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    gridsize: int,
    neighbor_count: int = 4,
    n_groups: int | None = None,
    seed: int | None = 42,
    sequential: bool = False,
    scan_index: np.ndarray | None = None,
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
        scan_index: (n,) which scan each position belongs to; members come from the
            seed's own scan (None: one scan).

    Returns:
        ``(indices, seed_indices)``: int64 (G, C) member indices in canonical row-major
        order, and int64 (G,) the seed position of each group.

    Raises:
        ValueError: bad coordinates, ``gridsize < 1``, ``neighbor_count < C``, fewer
            than C positions (in a scan), ``n_groups < 1``.
    """
    x, y = _coords(xcoords, ycoords)
    g, k = _check_group_size(x.size, gridsize, neighbor_count)
    scans = _scan_labels(scan_index, x.size)
    rng = np.random.default_rng(seed)
    seeds = _select_seeds(x.size, n_groups, rng, bool(sequential))
    return _draw_members(x, y, seeds, g, k, rng, bool(sequential), scans), seeds


def redraw_members(
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    seed_indices: np.ndarray,
    gridsize: int,
    neighbor_count: int,
    seed: int | None,
    epoch: int,
    scan_index: np.ndarray | None = None,
) -> np.ndarray:
    """Each seed's members drawn again for ``epoch`` (``TrainingConfig.regroup_each_epoch``).

    The seeds stay; the other ``C - 1`` members are drawn as in :func:`find_groups` from
    the seed's ``neighbor_count`` nearest positions (of its own scan), with
    ``np.random.default_rng([seed, epoch])`` (unseeded when ``seed`` is None), so the
    same epoch always gives the same groups. Returns int64 (G, C), canonical order.
    """
    x, y = _coords(xcoords, ycoords)
    g, k = _check_group_size(x.size, gridsize, neighbor_count)
    seeds = np.asarray(seed_indices, dtype=np.int64).reshape(-1)
    epoch = _check_int("epoch", epoch, 0)
    rng = np.random.default_rng(None if seed is None else [int(seed), epoch])
    return _draw_members(x, y, seeds, g, k, rng, False, _scan_labels(scan_index, x.size))


def _gather(raw: RawData, indices: np.ndarray, seeds: np.ndarray, gridsize: int) -> GroupedData:
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


def group_raw_data(
    raw: RawData,
    gridsize: int,
    neighbor_count: int = 4,
    n_groups: int | None = None,
    seed: int | None = 42,
    sequential: bool = False,
) -> GroupedData:
    """Group a scan (see :func:`find_groups`; never across ``raw.scan_index`` scans) and
    gather patterns, offsets and labels."""
    indices, seeds = find_groups(
        raw.xcoords, raw.ycoords, gridsize, neighbor_count, n_groups, seed, sequential,
        raw.scan_index,
    )
    return _gather(raw, indices, seeds, gridsize)


def regroup_raw_data(
    raw: RawData, grouped: GroupedData, neighbor_count: int, seed: int | None, epoch: int
) -> GroupedData:
    """``grouped`` (groups of ``raw``) with every group's members drawn again for
    ``epoch`` around the same seeds (:func:`redraw_members`)."""
    indices = redraw_members(raw.xcoords, raw.ycoords, grouped.seed_indices, grouped.gridsize,
                             neighbor_count, seed, epoch, raw.scan_index)
    return _gather(raw, indices, grouped.seed_indices, grouped.gridsize)


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
