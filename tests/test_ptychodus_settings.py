"""PtychoPINN settings in Ptychodus's SettingsRegistry and the settings -> configs mapping."""

from __future__ import annotations

import configparser
import re
from dataclasses import fields
from pathlib import Path

import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychopinn_ptychodus.settings import (  # noqa: E402
    SECTIONS,
    SETTINGS,
    PtychoPINNSettings,
    settings_to_configs,
)

from ptychopinn.config import (  # noqa: E402
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

# (section, key, value as written in settings.ini, config, field, expected config value)
CASES = [
    ('PINNModel', 'GridSize', '2', 'model', 'gridsize', 2),
    ('PINNModel', 'NumFiltersScale', '3', 'model', 'n_filters_scale', 3),
    ('PINNModel', 'Generator', 'cnn', 'model', 'generator', 'cnn'),
    ('PINNModel', 'AmpActivation', 'swish', 'model', 'amp_activation', 'swish'),
    ('PINNModel', 'ObjectBig', 'false', 'model', 'object_big', False),
    ('PINNModel', 'ProbeBig', 'false', 'model', 'probe_big', False),
    ('PINNModel', 'ProbeMask', 'true', 'model', 'probe_mask', True),
    ('PINNModel', 'PadObject', 'false', 'model', 'pad_object', False),
    ('PINNModel', 'ProbeScale', '2.5', 'model', 'probe_scale', 2.5),
    ('PINNModel', 'GaussianSmoothingSigma', '0.75', 'model', 'gaussian_smoothing_sigma', 0.75),
    ('PINNModel', 'ECAEncoder', 'true', 'model', 'eca_encoder', True),
    ('PINNModel', 'CBAMEncoder', 'true', 'model', 'cbam_encoder', True),
    ('PINNModel', 'CBAMBottleneck', 'true', 'model', 'cbam_bottleneck', True),
    ('PINNModel', 'CBAMDecoder', 'true', 'model', 'cbam_decoder', True),
    ('PINNModel', 'ECADecoder', 'true', 'model', 'eca_decoder', True),
    ('PINNModel', 'SpatialDecoder', 'true', 'model', 'spatial_decoder', True),
    ('PINNModel', 'DecoderSpatialKernel', '5', 'model', 'decoder_spatial_kernel', 5),
    ('PINNTraining', 'NumGroups', '100', 'training', 'n_groups', 100),
    ('PINNTraining', 'BatchSize', '8', 'training', 'batch_size', 8),
    ('PINNTraining', 'NumEpochs', '7', 'training', 'nepochs', 7),
    ('PINNTraining', 'NumPhotons', '1e9', 'training', 'nphotons', 1e9),
    ('PINNTraining', 'NeighborCount', '6', 'training', 'neighbor_count', 6),
    ('PINNTraining', 'LossMode', 'mae', 'training', 'loss_mode', 'mae'),
    ('PINNTraining', 'NLLWeight', '0.5', 'training', 'nll_weight', 0.5),
    ('PINNTraining', 'MAEWeight', '0.25', 'training', 'mae_weight', 0.25),
    ('PINNTraining', 'RealspaceMAEWeight', '0.125', 'training', 'realspace_mae_weight', 0.125),
    ('PINNTraining', 'RealspaceWeight', '0.0625', 'training', 'realspace_weight', 0.0625),
    ('PINNTraining', 'ProbeTrainable', 'true', 'training', 'probe_trainable', True),
    (
        'PINNTraining', 'IntensityScaleTrainable', 'false', 'training',
        'intensity_scale_trainable', False,
    ),
    ('PINNTraining', 'SubsampleSeed', '7', 'training', 'subsample_seed', 7),
    ('PINNTraining', 'SequentialSampling', 'true', 'training', 'sequential_sampling', True),
    ('PINNTraining', 'RegroupEachEpoch', 'true', 'training', 'regroup_each_epoch', True),
    ('PINNTraining', 'AugmentFlips', 'true', 'training', 'augment_flips', True),
    (
        'PINNTraining', 'AugmentProbeTolerance', '0.05', 'training', 'augment_probe_tolerance',
        0.05,
    ),
    ('PINNTraining', 'ValidationFraction', '0.2', 'training', 'validation_fraction', 0.2),
    ('PINNTraining', 'NumSubsample', '30', 'training', 'n_subsample', 30),
    ('PINNTraining', 'ValSeed', '5', 'training', 'val_seed', 5),
    ('PINNTraining', 'Stage1Epochs', '1', 'training', 'stage_1_epochs', 1),
    ('PINNTraining', 'Stage2Epochs', '2', 'training', 'stage_2_epochs', 2),
    ('PINNTraining', 'Stage3Epochs', '3', 'training', 'stage_3_epochs', 3),
    (
        'PINNTraining', 'PhysicsWeightSchedule', 'linear', 'training',
        'physics_weight_schedule', 'linear',
    ),
    ('PINNTraining', 'Stage3LRFactor', '0.5', 'training', 'stage_3_lr_factor', 0.5),
    ('PINNTraining', 'ExperimentName', 'beamtime', 'training', 'experiment_name', 'beamtime'),
    ('PINNTraining', 'Notes', 'first scan', 'training', 'notes', 'first scan'),
    ('PINNTraining', 'ModelName', 'pinn-a', 'training', 'model_name', 'pinn-a'),
    ('PINNInference', 'NumGroups', '33', 'inference', 'n_groups', 33),
    ('PINNInference', 'StitchWeighting', 'uniform', 'inference', 'stitch_weighting', 'uniform'),
    ('PINNInference', 'StitchCropPx', '20', 'inference', 'stitch_crop_px', 20),
    ('PINNInference', 'StitchAlignPhase', 'false', 'inference', 'stitch_align_phase', False),
    ('PINNInference', 'FlipX', 'true', 'inference', 'flip_x', True),
    ('PINNInference', 'FlipY', 'true', 'inference', 'flip_y', True),
    ('PINNInference', 'Transpose', 'true', 'inference', 'transpose', True),
    ('PINNInference', 'RefineIterations', '7', 'inference', 'refine_iterations', 7),
    ('PINNInference', 'RefineTolerance', '0.02', 'inference', 'refine_tolerance', 0.02),
    ('PINNInference', 'RefineProbe', 'true', 'inference', 'refine_probe', True),
    ('PINNExecution', 'Accelerator', 'cpu', 'execution', 'accelerator', 'cpu'),
    ('PINNExecution', 'Devices', '2', 'execution', 'devices', 2),
    ('PINNExecution', 'Strategy', 'ddp', 'execution', 'strategy', 'ddp'),
    ('PINNExecution', 'Deterministic', 'false', 'execution', 'deterministic', False),
    ('PINNExecution', 'Precision', 'bf16-mixed', 'execution', 'precision', 'bf16-mixed'),
    ('PINNExecution', 'NumWorkers', '2', 'execution', 'num_workers', 2),
    ('PINNExecution', 'PinMemory', 'true', 'execution', 'pin_memory', True),
    ('PINNExecution', 'PersistentWorkers', 'true', 'execution', 'persistent_workers', True),
    ('PINNExecution', 'PrefetchFactor', '3', 'execution', 'prefetch_factor', 3),
    ('PINNExecution', 'LearningRate', '0.0005', 'execution', 'learning_rate', 0.0005),
    ('PINNExecution', 'Scheduler', 'WarmupCosine', 'execution', 'scheduler', 'WarmupCosine'),
    ('PINNExecution', 'GradientClipVal', '1.5', 'execution', 'gradient_clip_val', 1.5),
    ('PINNExecution', 'AccumulateGradBatches', '4', 'execution', 'accumulate_grad_batches', 4),
    ('PINNExecution', 'EnableProgressBar', 'true', 'execution', 'enable_progress_bar', True),
    ('PINNExecution', 'CheckValEveryNEpoch', '2', 'execution', 'check_val_every_n_epoch', 2),
    ('PINNExecution', 'DropLast', 'true', 'execution', 'drop_last', True),
    ('PINNExecution', 'ScaleLRWithBatch', 'true', 'execution', 'scale_lr_with_batch', True),
    (
        'PINNExecution', 'MLflowTrackingURI', 'http://mlflow:5000', 'execution',
        'mlflow_tracking_uri', 'http://mlflow:5000',
    ),
    ('PINNExecution', 'EnableCheckpointing', 'false', 'execution', 'enable_checkpointing', False),
    ('PINNExecution', 'CheckpointSaveTopK', '3', 'execution', 'checkpoint_save_top_k', 3),
    (
        'PINNExecution', 'CheckpointMonitor', 'train_loss', 'execution', 'checkpoint_monitor',
        'train_loss',
    ),
    ('PINNExecution', 'CheckpointMode', 'max', 'execution', 'checkpoint_mode', 'max'),
    ('PINNExecution', 'EarlyStopPatience', '9', 'execution', 'early_stop_patience', 9),
    ('PINNExecution', 'Logger', 'tensorboard', 'execution', 'logger', 'tensorboard'),
    ('PINNExecution', 'InferenceBatchSize', '64', 'execution', 'inference_batch_size', 64),
    ('PINNExecution', 'Seed', '123', 'execution', 'seed', 123),
    ('PINNExecution', 'InferencePrecision', 'bf16', 'execution', 'inference_precision', 'bf16'),
    ('PINNExecution', 'InferenceCompile', 'true', 'execution', 'inference_compile', True),
    ('PINNExecution', 'NumThreads', '3', 'execution', 'num_threads', 3),
    ('PINNExecution', 'ChannelsLast', 'false', 'execution', 'channels_last', False),
]

# Settings that are not config fields, and config fields that do not come from settings.
NOT_CONFIG_FIELDS = {('PINNInference', 'BadPixelMode')}
# Command-line and Python knobs a GUI user does not change (fine-tuning from a file,
# debug output, multi-node DDP tuning, MLflow run lookup).
NOT_FROM_SETTINGS = {
    'model': {'N', 'model_type'},
    'training': {'model', 'train_data_file', 'test_data_file', 'output_dir', 'backend',
                 'init_model', 'fine_tune_gamma', 'debug'},
    'inference': {'model_path', 'run_id', 'test_data_file', 'output_dir', 'backend'},
    'execution': {'num_nodes', 'ddp_find_unused_parameters', 'ddp_static_graph',
                  'ddp_gradient_as_bucket_view', 'ddp_backend'},
}


def _new_settings() -> tuple[SettingsRegistry, PtychoPINNSettings]:
    registry = SettingsRegistry()
    return registry, PtychoPINNSettings.create(registry)


def _configs(settings: PtychoPINNSettings, **kwargs) -> dict[str, object]:
    kwargs.setdefault('model_type', 'pinn')
    kwargs.setdefault('N', 64)
    model, training, inference, execution = settings_to_configs(settings, **kwargs)
    return {'model': model, 'training': training, 'inference': inference, 'execution': execution}


def _write_ini(path: Path, entries: dict[str, dict[str, str]]) -> Path:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the CamelCase keys

    for section, values in entries.items():
        parser[section] = values

    with path.open('w') as handle:
        parser.write(handle)

    return path


def test_groups_are_registered_under_their_section_names():
    registry, _ = _new_settings()
    assert set(registry) == set(SECTIONS)


def test_defaults_map_to_the_config_defaults():
    _, settings = _new_settings()
    configs = _configs(settings)

    assert configs['model'] == ModelConfig(N=64)
    assert configs['training'] == TrainingConfig(model=ModelConfig(N=64))
    assert configs['inference'] == InferenceConfig()
    # The one deliberate difference: Ptychodus shows progress, so no Lightning text bar.
    assert configs['execution'] == ExecutionConfig(enable_progress_bar=False)


def test_every_setting_and_every_config_field_is_mapped():
    registry, _ = _new_settings()
    registered = {
        (section, name) for section in SECTIONS for name in registry[section].parameters()
    }
    covered = {(section, key) for section, key, *_ in CASES}
    assert registered == covered | NOT_CONFIG_FIELDS

    config_types = {
        'model': ModelConfig,
        'training': TrainingConfig,
        'inference': InferenceConfig,
        'execution': ExecutionConfig,
    }
    for label, config_type in config_types.items():
        mapped = {field for _, _, _, config, field, _ in CASES if config == label}
        all_fields = {f.name for f in fields(config_type)}
        assert mapped | NOT_FROM_SETTINGS[label] == all_fields, label


@pytest.mark.parametrize(('section', 'key', 'text', 'config', 'field', 'expected'), CASES)
def test_settings_file_value_reaches_its_config_field(
    tmp_path, section, key, text, config, field, expected
):
    registry, settings = _new_settings()
    before = getattr(_configs(settings)[config], field)
    assert before != expected  # the case really changes the field

    # companions some values need to form a valid config on their own
    entries: dict[str, dict[str, str]] = {section: {key: text}}
    if key in ('PersistentWorkers', 'PrefetchFactor'):
        entries[section]['NumWorkers'] = '2'
    if key == 'RegroupEachEpoch':  # regrouping needs groups with more than one choice
        entries[section]['NeighborCount'] = '6'
        entries['PINNModel'] = {'GridSize': '2'}

    registry.open_settings(_write_ini(tmp_path / 'settings.ini', entries))
    assert getattr(_configs(settings)[config], field) == expected


# Training stages need the Poisson loss, so the LossMode=mae case cannot join them;
# regrouping needs random sampling, so it cannot join SequentialSampling=true.
APART = {('PINNTraining', 'LossMode'), ('PINNTraining', 'RegroupEachEpoch')}


def test_all_cases_together_give_valid_configs(tmp_path):
    registry, settings = _new_settings()
    together = [case for case in CASES if tuple(case[:2]) not in APART]
    entries: dict[str, dict[str, str]] = {}
    for section, key, text, *_ in together:
        entries.setdefault(section, {})[key] = text
    registry.open_settings(_write_ini(tmp_path / 'settings.ini', entries))

    configs = _configs(settings)
    for _, _, _, config, field, expected in together:
        assert getattr(configs[config], field) == expected, field


@pytest.mark.parametrize(
    ('section', 'key', 'config', 'field'),
    [
        ('PINNTraining', 'NumGroups', 'training', 'n_groups'),
        ('PINNTraining', 'NumPhotons', 'training', 'nphotons'),
        ('PINNInference', 'NumGroups', 'inference', 'n_groups'),
        ('PINNInference', 'StitchCropPx', 'inference', 'stitch_crop_px'),
        ('PINNExecution', 'PrefetchFactor', 'execution', 'prefetch_factor'),
        ('PINNExecution', 'GradientClipVal', 'execution', 'gradient_clip_val'),
        ('PINNExecution', 'EarlyStopPatience', 'execution', 'early_stop_patience'),
        ('PINNExecution', 'InferenceBatchSize', 'execution', 'inference_batch_size'),
    ],
)
def test_zero_sentinel_means_none(tmp_path, section, key, config, field):
    registry, settings = _new_settings()
    registry.open_settings(_write_ini(tmp_path / 's.ini', {section: {key: '0'}}))
    assert getattr(_configs(settings)[config], field) is None


def test_negative_seed_means_unseeded_and_auto_devices_stay_text(tmp_path):
    registry, settings = _new_settings()
    entries = {'PINNTraining': {'SubsampleSeed': '-1'}, 'PINNExecution': {'Devices': 'auto'}}
    registry.open_settings(_write_ini(tmp_path / 's.ini', entries))
    configs = _configs(settings)
    assert configs['training'].subsample_seed is None
    assert configs['execution'].devices == 'auto'


def test_caller_supplies_model_type_n_and_paths(tmp_path):
    _, settings = _new_settings()
    configs = _configs(
        settings,
        model_type='supervised',
        N=128,
        train_data_file=tmp_path / 'train_data.npz',
        test_data_file=tmp_path / 'test_data.npz',
        training_output_dir=tmp_path / 'out',
        model_path=tmp_path / 'model.zip',
        inference_output_dir=tmp_path / 'inf',
    )
    assert configs['model'].model_type == 'supervised'
    assert configs['model'].N == 128
    assert configs['training'].model == configs['model']
    assert configs['training'].train_data_file == tmp_path / 'train_data.npz'
    assert configs['training'].test_data_file == tmp_path / 'test_data.npz'
    assert configs['training'].output_dir == tmp_path / 'out'
    assert configs['inference'].model_path == tmp_path / 'model.zip'
    assert configs['inference'].output_dir == tmp_path / 'inf'
    assert configs['training'].backend == configs['inference'].backend == 'pytorch'


def test_invalid_setting_raises_the_config_error_naming_the_field(tmp_path):
    registry, settings = _new_settings()
    registry.open_settings(_write_ini(tmp_path / 's.ini', {'PINNModel': {'AmpActivation': 'tanh'}}))
    with pytest.raises(ValueError, match='amp_activation'):
        _configs(settings)


def test_mapping_is_pure(tmp_path):
    registry, settings = _new_settings()
    snapshot = tmp_path / 'before.ini'
    registry.save_settings(snapshot)
    first = _configs(settings)
    second = _configs(settings)
    after = tmp_path / 'after.ini'
    registry.save_settings(after)
    assert first == second
    assert snapshot.read_text() == after.read_text()


def test_settings_survive_a_settings_file_round_trip(tmp_path):
    registry, settings = _new_settings()
    settings.model.gridsize.set_value(2)
    settings.training.nepochs.set_value(3)
    settings.training.nphotons.set_value(2.5e8)
    settings.inference.stitch_weighting.set_value('probe')
    settings.inference.bad_pixel_mode.set_value('zero')
    settings.execution.learning_rate.set_value(2e-4)
    settings.execution.devices.set_value('auto')
    path = tmp_path / 'saved.ini'
    registry.save_settings(path)

    saved = configparser.ConfigParser(interpolation=None)
    saved.read(path)
    assert saved['PINNModel']['GridSize'] == '2'
    assert saved['PINNInference']['BadPixelMode'] == 'zero'

    registry2, settings2 = _new_settings()
    registry2.open_settings(path)
    assert _configs(settings2, N=128) == _configs(settings, N=128)
    assert settings2.inference.bad_pixel_mode.get_value() == 'zero'


def test_spec_settings_table_equals_the_code():
    """specs/reconstructor_api.md section 3 lists every key of every section, in order."""
    spec = (Path(__file__).resolve().parents[1] / 'specs' / 'reconstructor_api.md').read_text()
    table = {}
    for line in spec.splitlines():
        match = re.fullmatch(r'\| `(PINN\w+)` \| (.*) \|', line.strip())
        if match:
            table[match[1]] = re.findall(r'`(\w+)`', match[2])
    assert table == {
        section: [s.key for s in SETTINGS if s.section == section] for section in SECTIONS
    }


def test_setting_table_entries_are_consistent():
    registry, settings = _new_settings()
    keys = [(s.section, s.key) for s in SETTINGS]
    assert len(keys) == len(set(keys))
    for setting in SETTINGS:
        parameter = settings.parameter(setting)
        assert parameter.get_value() == setting.default, setting.key
        assert getattr(settings.group(setting.section), setting.attribute) is parameter
        if setting.choices_for('pinn'):
            assert setting.default in setting.choices_for('pinn'), setting.key
    for section in SECTIONS:
        assert list(registry[section].parameters()) == [
            s.key for s in SETTINGS if s.section == section
        ]
