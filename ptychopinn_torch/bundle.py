"""Model bundle: one zip file holding everything inference needs, loaded without pickle.

Layout (normative description in ``specs/bundle_format.md``)::

    ptychopinn_model.zip
    ├── manifest.json   format name/version, package version, creation time (UTC),
    │                   configs, intensity_scale, training summary, tensor list,
    │                   SHA-256 of weights.pt
    └── weights.pt      torch.save of a flat dict[str, Tensor]: the model state dict
                        plus the probe (complex64) under the reserved key "__probe__"

``weights.pt`` is only ever read with ``torch.load(..., weights_only=True)``, so a
crafted file cannot run code when a bundle is opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychopinn._io import atomic_output, file_sha256, save_failure
from ptychopinn.errors import InputError

__all__ = [
    "BUNDLE_FILENAME",
    "BUNDLE_FORMAT_NAME",
    "BUNDLE_FORMAT_VERSION",
    "PROBE_KEY",
    "BundleContents",
    "BundleError",
    "BundleNotFoundError",
    "CHECKPOINT_DIRNAME",
    "LAST_CHECKPOINT",
    "manifest_digest",
    "bundle_sha256",
    "load_lightning_checkpoint",
    "read_bundle",
    "read_lightning_checkpoint",
    "save_bundle",
]

BUNDLE_FILENAME = "ptychopinn_model.zip"
BUNDLE_FORMAT_NAME = "ptychopinn-bundle"
BUNDLE_FORMAT_VERSION = 1
PROBE_KEY = "__probe__"

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.pt"
#: Directory of a training output directory that holds the Lightning checkpoints.
CHECKPOINT_DIRNAME = "checkpoints"
#: File name of the checkpoint training refreshes every epoch (in ``checkpoints/``).
LAST_CHECKPOINT = "last.ckpt"
#: Manifest key holding :func:`manifest_digest` (optional: bundles written before it
#: existed load unverified).
MANIFEST_DIGEST_KEY = "manifest_sha256"
_RESERVED_PREFIX = "__"


class BundleError(InputError):
    """A file is not a readable PtychoPINN bundle (or checkpoint); the message says why."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle path does not exist (also catchable as ``FileNotFoundError``)."""


@dataclass(frozen=True)
class BundleContents:
    """Everything read from a bundle.

    Attributes:
        manifest: the parsed ``manifest.json``.
        configs: name -> config dict as passed to :func:`save_bundle` (always has "model").
        state_dict: model tensors on the CPU (the probe is not among them).
        intensity_scale: Poisson scale, sqrt(photons) / (N/2) (see conventions.md).
        probe: complex64, (N, N) or (modes, N, N).
        training_summary: free-form JSON dict written at training time.
        format_version: the bundle's ``format_version``.
        package_version: the PtychoPINN version that wrote it.
        created_utc: ISO-8601 UTC time the bundle was written.
    """

    manifest: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    state_dict: dict[str, torch.Tensor]
    intensity_scale: float
    probe: np.ndarray
    training_summary: dict[str, Any]
    format_version: int
    package_version: str
    created_utc: str


# --------------------------------------------------------------------------- helpers


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("ptychopinn")
    except PackageNotFoundError:
        import ptychopinn

        return str(getattr(ptychopinn, "__version__", "unknown"))


