"""What the launcher puts in place of Ptychodus 1.7's model-layer classes (no Qt needed).

* :func:`processing_core_class` subclasses Ptychodus's ``ProcessingCore``: it selects
  ``ptychopinn_pinn`` when the configured algorithm is not available, and gives Ptychodus
  a :class:`PtychoPINNProcessingAPI`, which checks our actions before Ptychodus starts a
  task (no model -> no Infer and no empty output product; no training data or a bad
  setting -> an error before the training task, so the GUI shows it in a message box)
  and writes a batch reconstruction as exactly one file.
* :func:`ptychopinn_torch_library` stands in for Ptychodus's own PtychoPINN-Torch
  library when that one has nothing to offer (its ``ptycho_torch`` package is absent and
  Ptychodus is not in developer mode): same name, no reconstructors and no settings
  sections, so saved settings files hold no unused ``[PtychoPINNTorch*]`` sections.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ptychodus.api.io import save_product
from ptychodus.api.product import Product
from ptychodus.api.reconstruct import PositionIndexFilter, Reconstructor, ReconstructorLibrary
from ptychodus.api.settings import SettingsRegistry
from ptychodus.model.processing.api import ProcessingAlgorithmParameter, ProcessingAPI

from .errors import ModelNotLoadedError
from .library import algorithm_key
from .reconstructor import NO_MODEL_MESSAGE, PtychoPINNReconstructor

__all__ = [
    'PtychoPINNProcessingAPI',
    'processing_core_class',
    'ptychopinn_torch_library',
    'save_product_atomically',
]

logger = logging.getLogger(__name__)

def save_product_atomically(path: Path, product: Product) -> None:
    """Write ``product`` to ``path`` (HDF5) through a temporary file in the same folder."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.h5')
    os.close(handle)

    try:
        save_product(Path(temporary), product)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class PtychoPINNProcessingAPI(ProcessingAPI):
    """Ptychodus's ProcessingAPI with PtychoPINN's checks; other algorithms are unchanged.

    For a PtychoPINN reconstructor: ``reconstruct`` refuses (:class:`ModelNotLoadedError`)
    before Ptychodus inserts an output product when no model is loaded, and with
    ``block=True`` writes ``output_product_file`` itself, once, with the final product
    (Ptychodus would write every yield as ``<stem>.<progress>.h5``, including copies of
    the input); ``train`` runs ``check_training_input`` before the task is queued. The
    errors are also logged on the library logger (Ptychodus's processing log).
    """

    def __init__(
        self,
        task_manager: Any,
        product_api: Any,
        algorithm: ProcessingAlgorithmParameter,
        task_monitor: Any,
    ) -> None:
        super().__init__(task_manager, product_api, algorithm, task_monitor)
        self._ptychopinn_algorithm = algorithm
        self._ptychopinn_product_api = product_api

    def _current_ptychopinn(self, algorithm: str | None) -> PtychoPINNReconstructor | None:
        self.set_reconstructor_if_provided(algorithm)
        reconstructor = self._ptychopinn_algorithm.get_current_reconstructor()
        return reconstructor if isinstance(reconstructor, PtychoPINNReconstructor) else None

    def reconstruct(
        self,
        *,
        product_index: int,
        algorithm: str | None = None,
        index_filter: PositionIndexFilter = PositionIndexFilter.ALL,
        output_product_suffix: str = '',
        output_product_file: Path | None = None,
        block: bool = False,
    ) -> int:
        reconstructor = self._current_ptychopinn(algorithm)
        write_here = reconstructor is not None and block and output_product_file is not None

        if reconstructor is not None and not reconstructor.is_model_loaded():
            error = ModelNotLoadedError(NO_MODEL_MESSAGE.format(name=reconstructor.name))
            logger.error(str(error))
            raise error

        output_index = super().reconstruct(
            product_index=product_index,
            index_filter=index_filter,
            output_product_suffix=output_product_suffix,
            output_product_file=None if write_here else output_product_file,
            block=block,
        )

        if write_here:
            assert output_product_file is not None
            product = self._ptychopinn_product_api.get_item(output_index).get_product()
            save_product_atomically(Path(output_product_file), product)
            logger.info(f'wrote the reconstructed product to {output_product_file}')

        return output_index

    def train(
        self,
        input_path: Path,
        output_path: Path,
        *,
        product_index: int,
        algorithm: str | None = None,
        block: bool = False,
    ) -> None:
        reconstructor = self._current_ptychopinn(algorithm)

        if reconstructor is not None:
            try:
                source = reconstructor.check_training_input(Path(input_path))
            except Exception as exc:
                logger.error(f'{reconstructor.name}: cannot train: {exc}')
                raise
            logger.info(f'{reconstructor.name}: will train on {source.description}')

        super().train(input_path, output_path, product_index=product_index, block=block)


def processing_core_class(original: type) -> type:
    """``original`` (Ptychodus's ProcessingCore) with :class:`PtychoPINNProcessingAPI` and
    ``ptychopinn_pinn`` selected when the configured algorithm is not available."""

    class ProcessingCoreWithPtychoPINN(original):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            task_manager: Any,
            settings_registry: SettingsRegistry,
            product_api: Any,
            algorithm_libraries: Any,
        ) -> None:
            super().__init__(task_manager, settings_registry, product_api, algorithm_libraries)
            self.processing_api = PtychoPINNProcessingAPI(
                task_manager,
                product_api,
                self.algorithm_parameter,
                self.processing_api.task_monitor,
            )
            parameter = self.algorithm_parameter
            default = algorithm_key('PINN')
            available = set(parameter.available_reconstructors())

            if parameter.get_value() not in available and default in available:
                parameter.set_value(default)

    return ProcessingCoreWithPtychoPINN


class _UnavailableLibrary(ReconstructorLibrary):
    """A library with a name and nothing else: no reconstructors, no settings."""

    def __init__(self, name: str, logger_name: str) -> None:
        super().__init__(logger_name)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter(())


def ptychopinn_torch_library(original: type) -> Any:
    """A stand-in for ``original`` (Ptychodus's PtychoPINNTorchReconstructorLibrary class).

    Called like the class; builds the original when it can offer reconstructors (its
    packages are installed, or developer mode lists its placeholders), else an
    :class:`_UnavailableLibrary` that registers no settings groups.
    """
    from ptychodus.model.ptychopinn_torch import core as torch_core

    def build(settings_registry: SettingsRegistry, is_developer_mode_enabled: bool) -> Any:
        # Ptychodus's own test of its packages (a private function; absent -> keep its library)
        available = getattr(torch_core, '_ptychopinn_torch_available', lambda: True)
        if is_developer_mode_enabled or available():
            return original(settings_registry, is_developer_mode_enabled)
        return _UnavailableLibrary('PtychoPINN-Torch', 'ptychodus.model.ptychopinn_torch')

    build.original = original  # type: ignore[attr-defined]
    return build
