"""Qt settings panel for the PtychoPINN reconstructors (needs PyQt5; GUI only).

One panel per reconstructor, shown by Ptychodus under the algorithm selector:

* a title naming the method (the algorithm list can only show the keys
  ``ptychopinn_pinn`` / ``ptychopinn_supervised``);
* a live loss plot (training and validation loss per epoch, log scale) with a status
  line, redrawn as epochs end (Ptychodus 1.7 keeps only the final training yield);
* one field per entry of :data:`~ptychopinn_ptychodus.settings.SETTINGS`, built with
  Ptychodus's own parameter view controllers, so every widget is bound to its setting
  (editing a widget changes the setting; opening a settings file updates the widgets).
  Each field has the entry's tooltip; a field that does nothing for the current choices
  is disabled, its tooltip saying why; spin boxes and combo boxes take the mouse wheel
  only when focused, so scrolling the panel never changes a value.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from ptychodus.api.observer import Observable, Observer
from ptychodus.controller.data import FileDialogFactory
from ptychodus.controller.parameters import (
    CheckBoxParameterViewController,
    ComboBoxParameterViewController,
    DecimalLineEditParameterViewController,
    LineEditParameterViewController,
    ParameterViewBuilder,
    ParameterViewController,
    PowerTwoSpinBoxParameterViewController,
    SpinBoxParameterViewController,
)
from ptychodus.controller.processing import ReconstructorViewControllerFactory
from PyQt5.QtCore import QEvent, QObject, Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from .library import LIBRARY_NAME, PtychoPINNReconstructorLibrary
from .reconstructor import PtychoPINNReconstructor
from .settings import SECTIONS, SETTINGS, PtychoPINNSettings, Setting

__all__ = [
    'PANEL_OBJECT_NAME_PREFIX',
    'PANEL_TITLES',
    'PtychoPINNPanel',
    'PtychoPINNViewControllerFactory',
    'field_label',
]

PANEL_OBJECT_NAME_PREFIX = 'PtychoPINNSettingsPanel'
"""Each panel's Qt objectName is this prefix + '_' + reconstructor name."""

PANEL_TITLES = {
    'pinn': 'PtychoPINN - unsupervised (physics loss)',
    'supervised': 'PtychoPINN - supervised',
}
"""Panel title per model type."""


def field_label(setting: Setting) -> str:
    """The form label of ``setting`` (Ptychodus style: check boxes without a colon)."""
    return setting.label if isinstance(setting.default, bool) else f'{setting.label}:'


def _view_controller(
    setting: Setting, parameter: Any, model_type: str
) -> ParameterViewController:
    tip = setting.tooltip
    choices = setting.choices_for(model_type)

    if isinstance(setting.default, bool):
        return CheckBoxParameterViewController(parameter, '', tool_tip=tip)
    if choices:
        return ComboBoxParameterViewController(parameter, choices, tool_tip=tip)
    if setting.widget == 'power_of_two':
        return PowerTwoSpinBoxParameterViewController(parameter, tool_tip=tip)
    if isinstance(setting.default, int):
        return SpinBoxParameterViewController(parameter, tool_tip=tip)
    if isinstance(setting.default, float):
        return DecimalLineEditParameterViewController(parameter, tool_tip=tip)
    return LineEditParameterViewController(parameter, tool_tip=tip)


class _WheelOnlyWhenFocused(QObject):
    """Event filter: an unfocused spin or combo box hands the wheel to the scroll area
    around it (the panel scrolls) instead of changing its value."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt)
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget):
            return False
        if watched.hasFocus():
            return False
        area = watched.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:  # straight to it: Qt does not pass re-sent wheel events up
            QApplication.sendEvent(area.viewport(), event)
        return True


class _FieldRules(Observer):
    """Enables each field only while its setting has an effect; says why in the tooltip."""

    def __init__(
        self,
        settings: PtychoPINNSettings,
        model_type: str,
        fields: list[tuple[Setting, QWidget]],
    ) -> None:
        super().__init__()
        self._settings = settings
        self._model_type = model_type
        self._fields = [(s, w) for s, w in fields if s.no_effect is not None]
        self._groups = [settings.model, settings.training, settings.inference,
                        settings.execution]

        for group in self._groups:
            group.add_observer(self)

        self.apply()

    def detach(self) -> None:
        for group in self._groups:
            group.remove_observer(self)

    def apply(self) -> None:
        for setting, widget in self._fields:
            reason = self._settings.no_effect(setting, self._model_type)
            widget.setEnabled(not reason)
            widget.setToolTip(
                f'{setting.tooltip} No effect now: {reason}.' if reason else setting.tooltip
            )
            label = _label_for(widget)
            if label is not None:
                label.setEnabled(not reason)

    def _update(self, observable: Observable) -> None:
        self.apply()


def _label_for(widget: QWidget) -> QLabel | None:
    parent = widget.parentWidget()
    layout = parent.layout() if parent is not None else None
    if isinstance(layout, QFormLayout):
        label = layout.labelForField(widget)
        return label if isinstance(label, QLabel) else None
    return None


class _ProgressChanged(QObject):
    """Carries a reconstructor's change (any thread) to the Qt thread as a queued signal."""

    changed = pyqtSignal()


