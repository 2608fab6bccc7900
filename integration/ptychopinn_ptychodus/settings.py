"""PtychoPINN settings groups in Ptychodus's SettingsRegistry and the settings -> configs map.

Every setting is one :class:`Setting` entry of :data:`SETTINGS`: its settings-file key and
section, default, range or choices, the config field it sets, the sentinel that means
``None``, its label and one-sentence tooltip in the GUI panel, and when it has no effect.
The groups, :func:`settings_to_configs` and the panel (``view.py``) are all built from that
table, so adding a setting is one entry (plus the config field it maps to).

Four groups are registered (section names in a Ptychodus ``settings.ini``):
``PINNModel``, ``PINNTraining``, ``PINNInference`` and ``PINNExecution``. They are shared
by the ``PINN`` and ``Supervised`` reconstructors; the reconstructor supplies the model
type. Ptychodus parameters cannot hold ``None``, so optional config fields use a sentinel
(0, -1 for the seeds, empty text for the MLflow tracking URI) that
:func:`settings_to_configs` maps to ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptychodus.api.observer import Observable, Observer
from ptychodus.api.parameters import Parameter
from ptychodus.api.settings import SettingsRegistry

from ptychopinn.config import (
    ACCELERATORS,
    AMP_ACTIVATIONS,
    CHECKPOINT_MODES,
    GENERATORS,
    INFERENCE_PRECISIONS,
    LEARNING_RATE,
    LOGGERS,
    LOSS_MODES,
    MODEL_TYPES,
    PHYSICS_WEIGHT_SCHEDULES,
    PRECISIONS,
    SCHEDULERS,
    STITCH_WEIGHTINGS,
    STRATEGIES,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    logged_metric_names,
)

__all__ = [
    'BAD_PIXEL_MODES',
    'SECTIONS',
    'SETTINGS',
    'PtychoPINNExecutionSettings',
    'PtychoPINNInferenceSettings',
    'PtychoPINNModelSettings',
    'PtychoPINNSettings',
    'PtychoPINNTrainingSettings',
    'Setting',
    'checkpoint_metric_choices',
    'execution_config_from_settings',
    'inference_config_from_settings',
    'model_config_from_settings',
    'settings_in',
    'settings_to_configs',
    'training_config_from_settings',
]

BAD_PIXEL_MODES: Sequence[str] = ('inpaint', 'zero')
"""Repair of masked detector pixels (not a config field; see specs/reconstructor_api.md)."""

_INT_MAX = 0x7FFFFFFF  # Qt spin boxes are 32-bit

SECTIONS: dict[str, str] = {
    'PINNModel': 'Model',
    'PINNTraining': 'Training',
    'PINNInference': 'Inference',
    'PINNExecution': 'Execution',
}
"""Settings-file section -> panel group title, in panel order."""

NoEffect = Callable[['PtychoPINNSettings', str], str]
"""``(settings, model_type) -> why the setting does nothing now`` ('' when it does something)."""


def checkpoint_metric_choices(model_type: str) -> tuple[str, ...]:
    """Metrics a ``model_type`` run can log and rank checkpoints by (``val_loss`` first).

    The union over loss modes, with validation and labels; ``learning_rate`` is left out
    because it says nothing about the model's quality (and ``physics_weight``, logged
    with training stages, is not offered for the same reason).
    """
    names: set[str] = set()

    for loss_mode in LOSS_MODES:
        names |= logged_metric_names(
            model_type, loss_mode, has_labels=True, realspace_weight=1.0, has_validation=True
        )

    names.discard(LEARNING_RATE)
    first = ('val_loss', 'train_loss')
    return first + tuple(sorted(names - set(first)))


@dataclass(frozen=True)
class Setting:
    """One PtychoPINN setting: settings-file entry, config field and GUI field.

    ``default`` fixes the parameter type (bool, int, float or str). ``none_value`` is the
    sentinel meaning ``None`` in the config; ``to_config`` converts other values.
    ``choices`` (a sequence, or a function of the model type) makes a combo box;
    ``widget='power_of_two'`` a power-of-two spin box. ``no_effect`` says when the
    setting does nothing, so the panel can disable it. ``in_panel=False`` keeps it out of
    the panel (settings files only).
    """

    section: str
    key: str
    attribute: str
    default: bool | int | float | str
    label: str
    tooltip: str
    field: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: Sequence[str] | Callable[[str], Sequence[str]] = ()
    none_value: int | float | str | None = None
    to_config: Callable[[Any], Any] | None = None
    widget: str = ''
    no_effect: NoEffect | None = None
    in_panel: bool = True

    def choices_for(self, model_type: str) -> tuple[str, ...]:
        """The combo-box items for the ``model_type`` panel (empty: not a choice)."""
        choices = self.choices(model_type) if callable(self.choices) else self.choices
        return tuple(choices)

    def config_value(self, value: Any) -> Any:
        """The config field's value for the setting's value (sentinel -> None)."""
        if self.none_value is not None and value == self.none_value:
            return None
        return self.to_config(value) if self.to_config is not None else value


def _parse_devices(text: str) -> int | str:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


# ---------------------------------------------------------------- when settings do nothing
def _single_positions(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.model.gridsize.get_value() > 1 else 'grid size 1: a group is one position'


def _supervised(s: PtychoPINNSettings, model_type: str) -> str:
    return 'supervised training compares patches with labels, not diffraction' if (
        model_type == 'supervised'
    ) else ''


def _object_merge(s: PtychoPINNSettings, model_type: str) -> str:
    return _single_positions(s, model_type) or _supervised(s, model_type)


def _poisson_only(s: PtychoPINNSettings, model_type: str) -> str:
    if model_type == 'supervised':
        return _supervised(s, model_type)
    loss_mode = s.training.loss_mode.get_value()
    return '' if loss_mode == 'poisson' else f'loss {loss_mode} has no Poisson term'


def _realspace_inner(s: PtychoPINNSettings, model_type: str) -> str:
    if model_type == 'supervised':
        return _supervised(s, model_type)
    return '' if s.training.realspace_weight.get_value() > 0 else 'real-space weight is 0'


def _probe_unused(s: PtychoPINNSettings, model_type: str) -> str:
    if model_type == 'pinn' or s.model.generator.get_value() in ('unet', 'unet_lite'):
        return ''
    return 'supervised cnn networks never see the probe'


def _spatial_attention_off(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.model.spatial_decoder.get_value() else 'spatial attention in decoder is off'


def _stages_unavailable(s: PtychoPINNSettings, model_type: str) -> str:
    if model_type == 'supervised':
        return _supervised(s, model_type)
    loss_mode = s.training.loss_mode.get_value()
    return '' if loss_mode == 'poisson' else f'stages lead to the Poisson loss, not {loss_mode}'


def _stage_epochs(s: PtychoPINNSettings) -> tuple[int, int, int]:
    t = s.training
    return (t.stage_1_epochs.get_value(), t.stage_2_epochs.get_value(),
            t.stage_3_epochs.get_value())


def _without_transition(s: PtychoPINNSettings, model_type: str) -> str:
    if reason := _stages_unavailable(s, model_type):
        return reason
    return '' if _stage_epochs(s)[1] > 0 else 'stage 2 epochs is 0'


def _without_stages(s: PtychoPINNSettings, model_type: str) -> str:
    if reason := _stages_unavailable(s, model_type):
        return reason
    return '' if sum(_stage_epochs(s)) > 0 else 'all stage epochs are 0 (no stages)'


def _without_split(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.training.validation_fraction.get_value() > 0 else 'validation fraction is 0'


def _without_regrouping(s: PtychoPINNSettings, model_type: str) -> str:
    if reason := _single_positions(s, model_type):
        return reason
    if s.training.sequential_sampling.get_value():
        return 'sequential sampling takes the same nearest neighbours every epoch'
    gridsize = s.model.gridsize.get_value()
    if s.training.neighbor_count.get_value() <= gridsize**2:
        return 'neighbours ≤ grid size²: a group is always its seed\'s nearest positions'
    return ''


def _without_flips(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.training.augment_flips.get_value() else 'flip augmentation is off'


def _without_mlflow(s: PtychoPINNSettings, model_type: str) -> str:
    kind = s.execution.logger.get_value()
    return '' if kind == 'mlflow' else f'the logger is {kind}, not mlflow'


def _unscaled_batch(s: PtychoPINNSettings, model_type: str) -> str:
    e = s.execution
    if _parse_devices(e.devices.get_value()) == 1 and e.accumulate_grad_batches.get_value() == 1:
        return 'one device and no accumulated batches: the factor is 1'
    return ''


def _without_workers(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.execution.num_workers.get_value() > 0 else 'data workers is 0'


def _cpu_only(s: PtychoPINNSettings, model_type: str) -> str:
    return 'the CPU needs no pinned memory' if s.execution.accelerator.get_value() == 'cpu' else ''


def _without_checkpoints(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.execution.enable_checkpointing.get_value() else 'checkpoints are off'


def _metric_unused(s: PtychoPINNSettings, model_type: str) -> str:
    e = s.execution
    if (
        e.enable_checkpointing.get_value()
        or e.early_stop_patience.get_value() > 0
        or e.scheduler.get_value() == 'Adaptive'
    ):
        return ''
    return 'no checkpoints, no early stopping and no Adaptive schedule'


def _refinement_off(s: PtychoPINNSettings, model_type: str) -> str:
    return '' if s.inference.refine_iterations.get_value() > 0 else 'refinement iterations is 0'


_M, _T, _I, _E = 'PINNModel', 'PINNTraining', 'PINNInference', 'PINNExecution'

SETTINGS: tuple[Setting, ...] = (
    # ------------------------------------------------------------------ model
    Setting(_M, 'GridSize', 'gridsize', 1, 'Grid size',
            'Side of a group: each group holds grid size² neighbouring scan positions '
            '(1 = single patterns).', field='gridsize', minimum=1, maximum=8),
    Setting(_M, 'NumFiltersScale', 'n_filters_scale', 1, 'Filter scale',
            'Multiplies the channel count of every convolution layer (larger = bigger, '
            'slower network).', field='n_filters_scale', minimum=1, maximum=16),
    Setting(_M, 'Generator', 'generator', 'unet_lite', 'Network',
            'Network layout: unet back-projects the patterns with the probe and refines '
            'them with a U-Net; unet_lite is that U-Net at half the arithmetic (one shared '
            'decoder); cnn is the legacy encoder/decoder.',
            field='generator', choices=GENERATORS),
    Setting(_M, 'AmpActivation', 'amp_activation', 'sigmoid', 'Amplitude activation',
            "Activation function of the network's object-amplitude output.",
            field='amp_activation', choices=AMP_ACTIVATIONS),
    Setting(_M, 'ObjectBig', 'object_big', True, 'Object big',
            'Merge the patches of a group onto one object before the forward model.',
            field='object_big', no_effect=_object_merge),
    Setting(_M, 'ProbeBig', 'probe_big', True, 'Probe big',
            'Let the network also predict the object outside the central N/2 × N/2 pixels.',
            field='probe_big'),
    Setting(_M, 'ProbeMask', 'probe_mask', False, 'Probe mask',
            'Multiply the probe by a circular mask of diameter N pixels.',
            field='probe_mask', no_effect=_probe_unused),
    Setting(_M, 'PadObject', 'pad_object', True, 'Pad object',
            'Predict the central N/2 × N/2 pixels and zero-pad them to N × N.',
            field='pad_object'),
    Setting(_M, 'ProbeScale', 'probe_scale', 4.0, 'Probe scale',
            "Probe normalisation (dimensionless): the probe's total intensity becomes "
            'probe scale × (N/2)².', field='probe_scale', minimum=1e-6,
            no_effect=_probe_unused),
    Setting(_M, 'GaussianSmoothingSigma', 'gaussian_smoothing_sigma', 0.0,
            'Smoothing sigma [px]',
            'Standard deviation in pixels of a Gaussian smoothing of the predicted object '
            '(0 = none).', field='gaussian_smoothing_sigma', minimum=0.0),
    Setting(_M, 'ECAEncoder', 'eca_encoder', False, 'ECA in encoder',
            'Add efficient channel attention (a learned gain per channel) after each encoder '
            'level of the network.', field='eca_encoder'),
    Setting(_M, 'CBAMEncoder', 'cbam_encoder', False, 'CBAM in encoder',
            'Add CBAM attention (a gain per channel, then a gain per pixel from a 7 × 7 pixel '
            'convolution) after each encoder level.', field='cbam_encoder'),
    Setting(_M, 'CBAMBottleneck', 'cbam_bottleneck', False, 'CBAM in bottleneck',
            'Add CBAM attention (a gain per channel, then per pixel) after the bottleneck of '
            'the network.', field='cbam_bottleneck'),
    Setting(_M, 'CBAMDecoder', 'cbam_decoder', False, 'CBAM in decoder',
            'Add CBAM attention (a gain per channel, then per pixel) after each decoder '
            'level.', field='cbam_decoder'),
    Setting(_M, 'ECADecoder', 'eca_decoder', False, 'ECA in decoder',
            'Add efficient channel attention (a learned gain per channel) after each decoder '
            'level.', field='eca_decoder'),
    Setting(_M, 'SpatialDecoder', 'spatial_decoder', False, 'Spatial attention in decoder',
            'Add spatial attention (a learned gain per pixel) after each decoder level.',
            field='spatial_decoder'),
    Setting(_M, 'DecoderSpatialKernel', 'decoder_spatial_kernel', 7,
            'Spatial attention kernel [px]',
            'Side in pixels (odd) of the convolution that computes the decoder spatial '
            'attention.', field='decoder_spatial_kernel', minimum=1, maximum=63,
            no_effect=_spatial_attention_off),
    # ------------------------------------------------------------------ training
    Setting(_T, 'NumGroups', 'n_groups', 512, 'Training groups',
            'Groups drawn from the scan for training (0 = one group per scan position).',
            field='n_groups', minimum=0, maximum=_INT_MAX, none_value=0),
    Setting(_T, 'NumSubsample', 'n_subsample', 0, 'Scan positions used',
            'Scan positions drawn at random (with the sampling seed) before grouping '
            '(0 = every position).', field='n_subsample', minimum=0, maximum=_INT_MAX,
            none_value=0),
    Setting(_T, 'BatchSize', 'batch_size', 16, 'Batch size',
            'Groups per training batch (one optimiser step each).',
            field='batch_size', minimum=1, maximum=_INT_MAX, widget='power_of_two'),
    Setting(_T, 'NumEpochs', 'nepochs', 50, 'Epochs',
            'Maximum number of training epochs (passes over the training groups).',
            field='nepochs', minimum=1, maximum=_INT_MAX),
    Setting(_T, 'NumPhotons', 'nphotons', 0.0, 'Photons per pattern',
            'Photons per diffraction pattern assumed by the Poisson likelihood '
            '(0 = mean total counts of the data).',
            field='nphotons', minimum=0.0, none_value=0.0, no_effect=_poisson_only),
    Setting(_T, 'NeighborCount', 'neighbor_count', 4, 'Neighbours',
            "A group's positions are drawn from this many nearest scan positions "
            '(at least grid size²).', field='neighbor_count', minimum=1, maximum=_INT_MAX,
            no_effect=_single_positions),
    Setting(_T, 'LossMode', 'loss_mode', 'poisson', 'Loss',
            'poisson: negative log-likelihood of the photon counts; mae: mean absolute '
            'error of the diffraction amplitudes.',
            field='loss_mode', choices=LOSS_MODES, no_effect=_supervised),
    Setting(_T, 'NLLWeight', 'nll_weight', 1.0, 'Poisson NLL weight',
            'Weight (dimensionless) of the Poisson negative log-likelihood in the loss.',
            field='nll_weight', minimum=0.0, no_effect=_poisson_only),
    Setting(_T, 'MAEWeight', 'mae_weight', 0.0, 'Amplitude MAE weight',
            'Weight (dimensionless) of the amplitude mean absolute error; with loss mae, '
            '0 means 1.', field='mae_weight', minimum=0.0, no_effect=_supervised),
    Setting(_T, 'RealspaceWeight', 'realspace_weight', 0.0, 'Real-space weight',
            'Weight (dimensionless) of the real-space term |object − label|; needs '
            'ground-truth labels in the data (0 = off).',
            field='realspace_weight', minimum=0.0, no_effect=_supervised),
    Setting(_T, 'RealspaceMAEWeight', 'realspace_mae_weight', 0.0, 'Real-space MAE weight',
            'Inner weight (dimensionless) of the real-space mean absolute error '
            '(0 means 1).', field='realspace_mae_weight', minimum=0.0,
            no_effect=_realspace_inner),
    Setting(_T, 'ProbeTrainable', 'probe_trainable', False, 'Probe trainable',
            'Refine the probe as a network parameter during training.',
            field='probe_trainable', no_effect=_probe_unused),
    Setting(_T, 'IntensityScaleTrainable', 'intensity_scale_trainable', True,
            'Intensity scale trainable',
            'Fit the scale between normalised amplitudes and photon counts during training.',
            field='intensity_scale_trainable', no_effect=_poisson_only),
    Setting(_T, 'SubsampleSeed', 'subsample_seed', 42, 'Sampling seed',
            'Seed of the scan-position draw and of the random group sampling (-1 = unseeded).',
            field='subsample_seed', minimum=-1, maximum=_INT_MAX, none_value=-1),
    Setting(_T, 'SequentialSampling', 'sequential_sampling', False, 'Sequential sampling',
            'Take groups in scan order, without shuffling, instead of at random.',
            field='sequential_sampling'),
    Setting(_T, 'RegroupEachEpoch', 'regroup_each_epoch', False, 'Regroup each epoch',
            "Draw each group's other positions again every epoch from its seed's nearest "
            'neighbours (needs grid size > 1 and more neighbours than grid size²).',
            field='regroup_each_epoch', no_effect=_without_regrouping),
    Setting(_T, 'AugmentFlips', 'augment_flips', False, 'Flip augmentation',
            'Train also on flipped, transposed and quarter-turned groups, using only the '
            'transforms that leave the probe unchanged.', field='augment_flips'),
    Setting(_T, 'AugmentProbeTolerance', 'augment_probe_tolerance', 0.01,
            'Probe symmetry tolerance',
            'Largest relative change of the probe (L2 norm) under a flip or turn for the flip '
            'augmentation to use it.', field='augment_probe_tolerance', minimum=0.0,
            maximum=1.0, no_effect=_without_flips),
    Setting(_T, 'ValidationFraction', 'validation_fraction', 0.05, 'Validation fraction',
            'Share of the training groups held out for validation when the folder has no '
            'test_data.npz (0 = no validation).',
            field='validation_fraction', minimum=0.0, maximum=0.9),
    Setting(_T, 'ValSeed', 'val_seed', 42, 'Validation seed',
            'Seed of the random split of the groups into training and validation '
            '(-1 = unseeded).', field='val_seed', minimum=-1, maximum=_INT_MAX, none_value=-1,
            no_effect=_without_split),
    Setting(_T, 'Stage1Epochs', 'stage_1_epochs', 0, 'Stage 1 epochs (MAE)',
            'Epochs of training stage 1, on the amplitude MAE alone (all three stages 0 = '
            'no stages: the chosen loss throughout).', field='stage_1_epochs', minimum=0,
            maximum=_INT_MAX, no_effect=_stages_unavailable),
    Setting(_T, 'Stage2Epochs', 'stage_2_epochs', 0, 'Stage 2 epochs (transition)',
            'Epochs of training stage 2, over which the loss moves from the amplitude MAE to '
            'the Poisson loss along the transition schedule.', field='stage_2_epochs',
            minimum=0, maximum=_INT_MAX, no_effect=_stages_unavailable),
    Setting(_T, 'Stage3Epochs', 'stage_3_epochs', 0, 'Stage 3 epochs (Poisson)',
            'Epochs of training stage 3, on the Poisson loss alone with the learning rate '
            'times the stage 3 factor (later epochs stay in stage 3).',
            field='stage_3_epochs', minimum=0, maximum=_INT_MAX,
            no_effect=_stages_unavailable),
    Setting(_T, 'PhysicsWeightSchedule', 'physics_weight_schedule', 'cosine',
            'Transition schedule',
            'Shape of the stage 2 rise of the Poisson-loss weight from 0 to 1: linear, '
            'cosine or exponential in the epoch.', field='physics_weight_schedule',
            choices=PHYSICS_WEIGHT_SCHEDULES, no_effect=_without_transition),
    Setting(_T, 'Stage3LRFactor', 'stage_3_lr_factor', 0.1, 'Stage 3 LR factor',
            'Factor (dimensionless, above 0 and at most 1) on the learning rate from the '
            'first stage 3 epoch on.', field='stage_3_lr_factor', minimum=1e-6, maximum=1.0,
            no_effect=_without_stages),
    Setting(_T, 'ExperimentName', 'experiment_name', 'Synthetic_Runs', 'MLflow experiment',
            'Name of the MLflow experiment the training run is logged under.',
            field='experiment_name', no_effect=_without_mlflow),
    Setting(_T, 'Notes', 'notes', '', 'MLflow notes',
            'Free-text notes stored with the MLflow run (empty = none).',
            field='notes', no_effect=_without_mlflow),
    Setting(_T, 'ModelName', 'model_name', 'PtychoPINNv2', 'MLflow model name',
            'Value of the model_name tag of the MLflow run.',
            field='model_name', no_effect=_without_mlflow),
    # ------------------------------------------------------------------ inference
    Setting(_I, 'NumGroups', 'n_groups', 0, 'Groups to reconstruct (0 = all)',
            'Groups reconstructed and stitched (0 = one group per scan position).',
            field='n_groups', minimum=0, maximum=_INT_MAX, none_value=0),
    Setting(_I, 'StitchWeighting', 'stitch_weighting', 'probe', 'Stitch weighting',
            'probe: each pixel weighted by the probe intensity |P|² (mostly from the '
            'patterns that lit it well); uniform: plain average of overlapping patches.',
            field='stitch_weighting', choices=STITCH_WEIGHTINGS),
    Setting(_I, 'StitchCropPx', 'stitch_crop_px', 0, 'Stitch crop [px]',
            'Side in pixels of the central square each patch contributes (0 = N/2).',
            field='stitch_crop_px', minimum=0, maximum=4096, none_value=0),
    Setting(_I, 'StitchAlignPhase', 'stitch_align_phase', True, 'Align patch phases',
            'Rotate each patch by the constant phase that best matches its already '
            'stitched neighbours.', field='stitch_align_phase'),
    Setting(_I, 'FlipX', 'flip_x', False, 'Flip X',
            'Mirror each patch left-right about its centre before placing it.', field='flip_x'),
    Setting(_I, 'FlipY', 'flip_y', False, 'Flip Y',
            'Mirror each patch top-bottom about its centre before placing it.', field='flip_y'),
    Setting(_I, 'Transpose', 'transpose', False, 'Transpose',
            "Swap each patch's rows and columns before placing it (before the flips).",
            field='transpose'),
    Setting(_I, 'RefineIterations', 'refine_iterations', 30, 'Refinement iterations',
            'Physics refinement of the network image against every measured pattern: at '
            'most this many iterations (0 = network image only).',
            field='refine_iterations', minimum=0, maximum=100000),
    Setting(_I, 'RefineTolerance', 'refine_tolerance', 0.001, 'Refinement tolerance',
            'Refinement stops once the loss improves by less than this fraction per '
            'iteration (0 = always run every iteration).', field='refine_tolerance',
            minimum=0.0, maximum=1.0, no_effect=_refinement_off),
    Setting(_I, 'RefineProbe', 'refine_probe', False, 'Refine probe',
            'Refine the probe together with the object during the refinement.',
            field='refine_probe', no_effect=_refinement_off),
    Setting(_I, 'BadPixelMode', 'bad_pixel_mode', 'inpaint', 'Bad pixels',
            'Repair of masked detector pixels, also for Export Training Data: inpaint '
            '(biharmonic) or zero (set to 0 counts).', choices=BAD_PIXEL_MODES),
    # ------------------------------------------------------------------ execution
    Setting(_E, 'Accelerator', 'accelerator', 'auto', 'Accelerator',
            'Hardware that trains and reconstructs; auto takes a GPU when there is one.',
            field='accelerator', choices=ACCELERATORS),
    Setting(_E, 'Devices', 'devices', '1', 'Devices',
            'Number of devices (GPUs, or CPU processes) to train on, or auto.',
            field='devices', to_config=_parse_devices),
    Setting(_E, 'Strategy', 'strategy', 'auto', 'Strategy',
            'How training is spread over several devices: auto, ddp or ddp_spawn.',
            field='strategy', choices=STRATEGIES),
    Setting(_E, 'Deterministic', 'deterministic', True, 'Deterministic',
            'Use deterministic algorithms so that a run repeats exactly (may be slower).',
            field='deterministic'),
    Setting(_E, 'Precision', 'precision', '32-true', 'Precision',
            'Floating-point precision of training: 32 or 64 bit, or 16-bit mixed.',
            field='precision', choices=PRECISIONS),
    Setting(_E, 'NumWorkers', 'num_workers', 0, 'Data workers',
            'Processes that load training batches (0 = load in the main process).',
            field='num_workers', minimum=0, maximum=1024),
    Setting(_E, 'PinMemory', 'pin_memory', False, 'Pin memory',
            'Page-lock batches in host memory for faster copies to a GPU.',
            field='pin_memory', no_effect=_cpu_only),
    Setting(_E, 'PersistentWorkers', 'persistent_workers', False, 'Persistent workers',
            'Keep the data-loading processes alive between epochs.',
            field='persistent_workers', no_effect=_without_workers),
    Setting(_E, 'PrefetchFactor', 'prefetch_factor', 0, 'Prefetch factor',
            'Batches each data-loading process prepares in advance (0 = default).',
            field='prefetch_factor', minimum=0, maximum=1024, none_value=0,
            no_effect=_without_workers),
    Setting(_E, 'DropLast', 'drop_last', False, 'Drop last batch',
            'Skip the last, incomplete training batch of each epoch (validation uses every '
            'group).', field='drop_last'),
    Setting(_E, 'LearningRate', 'learning_rate', 1e-3, 'Learning rate',
            'Step size of the Adam optimiser.', field='learning_rate', minimum=0.0),
    Setting(_E, 'ScaleLRWithBatch', 'scale_lr_with_batch', False, 'Scale LR with batch',
            'Multiply the learning rate by √(devices × accumulated batches), the growth of '
            'the effective batch over one device.', field='scale_lr_with_batch',
            no_effect=_unscaled_batch),
    Setting(_E, 'Scheduler', 'scheduler', 'Default', 'Scheduler',
            'How the learning rate changes over the epochs (Default = constant).',
            field='scheduler', choices=SCHEDULERS),
    Setting(_E, 'GradientClipVal', 'gradient_clip_val', 0.0, 'Gradient clip',
            'Upper bound on the gradient norm (0 = no clipping).',
            field='gradient_clip_val', minimum=0.0, none_value=0.0),
    Setting(_E, 'AccumulateGradBatches', 'accumulate_grad_batches', 1, 'Accumulate batches',
            'Batches whose gradients are summed before each optimiser step.',
            field='accumulate_grad_batches', minimum=1, maximum=_INT_MAX),
    Setting(_E, 'EnableProgressBar', 'enable_progress_bar', False, 'Progress bar',
            "Print Lightning's text progress bar in the terminal (Ptychodus shows its own).",
            field='enable_progress_bar', in_panel=False),
    Setting(_E, 'CheckValEveryNEpoch', 'check_val_every_n_epoch', 1, 'Validate every [epochs]',
            'Epochs between validations (1 = validate after every epoch).',
            field='check_val_every_n_epoch', minimum=1, maximum=_INT_MAX),
    Setting(_E, 'EnableCheckpointing', 'enable_checkpointing', True, 'Checkpoints',
            'Save checkpoints (the last epoch and the best) in the checkpoints folder of the '
            'training output.', field='enable_checkpointing'),
    Setting(_E, 'CheckpointSaveTopK', 'checkpoint_save_top_k', 1, 'Best checkpoints kept',
            'How many of the best checkpoints to keep (-1 = all, 0 = only the last).',
            field='checkpoint_save_top_k', minimum=-1, maximum=_INT_MAX,
            no_effect=_without_checkpoints),
    Setting(_E, 'CheckpointMonitor', 'checkpoint_monitor', 'val_loss', 'Checkpoint metric',
            'Logged metric that ranks checkpoints and drives early stopping and the Adaptive '
            'schedule (val_* uses train_* when there is no validation).',
            field='checkpoint_monitor', choices=checkpoint_metric_choices,
            no_effect=_metric_unused),
    Setting(_E, 'CheckpointMode', 'checkpoint_mode', 'min', 'Checkpoint mode',
            'Whether a smaller (min) or a larger (max) checkpoint metric is better.',
            field='checkpoint_mode', choices=CHECKPOINT_MODES, no_effect=_metric_unused),
    Setting(_E, 'EarlyStopPatience', 'early_stop_patience', 100, 'Early stop patience',
            'Stop after this many epochs without improvement of the checkpoint metric '
            '(0 = never).', field='early_stop_patience', minimum=0, maximum=_INT_MAX,
            none_value=0),
    Setting(_E, 'Logger', 'logger', 'csv', 'Logger',
            'Metrics log written in the training output folder: csv, tensorboard, mlflow '
            'or none.', field='logger', choices=LOGGERS),
    Setting(_E, 'MLflowTrackingURI', 'mlflow_tracking_uri', '', 'MLflow tracking URI',
            'MLflow server or store the run is logged to (empty = a local store, mlruns, in '
            'the training output folder).', field='mlflow_tracking_uri', none_value='',
            no_effect=_without_mlflow),
    Setting(_E, 'InferenceBatchSize', 'inference_batch_size', 0, 'Inference batch size',
            'Groups per batch when reconstructing (0 = the measured best for the device).',
            field='inference_batch_size', minimum=0, maximum=_INT_MAX, none_value=0),
    Setting(_E, 'InferencePrecision', 'inference_precision', 'auto', 'Inference precision',
            'Arithmetic of the network when reconstructing: 32 (float32), bf16 (bfloat16, '
            'faster on recent CPUs and GPUs) or auto (bf16 where the hardware computes it '
            'natively).', field='inference_precision',
            choices=INFERENCE_PRECISIONS),
    Setting(_E, 'InferenceCompile', 'inference_compile', False, 'Compile network',
            'Compile the network with torch.compile when reconstructing (the first batch '
            'waits for the compiler; runs uncompiled when compiling fails).',
            field='inference_compile'),
    Setting(_E, 'NumThreads', 'num_threads', 0, 'Threads',
            'Threads torch computes with (0 = one per core).', field='num_threads',
            minimum=0, maximum=4096, none_value=0),
    Setting(_E, 'ChannelsLast', 'channels_last', True, 'Channels-last',
            'Channels-last (NHWC) memory format for the network, usually faster.',
            field='channels_last'),
    Setting(_E, 'Seed', 'seed', 42, 'Seed',
            'Seed of the random number generators (initial weights, shuffling).',
            field='seed', minimum=0, maximum=_INT_MAX),
)


def settings_in(section: str) -> Iterator[Setting]:
    """The entries of ``section``, in table order."""
    return (setting for setting in SETTINGS if setting.section == section)


class _SettingsGroup(Observable, Observer):
    """A settings section: one Ptychodus parameter per :data:`SETTINGS` entry, as attributes.

    Forwards the changes of its parameters to its own observers.
    """

    GROUP_NAME = ''

    def __init__(self, registry: SettingsRegistry) -> None:
        super().__init__()
        self._group = registry.create_group(self.GROUP_NAME)
        self._parameters: dict[str, Parameter[Any]] = {}

        for setting in settings_in(self.GROUP_NAME):
            parameter = self._create_parameter(setting)
            self._parameters[setting.key] = parameter
            setattr(self, setting.attribute, parameter)

        self._group.add_observer(self)

    def _create_parameter(self, setting: Setting) -> Parameter[Any]:
        g, key, default = self._group, setting.key, setting.default

        if isinstance(default, bool):
            return g.create_boolean_parameter(key, default)
        if isinstance(default, int):
            return g.create_integer_parameter(
                key, default, minimum=setting.minimum, maximum=setting.maximum  # type: ignore[arg-type]
            )
        if isinstance(default, float):
            return g.create_real_parameter(
                key, default, minimum=setting.minimum, maximum=setting.maximum
            )
        return g.create_string_parameter(key, default)

    def parameter(self, key: str) -> Parameter[Any]:
        """The parameter of settings-file key ``key``."""
        return self._parameters[key]

    def _update(self, observable: Observable) -> None:
        if observable is self._group:
            self.notify_observers()

    def __getattr__(self, name: str) -> Any:  # the parameters are set per table entry
        raise AttributeError(f'{type(self).__name__} has no setting {name!r}')


class PtychoPINNModelSettings(_SettingsGroup):
    """Architecture settings (``[PINNModel]``). N comes from the data or the bundle."""

    GROUP_NAME = 'PINNModel'


class PtychoPINNTrainingSettings(_SettingsGroup):
    """Training settings (``[PINNTraining]``)."""

    GROUP_NAME = 'PINNTraining'


class PtychoPINNInferenceSettings(_SettingsGroup):
    """Inference and data-preparation settings (``[PINNInference]``); ``BadPixelMode`` also
    applies to Export Training Data, so training and inference see the same repair."""

    GROUP_NAME = 'PINNInference'


class PtychoPINNExecutionSettings(_SettingsGroup):
    """Runtime settings (``[PINNExecution]``); the Lightning text progress bar is off by
    default because Ptychodus shows its own progress."""

    GROUP_NAME = 'PINNExecution'


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

    def group(self, section: str) -> _SettingsGroup:
        """The group of settings-file section ``section`` (e.g. ``'PINNModel'``)."""
        groups = {g.GROUP_NAME: g for g in (self.model, self.training, self.inference,
                                            self.execution)}
        return groups[section]

    def parameter(self, setting: Setting) -> Parameter[Any]:
        """The parameter that holds ``setting``."""
        return self.group(setting.section).parameter(setting.key)

    def no_effect(self, setting: Setting, model_type: str) -> str:
        """Why ``setting`` does nothing for ``model_type`` now ('' when it does something)."""
        return setting.no_effect(self, model_type) if setting.no_effect is not None else ''


def _config_fields(settings: PtychoPINNSettings, section: str) -> dict[str, Any]:
    return {
        setting.field: setting.config_value(settings.parameter(setting).get_value())
        for setting in settings_in(section)
        if setting.field is not None
    }


def model_config_from_settings(
    settings: PtychoPINNSettings, *, model_type: str, N: int  # noqa: N803
) -> ModelConfig:
    """The ModelConfig part of :func:`settings_to_configs`."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f'model_type must be one of {MODEL_TYPES}, got {model_type!r}')
    return ModelConfig(N=N, model_type=model_type, **_config_fields(settings, 'PINNModel'))


