"""Tests for ptychopinn.grouping: neighbour groups, offsets and normalisation."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from ptychopinn.data import DataContractError, RawData
from ptychopinn.grouping import (
    GroupedData,
    find_groups,
    group_for_training,
    group_raw_data,
    input_scale,
    mean_total_counts,
)

N = 8


def _random_scan(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) * 200 + 20, rng.random(n) * 150 + 20


def _raw(n: int = 150, seed: int = 0, labels: bool = True) -> RawData:
    rng = np.random.default_rng(seed + 1)
    x, y = _random_scan(n, seed)
    return RawData(
        diffraction=rng.random((n, N, N)).astype(np.float32),
        xcoords=x,
        ycoords=y,
        probe_guess=np.ones((N, N), dtype=np.complex64),
        labels=(rng.random((n, N, N)) * np.exp(1j * rng.random((n, N, N)))).astype(np.complex64)
        if labels else None,
    )


def _knn(x: np.ndarray, y: np.ndarray, i: int, k: int) -> np.ndarray:
    """Brute-force k nearest positions of position i (itself included)."""
    d2 = (x - x[i]) ** 2 + (y - y[i]) ** 2
    return np.argsort(d2, kind="stable")[:k]


def _is_row_major(members: np.ndarray, x: np.ndarray, y: np.ndarray, g: int) -> bool:
    rows = members.reshape(g, g)
    row_y = y[rows]
    # every member of a row lies at or above (smaller y than) every member of the next row
    if not all(row_y[r].max() <= row_y[r + 1].min() for r in range(g - 1)):
        return False
    return bool(np.all(np.diff(x[rows], axis=1) >= 0))


# ---------------------------------------------------------------- normalisation
def test_mean_total_counts_matches_definition():
    rng = np.random.default_rng(2)
    amp = rng.random((37, N, N)).astype(np.float32) * 3
    expected = np.mean([np.sum(p.astype(np.float64) ** 2) for p in amp])
    assert mean_total_counts(amp) == pytest.approx(expected, rel=1e-12)
    # grouped (G, C, N, N) input: every leading index is one pattern
    assert mean_total_counts(amp[:36].reshape(9, 4, N, N)) == pytest.approx(
        np.mean([np.sum(p.astype(np.float64) ** 2) for p in amp[:36]]), rel=1e-12
    )


def test_mean_total_counts_chunking(monkeypatch):
    import ptychopinn.grouping as grouping

    rng = np.random.default_rng(4)
    amp = rng.random((25, N, N)).astype(np.float32)
    whole = mean_total_counts(amp)
    monkeypatch.setattr(grouping, "_CHUNK", 7)
    assert mean_total_counts(amp) == pytest.approx(whole, rel=1e-12)


def test_input_scale_gives_normalised_intensity():
    rng = np.random.default_rng(5)
    for big_n, photons in ((8, 1e3), (16, 1e6), (64, 37.0)):
        counts = rng.poisson(photons / big_n**2, size=(20, big_n, big_n)).astype(np.float64)
        amp = np.sqrt(counts).astype(np.float32)
        scaled = amp.astype(np.float64) * input_scale(amp)
        mean_intensity = np.mean(np.sum(scaled**2, axis=(1, 2)))
        assert mean_intensity == pytest.approx((big_n / 2) ** 2, rel=1e-6)


def test_input_scale_errors():
    with pytest.raises(DataContractError, match="positive"):
        input_scale(np.zeros((3, N, N), dtype=np.float32))
    with pytest.raises(DataContractError, match=r"\(\.\.\., N, N\)"):
        input_scale(np.ones((3, N, N + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="no patterns"):
        mean_total_counts(np.ones((0, N, N)))


# ---------------------------------------------------------------- find_groups
@pytest.mark.parametrize("gridsize,k", [(2, 4), (2, 7), (3, 12)])
def test_members_are_true_nearest_neighbours(gridsize, k):
    x, y = _random_scan()
    c = gridsize**2
    indices, seeds = find_groups(x, y, gridsize, neighbor_count=k, n_groups=60, seed=3)
    assert indices.shape == (60, c) and indices.dtype == np.int64
    assert seeds.shape == (60,) and seeds.dtype == np.int64
    for members, s in zip(indices, seeds, strict=True):
        assert s in members
        assert len(set(members.tolist())) == c
        assert set(members.tolist()) <= set(_knn(x, y, s, k).tolist())
        assert _is_row_major(members, x, y, gridsize)


def test_sequential_uses_first_positions_and_nearest():
    x, y = _random_scan()
    indices, seeds = find_groups(x, y, 2, neighbor_count=9, n_groups=25, sequential=True)
    np.testing.assert_array_equal(seeds, np.arange(25))
    for members, s in zip(indices, seeds, strict=True):
        assert set(members.tolist()) == set(_knn(x, y, s, 4).tolist())
    again, _ = find_groups(x, y, 2, neighbor_count=9, n_groups=25, seed=99, sequential=True)
    np.testing.assert_array_equal(again, indices)


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    x, y = _random_scan()
    a_idx, a_seeds = find_groups(x, y, 2, neighbor_count=6, n_groups=40, seed=11)
    b_idx, b_seeds = find_groups(x, y, 2, neighbor_count=6, n_groups=40, seed=11)
    c_idx, c_seeds = find_groups(x, y, 2, neighbor_count=6, n_groups=40, seed=12)
    np.testing.assert_array_equal(a_idx, b_idx)
    np.testing.assert_array_equal(a_seeds, b_seeds)
    assert not np.array_equal(a_seeds, c_seeds)
    assert np.all(np.diff(a_seeds) > 0)  # sorted, without replacement
    # the seeds are exactly default_rng(seed)'s sample, sorted
    expected = np.sort(np.random.default_rng(11).choice(x.size, size=40, replace=False))
    np.testing.assert_array_equal(a_seeds, expected)


def test_member_draws_depend_on_seed_when_all_positions_are_seeds():
    x, y = _random_scan()
    a, sa = find_groups(x, y, 2, neighbor_count=8, n_groups=None, seed=1)
    b, sb = find_groups(x, y, 2, neighbor_count=8, n_groups=None, seed=2)
    np.testing.assert_array_equal(sa, np.arange(x.size))
    np.testing.assert_array_equal(sb, sa)
    assert not np.array_equal(a, b)


def test_gridsize_one():
    x, y = _random_scan()
    indices, seeds = find_groups(x, y, 1, neighbor_count=1, n_groups=30, seed=5)
    assert indices.shape == (30, 1)
    np.testing.assert_array_equal(indices[:, 0], seeds)
    expected = np.sort(np.random.default_rng(5).choice(x.size, size=30, replace=False))
    np.testing.assert_array_equal(seeds, expected)
    all_idx, _ = find_groups(x, y, 1)
    np.testing.assert_array_equal(all_idx[:, 0], np.arange(x.size))


def test_n_groups_larger_than_scan_warns_and_uses_all():
    x, y = _random_scan(20)
    with pytest.warns(UserWarning, match="n_groups=50 exceeds the 20"):
        indices, seeds = find_groups(x, y, 2, neighbor_count=4, n_groups=50, seed=0)
    np.testing.assert_array_equal(seeds, np.arange(20))
    assert indices.shape == (20, 4)


def test_n_groups_equal_to_scan_does_not_warn():
    x, y = _random_scan(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, seeds = find_groups(x, y, 2, neighbor_count=4, n_groups=20, seed=0)
    np.testing.assert_array_equal(seeds, np.arange(20))


def test_canonical_order_follows_the_grid_despite_jitter():
    # Separate 2x2 cells (side 10 px, cells 100 px apart) with +-2 px jitter: channel c
    # must be cell row c // 2, column c % 2, i.e. (TL, TR, BL, BR), even where a plain
    # lexicographic (y, x) sort would put a jittered right member first.
    rng = np.random.default_rng(8)
    cells = 30
    corner_row = np.tile([0, 0, 1, 1], cells)
    corner_col = np.tile([0, 1, 0, 1], cells)
    cell = np.repeat(np.arange(cells), 4)
    x = cell * 100.0 + corner_col * 10 + rng.uniform(-2, 2, 4 * cells)
    y = corner_row * 10 + rng.uniform(-2, 2, 4 * cells)
    indices, _ = find_groups(x, y, 2, neighbor_count=4, sequential=True)
    lexsorted_differs = False
    for members in indices:
        assert len(set(cell[members].tolist())) == 1
        np.testing.assert_array_equal(corner_row[members], [0, 0, 1, 1])
        np.testing.assert_array_equal(corner_col[members], [0, 1, 0, 1])
        plain = members[np.lexsort((x[members], y[members]))]
        lexsorted_differs |= not np.array_equal(plain, members)
    assert lexsorted_differs  # the jitter does exercise the row bucketing


def test_canonical_order_exact_square():
    x = np.array([10.0, 0.0, 10.0, 0.0])
    y = np.array([0.0, 10.0, 10.0, 0.0])
    idx, _ = find_groups(x, y, 2, neighbor_count=4, sequential=True, n_groups=1)
    # channels: (x, y) = (0, 0) -> 3, (10, 0) -> 0, (0, 10) -> 1, (10, 10) -> 2
    np.testing.assert_array_equal(idx[0], [3, 0, 1, 2])


def test_duplicate_positions_keep_the_seed():
    x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 9.0])
    y = np.zeros(7)
    indices, seeds = find_groups(x, y, 2, neighbor_count=4, sequential=True)
    for members, s in zip(indices, seeds, strict=True):
        assert s in members
        assert len(set(members.tolist())) == 4


def test_neighbor_count_above_scan_size_is_capped():
    x, y = _random_scan(6)
    indices, _ = find_groups(x, y, 2, neighbor_count=50, n_groups=6, seed=1)
    assert indices.shape == (6, 4)
    assert indices.min() >= 0 and indices.max() < 6


@pytest.mark.parametrize("kwargs,match", [
    ({"gridsize": 2, "neighbor_count": 3}, "neighbor_count=3 is smaller than .* C = "),
    ({"gridsize": 0}, "gridsize must be >= 1"),
    ({"gridsize": 2.0}, "gridsize must be an integer"),
    ({"gridsize": 2, "n_groups": 0}, "n_groups must be >= 1"),
    ({"gridsize": 2, "n_groups": True}, "n_groups must be an integer"),
])
def test_parameter_errors(kwargs, match):
    x, y = _random_scan(20)
    with pytest.raises(ValueError, match=match):
        find_groups(x, y, **kwargs)


def test_too_few_positions():
    x, y = _random_scan(8)
    with pytest.raises(ValueError, match="a group needs C = 9 positions .* the scan has 8"):
        find_groups(x, y, 3, neighbor_count=9)


def test_bad_coordinates():
    with pytest.raises(ValueError, match="equal length"):
        find_groups(np.zeros(5), np.zeros(4), 1)
    with pytest.raises(ValueError, match="finite"):
        find_groups(np.array([0.0, np.nan]), np.zeros(2), 1)


# ---------------------------------------------------------------- group_raw_data
def test_group_raw_data_gathers_and_offsets_exactly():
    raw = _raw()
    grouped = group_raw_data(raw, gridsize=2, neighbor_count=6, n_groups=50, seed=7)
    indices, seeds = find_groups(raw.xcoords, raw.ycoords, 2, 6, 50, 7)
    np.testing.assert_array_equal(grouped.indices, indices)
    np.testing.assert_array_equal(grouped.seed_indices, seeds)
    assert (grouped.n_groups, grouped.C, grouped.N, grouped.gridsize) == (50, 4, N, 2)
    assert grouped.diffraction.dtype == np.float32
    assert grouped.diffraction.shape == (50, 4, N, N)
    for g in range(50):
        for c in range(4):
            i = indices[g, c]
            np.testing.assert_array_equal(grouped.diffraction[g, c], raw.diffraction[i])
            np.testing.assert_array_equal(grouped.labels[g, c], raw.labels[i])
            assert tuple(grouped.positions_px[g, c]) == (raw.xcoords[i], raw.ycoords[i])
        pos = np.array([[raw.xcoords[i], raw.ycoords[i]] for i in indices[g]])
        centroid = np.array([pos[:, 0].mean(), pos[:, 1].mean()])
        np.testing.assert_allclose(grouped.global_offsets_px[g], centroid, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(
        grouped.local_offsets_px,
        grouped.positions_px - grouped.global_offsets_px[:, None, :],
    )
    np.testing.assert_allclose(grouped.local_offsets_px.sum(axis=1), 0, atol=1e-12)


def test_known_offsets_square():
    # 2x2 square of side 4 px centred on (12, 7): local offsets are (+-2, +-2) in (x, y)
    x = np.array([10.0, 14.0, 10.0, 14.0])
    y = np.array([5.0, 5.0, 9.0, 9.0])
    raw = RawData(np.ones((4, N, N), dtype=np.float32), x, y, np.ones((N, N)))
    grouped = group_raw_data(raw, 2, neighbor_count=4, n_groups=1, sequential=True)
    np.testing.assert_array_equal(grouped.global_offsets_px, [[12.0, 7.0]])
    np.testing.assert_array_equal(
        grouped.local_offsets_px[0], [[-2, -2], [2, -2], [-2, 2], [2, 2]]
    )


def test_gridsize_one_offsets_are_zero_and_labels_optional():
    raw = _raw(labels=False)
    grouped = group_raw_data(raw, 1, n_groups=None)
    assert grouped.labels is None
    assert grouped.diffraction.shape == (raw.n_positions, 1, N, N)
    np.testing.assert_array_equal(grouped.local_offsets_px, 0)
    np.testing.assert_array_equal(grouped.global_offsets_px[:, 0], raw.xcoords)
    np.testing.assert_array_equal(grouped.global_offsets_px[:, 1], raw.ycoords)


def test_group_for_training_reads_config_fields():
    raw = _raw()
    config = SimpleNamespace(
        model=SimpleNamespace(gridsize=2),
        neighbor_count=5,
        n_groups=30,
        subsample_seed=21,
        sequential_sampling=False,
    )
    grouped = group_for_training(raw, config)
    direct = group_raw_data(raw, 2, neighbor_count=5, n_groups=30, seed=21)
    np.testing.assert_array_equal(grouped.indices, direct.indices)
    config.sequential_sampling = True
    seq = group_for_training(raw, config)
    np.testing.assert_array_equal(seq.seed_indices, np.arange(30))


def test_group_for_training_with_real_config():
    config_mod = pytest.importorskip("ptychopinn.config")
    raw = _raw()
    cfg = config_mod.TrainingConfig(
        model=config_mod.ModelConfig(gridsize=2), n_groups=20, neighbor_count=4,
        subsample_seed=3,
    )
    grouped = group_for_training(raw, cfg)
    assert grouped.indices.shape == (20, 4) and grouped.gridsize == 2


def test_grouped_data_shape_checks():
    raw = _raw()
    good = group_raw_data(raw, 2, n_groups=5, seed=0)
    with pytest.raises(ValueError, match="local_offsets_px must have shape"):
        GroupedData(good.diffraction, good.positions_px, good.global_offsets_px,
                    good.local_offsets_px[:, :3], good.indices, good.seed_indices,
                    None, 2)
    with pytest.raises(ValueError, match="C=9"):
        GroupedData(good.diffraction, good.positions_px, good.global_offsets_px,
                    good.local_offsets_px, good.indices, good.seed_indices, None, 3)
