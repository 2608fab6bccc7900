"""The ``PINN`` and ``Supervised`` trainable reconstructors (ptychodus.api.reconstruct).

Training and inference run in a worker thread; the generators hand its results to
Ptychodus as they arrive. Ptychodus checks its Stop button only when a generator yields,
so while training the generator also yields after training batches (at most every
``tick_interval_s``); closing it (Stop, or Ptychodus breaking out of its loop) stops the
worker after the current batch, keeps the model of the last completed epoch, waits for
the worker and cleans up in ``finally``. Errors are logged on the library's logger, which
Ptychodus shows in its processing log, before they are re-raised. Each reconstructor is an
``Observable``: observers hear about every change of :attr:`training_progress` (from the
worker's thread). See ``specs/reconstructor_api.md`` for the full contract.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy
from ptychodus.api.io import StandardFileLayout, load_diffraction_data, load_product
from ptychodus.api.observer import Observable
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import (
    ReconstructInput,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
    prepare_reconstruct_input,
)

from ptychopinn import workflows
from ptychopinn._io import atomic_output
from ptychopinn.config import ModelConfig
from ptychopinn.data import RawData

from .conversion import PreparedData, paste_reconstruction, prepare_input
from .errors import ModelNotLoadedError, PtychodusInputError
from .settings import (
    PtychoPINNSettings,
    execution_config_from_settings,
    inference_config_from_settings,
    settings_to_configs,
)
from .training_data import TrainingDataSource, resolve_training_data

__all__ = [
    'MODEL_FILE_EXTENSION',
    'NO_MODEL_MESSAGE',
    'RECONSTRUCT_PROGRESS_GOAL',
    'PtychoPINNReconstructor',
    'TrainingProgress',
]

logger = logging.getLogger(__name__)

MODEL_FILE_EXTENSION: Final[str] = '.zip'
"""Bundles are single zip files (``ptychopinn_torch.bundle``)."""

RECONSTRUCT_PROGRESS_GOAL: Final[int] = 100
"""Reconstruction progress is reported in percent."""

NO_MODEL_MESSAGE: Final[str] = (
    '{name}: no model loaded: train or open a model first '
    '(Train, or "Load Model..." in the menu beside Train)'
)
"""What Infer says (button tooltip, error) before a model is trained or loaded."""

_RECONSTRUCT_REPORT_STEP = 25  # percent between intermediate ReconstructOutputs

_EVENT, _DONE, _FAILED = 'event', 'done', 'failed'
_TICK = object()  # a training batch ended: the generator yields so Ptychodus can check Stop


def _training_losses(model: Any) -> list[LossValue]:
    """Per-epoch training losses recorded in a model bundle (empty for a checkpoint)."""
    history = getattr(model, 'training_summary', {}).get('train_loss_history') or []
    return [LossValue(epoch=epoch, value=float(value)) for epoch, value in enumerate(history)]


@dataclass(frozen=True)
class TrainingProgress:
    """What a reconstructor's training has done so far (losses per completed epoch).

    ``state`` is ``idle`` (never trained here), ``training``, ``stopping`` (Stop pressed,
    finishing the current batch), ``finished``, ``stopped`` or ``failed``; ``message``
    says what was kept, or what failed.
    """

    state: str = 'idle'
    epochs_goal: int = 0
    training_loss: tuple[float, ...] = ()
    validation_loss: tuple[float, ...] = ()
    message: str = ''

    @property
    def epochs_done(self) -> int:
        return len(self.training_loss)

    @property
    def is_running(self) -> bool:
        return self.state in ('training', 'stopping')

    def progress_text(self) -> str:
        """Short text for a progress bar, e.g. ``Epoch 3/10 · loss 0.0123 · validation 0.0145``."""
        text = f'Epoch {self.epochs_done}/{self.epochs_goal}'
        if self.training_loss:
            text += f' · loss {self.training_loss[-1]:.4g}'
        if self.validation_loss:
            text += f' · validation {self.validation_loss[-1]:.4g}'
        if self.state == 'stopping':
            text += ' · stopping'
        return text


class _TrainingControl:
    """The backend's epoch callback: queues every epoch report; polled after every batch
    (``stop_requested``), it queues a tick at most every ``tick_interval_s`` and says
    whether Stop was pressed, so training ends within one batch."""

    def __init__(
        self, post: Callable[[Any], None], stop: threading.Event, tick_interval_s: float
    ) -> None:
        self._post = post
        self._stop = stop
        self._tick_interval_s = tick_interval_s
        self._last_tick_s = time.monotonic()

    def __call__(self, report: Any) -> bool:
        self._post(report)
        return not self._stop.is_set()

    def stop_requested(self) -> bool:
        now_s = time.monotonic()
        if now_s - self._last_tick_s >= self._tick_interval_s:
            self._last_tick_s = now_s
            self._post(_TICK)
        return self._stop.is_set()


class _Worker:
    """Runs ``target(post)`` in a daemon thread; ``post(payload)`` queues an event."""

    def __init__(self, name: str, target: Callable[[Callable[[Any], None]], Any]) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._target = target
        self.stop_requested = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._target(lambda payload: self._queue.put((_EVENT, payload)))
        except BaseException as exc:  # handed to the generator, which re-raises it
            self.error = exc
            self._queue.put((_FAILED, exc))
        else:
            self._queue.put((_DONE, self.result))

    def start(self) -> None:
        self._thread.start()

    def messages(self) -> Iterator[Any]:
        """Event payloads until the target returns; re-raises the target's exception."""
        while True:
            kind, payload = self._queue.get()

            if kind == _FAILED:
                raise payload

            if kind == _DONE:
                return

            yield payload

    def stop_and_join(self) -> None:
        self.stop_requested.set()

        if self._thread.is_alive():
            self._thread.join()


