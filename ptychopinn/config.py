"""Backend-neutral configuration: frozen dataclasses, validated on construction.

There is no process-wide parameter dictionary: configs are passed explicitly and a model
bundle carries the configs it was trained with. Every invalid value raises
:class:`ConfigError` (a ``ValueError``) naming the field, the value and what is allowed.
All configs round-trip exactly through ``to_dict``/``from_dict`` and JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from numpy import bool_ as np_bool

from ptychopinn.data import PHOTONS_PER_PATTERN_RANGE
from ptychopinn.errors import InputError

logger = logging.getLogger(__name__)

SUPPORTED_N = (64, 128, 256)
MODEL_TYPES = ("pinn", "supervised")
GENERATORS = ("unet", "unet_lite", "cnn")
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
AMP_ACTIVATION_ALIASES = {"silu": "swish", "SiLU": "swish", "SILU": "swish"}
LOSS_MODES = ("poisson", "mae")
BACKENDS = ("pytorch",)
STITCH_WEIGHTINGS = ("uniform", "probe")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "tpu", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "64")
SCHEDULERS = ("Default", "Exponential", "MultiStage", "Adaptive", "WarmupCosine")
CHECKPOINT_MODES = ("min", "max")
LOGGERS = ("csv", "tensorboard", "mlflow", "none")
PHYSICS_WEIGHT_SCHEDULES = ("linear", "cosine", "exponential")
DDP_BACKENDS = ("nccl", "gloo", "mpi")
#: Arithmetic of the network at inference: float32, or bfloat16 autocast (convolutions
#: and matrix products in bfloat16; the physics, FFTs and stitching stay float32).
INFERENCE_PRECISIONS = ("auto", "32", "bf16")


#: Metric names a training run logs per epoch (the Lightning module logs under them).
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
LEARNING_RATE = "learning_rate"
PHYSICS_WEIGHT = "physics_weight"


def logged_metric_names(
    model_type: str,
    loss_mode: str = "poisson",
    *,
    has_labels: bool = False,
    realspace_weight: float = 0.0,
    has_validation: bool = True,
    staged: bool = False,
) -> set[str]:
    """Every metric a training run logs per epoch (``ExecutionConfig.checkpoint_monitor``
    must name one): ``train_loss``, ``learning_rate``, ``train_<term>`` for each loss term
    (specs/physics_and_losses.md), ``physics_weight`` when training stages are on
    (``staged``) and, with validation data, ``val_loss`` and ``val_<term>``."""
    if model_type == "supervised":
        terms = {"supervised"}
    else:
        terms = {"mae"}
        if loss_mode == "poisson":
            terms.add("poisson")
        if has_labels and realspace_weight > 0:
            terms.add("realspace")
    names = {TRAIN_LOSS, LEARNING_RATE} | {f"train_{term}" for term in terms}
    if staged:
        names.add(PHYSICS_WEIGHT)
    if has_validation:
        names |= {VAL_LOSS} | {f"val_{term}" for term in terms}
    return names


class ConfigError(InputError):
    """An invalid configuration value; the message names field, value and allowed range."""


def _fail(cls_name: str, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{cls_name}.{name}={value!r} is invalid: {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np_bool)


def _is_real(value: Any) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np_bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _bound(value: float) -> str:
    """A range bound as users read it: 0.0, 1.0, inf, 1e-06, 1e+15."""
    value = float(value)
    if value != 0 and math.isfinite(value) and not 1e-4 <= abs(value) < 1e6:
        return f"{value:g}"
    return repr(value)


class _ConfigBase:
    """Shared validation helpers and (de)serialisation for the config dataclasses."""

    _path_fields: ClassVar[tuple[str, ...]] = ()
    _nested: ClassVar[dict[str, type]] = {}

    def _err(self, name: str, allowed: str) -> None:
        _fail(type(self).__name__, name, getattr(self, name), allowed)

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or value not in choices:
            self._err(name, f"must be one of the strings {', '.join(choices)}")

    def _check_bool(self, *names: str) -> None:
        for name in names:
            if not isinstance(getattr(self, name), bool):
                self._err(name, "must be true or false")

    def _check_int(
        self, name: str, minimum: int, *, maximum: int | None = None, optional: bool = False
    ) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            suffix = " or None" if optional else ""
            upper = f" and <= {maximum}" if maximum is not None else ""
            self._err(name, f"must be an integer >= {minimum}{upper}{suffix}")
        # numpy scalars (e.g. from GUI settings) become plain ints for JSON.
        object.__setattr__(self, name, int(value))

    def _check_real(
        self,
        name: str,
        *,
        minimum: float = -math.inf,
        exclusive_min: bool = False,
        maximum: float = math.inf,
        exclusive_max: bool = False,
        optional: bool = False,
    ) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        lo = "(" if exclusive_min else "["
        hi = ")" if exclusive_max else "]"
        suffix = " or None" if optional else ""
        rule = (
            f"must be a finite number in {lo}{_bound(minimum)}, {_bound(maximum)}{hi}{suffix}"
        )
        if not _is_real(value):
            self._err(name, rule)
        too_low = value <= minimum if exclusive_min else value < minimum
        too_high = value >= maximum if exclusive_max else value > maximum
        if too_low or too_high:
            self._err(name, rule)
        object.__setattr__(self, name, float(value))

    def _coerce_paths(self) -> None:
        for name in self._path_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str):
                if not value:
                    self._err(name, "must be a non-empty path or None")
                object.__setattr__(self, name, Path(value))
            elif not isinstance(value, Path):
                self._err(name, "must be a path (str or pathlib.Path) or None")

    def replace(self, **changes: Any) -> Self:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings, nested configs as dicts)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _ConfigBase):
                value = value.to_dict()
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                f"known fields are {', '.join(sorted(known))}"
            )
        kwargs = dict(data)
        for name, nested_cls in cls._nested.items():
            if name in kwargs and isinstance(kwargs[name], dict):
                kwargs[name] = nested_cls.from_dict(kwargs[name])  # type: ignore[attr-defined]
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class ModelConfig(_ConfigBase):
    """Architecture and physics of the network.

    ``generator`` picks the network layout: "unet_lite" (the default: physics
    back-projection into real space, then a U-Net with one shared decoder), "unet" (the
    same with two full decoders, about 2x the arithmetic) or "cnn" (the legacy
    encoder/decoder). N is the diffraction pattern side
    in pixels; ``gridsize**2`` neighbouring patterns form
    one group; ``probe_scale`` is dimensionless; ``gaussian_smoothing_sigma`` is in pixels.
    The ``eca_*``, ``cbam_*`` and ``spatial_decoder`` switches add attention blocks to the
    generator (``ptychopinn_torch.attention``); ``decoder_spatial_kernel`` is the side, in
    pixels, of the spatial-attention convolution.
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 1
    model_type: str = "pinn"
    generator: str = "unet_lite"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0
    eca_encoder: bool = False
    cbam_encoder: bool = False
    cbam_bottleneck: bool = False
    cbam_decoder: bool = False
    eca_decoder: bool = False
    spatial_decoder: bool = False
    decoder_spatial_kernel: int = 7

    def __post_init__(self) -> None:
        if isinstance(self.amp_activation, str) and self.amp_activation in AMP_ACTIVATION_ALIASES:
            object.__setattr__(self, "amp_activation", AMP_ACTIVATION_ALIASES[self.amp_activation])
        if not _is_int(self.N) or self.N not in SUPPORTED_N:
            self._err("N", f"must be one of {', '.join(map(str, SUPPORTED_N))}")
        object.__setattr__(self, "N", int(self.N))
        self._check_int("gridsize", 1)
        self._check_int("n_filters_scale", 1)
        self._check_choice("model_type", MODEL_TYPES)
        self._check_choice("generator", GENERATORS)
        if self.amp_activation not in AMP_ACTIVATIONS:
            self._err(
                "amp_activation",
                f"must be one of {', '.join(AMP_ACTIVATIONS)} (silu is accepted as swish)",
            )
        self._check_bool("object_big", "probe_big", "probe_mask", "pad_object")
        self._check_real("probe_scale", minimum=0.0, exclusive_min=True)
        self._check_real("gaussian_smoothing_sigma", minimum=0.0)
        self._check_bool("eca_encoder", "cbam_encoder", "cbam_bottleneck", "cbam_decoder",
                         "eca_decoder", "spatial_decoder")
        kernel = self.decoder_spatial_kernel
        if not _is_int(kernel) or kernel < 1 or kernel % 2 == 0:
            self._err("decoder_spatial_kernel", "must be an odd integer >= 1 (a centred kernel)")
        object.__setattr__(self, "decoder_spatial_kernel", int(kernel))

    @property
    def C(self) -> int:  # noqa: N802 - the physics symbol
        """Number of diffraction patterns per group, ``gridsize**2``."""
        return self.gridsize**2


