"""Tests for ptychopinn.config: field validation, aliases, cross-field rules, JSON round
trip, immutability, torch-free import, and agreement with specs/configuration.md."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import logging
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ptychopinn.config import (
    ConfigError,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "configuration.md"
CONFIG_CLASSES = (ModelConfig, TrainingConfig, InferenceConfig, ExecutionConfig)

# Fragments of the "allowed" part of each message, by kind of rule.
INT_GE_0 = (">= 0",)
INT_GE_1 = (">= 1",)
OPT_INT_GE_1 = (">= 1", "None")
POSITIVE = ("finite", "(0.0")
OPT_POSITIVE = ("finite", "(0.0", "None")
NON_NEGATIVE = ("finite", "[0.0")
BOOL = ("true or false",)
PATH = ("path",)
BACKEND = ("pytorch",)


def bad(cls: type, name: str, value: Any, allowed: tuple[str, ...], **extra: Any) -> Any:
    return pytest.param(cls, name, value, allowed, extra, id=f"{cls.__name__}.{name}={value!r:.24}")


def bad_values(
    cls: type, names: tuple[str, ...], values: tuple[Any, ...], allowed: tuple[str, ...]
) -> list[Any]:
    return [bad(cls, n, v, allowed) for n in names for v in values]


BAD_CASES = [
    # ModelConfig
    *bad_values(ModelConfig, ("N",), (32, 65, 512, 64.0, True, "64", None), ("64", "128", "256")),
    *bad_values(ModelConfig, ("gridsize",), (0, -1, 1.5, True, "2", None), INT_GE_1),
    *bad_values(ModelConfig, ("n_filters_scale",), (0, 2.0, None), INT_GE_1),
    *bad_values(
        ModelConfig, ("model_type",), ("PINN", "unsupervised", "", None), ("pinn", "supervised")
    ),
    *bad_values(ModelConfig, ("generator",), ("UNet", "resnet", "", None), ("unet", "cnn")),
    *bad_values(
        ModelConfig,
        ("amp_activation",),
        ("tanh", "Swish", "", None, ["silu"]),
        ("sigmoid", "swish", "softplus", "relu"),
    ),
    *bad_values(
        ModelConfig,
        ("object_big", "probe_big", "probe_mask", "pad_object"),
        (1, 0, "true", None),
        BOOL,
    ),
    *bad_values(
        ModelConfig,
        ("probe_scale",),
        (0, 0.0, -1.0, math.inf, math.nan, True, "4.0", None),
        POSITIVE,
    ),
    *bad_values(
        ModelConfig,
        ("gaussian_smoothing_sigma",),
        (-1e-9, math.inf, math.nan, "0", None),
        NON_NEGATIVE,
    ),
    *bad_values(
        ModelConfig,
        ("eca_encoder", "cbam_encoder", "cbam_bottleneck", "cbam_decoder", "eca_decoder",
         "spatial_decoder"),
        (1, "true", None),
        BOOL,
    ),
    *bad_values(ModelConfig, ("decoder_spatial_kernel",), (0, 4, 7.0, None), ("odd",)),
    # TrainingConfig
    *bad_values(TrainingConfig, ("model",), (3, "pinn", None), ("ModelConfig",)),
    *bad_values(TrainingConfig, ("train_data_file", "test_data_file"), ("", 3), PATH),
    *bad_values(TrainingConfig, ("output_dir",), ("", None, 3), PATH),
    *bad_values(TrainingConfig, ("n_groups",), (0, -1, 2.5, True, "512"), OPT_INT_GE_1),
    *bad_values(TrainingConfig, ("n_subsample",), (0, -1, 2.5, True, "64"), OPT_INT_GE_1),
    *bad_values(TrainingConfig, ("init_model",), ("", 3), PATH),
    *bad_values(TrainingConfig, ("batch_size", "nepochs"), (0, -4, 1.0, None), INT_GE_1),
    *bad_values(
        TrainingConfig,
        ("nphotons",),
        (0, 0.0, -1.0, math.inf, math.nan, True, "1e6", 10**400, 1e-7, 1e16, 1e300),
        ("finite", "[1e-06, 1e+15]", "None"),
    ),
    *bad_values(TrainingConfig, ("neighbor_count",), (0, -1, 4.0), INT_GE_1),
    *bad_values(TrainingConfig, ("loss_mode",), ("MAE", "nll", None), ("poisson", "mae")),
    *bad_values(
        TrainingConfig,
        ("nll_weight", "mae_weight", "realspace_mae_weight", "realspace_weight"),
        (-1e-9, -1.0, math.inf, math.nan, True, "1", None),
        NON_NEGATIVE,
    ),
    *bad_values(
        TrainingConfig,
        ("probe_trainable", "intensity_scale_trainable", "sequential_sampling",
         "regroup_each_epoch", "augment_flips"),
        (1, "yes", None),
        BOOL,
    ),
    *bad_values(TrainingConfig, ("augment_probe_tolerance",),
                (-0.01, 1.5, math.nan, True, "0.01", None), ("finite", "[0.0", "1.0]")),
    *bad_values(TrainingConfig, ("subsample_seed",), (-1, 1.5, True, "42"), (">= 0", "None")),
    *bad_values(
        TrainingConfig,
        ("validation_fraction",),
        (-0.01, 1.0, 1.5, math.nan, True, None),
        ("finite", "[0.0", "1.0)"),
    ),
    *bad_values(TrainingConfig, ("val_seed",), (-1, 1.5, True, "42"), (">= 0", "None")),
    *bad_values(TrainingConfig, ("stage_1_epochs", "stage_2_epochs", "stage_3_epochs"),
                (-1, 1.5, True, None), INT_GE_0),
    *bad_values(TrainingConfig, ("physics_weight_schedule",), ("Cosine", "step", None),
                ("linear", "cosine", "exponential")),
    *bad_values(TrainingConfig, ("stage_3_lr_factor", "fine_tune_gamma"),
                (0, -0.1, 1.5, math.nan, None), ("(0.0", "1.0]")),
    *bad_values(TrainingConfig, ("experiment_name", "model_name"), ("", "  ", None, 3),
                ("non-empty",)),
    *bad_values(TrainingConfig, ("notes",), (None, 3), ("string",)),
    *bad_values(TrainingConfig, ("debug",), (1, "yes", None), BOOL),
    *bad_values(TrainingConfig, ("backend",), ("jax", "PyTorch", "", None), BACKEND),
    # InferenceConfig
    *bad_values(InferenceConfig, ("model_path", "test_data_file"), ("", 3), PATH),
    *bad_values(InferenceConfig, ("run_id",), ("", "  ", 3), ("MLflow run id",)),
    *bad_values(InferenceConfig, ("output_dir",), ("", None, 3), PATH),
    *bad_values(InferenceConfig, ("n_groups",), (0, 1.5, True), OPT_INT_GE_1),
    *bad_values(InferenceConfig, ("backend",), ("jax", None), BACKEND),
    *bad_values(
        InferenceConfig, ("stitch_weighting",), ("gaussian", "Uniform", None), ("uniform", "probe")
    ),
    *bad_values(InferenceConfig, ("stitch_crop_px",), (0, -1, 2.0, True), OPT_INT_GE_1),
    *bad_values(
        InferenceConfig,
        ("stitch_align_phase", "flip_x", "flip_y", "transpose", "refine_probe"),
        (1, "no", None),
        BOOL,
    ),
    *bad_values(InferenceConfig, ("refine_iterations",), (-1, 2.0, True, None), INT_GE_0),
    *bad_values(InferenceConfig, ("refine_tolerance",), (-0.1, 1.5, float("nan"), None),
                ("finite", "[0.0, 1.0]")),
    # ExecutionConfig
    *bad_values(
        ExecutionConfig,
        ("accelerator",),
        ("GPU", "xla", "", None),
        ("auto", "cpu", "gpu", "cuda", "tpu", "mps"),
    ),
    *bad_values(
        ExecutionConfig, ("devices",), (0, -1, "2", "all", 1.0, True, None), (">= 1", "auto")
    ),
    *bad_values(ExecutionConfig, ("num_nodes",), (0, -1, 2.0, True, None), INT_GE_1),
    *bad_values(
        ExecutionConfig, ("strategy",), ("fsdp", "deepspeed", None), ("auto", "ddp", "ddp_spawn")
    ),
    *bad_values(
        ExecutionConfig,
        (
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
        ),
        (1, "true", None),
        BOOL,
    ),
    *bad_values(ExecutionConfig, ("ddp_backend",), ("NCCL", "ucc", ""), ("nccl", "gloo", "mpi")),
    *bad_values(ExecutionConfig, ("check_val_every_n_epoch",), (0, -1, 2.0, None), INT_GE_1),
    *bad_values(ExecutionConfig, ("mlflow_tracking_uri",), ("", " ", 3), ("non-empty URI",)),
    *bad_values(
        ExecutionConfig,
        ("precision",),
        ("16", "fp32", None),
        ("32-true", "16-mixed", "bf16-mixed", "64-true"),
    ),
    *bad_values(ExecutionConfig, ("num_workers",), (-1, 1.5, True, None), INT_GE_0),
    *[
        bad(ExecutionConfig, "prefetch_factor", v, OPT_INT_GE_1, num_workers=2)
        for v in (0, -2, 2.5, True)
    ],
    *bad_values(
        ExecutionConfig,
        ("learning_rate",),
        (0, 0.0, -1e-3, math.inf, math.nan, True, "1e-3", None),
        POSITIVE,
    ),
    *bad_values(
        ExecutionConfig,
        ("scheduler",),
        ("default", "cosine", None),
        ("Default", "Exponential", "MultiStage", "Adaptive", "WarmupCosine"),
    ),
    *bad_values(
        ExecutionConfig,
        ("gradient_clip_val",),
        (0, 0.0, -1.0, math.inf, math.nan, True, "1"),
        OPT_POSITIVE,
    ),
    *bad_values(ExecutionConfig, ("accumulate_grad_batches",), (0, -1, 2.0, None), INT_GE_1),
    *bad_values(ExecutionConfig, ("checkpoint_save_top_k",), (-2, 1.0, True, None), (">= -1",)),
    *bad_values(ExecutionConfig, ("checkpoint_monitor",), ("", None, 3), ("non-empty",)),
    *bad_values(ExecutionConfig, ("checkpoint_mode",), ("minimum", "MIN", None), ("min", "max")),
    *bad_values(ExecutionConfig, ("early_stop_patience",), (0, -1, 10.0, True), OPT_INT_GE_1),
    *bad_values(
        ExecutionConfig,
        ("logger",),
        ("wandb", "CSV", None, False),
        ("csv", "tensorboard", "mlflow", "none"),
    ),
    *bad_values(ExecutionConfig, ("inference_batch_size",), (0, -1, 4.0, True), OPT_INT_GE_1),
    *bad_values(ExecutionConfig, ("seed",), (-1, 1.5, True, None), INT_GE_0),
    *bad_values(ExecutionConfig, ("num_threads",), (0, -2, 5000, 2.0, True, "2"),
                (">= 1", "<= 4096", "None")),
    *bad_values(ExecutionConfig, ("channels_last", "inference_compile"), (None, 1, "yes"), BOOL),
    *bad_values(ExecutionConfig, ("inference_precision",), ("16", "bf16-mixed", 32, None),
                ("32", "bf16")),
]


@pytest.mark.parametrize(("cls", "name", "value", "allowed", "extra"), BAD_CASES)
def test_bad_value_raises_config_error_naming_field_value_and_range(
    cls: type, name: str, value: Any, allowed: tuple[str, ...], extra: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**{name: value, **extra})
    message = str(info.value)
    assert f"{cls.__name__}.{name}={value!r}" in message
    for fragment in allowed:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


def test_every_field_has_a_bad_value_case() -> None:
    covered = {(case.values[0], case.values[1]) for case in BAD_CASES}
    for cls in CONFIG_CLASSES:
        for f in dataclasses.fields(cls):
            assert (cls, f.name) in covered, f"no invalid-value test for {cls.__name__}.{f.name}"


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        ModelConfig(N=65)


def good(cls: type, name: str, value: Any, stored: Any = None, **extra: Any) -> Any:
    expected = value if stored is None else stored
    return pytest.param(cls, name, value, expected, extra, id=f"{cls.__name__}.{name}={value!r}")


GOOD_CASES = [
    *[good(ModelConfig, "N", n) for n in (64, 128, 256)],
    good(ModelConfig, "gridsize", 1),
    good(ModelConfig, "gridsize", 8),
    good(ModelConfig, "n_filters_scale", 1),
    *[good(ModelConfig, "model_type", m) for m in ("pinn", "supervised")],
    *[good(ModelConfig, "generator", g) for g in ("unet", "unet_lite", "cnn")],
    *[good(ModelConfig, "amp_activation", a) for a in ("sigmoid", "swish", "softplus", "relu")],
    *[
        good(ModelConfig, n, b)
        for n in ("object_big", "probe_big", "probe_mask", "pad_object")
        for b in (True, False)
    ],
    good(ModelConfig, "probe_scale", 1e-12),
    good(ModelConfig, "probe_scale", 4, 4.0),
    good(ModelConfig, "gaussian_smoothing_sigma", 0.0),
    good(ModelConfig, "gaussian_smoothing_sigma", 0, 0.0),
    good(TrainingConfig, "train_data_file", "data/train.npz", Path("data/train.npz")),
    good(TrainingConfig, "train_data_file", Path("/abs/train.npz")),
    good(TrainingConfig, "test_data_file", "test.npz", Path("test.npz")),
    good(TrainingConfig, "output_dir", "out", Path("out")),
    good(TrainingConfig, "n_groups", 1),
    good(TrainingConfig, "batch_size", 1),
    good(TrainingConfig, "nepochs", 1),
    good(TrainingConfig, "nphotons", 1e-3),
    good(TrainingConfig, "nphotons", 1e12),
    good(TrainingConfig, "neighbor_count", 1),
    *[good(TrainingConfig, "loss_mode", m) for m in ("poisson", "mae")],
    good(TrainingConfig, "nll_weight", 0.0, mae_weight=1.0),
    good(TrainingConfig, "mae_weight", 0.0),
    good(TrainingConfig, "realspace_mae_weight", 0.0),
    good(TrainingConfig, "realspace_weight", 0.0),
    good(TrainingConfig, "subsample_seed", 0),
    good(TrainingConfig, "validation_fraction", 0.0),
    good(TrainingConfig, "validation_fraction", 0.999),
    good(TrainingConfig, "backend", "pytorch"),
    good(InferenceConfig, "model_path", "bundle.zip", Path("bundle.zip")),
    good(InferenceConfig, "n_groups", 1),
    *[good(InferenceConfig, "stitch_weighting", w) for w in ("uniform", "probe")],
    good(InferenceConfig, "stitch_crop_px", 1),
    good(InferenceConfig, "refine_iterations", 0),
    good(InferenceConfig, "refine_tolerance", 0.0),
    *[good(ExecutionConfig, "accelerator", a) for a in ("auto", "cpu", "gpu", "tpu", "mps")],
    *[good(ExecutionConfig, "devices", d) for d in (1, 8, "auto")],
    *[good(ExecutionConfig, "strategy", s) for s in ("auto", "ddp", "ddp_spawn")],
    *[
        good(ExecutionConfig, "precision", p)
        for p in ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "64")
    ],
    good(ExecutionConfig, "num_workers", 0),
    good(ExecutionConfig, "num_workers", 1, deterministic=False),
    good(ExecutionConfig, "prefetch_factor", 1, num_workers=1, deterministic=False),
    good(ExecutionConfig, "persistent_workers", True, num_workers=1, deterministic=False),
    good(ExecutionConfig, "learning_rate", 1e-12),
    *[
        good(ExecutionConfig, "scheduler", s)
        for s in ("Default", "Exponential", "MultiStage", "Adaptive", "WarmupCosine")
    ],
    good(ExecutionConfig, "gradient_clip_val", 1e-9),
    good(ExecutionConfig, "accumulate_grad_batches", 1),
    *[good(ExecutionConfig, "checkpoint_save_top_k", k) for k in (-1, 0, 1)],
    good(ExecutionConfig, "checkpoint_monitor", "train_loss"),
    *[good(ExecutionConfig, "checkpoint_mode", m) for m in ("min", "max")],
    good(ExecutionConfig, "early_stop_patience", 1),
    *[good(ExecutionConfig, "logger", g) for g in ("csv", "tensorboard", "mlflow", "none")],
    good(ExecutionConfig, "inference_batch_size", 1),
    good(ExecutionConfig, "seed", 0),
]

OPTIONAL_FIELDS = [
    (TrainingConfig, "train_data_file"),
    (TrainingConfig, "test_data_file"),
    (TrainingConfig, "n_groups"),
    (TrainingConfig, "nphotons"),
    (TrainingConfig, "subsample_seed"),
    (InferenceConfig, "model_path"),
    (InferenceConfig, "test_data_file"),
    (InferenceConfig, "n_groups"),
    (InferenceConfig, "stitch_crop_px"),
    (ExecutionConfig, "prefetch_factor"),
    (ExecutionConfig, "gradient_clip_val"),
    (ExecutionConfig, "early_stop_patience"),
    (ExecutionConfig, "inference_batch_size"),
]


@pytest.mark.parametrize(("cls", "name", "value", "expected", "extra"), GOOD_CASES)
def test_boundary_value_is_accepted_and_stored(
    cls: type, name: str, value: Any, expected: Any, extra: dict[str, Any]
) -> None:
    stored = getattr(cls(**{name: value, **extra}), name)
    assert stored == expected
    assert type(stored) is type(expected)


@pytest.mark.parametrize(("cls", "name"), OPTIONAL_FIELDS)
def test_optional_field_accepts_none(cls: type, name: str) -> None:
    assert getattr(cls(**{name: None}), name) is None


# ------------------------------------------------------------------------- aliases
@pytest.mark.parametrize("alias", ["silu", "SiLU", "SILU"])
def test_silu_is_stored_as_swish(alias: str) -> None:
    cfg = ModelConfig(amp_activation=alias)
    assert cfg.amp_activation == "swish"
    assert cfg.to_dict()["amp_activation"] == "swish"
    assert cfg == ModelConfig(amp_activation="swish")


def test_cuda_is_stored_as_gpu() -> None:
    cfg = ExecutionConfig(accelerator="cuda")
    assert cfg.accelerator == "gpu"
    assert ExecutionConfig.from_json(cfg.to_json()).accelerator == "gpu"
    assert cfg == ExecutionConfig(accelerator="gpu")


def test_model_dict_is_converted_to_model_config() -> None:
    cfg = TrainingConfig(model={"gridsize": 2, "amp_activation": "silu"})
    assert isinstance(cfg.model, ModelConfig)
    assert (cfg.model.gridsize, cfg.model.amp_activation, cfg.model.C) == (2, "swish", 4)


@pytest.mark.parametrize("cls", [TrainingConfig, InferenceConfig])
def test_tensorflow_backend_says_there_is_none(cls: type) -> None:
    with pytest.raises(ConfigError) as info:
        cls(backend="tensorflow")
    message = str(info.value)
    assert f"{cls.__name__}.backend='tensorflow'" in message
    assert "no TensorFlow backend" in message
    assert "pytorch" in message
    with pytest.raises(ConfigError, match="no TensorFlow backend"):
        cls.from_dict({"backend": "tensorflow"})


# ---------------------------------------------------------------- cross-field rules
@pytest.mark.parametrize("gridsize", [1, 2, 3, 4])
def test_neighbor_count_must_cover_the_group(gridsize: int) -> None:
    c = gridsize**2
    model = ModelConfig(gridsize=gridsize)
    assert model.C == c
    with pytest.raises(ConfigError) as info:
        TrainingConfig(model=model, neighbor_count=c - 1)
    message = str(info.value)
    assert f"TrainingConfig.neighbor_count={c - 1}" in message
    if c > 1:
        assert f"gridsize**2 = {c}" in message
    assert TrainingConfig(model=model, neighbor_count=c).neighbor_count == c


def test_default_neighbor_count_follows_gridsize() -> None:
    # One default for every gridsize (issue 13, item 9): max(4, gridsize**2), stored.
    assert TrainingConfig().neighbor_count == 4
    assert TrainingConfig(model=ModelConfig(gridsize=2)).neighbor_count == 4
    assert TrainingConfig(model=ModelConfig(gridsize=3)).neighbor_count == 9
    assert TrainingConfig(model=ModelConfig(gridsize=3)).to_dict()["neighbor_count"] == 9
    with pytest.raises(ConfigError, match=r"neighbor_count=4 .*gridsize\*\*2 = 9"):
        TrainingConfig(model=ModelConfig(gridsize=3), neighbor_count=4)


def test_cross_field_rules_of_the_new_knobs() -> None:
    with pytest.raises(ConfigError, match=r"stage_1_epochs.*exceeds nepochs = 5"):
        TrainingConfig(nepochs=5, stage_1_epochs=3, stage_2_epochs=3)
    with pytest.raises(ConfigError, match=r"stage_1_epochs.*model_type='pinn'"):
        TrainingConfig(loss_mode="mae", stage_2_epochs=1)
    with pytest.raises(ConfigError, match=r"stage_1_epochs.*model_type='pinn'"):
        TrainingConfig(model=ModelConfig(model_type="supervised"), stage_3_epochs=1)
    assert TrainingConfig(nepochs=6, stage_1_epochs=2, stage_2_epochs=2, stage_3_epochs=2)
    with pytest.raises(ConfigError, match=r"ExecutionConfig.num_nodes=2.*strategy='ddp'"):
        ExecutionConfig(num_nodes=2)
    assert ExecutionConfig(num_nodes=2, strategy="ddp").num_nodes == 2
    with pytest.raises(ConfigError, match=r"ExecutionConfig.ddp_backend='nccl'.*gloo"):
        ExecutionConfig(accelerator="cpu", ddp_backend="nccl")
    with pytest.raises(ConfigError, match=r"InferenceConfig.run_id='r'.*not both"):
        InferenceConfig(model_path="m.zip", run_id="r")


def test_pinn_poisson_needs_a_nonzero_nll_or_mae_weight() -> None:
    with pytest.raises(ConfigError, match=r"TrainingConfig\.nll_weight=0.*both be 0"):
        TrainingConfig(nll_weight=0.0, mae_weight=0.0)
    assert TrainingConfig(nll_weight=0.0, mae_weight=0.5).mae_weight == 0.5
    assert TrainingConfig(nll_weight=0.0, mae_weight=0.0, loss_mode="mae").loss_mode == "mae"
    supervised = ModelConfig(model_type="supervised")
    assert TrainingConfig(model=supervised, nll_weight=0.0, mae_weight=0.0).nll_weight == 0.0


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"persistent_workers": True}, "persistent_workers"),
        ({"prefetch_factor": 2}, "prefetch_factor"),
    ],
)
def test_worker_options_need_workers(changes: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExecutionConfig(num_workers=0, **changes)
    message = str(info.value)
    assert f"ExecutionConfig.{name}=" in message
    assert "num_workers > 0" in message
    cfg = ExecutionConfig(num_workers=1, deterministic=False, **changes)
    assert getattr(cfg, name) == changes[name]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "ptychopinn.config" and r.levelno == logging.WARNING
    ]


def test_workers_with_deterministic_logs_a_warning_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ptychopinn.config")
    config = ExecutionConfig(num_workers=2, deterministic=True)
    # Building (and rebuilding) a config is silent: a run rebuilds it several times.
    ExecutionConfig.from_dict(config.to_dict())
    assert _warnings(caplog) == []
    (note,) = config.advisories()
    assert "num_workers" in note and "determinis" in note
    config.log_advisories()
    records = _warnings(caplog)
    assert [r.getMessage() for r in records] == [note]
    assert ExecutionConfig(num_workers=2, deterministic=False).advisories() == []
    assert ExecutionConfig(num_workers=0, deterministic=True).advisories() == []


# ------------------------------------------------------------------ serialisation
def _samples(tmp: Path) -> dict[type, Any]:
    """One config per class with a non-default value in every field that has more than
    one allowed value."""
    model = ModelConfig(
        N=128,
        gridsize=2,
        n_filters_scale=3,
        model_type="supervised",
        generator="cnn",
        amp_activation="softplus",
        object_big=False,
        probe_big=False,
        probe_mask=True,
        pad_object=False,
        probe_scale=2.5,
        gaussian_smoothing_sigma=0.75,
        eca_encoder=True,
        cbam_encoder=True,
        cbam_bottleneck=True,
        cbam_decoder=True,
        eca_decoder=True,
        spatial_decoder=True,
        decoder_spatial_kernel=3,
    )
    training = TrainingConfig(
        model=model,
        train_data_file=tmp / "train set.npz",
        test_data_file="relative/test.npz",
        n_groups=None,
        n_subsample=100,
        batch_size=8,
        nepochs=3,
        nphotons=1e9,
        neighbor_count=7,
        loss_mode="mae",
        nll_weight=0.25,
        mae_weight=0.1,
        realspace_mae_weight=0.3,
        realspace_weight=1 / 3,
        probe_trainable=True,
        intensity_scale_trainable=False,
        subsample_seed=None,
        sequential_sampling=True,
        augment_flips=True,
        augment_probe_tolerance=0.05,
        validation_fraction=0.0,
        val_seed=None,
        physics_weight_schedule="linear",
        stage_3_lr_factor=0.5,
        init_model=tmp / "parent.zip",
        fine_tune_gamma=0.25,
        experiment_name="tests",
        notes="a note",
        model_name="tiny",
        debug=True,
        output_dir=tmp / "out",
    )
    inference = InferenceConfig(
        model_path=None,
        run_id="0123abcd",
        test_data_file="test.npz",
        n_groups=10,
        output_dir=Path("recon"),
        stitch_weighting="uniform",
        stitch_crop_px=20,
        stitch_align_phase=False,
        flip_x=True,
        flip_y=True,
        transpose=True,
        refine_iterations=0,
        refine_tolerance=0.05,
        refine_probe=True,
    )
    execution = ExecutionConfig(
        accelerator="cpu",
        devices="auto",
        num_nodes=2,
        strategy="ddp",
        ddp_find_unused_parameters=True,
        ddp_static_graph=False,
        ddp_gradient_as_bucket_view=False,
        ddp_backend="gloo",
        deterministic=False,
        precision="bf16-mixed",
        num_workers=3,
        pin_memory=True,
        persistent_workers=True,
        prefetch_factor=2,
        drop_last=True,
        learning_rate=2.5e-4,
        scale_lr_with_batch=True,
        scheduler="WarmupCosine",
        gradient_clip_val=0.5,
        accumulate_grad_batches=2,
        enable_progress_bar=False,
        check_val_every_n_epoch=3,
        enable_checkpointing=False,
        checkpoint_save_top_k=-1,
        checkpoint_monitor="train_loss",
        checkpoint_mode="max",
        early_stop_patience=None,
        logger="none",
        mlflow_tracking_uri="http://tracking.example:5000",
        inference_batch_size=64,
        seed=7,
        num_threads=3,
        channels_last=False,
        inference_precision="bf16",
        inference_compile=True,
    )
    return {
        ModelConfig: model,
        TrainingConfig: training,
        InferenceConfig: inference,
        ExecutionConfig: execution,
    }


SINGLE_VALUED = {"backend"}  # only "pytorch" is allowed, so no non-default value exists
# Stages need a pinn/poisson model, regrouping needs random sampling and the inference
# sample names a run id instead of a path; STAGED, REGROUPED and the run-id-free sample
# below set these fields.
ELSEWHERE = {"stage_1_epochs", "stage_2_epochs", "stage_3_epochs", "model_path",
             "regroup_each_epoch"}
STAGED = TrainingConfig(nepochs=9, stage_1_epochs=2, stage_2_epochs=3, stage_3_epochs=4)
REGROUPED = TrainingConfig(model=ModelConfig(gridsize=2), neighbor_count=6,
                           regroup_each_epoch=True)


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_samples_set_every_field_to_a_non_default(cls: type, tmp_path: Path) -> None:
    sample = _samples(tmp_path)[cls]
    default = cls()
    for f in dataclasses.fields(cls):
        if f.name not in SINGLE_VALUED | ELSEWHERE:
            assert getattr(sample, f.name) != getattr(default, f.name), f.name
    for name in ("stage_1_epochs", "stage_2_epochs", "stage_3_epochs"):
        assert getattr(STAGED, name) != getattr(TrainingConfig(), name)
    assert TrainingConfig.from_json(STAGED.to_json()) == STAGED
    assert REGROUPED.regroup_each_epoch != TrainingConfig().regroup_each_epoch
    assert TrainingConfig.from_json(REGROUPED.to_json()) == REGROUPED
    assert InferenceConfig(model_path=tmp_path / "m.zip").model_path != InferenceConfig().model_path


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_json_round_trip_is_exact(cls: type, tmp_path: Path) -> None:
    cfg = _samples(tmp_path)[cls]
    text = cfg.to_json()
    back = cls.from_json(text)
    assert back == cfg
    assert back is not cfg
    for f in dataclasses.fields(cls):
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name
    assert back.to_json() == text
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_dict(json.loads(text)) == cfg


def test_json_form_of_paths_and_nested_model(tmp_path: Path) -> None:
    cfg = _samples(tmp_path)[TrainingConfig]
    data = json.loads(cfg.to_json())
    assert data["train_data_file"] == str(tmp_path / "train set.npz")
    assert data["test_data_file"] == "relative/test.npz"
    assert data["output_dir"] == str(tmp_path / "out")
    assert data["model"] == cfg.model.to_dict()
    assert data["model"]["N"] == 128
    assert data["n_groups"] is None
    back = TrainingConfig.from_json(cfg.to_json())
    assert isinstance(back.model, ModelConfig)
    assert isinstance(back.train_data_file, Path)
    assert back.realspace_weight == 1 / 3  # floats survive bit for bit


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_from_dict_of_nothing_gives_defaults(cls: type) -> None:
    assert cls.from_dict({}) == cls()
    assert cls.from_json(cls().to_json()) == cls()


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_from_dict_rejects_unknown_keys(cls: type) -> None:
    good_key = dataclasses.fields(cls)[0].name
    with pytest.raises(ConfigError) as info:
        cls.from_dict({good_key: getattr(cls(), good_key), "bogus_key": 1})
    message = str(info.value)
    assert cls.__name__ in message
    assert "bogus_key" in message
    assert good_key in message  # the known fields are listed


def test_from_dict_rejects_unknown_keys_in_nested_model() -> None:
    with pytest.raises(ConfigError, match=r"ModelConfig: unknown field\(s\) gridsize_typo"):
        TrainingConfig.from_dict({"model": {"gridsize_typo": 2}})


def test_from_dict_does_not_coerce_strings() -> None:
    with pytest.raises(ConfigError, match=r"TrainingConfig\.batch_size='16'"):
        TrainingConfig.from_dict({"batch_size": "16"})


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
@pytest.mark.parametrize("text", ["{not json", "", '{"N": 64,}'])
def test_from_json_rejects_bad_json(cls: type, text: str) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__}: not valid JSON"):
        cls.from_json(text)


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
@pytest.mark.parametrize("text", ["[1, 2]", "null", "64", '"pinn"'])
def test_from_json_rejects_non_objects(cls: type, text: str) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__}: expected a mapping"):
        cls.from_json(text)


# -------------------------------------------------------------------- immutability
@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_configs_are_frozen(cls: type, tmp_path: Path) -> None:
    cfg = _samples(tmp_path)[cls]
    before = cfg.to_dict()
    for f in dataclasses.fields(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, f.name, getattr(cls(), f.name))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(cfg, f.name)
    assert cfg.to_dict() == before
    assert hash(cfg) == hash(cls.from_dict(before))


def test_nested_model_is_frozen_too() -> None:
    cfg = TrainingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.gridsize = 2  # type: ignore[misc]
    assert cfg.model.gridsize == 1


def test_replace_returns_a_validated_copy() -> None:
    cfg = TrainingConfig()
    changed = cfg.replace(batch_size=2, output_dir="elsewhere")
    assert (changed.batch_size, changed.output_dir) == (2, Path("elsewhere"))
    assert (cfg.batch_size, cfg.output_dir) == (16, Path("training_outputs"))
    with pytest.raises(ConfigError, match=r"TrainingConfig\.batch_size=0"):
        cfg.replace(batch_size=0)
    with pytest.raises(ConfigError, match=r"neighbor_count=4"):
        cfg.replace(model=ModelConfig(gridsize=3))


# ------------------------------------------------------------------ torch-free import
TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = ("torch", "lightning", "pytorch_lightning", "tensorflow")

    class Blocker:
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                Blocker.attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test)")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        sys.modules.pop(name, None)

    import ptychopinn
    import ptychopinn.config as config

    names = sorted(m.name for m in pkgutil.walk_packages(ptychopinn.__path__, "ptychopinn."))
    for name in names:
        importlib.import_module(name)
    # Using the configs must not pull in a backend either.
    for cls in (config.ModelConfig, config.TrainingConfig, config.InferenceConfig,
                config.ExecutionConfig):
        assert cls.from_json(cls().to_json()) == cls()
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print(json.dumps({"modules": names, "attempts": Blocker.attempts, "loaded": loaded}))
    """
)


