"""Backend dispatcher: one entry point per workflow, routed by ``config.backend``.

Only the ``pytorch`` backend exists. An unknown backend is a ``ValueError``; a backend
that cannot be imported is a :class:`BackendUnavailableError` (a ``RuntimeError``) saying
what to install. There is no silent fallback. This module imports no torch until a
workflow runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ptychopinn.config import BACKENDS, ExecutionConfig, InferenceConfig, TrainingConfig
from ptychopinn.errors import RuntimeFault

if TYPE_CHECKING:
    import numpy as np

    from ptychopinn.data import RawData

INSTALL_HINT = "pip install 'torch>=2.2' 'lightning>=2.2'"


class BackendUnavailableError(RuntimeFault):
    """The selected backend's packages are not installed; the message says what to install."""


def _backend(backend: str, part: str) -> ModuleType:
    """Import ``ptychopinn_torch.<part>`` for ``backend`` or fail loudly."""
    if backend == "tensorflow":
        raise ValueError("backend='tensorflow': this distribution has no TensorFlow backend; "
                         "use backend='pytorch'")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(f"ptychopinn_torch.{part}")
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise BackendUnavailableError(
            f"the PyTorch backend requires torch>=2.2 and lightning>=2.2, but {missing!s} "
            f"cannot be imported; install them with: {INSTALL_HINT}"
        ) from exc


def train_cdi_model_with_backend(
    train_data: RawData | Sequence[RawData],
    test_data: RawData | None,
    config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    epoch_callback: Any = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Any:
    """Train with ``config.backend``; returns the backend's TrainingResult (history,
    module, output paths). ``train_data`` may be several scans (trained together, groups
    never spanning two). ``epoch_callback(report)`` returning False stops training;
    ``resume`` continues from the output directory's last checkpoint; ``overwrite``
    replaces an earlier run in it."""
    train = _backend(config.backend, "train")
    return train.train(train_data, test_data, config, execution_config,
                       epoch_callback=epoch_callback, resume=resume, overwrite=overwrite)


def pretrain_with_backend(
    probe_scan: RawData | str | Path,
    config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    **kwargs: Any,
) -> Any:
    """Pretrain with ``config.backend`` on synthetic scans made with ``probe_scan``'s
    probe and positions; ``kwargs`` (``n_objects``, ``object_kinds``, ``test_data``,
    ``resume``, ``overwrite``, ``init_model``, ``probe_source``, ``epoch_callback``) go
    to the backend's ``pretrain``. Returns its TrainingResult."""
    pretrain = _backend(config.backend, "pretrain")
    return pretrain.pretrain(probe_scan, config, execution_config, **kwargs)


def accelerator_problem_with_backend(accelerator: str, backend: str = "pytorch") -> str | None:
    """Why ``accelerator`` cannot run on this machine with ``backend``, or None if it can."""
    return _backend(backend, "devices").accelerator_unavailable(accelerator)


def load_inference_bundle_with_backend(
    path: str | Path | None,
    backend: str = "pytorch",
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """Load a model bundle (or checkpoint, weights file, or an output directory holding
    one), or with ``run_id`` the bundle logged by that MLflow run (at ``tracking_uri``)."""
    inference = _backend(backend, "inference")
    if run_id is not None:
        return inference.load_model(path, run_id=run_id, tracking_uri=tracking_uri)
    return inference.load_model(path)


def reconstruct_with_backend(
    model: Any,
    data: RawData,
    inference_config: InferenceConfig | None = None,
    execution_config: ExecutionConfig | None = None,
    progress_callback: Any = None,
) -> Any:
    """Reconstruct ``data`` with a loaded model; returns the backend's Reconstruction."""
    backend = inference_config.backend if inference_config is not None else "pytorch"
    inference = _backend(backend, "inference")
    return inference.reconstruct(model, data, inference_config, execution_config,
                                 progress_callback=progress_callback)


def run_inference_with_backend(
    inference_config: InferenceConfig,
    execution_config: ExecutionConfig | None = None,
    data: RawData | None = None,
    model: Any = None,
) -> Any:
    """Load the model and data ``inference_config`` names (unless given), reconstruct and
    write the outputs to ``inference_config.output_dir``; returns (Reconstruction, paths)."""
    inference = _backend(inference_config.backend, "inference")
    return inference.run_inference(inference_config, execution_config, data=data, model=model)


def run_cdi_example_with_backend(
    train_data: RawData,
    test_data: RawData | None,
    config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    do_stitching: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Train and, with ``do_stitching``, reconstruct the test scan (or the training scan
    when there is none).

    Returns ``(amplitude, phase, results)``; amplitude and phase are None without
    stitching. ``results`` holds ``backend``, ``history``, ``models`` (``{"lightning_module":
    the trained module}``, as in the seeds), ``training_result``, ``bundle_path`` and, with
    stitching, ``reconstruction``.
    """
    result = train_cdi_model_with_backend(train_data, test_data, config, execution_config)
    results: dict[str, Any] = {
        "backend": config.backend,
        "history": result.history,
        "models": {"lightning_module": result.module},
        "training_result": result,
        "bundle_path": result.bundle_path,
    }
    if not do_stitching:
        return None, None, results
    inference = _backend(config.backend, "inference")
    model = inference.loaded_model_from_training(result)
    recon = inference.reconstruct(
        model, test_data if test_data is not None else train_data,
        InferenceConfig(backend=config.backend), execution_config,
    )
    results["reconstruction"] = recon
    return recon.amplitude, recon.phase, results
