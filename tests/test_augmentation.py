"""Physically valid augmentation (issue 8): dihedral transforms where the probe allows
them (``TrainingConfig.augment_flips``, ``ptychopinn.symmetry``) and neighbours redrawn
every epoch (``TrainingConfig.regroup_each_epoch``).

The physics is checked against independent numpy: for a probe P invariant under a
transform T, the transformed diffraction of an object O equals ``|F(P * T(O))|``, and an
augmented group equals the group simulated from the transformed object at the
transformed positions. Training runs are tiny (N=64, 8 groups, 1-2 epochs).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ptychopinn.config import ConfigError, ModelConfig, TrainingConfig
from ptychopinn.grouping import group_raw_data, redraw_members
from ptychopinn.simulate import make_probe
from ptychopinn.symmetry import (
    DIHEDRAL_TRANSFORMS,
    augment_group,
    mirror_index,
    probe_asymmetry,
    probe_symmetries,
)

pytestmark = pytest.mark.usefixtures("restore_torch_determinism")
N = 64
BY_NAME = {t.name: t for t in DIHEDRAL_TRANSFORMS}


def far_field(psi: np.ndarray) -> np.ndarray:
    """Independent numpy far field, DC at N//2 (specs/conventions.md)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(psi, axes=axes), norm="ortho"),
                           axes=axes)