def test_ptychopinn_imports_without_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ptychopinn.config" in report["modules"]
    assert report["attempts"] == [], f"tried to import {report['attempts']}"
    assert report["loaded"] == []


# -------------------------------------------------- agreement with the written spec
def _spec_rows(class_name: str) -> dict[str, list[str]]:
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(rf"^### {class_name}\n(.*?)(?=^#)", text, flags=re.M | re.S)
    assert match, f"no '### {class_name}' section in {SPEC}"
    rows: dict[str, list[str]] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        name = re.fullmatch(r"`(\w+)`", cells[0]) if cells else None
        if name:
            rows[name.group(1)] = [c.replace("\\|", "|") for c in cells]
    return rows


def _spec_default(cell: str) -> Any:
    code = cell.strip("`")
    path = re.fullmatch(r'Path\("(.*)"\)', code)
    if path:
        return Path(path.group(1))
    if code == "ModelConfig()":
        return ModelConfig()
    return ast.literal_eval(code)


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_spec_table_matches_fields_types_and_defaults(cls: type) -> None:
    rows = _spec_rows(cls.__name__)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert list(rows) == list(fields), "spec rows must list every field, in order"
    for name, f in fields.items():
        _, type_cell, default_cell, *_ = rows[name]
        assert type_cell.strip("`") == f.type, name
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert _spec_default(default_cell) == default, name


def _spec_flags(section: str) -> list[str]:
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(section)
    table = text[start:].split("\n\n", 2)[1]
    return [
        f for line in table.splitlines()[2:] for f in re.findall(r"`(--[\w-]+)", line.split("|")[1])
    ]


@pytest.mark.parametrize(
    ("module", "section", "legacy"),
    [
        (
            "ptychopinn.cli.train",
            "Training,\n`ptychopinn train`",
            ["--device", "--disable_mlflow"],
        ),
        (
            "ptychopinn.cli.infer",
            "Inference, `ptychopinn infer`",
            ["--device"],
        ),
    ],
)
def test_spec_flags_exist_on_the_command_line(module: str, section: str, legacy: list[str]) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            pytest.skip(f"{module} is not written yet")
        raise
    build_parser = getattr(mod, "build_parser", None)
    if build_parser is None:
        pytest.skip(f"{module} has no build_parser()")
    known = set(build_parser()._option_string_actions)
    flags = _spec_flags(section)
    assert len(flags) >= 8
    missing = [f for f in flags + legacy if f not in known]
    assert missing == [], f"{module} lacks {missing}"