def _jsonable(value: Any, where: str, *, nonfinite_to_none: bool) -> Any:
    """Plain-JSON copy of ``value``; numpy scalars/arrays, tuples and paths are converted.

    Configs must be finite (they were validated); a training summary may legitimately
    hold a NaN loss, which JSON cannot encode, so it becomes null there.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if nonfinite_to_none:
            return None
        raise ValueError(f"{where} = {value!r} is not finite; JSON cannot store it")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}; JSON keys are strings")
            out[key] = _jsonable(item, f"{where}.{key}", nonfinite_to_none=nonfinite_to_none)
        return out
    if isinstance(value, list | tuple):
        return [
            _jsonable(item, f"{where}[{i}]", nonfinite_to_none=nonfinite_to_none)
            for i, item in enumerate(value)
        ]
    raise ValueError(
        f"{where} has type {type(value).__name__}, which is not JSON-serialisable "
        "(pass plain dicts, e.g. config.to_dict())"
    )


def _probe_tensor(probe: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(probe, torch.Tensor):
        arr = probe.detach().cpu().numpy()
    else:
        arr = np.asarray(probe)
    if arr.ndim not in (2, 3) or arr.shape[-1] != arr.shape[-2] or arr.size == 0:
        raise ValueError(f"probe must have shape (N, N) or (modes, N, N), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"probe must be numeric (complex), got dtype {arr.dtype}")
    arr = arr.astype(np.complex64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("probe contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _tensor_listing(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    return {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for name, t in tensors.items()
    }


# --------------------------------------------------------------------------- writing


def save_bundle(
    path: str | os.PathLike[str],
    *,
    state_dict: Mapping[str, torch.Tensor],
    configs: Mapping[str, Mapping[str, Any]],
    intensity_scale: float,
    probe: np.ndarray | torch.Tensor,
    training_summary: Mapping[str, Any],
) -> Path:
    """Write a model bundle atomically and return its path.

    If ``path`` is an existing directory the bundle is written inside it as
    :data:`BUNDLE_FILENAME`.  The file appears complete or not at all; an existing
    file at ``path`` is left untouched if anything fails.

    Args:
        path: target file (conventionally ``<output_dir>/ptychopinn_model.zip``).
        state_dict: model tensors; names must not start with "__" (reserved).
        configs: name -> JSON-able dict; must contain "model" (e.g. ``{"model":
            model_cfg.to_dict(), "training": ..., "execution": ...}``).
        intensity_scale: Poisson scale sqrt(photons)/(N/2), finite and > 0.
        probe: complex probe, (N, N) or (modes, N, N); stored as complex64.
        training_summary: JSON-able dict (losses, epochs, timings); non-finite floats
            are stored as null.

    Raises:
        ValueError: an argument is invalid (message names it).
    """
    target = Path(path)
    if target.is_dir():
        target = target / BUNDLE_FILENAME

    if not isinstance(configs, Mapping) or "model" not in configs:
        raise ValueError("configs must be a mapping with at least a 'model' entry")
    configs_json: dict[str, Any] = {}
    for name, cfg in configs.items():
        if not isinstance(cfg, Mapping):
            raise ValueError(f"configs[{name!r}] must be a dict, got {type(cfg).__name__}")
        configs_json[str(name)] = _jsonable(cfg, f"configs.{name}", nonfinite_to_none=False)
    if not isinstance(training_summary, Mapping):
        raise ValueError("training_summary must be a dict")
    summary_json = _jsonable(training_summary, "training_summary", nonfinite_to_none=True)

    if isinstance(intensity_scale, bool) or not isinstance(
        intensity_scale, int | float | np.floating | np.integer | torch.Tensor
    ):
        raise ValueError(f"intensity_scale must be a number, got {type(intensity_scale).__name__}")
    scale = float(intensity_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"intensity_scale must be finite and > 0, got {scale}")

    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or name.startswith(_RESERVED_PREFIX):
            raise ValueError(
                f"state_dict key {name!r} is not allowed (keys are strings not starting "
                f"with {_RESERVED_PREFIX!r}, which is reserved)"
            )
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"state_dict[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}"
            )
        # clone: a view would otherwise drag its whole base storage into the file.
        tensors[name] = tensor.detach().cpu().clone()
    tensors[PROBE_KEY] = _probe_tensor(probe)

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    weights = buffer.getvalue()

    manifest = {
        "format": BUNDLE_FORMAT_NAME,
        "format_version": BUNDLE_FORMAT_VERSION,
        "package_version": _package_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "configs": configs_json,
        "intensity_scale": scale,
        "training_summary": summary_json,
        "probe_key": PROBE_KEY,
        "tensors": _tensor_listing(tensors),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
    manifest_bytes = json.dumps(manifest, indent=2, allow_nan=False).encode("utf-8")

    try:
        with atomic_output(target) as tmp:
            with zipfile.ZipFile(tmp, "w") as zf:
                zf.writestr(MANIFEST_NAME, manifest_bytes, compress_type=zipfile.ZIP_DEFLATED)
                # Float weights barely compress; storing keeps save/load fast.
                zf.writestr(WEIGHTS_NAME, weights, compress_type=zipfile.ZIP_STORED)
    except OSError as exc:
        raise save_failure(target, exc) from exc
    return target


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest without its own digest, as canonical JSON (sorted keys,
    no whitespace): covers the configs, scales, summary and tensor list."""
    content = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- reading


def _read_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise BundleError(f"{path}: bundle is incomplete, missing part: {name}") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{path}: {name} is corrupt inside the zip ({exc})") from exc