class PtychoPINNReconstructor(TrainableReconstructor, Observable):
    """One PtychoPINN model type (``pinn`` or ``supervised``) as a Ptychodus reconstructor.

    The reconstructor owns the model it trained or loaded; all settings are read from the
    shared :class:`PtychoPINNSettings` when an action starts.
    """

    def __init__(self, name: str, model_type: str, settings: PtychoPINNSettings) -> None:
        Observable.__init__(self)
        self._name = name
        self._model_type = model_type
        self._settings = settings
        self._model: Any = None  # ptychopinn_torch LoadedModel
        self._model_path: Path | None = None
        self._active_goal: int | None = None
        self._training_progress = TrainingProgress()
        self.progress_interval_s = 1.0
        """Least time between intermediate ReconstructOutputs (short runs yield only the
        result)."""
        self.tick_interval_s = 0.2
        """Least time between the extra yields while training, i.e. how late Stop can be
        seen on top of the batch that is running."""

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self._name

    @property
    def model_type(self) -> str:
        return self._model_type

    @property
    def loaded_model(self) -> Any:
        """The loaded ``LoadedModel`` (``.model_config``, ``.N``, ...) or None."""
        return self._model

    @property
    def model_path(self) -> Path | None:
        """File the current model was loaded from (after training: the written bundle)."""
        return self._model_path

    @property
    def training_progress(self) -> TrainingProgress:
        """The current (or last) training's progress; observers hear of every change."""
        return self._training_progress

    def _set_training_progress(self, **changes: Any) -> None:
        self._training_progress = dataclasses.replace(self._training_progress, **changes)
        self.notify_observers()

    def get_progress_goal(self) -> int:
        """Epochs while training, percent while reconstructing."""
        if self._active_goal is not None:
            return self._active_goal

        return self._settings.training.nepochs.get_value()

    # ------------------------------------------------------------------ model files
    def is_model_loaded(self) -> bool:
        return self._model is not None

    def get_model_file_filter(self) -> str:
        return 'PtychoPINN Model (*.zip *.ckpt)'

    def get_model_file_extension(self) -> str:
        return MODEL_FILE_EXTENSION

    def load_model_from_file(self, file_path: Path) -> None:
        """Load a bundle (``.zip``), a Lightning ``.ckpt`` or a directory holding one."""
        model = workflows.load_inference_bundle_with_backend(Path(file_path), backend='pytorch')
        model_type = model.model_config.model_type

        if model_type != self._model_type:
            logger.warning(
                f'{self._name}: loaded a {model_type!r} model from {file_path}; it '
                'reconstructs the same way, but training here would use '
                f'{self._model_type!r}'
            )

        self._model = model
        self._model_path = Path(model.source_path)
        logger.info(
            f'{self._name}: loaded model N={model.N} gridsize={model.model_config.gridsize} '
            f'from {self._model_path}'
        )
        self.notify_observers()

    def save_model(self, file_path: Path) -> None:
        """Write the current model as a bundle to ``file_path``."""
        if self._model is None:
            raise ModelNotLoadedError(f'{self._name}: there is no model to save')

        destination = Path(file_path)
        source = self._model_path

        if source is not None and source.suffix == MODEL_FILE_EXTENSION and source.is_file():
            if source.resolve() != destination.resolve():
                _copy_atomically(source, destination)
        else:  # loaded from a Lightning checkpoint: write a proper bundle
            from ptychopinn_torch.train import save_model_bundle

            save_model_bundle(self._model.module, destination, self._model.training_summary)

        logger.info(f'{self._name}: saved model to {destination}')

    # ------------------------------------------------------------------ data
    def get_training_data_file_filter(self) -> str:
        return 'NumPy Zipped Archive (*.npz)'

    def _bad_pixel_mode(self) -> str:
        return self._settings.inference.bad_pixel_mode.get_value()

    def _to_raw_data(self, prepared: PreparedData) -> RawData:
        raw = prepared.to_raw_data()

        if self._model_type == 'supervised':
            # Supervised training needs the true object patch at every position; the
            # product's object is taken as that truth, cut with PtychoPINN's patch rule.
            from ptychopinn.simulate import extract_patches

            labels = extract_patches(
                prepared.object_guess, prepared.xcoords_px, prepared.ycoords_px, prepared.N
            )
            raw = dataclasses.replace(raw, labels=labels)

        return raw

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        """Write ``parameters`` as a PtychoPINN data-contract NPZ.

        Counts become amplitudes (bad pixels repaired per ``BadPixelMode``), positions
        object pixels, the probe its incoherent mode 0 and the object ``objectGuess``;
        the Supervised reconstructor also writes the object patches as labels (``Y``).
        A path without a suffix gets ``.npz``.
        """
        path = Path(file_path)

        if not path.suffix:
            path = path.with_suffix('.npz')

        prepared = prepare_input(parameters, bad_pixel_mode=self._bad_pixel_mode())
        self._to_raw_data(prepared).save(path)
        logger.info(f'{self._name}: exported {prepared.n_positions} patterns to {path}')

    def _read_training_data(
        self, source: TrainingDataSource
    ) -> tuple[RawData, RawData | None, Path | None, Path | None]:
        if source.train_file is not None:
            train = RawData.from_file(source.train_file)
            test = RawData.from_file(source.test_file) if source.test_file is not None else None
            return train, test, source.train_file, source.test_file

        assert source.standard_layout_dir is not None
        directory = source.standard_layout_dir
        reconstruct_input = prepare_reconstruct_input(
            load_diffraction_data(directory / StandardFileLayout.DIFFRACTION),
            load_product(directory / StandardFileLayout.PRODUCT),
        )
        prepared = prepare_input(reconstruct_input, bad_pixel_mode=self._bad_pixel_mode())
        return self._to_raw_data(prepared), None, None, None

    # ------------------------------------------------------------------ training
    def check_training_input(self, input_path: Path) -> TrainingDataSource:
        """Raise now what would make ``train(input_path, ...)`` fail before any work.

        Finds the training data (:func:`resolve_training_data`) and validates the settings
        (``settings_to_configs``, N as the configs' default); reads no data. Returns where
        the data is. Ptychodus calls it through the launcher before it starts a training
        task, so the error reaches a message box instead of a background thread.
        """
        source = resolve_training_data(Path(input_path))
        settings_to_configs(self._settings, model_type=self._model_type, N=ModelConfig().N)
        return source

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        """Train on the data at ``input_path`` and write the bundle into ``output_path``.

        Yields a TrainOutput after every epoch (all training / validation losses so far,
        ``progress`` = epochs completed) and, unchanged, after training batches at most
        every ``tick_interval_s``, so that Ptychodus sees Stop. When training ends, or is
        stopped, the bundle ``ptychopinn_model.zip`` is loaded as the current model and
        copied to ``model.zip`` in ``output_path`` (the name ``-b reconstruct`` looks for).
        Errors are logged (processing log) and re-raised.
        """
        try:
            yield from self._train(Path(input_path), Path(output_path))
        except Exception as exc:
            logger.error(f'{self._name}: training failed: {exc}')
            self._set_training_progress(state='failed', message=str(exc))
            raise
        finally:
            self._active_goal = None

    def _train(self, input_path: Path, output_dir: Path) -> Iterator[TrainOutput]:
        source = resolve_training_data(input_path)
        logger.info(f'{self._name}: training data: {source.description}')
        train_raw, test_raw, train_file, test_file = self._read_training_data(source)
        model_config, training_config, _, execution_config = settings_to_configs(
            self._settings,
            model_type=self._model_type,
            N=train_raw.N,
            train_data_file=train_file,
            test_data_file=test_file,
            training_output_dir=output_dir,
        )

        for label, raw in (('training', train_raw), ('validation', test_raw)):
            if raw is not None and raw.n_positions < model_config.C:
                raise PtychodusInputError(
                    f'the {label} data has {raw.n_positions} scan positions, but a group '
                    f'needs {model_config.C} (gridsize**2)'
                )

        output_dir.mkdir(parents=True, exist_ok=True)
        self._active_goal = training_config.nepochs
        self._set_training_progress(
            state='training', epochs_goal=training_config.nepochs, training_loss=(),
            validation_loss=(), message='',
        )
        worker: _Worker

        def run(post: Callable[[Any], None]) -> Any:
            control = _TrainingControl(post, worker.stop_requested, self.tick_interval_s)
            return workflows.train_cdi_model_with_backend(
                train_raw, test_raw, training_config, execution_config, epoch_callback=control
            )

        worker = _Worker(f'{self._name}-train', run)
        training_loss: list[LossValue] = []
        validation_loss: list[LossValue] = []
        logger.info(
            f'{self._name}: training N={model_config.N} on {train_raw.n_positions} patterns '
            f'for up to {training_config.nepochs} epochs -> {output_dir}'
        )
        worker.start()

        try:
            for message in worker.messages():
                if message is not _TICK:
                    self._record_epoch(message, training_loss, validation_loss)
                yield TrainOutput(
                    training_loss=list(training_loss),
                    validation_loss=list(validation_loss),
                    progress=len(training_loss),
                )
        except GeneratorExit:
            logger.info(f'{self._name}: stop requested; stopping after the current batch')
            self._set_training_progress(state='stopping')
            worker.stop_and_join()
            self._keep_stopped_model(worker, output_dir)
            raise
        finally:
            worker.stop_and_join()

        self._adopt_trained_model(worker.result, output_dir)
        self._set_training_progress(
            state='finished', message=f'trained {len(training_loss)} epochs: {self._model_path}'
        )

    def _record_epoch(
        self, report: Any, training_loss: list[LossValue], validation_loss: list[LossValue]
    ) -> None:
        training_loss.append(LossValue(epoch=report.epoch, value=report.train_loss))

        if report.val_loss is not None:
            validation_loss.append(LossValue(epoch=report.epoch, value=report.val_loss))

        logger.info(
            f'{self._name}: epoch {report.epoch + 1} train_loss={report.train_loss:.5g}'
            + (f' val_loss={report.val_loss:.5g}' if report.val_loss is not None else '')
        )
        self._set_training_progress(
            training_loss=tuple(loss.value for loss in training_loss),
            validation_loss=tuple(loss.value for loss in validation_loss),
        )

    def _keep_stopped_model(self, worker: _Worker, output_dir: Path) -> None:
        """After Stop: load what the stopped training wrote and say what was kept."""
        if worker.error is not None:
            message = f'training failed while stopping: {worker.error}'
            logger.error(f'{self._name}: {message}')
            self._set_training_progress(state='failed', message=message)
            return

        try:
            self._adopt_trained_model(worker.result, output_dir)
        except Exception as exc:  # the generator is closing: log, do not raise
            message = f'could not load the stopped model: {exc}'
            logger.error(f'{self._name}: {message}')
            self._set_training_progress(state='failed', message=message)
            return

        summary = worker.result.summary
        epochs = summary['epochs_completed']

        if epochs:
            losses = f"train_loss={summary['final_train_loss']:.5g}"
            if summary.get('final_val_loss') is not None:
                losses += f" val_loss={summary['final_val_loss']:.5g}"
            kept = f'the model of epoch {epochs} ({losses})'
        else:
            kept = 'the partly trained model (no epoch completed)'

        message = f'kept {kept}: {self._model_path}'
        logger.info(f'{self._name}: stopped; {message}')
        self._set_training_progress(state='stopped', message=message)

    def _adopt_trained_model(self, result: Any, output_dir: Path) -> None:
        bundle_path = result.bundle_path

        if bundle_path is None:
            raise RuntimeError(f'{self._name}: training finished but wrote no model bundle')

        self.load_model_from_file(Path(bundle_path))
        standard_path = output_dir / f'{StandardFileLayout.MODEL_BASENAME}{MODEL_FILE_EXTENSION}'

        if standard_path.resolve() != Path(bundle_path).resolve():
            _copy_atomically(Path(bundle_path), standard_path)

    # ------------------------------------------------------------------ inference
    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        """Reconstruct the object of ``parameters`` with the loaded model.

        While the network runs, yields the input product at 25/50/75 % progress when at
        least ``progress_interval_s`` has passed since the previous yield (short runs
        yield only the result). The last yield, progress 100, is the final product: the
        stitched object pasted onto the input object's grid; probe, positions and
        metadata unchanged; the model's training losses. Errors are logged (processing
        log) and re-raised.
        """
        try:
            yield from self._reconstruct(parameters)
        except Exception as exc:
            logger.error(f'{self._name}: reconstruction failed: {exc}')
            raise

    def _reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        model = self._model

        if model is None:
            raise ModelNotLoadedError(NO_MODEL_MESSAGE.format(name=self._name))

        prepared = prepare_input(
            parameters,
            bad_pixel_mode=self._bad_pixel_mode(),
            model_n=model.N,
            group_size=model.model_config.C,
        )
        raw = prepared.to_raw_data()
        inference_config = inference_config_from_settings(
            self._settings, model_path=self._model_path
        )
        execution_config = execution_config_from_settings(self._settings)
        self._active_goal = RECONSTRUCT_PROGRESS_GOAL
        worker: _Worker

        def run(post: Callable[[Any], None]) -> Any:
            def on_progress(done: int, total: int) -> bool:
                post((done, total))
                return not worker.stop_requested.is_set()

            return workflows.reconstruct_with_backend(
                model, raw, inference_config, execution_config, progress_callback=on_progress
            )

        worker = _Worker(f'{self._name}-reconstruct', run)
        logger.info(f'{self._name}: reconstructing {prepared.n_positions} patterns')
        worker.start()
        next_report = _RECONSTRUCT_REPORT_STEP
        last_report_s = time.monotonic()

        try:
            for done, total in worker.messages():
                # 100 is kept for the final result
                percent = min(RECONSTRUCT_PROGRESS_GOAL - 1, (100 * done) // max(total, 1))
                now_s = time.monotonic()

                if percent >= next_report and now_s - last_report_s >= self.progress_interval_s:
                    next_report = (percent // _RECONSTRUCT_REPORT_STEP + 1) * _RECONSTRUCT_REPORT_STEP
                    last_report_s = now_s
                    yield ReconstructOutput(product=parameters.product, progress=percent)
        finally:
            worker.stop_and_join()

        reconstruction = worker.result
        object_out = paste_reconstruction(
            parameters.product.object_, reconstruction.object, reconstruction.origin_px
        )
        product = Product(
            metadata=parameters.product.metadata,
            probe_positions=parameters.product.probe_positions,
            probes=parameters.product.probes,
            object_=object_out,
            # A forward pass has no iterations; the product carries the training curve of
            # the model that made it, which is what Ptychodus's loss plot can show.
            losses=_training_losses(self._model),
        )
        covered = int(numpy.count_nonzero(numpy.abs(reconstruction.object) > 0))
        logger.info(
            f'{self._name}: stitched {reconstruction.n_groups} groups into a '
            f'{reconstruction.object.shape[1]} x {reconstruction.object.shape[0]} px region '
            f'({covered} px covered)'
        )
        yield ReconstructOutput(product=product, progress=RECONSTRUCT_PROGRESS_GOAL)


def _copy_atomically(source: Path, destination: Path) -> None:
    """Copy a bundle so that a failed or killed copy leaves ``destination`` as it was."""
    with atomic_output(destination) as tmp:
        shutil.copyfile(source, tmp)
