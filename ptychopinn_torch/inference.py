"""Inference workflow: a trained model reconstructs a new scan in one streamed pass.

Group the positions, predict object patches batch by batch on the accelerator, and stitch
them on the CPU; only one batch at a time lives on the accelerator. Its command line is
``ptychopinn.cli.infer`` (``ptychopinn infer``); running this module
(``python -m ptychopinn_torch.inference``) starts that command line before torch is imported.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # parse the flags first: --help must not wait for torch
    from ptychopinn.cli.infer import main

    sys.exit(main(prog="python -m ptychopinn_torch.inference"))

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ptychopinn._io import (
    atomic_output,
    atomic_write_text,
    check_output_dir,
    output_dir_lock,
    save_failure,
)
from ptychopinn.config import (
    ConfigError,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)
from ptychopinn.config_file import CONFIG_FILENAME, write_config_file
from ptychopinn.data import DataContractError, RawData
from ptychopinn.grouping import find_groups, input_scale
from ptychopinn.metrics import WELL_LIT_FRACTION, illumination_map
from ptychopinn_torch.bundle import (
    BUNDLE_FILENAME,
    CHECKPOINT_DIRNAME,
    LAST_CHECKPOINT,
    BundleError,
    read_bundle,
    read_lightning_checkpoint,
)
from ptychopinn_torch.devices import select_device
from ptychopinn_torch.network_module import NetworkParts, PtychoPINNNetwork
from ptychopinn_torch.preflight import check_inference_resources, check_model_memory, check_scan
from ptychopinn_torch.refine import PatchTransform, RefinementResult, refine_object
from ptychopinn_torch.runtime import NetworkRunner, default_inference_batch, torch_threads
from ptychopinn_torch.stitching import Stitcher

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class LoadedModel:
    """A trained model ready for inference, with the configs it was trained with.

    ``module`` is a :class:`~ptychopinn_torch.network_module.PtychoPINNNetwork` when
    loaded from a file (no Lightning), the trained ``PtychoPINNModule`` when wrapped
    from training; both have ``generator``, ``forward_model``, ``predict_patches`` and
    ``hparams``.
    """

    module: NetworkParts
    model_config: ModelConfig
    training_config: TrainingConfig
    execution_config: ExecutionConfig
    source_path: Path
    training_summary: dict[str, Any]

    @property
    def N(self) -> int:  # noqa: N802 - the physics symbol
        return self.model_config.N

    @property
    def probe(self) -> np.ndarray:
        """The probe the forward model uses (normalised units), complex64 (N, N)."""
        return self.module.forward_model.probe.detach().cpu().numpy()


@dataclass
class Reconstruction:
    """A stitched (and possibly refined) object. ``origin_px`` = (x, y) of
    ``object[0, 0]`` in the scan's object-pixel frame (the frame of
    ``xcoords``/``ycoords``).

    ``illumination`` is the summed probe intensity over the canvas
    (``metrics.illumination_map``). With refinement, ``network_object`` is the stitched
    network output it started from and ``refinement`` its record; ``timings_s`` holds
    ``network`` (prediction and stitching) and ``refinement`` wall times in seconds,
    ``stage_times_s`` the parts: ``grouping`` (before ``network``), ``prediction`` and
    ``stitching`` (together ``network``); ``runtime`` how the network ran (device,
    threads, batch, precision, memory format, compilation).
    """

    object: np.ndarray
    origin_px: tuple[float, float]
    coverage: np.ndarray
    n_groups: int
    network_object: np.ndarray | None = None
    illumination: np.ndarray | None = None
    refinement: RefinementResult | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    stage_times_s: dict[str, float] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.object)

    @property
    def phase(self) -> np.ndarray:
        return np.angle(self.object)


def _module_from_hparams(
    hp: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    source: Path | str = "model",
    module_class: type[NetworkParts] = PtychoPINNNetwork,
) -> NetworkParts:
    """The ``module_class`` module a bundle's or checkpoint's configs describe, with its
    weights; configs that are invalid or do not fit the weights are a BundleError naming
    the file."""
    try:
        model_config = ModelConfig.from_dict(hp["model_config"])
        TrainingConfig.from_dict(hp["training_config"])
        ExecutionConfig.from_dict(hp["execution_config"])
        intensity_scale, input_scale = float(hp["intensity_scale"]), float(hp["input_scale"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{source}: the model's configs are invalid ({exc}); it was edited or written by "
            "another program. Use the bundle training wrote, or train again"
        ) from None
    check_model_memory(model_config, f"{source}: building its network")
    module = module_class(
        model_config=hp["model_config"],
        training_config=hp["training_config"],
        execution_config=hp["execution_config"],
        intensity_scale=intensity_scale,
        input_scale=input_scale,
        monitor=str(hp.get("monitor", "train_loss")),
    )
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # a tensor whose shape differs from the configs'
        detail = next((line.strip() for line in str(exc).splitlines()
                       if "size mismatch" in line), str(exc).splitlines()[0])
        raise BundleError(
            f"{source}: its weights do not fit the architecture its configs describe "
            f"(N={model_config.N}, gridsize={model_config.gridsize}, n_filters_scale="
            f"{model_config.n_filters_scale}): {detail}"
        ) from None
    if missing or unexpected:
        raise BundleError(
            f"{source}: model weights do not match the architecture: missing "
            f"{sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    module.eval()
    return module


#: What a model directory is searched for, in this order: the bundle, the last
#: checkpoint, then the seeds' weight-file names (torch.save'd dicts with "state_dict" and
#: "hyper_parameters", read like a checkpoint: weights only, never unpickled).
MODEL_FILES = (BUNDLE_FILENAME, f"{CHECKPOINT_DIRNAME}/{LAST_CHECKPOINT}", "wts.pt", "model.pt")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def resolve_model_path(path: str | Path) -> Path:
    """A bundle file, a Lightning .ckpt / torch .pt file, or a training output directory
    holding one of :data:`MODEL_FILES` (the first found wins)."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise BundleError(f"{path} holds no model: expected one of {', '.join(MODEL_FILES)}")
    if not path.exists():
        raise BundleError(f"model file {path} does not exist")
    return path


