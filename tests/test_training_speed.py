"""Training throughput mechanics: threads, channels-last, batched loading, data kept on
the accelerator, and no host synchronisation per step (the NaN check deferred)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import default_collate

from ptychopinn.grouping import group_raw_data, input_scale
from ptychopinn_torch import datamodule as dm
from ptychopinn_torch import physics, runtime
from ptychopinn_torch import train as train_module
from ptychopinn_torch.module import NonFiniteLossError, PtychoPINNModule
from ptychopinn_torch.runtime import fits_on_device, is_channels_last


class _Probe(Callback):
    """Records, at the start of training, the thread count and the weights' layout."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen["threads"] = torch.get_num_threads()
        self.seen["channels_last"] = is_channels_last(pl_module.generator)


@pytest.mark.parametrize("enabled", [True, False])
def test_channels_last_and_threads_apply_during_training_only(
        enabled, add_trainer_callback, tiny_raw, tiny_training_config, cpu_execution,
        restore_torch_determinism) -> None:
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    probe = _Probe()
    add_trainer_callback(probe)
    result = train_module.train(
        tiny_raw, None, tiny_training_config(nepochs=1),
        cpu_execution(logger="none", enable_checkpointing=False, channels_last=enabled,
                      num_threads=other), write_bundle=False)
    assert probe.seen == {"threads": other, "channels_last": enabled}
    assert torch.get_num_threads() == before
    assert not is_channels_last(result.module.generator)  # back to the plain layout


def test_batched_loading_gives_the_batches_of_item_by_item_loading(tiny_raw) -> None:
    grouped = group_raw_data(tiny_raw, gridsize=2, n_groups=10, seed=0)
    dataset = dm.GroupedDataset(grouped, float(input_scale(tiny_raw.diffraction)))
    indices = [7, 2, 9, 0]
    batched = dataset.__getitems__(indices)
    stacked = default_collate([dataset[i] for i in indices])
    assert set(batched) == set(stacked) == {"diffraction", "local_offsets_px", "labels"}
    for key in batched:
        assert torch.equal(batched[key], stacked[key]), key
    subset = torch.utils.data.Subset(dataset, [5, 6, 7])
    via_subset = subset.__getitems__([2, 0])
    assert torch.equal(via_subset["diffraction"],
                       torch.stack([dataset[7]["diffraction"], dataset[5]["diffraction"]]))


def test_fits_on_device_only_for_cuda_within_half_the_free_memory(monkeypatch) -> None:
    assert not fits_on_device(1, torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert fits_on_device(500, torch.device("cuda"))
    assert not fits_on_device(501, torch.device("cuda"))
    assert runtime.DEVICE_DATA_SHARE == 0.5


def test_groups_move_to_the_accelerator_when_they_fit(monkeypatch, tiny_raw,
                                                      tiny_training_config,
                                                      cpu_execution) -> None:
    grouped = group_raw_data(tiny_raw, gridsize=1, n_groups=8, seed=0)
    moved: list[torch.device] = []
    monkeypatch.setattr(dm.GroupedDataset, "to",
                        lambda self, device: moved.append(device) or self)

    class FakeTrainer:
        current_epoch = 0

        class strategy:  # noqa: N801 - mimics trainer.strategy.root_device
            root_device = torch.device("cuda", 0)

    def module(workers: int, fits: bool) -> dm.PtychoDataModule:
        monkeypatch.setattr(dm, "fits_on_device", lambda nbytes, device: fits)
        data = dm.PtychoDataModule(grouped, 1.0, tiny_training_config(validation_fraction=0.25),
                                   cpu_execution(num_workers=workers, pin_memory=True))
        data.trainer = FakeTrainer()
        data.setup("fit")
        return data

    on_gpu = module(0, True)
    assert moved == [torch.device("cuda", 0)] and on_gpu.data_device.type == "cuda"
    assert on_gpu.train_dataloader().pin_memory is False  # CUDA tensors are not pinned
    moved.clear()
    for workers, fits in ((2, True), (0, False)):
        stays = module(workers, fits)
        assert moved == [] and stays.data_device.type == "cpu"
        assert stays.train_dataloader().pin_memory is True


# ------------------------------------------------------------------- host syncs, NaNs
def test_deferred_check_makes_no_host_sync_and_reports_at_the_end_of_the_epoch(
        monkeypatch, tiny_raw, tiny_training_config, cpu_execution,
        restore_torch_determinism) -> None:
    # Accelerator behaviour on the CPU: no value is read per step; a NaN loss stops
    # training at the end of its epoch, before that epoch's checkpoint is written.
    monkeypatch.setattr(PtychoPINNModule, "check_finite_every_step", False)
    real_total_loss = physics.total_loss
    training_calls = []

    def poisoned(*args, **kwargs):
        terms = real_total_loss(*args, **kwargs)
        if torch.is_grad_enabled():
            training_calls.append(1)
            if len(training_calls) >= 2:
                terms["loss"] = terms["loss"] * math.nan
        return terms

    monkeypatch.setattr(physics, "total_loss", poisoned)
    reads: list[str] = []
    original_step = PtychoPINNModule.training_step

    def no_reads(self, batch, batch_idx):
        saved = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "__float__")}

        def record(name):
            def read(tensor, *args):
                reads.append(name)
                return saved[name](tensor, *args)
            return read

        for name in saved:
            monkeypatch.setattr(torch.Tensor, name, record(name))
        try:
            return original_step(self, batch, batch_idx)
        finally:
            for name, method in saved.items():
                monkeypatch.setattr(torch.Tensor, name, method)

    monkeypatch.setattr(PtychoPINNModule, "training_step", no_reads)
    config = tiny_training_config(nepochs=3)
    with pytest.raises(NonFiniteLossError, match=r"train loss became nan at epoch 1"):
        train_module.train(tiny_raw, None, config, cpu_execution(logger="none"))
    assert len(training_calls) == 2 and reads == []
    last = torch.load(config.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # the NaN epoch wrote no checkpoint


def test_deferred_check_keeps_the_first_non_finite_value() -> None:
    module = PtychoPINNModule.__new__(PtychoPINNModule)
    torch.nn.Module.__init__(module)
    module._non_finite = {}
    module.check_finite_every_step = False
    for value in (1.0, math.inf, math.nan, 2.0):
        module._check_finite(torch.tensor(value), "train")
    flag, first = module._non_finite["train"]
    assert bool(flag) and first.item() == math.inf
    module._check_finite(torch.tensor(3.0), "val")
    assert not bool(module._non_finite["val"][0])
    module._check_deferred("val")  # finite: nothing raised, flag consumed
    assert "val" not in module._non_finite
    np.testing.assert_equal(float(module._non_finite["train"][1]), math.inf)
