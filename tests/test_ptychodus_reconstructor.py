"""Contract tests of the PtychoPINN reconstructors against the real ptychodus.api.

The input is built from Ptychodus's own classes (Product, ProbeSequence, Object,
ProbePositionSequence); a tiny model (N=64, 16 positions, 2 epochs) is trained once per
module and reused.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('torch')
pytest.importorskip('ptychopinn_torch.train')

from ptychodus.api.reconstruct import (  # noqa: E402
    ReconstructInput,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)
from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychopinn_ptychodus import (  # noqa: E402
    ModelNotLoadedError,
    PtychodusInputError,
    PtychoPINNReconstructorLibrary,
)
from ptychopinn_ptychodus.conversion import paste_reconstruction  # noqa: E402
from ptychopinn_ptychodus.synthetic import simulated_reconstruct_input  # noqa: E402

from ptychopinn import workflows  # noqa: E402
from ptychopinn.config import ExecutionConfig, InferenceConfig  # noqa: E402
from ptychopinn.data import RawData  # noqa: E402

N_EPOCHS = 2


def tiny_library() -> PtychoPINNReconstructorLibrary:
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    s = library.settings
    s.model.n_filters_scale.set_value(1)
    s.training.nepochs.set_value(N_EPOCHS)
    s.training.n_groups.set_value(0)
    s.training.batch_size.set_value(4)
    s.training.validation_fraction.set_value(0.25)
    s.execution.accelerator.set_value('cpu')
    s.execution.logger.set_value('none')
    s.execution.inference_batch_size.set_value(2)
    library.pinn.progress_interval_s = library.supervised.progress_interval_s = 0.0
    return library


@pytest.fixture(scope='module')
def scan() -> tuple[ReconstructInput, RawData]:
    return simulated_reconstruct_input(N=64, n_positions=16)


@pytest.fixture(scope='module')
def trained(scan, tmp_path_factory):
    """A PINN reconstructor trained for two epochs, with what train() yielded."""
    parameters, _ = scan
    directory = tmp_path_factory.mktemp('train')
    library = tiny_library()
    library.pinn.export_training_data(directory / 'train_data.npz', parameters)
    outputs = list(library.pinn.train(directory, directory))
    return library, directory, outputs


def test_library_exposes_pinn_and_supervised():
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    assert library.name == 'PtychoPINN'
    assert '_' not in library.name  # Ptychodus splits algorithm keys on '_'
    names = [r.name for r in library]
    assert names == ['PINN', 'Supervised']
    assert all(isinstance(r, TrainableReconstructor) for r in library)
    assert library.pinn.get_model_file_extension() == '.zip'
    assert '*.zip' in library.pinn.get_model_file_filter()
    assert '*.npz' in library.pinn.get_training_data_file_filter()
    assert not library.pinn.is_model_loaded()


def test_train_yields_after_every_epoch_with_losses_so_far(trained):
    library, _, outputs = trained
    assert all(isinstance(o, TrainOutput) for o in outputs)
    progress = [o.progress for o in outputs]
    # after every epoch, plus unchanged outputs between (so that Ptychodus can see Stop)
    assert progress == sorted(progress) and progress[-1] == N_EPOCHS
    assert set(range(1, N_EPOCHS + 1)) <= set(progress)
    for output in outputs:
        epochs = list(range(output.progress))
        assert [loss.epoch for loss in output.training_loss] == epochs
        assert [loss.epoch for loss in output.validation_loss] == epochs
        assert all(np.isfinite(loss.value) for loss in output.training_loss)
    # the losses reported are the ones the backend recorded
    summary = library.pinn.loaded_model.training_summary
    assert outputs[-1].training_loss[-1].value == pytest.approx(summary['final_train_loss'])
    assert outputs[-1].validation_loss[-1].value == pytest.approx(summary['final_val_loss'])
    assert library.pinn.get_progress_goal() == N_EPOCHS


def test_train_writes_and_loads_the_bundle(trained):
    library, directory, _ = trained
    bundle = directory / 'ptychopinn_model.zip'
    assert bundle.is_file()
    assert (directory / 'model.zip').read_bytes() == bundle.read_bytes()
    assert library.pinn.is_model_loaded()
    assert library.pinn.model_path == bundle
    assert library.pinn.loaded_model.N == 64
    assert library.pinn.loaded_model.model_config.model_type == 'pinn'
    assert not library.supervised.is_model_loaded()


def test_reconstruct_contract(trained, scan):
    library, _, _ = trained
    parameters, _ = scan
    outputs = list(library.pinn.reconstruct(parameters))

    assert all(isinstance(o, ReconstructOutput) for o in outputs)
    progress = [o.progress for o in outputs]
    assert len(outputs) >= 2
    assert progress == sorted(set(progress))  # strictly increasing
    assert progress[-1] == library.pinn.get_progress_goal() == 100
    for intermediate in outputs[:-1]:
        assert intermediate.product is parameters.product

    product_in = parameters.product
    product_out = outputs[-1].product
    assert product_out.probes is product_in.probes
    assert product_out.probe_positions is product_in.probe_positions
    assert product_out.metadata is product_in.metadata
    # the product carries the training curve of the model that made it
    history = library.pinn.loaded_model.training_summary['train_loss_history']
    assert [loss.value for loss in product_out.losses] == pytest.approx(history)
    assert [loss.epoch for loss in product_out.losses] == list(range(len(history)))
    assert len(history) > 0

    object_in, object_out = product_in.object_, product_out.object_
    assert object_out.get_geometry() == object_in.get_geometry()
    assert list(object_out.layer_spacing_m) == list(object_in.layer_spacing_m)
    assert object_out.get_array().shape == object_in.get_array().shape
    assert object_out.dtype == object_in.dtype

    changed = object_out.get_layer(0) != object_in.get_layer(0)
    assert changed.sum() > 0.2 * changed.size  # the scanned region was reconstructed
    assert not changed[0, 0] and not changed[-1, -1]  # corners lie outside the scan


def test_quick_reconstruction_yields_only_the_result(trained, scan):
    library, _, _ = trained
    parameters, _ = scan
    library.pinn.progress_interval_s = 1e9
    try:
        outputs = list(library.pinn.reconstruct(parameters))
    finally:
        library.pinn.progress_interval_s = 0.0
    assert [o.progress for o in outputs] == [100]
    assert outputs[0].product is not parameters.product


def test_reconstruct_hands_the_settings_to_the_backend(trained, scan, tmp_path):
    library, _, _ = trained
    parameters, _ = scan
    library.settings.inference.stitch_crop_px.set_value(20)
    try:
        final = list(library.pinn.reconstruct(parameters))[-1]
    finally:
        library.settings.inference.stitch_crop_px.set_value(0)

    library.pinn.export_training_data(tmp_path / 'scan.npz', parameters)
    expected = workflows.reconstruct_with_backend(
        library.pinn.loaded_model,
        RawData.from_file(tmp_path / 'scan.npz'),
        InferenceConfig(stitch_crop_px=20),
        ExecutionConfig(accelerator='cpu', inference_batch_size=2),
    )
    pasted = paste_reconstruction(parameters.product.object_, expected.object, expected.origin_px)
    np.testing.assert_allclose(final.product.object_.get_array(), pasted.get_array(), atol=1e-6)


def test_reconstruct_without_a_model_fails_before_work(scan):
    parameters, _ = scan
    library = tiny_library()
    with pytest.raises(ModelNotLoadedError, match='no model loaded'):
        next(library.pinn.reconstruct(parameters))


def test_reconstruct_refuses_patterns_of_the_wrong_size(trained, scan):
    library, _, _ = trained
    parameters, _ = scan
    padded = np.pad(parameters.diffraction_patterns, ((0, 0), (32, 32), (32, 32)))
    wrong = ReconstructInput(padded, np.zeros((128, 128), dtype=bool), parameters.product)
    with pytest.raises(PtychodusInputError, match='trained on 64 x 64'):
        next(library.pinn.reconstruct(wrong))

    cropped = parameters.diffraction_patterns[:, :, :60]
    non_square = ReconstructInput(cropped, np.zeros((64, 60), dtype=bool), parameters.product)
    with pytest.raises(PtychodusInputError, match='square'):
        next(library.pinn.reconstruct(non_square))


def test_saved_model_loads_into_a_fresh_reconstructor(trained, scan, tmp_path):
    library, _, _ = trained
    parameters, _ = scan
    library.pinn.save_model(tmp_path / 'copy.zip')

    fresh = tiny_library()
    fresh.pinn.load_model_from_file(tmp_path / 'copy.zip')
    assert fresh.pinn.is_model_loaded()
    ours = list(library.pinn.reconstruct(parameters))[-1].product.object_.get_array()
    theirs = list(fresh.pinn.reconstruct(parameters))[-1].product.object_.get_array()
    np.testing.assert_allclose(theirs, ours, atol=1e-6)

    with pytest.raises(ModelNotLoadedError):
        tiny_library().pinn.save_model(tmp_path / 'none.zip')


def test_a_failed_model_save_leaves_the_earlier_file_intact(trained, tmp_path, monkeypatch):
    """Saving copies the bundle through a temporary: a copy that fails half-way (disk
    full) keeps the file already there and leaves no temporary beside it."""
    import shutil

    library, _, _ = trained
    destination = tmp_path / 'model.zip'
    destination.write_bytes(b'earlier model')

    def copy_half_then_fail(source, target, *args, **kwargs):
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(shutil, 'copyfile', copy_half_then_fail)
    with pytest.raises(OSError, match='No space'):
        library.pinn.save_model(destination)
    assert destination.read_bytes() == b'earlier model'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.zip']


def test_closing_the_training_generator_stops_training_cleanly(scan, tmp_path):
    parameters, _ = scan
    library = tiny_library()
    library.settings.training.nepochs.set_value(50)
    library.pinn.export_training_data(tmp_path / 'train_data.npz', parameters)

    generator = library.pinn.train(tmp_path, tmp_path / 'out')
    while next(generator).progress < 1:
        pass
    started = time.perf_counter()
    generator.close()  # what Ptychodus's Stop does
    assert time.perf_counter() - started < 60

    assert not [t for t in threading.enumerate() if t.name == 'PINN-train']
    assert library.pinn.is_model_loaded()  # the model trained so far was kept
    summary = library.pinn.loaded_model.training_summary
    assert summary['epochs_completed'] < 50
    assert (tmp_path / 'out' / 'model.zip').is_file()


def test_supervised_trains_on_exported_labels_and_reconstructs(tmp_path):
    parameters, _ = simulated_reconstruct_input(N=64, n_positions=16, initial_object='truth')
    library = tiny_library()
    library.settings.training.nepochs.set_value(1)
    library.supervised.export_training_data(tmp_path / 'train_data.npz', parameters)
    assert RawData.from_file(tmp_path / 'train_data.npz').labels is not None

    outputs = list(library.supervised.train(tmp_path, tmp_path))
    assert outputs[-1].progress == 1
    assert library.supervised.loaded_model.model_config.model_type == 'supervised'
    final = list(library.supervised.reconstruct(parameters))[-1]
    assert final.progress == 100
    assert final.product.object_.get_geometry() == parameters.product.object_.get_geometry()


def test_training_without_data_fails_before_work(tmp_path):
    library = tiny_library()
    with pytest.raises(PtychodusInputError, match='no training data'):
        next(library.pinn.train(tmp_path, tmp_path))
    assert not list(Path(tmp_path).iterdir())