class _TrainingView(ParameterViewController, Observer):
    """Live loss plot and a status line for one reconstructor's training."""

    def __init__(self, reconstructor: PtychoPINNReconstructor) -> None:
        super().__init__()
        self._reconstructor = reconstructor
        self.figure = Figure(figsize=(4.0, 2.3), dpi=100, layout='constrained')
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.axes = self.figure.add_subplot(111)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._widget = QWidget()
        self._widget.setObjectName('PtychoPINNTrainingView')
        layout = QVBoxLayout(self._widget)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        layout.addWidget(self.status)
        self._signal = _ProgressChanged()
        self._signal.changed.connect(self.redraw)
        reconstructor.add_observer(self)
        self._widget.destroyed.connect(lambda *_: reconstructor.remove_observer(self))
        self.redraw()

    def get_widget(self) -> QWidget:
        return self._widget

    def _update(self, observable: Observable) -> None:
        try:
            self._signal.changed.emit()  # queued when called from the training thread
        except RuntimeError:  # the panel is gone
            self._reconstructor.remove_observer(self)

    def status_text(self) -> str:
        progress = self._reconstructor.training_progress
        model_path = self._reconstructor.model_path

        if progress.is_running:
            return f'Training: {progress.progress_text()}'
        if progress.state in ('finished', 'stopped'):
            return f'Training {progress.state}: {progress.message}'
        if progress.state == 'failed':
            return f'Training failed: {progress.message}'
        if model_path is not None:
            return f'Model: {model_path}'
        return 'No model yet: press Train, or open one with "Load Model..." (menu beside Train).'

    def redraw(self) -> None:
        progress = self._reconstructor.training_progress
        ax = self.axes
        ax.clear()
        ax.set_xlabel('Epoch')
        ax.set_ylabel('Loss')
        ax.set_title('Training loss', fontsize='medium')

        if progress.training_loss:
            ax.set_yscale('log')
            epochs = range(1, len(progress.training_loss) + 1)
            ax.plot(epochs, progress.training_loss, '.-', label='training')
            if progress.validation_loss:
                ax.plot(range(1, len(progress.validation_loss) + 1), progress.validation_loss,
                        '.--', label='validation')
            ax.legend(fontsize='small')
            ax.set_xlim(0.5, max(2, len(progress.training_loss)) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_formatter(FuncFormatter(lambda value, _: f'{value:.3g}'))
            ax.grid(True, which='both', alpha=0.3)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, 'losses appear here as epochs end', ha='center', va='center',
                    transform=ax.transAxes, color='grey')

        self.status.setText(self.status_text())
        self.canvas.draw_idle()


class _WidgetViewController(ParameterViewController):
    def __init__(self, widget: QWidget) -> None:
        self._widget = widget

    def get_widget(self) -> QWidget:
        return self._widget


class PtychoPINNPanel(QWidget):
    """The settings panel of one reconstructor: title, training view and settings fields."""

    def __init__(
        self,
        library: PtychoPINNReconstructorLibrary,
        reconstructor: PtychoPINNReconstructor,
        file_dialog_factory: FileDialogFactory | None = None,
    ) -> None:
        super().__init__()
        model_type = reconstructor.model_type
        settings = library.settings
        self.setObjectName(f'{PANEL_OBJECT_NAME_PREFIX}_{model_type}')
        self.title = QLabel(PANEL_TITLES[model_type])
        self.title.setObjectName('PtychoPINNPanelTitle')
        self.title.setWordWrap(True)
        font = self.title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.title.setFont(font)
        self.training_view = _TrainingView(reconstructor)

        builder = ParameterViewBuilder(file_dialog_factory)
        builder.add_view_controller_to_top(_WidgetViewController(self.title))
        builder.add_view_controller_to_top(self.training_view)
        self.fields: dict[tuple[str, str], QWidget] = {}
        """Field widget per (section, key)."""

        for setting in SETTINGS:
            if not setting.in_panel:
                continue
            vc = _view_controller(setting, settings.parameter(setting), model_type)
            builder.add_view_controller(vc, field_label(setting), group=SECTIONS[setting.section])
            self.fields[setting.section, setting.key] = vc.get_widget()

        self._parameters = builder.build_widget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._parameters)

        self._wheel_filter = _WheelOnlyWhenFocused(self)
        for widget in self.fields.values():
            if isinstance(widget, QAbstractSpinBox | QComboBox):
                widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
                widget.installEventFilter(self._wheel_filter)

        by_key = {(s.section, s.key): s for s in SETTINGS}
        self._rules = _FieldRules(
            settings, model_type, [(by_key[key], w) for key, w in self.fields.items()]
        )
        rules = self._rules
        self.destroyed.connect(lambda *_: rules.detach())

    def field(self, section: str, key: str) -> QWidget:
        """The widget of the setting ``section``/``key`` (e.g. ``'PINNTraining', 'NumEpochs'``)."""
        return self.fields[section, key]


class PtychoPINNViewControllerFactory(ReconstructorViewControllerFactory):
    """Builds the settings panel Ptychodus shows under the algorithm selector."""

    def __init__(
        self,
        model: PtychoPINNReconstructorLibrary,
        file_dialog_factory: FileDialogFactory | None = None,
    ) -> None:
        super().__init__()
        self._model = model
        self._file_dialog_factory = file_dialog_factory

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    @property
    def library(self) -> PtychoPINNReconstructorLibrary:
        """The library whose reconstructors the panels show."""
        return self._model

    def create_view_controller(self, reconstructor_name: str) -> QWidget:
        reconstructor = next(
            r for r in self._model if r.name.casefold() == reconstructor_name.casefold()
        )
        return PtychoPINNPanel(self._model, reconstructor, self._file_dialog_factory)
