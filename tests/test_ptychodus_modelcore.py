"""Headless Ptychodus (ModelCore) with the PtychoPINN library registered by the launcher."""

from __future__ import annotations

import configparser
import logging

import numpy as np
import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('torch')
pytest.importorskip('ptychopinn_torch.train')

import ptychodus.model.core as ptychodus_model_core  # noqa: E402
from ptychodus.api.io import StandardFileLayout, load_product  # noqa: E402
from ptychodus.model import ModelCore  # noqa: E402
from ptychopinn_ptychodus.launcher import is_installed, registered  # noqa: E402
from ptychopinn_ptychodus.library import PtychoPINNReconstructorLibrary  # noqa: E402
from ptychopinn_ptychodus.synthetic import (  # noqa: E402
    simulated_reconstruct_input,
    write_standard_layout,
)

SETTINGS = """\
[Processing]
Algorithm = ptychopinn_pinn

[PINNModel]
NumFiltersScale = 1

[PINNTraining]
NumEpochs = 1
NumGroups = 0
BatchSize = 4

[PINNExecution]
Accelerator = cpu
Logger = none
"""


def test_registered_replaces_and_restores_the_ptychopinn_slot():
    original = ptychodus_model_core.PtychoPINNReconstructorLibrary
    original_processing = ptychodus_model_core.ProcessingCore
    assert original is not PtychoPINNReconstructorLibrary
    with registered():
        assert ptychodus_model_core.PtychoPINNReconstructorLibrary is PtychoPINNReconstructorLibrary
        assert issubclass(ptychodus_model_core.ProcessingCore, original_processing)
        assert is_installed()
    assert ptychodus_model_core.PtychoPINNReconstructorLibrary is original
    assert ptychodus_model_core.ProcessingCore is original_processing
    assert not is_installed()


@pytest.mark.parametrize(
    ('settings_text', 'selected'),
    [
        ('', 'ptychopinn_pinn'),  # Ptychodus's default (pty-chi) is not available
        ('[Processing]\nAlgorithm = pty-chi_DM\n', 'ptychopinn_pinn'),
        ('[Processing]\nAlgorithm = ptychopinn_supervised\n', 'ptychopinn_supervised'),
    ],
)
def test_ptychopinn_is_selected_unless_settings_choose_another(tmp_path, settings_text, selected):
    settings_path = tmp_path / 'settings.ini'
    settings_path.write_text(settings_text)
    with registered(), ModelCore(settings_path, log_level=logging.WARNING) as model:
        parameter = model.processing_core.algorithm_parameter
        assert parameter.get_value() == selected
        library = model.ptychopinn_reconstructor_library
        expected = library.pinn if selected.endswith('pinn') else library.supervised
        assert parameter.get_current_reconstructor() is expected


def test_modelcore_workflow_trains_and_reconstructs(tmp_path):
    parameters, _ = simulated_reconstruct_input(N=64, n_positions=16)
    input_dir = tmp_path / 'in'
    write_standard_layout(input_dir, parameters)
    settings_path = input_dir / StandardFileLayout.SETTINGS
    settings_path.write_text(SETTINGS)

    with registered(), ModelCore(settings_path, log_level=logging.WARNING) as model:
        processing = model.processing_core.processing_api
        assert {'ptychopinn_pinn', 'ptychopinn_supervised'} <= set(
            processing.available_reconstructors()
        )
        assert model.processing_core.algorithm_parameter.get_value() == 'ptychopinn_pinn'
        library = model.ptychopinn_reconstructor_library
        assert isinstance(library, PtychoPINNReconstructorLibrary)
        assert library.settings.training.nepochs.get_value() == 1  # read from settings.ini

        workflow = model.workflow_api
        diffraction = workflow.load_assembled_diffraction_data(
            input_dir / StandardFileLayout.DIFFRACTION
        )
        product = workflow.register_product(parameters.product, diffraction=diffraction)

        # the exported file is what train() reads from the chosen directory
        product.export_training_data(tmp_path / 'train_data.npz')
        assert (tmp_path / 'train_data.npz').is_file()
        product.train_reconstructor_local(tmp_path, tmp_path / 'out', block=True)
        assert library.pinn.is_model_loaded()
        assert processing.is_reconstructor_trainable()
        assert (tmp_path / 'out' / 'model.zip').is_file()

        output = product.reconstruct_local(block=True)
        product_in = product.get_product()
        product_out = output.get_product()
        assert output.get_product_index() != product.get_product_index()
        assert product_out.object_.get_geometry() == product_in.object_.get_geometry()
        changed = product_out.object_.get_layer(0) != product_in.object_.get_layer(0)
        assert changed.sum() > 0.2 * changed.size
        np.testing.assert_array_equal(
            product_out.probe_positions.get_coordinates_x_m(),
            product_in.probe_positions.get_coordinates_x_m(),
        )

        # our settings are written to, and read back from, Ptychodus settings files
        library.settings.inference.stitch_weighting.set_value('probe')
        saved = tmp_path / 'saved.ini'
        model.settings_registry.save_settings(saved)

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(saved)
    assert parser['Processing']['Algorithm'] == 'ptychopinn_pinn'
    assert parser['PINNInference']['StitchWeighting'] == 'probe'
    assert parser['PINNTraining']['NumEpochs'] == '1'


