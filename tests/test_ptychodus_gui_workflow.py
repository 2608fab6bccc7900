"""The Processing view of the real Ptychodus GUI (in-process, offscreen) with PtychoPINN.

Each test builds Ptychodus's ModelCore, ViewCore and ControllerCore with the launcher's
hooks installed, registers a tiny simulated scan (N=64, 16-36 positions) and presses the
Processing view's own buttons. File dialogs and Ptychodus's exception dialog are replaced
by recorders; Ptychodus's once-a-second task timer by :meth:`Gui.run_tasks`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('PyQt5.QtWidgets')
pytest.importorskip('torch')
pytest.importorskip('ptychopinn_torch.train')

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from ptychodus.api.io import StandardFileLayout  # noqa: E402
from ptychodus.controller import ControllerCore  # noqa: E402
from ptychodus.controller.data import FileDialogFactory  # noqa: E402
from ptychodus.model import ModelCore  # noqa: E402
from ptychodus.view import ViewCore  # noqa: E402
from ptychodus.view.widgets import ExceptionDialog  # noqa: E402
from ptychopinn_ptychodus.controller import DEFAULT_PROGRESS_FORMAT  # noqa: E402
from ptychopinn_ptychodus.errors import ModelNotLoadedError  # noqa: E402
from ptychopinn_ptychodus.launcher import registered  # noqa: E402
from ptychopinn_ptychodus.synthetic import (  # noqa: E402
    simulated_reconstruct_input,
    write_standard_layout,
)
from PyQt5.QtWidgets import QApplication  # noqa: E402

from ptychopinn_torch.bundle import read_bundle  # noqa: E402

pytestmark = pytest.mark.gui

SETTINGS = """\
[Processing]
Algorithm = ptychopinn_pinn

[PINNModel]
NumFiltersScale = 1

[PINNTraining]
NumEpochs = {epochs}
NumGroups = 0
BatchSize = {batch}
ValidationFraction = 0.25

[PINNExecution]
Accelerator = cpu
Logger = none
"""


@dataclasses.dataclass
class Gui:
    app: QApplication
    model: ModelCore
    view: ViewCore
    dialogs: list[tuple[str, BaseException]]
    directory: dict[str, Path]

    @property
    def library(self):
        return self.model.ptychopinn_reconstructor_library

    @property
    def monitor(self):
        return self.model.processing_core.processing_api.task_monitor

    @property
    def actions(self):
        return next(
            w for w in self.view.processing_view.children()
            if type(w).__name__ == 'ProcessingActionsView'
        )

    @property
    def product_box(self):
        form = self.view.processing_view.layout()
        return form.itemAt(1, form.FieldRole).widget()  # rows: Algorithm, Product, ...

    @property
    def status(self):
        return self.view.processing_status_view

    def run_tasks(self) -> None:
        """What Ptychodus's 1 s timer does, plus Qt's queued events."""
        self.model.run_tasks()
        self.app.processEvents()

    def wait(self, condition, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, 'timed out'
            self.run_tasks()
            time.sleep(0.02)
        self.run_tasks()

    def register_scan(self, directory: Path, n_positions: int = 16, N: int = 64):  # noqa: N803
        parameters, _ = simulated_reconstruct_input(N=N, n_positions=n_positions)
        write_standard_layout(directory, parameters)
        workflow = self.model.workflow_api
        diffraction = workflow.load_assembled_diffraction_data(
            directory / StandardFileLayout.DIFFRACTION
        )
        product = workflow.register_product(parameters.product, diffraction=diffraction)
        self.run_tasks()
        # a settings file makes Ptychodus add an empty product first: select ours
        self.product_box.setCurrentIndex(product.get_product_index())
        self.run_tasks()
        return product

    def press_train(self, directory: Path) -> int:
        """Press Train, choosing ``directory``; returns the monitor's snapshot before."""
        self.directory['train'] = directory
        snapshot = self.monitor.get_completed_runs()
        self.actions.train_button.click()
        return snapshot

    def processing_log(self) -> str:
        return self.status.text_edit.toPlainText()


