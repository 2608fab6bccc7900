"""The Ptychodus GUI with PtychoPINN registered, offscreen (QT_QPA_PLATFORM=offscreen)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('PyQt5.QtWidgets')

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychopinn_ptychodus.library import PtychoPINNReconstructorLibrary  # noqa: E402
from ptychopinn_ptychodus.view import PtychoPINNViewControllerFactory  # noqa: E402
from PyQt5.QtWidgets import (  # noqa: E402
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QSpinBox,
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

    activation = _row_widget(panel, 'Amplitude Activation:', QComboBox)
    assert [activation.itemText(i) for i in range(activation.count())] == [
        'sigmoid', 'swish', 'softplus', 'relu'
    ]
    activation.textActivated.emit('swish')
    assert settings.model.amp_activation.get_value() == 'swish'

    flip = _row_widget(panel, 'Flip X', QCheckBox)
    flip.setChecked(True)
    assert settings.inference.flip_x.get_value() is True

    bad_pixels = _row_widget(panel, 'Bad Pixels:', QComboBox)
    bad_pixels.textActivated.emit('zero')
    assert settings.inference.bad_pixel_mode.get_value() == 'zero'


def test_supervised_panel_hides_the_physics_loss_settings(app):
    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    factory = PtychoPINNViewControllerFactory(library)
    pinn_panel = factory.create_view_controller('pinn')
    supervised_panel = factory.create_view_controller('supervised')
    pinn_labels = {w.text() for w in pinn_panel.findChildren(QLabel)}
    supervised_labels = {w.text() for w in supervised_panel.findChildren(QLabel)}
    assert 'Poisson NLL Weight:' in pinn_labels
    assert 'Poisson NLL Weight:' not in supervised_labels
    assert 'Epochs:' in supervised_labels and 'Stitch Weighting:' in supervised_labels
