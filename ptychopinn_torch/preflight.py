"""Checks that run before training or inference starts (``specs/errors.md``).

Everything that can be known wrong from the data, the configs, the model and the output
directory is checked here, before data are grouped, networks allocated or a single file
written; each failure is an :class:`~ptychopinn.errors.InputError` whose message names
the problem and the fix.  The workflows call these functions, so Python callers and the
command lines get the same checks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data import (
    DataContractError,
    RawData,
    check_photon_scale,
    check_positions,
    warn_if_counts,
)
from ptychopinn.errors import InputError, InputWarning
from ptychopinn.grouping import mean_total_counts
from ptychopinn.resources import available_memory_bytes, format_bytes, memory_shortfall
from ptychopinn_torch.bundle import (
    CHECKPOINT_DIRNAME,
    LAST_CHECKPOINT,
    BundleError,
    load_lightning_checkpoint,
)
from ptychopinn_torch.networks import Generator
from ptychopinn_torch.stitching import STITCH_BYTES_PER_PIXEL, canvas_geometry

__all__ = [
    "ResourceError",
    "ResumePoint",
    "TrainingSetupError",
    "check_inference_resources",
    "check_model_memory",
    "check_scan",
    "check_training_resources",
    "find_resume_point",
    "warn_if_photons_disagree",
]

# Training keeps weights, gradients and Adam's two moments per parameter (float32).
_TRAIN_BYTES_PER_PARAMETER = 16
# Saved activations plus their gradients and workspace, per forward activation byte.
_TRAIN_ACTIVATION_FACTOR = 3


class TrainingSetupError(InputError):
    """A training run cannot start as configured (raised before any work)."""


class ResourceError(InputError):
    """The input would need more memory than this machine has (message: both figures)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where ``--resume`` continues: the checkpoint, epochs it completed, whether that
    already reaches ``nepochs``, and the loss history it carries."""

    checkpoint: Path
    epochs_completed: int
    complete: bool
    history: dict[str, list[float]]


# --------------------------------------------------------------------------- data
def check_scan(raw: RawData, model: ModelConfig, what: str, *, training: bool) -> None:
    """Data checks shared by training and inference: pattern size, distinct positions,
    patches inside ``objectGuess``, counts-instead-of-amplitude warning and, for
    training, the photon scale the float32 physics can handle."""
    if raw.N != model.N:
        raise DataContractError(
            f"the {what} data has {raw.N}x{raw.N} patterns but the model uses N={model.N}"
        )
    if raw.n_positions < model.C:
        raise DataContractError(
            f"the {what} data has {raw.n_positions} positions; a group needs "
            f"gridsize**2 = {model.C}"
        )
    check_positions(raw, model.gridsize, what)
    if training:
        check_photon_scale(
            mean_total_counts(raw.diffraction),
            f"the {what} data (sum of amplitude**2 per pattern)",
            "the file probably holds rescaled values: diffraction must be amplitude, "
            "sqrt(photon counts)",
        )
    warn_if_counts(raw, what)


#: Ratio between the data's photons per pattern and ``nphotons`` beyond which the
#: Poisson loss is scaled orders of magnitude away from the data.
PHOTON_MISMATCH_FACTOR = 1e3


def warn_if_photons_disagree(raw: RawData, nphotons: float | None, what: str) -> None:
    """Warn when ``nphotons`` (the Poisson scale) and the photons the data hold differ by
    more than :data:`PHOTON_MISMATCH_FACTOR`: the usual sign of counts given as
    amplitude (the data then hold about counts**2) or of a mistyped ``--nphotons``."""
    if nphotons is None:
        return
    held = mean_total_counts(raw.diffraction)
    ratio = held / nphotons
    if 1 / PHOTON_MISMATCH_FACTOR <= ratio <= PHOTON_MISMATCH_FACTOR:
        return
    warnings.warn(
        f"the {what} data hold {held:.3g} photons per pattern (sum of amplitude**2) but "
        f"--nphotons is {nphotons:.3g}: the Poisson loss is scaled {ratio:.3g}x away from "
        "the data. If the file holds counts, convert it with ptychopinn.data."
        "counts_to_amplitude; otherwise check --nphotons (or leave it out: it is then "
        "taken from the data)",
        InputWarning,
        stacklevel=2,
    )


# --------------------------------------------------------------------------- memory
def _device_free_bytes(accelerator: str) -> tuple[int, str]:
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), "GPU"
    return available_memory_bytes(), "CPU"


def _meta_generator(model: ModelConfig) -> tuple[torch.nn.Module, int]:
    """The generator built on the meta device (shapes only, nothing allocated) and its
    number of parameters."""
    with torch.device("meta"):
        generator = Generator(model)
    return generator, sum(p.numel() for p in generator.parameters())


def check_model_memory(model: ModelConfig, what: str) -> None:
    """Refuse to build a network whose float32 weights alone exceed the free memory."""
    _, n_parameters = _meta_generator(model)
    shortfall = memory_shortfall(n_parameters * 4, f"{what} ({n_parameters:,} parameters)")
    if shortfall is not None:
        raise ResourceError(f"{shortfall}; n_filters_scale={model.n_filters_scale} is too large")


#: Generators with at most this many parameters are traced on the CPU with one real
#: group (milliseconds, a few MiB); larger ones on the meta device, which allocates
#: nothing but costs about a second of one-time set-up for complex-valued operations.
REAL_TRACE_MAX_PARAMETERS = 20_000_000


def _network_bytes(model: ModelConfig, batch_groups: int) -> tuple[int, int]:
    """``(parameters, activation bytes of one forward pass)`` of the generator: the
    outputs of its leaf modules for one group (activations grow linearly with the
    batch) on the CPU, or for the whole batch on the meta device for large networks."""
    generator, n_parameters = _meta_generator(model)
    if n_parameters * _TRAIN_BYTES_PER_PARAMETER > available_memory_bytes() * 64:
        return n_parameters, 0  # hopeless already; do not trace a forward pass
    device, traced_groups = "meta", batch_groups
    if n_parameters <= REAL_TRACE_MAX_PARAMETERS:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
            generator = Generator(model)
        device, traced_groups = "cpu", 1
    sizes: list[int] = []

    def record(_module: Any, _inputs: Any, output: Any) -> None:
        outputs = output if isinstance(output, tuple | list) else (output,)
        sizes.extend(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

    leaves = [m for m in generator.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.inference_mode():
            x = torch.zeros(traced_groups, model.C, model.N, model.N, device=device)
            probe = torch.ones(model.N, model.N, dtype=torch.complex64, device=device)
            generator(x, probe)
    except Exception:  # an op without a meta kernel: count parameters only
        sizes.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return n_parameters, sum(sizes) * (batch_groups // traced_groups)


def _refuse(needed: float, free: int, device: str, what: str, fix: str) -> None:
    if needed > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed)} of {device} memory but only "
            f"{format_bytes(free)} is available; {fix}"
        )


def check_training_resources(
    train_data: RawData,
    test_data: RawData | None,
    config: TrainingConfig,
    execution: ExecutionConfig,
) -> None:
    """Refuse training that would not fit in memory: the grouped data (raw and
    normalised copies, labels) in CPU memory; the network's weights, gradients, Adam
    state and activations on the device."""
    model = config.model
    pattern_bytes = model.N * model.N * 4
    label_bytes = model.N * model.N * 8
    data_bytes = 0
    for raw in (train_data, test_data):
        if raw is None:
            continue
        groups = raw.n_positions if config.n_groups is None else min(config.n_groups,
                                                                      raw.n_positions)
        per_group = model.C * (2 * pattern_bytes + (2 * label_bytes if raw.labels is not None
                                                    else 0))
        data_bytes += groups * per_group
    shortfall = memory_shortfall(data_bytes, "grouping the training data")
    if shortfall is not None:
        raise ResourceError(f"{shortfall}; lower --n_images or --gridsize")
    n_parameters, activation_bytes = _network_bytes(model, config.batch_size)
    needed = (n_parameters * _TRAIN_BYTES_PER_PARAMETER
              + activation_bytes * _TRAIN_ACTIVATION_FACTOR)
    free, device = _device_free_bytes(execution.accelerator)
    _refuse(needed, free, device,
            f"training this network ({n_parameters:,} parameters, n_filters_scale="
            f"{model.n_filters_scale}, batch {config.batch_size})",
            "lower --n_filters_scale or --batch_size")


def check_inference_resources(
    model: ModelConfig,
    data: RawData,
    inference_config: InferenceConfig,
    execution: ExecutionConfig,
    batch_groups: int,
) -> None:
    """Refuse inference whose stitching canvas (set by the span of the scan positions)
    or network pass would not fit in memory."""
    positions = np.column_stack([data.xcoords, data.ycoords])
    (_, _), (height, width) = canvas_geometry(model.N, positions, inference_config.stitch_crop_px)
    canvas_bytes = float(height) * float(width) * STITCH_BYTES_PER_PIXEL
    shortfall = memory_shortfall(canvas_bytes, f"stitching a {height} x {width} px canvas")
    if shortfall is not None:
        raise ResourceError(
            f"{shortfall}: the scan positions span x {data.xcoords.min():.4g} to "
            f"{data.xcoords.max():.4g}, y {data.ycoords.min():.4g} to "
            f"{data.ycoords.max():.4g} object pixels; check xcoords/ycoords (units are "
            "object pixels) or reconstruct a part of the scan"
        )
    n_parameters, activation_bytes = _network_bytes(model, batch_groups)
    free, device = _device_free_bytes(execution.accelerator)
    _refuse(n_parameters * 4 + activation_bytes, free, device,
            f"running the network on batches of {batch_groups} groups",
            "lower --inference-batch-size")


# --------------------------------------------------------------------------- resume
# model settings that have a training flag (the others are fixed on the command line)
_MODEL_FLAGS = {"N": "--N", "gridsize": "--gridsize", "n_filters_scale": "--n_filters_scale",
                "model_type": "--model_type", "generator": "--generator"}
# training settings that change which tensors the checkpoint holds
_STATE_FIELDS = ("probe_trainable", "intensity_scale_trainable")


def _epochs_completed(ckpt: dict[str, Any]) -> int:
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(ckpt.get("epoch", -1)) + 1


def _setting_differences(hparams: dict[str, Any], config: TrainingConfig) -> list[str]:
    saved_model = hparams.get("model_config")
    saved_training = hparams.get("training_config")
    if not isinstance(saved_model, dict) or not isinstance(saved_training, dict):
        raise TrainingSetupError("the checkpoint holds no PtychoPINN configs")
    differences = []
    for name, value in config.model.to_dict().items():
        if saved_model.get(name) != value:
            label = _MODEL_FLAGS.get(name, f"ModelConfig.{name}")
            differences.append(f"{label} {saved_model.get(name)!r} -> {value!r}")
    for name in _STATE_FIELDS:
        value = getattr(config, name)
        if saved_training.get(name) != value:
            differences.append(f"TrainingConfig.{name} {saved_training.get(name)!r} -> {value!r}")
    return differences


def find_resume_point(config: TrainingConfig) -> ResumePoint:
    """The checkpoint a resumed training continues from, checked against ``config``.

    Raises:
        TrainingSetupError: no checkpoint in ``<output_dir>/checkpoints``; the checkpoint
            is unreadable; or it was trained with other architecture settings (each
            difference is listed as ``setting checkpoint -> now``).
    """
    output_dir = Path(config.output_dir)
    path = output_dir / CHECKPOINT_DIRNAME / LAST_CHECKPOINT
    if not path.is_file():
        raise TrainingSetupError(
            f"--resume: there is no checkpoint to resume in {output_dir} (looked for "
            f"{path}); check --output_dir, or train without --resume"
        )
    try:
        ckpt = load_lightning_checkpoint(path, advice="")
        differences = _setting_differences(ckpt.get("hyper_parameters", {}), config)
    except (BundleError, TrainingSetupError) as exc:
        raise TrainingSetupError(
            f"--resume: cannot continue from {path}, it is damaged or was not written by "
            f"PtychoPINN ({exc}); train into a new --output_dir, or use --overwrite"
        ) from None
    if differences:
        raise TrainingSetupError(
            f"--resume: the checkpoint {path} was trained with other settings: "
            f"{'; '.join(differences)} (checkpoint -> now). Resume with the checkpoint's "
            "settings, or train into a new --output_dir"
        )
    epochs = _epochs_completed(ckpt)
    saved = ckpt.get("callbacks", {}).get("HistoryCallback", {}).get("history", {})
    history = {k: [float(v) for v in saved.get(k, [])] for k in saved} if isinstance(
        saved, dict) else {}
    return ResumePoint(checkpoint=path, epochs_completed=epochs,
                       complete=epochs >= config.nepochs, history=history)

