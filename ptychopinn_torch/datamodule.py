"""Tensors and DataLoaders built from grouped diffraction data.

A batch is a dict:
- ``diffraction``: float32 (B, C, N, N), amplitude x ``input_scale`` (normalised units,
  see specs/conventions.md),
- ``local_offsets_px``: float32 (B, C, 2), (x, y) object pixels,
- ``labels`` (only when the data has them): complex64 (B, C, N, N) true object patches.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.grouping import GroupedData


class GroupedDataset(Dataset):
    """Normalised groups held as CPU tensors; one item is one group."""

    def __init__(self, grouped: GroupedData, input_scale: float, with_labels: bool = True):
        self.diffraction = torch.from_numpy(
            np.ascontiguousarray(grouped.diffraction * np.float32(input_scale), dtype=np.float32)
        )
        self.local_offsets_px = torch.from_numpy(
            np.ascontiguousarray(grouped.local_offsets_px, dtype=np.float32)
        )
        self.labels = None
        if with_labels and grouped.labels is not None:
            self.labels = torch.from_numpy(np.ascontiguousarray(grouped.labels, dtype=np.complex64))

    def __len__(self) -> int:
        return int(self.diffraction.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "diffraction": self.diffraction[index],
            "local_offsets_px": self.local_offsets_px[index],
        }
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


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
    """

    def __init__(
        self,
        train_grouped: GroupedData,
        input_scale: float,
        training_config: TrainingConfig,
        execution_config: ExecutionConfig,
        val_grouped: GroupedData | None = None,
        val_input_scale: float | None = None,
    ):
        super().__init__()
        self.training_config = training_config
        self.execution_config = execution_config
        full = GroupedDataset(train_grouped, input_scale)
        if val_grouped is not None:
            self.train_set: Dataset = full
            self.val_set: Dataset | None = GroupedDataset(
                val_grouped, val_input_scale if val_input_scale is not None else input_scale
            )
        else:
            train_idx, val_idx = split_indices(
                len(full), training_config.validation_fraction, training_config.val_seed
            )
            self.train_set = torch.utils.data.Subset(full, train_idx.tolist())
            self.val_set = (
                torch.utils.data.Subset(full, val_idx.tolist()) if len(val_idx) else None
            )

    @property
    def has_validation(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        ex = self.execution_config
        kwargs: dict = {
            "batch_size": self.training_config.batch_size,
            "shuffle": shuffle,
            "num_workers": ex.num_workers,
            "pin_memory": ex.pin_memory,
            "drop_last": drop_last,
        }
        if ex.num_workers > 0:
            kwargs["persistent_workers"] = ex.persistent_workers
            if ex.prefetch_factor is not None:
                kwargs["prefetch_factor"] = ex.prefetch_factor
        if shuffle:
            kwargs["generator"] = torch.Generator().manual_seed(ex.seed)
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=not self.training_config.sequential_sampling,
                            drop_last=self.execution_config.drop_last)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation:
            return []
        return self._loader(self.val_set, shuffle=False)