@pytest.fixture
def gui(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger='ptychopinn_ptychodus')
    app = QApplication.instance() or QApplication([])
    dialogs: list[tuple[str, BaseException]] = []
    directory: dict[str, Path] = {}
    monkeypatch.setattr(
        ExceptionDialog, 'show_exception',
        classmethod(lambda cls, actor, exc: dialogs.append((actor, exc))),
    )
    monkeypatch.setattr(
        FileDialogFactory, 'get_existing_directory_path',
        lambda self, parent, caption, **kw: directory['train'],
    )
    monkeypatch.setattr(
        FileDialogFactory, 'get_open_file_path',
        lambda self, parent, caption, **kw: (directory['open'], ''),
    )
    monkeypatch.setattr(
        FileDialogFactory, 'get_save_file_path',
        lambda self, parent, caption, **kw: (directory['save'], ''),
    )
    settings_path = tmp_path / 'settings.ini'
    settings_path.write_text(SETTINGS.format(epochs=3, batch=4))

    with registered(gui=True), ModelCore(settings_path, log_level=logging.INFO) as model:
        view = ViewCore(is_developer_mode_enabled=False)
        ControllerCore(model, view)
        view.resize(1200, 800)
        view.show()
        view.processing_action.trigger()
        for reconstructor in model.ptychopinn_reconstructor_library:
            reconstructor.tick_interval_s = 0.0
        yield Gui(app, model, view, dialogs, directory)
        view.close()
        view.deleteLater()
        app.processEvents()


# ------------------------------------------------------------------------- item 1
def test_train_without_training_data_says_so_in_a_message_box(gui, tmp_path):
    gui.register_scan(tmp_path / 'scan')
    empty = tmp_path / 'empty'
    empty.mkdir()
    snapshot = gui.press_train(empty)
    gui.run_tasks()

    [(actor, error)] = gui.dialogs
    assert actor == 'Train Local'
    assert str(error).startswith(
        f'no training data in {empty}: use Processing -> Export Training Data first, or '
        'choose the folder you exported to'
    )
    assert gui.monitor.get_completed_runs() == snapshot  # no task was started
    assert not list(empty.iterdir())
    assert f'PINN: cannot train: no training data in {empty}' in gui.processing_log()


def test_a_failure_inside_training_reaches_the_processing_log(gui, tmp_path):
    gui.register_scan(tmp_path / 'scan')
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'train_data.npz').write_bytes(b'not an npz file')
    snapshot = gui.press_train(data)
    gui.wait(lambda: gui.monitor.wait_for_completion_after(snapshot, timeout=0))

    assert not gui.dialogs  # it failed in the background task
    assert 'PINN: training failed:' in gui.processing_log()
    assert 'train_data.npz' in gui.processing_log()
    assert gui.library.pinn.training_progress.state == 'failed'


def _menu_action(gui, text: str):
    return next(a for a in gui.actions.actions_menu.actions() if a.text() == text)


def test_load_model_with_a_bad_file_says_so_in_a_message_box(gui, tmp_path):
    gui.register_scan(tmp_path / 'scan')
    bad = tmp_path / 'not_a_model.zip'
    bad.write_bytes(b'not a zip archive')
    gui.directory['open'] = bad
    _menu_action(gui, 'Load Model...').trigger()
    gui.run_tasks()

    [(actor, error)] = gui.dialogs
    assert actor == 'Load Model'
    assert str(bad) in str(error) and '\n' not in str(error)  # one line naming the file
    assert not gui.library.pinn.is_model_loaded()
    assert not gui.actions.reconstruct_button.isEnabled()


def test_a_failure_inside_infer_reaches_the_gui(gui, tmp_path, tiny_raw, tiny_training_config,
                                                cpu_execution):
    from ptychopinn_torch.train import train

    bundle = train(tiny_raw, None, tiny_training_config(nepochs=1),
                   cpu_execution(logger='none')).bundle_path
    gui.register_scan(tmp_path / 'scan', N=128)  # patterns twice the model's size
    gui.directory['open'] = bundle
    _menu_action(gui, 'Load Model...').trigger()
    gui.run_tasks()
    assert not gui.dialogs and gui.library.pinn.is_model_loaded()
    infer = gui.actions.reconstruct_button
    assert infer.isEnabled()

    products = len(gui.model.product_core.product_repository)
    snapshot = gui.monitor.get_completed_runs()
    infer.click()
    gui.wait(lambda: bool(gui.dialogs)
             or gui.monitor.wait_for_completion_after(snapshot, timeout=0))

    shown = ' '.join(str(error) for _, error in gui.dialogs) + gui.processing_log()
    assert 'trained on 64 x 64' in shown  # the reason, where the user looks
    assert 'PINN: reconstruction failed:' in gui.processing_log()
    # Ptychodus makes the output product before a reconstructor runs; it stays a copy of
    # the input (no half-written object), one product, nothing else
    assert len(gui.model.product_core.product_repository) == products + 1


