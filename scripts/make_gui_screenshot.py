"""Regenerate docs/ptychodus_gui.png: the Ptychodus GUI (Processing view) training PtychoPINN.

Run from the repository root (takes about a minute on a CPU)::

    QT_QPA_PLATFORM=offscreen python scripts/make_gui_screenshot.py [--output PATH]

The script starts the real GUI through our launcher (``ptychopinn_ptychodus.launcher.main``),
and once the event loop runs it

1. sets the PtychoPINN (PINN) settings small through the settings registry (10 epochs,
   batch 8, filter scale 1, 20 % validation, CPU);
2. registers a small synthetic product (N=64, 36 raster positions, from
   :func:`ptychopinn_ptychodus.synthetic.simulated_reconstruct_input`) with its
   diffraction data;
3. trains ``ptychopinn_pinn`` on it in Ptychodus's background task (the log and progress
   bar update live), and selects PtychoPINN/PINN in the Processing view so our settings
   panel shows;
4. runs Infer; the reconstructed product carries the model's per-epoch training losses,
   which Ptychodus's own loss plot draws; grabs the 1400x900 window, writes the PNG
   atomically (temporary file in the output folder, then ``os.replace``) and quits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / 'docs' / 'ptychodus_gui.png'
WINDOW_SIZE = (1400, 900)
N_POSITIONS = 36
TIMEOUT_S = 300.0  # give up (and write nothing) if training has not finished by then


def _configure(settings) -> None:  # noqa: ANN001 (PtychoPINNSettings)
    settings.model.n_filters_scale.set_value(1)
    settings.training.nepochs.set_value(10)
    settings.training.batch_size.set_value(8)
    settings.training.n_groups.set_value(0)  # one group per scan position
    settings.training.validation_fraction.set_value(0.2)
    settings.execution.accelerator.set_value('cpu')
    settings.execution.logger.set_value('none')


def _save_atomically(pixmap, output: Path) -> None:  # noqa: ANN001 (QPixmap)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix='.tmp_', suffix='.png')
    os.close(handle)

    try:
        if not pixmap.save(temporary, 'PNG'):
            raise RuntimeError(f'could not write {temporary}')
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class _Screenshot:
    """Drives the running GUI step by step from QTimer callbacks on the Qt thread."""

    def __init__(self, output: Path, workdir: Path) -> None:
        self.output = output
        self.workdir = workdir
        self.model = None  # the ModelCore, captured when Ptychodus enters it
        self.view = None
        self.train_outputs: list = []
        self.error: str | None = None
        self.started = time.perf_counter()

    # ---------------------------------------------------------------- helpers
    def _later(self, step, delay_ms: int = 0) -> None:  # noqa: ANN001
        from PyQt5.QtCore import QTimer

        def guarded() -> None:
            try:
                step()
            except Exception:
                self._fail(traceback.format_exc())

        QTimer.singleShot(delay_ms, guarded)

    def _fail(self, message: str) -> None:
        from PyQt5.QtWidgets import QApplication

        self.error = message
        QApplication.instance().quit()

    def _log(self, message: str) -> None:
        print(f'[{time.perf_counter() - self.started:6.1f} s] {message}', flush=True)

    def _record_train_outputs(self, reconstructor) -> None:  # noqa: ANN001
        train = reconstructor.train

        def recording_train(input_path, output_path):  # noqa: ANN001, ANN202
            for output in train(input_path, output_path):
                self.train_outputs.append(output)
                yield output

        reconstructor.train = recording_train

    # ---------------------------------------------------------------- steps
    def start(self) -> None:
        from ptychodus.view import ViewCore
        from ptychopinn_ptychodus.synthetic import (
            simulated_reconstruct_input,
            write_standard_layout,
        )
        from PyQt5.QtWidgets import QApplication

        app = QApplication.instance()
        self.view = next(w for w in app.topLevelWidgets() if isinstance(w, ViewCore))
        self.view.resize(*WINDOW_SIZE)
        self.view.processing_action.trigger()

        model = self.model
        library = model.ptychopinn_reconstructor_library
        _configure(library.settings)
        self._record_train_outputs(library.pinn)
        model.processing_core.algorithm_parameter.set_value('ptychopinn_pinn')

        reconstruct_input, _ = simulated_reconstruct_input(N=64, n_positions=N_POSITIONS)
        layout_dir = self.workdir / 'synthetic_scan'
        write_standard_layout(layout_dir, reconstruct_input)
        from ptychodus.api.io import StandardFileLayout

        workflow = model.workflow_api
        diffraction = workflow.load_assembled_diffraction_data(
            layout_dir / StandardFileLayout.DIFFRACTION
        )
        product = reconstruct_input.product
        product = dataclasses.replace(
            product, metadata=dataclasses.replace(product.metadata, name='synthetic_scan')
        )
        self.product = workflow.register_product(product, diffraction=diffraction)
        self._log(f'registered product {self.product.get_product_index()}; training')

        monitor = model.processing_core.processing_api.task_monitor
        self.snapshot = monitor.get_completed_runs()
        self.product.train_reconstructor_local(layout_dir, self.workdir / 'model', block=False)
        self._later(self.wait_for_training, 500)

    def wait_for_training(self) -> None:
        monitor = self.model.processing_core.processing_api.task_monitor

        if not monitor.wait_for_completion_after(self.snapshot, timeout=0):
            if time.perf_counter() - self.started > TIMEOUT_S:
                raise TimeoutError(f'training did not finish within {TIMEOUT_S:.0f} s')
            self._later(self.wait_for_training, 500)
            return

        monitor.raise_if_failed()

        if not self.train_outputs:
            raise RuntimeError('training yielded no losses')

        self._log(f'trained {len(self.train_outputs)} epochs')
        self._later(self.finish, 1500)  # let Ptychodus's 1 s task timer flush log + progress

    def finish(self) -> None:
        from PyQt5.QtWidgets import QApplication, QComboBox

        app = QApplication.instance()
        view = self.view
        processing_view = view.processing_view

        # Select PtychoPINN/PINN in the algorithm box (as a user would), so our panel shows
        # and the Infer button reflects the trained model.
        combo = next(
            c
            for c in processing_view.findChildren(QComboBox)
            if 'ptychopinn_pinn' in [c.itemText(i) for i in range(c.count())]
        )
        for key in ('ptychopinn_supervised', 'ptychopinn_pinn'):
            combo.setCurrentText(key)
            combo.textActivated.emit(key)
            app.processEvents()

        # Infer: the output product carries the model's training curve, and Ptychodus
        # selects and plots it like any other product's losses.
        self.product.reconstruct_local(block=True)
        app.processEvents()
        product_combo = next(
            c
            for c in processing_view.findChildren(QComboBox)
            if any(c.itemText(i).endswith('_ptychopinn_pinn') for i in range(c.count()))
        )
        output_name = next(
            product_combo.itemText(i)
            for i in range(product_combo.count())
            if product_combo.itemText(i).endswith('_ptychopinn_pinn')
        )
        product_combo.setCurrentText(output_name)
        product_combo.textActivated.emit(output_name)
        product_combo.currentIndexChanged.emit(product_combo.currentIndex())
        app.processEvents()

        status_view = view.processing_status_view
        if not status_view.axes.lines:
            raise RuntimeError('Ptychodus did not plot the training losses')
        status_view.figure_canvas.draw()
        app.processEvents()

        _save_atomically(view.grab(), self.output)
        self._log(f'wrote {self.output}')
        app.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT, help='PNG to write')
    args = parser.parse_args(argv)

    import ptychodus.model
    from ptychopinn_ptychodus import launcher
    from PyQt5.QtWidgets import QApplication

    with tempfile.TemporaryDirectory(prefix='ptychopinn_gui_') as workdir:
        shot = _Screenshot(args.output.resolve(), Path(workdir))

        # Ptychodus's main() keeps its ModelCore to itself; catch it as it is entered.
        enter_model = ptychodus.model.ModelCore.__enter__

        def capturing_enter(model):  # noqa: ANN001, ANN202
            shot.model = model
            return enter_model(model)

        ptychodus.model.ModelCore.__enter__ = capturing_enter

        # Ptychodus calls app.exec() last; start the steps once the event loop runs.
        run_event_loop = QApplication.exec

        def exec_with_steps(*_):  # noqa: ANN002, ANN202 (called on the instance)
            shot._later(shot.start, 500)
            return run_event_loop()

        QApplication.exec = exec_with_steps

        try:
            code = launcher.main([])
        finally:
            QApplication.exec = run_event_loop
            ptychodus.model.ModelCore.__enter__ = enter_model

    if shot.error is not None:
        print(f'make_gui_screenshot: failed:\n{shot.error}', file=sys.stderr)
        return 1

    print(f'done in {time.perf_counter() - shot.started:.1f} s')
    return int(code)


if __name__ == '__main__':
    sys.exit(main())
