"""What the launcher puts in place of Ptychodus 1.7's ProcessingController (GUI only, PyQt5).

:func:`processing_controller_class` subclasses Ptychodus's controller of the Processing
view so that, for the PtychoPINN reconstructors,

* Infer is enabled only while a product with data is selected *and* a model is loaded
  (Ptychodus enables it for any selected product), with a tooltip saying to train or
  open a model first;
* the buttons are brought up to date whenever a task starts or ends (Ptychodus re-reads
  the model state only when the algorithm changes, so Infer stayed grey after training);
* what Train, Infer, Load Model and Export Training Data log on the Qt thread (say, why
  Train refused) appears in the processing log at once, not with the next task;
* while one of them trains, the progress bar's text shows the epoch and the last losses.

It uses the parent's attributes ``_algorithm_parameter``, ``_processing_api``,
``_actions_view`` and ``_status_view`` (Ptychodus 1.7; the launcher refuses other
releases, and the tests drive the real class).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ptychodus.api.observer import Observable

from .reconstructor import NO_MODEL_MESSAGE, PtychoPINNReconstructor
from .view import PtychoPINNViewControllerFactory

__all__ = ['DEFAULT_PROGRESS_FORMAT', 'processing_controller_class']

DEFAULT_PROGRESS_FORMAT = '%p%'
"""QProgressBar's own text format, restored when no PtychoPINN training runs."""


def processing_controller_class(original: type) -> type:
    """``original`` (Ptychodus's ProcessingController) with the behaviour described above."""

    class ProcessingControllerWithPtychoPINN(original):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            algorithm_parameter: Any,
            processing_api: Any,
            product_repository: Any,
            product_table_model: Any,
            globus: Any,
            genesis: Any,
            view: Any,
            status_view: Any,
            file_dialog_factory: Any,
            view_controller_factories: Iterable[Any],
        ) -> None:
            factories = list(view_controller_factories)
            self._ptychopinn_reconstructors = _reconstructors(factories)
            super().__init__(
                algorithm_parameter, processing_api, product_repository, product_table_model,
                globus, genesis, view, status_view, file_dialog_factory, factories,
            )
            processing_api.task_monitor.add_observer(self)

        def _current_ptychopinn(self) -> PtychoPINNReconstructor | None:
            reconstructor = self._algorithm_parameter.get_current_reconstructor()
            return reconstructor if isinstance(reconstructor, PtychoPINNReconstructor) else None

        def _sync_action_buttons_to_selection(self) -> None:
            super()._sync_action_buttons_to_selection()
            button = self._actions_view.reconstruct_button
            reconstructor = self._current_ptychopinn()

            if reconstructor is not None and not reconstructor.is_model_loaded():
                button.setEnabled(False)
                button.setToolTip(NO_MODEL_MESSAGE.format(name=reconstructor.name))
            else:
                button.setToolTip('')

        def _sync_model_to_view(self) -> None:
            super()._sync_model_to_view()  # enables Infer from the model alone
            self._sync_action_buttons_to_selection()

        def _sync_progress_text(self) -> None:
            running = next(
                (r for r in self._ptychopinn_reconstructors if r.training_progress.is_running),
                None,
            )
            text = (
                running.training_progress.progress_text()
                if running is not None
                else DEFAULT_PROGRESS_FORMAT
            )
            self._status_view.progress_bar.setFormat(text)

        # Ptychodus copies the log into its processing log only when its task monitor
        # reports; these actions run on the Qt thread without a task, so report after them
        # (what they logged, e.g. an export or why Train refused, shows at once).
        def _flush_processing_log(self) -> None:
            self._processing_api.task_monitor.notify_observers()

        def _train(self) -> None:
            super()._train()
            self._flush_processing_log()

        def _reconstruct(self) -> None:
            super()._reconstruct()
            self._flush_processing_log()

        def _load_model(self) -> None:
            super()._load_model()
            self._flush_processing_log()

        def _export_training_data(self) -> None:
            super()._export_training_data()
            self._flush_processing_log()

        def _update(self, observable: Observable) -> None:
            super()._update(observable)

            if observable is self._processing_api.task_monitor:  # on the Qt thread
                self._sync_model_to_view()
                self._sync_progress_text()

    return ProcessingControllerWithPtychoPINN


def _reconstructors(factories: Iterable[Any]) -> list[PtychoPINNReconstructor]:
    """Our reconstructors, found through our panel factory among Ptychodus's factories."""
    return [
        reconstructor
        for factory in factories
        if isinstance(factory, PtychoPINNViewControllerFactory)
        for reconstructor in factory.library
    ]
