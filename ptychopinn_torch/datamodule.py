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
from ptychopinn_torch.runtime import fits_on_device


class GroupedDataset(Dataset):
    """Normalised groups held as tensors (on the CPU, or on the accelerator after
    :meth:`to`); one item is one group. A DataLoader fetches a whole batch with one
    gather per tensor (:meth:`__getitems__`) instead of one item at a time."""

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

    @property
    def nbytes(self) -> int:
        tensors = [self.diffraction, self.local_offsets_px]
        if self.labels is not None:
            tensors.append(self.labels)
        return sum(t.nbytes for t in tensors)

    def to(self, device: torch.device) -> GroupedDataset:
        """Move the tensors to ``device`` (in place); returns self."""
        self.diffraction = self.diffraction.to(device)
        self.local_offsets_px = self.local_offsets_px.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of groups ``indices``: the same tensors as stacking the items."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.diffraction.device)
        batch = {
            "diffraction": self.diffraction.index_select(0, index),
            "local_offsets_px": self.local_offsets_px.index_select(0, index),
        }
        if self.labels is not None:
            batch["labels"] = self.labels.index_select(0, index)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "diffraction": self.diffraction[index],
            "local_offsets_px": self.local_offsets_px[index],
        }
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


def _batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The loaders' collate function: GroupedDataset.__getitems__ already made the batch."""
    return batch


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
        self._stores = [full]
        self.data_device = torch.device("cpu")
        if val_grouped is not None:
            self.train_set: Dataset = full
            self.val_set: Dataset | None = GroupedDataset(
                val_grouped, val_input_scale if val_input_scale is not None else input_scale
            )
            self._stores.append(self.val_set)
        else:
            train_idx, val_idx = split_indices(
                len(full), training_config.validation_fraction, training_config.val_seed
            )
            self.train_set = torch.utils.data.Subset(full, train_idx.tolist())
            self.val_set = (
                torch.utils.data.Subset(full, val_idx.tolist()) if len(val_idx) else None
            )

    def setup(self, stage: str) -> None:
        """Keep the groups on the training device when it is a GPU, the loaders run in
        the main process and the groups fit (``runtime.fits_on_device``): batches are
        then gathered there, with no host-to-device copy per step."""
        trainer = self.trainer
        if trainer is None or self.execution_config.num_workers > 0:
            return
        device = trainer.strategy.root_device
        if fits_on_device(sum(store.nbytes for store in self._stores), device):
            for store in self._stores:
                store.to(device)
            self.data_device = device

    @property
    def has_validation(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        ex = self.execution_config
        kwargs: dict = {
            "batch_size": self.training_config.batch_size,
            "shuffle": shuffle,
            "num_workers": ex.num_workers,
            # Groups on the device need no pinning (and CUDA tensors cannot be pinned).
            "pin_memory": ex.pin_memory and self.data_device.type == "cpu",
            "drop_last": drop_last,
            "collate_fn": _batch_as_is,
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
