"""PtychoPINN settings groups in Ptychodus's SettingsRegistry and the settings -> configs map.

Four groups are registered (section names in a Ptychodus ``settings.ini``):
``PINNModel``, ``PINNTraining``, ``PINNInference`` and ``PINNExecution``. They are shared
by the ``PINN`` and ``Supervised`` reconstructors; the reconstructor supplies the model
type. Ptychodus parameters cannot hold ``None``, so optional config fields use a sentinel
that is documented on each parameter (0, or -1 for seeds) and mapped to ``None`` in
:func:`settings_to_configs`, the one place where settings become configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ptychodus.api.observer import Observable, Observer
from ptychodus.api.settings import SettingsRegistry

from ptychopinn.config import (
    ACCELERATORS,
    AMP_ACTIVATIONS,
    CHECKPOINT_MODES,
    GENERATORS,
    LOGGERS,
    LOSS_MODES,
    MODEL_TYPES,
    PRECISIONS,
    SCHEDULERS,
    STITCH_WEIGHTINGS,
    STRATEGIES,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

__all__ = [
    'AMP_ACTIVATIONS',
    'ACCELERATORS',
    'BAD_PIXEL_MODES',
    'CHECKPOINT_MODES',
    'GENERATORS',
    'LOGGERS',
    'LOSS_MODES',
    'MODEL_TYPES',
    'PRECISIONS',
    'SCHEDULERS',
    'STITCH_WEIGHTINGS',
    'STRATEGIES',
    'PtychoPINNExecutionSettings',
    'PtychoPINNInferenceSettings',
    'PtychoPINNModelSettings',
    'PtychoPINNSettings',
    'PtychoPINNTrainingSettings',
    'execution_config_from_settings',
    'inference_config_from_settings',
    'model_config_from_settings',
    'settings_to_configs',
    'training_config_from_settings',
]

# Choices offered in the GUI come from the configs, which validate them again.
BAD_PIXEL_MODES: Sequence[str] = ('inpaint', 'zero')

_INT_MAX = 0x7FFFFFFF  # Qt spin boxes are 32-bit


class _SettingsGroup(Observable, Observer):
    """A named parameter group that forwards its changes to its own observers."""

    GROUP_NAME = ''

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__()
        self._group = registry.create_group(self.GROUP_NAME)
        self._group.add_observer(self)

    def _update(self, observable: Observable) -> None:
        if observable is self._group:
            self.notify_observers()


class PtychoPINNModelSettings(_SettingsGroup):
    """Architecture settings (``[PINNModel]``). N comes from the data or the bundle."""

    GROUP_NAME = 'PINNModel'

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__(registry)
        g = self._group
        self.gridsize = g.create_integer_parameter('GridSize', 1, minimum=1, maximum=8)
        self.n_filters_scale = g.create_integer_parameter(
            'NumFiltersScale', 2, minimum=1, maximum=16
        )
        self.generator = g.create_string_parameter('Generator', 'unet')
        self.amp_activation = g.create_string_parameter('AmpActivation', 'sigmoid')
        self.object_big = g.create_boolean_parameter('ObjectBig', True)
        self.probe_big = g.create_boolean_parameter('ProbeBig', True)
        self.probe_mask = g.create_boolean_parameter('ProbeMask', False)
        self.pad_object = g.create_boolean_parameter('PadObject', True)
        self.probe_scale = g.create_real_parameter('ProbeScale', 4.0, minimum=1e-6)
        self.gaussian_smoothing_sigma = g.create_real_parameter(
            'GaussianSmoothingSigma', 0.0, minimum=0.0
        )
        self.eca_encoder = g.create_boolean_parameter('ECAEncoder', False)
        self.cbam_encoder = g.create_boolean_parameter('CBAMEncoder', False)
        self.cbam_bottleneck = g.create_boolean_parameter('CBAMBottleneck', False)
        self.cbam_decoder = g.create_boolean_parameter('CBAMDecoder', False)
        self.eca_decoder = g.create_boolean_parameter('ECADecoder', False)
        self.spatial_decoder = g.create_boolean_parameter('SpatialDecoder', False)
        self.decoder_spatial_kernel = g.create_integer_parameter(
            'DecoderSpatialKernel', 7, minimum=1, maximum=63
        )


class PtychoPINNTrainingSettings(_SettingsGroup):
    """Training settings (``[PINNTraining]``).

    Sentinels: ``NumGroups = 0`` is one group per scan position, ``NumSubsample = 0``
    keeps every position, ``NumPhotons = 0`` takes the photon count from the data,
    ``SubsampleSeed = -1`` and ``ValSeed = -1`` are unseeded.
    """

    GROUP_NAME = 'PINNTraining'

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__(registry)
        g = self._group
        self.n_groups = g.create_integer_parameter('NumGroups', 512, minimum=0, maximum=_INT_MAX)
        self.batch_size = g.create_integer_parameter('BatchSize', 16, minimum=1, maximum=_INT_MAX)
        self.nepochs = g.create_integer_parameter('NumEpochs', 50, minimum=1, maximum=_INT_MAX)
        self.nphotons = g.create_real_parameter('NumPhotons', 0.0, minimum=0.0)
        self.neighbor_count = g.create_integer_parameter(
            'NeighborCount', 4, minimum=1, maximum=_INT_MAX
        )
        self.loss_mode = g.create_string_parameter('LossMode', 'poisson')
        self.nll_weight = g.create_real_parameter('NLLWeight', 1.0, minimum=0.0)
        self.mae_weight = g.create_real_parameter('MAEWeight', 0.0, minimum=0.0)
        self.realspace_mae_weight = g.create_real_parameter('RealspaceMAEWeight', 0.0, minimum=0.0)
        self.realspace_weight = g.create_real_parameter('RealspaceWeight', 0.0, minimum=0.0)
        self.probe_trainable = g.create_boolean_parameter('ProbeTrainable', False)
        self.intensity_scale_trainable = g.create_boolean_parameter(
            'IntensityScaleTrainable', True
        )
        self.subsample_seed = g.create_integer_parameter(
            'SubsampleSeed', 42, minimum=-1, maximum=_INT_MAX
        )
        self.sequential_sampling = g.create_boolean_parameter('SequentialSampling', False)
        self.validation_fraction = g.create_real_parameter(
            'ValidationFraction', 0.05, minimum=0.0, maximum=0.9
        )
        self.n_subsample = g.create_integer_parameter(
            'NumSubsample', 0, minimum=0, maximum=_INT_MAX
        )
        self.val_seed = g.create_integer_parameter('ValSeed', 42, minimum=-1, maximum=_INT_MAX)
        self.stage_1_epochs = g.create_integer_parameter(
            'Stage1Epochs', 0, minimum=0, maximum=_INT_MAX
        )
        self.stage_2_epochs = g.create_integer_parameter(
            'Stage2Epochs', 0, minimum=0, maximum=_INT_MAX
        )
        self.stage_3_epochs = g.create_integer_parameter(
            'Stage3Epochs', 0, minimum=0, maximum=_INT_MAX
        )
        self.physics_weight_schedule = g.create_string_parameter(
            'PhysicsWeightSchedule', 'cosine'
        )
        self.stage_3_lr_factor = g.create_real_parameter(
            'Stage3LRFactor', 0.1, minimum=1e-6, maximum=1.0
        )
        self.experiment_name = g.create_string_parameter('ExperimentName', 'Synthetic_Runs')
        self.notes = g.create_string_parameter('Notes', '')
        self.model_name = g.create_string_parameter('ModelName', 'PtychoPINNv2')


class PtychoPINNInferenceSettings(_SettingsGroup):
    """Inference and data-preparation settings (``[PINNInference]``).

    Sentinels: ``NumGroups = 0`` reconstructs every scan position, ``StitchCropPx = 0``
    keeps the default central N/2 region. ``BadPixelMode`` (``inpaint`` | ``zero``) also
    applies to Export Training Data, so training and inference see the same repair.
    """

    GROUP_NAME = 'PINNInference'

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__(registry)
        g = self._group
        self.n_groups = g.create_integer_parameter('NumGroups', 0, minimum=0, maximum=_INT_MAX)
        self.stitch_weighting = g.create_string_parameter('StitchWeighting', 'uniform')
        self.stitch_crop_px = g.create_integer_parameter(
            'StitchCropPx', 0, minimum=0, maximum=4096
        )
        self.stitch_align_phase = g.create_boolean_parameter('StitchAlignPhase', True)
        self.flip_x = g.create_boolean_parameter('FlipX', False)
        self.flip_y = g.create_boolean_parameter('FlipY', False)
        self.transpose = g.create_boolean_parameter('Transpose', False)
        self.bad_pixel_mode = g.create_string_parameter('BadPixelMode', 'inpaint')


class PtychoPINNExecutionSettings(_SettingsGroup):
    """Runtime settings (``[PINNExecution]``).

    ``Devices`` is a count (``1``) or a Lightning device string (``auto``, ``0,1``).
    Sentinels: 0 means unset for ``PrefetchFactor``, ``GradientClipVal``,
    ``EarlyStopPatience`` and ``InferenceBatchSize``; an empty ``MLflowTrackingURI`` is
    the local store under the output directory. The Lightning text progress bar is
    off by default because Ptychodus shows its own progress.
    """

    GROUP_NAME = 'PINNExecution'

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__(registry)
        g = self._group
        self.accelerator = g.create_string_parameter('Accelerator', 'auto')
        self.devices = g.create_string_parameter('Devices', '1')
        self.strategy = g.create_string_parameter('Strategy', 'auto')
        self.deterministic = g.create_boolean_parameter('Deterministic', True)
        self.precision = g.create_string_parameter('Precision', '32-true')
        self.num_workers = g.create_integer_parameter('NumWorkers', 0, minimum=0, maximum=1024)
        self.pin_memory = g.create_boolean_parameter('PinMemory', False)
        self.persistent_workers = g.create_boolean_parameter('PersistentWorkers', False)
        self.prefetch_factor = g.create_integer_parameter(
            'PrefetchFactor', 0, minimum=0, maximum=1024
        )
        self.learning_rate = g.create_real_parameter('LearningRate', 1e-3, minimum=0.0)
        self.scheduler = g.create_string_parameter('Scheduler', 'Default')
        self.gradient_clip_val = g.create_real_parameter('GradientClipVal', 0.0, minimum=0.0)
        self.accumulate_grad_batches = g.create_integer_parameter(
            'AccumulateGradBatches', 1, minimum=1, maximum=_INT_MAX
        )
        self.enable_progress_bar = g.create_boolean_parameter('EnableProgressBar', False)
        self.check_val_every_n_epoch = g.create_integer_parameter(
            'CheckValEveryNEpoch', 1, minimum=1, maximum=_INT_MAX
        )
        self.drop_last = g.create_boolean_parameter('DropLast', False)
        self.scale_lr_with_batch = g.create_boolean_parameter('ScaleLRWithBatch', False)
        self.mlflow_tracking_uri = g.create_string_parameter('MLflowTrackingURI', '')
        self.enable_checkpointing = g.create_boolean_parameter('EnableCheckpointing', True)
        self.checkpoint_save_top_k = g.create_integer_parameter(
            'CheckpointSaveTopK', 1, minimum=-1, maximum=_INT_MAX
        )
        self.checkpoint_monitor = g.create_string_parameter('CheckpointMonitor', 'val_loss')
        self.checkpoint_mode = g.create_string_parameter('CheckpointMode', 'min')
        self.early_stop_patience = g.create_integer_parameter(
            'EarlyStopPatience', 100, minimum=0, maximum=_INT_MAX
        )
        self.logger = g.create_string_parameter('Logger', 'csv')
        self.inference_batch_size = g.create_integer_parameter(
            'InferenceBatchSize', 0, minimum=0, maximum=_INT_MAX
        )
        self.seed = g.create_integer_parameter('Seed', 42, minimum=0, maximum=_INT_MAX)


@dataclass(frozen=True)
class PtychoPINNSettings:
    """The four PtychoPINN groups, registered together in one SettingsRegistry."""

    model: PtychoPINNModelSettings
    training: PtychoPINNTrainingSettings
    inference: PtychoPINNInferenceSettings
    execution: PtychoPINNExecutionSettings

    @classmethod
    def create(cls, registry: SettingsRegistry) -> PtychoPINNSettings:
        return cls(
            model=PtychoPINNModelSettings(registry),
            training=PtychoPINNTrainingSettings(registry),
            inference=PtychoPINNInferenceSettings(registry),
            execution=PtychoPINNExecutionSettings(registry),
        )


def _none_if_zero(value: float) -> float | None:
    return None if value == 0 else value


def _parse_devices(text: str) -> int | str:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


def model_config_from_settings(
    settings: PtychoPINNSettings, *, model_type: str, N: int  # noqa: N803
) -> ModelConfig:
    """The ModelConfig part of :func:`settings_to_configs`."""
    m = settings.model
    return ModelConfig(
        N=N,
        gridsize=m.gridsize.get_value(),
        n_filters_scale=m.n_filters_scale.get_value(),
        generator=m.generator.get_value(),
        model_type=model_type,
        amp_activation=m.amp_activation.get_value(),
        object_big=m.object_big.get_value(),
        probe_big=m.probe_big.get_value(),
        probe_mask=m.probe_mask.get_value(),
        pad_object=m.pad_object.get_value(),
        probe_scale=m.probe_scale.get_value(),
        gaussian_smoothing_sigma=m.gaussian_smoothing_sigma.get_value(),
        eca_encoder=m.eca_encoder.get_value(),
        cbam_encoder=m.cbam_encoder.get_value(),
        cbam_bottleneck=m.cbam_bottleneck.get_value(),
        cbam_decoder=m.cbam_decoder.get_value(),
        eca_decoder=m.eca_decoder.get_value(),
        spatial_decoder=m.spatial_decoder.get_value(),
        decoder_spatial_kernel=m.decoder_spatial_kernel.get_value(),
    )


def training_config_from_settings(
    settings: PtychoPINNSettings,
    model_config: ModelConfig,
    *,
    train_data_file: Path | None = None,
    test_data_file: Path | None = None,
    output_dir: Path = Path('training_outputs'),
) -> TrainingConfig:
    """The TrainingConfig part of :func:`settings_to_configs`."""
    t = settings.training
    seed = t.subsample_seed.get_value()
    nphotons = t.nphotons.get_value()
    return TrainingConfig(
        model=model_config,
        train_data_file=train_data_file,
        test_data_file=test_data_file,
        n_groups=_none_if_zero(t.n_groups.get_value()),
        batch_size=t.batch_size.get_value(),
        nepochs=t.nepochs.get_value(),
        nphotons=None if nphotons == 0.0 else nphotons,
        neighbor_count=t.neighbor_count.get_value(),
        loss_mode=t.loss_mode.get_value(),
        nll_weight=t.nll_weight.get_value(),
        mae_weight=t.mae_weight.get_value(),
        realspace_mae_weight=t.realspace_mae_weight.get_value(),
        realspace_weight=t.realspace_weight.get_value(),
        probe_trainable=t.probe_trainable.get_value(),
        intensity_scale_trainable=t.intensity_scale_trainable.get_value(),
        subsample_seed=None if seed < 0 else seed,
        sequential_sampling=t.sequential_sampling.get_value(),
        validation_fraction=t.validation_fraction.get_value(),
        n_subsample=_none_if_zero(t.n_subsample.get_value()),
        val_seed=None if t.val_seed.get_value() < 0 else t.val_seed.get_value(),
        stage_1_epochs=t.stage_1_epochs.get_value(),
        stage_2_epochs=t.stage_2_epochs.get_value(),
        stage_3_epochs=t.stage_3_epochs.get_value(),
        physics_weight_schedule=t.physics_weight_schedule.get_value(),
        stage_3_lr_factor=t.stage_3_lr_factor.get_value(),
        experiment_name=t.experiment_name.get_value(),
        notes=t.notes.get_value(),
        model_name=t.model_name.get_value(),
        output_dir=Path(output_dir),
        backend='pytorch',
    )


def inference_config_from_settings(
    settings: PtychoPINNSettings,
    *,
    model_path: Path | None = None,
    output_dir: Path = Path('inference_outputs'),
) -> InferenceConfig:
    """The InferenceConfig part of :func:`settings_to_configs`."""
    i = settings.inference
    return InferenceConfig(
        model_path=model_path,
        test_data_file=None,
        n_groups=_none_if_zero(i.n_groups.get_value()),
        output_dir=Path(output_dir),
        backend='pytorch',
        stitch_weighting=i.stitch_weighting.get_value(),
        stitch_crop_px=_none_if_zero(i.stitch_crop_px.get_value()),
        stitch_align_phase=i.stitch_align_phase.get_value(),
        flip_x=i.flip_x.get_value(),
        flip_y=i.flip_y.get_value(),
        transpose=i.transpose.get_value(),
    )


def execution_config_from_settings(settings: PtychoPINNSettings) -> ExecutionConfig:
    """The ExecutionConfig part of :func:`settings_to_configs`."""
    e = settings.execution
    return ExecutionConfig(
        accelerator=e.accelerator.get_value(),
        devices=_parse_devices(e.devices.get_value()),
        strategy=e.strategy.get_value(),
        deterministic=e.deterministic.get_value(),
        precision=e.precision.get_value(),
        num_workers=e.num_workers.get_value(),
        pin_memory=e.pin_memory.get_value(),
        persistent_workers=e.persistent_workers.get_value(),
        prefetch_factor=_none_if_zero(e.prefetch_factor.get_value()),
        learning_rate=e.learning_rate.get_value(),
        scheduler=e.scheduler.get_value(),
        gradient_clip_val=_none_if_zero(e.gradient_clip_val.get_value()),
        accumulate_grad_batches=e.accumulate_grad_batches.get_value(),
        enable_progress_bar=e.enable_progress_bar.get_value(),
        check_val_every_n_epoch=e.check_val_every_n_epoch.get_value(),
        drop_last=e.drop_last.get_value(),
        scale_lr_with_batch=e.scale_lr_with_batch.get_value(),
        mlflow_tracking_uri=e.mlflow_tracking_uri.get_value() or None,
        enable_checkpointing=e.enable_checkpointing.get_value(),
        checkpoint_save_top_k=e.checkpoint_save_top_k.get_value(),
        checkpoint_monitor=e.checkpoint_monitor.get_value(),
        checkpoint_mode=e.checkpoint_mode.get_value(),
        early_stop_patience=_none_if_zero(e.early_stop_patience.get_value()),
        logger=e.logger.get_value(),
        inference_batch_size=_none_if_zero(e.inference_batch_size.get_value()),
        seed=e.seed.get_value(),
    )


def settings_to_configs(
    settings: PtychoPINNSettings,
    *,
    model_type: str,
    N: int,  # noqa: N803 (the physics name)
    train_data_file: Path | None = None,
    test_data_file: Path | None = None,
    training_output_dir: Path = Path('training_outputs'),
    model_path: Path | None = None,
    inference_output_dir: Path = Path('inference_outputs'),
) -> tuple[ModelConfig, TrainingConfig, InferenceConfig, ExecutionConfig]:
    """Map the current Ptychodus settings to the four PtychoPINN configs.

    Pure: reads the parameter values and builds new frozen configs, nothing else.
    ``model_type`` (``pinn`` | ``supervised``) comes from the reconstructor and ``N``
    (pattern side, pixels) from the training data or the loaded bundle; the paths are
    filled in by the caller. Sentinels map to ``None`` (see the group docstrings);
    ``Devices`` becomes an int when it is a number. Invalid values raise the configs'
    own ``ValueError`` naming the field.
    """
    model_config = model_config_from_settings(settings, model_type=model_type, N=N)
    training_config = training_config_from_settings(
        settings,
        model_config,
        train_data_file=train_data_file,
        test_data_file=test_data_file,
        output_dir=training_output_dir,
    )
    inference_config = inference_config_from_settings(
        settings, model_path=model_path, output_dir=inference_output_dir
    )
    execution_config = execution_config_from_settings(settings)
    return model_config, training_config, inference_config, execution_config
