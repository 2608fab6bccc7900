"""Regenerate the Ptychodus screenshots in docs/: a scan from loading to reconstruction.

Run from the repository root (about a minute on a CPU)::

    QT_QPA_PLATFORM=offscreen python scripts/make_gui_screenshot.py [--output-dir DIR]

The script starts the real GUI through our launcher (``ptychopinn_ptychodus.launcher.main``)
and, once the event loop runs, presses the buttons a user would, saving a screenshot
after each step:

1. ``ptychodus_1_load.png``: a simulated scan (N=64, 64 raster positions, from
   :func:`ptychopinn_ptychodus.synthetic.simulated_reconstruct_input`) is loaded as a
   product with its diffraction data (Diffraction view);
2. ``ptychodus_2_export.png``: Processing -> Export Training Data writes
   ``train_data.npz`` into a folder (the processing log says so);
3. ``ptychodus_3_train.png``: Train on that folder (PtychoPINN/PINN, up to 50 epochs):
   after 3 epochs the panel's live loss plot shows the training and validation curves
   and the progress bar the epoch and the last loss;
4. ``ptychodus_4_stop.png``: Stop ends the training within a batch and keeps the model of
   the last completed epoch (the log and the panel say which); Infer is now enabled;
5. ``ptychodus_5_infer.png``: Infer reconstructs the scan into a new product, whose
   training curve Ptychodus plots;
6. ``ptychodus_6_reconstruction.png``: the reconstructed object (Object view).

File dialogs answer with a temporary folder. Screenshots are 1280x800 and written
atomically (temporary file in the output folder, then ``os.replace``), as 256-colour PNGs
to keep them small. Nothing is written when a step fails or times out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT_DIR = REPO_ROOT / 'docs'
WINDOW_SIZE = (1280, 800)
N_POSITIONS = 64
EPOCHS_BEFORE_STOP = 3
STEP_TIMEOUT_S = 300.0  # give up (and write nothing more) if a step takes longer
FLUSH_S = 1.5  # Ptychodus's task timer runs once a second: let it update log and bar

# A wait: a condition polled every 100 ms, or a number of seconds.
Wait = Callable[[], bool] | float


def _configure(settings: Any) -> None:
    settings.model.n_filters_scale.set_value(1)
    settings.training.nepochs.set_value(50)
    settings.training.batch_size.set_value(2)
    settings.training.n_groups.set_value(0)  # one group per scan position
    settings.training.validation_fraction.set_value(0.2)
    settings.execution.accelerator.set_value('cpu')
    settings.execution.logger.set_value('none')
    settings.execution.learning_rate.set_value(2e-3)


def _save_png(image: Any, output: Path) -> None:
    """Write a QImage as a 256-colour PNG, atomically."""
    from PIL import Image
    from PyQt5.QtCore import QBuffer, QIODevice

    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, 'PNG')
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix='.tmp_', suffix='.png')
    os.close(handle)

    try:
        import io

        picture = Image.open(io.BytesIO(bytes(buffer.data()))).convert('RGB')
        picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            temporary, optimize=True
        )
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _show_image(image_view: Any, component: str, transformation: str, variant: str) -> None:
    """Choose what an image view shows (as its combo boxes would), rescale, zoom to fit."""
    from PyQt5.QtWidgets import QComboBox, QPushButton, QToolButton

    wanted = {'Array Component': component, 'Transformation': transformation,
              'Variant': variant}
    for box in image_view.findChildren(QComboBox):
        text = wanted.get(box.toolTip())
        if text is not None and box.findText(text) >= 0:
            box.setCurrentText(text)
            box.textActivated.emit(text)
    next(b for b in image_view.findChildren(QPushButton) if b.text() == 'Auto').click()
    next(b for b in image_view.findChildren(QToolButton) if b.toolTip() == 'Home').click()


class _Tour:
    """Drives the running GUI through :meth:`steps`, from a QTimer on the Qt thread."""

    def __init__(self, output_dir: Path, workdir: Path) -> None:
        self.output_dir = output_dir
        self.workdir = workdir
        self.model: Any = None  # the ModelCore, captured when Ptychodus enters it
        self.view: Any = None
        self.written: list[Path] = []
        self.error: str | None = None
        self.started = time.perf_counter()
        self._steps: Iterator[Wait] | None = None
        self._wait: Callable[[], bool] = lambda: True
        self._deadline = 0.0

    # ---------------------------------------------------------------- driver
    def start(self) -> None:
        from PyQt5.QtCore import QTimer

        self._steps = self.steps()
        self._timer = QTimer()
        self._timer.timeout.connect(self._advance)
        self._timer.start(100)

    def _advance(self) -> None:
        from PyQt5.QtWidgets import QApplication

        try:
            if not self._wait():
                if time.monotonic() > self._deadline:
                    raise TimeoutError(f'a step took longer than {STEP_TIMEOUT_S:.0f} s')
                return
            assert self._steps is not None
            wait = next(self._steps)
        except StopIteration:
            self._timer.stop()
            QApplication.instance().quit()
            return
        except Exception:
            self._timer.stop()
            self.error = traceback.format_exc()
            QApplication.instance().quit()
            return

        if callable(wait):
            self._wait = wait
        else:
            until = time.monotonic() + float(wait)
            self._wait = lambda: time.monotonic() >= until
        self._deadline = time.monotonic() + STEP_TIMEOUT_S

    def _log(self, message: str) -> None:
        print(f'[{time.perf_counter() - self.started:6.1f} s] {message}', flush=True)

    def shoot(self, name: str) -> None:
        from PyQt5.QtWidgets import QApplication

        log = self.view.processing_status_view.text_edit.verticalScrollBar()
        log.setValue(log.maximum())  # the latest lines of the processing log
        QApplication.instance().processEvents()
        path = self.output_dir / f'ptychodus_{name}.png'
        _save_png(self.view.grab().toImage(), path)
        self.written.append(path)
        self._log(f'wrote {path}')

    # ---------------------------------------------------------------- GUI parts
    @property
    def processing(self) -> Any:
        return self.model.processing_core.processing_api

    @property
    def actions(self) -> Any:
        return next(
            w for w in self.view.processing_view.children()
            if type(w).__name__ == 'ProcessingActionsView'
        )

    def _product_box(self) -> Any:
        form = self.view.processing_view.layout()
        return form.itemAt(1, form.FieldRole).widget()  # rows: Algorithm, Product, ...

    def _menu_action(self, text: str) -> Any:
        return next(a for a in self.actions.actions_menu.actions() if a.text() == text)

    # ---------------------------------------------------------------- the tour
    def steps(self) -> Iterator[Wait]:
        from ptychodus.api.io import StandardFileLayout
        from ptychodus.view import ViewCore
        from ptychopinn_ptychodus.synthetic import (
            simulated_reconstruct_input,
            write_standard_layout,
        )
        from PyQt5.QtWidgets import QApplication

        app = QApplication.instance()
        self.view = next(w for w in app.topLevelWidgets() if isinstance(w, ViewCore))
        self.view.resize(*WINDOW_SIZE)
        library = self.model.ptychopinn_reconstructor_library
        _configure(library.settings)
        self.model.processing_core.algorithm_parameter.set_value('ptychopinn_pinn')
        monitor = self.processing.task_monitor

        # 1. load a simulated scan (diffraction data + product)
        reconstruct_input, _ = simulated_reconstruct_input(
            N=64, n_positions=N_POSITIONS, object_kind='lines'
        )
        layout_dir = self.workdir / 'synthetic_scan'
        write_standard_layout(layout_dir, reconstruct_input)
        workflow = self.model.workflow_api
        diffraction = workflow.load_assembled_diffraction_data(
            layout_dir / StandardFileLayout.DIFFRACTION
        )
        product = reconstruct_input.product
        product = dataclasses.replace(
            product, metadata=dataclasses.replace(product.metadata, name='simulated_scan')
        )
        scan = workflow.register_product(product, diffraction=diffraction)
        self.view.diffraction_action.trigger()
        yield FLUSH_S
        tree = self.view.diffraction_view.tree_view
        array = tree.model().index(0, 0)
        tree.expand(array)
        tree.setCurrentIndex(tree.model().index(0, 0, array))  # first pattern
        yield FLUSH_S
        _show_image(self.view.diffraction_image_view, 'Real', 'Logarithm (Base 10)', 'fire')
        yield FLUSH_S
        self.shoot('1_load')

        # 2. Processing -> Export Training Data
        self.view.processing_action.trigger()
        self._product_box().setCurrentIndex(scan.get_product_index())
        self._menu_action('Export Training Data...').trigger()
        yield FLUSH_S
        self.shoot('2_export')

        # 3. Train: the live loss plot after a few epochs
        snapshot = monitor.get_completed_runs()
        self.actions.train_button.click()
        yield lambda: monitor.get_progress() >= EPOCHS_BEFORE_STOP
        yield FLUSH_S
        self._log(f'trained {monitor.get_progress()} epochs; progress bar: '
                  f'{self.view.processing_status_view.progress_bar.format()!r}')
        self.shoot('3_train')

        # 4. Stop: the model of the last completed epoch is kept, Infer is enabled
        self.view.processing_status_view.stop_button.click()
        yield lambda: monitor.wait_for_completion_after(snapshot, timeout=0)
        yield FLUSH_S
        monitor.raise_if_failed()
        if not self.actions.reconstruct_button.isEnabled():
            raise RuntimeError('Infer is not enabled after training')
        self._log(library.pinn.training_progress.message)
        self.shoot('4_stop')

        # 5. Infer: a new product holds the reconstruction
        products_before = len(self.model.product_core.product_repository)
        snapshot = monitor.get_completed_runs()
        self.actions.reconstruct_button.click()
        yield lambda: monitor.wait_for_completion_after(snapshot, timeout=0)
        yield FLUSH_S
        monitor.raise_if_failed()
        output_index = products_before  # Infer inserts the output product at the end
        if len(self.model.product_core.product_repository) != products_before + 1:
            raise RuntimeError('Infer did not create one output product')
        self.shoot('5_infer')

        # 6. the reconstructed object
        self.view.object_action.trigger()
        tree = self.view.object_view.tree_view
        tree.setCurrentIndex(tree.model().index(output_index, 0))
        yield FLUSH_S
        _show_image(self.view.object_image_view, 'Phase', 'Identity', 'cyclic_grey_15_85_c0')
        yield FLUSH_S
        self.shoot('6_reconstruction')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output-dir', type=Path, default=DEFAULT_OUTPUT_DIR,
                        help='folder for the PNG files (default: docs/)')
    args = parser.parse_args(argv)

    import ptychodus.model
    from ptychodus.controller.data import FileDialogFactory
    from ptychopinn_ptychodus import launcher
    from PyQt5.QtWidgets import QApplication

    with tempfile.TemporaryDirectory(prefix='ptychopinn_gui_') as workdir:
        tour = _Tour(args.output_dir.resolve(), Path(workdir))
        training_dir = Path(workdir) / 'training'
        training_dir.mkdir()
        originals = (
            ptychodus.model.ModelCore.__enter__,
            QApplication.exec,
            FileDialogFactory.get_existing_directory_path,
            FileDialogFactory.get_save_file_path,
        )

        # Ptychodus's main() keeps its ModelCore to itself; catch it as it is entered.
        def capturing_enter(model: Any) -> Any:
            tour.model = model
            return originals[0](model)

        # Ptychodus calls app.exec() last; start the tour once the event loop runs.
        def exec_with_tour(*_: Any) -> int:  # called on the instance
            tour.start()
            return originals[1]()

        ptychodus.model.ModelCore.__enter__ = capturing_enter
        QApplication.exec = exec_with_tour
        FileDialogFactory.get_existing_directory_path = lambda *a, **k: training_dir
        FileDialogFactory.get_save_file_path = (
            lambda *a, **k: (training_dir / 'train_data.npz', '')
        )

        try:
            code = launcher.main([])
        finally:
            (
                ptychodus.model.ModelCore.__enter__,
                QApplication.exec,
                FileDialogFactory.get_existing_directory_path,
                FileDialogFactory.get_save_file_path,
            ) = originals

    if tour.error is not None:
        print(f'make_gui_screenshot: failed:\n{tour.error}', file=sys.stderr)
        return 1

    print(f'done in {time.perf_counter() - tour.started:.1f} s: '
          + ', '.join(p.name for p in tour.written))
    return int(code)


if __name__ == '__main__':
    sys.exit(main())