def model_from_mlflow(run_id: str, tracking_uri: str | None = None) -> Path:
    """Download the bundle logged by MLflow run ``run_id`` (training with the mlflow
    logger logs it) and return its local path. ``tracking_uri`` None: MLflow's default
    (the MLFLOW_TRACKING_URI environment variable, else ./mlruns)."""
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise BundleError("InferenceConfig.run_id needs the mlflow package: "
                          "pip install 'ptychopinn[mlflow]'") from exc
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    target = Path(tempfile.mkdtemp(prefix="ptychopinn_mlflow_"))
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=BUNDLE_FILENAME, tracking_uri=tracking_uri,
            dst_path=str(target))
    except (MlflowException, OSError) as exc:
        where = tracking_uri or mlflow.get_tracking_uri()
        reason = " ".join(str(exc).split())[:300]
        raise BundleError(f"InferenceConfig.run_id={run_id!r} is invalid: no model bundle "
                          f"of that MLflow run at {where} ({reason})") from None
    return Path(local)


def load_model(path: str | Path | None = None, *, run_id: str | None = None,
               tracking_uri: str | None = None,
               module_class: type[NetworkParts] = PtychoPINNNetwork) -> LoadedModel:
    """Load a model bundle, checkpoint or weights file (``path``), or the bundle logged by
    MLflow run ``run_id``, without executing code from it.

    ``module_class`` builds ``LoadedModel.module``: the Lightning-free
    :class:`PtychoPINNNetwork` by default; training passes its ``PtychoPINNModule``.
    """
    if run_id is not None:
        path = model_from_mlflow(run_id, tracking_uri)
    if path is None:
        raise BundleError("no model given: set a model path or an MLflow run id")
    source = resolve_model_path(path)
    if source.suffix in _CHECKPOINT_SUFFIXES:
        state_dict, hp = read_lightning_checkpoint(source)
        summary: dict[str, Any] = {}
    else:
        contents = read_bundle(source)
        for section in ("training", "execution"):
            if not isinstance(contents.configs.get(section), dict):
                raise BundleError(f"{source}: bundle is incomplete, missing part: "
                                  f"configs.{section}")
        scales = contents.configs.get("scales", {})
        if not isinstance(scales, dict):
            raise BundleError(f"{source}: configs.scales must be a JSON object")
        hp = {
            "model_config": contents.configs["model"],
            "training_config": contents.configs["training"],
            "execution_config": contents.configs["execution"],
            "intensity_scale": scales.get("intensity_scale", contents.intensity_scale),
            "input_scale": scales.get("input_scale", 1.0),
            "monitor": scales.get("monitor", "train_loss"),
        }
        state_dict = contents.state_dict
        summary = dict(contents.training_summary)
    for key in ("model_config", "training_config", "execution_config", "intensity_scale",
                "input_scale"):
        if key not in hp:
            raise BundleError(f"{source} lacks {key!r}; it was not written by PtychoPINN")
    module = _module_from_hparams(hp, state_dict, source, module_class)
    return LoadedModel(
        module=module,
        model_config=module.model_config,
        training_config=module.training_config,
        execution_config=module.execution_config,
        source_path=source,
        training_summary=summary,
    )


