"""Training on several scans at once (issue 8): ``ptychopinn.data.concatenate_scans``,
grouping that never spans two scans, per-scan normalisation and photon scale
(``ptychopinn.grouping.ScanScales``), and a model trained on two scans of different dose.

Tiny data (N=64, 36 positions per scan) and one epoch, to keep the suite fast.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from ptychopinn.data import DataContractError, RawData, check_positions, concatenate_scans
from ptychopinn.errors import InputWarning
from ptychopinn.grouping import ScanScales, find_groups, group_raw_data, input_scale
from ptychopinn.simulate import extract_patches, simulate_dataset

pytestmark = pytest.mark.usefixtures("restore_torch_determinism")


def _scan(seed: int, nphotons: float = 1e5, n: int = 36) -> RawData:
    return simulate_dataset(object_kind="dead_leaves", probe_kind="aperture", N=64,
                            n_positions=n, scan_kind="raster", step_px=8.0, nphotons=nphotons,
                            seed=seed, jitter_px=0.3)


@pytest.fixture(scope="module")
def two_doses() -> tuple[RawData, RawData]:
    """The same object at 1e5 and 1e3 photons per pattern (sub-pixel positions)."""
    return _scan(3, 1e5), _scan(3, 1e3)


# ------------------------------------------------------------------ concatenate_scans
def test_concatenation_layout_keeps_each_scan_consistent_with_its_object(two_doses):
    a, b = two_doses
    joined = concatenate_scans([a, b])
    n = a.n_positions
    assert joined.n_positions == 2 * n
    np.testing.assert_array_equal(joined.scan_index, np.repeat([0, 1], n))
    np.testing.assert_array_equal(joined.diffraction[n:], b.diffraction)
    np.testing.assert_array_equal(joined.probe_guess, a.probe_guess)  # the first scan's
    # Scan 0 keeps its coordinates; scan 1 moves along x by a whole number of pixels.
    np.testing.assert_array_equal(joined.xcoords[:n], a.xcoords)
    shift = joined.xcoords[n:] - b.xcoords
    assert np.all(shift == shift[0]) and shift[0] == round(shift[0])
    np.testing.assert_array_equal(joined.ycoords[n:], b.ycoords)
    # Objects side by side, N px apart: the joined object still gives every label.
    height, width = a.object_guess.shape
    assert joined.object_guess.shape == (height, 2 * width + 64)
    assert shift[0] == width + 64
    np.testing.assert_allclose(
        extract_patches(joined.object_guess, joined.xcoords, joined.ycoords, 64),
        joined.labels, atol=1e-6)
    # Patches of the two scans never overlap.
    assert joined.xcoords[n:].min() - 32 > joined.xcoords[:n].max() + 32
    check_positions(joined, gridsize=2, what="joined")  # inside the joined object


def test_concatenation_without_objects_leaves_a_gap_of_n_between_patches(two_doses):
    a, b = (dataclasses.replace(raw, object_guess=None, labels=None) for raw in two_doses)
    joined = concatenate_scans([a, b, a])
    n = a.n_positions
    assert joined.object_guess is None and joined.labels is None
    for first, second in ((slice(0, n), slice(n, 2 * n)), (slice(n, 2 * n), slice(2 * n, None))):
        gap = (joined.xcoords[second].min() - 32) - (joined.xcoords[first].max() + 32)
        assert 64 <= gap < 65
    np.testing.assert_array_equal(joined.scan_index, np.repeat([0, 1, 2], n))


def test_concatenation_renumbers_scans_that_are_already_joined(two_doses):
    a, b = two_doses
    joined = concatenate_scans([concatenate_scans([a, b]), a])
    np.testing.assert_array_equal(np.unique(joined.scan_index), [0, 1, 2])


def test_concatenation_errors_and_probe_warning(two_doses):
    a, _ = two_doses
    with pytest.raises(DataContractError, match="at least one scan"):
        concatenate_scans([])
    with pytest.raises(DataContractError, match="not a ptychopinn.data.RawData"):
        concatenate_scans([a, "b.npz"])
    small = RawData(diffraction=np.ones((4, 8, 8), np.float32), xcoords=np.arange(4.0),
                    ycoords=np.zeros(4), probe_guess=np.ones((8, 8), np.complex64))
    with pytest.raises(DataContractError, match="same pattern size"):
        concatenate_scans([a, small])
    # A probe scaled to another dose is the same probe: no warning.
    scaled = dataclasses.replace(a, probe_guess=a.probe_guess * np.complex64(3 - 2j))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        concatenate_scans([a, scaled])
    other = dataclasses.replace(a, probe_guess=np.roll(a.probe_guess, 5, axis=1))
    with pytest.warns(InputWarning, match="scan 1's probe differs from scan 0's"):
        concatenate_scans([a, other])


# ------------------------------------------------------------------ grouping
@pytest.mark.parametrize(("gridsize", "k"), [(2, 7), (2, 40), (3, 12)])
def test_no_group_mixes_scans(gridsize, k):
    # Two scans on the *same* coordinates: only scan_index keeps them apart.
    rng = np.random.default_rng(0)
    x, y = rng.random(30) * 50, rng.random(30) * 50
    xs, ys = np.concatenate([x, x + 0.01]), np.concatenate([y, y])
    scan = np.repeat([0, 1], 30)
    indices, seeds = find_groups(xs, ys, gridsize, k, n_groups=None, seed=1, scan_index=scan)
    assert indices.shape == (60, gridsize**2)
    assert np.all(scan[indices] == scan[seeds][:, None])
    # ... and every member is among the seed's K nearest of its own scan.
    for members, seed in zip(indices, seeds, strict=True):
        own = np.flatnonzero(scan == scan[seed])
        d2 = (xs[own] - xs[seed]) ** 2 + (ys[own] - ys[seed]) ** 2
        assert set(members) <= set(own[np.argsort(d2, kind="stable")[:k]])


def test_grouping_a_joined_scan_stays_within_scans(two_doses):
    joined = concatenate_scans(list(two_doses))
    grouped = group_raw_data(joined, gridsize=2, neighbor_count=36, n_groups=None)
    assert np.all(joined.scan_index[grouped.indices] ==
                  joined.scan_index[grouped.seed_indices][:, None])


def test_one_scan_groups_exactly_as_without_scan_index(two_doses):
    a, _ = two_doses
    plain = find_groups(a.xcoords, a.ycoords, 2, 6, 20, seed=4)
    labelled = find_groups(a.xcoords, a.ycoords, 2, 6, 20, seed=4, scan_index=np.zeros(36))
    for p, q in zip(plain, labelled, strict=True):
        np.testing.assert_array_equal(p, q)


def test_a_scan_too_small_for_a_group_is_refused_before_grouping(two_doses):
    a, _ = two_doses
    tiny = a.subset(np.arange(3))
    joined = concatenate_scans([a, tiny])
    with pytest.raises(DataContractError, match="scan 1 has only 3 distinct position"):
        check_positions(joined, gridsize=2, what="training")
    with pytest.raises(ValueError, match="scan 1 has 3 positions"):
        group_raw_data(joined, gridsize=2)


# ------------------------------------------------------------------ scales
def test_scan_scales_normalise_each_scan_and_restore_its_counts(two_doses):
    a, b = two_doses
    joined = concatenate_scans([a, b])
    scales = ScanScales.of(joined)
    assert scales.n_scans == 2
    assert scales.input_scales[0] == pytest.approx(input_scale(a.diffraction))
    assert scales.input_scales[1] == pytest.approx(input_scale(b.diffraction))
    # Same object, 100x fewer photons: 10x the input scale, photon scale 1/10.
    assert scales.input_scales[1] / scales.input_scales[0] == pytest.approx(10, rel=0.02)
    np.testing.assert_allclose(scales.photon_scales, [1.0, 0.1], rtol=0.02)

    grouped = group_raw_data(joined, gridsize=1, n_groups=None)
    per_group_input, per_group_photon = scales.for_groups(grouped)
    normalised = grouped.diffraction * per_group_input[:, None, None, None]
    totals = (normalised.astype(np.float64) ** 2).sum(axis=(1, 2, 3))
    # The network sees both scans in the same units: mean (N/2)**2 per pattern each.
    for scan in (0, 1):
        in_scan = joined.scan_index[grouped.seed_indices] == scan
        assert totals[in_scan].mean() == pytest.approx(32**2, rel=1e-5)
    # The Poisson loss's measured counts (normalised amplitude x the reference intensity
    # scale x photon scale) are each scan's own counts, for both doses.
    reference_intensity_scale = np.sqrt(scales.reference_counts) / 32
    counts = (normalised * reference_intensity_scale
              * per_group_photon[:, None, None, None]) ** 2
    np.testing.assert_allclose(counts, grouped.diffraction.astype(np.float64) ** 2,
                               rtol=1e-4, atol=1e-4)


def test_single_scan_scales_are_the_plain_ones(two_doses):
    a, _ = two_doses
    scales = ScanScales.of(a)
    assert scales.n_scans == 1
    assert scales.input_scales[0] == input_scale(a.diffraction)
    assert scales.photon_scales[0] == 1.0
    given = ScanScales.of(a, reference_counts=4 * scales.reference_counts)
    assert given.photon_scales[0] == pytest.approx(0.5)


def test_the_poisson_loss_sees_each_scans_own_counts(two_doses, tiny_training_config):
    """The module's loss for a batch of the low-dose scan equals the Poisson deviance of
    the predicted counts against that scan's own counts (photon scale 0.1)."""
    import torch

    from ptychopinn.config import ExecutionConfig
    from ptychopinn_torch import physics
    from ptychopinn_torch.module import PtychoPINNModule

    a, b = two_doses
    joined = concatenate_scans([a, b])
    scales = ScanScales.of(joined)
    grouped = group_raw_data(joined, gridsize=1, n_groups=None)
    low = np.flatnonzero(joined.scan_index[grouped.seed_indices] == 1)[:4]
    config = tiny_training_config()
    module = PtychoPINNModule(config.model.to_dict(), config.to_dict(),
                              ExecutionConfig(accelerator="cpu").to_dict(),
                              intensity_scale=np.sqrt(scales.reference_counts) / 32,
                              input_scale=float(scales.input_scales[0]),
                              probe=joined.probe_guess)
    per_group_input, per_group_photon = scales.for_groups(grouped)
    x = torch.from_numpy(grouped.diffraction[low] * per_group_input[low, None, None, None])
    batch = {"diffraction": x.float(),
             "local_offsets_px": torch.zeros(len(low), 1, 2),
             "photon_scale": torch.from_numpy(per_group_photon[low]).float()}
    module.log = lambda *args, **kwargs: None  # no trainer attached
    with torch.no_grad():
        loss = module._step(batch, "train")
        predicted = module.forward_model(module(batch["diffraction"]))
    photon = float(per_group_photon[low][0])
    lam = (predicted.double() * np.sqrt(scales.reference_counts) / 32 * photon) ** 2
    k = torch.from_numpy(grouped.diffraction[low].astype(np.float64)) ** 2
    eps = physics.POISSON_EPS
    expected = (lam - k * torch.log(lam + eps) - (k - k * torch.log(k + eps))).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)


# ------------------------------------------------------------------ training
def test_a_model_trains_on_two_scans_of_different_dose(two_doses, tiny_training_config,
                                                       cpu_execution):
    from ptychopinn_torch.bundle import read_bundle
    from ptychopinn_torch.train import train

    a, b = two_doses
    config = tiny_training_config(nepochs=1, n_groups=16, model={"gridsize": 2})
    result = train([a, b], None, config, cpu_execution(logger="none"))
    assert np.isfinite(result.history["train_loss"]).all()
    scans = result.summary["scans"]
    assert [s["scan_index"] for s in scans] == [0, 1]
    assert [s["n_positions"] for s in scans] == [36, 36]
    assert scans[1]["photon_scale"] == pytest.approx(0.1, rel=0.02)
    assert result.summary["mean_total_counts"] == pytest.approx(scans[0]["mean_total_counts"])
    saved = read_bundle(result.bundle_path).training_summary
    assert saved["scans"] == scans
    # Both scans reach the training groups.
    groups = result.module.trainer.datamodule.train_set
    seen = {int(group["photon_scale"] < 0.5) for group in groups}
    assert seen == {0, 1}