def transform_by_loop(a: np.ndarray, matrix) -> np.ndarray:
    """``out[u] = a[R^-1 u]`` pixel by pixel, u centred on N//2, modulo N."""
    n = a.shape[-1]
    r_inv = np.asarray(matrix).T
    out = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            x, y = r_inv @ np.array([j - n // 2, i - n // 2])
            out[i, j] = a[(y + n // 2) % n, (x + n // 2) % n]
    return out


def random_complex(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) * np.exp(2j * np.pi * rng.random(shape))


# ------------------------------------------------------------------ the transforms
def test_the_eight_transforms_follow_their_definition_and_form_a_group():
    a = random_complex((8, 8), seed=1)
    images = []
    for transform in DIHEDRAL_TRANSFORMS:
        out = transform.apply_to_patterns(a)
        np.testing.assert_array_equal(out, transform_by_loop(a, transform.matrix))
        images.append(out)
    assert len({im.tobytes() for im in images}) == 8  # all distinct
    # The mirror is stitching's mirror about N//2; transpose is the array transpose.
    np.testing.assert_array_equal(BY_NAME["flip_x"].apply_to_patterns(a), a[:, mirror_index(8)])
    np.testing.assert_array_equal(BY_NAME["flip_y"].apply_to_patterns(a), a[mirror_index(8)])
    np.testing.assert_array_equal(BY_NAME["transpose"].apply_to_patterns(a), a.T)
    from ptychopinn_torch.stitching import mirror_index as stitching_mirror
    assert stitching_mirror is mirror_index
    # Closed under composition: applying one after another gives one of the eight.
    for first in DIHEDRAL_TRANSFORMS:
        for second in DIHEDRAL_TRANSFORMS:
            both = second.apply_to_patterns(first.apply_to_patterns(a))
            assert any(np.array_equal(both, im) for im in images)
    # Offsets turn by R: rotate_90 takes +x to +y.
    np.testing.assert_array_equal(BY_NAME["rotate_90"].apply_to_offsets(np.array([1.5, 0.0])),
                                  [0.0, 1.5])


@pytest.mark.parametrize("transform", DIHEDRAL_TRANSFORMS, ids=lambda t: t.name)
def test_far_field_commutes_with_every_transform(transform):
    psi = random_complex((N, N), seed=2)
    np.testing.assert_allclose(far_field(transform.apply_to_patterns(psi)),
                               transform.apply_to_patterns(far_field(psi)), atol=1e-12)


@pytest.mark.parametrize("transform", DIHEDRAL_TRANSFORMS, ids=lambda t: t.name)
def test_augmented_pattern_satisfies_the_forward_model(transform):
    """T(|F(P * O)|) == |F(P * T(O))| for a probe invariant under T (the aperture)."""
    probe = make_probe("aperture", N).astype(np.complex128)
    assert probe_asymmetry(probe, transform) < 1e-6
    obj = random_complex((N, N), seed=3)
    measured = np.abs(far_field(probe * obj))
    augmented = transform.apply_to_patterns(measured)
    np.testing.assert_allclose(augmented,
                               np.abs(far_field(probe * transform.apply_to_patterns(obj))),
                               rtol=1e-9, atol=1e-9)
    if transform.name != "identity":  # not trivially so: the pattern did change
        assert not np.allclose(augmented, measured)


def _rotated_object(obj: np.ndarray, matrix, centre: tuple[int, int]) -> np.ndarray:
    """``O'(q + R s) = O(q + s)`` about pixel ``q = (x, y)``; zero where O has no value."""
    h, w = obj.shape
    r_inv = np.asarray(matrix).T
    rows, cols = np.mgrid[0:h, 0:w]
    sx, sy = r_inv @ np.stack([cols.ravel() - centre[0], rows.ravel() - centre[1]])
    src_x, src_y = sx + centre[0], sy + centre[1]
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    out = np.zeros(h * w, dtype=obj.dtype)
    out[inside] = obj[src_y[inside], src_x[inside]]
    return out.reshape(h, w)


def _simulate_group(obj, probe, positions):
    patches = np.stack([obj[y - N // 2:y + N // 2, x - N // 2:x + N // 2]
                        for x, y in positions.astype(int)])
    return np.abs(far_field(probe * patches)), patches


@pytest.mark.parametrize("transform", DIHEDRAL_TRANSFORMS, ids=lambda t: t.name)
def test_augmented_group_is_the_group_of_the_transformed_object(transform):
    """gridsize 2: transforming the patterns, mapping the offsets by R and restoring the
    canonical order gives exactly the group that the object turned about any point would
    give at the turned positions (probe invariant, zero on its row and column 0)."""
    probe = make_probe("aperture", N).astype(np.complex128)
    probe[0, :] = 0
    probe[:, 0] = 0
    obj = random_complex((200, 200), seed=4)
    # (x, y), in canonical order: the two smallest y form row 0, each row sorted by x.
    positions = np.array([[90, 96], [101, 93], [93, 106], [104, 108]], dtype=float)
    diffraction, patches = _simulate_group(obj, probe, positions)
    offsets = positions - positions.mean(axis=0)

    centre = (97, 100)  # any pixel: the turn's centre only moves the group as a whole
    turned_obj = _rotated_object(obj, transform.matrix, centre)
    turned_positions = (np.asarray(transform.matrix) @ (positions - centre).T).T + centre
    new_order = np.lexsort((turned_positions[:, 0], turned_positions[:, 1]))
    turned_positions = turned_positions[new_order]
    turned_positions = np.concatenate(
        [r[np.argsort(r[:, 0])] for r in turned_positions.reshape(2, 2, 2)])
    expected, expected_patches = _simulate_group(turned_obj, probe, turned_positions)

    patterns, new_offsets, new_labels = augment_group(diffraction, offsets, 2, transform,
                                                      labels=patches)
    np.testing.assert_allclose(new_offsets, turned_positions - turned_positions.mean(axis=0))
    np.testing.assert_allclose(patterns, expected, rtol=1e-9, atol=1e-9)
    # Label patches agree everywhere but on row and column 0 (the mod-N mirror's own).
    np.testing.assert_allclose(new_labels[:, 1:, 1:], expected_patches[:, 1:, 1:])


def test_probe_symmetries_keep_exactly_the_transforms_the_probe_allows():
    aperture = make_probe("aperture", N)
    kept, skipped = probe_symmetries(aperture, 0.01)
    assert [t.name for t in kept] == [t.name for t in DIHEDRAL_TRANSFORMS] and not skipped
    # An elliptical spot aligned with the axes: mirrors and the half turn only.
    yy, xx = np.mgrid[0:N, 0:N] - N // 2
    ellipse = np.exp(-(xx / 6.0) ** 2 - (yy / 3.0) ** 2).astype(np.complex64)
    kept, skipped = probe_symmetries(ellipse, 0.01)
    assert [t.name for t in kept] == ["identity", "flip_x", "flip_y", "rotate_180"]
    assert set(skipped) == {"transpose", "antitranspose", "rotate_90", "rotate_270"}
    assert all(value > 0.5 for value in skipped.values())
    # An off-centre probe: nothing but the identity.
    kept, _ = probe_symmetries(np.roll(aperture, (2, 3), axis=(0, 1)), 0.01)
    assert [t.name for t in kept] == ["identity"]
    # A constant phase, or a sign change under the transform, leaves every amplitude
    # unchanged: still a symmetry.
    assert probe_asymmetry(aperture * np.exp(0.7j), BY_NAME["rotate_90"]) < 1e-6
    odd = (xx * np.exp(-(xx**2 + yy**2) / 50.0)).astype(np.complex64)
    odd[:, 0] = 0
    assert probe_asymmetry(odd, BY_NAME["flip_x"]) < 1e-6
    # The tolerance decides: a slightly asymmetric probe passes a loose one only.
    bumped = aperture.copy()
    bumped[N // 2, N // 2 + 1] *= 1.5
    asymmetry = probe_asymmetry(bumped, BY_NAME["flip_x"])
    assert 0 < asymmetry < 0.2
    assert "flip_x" in [t.name for t in probe_symmetries(bumped, 0.2)[0]]
    assert "flip_x" not in [t.name for t in probe_symmetries(bumped, asymmetry / 2)[0]]


# ------------------------------------------------------------------ augment_flips in training
def _augmented_dataset(raw, gridsize, transforms):
    from ptychopinn_torch.datamodule import AugmentedGroups, GroupedDataset

    grouped = group_raw_data(raw, gridsize=gridsize, neighbor_count=max(4, gridsize**2),
                             n_groups=4, seed=0)
    plain = GroupedDataset(grouped, 1.0)
    return plain, AugmentedGroups(plain, transforms, gridsize)


def test_augmented_items_are_allowed_transforms_of_the_group(tiny_raw):
    import torch

    plain, augmented = _augmented_dataset(tiny_raw, 2, DIHEDRAL_TRANSFORMS)
    item = plain[0]
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        drawn = augmented[0]
        matches = []
        for transform in DIHEDRAL_TRANSFORMS:
            patterns, offsets, labels = augment_group(
                item["diffraction"].numpy(), item["local_offsets_px"].numpy(), 2, transform,
                item["labels"].numpy())
            if (np.array_equal(patterns, drawn["diffraction"].numpy())
                    and np.array_equal(offsets, drawn["local_offsets_px"].numpy())
                    and np.array_equal(labels, drawn["labels"].numpy())):
                matches.append(transform.name)
        assert matches, "an augmented item is no transform of its group"
        seen.add(matches[0])
    assert len(seen) >= 6  # uniform over eight transforms: most appear in 40 draws
    _, identity_only = _augmented_dataset(tiny_raw, 2, DIHEDRAL_TRANSFORMS[:1])
    assert np.array_equal(identity_only[0]["diffraction"].numpy(), item["diffraction"].numpy())


def test_augment_flips_changes_training_and_logs_the_transforms(
        tiny_raw, tiny_training_config, cpu_execution, caplog):
    from ptychopinn_torch.datamodule import AugmentedGroups
    from ptychopinn_torch.train import train

    config = tiny_training_config(nepochs=1)
    plain = train(tiny_raw, None, config, cpu_execution(logger="none"), write_bundle=False)
    caplog.set_level(logging.INFO, logger="ptychopinn_torch.train")
    flipped = train(tiny_raw, None, config.replace(augment_flips=True,
                                                   output_dir=config.output_dir / "f"),
                    cpu_execution(logger="none"))
    assert isinstance(flipped.module.trainer.datamodule.train_set, AugmentedGroups)
    assert plain.history["train_loss"][0] != flipped.history["train_loss"][0]
    used = "identity, flip_x, flip_y, rotate_180, transpose, antitranspose, rotate_90, rotate_270"
    assert f"augmentation: dihedral transforms used: {used}" in caplog.text
    assert flipped.summary["augmentation"]["transforms"] == used.split(", ")
    assert flipped.summary["augmentation"]["skipped_asymmetry"] == {}


def test_a_probe_without_symmetry_disables_the_flips(tiny_raw, tiny_training_config,
                                                    cpu_execution, caplog):
    import dataclasses

    from ptychopinn_torch.datamodule import AugmentedGroups
    from ptychopinn_torch.train import train

    shifted = dataclasses.replace(tiny_raw, probe_guess=np.roll(tiny_raw.probe_guess, (2, 3), axis=(0, 1)))
    caplog.set_level(logging.INFO, logger="ptychopinn_torch.train")
    result = train(shifted, None, tiny_training_config(nepochs=1, augment_flips=True),
                   cpu_execution(logger="none"), write_bundle=False)
    assert not isinstance(result.module.trainer.datamodule.train_set, AugmentedGroups)
    assert "invariant under no dihedral transform" in caplog.text
    assert result.summary["augmentation"]["transforms"] == ["identity"]
    assert set(result.summary["augmentation"]["skipped_asymmetry"]) == {
        t.name for t in DIHEDRAL_TRANSFORMS[1:]}
    # The tolerance decides what counts as invariant: the shifted probe's transpose
    # (asymmetry 0.39, the smallest) passes 0.5, nothing else does.
    skipped = result.summary["augmentation"]["skipped_asymmetry"]
    assert sorted(skipped, key=skipped.get)[:2] == ["transpose", "flip_y"]
    assert skipped["transpose"] < 0.5 < skipped["flip_y"]
    loose = train(shifted, None, tiny_training_config(nepochs=1, augment_flips=True,
                                                      augment_probe_tolerance=0.5),
                  cpu_execution(logger="none"), write_bundle=False, overwrite=True)
    assert isinstance(loose.module.trainer.datamodule.train_set, AugmentedGroups)
    assert loose.summary["augmentation"]["transforms"] == ["identity", "transpose"]


# ------------------------------------------------------------------ regroup_each_epoch
def test_redrawn_groups_differ_by_epoch_are_reproducible_and_stay_near_their_seed():
    rng = np.random.default_rng(5)
    x, y = rng.random(120) * 100, rng.random(120) * 100
    k = 8
    grouped_seeds = np.sort(rng.choice(120, 40, replace=False))
    epochs = {e: redraw_members(x, y, grouped_seeds, 2, k, seed=42, epoch=e) for e in (1, 2, 3)}
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[2], epochs[3])
    np.testing.assert_array_equal(epochs[2], redraw_members(x, y, grouped_seeds, 2, k, 42, 2))
    assert not np.array_equal(epochs[2], redraw_members(x, y, grouped_seeds, 2, k, 43, 2))
    for members in epochs.values():
        for row, seed in zip(members, grouped_seeds, strict=True):
            assert seed in row
            d2 = (x - x[seed]) ** 2 + (y - y[seed]) ** 2
            assert set(row) <= set(np.argsort(d2, kind="stable")[:k])
            assert len(set(row)) == 4


@pytest.mark.parametrize(("changes", "fragment"), [
    ({}, "gridsize > 1"),
    ({"model": ModelConfig(gridsize=2), "sequential_sampling": True}, "sequential_sampling"),
    ({"model": ModelConfig(gridsize=2)}, "neighbor_count=4 <= gridsize**2 = 4"),
])
def test_regrouping_that_would_change_nothing_is_refused(changes, fragment):
    with pytest.raises(ConfigError, match="TrainingConfig.regroup_each_epoch=True") as info:
        TrainingConfig(regroup_each_epoch=True, **changes)
    assert fragment in str(info.value)
    assert TrainingConfig(model=ModelConfig(gridsize=2), neighbor_count=5,
                          regroup_each_epoch=True).regroup_each_epoch


def test_regroup_each_epoch_draws_new_groups_every_epoch_in_training(
        tiny_raw, tiny_training_config, cpu_execution, add_trainer_callback):
    import lightning as L

    from ptychopinn_torch.train import train

    class Groups(L.Callback):
        def __init__(self):
            self.per_epoch = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.per_epoch.append(trainer.train_dataloader.dataset.dataset.grouped)

    config = tiny_training_config(nepochs=2, model={"gridsize": 2}, neighbor_count=7)
    fixed = train(tiny_raw, None, config, cpu_execution(logger="none"), write_bundle=False)
    regrouped_config = config.replace(regroup_each_epoch=True, output_dir=config.output_dir / "r")
    recorder = Groups()
    add_trainer_callback(recorder)
    regrouped = train(tiny_raw, None, regrouped_config, cpu_execution(logger="none"))
    first, second = recorder.per_epoch
    np.testing.assert_array_equal(first.seed_indices, second.seed_indices)
    assert not np.array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(second.indices, redraw_members(
        tiny_raw.xcoords, tiny_raw.ycoords, first.seed_indices, 2, 7, 42, 1))
    # Same first epoch (same groups), another second one (other groups).
    assert regrouped.history["train_loss"][0] == fixed.history["train_loss"][0]
    assert regrouped.history["train_loss"][1] != fixed.history["train_loss"][1]
    assert regrouped.module.trainer.reload_dataloaders_every_n_epochs == 1