# ------------------------------------------------------------------------- item 2
def test_infer_is_unavailable_until_a_model_exists(gui, tmp_path):
    scan = gui.register_scan(tmp_path / 'scan')
    infer = gui.actions.reconstruct_button
    assert infer.text() == 'Infer'
    assert gui.actions.train_button.isEnabled()  # a product with data is selected
    assert not infer.isEnabled()
    assert 'train or open a model first' in infer.toolTip()

    # switching algorithms (which re-syncs Ptychodus's view) keeps it unavailable
    parameter = gui.model.processing_core.algorithm_parameter
    parameter.set_value('ptychopinn_supervised')
    parameter.set_value('ptychopinn_pinn')
    gui.run_tasks()
    assert not infer.isEnabled()

    # whatever asks Ptychodus to reconstruct, no empty output product is made
    products = len(gui.model.product_core.product_repository)
    with pytest.raises(ModelNotLoadedError, match='train or open a model first'):
        scan.reconstruct_local(block=True)
    assert len(gui.model.product_core.product_repository) == products


# ------------------------------------------------------------------- items 3 and 6
def test_training_shows_epoch_and_loss_and_then_enables_infer(gui, tmp_path):
    gui.register_scan(tmp_path / 'scan')
    data = tmp_path / 'data'
    gui.directory['save'] = data / 'train_data.npz'
    next(a for a in gui.actions.actions_menu.actions()
         if a.text() == 'Export Training Data...').trigger()
    assert 'PINN: exported 16 patterns to' in gui.processing_log()  # at once
    infer = gui.actions.reconstruct_button
    bar = gui.status.progress_bar
    snapshot = gui.press_train(data)
    assert not gui.dialogs

    texts = set()

    def finished() -> bool:
        texts.add(bar.format())
        return gui.monitor.wait_for_completion_after(snapshot, timeout=0)

    gui.wait(finished)
    epoch_texts = sorted(t for t in texts if t.startswith('Epoch '))
    # the bar's text named the epoch and the last losses while it moved
    assert any(t.startswith('Epoch 1/3 · loss ') and '· validation ' in t for t in epoch_texts)
    assert bar.format() == DEFAULT_PROGRESS_FORMAT  # back to percent when done

    assert gui.library.pinn.is_model_loaded()
    assert infer.isEnabled()  # without switching the algorithm back and forth
    assert infer.toolTip() == ''
    assert 'PINN: epoch 3 train_loss=' in gui.processing_log()


# ------------------------------------------------------------------------- item 4
def test_stop_ends_training_within_a_batch_and_keeps_the_last_epoch(gui, tmp_path):
    # 36 positions, batch 1: 27 training batches per epoch, so a whole extra epoch shows
    gui.library.settings.training.nepochs.set_value(20)
    gui.library.settings.training.batch_size.set_value(1)
    scan = gui.register_scan(tmp_path / 'scan', n_positions=36)
    data = tmp_path / 'data'
    scan.export_training_data(data / 'train_data.npz')
    snapshot = gui.press_train(data)

    gui.wait(lambda: gui.monitor.get_progress() >= 1)
    gui.status.stop_button.click()
    gui.wait(lambda: gui.monitor.wait_for_completion_after(snapshot, timeout=0))

    pinn = gui.library.pinn
    summary = read_bundle(data / 'ptychopinn_model.zip').training_summary
    assert summary['epochs_completed'] == 1
    assert len(summary['train_loss_history']) == 1
    assert pinn.is_model_loaded() and pinn.training_progress.state == 'stopped'
    log = gui.processing_log()
    assert 'stopping after the current batch' in log
    assert 'PINN: stopped; kept the model of epoch 1 (train_loss=' in log
    assert gui.actions.reconstruct_button.isEnabled()
