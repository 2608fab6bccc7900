"""Stopping a training run within one batch (an epoch callback with ``stop_requested``)."""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ptychopinn_torch.bundle import read_bundle, read_lightning_checkpoint
from ptychopinn_torch.train import train

BATCHES_PER_EPOCH = 6  # 12 training groups, batch 2


class StopAfterBatches:
    """Epoch callback that asks to stop after ``batches`` batches of epoch ``epoch``
    (0-based; the second epoch by default)."""

    def __init__(self, batches: int, epoch: int = 1) -> None:
        self.batches = batches
        self.epoch = epoch
        self.reports: list = []
        self.polls_in_stop_epoch = 0

    def __call__(self, report) -> None:
        self.reports.append(report)

    def stop_requested(self) -> bool:
        if len(self.reports) == self.epoch:
            self.polls_in_stop_epoch += 1
        return self.polls_in_stop_epoch >= self.batches


def test_stop_requested_mid_epoch_stops_after_that_batch_and_keeps_the_last_epoch(
    tiny_raw, tiny_training_config, cpu_execution
):
    steps = []
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    control = StopAfterBatches(batches=2)
    config = tiny_training_config(n_groups=16, batch_size=2, nepochs=5,
                                  validation_fraction=0.25)
    try:
        # deterministic=False: train() would switch torch's deterministic mode on process-wide
        result = train(tiny_raw, None, config, cpu_execution(deterministic=False),
                       epoch_callback=control)
    finally:
        handle.remove()

    # one whole epoch, then exactly two batches of the second: no further optimizer step
    assert len(steps) == BATCHES_PER_EPOCH + 2
    assert result.stopped_by_caller
    assert len(control.reports) == 1
    assert len(result.history["train_loss"]) == len(result.history["val_loss"]) == 1
    assert result.summary["epochs_completed"] == 1
    assert result.summary["train_loss_history"] == result.history["train_loss"]

    # the bundle holds the weights of epoch 1, the ones last.ckpt saved at its end
    bundle = read_bundle(result.bundle_path).state_dict
    checkpoint, _ = read_lightning_checkpoint(result.checkpoint_dir / "last.ckpt")
    shared = bundle.keys() & checkpoint.keys()
    assert len(shared) > 10
    for name in shared:
        torch.testing.assert_close(bundle[name], checkpoint[name], msg=name)


def test_stop_requested_before_any_epoch_keeps_the_partly_trained_model(
    tiny_raw, tiny_training_config, cpu_execution
):
    class StopAtOnce:
        def __call__(self, report) -> None:
            raise AssertionError("no epoch may be reported")

        def stop_requested(self) -> bool:
            return True

    config = tiny_training_config(n_groups=16, batch_size=2, nepochs=3,
                                  validation_fraction=0.25)
    result = train(tiny_raw, None, config,
                   cpu_execution(enable_checkpointing=False, deterministic=False),
                   epoch_callback=StopAtOnce())
    assert result.stopped_by_caller
    assert result.history["train_loss"] == []
    assert result.summary["epochs_completed"] == 0
    assert result.bundle_path is not None and result.bundle_path.is_file()


def test_stop_mid_epoch_in_a_staged_run_that_validates_every_second_epoch(
    tiny_raw, tiny_training_config, cpu_execution
):
    """The per-batch stop together with training stages (stage-3 learning-rate factor
    applied per optimizer step) and check_val_every_n_epoch: the cut-short third epoch
    (stage 3) steps at the reduced rate until the stop and is not recorded, and only the
    epoch that validated reports a val_loss."""
    lrs_seen = []
    steps = []

    def record(optimizer, *_):
        steps.append(1)
        lrs_seen.append(optimizer.param_groups[0]["lr"])

    handle = register_optimizer_step_post_hook(record)
    control = StopAfterBatches(batches=2, epoch=2)
    config = tiny_training_config(n_groups=16, batch_size=2, nepochs=5,
                                  validation_fraction=0.25, stage_1_epochs=1,
                                  stage_2_epochs=1, stage_3_epochs=1, stage_3_lr_factor=0.5)
    execution = cpu_execution(deterministic=False, check_val_every_n_epoch=2,
                              learning_rate=1e-3)
    try:
        result = train(tiny_raw, None, config, execution, epoch_callback=control)
    finally:
        handle.remove()

    assert len(steps) == 2 * BATCHES_PER_EPOCH + 2
    # stages 1 and 2 step at the base rate, the two stage-3 batches at half of it
    assert lrs_seen[: 2 * BATCHES_PER_EPOCH] == [1e-3] * (2 * BATCHES_PER_EPOCH)
    assert lrs_seen[2 * BATCHES_PER_EPOCH:] == [5e-4, 5e-4]
    assert result.stopped_by_caller
    assert result.summary["epochs_completed"] == 2
    assert len(result.history["train_loss"]) == 2
    assert len(result.history["val_loss"]) == 1  # only the second epoch validated
    assert result.history["learning_rate"] == [1e-3, 1e-3]


def test_resume_after_a_mid_epoch_stop_continues_from_the_last_completed_epoch(
    tiny_raw, tiny_training_config, cpu_execution
):
    """A cut-short epoch writes no checkpoint (Lightning would count it as done while the
    weights went back): --resume finds the last completed epoch and trains the rest, and
    the bundle's histories cover every epoch."""
    from ptychopinn_torch.preflight import find_resume_point

    config = tiny_training_config(n_groups=16, batch_size=2, nepochs=3,
                                  validation_fraction=0.25)
    stopped = train(tiny_raw, None, config, cpu_execution(deterministic=False),
                    epoch_callback=StopAfterBatches(batches=2))
    assert stopped.summary["epochs_completed"] == 1

    point = find_resume_point(config)
    assert point.epochs_completed == 1
    assert point.history["train_loss"] == stopped.history["train_loss"]
    assert not point.complete

    steps = []
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        resumed = train(tiny_raw, None, config, cpu_execution(deterministic=False),
                        resume=True)
    finally:
        handle.remove()
    assert len(steps) == 2 * BATCHES_PER_EPOCH  # epochs 2 and 3, none skipped
    assert resumed.summary["epochs_completed"] == 3
    assert len(resumed.summary["train_loss_history"]) == 3
    assert resumed.summary["train_loss_history"][0] == stopped.history["train_loss"][0]
