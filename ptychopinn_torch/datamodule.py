"""Tensors and DataLoaders built from grouped diffraction data.

A batch is a dict:
- ``diffraction``: float32 (B, C, N, N), amplitude x ``input_scale`` (normalised units,
  see specs/conventions.md; the scale of the group's own scan),
- ``local_offsets_px``: float32 (B, C, 2), (x, y) object pixels,
- ``photon_scale`` (when given): float32 (B,), ``sqrt(photons per pattern of the group's
  scan / those of the reference scan)``, by which the Poisson loss multiplies its
  intensity scales (``grouping.ScanScales``),
- ``labels`` (only when the data has them): complex64 (B, C, N, N) true object patches.

Training groups may be augmented (``TrainingConfig.augment_flips``: a random dihedral
transform per group and epoch, ``ptychopinn.symmetry``) and redrawn every epoch
(``TrainingConfig.regroup_each_epoch``); validation groups never change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.grouping import GroupedData
from ptychopinn.symmetry import DihedralTransform, augment_group
from ptychopinn_torch.runtime import fits_on_device


class GroupedDataset(Dataset):
    """Normalised groups held as tensors (on the CPU, or on the accelerator after
    :meth:`to`); one item is one group. A DataLoader fetches a whole batch with one
    gather per tensor (:meth:`__getitems__`) instead of one item at a time.

    ``input_scale`` is one number or one per group (G,); ``photon_scale`` (G,) adds the
    batch key of that name."""

    def __init__(self, grouped: GroupedData, input_scale: float | np.ndarray,
                 with_labels: bool = True, photon_scale: np.ndarray | None = None):
        scale = np.asarray(input_scale, dtype=np.float32)
        if scale.ndim:  # one scale per group
            scale = scale.reshape(-1, 1, 1, 1)
        self.grouped = grouped
        self.diffraction = torch.from_numpy(
            np.ascontiguousarray(grouped.diffraction * scale, dtype=np.float32)
        )
        self.local_offsets_px = torch.from_numpy(
            np.ascontiguousarray(grouped.local_offsets_px, dtype=np.float32)
        )
        self.photon_scale = None if photon_scale is None else torch.from_numpy(
            np.ascontiguousarray(photon_scale, dtype=np.float32).reshape(-1))
        self.labels = None
        if with_labels and grouped.labels is not None:
            self.labels = torch.from_numpy(np.ascontiguousarray(grouped.labels, dtype=np.complex64))

    def __len__(self) -> int:
        return int(self.diffraction.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"diffraction": self.diffraction, "local_offsets_px": self.local_offsets_px}
        if self.photon_scale is not None:
            tensors["photon_scale"] = self.photon_scale
        if self.labels is not None:
            tensors["labels"] = self.labels
        return tensors

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._tensors().values())

    def to(self, device: torch.device) -> GroupedDataset:
        """Move the tensors to ``device`` (in place); returns self."""
        for name, tensor in self._tensors().items():
            setattr(self, name, tensor.to(device))
        return self

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of groups ``indices``: the same tensors as stacking the items."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.diffraction.device)
        return {name: t.index_select(0, index) for name, t in self._tensors().items()}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "diffraction": self.diffraction[index],
            "local_offsets_px": self.local_offsets_px[index],
        }
        if self.photon_scale is not None:
            item["photon_scale"] = self.photon_scale[index]
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


class AugmentedGroups(Dataset):
    """Groups of ``dataset`` under a dihedral transform drawn uniformly from
    ``transforms`` for every item fetched (torch's global generator, which
    ``seed_everything`` seeds, also in DataLoader workers): patterns and labels
    transformed, offsets mapped, members in canonical order
    (:func:`ptychopinn.symmetry.augment_group`)."""

    def __init__(self, dataset: Dataset, transforms: Sequence[DihedralTransform],
                 gridsize: int):
        self.dataset = dataset
        self.transforms = tuple(transforms)
        self.gridsize = int(gridsize)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[index])
        transform = self.transforms[int(torch.randint(len(self.transforms), (1,)))]
        if transform.name == "identity":
            return item
        labels = item.get("labels")
        patterns, offsets, patches = augment_group(
            item["diffraction"].numpy(), item["local_offsets_px"].numpy(), self.gridsize,
            transform, None if labels is None else labels.numpy())
        item["diffraction"] = torch.from_numpy(np.ascontiguousarray(patterns))
        item["local_offsets_px"] = torch.from_numpy(np.ascontiguousarray(offsets))
        if patches is not None:
            item["labels"] = torch.from_numpy(np.ascontiguousarray(patches))
        return item


def _batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The loaders' collate function for a GroupedDataset (or a Subset of one), whose
    ``__getitems__`` already made the batch."""
    return batch


def _gathers_batches(dataset: Dataset) -> bool:
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return isinstance(dataset, GroupedDataset)