def loaded_model_from_training(result: Any) -> LoadedModel:
    """Wrap a freshly trained module (a train.TrainingResult) for inference."""
    module = result.module.cpu().eval()
    return LoadedModel(
        module=module,
        model_config=module.model_config,
        training_config=module.training_config,
        execution_config=module.execution_config,
        source_path=Path(result.bundle_path or result.output_dir),
        training_summary=dict(result.summary),
    )


def check_inference_inputs(model: LoadedModel, data: RawData) -> None:
    """Errors that must come before any prediction (``preflight.check_scan``)."""
    check_scan(data, model.model_config, "test", training=False)


class _GroupStream(torch.utils.data.Dataset):
    """Gathers a batch of groups' normalised patterns and offsets on demand (one
    vectorised gather per batch), so memory does not grow with gridsize**2 copies of
    the scan. Items are lists of group indices (a BatchSampler's batches)."""

    def __init__(self, diffraction: np.ndarray, positions_px: np.ndarray,
                 indices: np.ndarray, scale: np.float32):
        self.diffraction = diffraction
        self.positions_px = positions_px
        self.indices = indices
        self.scale = scale

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, groups: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        members = self.indices[groups]  # (B, C)
        pos = self.positions_px[members]
        local = (pos - pos.mean(axis=1, keepdims=True)).astype(np.float32)
        x = (self.diffraction[members] * self.scale).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(local), torch.from_numpy(pos)


@torch.inference_mode()
def reconstruct(
    model: LoadedModel | str | Path,
    data: RawData,
    inference_config: InferenceConfig | None = None,
    execution_config: ExecutionConfig | None = None,
    progress_callback: ProgressCallback | None = None,
) -> Reconstruction:
    """Reconstruct the object of a scan with a trained model.

    Groups are formed like in training (nearest neighbours, seeded); ``n_groups=None``
    makes one group per scan position. Patches are predicted in batches of
    ``inference_batch_size`` (default: the measured best for the device,
    ``runtime.default_inference_batch``) with the execution config's threads,
    precision, memory format and compilation (``ptychopinn_torch.runtime``), and
    stitched on the CPU while the accelerator predicts the next batch.
    ``progress_callback(done_groups, total_groups)`` is called after each batch; with
    ``execution_config.enable_progress_bar`` a progress bar over the groups is shown on
    stderr.
    """
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    cfg = inference_config or InferenceConfig()
    ex = execution_config or ExecutionConfig(accelerator="auto")
    check_inference_inputs(model, data)
    check_inference_resources(model.model_config, data, cfg, ex, _batch_groups(model, ex))
    return _reconstruct_checked(model, data, cfg, ex, progress_callback)