def _unpickler_detail(exc: Exception) -> str:
    """The useful part of torch's weights_only error (not its advice to disable the check)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = text.split(marker, 1)[1].strip()
        first = rest.splitlines()[0].strip() if rest else ""
        for cut in (" was not an allowed global", ". Please use"):
            first = first.split(cut, 1)[0]
        if first:
            return first
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # torch >= 2.6 words a refused global "Trying to load unsupported GLOBAL x.y ..."
    blocked = next((line for line in lines if "unsupported GLOBAL" in line), None)
    if blocked is not None:
        return blocked.removeprefix("Trying to load ").split(" whose module", 1)[0]
    if lines and "weights_only" not in lines[0]:
        return f"{type(exc).__name__}: {lines[0]}"
    return type(exc).__name__


# torch.save writes a zip archive (since torch 1.6) or, legacy, a pickle (protocol >= 2)
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def _safe_torch_load(
    data: bytes | Path, what: str, extra_safe_globals: Iterable[Any] = (), advice: str = ""
) -> Any:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    head = data[:4] if isinstance(data, bytes) else _file_head(data)
    if not head.startswith(_TORCH_FILE_STARTS):
        raise BundleError(
            f"{what} is not a file written by torch.save (it starts with {head!r}){advice}"
        )
    extra = list(extra_safe_globals)
    try:
        if extra:
            with torch.serialization.safe_globals(extra):
                return torch.load(source, weights_only=True, map_location="cpu")
        return torch.load(source, weights_only=True, map_location="cpu")
    except Exception as exc:
        # weights_only refuses any pickled global outside torch's allow-list before it
        # is called, so nothing from the file has run at this point.
        raise BundleError(
            f"{what} is not a plain tensor file and was refused without unpickling "
            f"arbitrary objects ({_unpickler_detail(exc)}){advice}"
        ) from exc


def _file_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError as exc:
        raise BundleError(f"{path} cannot be read ({exc.strerror or exc})") from exc


def read_bundle(path: str | os.PathLike[str]) -> BundleContents:
    """Open a model bundle written by :func:`save_bundle`.

    ``path`` may be the bundle file or a directory containing :data:`BUNDLE_FILENAME`.
    Tensors are loaded on the CPU with ``torch.load(weights_only=True)``.

    Raises:
        BundleNotFoundError: the path does not exist.
        BundleError: not a zip / not a bundle / bad manifest JSON / newer format version /
            missing part / checksum mismatch / weights refused by the safe loader.
    """
    p = Path(path)
    if p.is_dir():
        p = p / BUNDLE_FILENAME
    if not p.exists():
        raise BundleNotFoundError(f"model bundle not found: {p}")
    if not zipfile.is_zipfile(p):
        raise BundleError(
            f"{p} is not a zip archive, so not a PtychoPINN model bundle "
            f"(expected a {BUNDLE_FILENAME} written by save_bundle)"
        )
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{p}: cannot open the zip archive ({exc})") from exc
    with zf:
        names = set(zf.namelist())
        if MANIFEST_NAME not in names:
            raise BundleError(
                f"{p} is a zip archive but not a PtychoPINN model bundle (no {MANIFEST_NAME})"
            )
        raw_manifest = _read_member(zf, MANIFEST_NAME, p)
        try:
            manifest = json.loads(raw_manifest.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{p}: {MANIFEST_NAME} is not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{p}: {MANIFEST_NAME} must hold a JSON object")
        if manifest.get("format") != BUNDLE_FORMAT_NAME:
            raise BundleError(
                f"{p} is not a PtychoPINN model bundle: manifest format is "
                f"{manifest.get('format')!r}, expected {BUNDLE_FORMAT_NAME!r}"
            )
        version = manifest.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BundleError(
                f"{p}: manifest format_version must be a positive integer, got {version!r}"
            )
        if version > BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{p} was written by a newer PtychoPINN (package "
                f"{manifest.get('package_version', 'unknown')}): bundle format {version} > "
                f"supported {BUNDLE_FORMAT_VERSION}; upgrade PtychoPINN to read it"
            )

        expected_digest = manifest.get(MANIFEST_DIGEST_KEY)
        if expected_digest is not None:
            try:
                actual_digest = manifest_digest(manifest)
            except ValueError:  # NaN/Infinity typed into the JSON
                actual_digest = "not canonical JSON"
            if not isinstance(expected_digest, str) or actual_digest != expected_digest.lower():
                raise BundleError(
                    f"{p}: the manifest was modified after the bundle was written (its "
                    f"{MANIFEST_DIGEST_KEY} no longer matches), so its configs cannot be "
                    "trusted; use the original bundle or train again"
                )

        configs = manifest.get("configs")
        if not isinstance(configs, dict) or not isinstance(configs.get("model"), dict):
            raise BundleError(f"{p}: bundle is incomplete, missing part: configs.model")
        for name, cfg in configs.items():
            if not isinstance(cfg, dict):
                raise BundleError(f"{p}: configs.{name} must be a JSON object")
        scale = manifest.get("intensity_scale")
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise BundleError(f"{p}: bundle is incomplete, missing part: intensity_scale")
        if not math.isfinite(scale) or scale <= 0:
            raise BundleError(f"{p}: intensity_scale must be finite and > 0, got {scale}")
        listing = manifest.get("tensors")
        if not isinstance(listing, dict):
            raise BundleError(f"{p}: bundle is incomplete, missing part: tensors (manifest)")
        expected_sha = manifest.get("weights_sha256")
        if not isinstance(expected_sha, str):
            raise BundleError(f"{p}: bundle is incomplete, missing part: weights_sha256")
        probe_key = manifest.get("probe_key", PROBE_KEY)
        summary = manifest.get("training_summary", {})
        if not isinstance(summary, dict):
            raise BundleError(f"{p}: training_summary must be a JSON object")

        weights_name = manifest.get("weights_file", WEIGHTS_NAME)
        if weights_name not in names:
            raise BundleError(f"{p}: bundle is incomplete, missing part: {weights_name}")
        weights = _read_member(zf, weights_name, p)

    actual_sha = hashlib.sha256(weights).hexdigest()
    if actual_sha != expected_sha.lower():
        raise BundleError(
            f"{p}: checksum mismatch for {weights_name} (manifest {expected_sha}, file "
            f"{actual_sha}); the bundle is corrupt or was modified"
        )
    tensors = _safe_torch_load(weights, f"{p}: {weights_name}")
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise BundleError(f"{p}: {weights_name} must hold a flat dict of name -> tensor")
    actual_listing = _tensor_listing(tensors)
    if actual_listing != listing:
        missing = sorted(set(listing) - set(actual_listing))
        extra = sorted(set(actual_listing) - set(listing))
        changed = sorted(
            k for k in set(listing) & set(actual_listing) if listing[k] != actual_listing[k]
        )
        raise BundleError(
            f"{p}: {weights_name} does not match the manifest's tensor list "
            f"(missing {missing}, unexpected {extra}, different shape/dtype {changed})"
        )
    if probe_key not in tensors:
        raise BundleError(f"{p}: bundle is incomplete, missing part: probe ({probe_key})")
    probe = tensors.pop(probe_key).numpy().astype(np.complex64, copy=False)

    return BundleContents(
        manifest=manifest,
        configs=configs,
        state_dict=tensors,
        intensity_scale=float(scale),
        probe=probe,
        training_summary=summary,
        format_version=version,
        package_version=str(manifest.get("package_version", "unknown")),
        created_utc=str(manifest.get("created_utc", "")),
    )


def read_lightning_checkpoint(
    path: str | os.PathLike[str], *, extra_safe_globals: Iterable[Any] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a Lightning ``.ckpt`` safely; return ``(state_dict, hyper_parameters)``.

    Uses ``torch.load(weights_only=True)``: tensors, dicts, lists, tuples and primitives
    load; any other pickled object is refused without being constructed.  Checkpoints
    whose hyper-parameters are plain dicts (as PtychoPINN writes them) load as is.
    ``extra_safe_globals`` lets a caller allow specific extra classes it trusts.

    Raises:
        BundleNotFoundError: the path does not exist.
        BundleError: unreadable, not a Lightning checkpoint, or holds non-plain objects.
    """
    ckpt = load_lightning_checkpoint(path, extra_safe_globals=extra_safe_globals)
    return dict(ckpt["state_dict"]), dict(ckpt.get("hyper_parameters", {}))