# ------------------------------------------------------------------------ batch mode
@pytest.fixture(scope='module')
def batch_input(tmp_path_factory):
    """A standard-layout input folder (diffraction.h5, product.h5, settings.ini)."""
    directory = tmp_path_factory.mktemp('batch') / 'in'
    parameters, _ = simulated_reconstruct_input(N=64, n_positions=16)
    write_standard_layout(directory, parameters)
    (directory / StandardFileLayout.SETTINGS).write_text(SETTINGS)
    return directory


def test_batch_train_prefers_the_standard_layout_to_a_stray_npz(batch_input, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='ptychopinn_ptychodus')
    (batch_input / 'notes.npz').write_bytes(b'a stray file, not training data')
    try:
        with registered(), ModelCore(None, log_level=logging.INFO) as model:
            code = model.batch_mode_execute('train', batch_input, tmp_path)
    finally:
        (batch_input / 'notes.npz').unlink()
    assert code == 0, caplog.text
    assert (tmp_path / 'model.zip').is_file()
    assert (
        f'training data: diffraction.h5 + product.h5 in {batch_input} (Ptychodus standard '
        'layout); ignoring notes.npz'
    ) in caplog.text


def _reconstruct_in_batch(input_dir, output_dir):
    with registered(), ModelCore(None, log_level=logging.INFO) as model:
        library = model.ptychopinn_reconstructor_library
        # yield at every 25 %: Ptychodus would save each of these yields as a file
        library.pinn.progress_interval_s = 0.0
        return model.batch_mode_execute('reconstruct', input_dir, output_dir)


def test_batch_reconstruct_writes_exactly_one_product(batch_input, tmp_path):
    with registered(), ModelCore(None, log_level=logging.WARNING) as model:
        assert model.batch_mode_execute('train', batch_input, tmp_path / 'trained') == 0
    (batch_input / 'model.zip').write_bytes((tmp_path / 'trained' / 'model.zip').read_bytes())
    try:
        assert _reconstruct_in_batch(batch_input, tmp_path / 'out') == 0
    finally:
        (batch_input / 'model.zip').unlink()

    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['product.h5']
    product_in = load_product(batch_input / StandardFileLayout.PRODUCT)
    product_out = load_product(tmp_path / 'out' / 'product.h5')
    changed = product_out.object_.get_layer(0) != product_in.object_.get_layer(0)
    assert changed.sum() > 0.2 * changed.size


def test_batch_reconstruct_without_a_model_fails_and_writes_nothing(batch_input, tmp_path):
    assert _reconstruct_in_batch(batch_input, tmp_path / 'out') != 0
    assert list((tmp_path / 'out').iterdir()) == []


# ------------------------------------------------------------------------ item 14
def test_saved_settings_hold_no_unused_ptychopinn_torch_sections(tmp_path):
    with registered(), ModelCore(None, log_level=logging.WARNING) as model:
        assert not list(model.ptychopinn_torch_reconstructor_library)
        model.settings_registry.save_settings(tmp_path / 'settings.ini')
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(tmp_path / 'settings.ini')
    assert not [s for s in parser.sections() if s.startswith('PtychoPINNTorch')]
    assert {'PINNModel', 'PINNTraining', 'PINNInference', 'PINNExecution'} <= set(
        parser.sections()
    )
    # Ptychodus without our launcher writes them
    with ModelCore(None, log_level=logging.WARNING) as model:
        model.settings_registry.save_settings(tmp_path / 'plain.ini')
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(tmp_path / 'plain.ini')
    assert 'PtychoPINNTorchModel' in parser.sections()