def _batch_groups(model: LoadedModel, execution: ExecutionConfig) -> int:
    if execution.inference_batch_size is not None:
        return execution.inference_batch_size
    return default_inference_batch(select_device(execution.accelerator), model.N,
                                   model.model_config.C)


@torch.inference_mode()
def _reconstruct_checked(
    model: LoadedModel,
    data: RawData,
    cfg: InferenceConfig,
    ex: ExecutionConfig,
    progress_callback: ProgressCallback | None,
) -> Reconstruction:
    with torch_threads(ex.num_threads):
        recon = _predict_and_stitch(model, data, cfg, ex, progress_callback)
        if cfg.refine_iterations > 0:
            recon = refine_reconstruction(recon, model, data, cfg, ex,
                                          select_device(ex.accelerator))
    return recon


def _predict_and_stitch(
    model: LoadedModel,
    data: RawData,
    cfg: InferenceConfig,
    ex: ExecutionConfig,
    progress_callback: ProgressCallback | None,
) -> Reconstruction:
    start = time.perf_counter()
    tc = model.training_config
    gridsize = model.model_config.gridsize
    indices, _ = find_groups(
        data.xcoords,
        data.ycoords,
        gridsize,
        neighbor_count=max(tc.neighbor_count, gridsize**2),
        n_groups=cfg.n_groups,
        seed=tc.subsample_seed,
        sequential=cfg.n_groups is None,
    )
    positions = np.stack([data.xcoords, data.ycoords], axis=-1)
    scale = np.float32(input_scale(data.diffraction))
    grouping_s = time.perf_counter() - start

    start = time.perf_counter()
    device = select_device(ex.accelerator)
    batch_size = _batch_groups(model, ex)
    runner = NetworkRunner(model.module, device, ex, batch_size)
    stitcher = Stitcher(
        N=model.N,
        positions_px_all=positions[np.unique(indices)],
        crop_px=cfg.stitch_crop_px,
        weighting=cfg.stitch_weighting,
        probe=model.probe if cfg.stitch_weighting == "probe" else None,
        flip_x=cfg.flip_x,
        flip_y=cfg.flip_y,
        transpose=cfg.transpose,
        align_phase=cfg.stitch_align_phase,
    )
    n_groups = indices.shape[0]
    batches = torch.utils.data.BatchSampler(
        torch.utils.data.SequentialSampler(range(n_groups)), batch_size, drop_last=False)
    loader = torch.utils.data.DataLoader(
        _GroupStream(data.diffraction, positions, indices, scale),
        batch_size=None,
        sampler=batches,
        num_workers=ex.num_workers,
        pin_memory=ex.pin_memory and device.type == "cuda",
    )
    stitching_s = 0.0
    done = 0
    pending: tuple[torch.Tensor, np.ndarray, Any] | None = None

    def stitch(batch: tuple[torch.Tensor, np.ndarray, Any]) -> None:
        nonlocal stitching_s, done
        patches, group_pos, copied = batch
        if copied is not None:
            copied.synchronize()  # the device-to-host copy of this batch has landed
        t = time.perf_counter()
        stitcher.add(patches.numpy().reshape(-1, model.N, model.N), group_pos.reshape(-1, 2))
        stitching_s += time.perf_counter() - t
        done += group_pos.shape[0]
        bar.update(group_pos.shape[0])
        if progress_callback is not None:
            progress_callback(done, n_groups)

    with tqdm(total=n_groups, desc="reconstructing", unit="group", file=sys.stderr,
              disable=not ex.enable_progress_bar, leave=False) as bar:
        for x, offsets, group_pos in loader:
            patches = runner(x.to(device, non_blocking=True),
                             offsets.to(device, non_blocking=True))
            copied = None
            if device.type == "cuda":
                # Asynchronous copy: the CPU stitches the previous batch meanwhile.
                patches = patches.to("cpu", non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
            else:
                patches = patches.cpu()
            if pending is not None:
                stitch(pending)
            pending = (patches, group_pos.numpy(), copied)
        if pending is not None:
            stitch(pending)
    stitched = stitcher.result()
    network_s = time.perf_counter() - start
    return Reconstruction(
        object=stitched.object.astype(np.complex64),
        origin_px=(float(stitched.origin_px[0]), float(stitched.origin_px[1])),
        coverage=stitched.coverage,
        n_groups=n_groups,
        illumination=illumination_map(stitcher.transform_patches(model.probe), positions,
                                      stitched.origin_px, stitched.object.shape),
        timings_s={"network": network_s},
        stage_times_s={"grouping": grouping_s, "prediction": network_s - stitching_s,
                       "stitching": stitching_s},
        runtime=runner.record(),
    )


def refine_reconstruction(
    recon: Reconstruction,
    model: LoadedModel,
    data: RawData,
    inference_config: InferenceConfig,
    execution_config: ExecutionConfig,
    device: torch.device,
) -> Reconstruction:
    """``recon`` refined against every pattern of ``data`` (:mod:`ptychopinn_torch.refine`),
    in the model's units: its probe times its intensity scale against the amplitudes
    normalised as for the network, so the object keeps the network's scale."""
    cfg = inference_config
    fm = model.module.forward_model
    probe = (fm.probe * fm.intensity_scale).detach()
    amplitude_scale = float(input_scale(data.diffraction)) * float(fm.data_intensity_scale)
    positions = np.stack([data.xcoords, data.ycoords], axis=-1)
    with tqdm(total=cfg.refine_iterations, desc="refining", unit="it", file=sys.stderr,
              disable=not execution_config.enable_progress_bar, leave=False) as bar:

        def progress(iteration: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
            logger.debug("refinement iteration %d/%d: loss %.6g", iteration, total, loss)

        result = refine_object(
            recon.object, recon.origin_px, probe, data.diffraction, positions,
            max_iterations=cfg.refine_iterations, tolerance=cfg.refine_tolerance,
            refine_probe=cfg.refine_probe, amplitude_scale=amplitude_scale,
            coverage=recon.coverage, device=device, progress=progress,
            patch_transform=PatchTransform(model.N, cfg.flip_x, cfg.flip_y, cfg.transpose),
        )
    report = logger.info if execution_config.enable_progress_bar else logger.debug
    report("refinement: %d iterations in %.2f s, loss %.4g -> %.4g%s",
                result.iterations, result.time_s,
                result.loss_history[0] if result.loss_history else float("nan"),
                result.final_loss, " (converged)" if result.converged else "")
    # Everything else (canvas, coverage, illumination, stage times, runtime) carries over.
    return dataclasses.replace(
        recon,
        object=np.where(recon.coverage, result.object, 0).astype(np.complex64),
        network_object=recon.object,
        refinement=result,
        timings_s={**recon.timings_s, "refinement": result.time_s},
    )


# ---------------------------------------------------------------------- outputs
def truth_region(
    recon: Reconstruction, object_guess: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of ``object_guess`` under the reconstruction canvas, and the canvas mask
    of pixels that are covered, inside the object and, when the illumination is known,
    well lit (``metrics.WELL_LIT_FRACTION`` of its maximum); None if no overlap."""
    x0, y0 = (int(round(v)) for v in recon.origin_px)
    H, W = recon.object.shape
    truth = np.zeros((H, W), dtype=np.complex64)
    inside = np.zeros((H, W), dtype=bool)
    r0, r1 = max(0, y0), min(object_guess.shape[0], y0 + H)
    c0, c1 = max(0, x0), min(object_guess.shape[1], x0 + W)
    if r0 >= r1 or c0 >= c1:
        return None
    truth[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] = object_guess[r0:r1, c0:c1]
    inside[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] = True
    region = inside & recon.coverage
    if recon.illumination is not None and recon.illumination.max() > 0:
        region &= recon.illumination >= WELL_LIT_FRACTION * recon.illumination.max()
    return truth, region


def compute_metrics(recon: Reconstruction, object_guess: np.ndarray) -> dict[str, Any] | None:
    """ptychopinn.metrics of the reconstruction against the known object, over the
    scanned region: the well-lit covered pixels inside the object (:func:`truth_region`;
    uncovered pixels hold no reconstruction, the barely lit rim is barely measured).
    None if that region is too small."""
    return metrics_or_reason(recon, object_guess)[0]


def metrics_or_reason(
    recon: Reconstruction, object_guess: np.ndarray
) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)``, or ``(None, why they cannot be computed)``."""
    from ptychopinn.metrics import SSIM_RADIUS_PX, evaluate_reconstruction

    found = truth_region(recon, object_guess)
    height, width = object_guess.shape
    if found is None:
        return None, (
            f"the reconstruction (origin x={recon.origin_px[0]:g}, y={recon.origin_px[1]:g}, "
            f"{recon.object.shape[0]} x {recon.object.shape[1]} px) does not overlap "
            f"objectGuess ({height} x {width} px); check the scan positions"
        )
    truth, mask = found
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    minimum = 2 * SSIM_RADIUS_PX + 1
    if rows.size == 0 or rows[-1] - rows[0] + 1 < minimum or cols[-1] - cols[0] + 1 < minimum:
        return None, (
            f"the reconstructed region inside objectGuess is smaller than the {minimum} x "
            f"{minimum} px that SSIM needs"
        )
    return evaluate_reconstruction(recon.object, truth, region=mask), None


def save_image_png(
    path: Path, image: np.ndarray, title: str, label: str, origin_px: tuple[float, float],
    cmap: str,
) -> None:
    """One image with a colour bar and axes in object pixels, written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    H, W = image.shape
    x0, y0 = origin_px
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    shown = ax.imshow(image, cmap=cmap, extent=(x0 - 0.5, x0 + W - 0.5, y0 + H - 0.5, y0 - 0.5))
    ax.set_xlabel("x (object pixels)")
    ax.set_ylabel("y (object pixels)")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label=label)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_outputs(
    recon: Reconstruction,
    output_dir: Path,
    configs: dict[str, Any],
    object_guess: np.ndarray | None = None,
) -> dict[str, Path]:
    """reconstructed_amplitude.png, reconstructed_phase.png, reconstruction.npz and,
    with a known object, metrics.json in ``output_dir``.

    Each file is written atomically; a failed write (disk full) raises ``SaveError`` and
    leaves earlier files intact.  When metrics cannot be computed the reason is logged
    and an earlier metrics.json (which would describe another reconstruction) removed.
    """
    paths = {
        "amplitude_png": output_dir / "reconstructed_amplitude.png",
        "phase_png": output_dir / "reconstructed_phase.png",
        "npz": output_dir / "reconstruction.npz",
    }
    metrics_path = output_dir / "metrics.json"
    metrics, reason = (None, "the test data has no objectGuess (ground truth)")
    if object_guess is not None:
        metrics, reason = metrics_or_reason(recon, object_guess)
    if metrics is not None:
        metrics = {**metrics, **run_record(recon)}
        if recon.network_object is not None:
            network_only = dataclasses.replace(recon, object=recon.network_object)
            metrics["network"] = metrics_or_reason(network_only, object_guess)[0]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_images_and_npz(recon, paths, configs)
        if metrics is not None:
            paths["metrics"] = metrics_path
            atomic_write_text(metrics_path, json.dumps(_finite(metrics), indent=2,
                                                       sort_keys=True, allow_nan=False))
        else:
            metrics_path.unlink(missing_ok=True)
    except OSError as exc:
        raise save_failure(exc.filename or output_dir, exc) from exc
    if metrics is None:
        log = logger.info if object_guess is None else logger.warning
        log("no metrics.json: %s", reason)
    return paths


def run_record(recon: Reconstruction) -> dict[str, Any]:
    """Timings (s) and, with refinement, its record: what metrics.json and
    reconstruction.npz keep about how the image was made."""
    record: dict[str, Any] = {"timings_s": dict(recon.timings_s),
                              "stage_times_s": dict(recon.stage_times_s),
                              "runtime": dict(recon.runtime)}
    result = recon.refinement
    if result is not None:
        record["refinement"] = {
            "iterations": result.iterations,
            "converged": result.converged,
            "loss_per_iteration": list(result.loss_history),
            "final_loss": result.final_loss,
            "time_s": result.time_s,
        }
    return record


def _finite(value: Any) -> Any:
    """Strict JSON: infinite or NaN floats (a perfect match's PSNR) become null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _write_images_and_npz(
    recon: Reconstruction, paths: dict[str, Path], configs: dict[str, Any]
) -> None:
    shown = np.where(recon.coverage, recon.object, np.nan + 0j)
    save_image_png(paths["amplitude_png"], np.abs(shown), "Reconstructed amplitude",
                   "amplitude (transmission)", recon.origin_px, "gray")
    save_image_png(paths["phase_png"], np.angle(shown), "Reconstructed phase",
                   "phase (rad)", recon.origin_px, "twilight")
    with atomic_output(paths["npz"]) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            object=recon.object,
            origin_px=np.asarray(recon.origin_px, dtype=np.float64),
            coverage=recon.coverage,
            configs_json=np.asarray(json.dumps(configs, sort_keys=True)),
            record_json=np.asarray(json.dumps(_finite(run_record(recon)), sort_keys=True)),
            **({} if recon.network_object is None else {"network_object": recon.network_object}),
        )


def run_inference(
    inference_config: InferenceConfig,
    execution_config: ExecutionConfig | None = None,
    data: RawData | None = None,
    model: LoadedModel | None = None,
) -> tuple[Reconstruction, dict[str, Path]]:
    """Load the model and data named in ``inference_config``, reconstruct, write outputs.

    Data, memory and the output directory are checked (``InputError``) before the
    output directory is locked against a second run and anything is written."""
    if model is None:
        if inference_config.model_path is None and inference_config.run_id is None:
            raise BundleError("InferenceConfig.model_path is not set")
        model = load_model(inference_config.model_path, run_id=inference_config.run_id,
                           tracking_uri=(execution_config or ExecutionConfig()
                                         ).mlflow_tracking_uri)
    if data is None:
        if inference_config.test_data_file is None:
            raise DataContractError("InferenceConfig.test_data_file is not set")
        data = RawData.from_file(inference_config.test_data_file)
    ex = execution_config or ExecutionConfig()
    output_dir = Path(inference_config.output_dir)
    check_output_dir(output_dir)
    check_inference_inputs(model, data)
    check_inference_resources(model.model_config, data, inference_config, ex,
                              _batch_groups(model, ex))
    configs = {
        "model": model.model_config.to_dict(),
        "training": model.training_config.to_dict(),
        "inference": inference_config.to_dict(),
        "execution": ex.to_dict(),
        "model_source": str(model.source_path),
    }
    with output_dir_lock(output_dir, "inference"):
        recon = _reconstruct_checked(model, data, inference_config, ex, None)
        paths = write_outputs(recon, output_dir, configs, data.object_guess)
        try:
            paths["config"] = write_config_file(
                output_dir / CONFIG_FILENAME,
                {"inference": inference_config, "execution": ex}, "ptychopinn infer")
        except OSError as exc:
            raise save_failure(output_dir / CONFIG_FILENAME, exc) from exc
    return recon, paths