def load_lightning_checkpoint(
    path: str | os.PathLike[str],
    *,
    extra_safe_globals: Iterable[Any] = (),
    advice: str | None = None,
) -> dict[str, Any]:
    """The whole checkpoint dict (epoch, loop and callback states too), loaded and
    checked like :func:`read_lightning_checkpoint`; ``advice`` replaces the sentence
    that ends an error (what to give instead)."""
    p = Path(path)
    if not p.exists():
        raise BundleNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise BundleError(f"{p} is a directory, expected a Lightning .ckpt file")
    # Only what a command-line user can do: extra_safe_globals is for Python callers.
    if advice is None:
        advice = (
            f"; give the {BUNDLE_FILENAME} bundle or a checkpoints/{LAST_CHECKPOINT} "
            "written by PtychoPINN training"
        )
    ckpt = _safe_torch_load(p, f"checkpoint {p}", extra_safe_globals, advice=advice)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise BundleError(
            f"{p} is not a PtychoPINN training checkpoint (it holds no 'state_dict' "
            f"dict){advice}"
        )
    state_dict = ckpt["state_dict"]
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BundleError(f"{p}: state_dict entries are not tensors: {bad[:5]}{advice}")
    hparams = ckpt.get("hyper_parameters", {})
    if not isinstance(hparams, dict):
        raise BundleError(
            f"{p}: hyper_parameters must be a dict, got {type(hparams).__name__}{advice}"
        )
    return ckpt


def bundle_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the whole file at ``path`` (identifies a bundle in logs/outputs)."""
    p = Path(path)
    if not p.is_file():
        raise BundleNotFoundError(f"file not found: {p}")
    return file_sha256(p)
