"""The Ptychodus GUI with PtychoPINN registered, offscreen (QT_QPA_PLATFORM=offscreen)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('PyQt5.QtWidgets')

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychopinn_ptychodus.library import PtychoPINNReconstructorLibrary  # noqa: E402
from ptychopinn_ptychodus.settings import SETTINGS  # noqa: E402
from ptychopinn_ptychodus.view import PtychoPINNViewControllerFactory, field_label  # noqa: E402
from PyQt5.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PyQt5.QtGui import QWheelEvent  # noqa: E402
from PyQt5.QtWidgets import (  # noqa: E402
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QScrollArea,
    QSpinBox,
    QWidget,
)

pytestmark = pytest.mark.gui

# Runs the real launcher (GUI mode) in a subprocess; once the event loop runs it opens
# the Processing view, selects PtychoPINN/PINN in the algorithm box, records what the
# window shows, saves a screenshot and quits.
PROBE = textwrap.dedent(
    """
    import json, sys, traceback
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication, QComboBox, QStackedWidget
    from ptychopinn_ptychodus import launcher

    report_path, screenshot_path = sys.argv[1], sys.argv[2]
    report = {}

    def probe():
        try:
            from ptychodus.view import ViewCore
            app = QApplication.instance()
            view = next(w for w in app.topLevelWidgets() if isinstance(w, ViewCore))
            report['title'] = view.windowTitle()
            view.resize(1400, 900)
            view.processing_action.trigger()
            combo = next(c for c in view.processing_view.findChildren(QComboBox)
                         if 'ptychopinn_pinn' in [c.itemText(i) for i in range(c.count())])
            report['algorithms'] = [combo.itemText(i) for i in range(combo.count())]
            for key in ('ptychopinn_supervised', 'ptychopinn_pinn'):
                combo.setCurrentText(key)
                combo.textActivated.emit(key)
                app.processEvents()
            stack = next(s for s in view.processing_view.findChildren(QStackedWidget)
                         if s.count() == combo.count())
            report['panel'] = stack.currentWidget().objectName()
            report['panel_visible'] = stack.currentWidget().isVisible()
            report['screenshot_saved'] = view.grab().save(screenshot_path)
        except Exception:
            report['error'] = traceback.format_exc()
        finally:
            with open(report_path, 'w') as handle:
                json.dump(report, handle)
            QApplication.instance().quit()

    run_event_loop = QApplication.exec

    def exec_with_probe(*_):  # called on the instance; the Qt method is static
        QTimer.singleShot(500, probe)
        return run_event_loop()

    QApplication.exec = exec_with_probe
    sys.exit(launcher.main([]))
    """
)


def test_launcher_gui_lists_and_shows_ptychopinn(tmp_path):
    script = tmp_path / 'probe.py'
    script.write_text(PROBE)
    report_path, screenshot = tmp_path / 'report.json', tmp_path / 'gui.png'
    env = dict(os.environ, QT_QPA_PLATFORM='offscreen')
    result = subprocess.run(
        [sys.executable, str(script), str(report_path), str(screenshot)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert report_path.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert 'error' not in report, report['error']
    assert result.returncode == 0

    assert report['title'].lower().startswith('ptychodus')
    assert {'ptychopinn_pinn', 'ptychopinn_supervised'} <= set(report['algorithms'])
    assert report['panel'] == 'PtychoPINNSettingsPanel_pinn'
    assert report['panel_visible']
    assert report['screenshot_saved']
    assert screenshot.stat().st_size > 10_000


@pytest.fixture(scope='module')
def app():
    return QApplication.instance() or QApplication([])


def _row_widget(panel, label_text, widget_type):
    """The field widget in the form row labelled ``label_text``."""
    label = next(w for w in panel.findChildren(QLabel) if w.text() == label_text)
    layout = label.parentWidget().layout()
    assert isinstance(layout, QFormLayout)
    row, _ = layout.getWidgetPosition(label)
    widget = layout.itemAt(row, QFormLayout.FieldRole).widget()
    assert isinstance(widget, widget_type), type(widget)
    return widget


def test_panel_widgets_are_bound_to_the_settings(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')
    assert panel.objectName() == 'PtychoPINNSettingsPanel_pinn'

    epochs = _row_widget(panel, 'Epochs:', QSpinBox)
    assert epochs.value() == 50
    epochs.setValue(7)  # view -> settings
    assert settings.training.nepochs.get_value() == 7
    settings.training.nepochs.set_value(11)  # settings -> view
    assert epochs.value() == 11

    activation = _row_widget(panel, 'Amplitude activation:', QComboBox)
    assert [activation.itemText(i) for i in range(activation.count())] == [
        'sigmoid', 'swish', 'softplus', 'relu'
    ]
    activation.textActivated.emit('swish')
    assert settings.model.amp_activation.get_value() == 'swish'

    flip = _row_widget(panel, 'Flip X', QCheckBox)
    flip.setChecked(True)
    assert settings.inference.flip_x.get_value() is True

    bad_pixels = _row_widget(panel, 'Bad pixels:', QComboBox)
    bad_pixels.textActivated.emit('zero')
    assert settings.inference.bad_pixel_mode.get_value() == 'zero'


def test_every_panel_setting_has_one_field(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('supervised')
    labels = [w.text() for w in panel.findChildren(QLabel)]
    shown = [s for s in SETTINGS if s.in_panel]
    for setting in shown:
        assert labels.count(field_label(setting)) == 1, setting.key
    assert {s.key for s in SETTINGS if not s.in_panel} == {'EnableProgressBar'}


# ------------------------------------------------------------------------- item 9
def test_panel_titles_name_the_method(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    factory = PtychoPINNViewControllerFactory(library)
    for name, title in (('pinn', 'PtychoPINN - unsupervised (physics loss)'),
                        ('supervised', 'PtychoPINN - supervised')):
        panel = factory.create_view_controller(name)
        label = panel.findChild(QLabel, 'PtychoPINNPanelTitle')
        assert label.text() == title
        assert label.font().bold()


# ------------------------------------------------------------------------ item 10
def test_training_and_inference_group_counts_have_distinct_labels(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')
    assert not [w for w in panel.findChildren(QLabel) if w.text() == 'Groups:']

    training = _row_widget(panel, 'Training groups:', QSpinBox)
    inference = _row_widget(panel, 'Groups to reconstruct (0 = all):', QSpinBox)
    assert (training.value(), inference.value()) == (512, 0)
    training.setValue(100)
    inference.setValue(7)
    assert settings.training.n_groups.get_value() == 100
    assert settings.inference.n_groups.get_value() == 7


# ------------------------------------------------------------------------ item 11
def test_fields_without_effect_are_disabled_and_say_why(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    factory = PtychoPINNViewControllerFactory(library)
    pinn = factory.create_view_controller('pinn')
    supervised = factory.create_view_controller('supervised')

    neighbours = _row_widget(pinn, 'Neighbours:', QSpinBox)
    assert not neighbours.isEnabled()  # grid size 1
    assert 'No effect now: grid size 1' in neighbours.toolTip()
    assert not _label(pinn, 'Neighbours:').isEnabled()
    settings.model.gridsize.set_value(2)
    assert neighbours.isEnabled() and 'No effect' not in neighbours.toolTip()
    assert _row_widget(pinn, 'Object big', QCheckBox).isEnabled()

    # supervised training has no physics loss: its weights are shown, but disabled
    for label in ('Loss:', 'Poisson NLL weight:', 'Amplitude MAE weight:',
                  'Real-space weight:', 'Photons per pattern:', 'Object big'):
        widget = _row_widget(supervised, label, QWidget)
        assert not widget.isEnabled(), label
        assert 'No effect now: supervised training' in widget.toolTip(), label
        assert _row_widget(pinn, label, QWidget).isEnabled(), label

    # rules follow the other settings as they change
    nll = _row_widget(pinn, 'Poisson NLL weight:', QWidget)
    settings.training.loss_mode.set_value('mae')
    assert not nll.isEnabled() and 'loss mae has no Poisson term' in nll.toolTip()
    settings.training.loss_mode.set_value('poisson')
    assert nll.isEnabled()

    metric = _row_widget(pinn, 'Checkpoint metric:', QComboBox)
    settings.execution.enable_checkpointing.set_value(False)
    assert metric.isEnabled()  # early stopping still follows it
    settings.execution.early_stop_patience.set_value(0)
    assert not metric.isEnabled()
    assert not _row_widget(pinn, 'Best checkpoints kept:', QSpinBox).isEnabled()
    settings.execution.scheduler.set_value('Adaptive')
    assert metric.isEnabled()

    prefetch = _row_widget(pinn, 'Prefetch factor:', QSpinBox)
    assert not prefetch.isEnabled()
    settings.execution.num_workers.set_value(2)
    assert prefetch.isEnabled()


def test_fields_of_the_seed_knobs_follow_their_no_effect_rules(app):
    """Attention kernel, training stages, validation seed, MLflow fields and the batch
    learning-rate scaling are disabled exactly while they cannot change the run."""
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    factory = PtychoPINNViewControllerFactory(library)
    pinn = factory.create_view_controller('pinn')
    supervised = factory.create_view_controller('supervised')

    def enabled(panel, section, key):
        return panel.field(section, key).isEnabled()

    kernel = pinn.field('PINNModel', 'DecoderSpatialKernel')
    assert not kernel.isEnabled() and 'spatial attention in decoder is off' in kernel.toolTip()
    settings.model.spatial_decoder.set_value(True)
    assert kernel.isEnabled()
    for key in ('ECAEncoder', 'CBAMEncoder', 'CBAMBottleneck', 'CBAMDecoder', 'ECADecoder',
                'SpatialDecoder'):
        assert enabled(pinn, 'PINNModel', key) and enabled(supervised, 'PINNModel', key), key

    # stages: PINN with the Poisson loss; schedule needs stage 2, the factor any stage
    stages = ('Stage1Epochs', 'Stage2Epochs', 'Stage3Epochs')
    assert all(enabled(pinn, 'PINNTraining', key) for key in stages)
    assert not any(enabled(supervised, 'PINNTraining', key) for key in stages)
    assert not enabled(pinn, 'PINNTraining', 'PhysicsWeightSchedule')
    assert not enabled(pinn, 'PINNTraining', 'Stage3LRFactor')
    assert 'all stage epochs are 0' in pinn.field('PINNTraining', 'Stage3LRFactor').toolTip()
    settings.training.stage_3_epochs.set_value(2)
    assert enabled(pinn, 'PINNTraining', 'Stage3LRFactor')
    assert not enabled(pinn, 'PINNTraining', 'PhysicsWeightSchedule')
    settings.training.stage_2_epochs.set_value(3)
    assert enabled(pinn, 'PINNTraining', 'PhysicsWeightSchedule')
    settings.training.loss_mode.set_value('mae')
    stage_1 = pinn.field('PINNTraining', 'Stage1Epochs')
    assert not stage_1.isEnabled() and 'Poisson loss, not mae' in stage_1.toolTip()
    assert not enabled(pinn, 'PINNTraining', 'PhysicsWeightSchedule')
    settings.training.loss_mode.set_value('poisson')
    assert stage_1.isEnabled()

    assert enabled(pinn, 'PINNTraining', 'ValSeed')
    settings.training.validation_fraction.set_value(0.0)
    val_seed = pinn.field('PINNTraining', 'ValSeed')
    assert not val_seed.isEnabled() and 'validation fraction is 0' in val_seed.toolTip()

    mlflow_fields = (('PINNTraining', 'ExperimentName'), ('PINNTraining', 'Notes'),
                     ('PINNTraining', 'ModelName'), ('PINNExecution', 'MLflowTrackingURI'))
    assert not any(enabled(pinn, *key) for key in mlflow_fields)
    assert 'the logger is csv, not mlflow' in pinn.field('PINNTraining', 'Notes').toolTip()
    settings.execution.logger.set_value('mlflow')
    assert all(enabled(pinn, *key) for key in mlflow_fields)

    scale = pinn.field('PINNExecution', 'ScaleLRWithBatch')
    assert not scale.isEnabled() and 'the factor is 1' in scale.toolTip()
    settings.execution.accumulate_grad_batches.set_value(4)
    assert scale.isEnabled()
    settings.execution.accumulate_grad_batches.set_value(1)
    settings.execution.devices.set_value('2')
    assert scale.isEnabled()

    for key in ('DropLast', 'CheckValEveryNEpoch'):
        assert enabled(pinn, 'PINNExecution', key), key
    assert enabled(pinn, 'PINNTraining', 'NumSubsample')


# ------------------------------------------------------------------------ item 12
def test_augmentation_fields_follow_their_no_effect_rules(app):
    """Regrouping needs groups with a choice of members; the symmetry tolerance needs the
    flip augmentation (issue 8)."""
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    pinn = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')

    regroup = pinn.field('PINNTraining', 'RegroupEachEpoch')
    assert not regroup.isEnabled() and 'grid size 1' in regroup.toolTip()
    settings.model.gridsize.set_value(2)
    assert not regroup.isEnabled() and 'neighbours ≤ grid size²' in regroup.toolTip()
    settings.training.neighbor_count.set_value(6)
    assert regroup.isEnabled()
    settings.training.sequential_sampling.set_value(True)
    assert not regroup.isEnabled() and 'sequential sampling' in regroup.toolTip()

    tolerance = pinn.field('PINNTraining', 'AugmentProbeTolerance')
    assert pinn.field('PINNTraining', 'AugmentFlips').isEnabled()
    assert not tolerance.isEnabled() and 'flip augmentation is off' in tolerance.toolTip()
    settings.training.augment_flips.set_value(True)
    assert tolerance.isEnabled()


def test_every_field_has_a_one_sentence_tooltip(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')
    for setting in SETTINGS:
        if not setting.in_panel:
            continue
        widget = panel.field(setting.section, setting.key)
        tip = widget.toolTip()
        assert tip.startswith(setting.tooltip), setting.key
        assert setting.tooltip.endswith('.') and len(setting.tooltip) > 25, setting.key
        assert re.search(r'\.\s+[A-Z]', setting.tooltip) is None, setting.key  # one sentence

    named = ('Network:', 'Amplitude activation:', 'Probe scale:', 'Loss:', 'Stitch weighting:',
             'Strategy:', 'Precision:', 'Scheduler:')
    for label in named:
        assert _row_widget(panel, label, QWidget).toolTip(), label
    # units where the value has one
    assert 'dimensionless' in _row_widget(panel, 'Probe scale:', QWidget).toolTip()
    assert 'pixels' in _row_widget(panel, 'Stitch crop [px]:', QWidget).toolTip()
    assert 'Photons per diffraction pattern' in _row_widget(
        panel, 'Photons per pattern:', QWidget).toolTip()


def test_checkpoint_metric_is_a_choice_of_logged_metrics(app):
    from ptychopinn.config import logged_metric_names

    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    factory = PtychoPINNViewControllerFactory(library)
    for name in ('pinn', 'supervised'):
        panel = factory.create_view_controller(name)
        box = _row_widget(panel, 'Checkpoint metric:', QComboBox)
        items = [box.itemText(i) for i in range(box.count())]
        assert items[:2] == ['val_loss', 'train_loss']
        logged = set().union(*(
            logged_metric_names(name, mode, has_labels=True, realspace_weight=1.0)
            for mode in ('poisson', 'mae')
        ))
        assert set(items) == logged - {'learning_rate'}
        box.textActivated.emit('train_loss')
        assert library.settings.execution.checkpoint_monitor.get_value() == 'train_loss'
    assert 'val_supervised' in items and 'train_poisson' not in items


# ------------------------------------------------------------------------ item 13
def test_the_wheel_scrolls_the_panel_instead_of_changing_unfocused_fields(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    settings = library.settings
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')
    scroll = QScrollArea()  # what Ptychodus puts the panels in
    scroll.setWidgetResizable(True)
    scroll.setWidget(panel)
    scroll.resize(500, 400)
    scroll.show()
    app.processEvents()

    crop = _row_widget(panel, 'Stitch crop [px]:', QSpinBox)
    activation = _row_widget(panel, 'Amplitude activation:', QComboBox)
    scroll.ensureWidgetVisible(crop)
    app.processEvents()
    bar = scroll.verticalScrollBar()
    before = bar.value()
    for widget in (crop, activation):
        assert widget.focusPolicy() == Qt.FocusPolicy.StrongFocus
        _wheel(app, widget, steps=3)  # up: would raise the value, scrolls up instead
    assert settings.inference.stitch_crop_px.get_value() == 0
    assert settings.model.amp_activation.get_value() == 'sigmoid'
    assert bar.value() != before  # the panel scrolled instead

    scroll.activateWindow()
    crop.setFocus()
    app.processEvents()
    assert crop.hasFocus()
    _wheel(app, crop, steps=2)  # a focused spin box takes the wheel as usual
    assert settings.inference.stitch_crop_px.get_value() == 2
    scroll.close()


def _wheel(app, widget, steps: int) -> None:
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(
        centre, QPointF(widget.mapToGlobal(widget.rect().center())), QPoint(),
        QPoint(0, 120 * steps), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase, False,
    )
    QApplication.sendEvent(widget, event)
    app.processEvents()


def _label(panel, label_text):
    return next(w for w in panel.findChildren(QLabel) if w.text() == label_text)


# ------------------------------------------------------------------------- item 5
def test_panel_plots_training_and_validation_loss_live(app, tmp_path):
    pytest.importorskip('torch')
    from ptychopinn_ptychodus.synthetic import simulated_reconstruct_input

    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    s = library.settings
    s.model.n_filters_scale.set_value(1)
    s.training.nepochs.set_value(3)
    s.training.n_groups.set_value(0)
    s.training.batch_size.set_value(4)
    s.training.validation_fraction.set_value(0.25)
    s.execution.accelerator.set_value('cpu')
    s.execution.logger.set_value('none')
    panel = PtychoPINNViewControllerFactory(library).create_view_controller('pinn')
    view = panel.training_view
    assert not view.axes.lines and 'No model yet' in view.status.text()

    parameters, _ = simulated_reconstruct_input(N=64, n_positions=16)
    library.pinn.export_training_data(tmp_path / 'train_data.npz', parameters)
    seen = []
    for output in library.pinn.train(tmp_path, tmp_path):
        app.processEvents()  # the queued redraw from the training thread
        if output.progress > len(seen):
            train_line, val_line = view.axes.lines
            assert list(train_line.get_ydata()) == [x.value for x in output.training_loss]
            assert list(val_line.get_ydata()) == [x.value for x in output.validation_loss]
            assert list(train_line.get_xdata()) == list(range(1, output.progress + 1))
            assert view.status.text().startswith(f'Training: Epoch {output.progress}/3')
            seen.append(output.progress)
    app.processEvents()

    assert seen == [1, 2, 3]  # redrawn as each epoch ended
    assert view.axes.get_yscale() == 'log'
    assert [t.get_text() for t in view.axes.get_legend().get_texts()] == [
        'training', 'validation'
    ]
    assert view.status.text().startswith('Training finished: trained 3 epochs')
    # the curve is kept in the bundle, too
    summary = library.pinn.loaded_model.training_summary
    assert list(view.axes.lines[0].get_ydata()) == summary['train_loss_history']
    assert list(view.axes.lines[1].get_ydata()) == summary['val_loss_history']