def split_indices(
    n_items: int, validation_fraction: float, seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``range(n_items)``.

    At least one item goes to validation when the fraction is positive and there are two
    or more items; the training part is never empty.
    """
    if validation_fraction <= 0 or n_items < 2:
        return np.arange(n_items), np.arange(0)
    n_val = min(n_items - 1, max(1, round(n_items * validation_fraction)))
    order = np.random.default_rng(seed).permutation(n_items)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class PtychoDataModule(L.LightningDataModule):
    """Training and validation loaders from grouped data.

    Validation comes from the test data when given, else from a split of the training
    groups (``TrainingConfig.validation_fraction``, seeded by ``val_seed``). Only the
    training loader drops an incomplete last batch (``ExecutionConfig.drop_last``).
    ``input_scale`` / ``photon_scale`` are per group (or one input scale for all).
    ``regroup(epoch)`` (``regroup_each_epoch``) returns the training groups of an epoch
    >= 1, with the same seeds in the same order; :meth:`set_augmentation` turns the
    dihedral augmentation on. The trainer then reloads the training loader every epoch.
    """

    def __init__(
        self,
        train_grouped: GroupedData,
        input_scale: float | np.ndarray,
        training_config: TrainingConfig,
        execution_config: ExecutionConfig,
        val_grouped: GroupedData | None = None,
        val_input_scale: float | np.ndarray | None = None,
        *,
        photon_scale: np.ndarray | None = None,
        val_photon_scale: np.ndarray | None = None,
        regroup: Callable[[int], GroupedData] | None = None,
    ):
        super().__init__()
        self.training_config = training_config
        self.execution_config = execution_config
        self._scales = (input_scale, photon_scale)
        self._regroup = regroup
        self._transforms: tuple[DihedralTransform, ...] = ()
        full = GroupedDataset(train_grouped, input_scale, photon_scale=photon_scale)
        self._stores = [full]
        self.data_device = torch.device("cpu")
        self._train_indices: list[int] | None = None
        if val_grouped is not None:
            self._plain_train_set: Dataset = full
            self.val_set: Dataset | None = GroupedDataset(
                val_grouped, val_input_scale if val_input_scale is not None else input_scale,
                photon_scale=val_photon_scale,
            )
            self._stores.append(self.val_set)
        else:
            train_idx, val_idx = split_indices(
                len(full), training_config.validation_fraction, training_config.val_seed
            )
            self._train_indices = train_idx.tolist()
            self._plain_train_set = torch.utils.data.Subset(full, self._train_indices)
            self.val_set = (
                torch.utils.data.Subset(full, val_idx.tolist()) if len(val_idx) else None
            )
        self.train_set: Dataset = self._plain_train_set

    def setup(self, stage: str) -> None:
        """Keep the groups on the training device when it is a GPU, the loaders run in
        the main process, the groups neither change per epoch nor get augmented (both
        work on the host) and they fit (``runtime.fits_on_device``): batches are then
        gathered there, with no host-to-device copy per step."""
        trainer = self.trainer
        if (trainer is None or self.execution_config.num_workers > 0
                or self._regroup is not None or self._transforms):
            return
        device = trainer.strategy.root_device
        if fits_on_device(sum(store.nbytes for store in self._stores), device):
            for store in self._stores:
                store.to(device)
            self.data_device = device

    @property
    def has_validation(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0

    @property
    def reloads_every_epoch(self) -> bool:
        """Whether the training groups change from epoch to epoch (regrouping)."""
        return self._regroup is not None

    def set_augmentation(self, transforms: Sequence[DihedralTransform]) -> None:
        """Augment the training groups with these transforms (identity among them); fewer
        than two transforms means no augmentation."""
        self._transforms = tuple(transforms) if len(transforms) > 1 else ()
        self.train_set = self._augmented(self._plain_train_set)

    def _augmented(self, dataset: Dataset) -> Dataset:
        if not self._transforms:
            return dataset
        return AugmentedGroups(dataset, self._transforms, self.training_config.model.gridsize)

    def train_set_for_epoch(self, epoch: int) -> Dataset:
        """The training dataset of ``epoch`` (0-based): the groups drawn at setup in
        epoch 0 and without regrouping, else those ``regroup(epoch)`` draws."""
        if self._regroup is None or epoch == 0:
            return self.train_set
        full = GroupedDataset(self._regroup(epoch), self._scales[0],
                              photon_scale=self._scales[1])
        if self._train_indices is not None:
            full = torch.utils.data.Subset(full, self._train_indices)
        return self._augmented(full)

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False,
                epoch: int = 0) -> DataLoader:
        ex = self.execution_config
        kwargs: dict = {
            "batch_size": self.training_config.batch_size,
            "shuffle": shuffle,
            "num_workers": ex.num_workers,
            # Groups on the device need no pinning (and CUDA tensors cannot be pinned).
            "pin_memory": ex.pin_memory and self.data_device.type == "cpu",
            "drop_last": drop_last,
        }
        if _gathers_batches(dataset):
            kwargs["collate_fn"] = _batch_as_is
        if ex.num_workers > 0:
            kwargs["persistent_workers"] = ex.persistent_workers
            if ex.prefetch_factor is not None:
                kwargs["prefetch_factor"] = ex.prefetch_factor
        if shuffle:
            # A loader rebuilt for epoch e >= 1 (regrouping) shuffles with its own seed,
            # derived from (seed, e): not the same order every epoch, and reproducible
            # after a resume.
            seed = ex.seed if epoch == 0 else int(
                np.random.SeedSequence([ex.seed, epoch]).generate_state(1)[0])
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self._loader(self.train_set_for_epoch(epoch),
                            shuffle=not self.training_config.sequential_sampling,
                            drop_last=self.execution_config.drop_last,
                            epoch=epoch if self.reloads_every_epoch else 0)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation:
            return []
        return self._loader(self.val_set, shuffle=False)