def _check_backend(obj: _ConfigBase) -> None:
    backend = obj.backend  # type: ignore[attr-defined]
    if isinstance(backend, str) and backend.lower() == "tensorflow":
        obj._err(
            "backend",
            "this distribution has no TensorFlow backend; use backend='pytorch'",
        )
    obj._check_choice("backend", BACKENDS)


@dataclass(frozen=True)
class TrainingConfig(_ConfigBase):
    """Data, grouping, loss and schedule of a training run.

    ``nphotons`` is the photon count per pattern assumed by the Poisson likelihood (None:
    measured from the training data), within ``data.PHOTONS_PER_PATTERN_RANGE``.
    ``validation_fraction`` is the share of groups held out (seeded by ``val_seed``) when
    there is no test file. ``neighbor_count=None`` means
    ``max(4, gridsize**2)`` and is stored resolved. Stages (epochs) move the loss from the
    amplitude MAE to the Poisson NLL (specs/physics_and_losses.md). Augmentation:
    ``regroup_each_epoch`` draws each group's members again every epoch (gridsize > 1);
    ``augment_flips`` transforms training groups by the dihedral transforms under which
    the probe is invariant to within ``augment_probe_tolerance`` (relative L2 norm,
    ``ptychopinn.symmetry``). ``init_model`` starts
    from a trained bundle with the learning rate scaled by ``fine_tune_gamma``;
    ``experiment_name``, ``notes`` and ``model_name`` tag MLflow runs.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data_file: Path | None = None
    test_data_file: Path | None = None
    n_groups: int | None = 512
    n_subsample: int | None = None
    batch_size: int = 16
    nepochs: int = 50
    nphotons: float | None = None
    neighbor_count: int | None = None
    loss_mode: str = "poisson"
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    subsample_seed: int | None = 42
    sequential_sampling: bool = False
    regroup_each_epoch: bool = False
    augment_flips: bool = False
    augment_probe_tolerance: float = 0.01
    validation_fraction: float = 0.05
    val_seed: int | None = 42
    stage_1_epochs: int = 0
    stage_2_epochs: int = 0
    stage_3_epochs: int = 0
    physics_weight_schedule: str = "cosine"
    stage_3_lr_factor: float = 0.1
    init_model: Path | None = None
    fine_tune_gamma: float = 0.1
    experiment_name: str = "Synthetic_Runs"
    notes: str = ""
    model_name: str = "PtychoPINNv2"
    debug: bool = False
    output_dir: Path = Path("training_outputs")
    backend: str = "pytorch"

    _path_fields: ClassVar[tuple[str, ...]] = (
        "train_data_file", "test_data_file", "init_model", "output_dir"
    )
    _nested: ClassVar[dict[str, type]] = {"model": ModelConfig}

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        if not isinstance(self.model, ModelConfig):
            self._err("model", "must be a ModelConfig")
        self._coerce_paths()
        if self.output_dir is None:
            self._err("output_dir", "must be a path")
        self._check_int("n_groups", 1, optional=True)
        self._check_int("n_subsample", 1, optional=True)
        self._check_int("batch_size", 1)
        self._check_int("nepochs", 1)
        self._check_real(
            "nphotons",
            minimum=PHOTONS_PER_PATTERN_RANGE[0],
            maximum=PHOTONS_PER_PATTERN_RANGE[1],
            optional=True,
        )
        if self.neighbor_count is None:
            # One default for every gridsize: the legacy 4, or a full group if larger.
            object.__setattr__(self, "neighbor_count", max(4, self.model.C))
        self._check_int("neighbor_count", 1)
        if self.neighbor_count < self.model.C:
            self._err(
                "neighbor_count",
                f"must be >= gridsize**2 = {self.model.C} (a group draws its "
                f"{self.model.C} positions from the neighbor_count nearest)",
            )
        self._check_choice("loss_mode", LOSS_MODES)
        for name in ("nll_weight", "mae_weight", "realspace_mae_weight", "realspace_weight"):
            self._check_real(name, minimum=0.0)
        if self.model.model_type == "pinn" and self.loss_mode == "poisson":
            if self.nll_weight == 0 and self.mae_weight == 0:
                self._err("nll_weight", "nll_weight and mae_weight cannot both be 0")
        self._check_bool(
            "probe_trainable", "intensity_scale_trainable", "sequential_sampling",
            "regroup_each_epoch", "augment_flips",
        )
        self._check_int("subsample_seed", 0, optional=True)
        if self.regroup_each_epoch:
            c = self.model.C
            if c == 1:
                self._err("regroup_each_epoch", "regrouping redraws a group's neighbours, "
                          "so it needs model.gridsize > 1 (a group of gridsize 1 is its seed "
                          "alone)")
            if self.sequential_sampling:
                self._err("regroup_each_epoch", "sequential_sampling takes the nearest "
                          "neighbours, the same every epoch; turn one of them off")
            if self.neighbor_count <= c:
                self._err("regroup_each_epoch", f"with neighbor_count={self.neighbor_count} "
                          f"<= gridsize**2 = {c} every group is its seed's {c} nearest "
                          f"positions, the same every epoch; set neighbor_count > {c} "
                          f"(e.g. {2 * c})")
        self._check_real("augment_probe_tolerance", minimum=0.0, maximum=1.0)
        self._check_real(
            "validation_fraction", minimum=0.0, maximum=1.0, exclusive_max=True
        )
        self._check_int("val_seed", 0, optional=True)
        for name in ("stage_1_epochs", "stage_2_epochs", "stage_3_epochs"):
            self._check_int(name, 0)
        self._check_choice("physics_weight_schedule", PHYSICS_WEIGHT_SCHEDULES)
        self._check_real("stage_3_lr_factor", minimum=0.0, exclusive_min=True, maximum=1.0)
        staged = self.stage_1_epochs + self.stage_2_epochs + self.stage_3_epochs
        if staged:
            if self.model.model_type != "pinn" or self.loss_mode != "poisson":
                self._err("stage_1_epochs", "training stages move from the amplitude MAE "
                          "to the Poisson loss, so they need model_type='pinn' and "
                          "loss_mode='poisson'")
            if staged > self.nepochs:
                self._err("stage_1_epochs", f"stage_1_epochs + stage_2_epochs + "
                          f"stage_3_epochs = {staged} exceeds nepochs = {self.nepochs}")
        self._check_real("fine_tune_gamma", minimum=0.0, exclusive_min=True, maximum=1.0)
        for name in ("experiment_name", "model_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                self._err(name, "must be a non-empty string")
        if not isinstance(self.notes, str):
            self._err("notes", "must be a string")
        self._check_bool("debug")
        _check_backend(self)


    @property
    def uses_labels(self) -> bool:
        """Whether training compares with ground-truth labels (supervised, or a real-space
        term): only then are labels needed (and kept by a pretraining's simulation)."""
        return self.model.model_type == "supervised" or self.realspace_weight > 0


@dataclass(frozen=True)
class InferenceConfig(_ConfigBase):
    """What to reconstruct and how to stitch it.

    ``run_id`` loads the model logged by that MLflow run instead of ``model_path``.
    ``stitch_crop_px`` is the side, in pixels, of the central region each patch
    contributes (None: N // 2). ``stitch_align_phase`` removes each patch's constant phase
    offset (unobservable in its diffraction) against its already-stitched neighbours.
    ``refine_iterations`` > 0 refines the stitched object against the measured data with
    the physics (``ptychopinn_torch.refine``) for at most that many iterations, stopping
    early once the loss improves by less than ``refine_tolerance`` (relative) per
    iteration; ``refine_probe`` refines the probe too.
    """

    model_path: Path | None = None
    run_id: str | None = None
    test_data_file: Path | None = None
    n_groups: int | None = None
    output_dir: Path = Path("inference_outputs")
    backend: str = "pytorch"
    stitch_weighting: str = "probe"
    stitch_crop_px: int | None = None
    stitch_align_phase: bool = True
    flip_x: bool = False
    flip_y: bool = False
    transpose: bool = False
    refine_iterations: int = 30
    refine_tolerance: float = 1e-3
    refine_probe: bool = False

    _path_fields: ClassVar[tuple[str, ...]] = ("model_path", "test_data_file", "output_dir")

    def __post_init__(self) -> None:
        self._coerce_paths()
        if self.output_dir is None:
            self._err("output_dir", "must be a path")
        if self.run_id is not None:
            if not isinstance(self.run_id, str) or not self.run_id.strip():
                self._err("run_id", "must be a non-empty MLflow run id or None")
            if self.model_path is not None:
                self._err("run_id", "give either model_path or run_id (the model logged "
                          "by that MLflow run), not both")
        self._check_int("n_groups", 1, optional=True)
        _check_backend(self)
        self._check_choice("stitch_weighting", STITCH_WEIGHTINGS)
        self._check_int("stitch_crop_px", 1, optional=True)
        self._check_bool("stitch_align_phase", "flip_x", "flip_y", "transpose")
        self._check_int("refine_iterations", 0)
        self._check_real("refine_tolerance", minimum=0.0, maximum=1.0)
        self._check_bool("refine_probe")


@dataclass(frozen=True)
class ExecutionConfig(_ConfigBase):
    """Runtime knobs: hardware, determinism, data loading, optimiser, checkpoints, logging.

    ``learning_rate`` is the Adam step size (scaled by ``sqrt(world size x
    accumulate_grad_batches)`` with ``scale_lr_with_batch``); ``gradient_clip_val`` a
    gradient-norm bound. ``ddp_*`` tune Lightning's DDPStrategy (``ddp_backend=None``:
    nccl with CUDA, else gloo).
    """

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    ddp_find_unused_parameters: bool = False
    ddp_static_graph: bool = True
    ddp_gradient_as_bucket_view: bool = True
    ddp_backend: str | None = None
    deterministic: bool = True
    precision: str = "32-true"
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    drop_last: bool = False
    learning_rate: float = 1e-3
    scale_lr_with_batch: bool = False
    scheduler: str = "Default"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    check_val_every_n_epoch: int = 1
    enable_checkpointing: bool = True
    checkpoint_save_top_k: int = 1
    checkpoint_monitor: str = "val_loss"
    checkpoint_mode: str = "min"
    early_stop_patience: int | None = 100
    logger: str = "csv"
    mlflow_tracking_uri: str | None = None
    inference_batch_size: int | None = None
    seed: int = 42
    num_threads: int | None = None
    channels_last: bool = True
    inference_precision: str = "auto"
    inference_compile: bool = False

    def __post_init__(self) -> None:
        self._check_choice("accelerator", ACCELERATORS)
        if self.accelerator == "cuda":
            # Lightning names NVIDIA GPUs "gpu"; "cuda" is kept as a user-facing alias.
            object.__setattr__(self, "accelerator", "gpu")
        if self.devices != "auto":
            if not _is_int(self.devices) or self.devices < 1:
                self._err("devices", "must be an integer >= 1 or 'auto'")
            object.__setattr__(self, "devices", int(self.devices))
        self._check_int("num_nodes", 1)
        self._check_choice("strategy", STRATEGIES)
        if self.num_nodes > 1 and self.strategy not in ("ddp", "ddp_spawn"):
            self._err("num_nodes", "more than one node needs strategy='ddp'")
        self._check_bool(
            "ddp_find_unused_parameters",
            "ddp_static_graph",
            "ddp_gradient_as_bucket_view",
            "deterministic",
            "pin_memory",
            "persistent_workers",
            "drop_last",
            "scale_lr_with_batch",
            "enable_progress_bar",
            "enable_checkpointing",
        )
        if self.ddp_backend is not None:
            self._check_choice("ddp_backend", DDP_BACKENDS)
            if self.ddp_backend == "nccl" and self.accelerator == "cpu":
                self._err("ddp_backend", "nccl needs CUDA GPUs; use gloo on CPUs")
        self._check_choice("precision", PRECISIONS)
        self._check_int("num_workers", 0)
        self._check_int("prefetch_factor", 1, optional=True)
        if self.num_workers == 0 and self.persistent_workers:
            self._err("persistent_workers", "needs num_workers > 0")
        if self.num_workers == 0 and self.prefetch_factor is not None:
            self._err("prefetch_factor", "needs num_workers > 0 (or leave it None)")
        self._check_real("learning_rate", minimum=0.0, exclusive_min=True)
        self._check_choice("scheduler", SCHEDULERS)
        self._check_real("gradient_clip_val", minimum=0.0, exclusive_min=True, optional=True)
        self._check_int("accumulate_grad_batches", 1)
        self._check_int("check_val_every_n_epoch", 1)
        self._check_int("checkpoint_save_top_k", -1)
        if not isinstance(self.checkpoint_monitor, str) or not self.checkpoint_monitor:
            self._err("checkpoint_monitor", "must be a non-empty metric name, e.g. val_loss")
        self._check_choice("checkpoint_mode", CHECKPOINT_MODES)
        self._check_int("early_stop_patience", 1, optional=True)
        self._check_choice("logger", LOGGERS)
        if self.mlflow_tracking_uri is not None and (
            not isinstance(self.mlflow_tracking_uri, str) or not self.mlflow_tracking_uri.strip()
        ):
            self._err("mlflow_tracking_uri", "must be a non-empty URI (or None: a local "
                      "store under the output directory)")
        self._check_int("inference_batch_size", 1, optional=True)
        # Lightning's seed_everything accepts 32-bit unsigned seeds only.
        self._check_int("seed", 0, maximum=2**32 - 1)
        self._check_int("num_threads", 1, maximum=4096, optional=True)
        self._check_bool("channels_last", "inference_compile")
        self._check_choice("inference_precision", INFERENCE_PRECISIONS)

    def advisories(self) -> list[str]:
        """Valid but questionable combinations, as sentences.  Not logged here: a config
        is rebuilt several times per run (CLI, checkpoint hyper-parameters); the
        workflow that uses it logs each once (``log_advisories``)."""
        notes = []
        if self.num_workers > 0 and self.deterministic:
            notes.append(
                "num_workers > 0 with deterministic mode enabled may introduce "
                "non-determinism on some platforms; use num_workers=0 for strict "
                "reproducibility."
            )
        return notes

    def log_advisories(self) -> None:
        """Log each of :meth:`advisories` once, as a warning."""
        for note in self.advisories():
            logger.warning(note)