def training_config_from_settings(
    settings: PtychoPINNSettings,
    model_config: ModelConfig,
    *,
    train_data_file: Path | None = None,
    test_data_file: Path | None = None,
    output_dir: Path = Path('training_outputs'),
) -> TrainingConfig:
    """The TrainingConfig part of :func:`settings_to_configs`."""
    return TrainingConfig(
        model=model_config,
        train_data_file=train_data_file,
        test_data_file=test_data_file,
        output_dir=Path(output_dir),
        backend='pytorch',
        **_config_fields(settings, 'PINNTraining'),
    )


def inference_config_from_settings(
    settings: PtychoPINNSettings,
    *,
    model_path: Path | None = None,
    output_dir: Path = Path('inference_outputs'),
) -> InferenceConfig:
    """The InferenceConfig part of :func:`settings_to_configs`."""
    return InferenceConfig(
        model_path=model_path,
        test_data_file=None,
        output_dir=Path(output_dir),
        backend='pytorch',
        **_config_fields(settings, 'PINNInference'),
    )


def execution_config_from_settings(settings: PtychoPINNSettings) -> ExecutionConfig:
    """The ExecutionConfig part of :func:`settings_to_configs`."""
    return ExecutionConfig(**_config_fields(settings, 'PINNExecution'))


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
    filled in by the caller. Sentinels map to ``None`` (:attr:`Setting.none_value`);
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
