"""The NPZ data contract: load, validate and save ptychography scans (:class:`RawData`).

Normative description: ``specs/data_contract.md``; units in ``specs/conventions.md``.

In short, a scan file is an ``.npz`` archive holding

=================  ==================  ===========================  ======================
key                attribute           shape                        stored as
=================  ==================  ===========================  ======================
``diffraction``    ``diffraction``     (n, N, N)                    float32 amplitude
``xcoords``        ``xcoords``         (n,)                         float64 object pixels
``ycoords``        ``ycoords``         (n,)                         float64 object pixels
``probeGuess``     ``probe_guess``     (N, N) or (modes, N, N)      complex64
``objectGuess``    ``object_guess``    (H, W), optional             complex64
``scan_index``     ``scan_index``      (n,), optional               int64
``xcoords_start``  ``xcoords_start``   (n,), optional (with y)      float64 object pixels
``ycoords_start``  ``ycoords_start``   (n,), optional (with x)      float64 object pixels
``Y``              ``labels``          (n, N, N), optional          complex64 object patch
=================  ==================  ===========================  ======================

Diffraction is **amplitude**, ``sqrt(photon counts)``, with DC at ``[N//2, N//2]``.
Legacy files may use ``diff3d`` for the diffraction (``diffraction`` wins when both are
present), the (N, N, n) layout (transposed with a FORMAT-001 warning), and
``label_amp`` + ``label_phase`` instead of ``Y``.  Every violation raises
:class:`DataContractError` naming the key and what was expected.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn._io import atomic_output, save_failure
from ptychopinn.errors import InputError, InputWarning
from ptychopinn.resources import format_bytes, memory_shortfall

__all__ = [
    "PHOTONS_PER_PATTERN_RANGE",
    "DataContractError",
    "RawData",
    "check_photon_scale",
    "check_positions",
    "concatenate_scans",
    "counts_suspicion",
    "counts_to_amplitude",
    "warn_if_counts",
]


class DataContractError(InputError):
    """An array or file does not satisfy the PtychoPINN data contract."""


# attribute name -> canonical npz key
_KEYS: dict[str, str] = {
    "diffraction": "diffraction",
    "xcoords": "xcoords",
    "ycoords": "ycoords",
    "probe_guess": "probeGuess",
    "object_guess": "objectGuess",
    "scan_index": "scan_index",
    "xcoords_start": "xcoords_start",
    "ycoords_start": "ycoords_start",
    "labels": "Y",
}

# errors np.load / NpzFile raise on files that are not (intact) npz archives
_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error, KeyError)


def _label(attr: str) -> str:
    key = _KEYS[attr]
    return attr if key == attr else f"{attr} (npz key '{key}')"


#: Elements per block when :func:`_count_bad` scans an array (4 M: 4 MiB masks).
_COUNT_BLOCK_ELEMENTS = 4 * 2**20


def _count_bad(arr: np.ndarray) -> tuple[int, int]:
    """(number of non-finite values, number of negative finite values), counted in
    blocks of leading-axis slices so that the masks stay small for a large scan."""
    if arr.ndim == 0:
        arr = arr.reshape(1)
    step = max(1, _COUNT_BLOCK_ELEMENTS // max(1, arr[:1].size))
    n_nonfinite = n_negative = 0
    for start in range(0, arr.shape[0], step):
        part = arr[start:start + step]
        finite = np.isfinite(part)
        n_nonfinite += int(part.size - np.count_nonzero(finite))
        n_negative += int(np.count_nonzero(finite & (part < 0)))
    return n_nonfinite, n_negative


def _to_array(attr: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataContractError(f"{_label(attr)} is not a rectangular numeric array: {exc}") from exc
    if arr.dtype.hasobject:
        raise DataContractError(
            f"{_label(attr)} has dtype object; expected a numeric array (object/pickled "
            "arrays are not accepted)"
        )
    return arr


def _check_float32_range(attr: str, arr: np.ndarray) -> None:
    """Refuse finite values that a cast to float32 / complex64 would turn into Inf."""
    component_size = arr.dtype.itemsize // (2 if np.iscomplexobj(arr) else 1)
    # Every integer type and every float of <= 4 bytes fits in float32.
    if np.issubdtype(arr.dtype, np.integer) or component_size <= 4:
        return
    limit = float(np.finfo(np.float32).max)
    parts = (arr.real, arr.imag) if np.iscomplexobj(arr) else (arr,)
    n_over = 0
    for part in parts:
        with np.errstate(invalid="ignore", over="ignore"):
            n_over += int(np.count_nonzero(np.isfinite(part) & (np.abs(part) > limit)))
    if n_over:
        raise DataContractError(
            f"{_label(attr)} has {n_over} values beyond the float32 range (|value| > "
            f"{limit:.3g}); they would overflow float32 to Inf. Rescale the data (diffraction "
            "is amplitude, sqrt(photon counts))"
        )


def _as_real(attr: str, value: Any, dtype: type[np.generic]) -> np.ndarray:
    arr = _to_array(attr, value)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataContractError(
            f"{_label(attr)} must hold real numbers (integer or float), got dtype {arr.dtype}"
        )
    if dtype is np.float32:
        _check_float32_range(attr, arr)
    return arr.astype(dtype, copy=False)


def _as_complex(attr: str, value: Any) -> np.ndarray:
    arr = _to_array(attr, value)
    if not (
        np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise DataContractError(f"{_label(attr)} must hold numbers, got dtype {arr.dtype}")
    _check_float32_range(attr, arr)
    return arr.astype(np.complex64, copy=False)


def _as_index(attr: str, value: Any) -> np.ndarray:
    arr = _to_array(attr, value)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise DataContractError(f"{_label(attr)} must hold integers, got non-integral floats")
        return arr.astype(np.int64)
    raise DataContractError(f"{_label(attr)} must hold integers, got dtype {arr.dtype}")


def _legacy_to_canonical(attr: str, arr: np.ndarray, n: int) -> np.ndarray:
    """Transpose a legacy (N, N, n) stack to (n, N, N), warning with FORMAT-001."""
    if arr.ndim == 3 and arr.shape[0] == arr.shape[1] and arr.shape[2] != arr.shape[0]:
        if arr.shape[2] == n:
            warnings.warn(
                f"{_label(attr)} has the legacy (N, N, n) layout {arr.shape}; transposed to "
                f"(n, N, N) = {(n, arr.shape[0], arr.shape[1])} (FORMAT-001). Re-save the "
                "file with RawData.save to store the canonical layout.",
                UserWarning,
                stacklevel=4,
            )
            return np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))
    return arr


def counts_to_amplitude(counts: Any) -> np.ndarray:
    """Convert photon counts to diffraction amplitude, ``sqrt(counts)``, as float32.

    Args:
        counts: photon counts, any real dtype and shape (typically (n, N, N)).

    Raises:
        DataContractError: non-real dtype, or any negative or non-finite count (the
            message says how many); no clipping is applied.
    """
    arr = _to_array("diffraction", counts)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataContractError(f"counts must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    n_nonfinite, n_negative = _count_bad(arr)
    if n_nonfinite or n_negative:
        raise DataContractError(
            f"counts must be finite and >= 0: {n_nonfinite} non-finite and {n_negative} "
            f"negative values out of {arr.size}"
        )
    return np.sqrt(arr).astype(np.float32)


@dataclass(eq=False)
class RawData:
    """One ptychographic scan in the canonical layout (see module docstring for units).

    Construction coerces dtypes (float32 diffraction, float64 coordinates, complex64
    probe/object/labels, int64 scan index), transposes legacy (N, N, n) stacks with a
    warning and then calls :meth:`validate`.  Arrays are not copied when already canonical.
    """

    diffraction: np.ndarray
    xcoords: np.ndarray
    ycoords: np.ndarray
    probe_guess: np.ndarray
    object_guess: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    xcoords_start: np.ndarray | None = None
    ycoords_start: np.ndarray | None = None
    labels: np.ndarray | None = None
    #: Indices (into the file this scan was read from) of the positions kept by
    #: :meth:`subsample`; None for a scan that was not subsampled. Not written by save().
    sample_indices: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.xcoords = _as_real("xcoords", self.xcoords, np.float64)
        self.ycoords = _as_real("ycoords", self.ycoords, np.float64)
        n = self.xcoords.shape[0] if self.xcoords.ndim == 1 else -1
        self.diffraction = _legacy_to_canonical(
            "diffraction", _as_real("diffraction", self.diffraction, np.float32), n
        )
        self.probe_guess = _as_complex("probe_guess", self.probe_guess)
        if self.object_guess is not None:
            self.object_guess = _as_complex("object_guess", self.object_guess)
        if self.scan_index is not None:
            self.scan_index = _as_index("scan_index", self.scan_index)
        if self.xcoords_start is not None:
            self.xcoords_start = _as_real("xcoords_start", self.xcoords_start, np.float64)
        if self.ycoords_start is not None:
            self.ycoords_start = _as_real("ycoords_start", self.ycoords_start, np.float64)
        if self.labels is not None:
            labels = _as_complex("labels", self.labels)
            if labels.ndim == 4 and labels.shape[-1] == 1:
                labels = labels[..., 0]
            self.labels = _legacy_to_canonical("labels", labels, n)
        self.validate()

    # ------------------------------------------------------------------ properties
    @property
    def n_positions(self) -> int:
        """Number of scan positions n."""
        return int(self.diffraction.shape[0])

    @property
    def N(self) -> int:  # noqa: N802 - the physics symbol
        """Diffraction pattern side, pixels."""
        return int(self.diffraction.shape[-1])

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every rule of the data contract; raise :class:`DataContractError`."""
        for attr in ("xcoords", "ycoords"):
            arr = getattr(self, attr)
            self._check_dtype(attr, np.float64)
            if arr.ndim != 1:
                raise DataContractError(f"{attr} must be 1-D (n,), got shape {arr.shape}")
        if self.xcoords.shape != self.ycoords.shape:
            raise DataContractError(
                f"xcoords and ycoords differ in length: {self.xcoords.shape[0]} vs "
                f"{self.ycoords.shape[0]}"
            )

        diff = self.diffraction
        self._check_dtype("diffraction", np.float32)
        if diff.ndim != 3:
            raise DataContractError(
                f"diffraction must be 3-D (n, N, N) amplitude, got shape {diff.shape}"
            )
        if diff.shape[0] == 0:
            raise DataContractError("empty scan: diffraction holds 0 patterns")
        if diff.shape[1] != diff.shape[2]:
            raise DataContractError(
                f"diffraction patterns must be square (n, N, N), got shape {diff.shape}"
            )
        if diff.shape[1] < 1:
            raise DataContractError(f"diffraction patterns are empty: shape {diff.shape}")
        n, big_n = diff.shape[0], diff.shape[1]
        if self.xcoords.shape[0] != n:
            raise DataContractError(
                f"diffraction has {n} patterns but xcoords/ycoords have "
                f"{self.xcoords.shape[0]} positions"
            )
        n_nonfinite, n_negative = _count_bad(diff)
        if n_nonfinite:
            raise DataContractError(
                f"diffraction has {n_nonfinite} non-finite (NaN/Inf) values out of {diff.size}"
            )
        if n_negative:
            raise DataContractError(
                f"diffraction has {n_negative} negative values out of {diff.size}; it must "
                "be amplitude = sqrt(counts) >= 0"
            )
        for attr in ("xcoords", "ycoords"):
            self._check_finite(attr)

        probe = self.probe_guess
        self._check_dtype("probe_guess", np.complex64)
        if probe.ndim not in (2, 3):
            raise DataContractError(
                f"{_label('probe_guess')} must be (N, N) or (modes, N, N), got shape "
                f"{probe.shape}"
            )
        if probe.shape[-2:] != (big_n, big_n) or (probe.ndim == 3 and probe.shape[0] < 1):
            raise DataContractError(
                f"{_label('probe_guess')} shape {probe.shape} does not match the diffraction "
                f"patterns: expected ({big_n}, {big_n}) or (modes, {big_n}, {big_n})"
            )
        self._check_finite("probe_guess")

        if self.object_guess is not None:
            obj = self.object_guess
            self._check_dtype("object_guess", np.complex64)
            if obj.ndim != 2 or obj.size == 0:
                raise DataContractError(
                    f"{_label('object_guess')} must be a non-empty 2-D (H, W) array, got "
                    f"shape {obj.shape}"
                )
            self._check_finite("object_guess")

        if self.scan_index is not None:
            self._check_dtype("scan_index", np.int64)
            self._check_length("scan_index", n)

        if (self.xcoords_start is None) != (self.ycoords_start is None):
            given = "xcoords_start" if self.xcoords_start is not None else "ycoords_start"
            raise DataContractError(
                f"{given} is given without its partner; xcoords_start and ycoords_start "
                "must be given together"
            )
        if self.xcoords_start is not None:
            for attr in ("xcoords_start", "ycoords_start"):
                self._check_dtype(attr, np.float64)
                self._check_length(attr, n)
                self._check_finite(attr)

        if self.labels is not None:
            self._check_dtype("labels", np.complex64)
            if self.labels.shape != (n, big_n, big_n):
                raise DataContractError(
                    f"{_label('labels')} must have shape (n, N, N) = {(n, big_n, big_n)}, "
                    f"got {self.labels.shape}"
                )
            self._check_finite("labels")

    def _check_dtype(self, attr: str, dtype: type[np.generic]) -> None:
        arr = getattr(self, attr)
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DataContractError(f"{_label(attr)} must be {np.dtype(dtype)}, got {got}")

    def _check_length(self, attr: str, n: int) -> None:
        arr = getattr(self, attr)
        if arr.shape != (n,):
            raise DataContractError(
                f"{_label(attr)} must have shape (n,) = ({n},) to match diffraction, got "
                f"{arr.shape}"
            )

    def _check_finite(self, attr: str) -> None:
        arr = getattr(self, attr)
        if not np.all(np.isfinite(arr)):
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise DataContractError(
                f"{_label(attr)} has {bad} non-finite (NaN/Inf) values out of {arr.size}"
            )

    # ------------------------------------------------------------------ selection
    def subset(self, indices: Any) -> RawData:
        """Return a new RawData holding the scan positions ``indices`` (in that order).

        ``indices`` is a 1-D array of integers in ``[0, n)`` or a boolean mask of length n.
        Probe and object are shared (not copied).
        """
        idx = np.asarray(indices)
        n = self.n_positions
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise DataContractError(
                    f"boolean subset mask must have shape ({n},), got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise DataContractError(
                f"subset indices must be a 1-D integer array, got shape {idx.shape} "
                f"dtype {idx.dtype}"
            )
        if idx.size == 0:
            raise DataContractError("subset selects no scan positions")
        idx = idx.astype(np.int64, copy=False)
        if idx.min() < 0 or idx.max() >= n:
            raise DataContractError(
                f"subset indices must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]"
            )

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[idx]

        return RawData(
            diffraction=self.diffraction[idx],
            xcoords=self.xcoords[idx],
            ycoords=self.ycoords[idx],
            probe_guess=self.probe_guess,
            object_guess=self.object_guess,
            scan_index=pick(self.scan_index),
            xcoords_start=pick(self.xcoords_start),
            ycoords_start=pick(self.ycoords_start),
            labels=pick(self.labels),
        )

    def subsample(self, n_subsample: int, seed: int | None) -> RawData:
        """``n_subsample`` positions drawn without replacement (``np.random.default_rng(
        seed)``; ``seed=None`` is unseeded), kept in scan order. The result records the
        drawn positions' indices into the original file in ``sample_indices`` (composed
        with this scan's own, if it was subsampled already). ``n_subsample >= n`` keeps
        every position.
        """
        n = self.n_positions
        if isinstance(n_subsample, bool) or not isinstance(n_subsample, int | np.integer) \
                or n_subsample < 1:
            raise DataContractError(f"n_subsample must be an integer >= 1, got {n_subsample!r}")
        if n_subsample >= n:
            chosen = np.arange(n, dtype=np.int64)
        else:
            chosen = np.sort(np.random.default_rng(seed).choice(n, size=n_subsample,
                                                                replace=False))
        subset = self.subset(chosen)
        base = self.sample_indices if self.sample_indices is not None else np.arange(n)
        subset.sample_indices = np.asarray(base, dtype=np.int64)[chosen]
        return subset

    # ------------------------------------------------------------------ file I/O
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RawData:
        """Load and validate an ``.npz`` scan file (never unpickles).

        Raises:
            DataContractError: missing/unreadable file, not an npz archive, object
                arrays, missing keys, or any contract violation (message starts with
                the path).
        """
        p = Path(path)
        if not p.exists():
            raise DataContractError(f"{p}: file not found")
        if p.is_dir():
            raise DataContractError(
                f"{p} is a directory, not a data file; give the path of an .npz file"
            )
        if not p.is_file():
            raise DataContractError(f"{p}: not a regular file")
        with open(p, "rb") as fh:
            magic = fh.read(6)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            raise DataContractError(
                f"{p}: not an .npz archive (the file does not start with a zip signature; "
                f"{'it is empty' if not magic else f'first bytes {magic!r}'})"
            )
        try:
            loaded = np.load(p, allow_pickle=False)
        except _READ_ERRORS as exc:
            # It starts like a zip archive (checked above): its end is missing or damaged.
            raise DataContractError(
                f"{p}: not a readable .npz archive, the file is truncated or corrupt "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataContractError(
                f"{p}: is a single .npy array, expected an .npz archive with keys "
                "'diffraction', 'xcoords', 'ycoords', 'probeGuess'"
            )
        with loaded as npz:
            try:
                fields = _read_fields(p, npz)
                return cls(**fields)
            except DataContractError as exc:
                if str(exc).startswith(f"{p}:"):
                    raise
                raise DataContractError(f"{p}: {exc}") from exc

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The canonical ``{npz key: array}`` mapping written by :meth:`save`."""
        arrays = {}
        for attr, key in _KEYS.items():
            value = getattr(self, attr)
            if value is not None:
                arrays[key] = value
        return arrays

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the scan to ``path`` (exactly that name) as an uncompressed ``.npz``.

        The write is atomic: a failure (disk full: ``SaveError``) leaves any previous
        file at ``path`` intact.
        """
        self.validate()
        arrays = self.to_arrays()
        try:
            with atomic_output(path) as tmp, open(tmp, "wb") as fh:
                # A file object stops np.savez from appending ".npz" to the temp name.
                np.savez(fh, **arrays)
        except OSError as exc:
            raise save_failure(path, exc) from exc


# --------------------------------------------------------------------------- several scans
#: Relative L2 difference (after the best complex scale) above which a scan's probe counts
#: as another probe than the first scan's in :func:`concatenate_scans`.
PROBE_MISMATCH_TOLERANCE = 1e-3


def _probe_mismatch(reference: np.ndarray, probe: np.ndarray) -> float:
    """``min_a ||probe - a * reference|| / ||probe||`` over complex a (mode 0 of each)."""
    ref = (reference if reference.ndim == 2 else reference[0]).astype(np.complex128)
    other = (probe if probe.ndim == 2 else probe[0]).astype(np.complex128)
    if ref.shape != other.shape:
        return math.inf
    norm_ref = float(np.vdot(ref, ref).real)
    norm_other = float(np.linalg.norm(other))
    if norm_ref == 0 or norm_other == 0:
        return 0.0 if norm_ref == norm_other else math.inf
    scale = np.vdot(ref, other) / norm_ref
    return float(np.linalg.norm(other - scale * ref) / norm_other)


def concatenate_scans(scans: Sequence[RawData]) -> RawData:
    """Several scans as one :class:`RawData`, for training on all of them at once.

    - ``scan_index`` numbers the scans 0, 1, ... in the order given (a part that holds
      several scans already keeps them apart, renumbered). Grouping never forms a group
      across scans (``ptychopinn.grouping``: a seed's neighbours are searched in its own
      scan) and training normalises each scan on its own (``grouping.ScanScales``).
    - Positions: scan 0 keeps its coordinates; every further scan is moved along x by a
      whole number of pixels, so that its sub-pixel geometry is unchanged and its patches
      start N pixels after the previous scan's end. With ``objectGuess`` in every scan the
      objects are placed side by side, N pixels apart, in one ``objectGuess`` (zero
      between them; height of the tallest) and each scan's positions move with its
      object; otherwise ``objectGuess`` is None and the gap is measured between the
      patches (positions +- N/2). Patches of different scans never overlap either way.
    - The probe is the first scan's; a scan whose probe differs from it by more than
      :data:`PROBE_MISMATCH_TOLERANCE` (relative, after the best complex scale, so a
      probe scaled to another dose is the same probe) gets an ``InputWarning``.
    - ``labels`` (and ``xcoords_start``/``ycoords_start``) are kept when every scan has
      them, else dropped. ``sample_indices`` is not kept.

    Raises:
        DataContractError: no scans, an item that is not a RawData, or scans whose
            pattern sizes differ.
    """
    scans = list(scans)
    if not scans:
        raise DataContractError("concatenate_scans needs at least one scan, got none")
    for i, raw in enumerate(scans):
        if not isinstance(raw, RawData):
            raise DataContractError(
                f"scan {i} is a {type(raw).__name__}, not a ptychopinn.data.RawData"
            )
    big_n = scans[0].N
    for i, raw in enumerate(scans):
        if raw.N != big_n:
            raise DataContractError(
                f"scan {i} has {raw.N}x{raw.N} patterns but scan 0 has {big_n}x{big_n}; "
                "every scan trained together needs the same pattern size"
            )
        if i and (mismatch := _probe_mismatch(scans[0].probe_guess, raw.probe_guess)) \
                > PROBE_MISMATCH_TOLERANCE:
            warnings.warn(
                f"scan {i}'s probe differs from scan 0's by {100 * mismatch:.3g} % (relative "
                "L2 norm, after the best complex scale); every scan is trained with scan "
                "0's probe",
                InputWarning,
                stacklevel=2,
            )
    with_objects = all(raw.object_guess is not None for raw in scans)
    shifts: list[float] = []
    next_left = 0.0  # where the next scan may begin: object column, or patch edge
    for i, raw in enumerate(scans):
        if with_objects:
            shift = 0.0 if i == 0 else next_left
            next_left = shift + raw.object_guess.shape[1] + big_n
        else:
            left = float(raw.xcoords.min()) - big_n / 2
            shift = 0.0 if i == 0 else float(math.ceil(next_left - left))
            next_left = float(raw.xcoords.max()) + shift + big_n / 2 + big_n
        shifts.append(shift)

    scan_index = []
    first_id = 0
    for raw in scans:
        if raw.scan_index is None:
            ids = np.zeros(raw.n_positions, dtype=np.int64)
        else:
            ids = np.unique(raw.scan_index, return_inverse=True)[1].reshape(-1)
        scan_index.append(ids + first_id)
        first_id += int(ids.max()) + 1

    def joined(attr: str, shift: bool = False) -> np.ndarray | None:
        parts = [getattr(raw, attr) for raw in scans]
        if any(part is None for part in parts):
            return None
        if shift:
            parts = [part + dx for part, dx in zip(parts, shifts, strict=True)]
        return np.concatenate(parts, axis=0)

    object_guess = None
    if with_objects:
        height = max(raw.object_guess.shape[0] for raw in scans)
        width = int(shifts[-1]) + scans[-1].object_guess.shape[1]
        object_guess = np.zeros((height, width), dtype=np.complex64)
        for raw, dx in zip(scans, shifts, strict=True):
            h, w = raw.object_guess.shape
            object_guess[:h, int(dx):int(dx) + w] = raw.object_guess
    return RawData(
        diffraction=np.concatenate([raw.diffraction for raw in scans], axis=0),
        xcoords=joined("xcoords", shift=True),
        ycoords=joined("ycoords"),
        probe_guess=scans[0].probe_guess,
        object_guess=object_guess,
        scan_index=np.concatenate(scan_index),
        xcoords_start=joined("xcoords_start", shift=True),  # both or neither per scan
        ycoords_start=joined("ycoords_start"),
        labels=joined("labels"),
    )


#: Members at least this large (bytes) that the archive stores uncompressed are
#: memory-mapped instead of read (``_mapped_member``).
MMAP_MIN_BYTES = 16 * 2**20


def _mapped_member(path: Path, npz: Any, key: str) -> np.ndarray | None:
    """Member ``key`` as a copy-on-write memory map of ``path`` when the archive stores
    it uncompressed (ZIP_STORED, what :meth:`RawData.save` and ``np.savez`` write) as a
    plain ``.npy`` of at least :data:`MMAP_MIN_BYTES`; None otherwise (then it is read).

    Loading is then immediate, pages are read when first used and stay the file's own
    (shared, reclaimable page cache), and writes go to private copies, never to the
    file. Compressed members cannot be mapped: numpy decompresses them straight into
    the final array in 1 MiB pieces, so they cost one copy and no more.
    """
    from numpy.lib import format as npy_format

    name = f"{key}.npy"
    if name not in npz.zip.namelist():
        return None
    info = npz.zip.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size < MMAP_MIN_BYTES:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)  # the member's local header: name and extra field lengths
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                return None
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            data_start = info.header_offset + 30 + name_length + extra_length
            fh.seek(data_start)
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            else:
                return None
            offset = fh.tell()
        if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size - (
                offset - data_start):
            return None  # refused or reported by the plain reader
        if not _crc_matches(path, data_start, info):
            return None  # the plain reader reports the corruption
        return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=tuple(shape),
                         order="F" if fortran else "C")
    except (OSError, ValueError, struct.error):
        return None


def _crc_matches(path: Path, data_start: int, info: zipfile.ZipInfo) -> bool:
    """The member's CRC-32, as zipfile checks it when reading, in 64 MiB pieces."""
    member = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start,
                       shape=(info.file_size,))
    crc = 0
    step = 64 * 2**20
    for start in range(0, info.file_size, step):
        crc = zlib.crc32(member[start:start + step], crc)
    del member
    return crc == info.CRC


def _read_key(path: Path, npz: Any, key: str) -> np.ndarray:
    mapped = _mapped_member(path, npz, key)
    if mapped is not None:
        return mapped
    try:
        return npz[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataContractError(
                f"{path}: key '{key}' holds an object (pickled) array; only numeric arrays "
                "are accepted and pickled data is never loaded"
            ) from exc
        raise DataContractError(
            f"{path}: key '{key}' could not be read ({type(exc).__name__}: {exc})"
        ) from exc
    except _READ_ERRORS as exc:
        raise DataContractError(
            f"{path}: key '{key}' could not be read, the archive is corrupt or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from exc


# every npz key the loader may read (others are ignored, never loaded)
_READ_KEYS = (*_KEYS.values(), "diff3d", "label_amp", "label_phase")


def _declared_bytes(path: Path, npz: Any, key: str) -> int:
    """Bytes that key's array declares in its .npy header; refuses a header that declares
    more data than the archive holds (truncated or crafted files), before allocating."""
    from numpy.lib import format as npy_format

    if f"{key}.npy" not in npz.zip.namelist():
        return 0  # a member that is not a .npy array; _read_key reports it
    try:
        info = npz.zip.getinfo(f"{key}.npy")
        with npz.zip.open(info) as member:
            version = npy_format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(member)
            else:  # newer header versions: np.load reports what it cannot read
                return 0
            header_bytes = member.tell()
    except _READ_ERRORS as exc:
        raise DataContractError(
            f"{path}: key '{key}' could not be read, the archive is corrupt or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if dtype.hasobject:
        return 0  # refused unread by _read_key
    declared = math.prod(shape) * dtype.itemsize
    stored = info.file_size - header_bytes
    if declared > stored:
        raise DataContractError(
            f"{path}: key '{key}' declares shape {tuple(shape)} {dtype} "
            f"({format_bytes(declared)}) but the archive holds only {format_bytes(stored)} "
            "for it; the file is truncated or corrupt"
        )
    return declared


def _stored_uncompressed(npz: Any, key: str) -> bool:
    """Whether :func:`_mapped_member` maps this member (it is then not read)."""
    name = f"{key}.npy"
    if name not in npz.zip.namelist():
        return False
    info = npz.zip.getinfo(name)
    return info.compress_type == zipfile.ZIP_STORED and info.file_size >= MMAP_MIN_BYTES


def _check_load_memory(path: Path, npz: Any, present: list[str]) -> None:
    # Reading, then converting to the canonical dtypes, holds up to two copies; a
    # memory-mapped member holds at most the converted copy.
    sizes = {key: _declared_bytes(path, npz, key) for key in _READ_KEYS if key in present}
    declared = sum(sizes.values())
    needed = sum((1 if _stored_uncompressed(npz, key) else 2) * size
                 for key, size in sizes.items())
    shortfall = memory_shortfall(needed, f"loading {path}")
    if shortfall is not None:
        raise DataContractError(
            f"{shortfall}; the arrays in the file declare {format_bytes(declared)}. Use a "
            "machine with more memory or split the scan into smaller files"
        )


def _read_fields(path: Path, npz: Any) -> dict[str, Any]:
    present = sorted(npz.files)
    _check_load_memory(path, npz, present)

    def missing(what: str) -> DataContractError:
        return DataContractError(f"{path}: missing {what}; keys present: {present}")

    fields: dict[str, Any] = {}
    if "diffraction" in present:
        fields["diffraction"] = _read_key(path, npz, "diffraction")
    elif "diff3d" in present:
        fields["diffraction"] = _read_key(path, npz, "diff3d")
    else:
        raise missing("diffraction data: expected key 'diffraction' (or legacy 'diff3d')")
    for attr in ("xcoords", "ycoords", "probe_guess"):
        key = _KEYS[attr]
        if key not in present:
            raise missing(f"required key '{key}'")
        fields[attr] = _read_key(path, npz, key)
    for attr in ("object_guess", "scan_index", "xcoords_start", "ycoords_start"):
        key = _KEYS[attr]
        if key in present:
            fields[attr] = _read_key(path, npz, key)

    if "Y" in present:
        fields["labels"] = _read_key(path, npz, "Y")
    elif "label_amp" in present or "label_phase" in present:
        if not ("label_amp" in present and "label_phase" in present):
            given, absent = (
                ("label_amp", "label_phase") if "label_amp" in present
                else ("label_phase", "label_amp")
            )
            raise DataContractError(
                f"{path}: '{given}' is present but '{absent}' is missing; labels need both "
                "(or a complex 'Y')"
            )
        amp = _as_real("labels", _read_key(path, npz, "label_amp"), np.float32)
        phase = _as_real("labels", _read_key(path, npz, "label_phase"), np.float32)
        if amp.shape != phase.shape:
            raise DataContractError(
                f"{path}: label_amp shape {amp.shape} differs from label_phase shape "
                f"{phase.shape}"
            )
        fields["labels"] = (amp * np.exp(1j * phase)).astype(np.complex64)
    return fields


# --------------------------------------------------------------------------- checks before use
#: Mean photons per pattern (sum of amplitude**2) the float32 physics handles. Above
#: ~1e20 the Poisson loss stops changing in float32 and far above it becomes NaN; below
#: 1e-6 the counts underflow. Real detectors record far less than 1e15 per exposure.
PHOTONS_PER_PATTERN_RANGE = (1e-6, 1e15)

# amplitude values sampled by the counts check (bounds its cost on large scans)
_COUNTS_SAMPLE = 1 << 20


def check_photon_scale(photons_per_pattern: float, what: str, fix: str) -> None:
    """Raise :class:`DataContractError` when ``photons_per_pattern`` lies outside
    :data:`PHOTONS_PER_PATTERN_RANGE`; ``what`` names the source, ``fix`` the remedy."""
    low, high = PHOTONS_PER_PATTERN_RANGE
    if photons_per_pattern == 0:
        raise DataContractError(f"{what} is 0: the diffraction holds no photons at all")
    if not (math.isfinite(photons_per_pattern) and low <= photons_per_pattern <= high):
        raise DataContractError(
            f"{what} is {photons_per_pattern:.3g} photons per pattern, outside the range "
            f"PtychoPINN computes with ({low:g} to {high:g}); {fix}"
        )


def counts_suspicion(diffraction: np.ndarray) -> str | None:
    """Why ``diffraction`` looks like photon counts rather than amplitude, or None.

    The sign used: every (sampled) value is a whole number and at least 5 % of the
    non-zero ones are not perfect squares.  Amplitudes of counted data are square roots
    of whole numbers, so a whole-number amplitude is a perfect square (0, 1, 4, 9, ...);
    counts below 2 look the same either way and are not flagged.
    """
    flat = np.asarray(diffraction).reshape(-1)
    step = max(1, flat.size // _COUNTS_SAMPLE)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    # Above 2**24 every float32 is a whole number: wholeness says nothing there.
    if sample.size == 0 or sample.max() >= 2**24 or not np.all(sample == np.round(sample)):
        return None
    nonzero = sample[sample > 0]
    if nonzero.size == 0:
        return None
    roots = np.round(np.sqrt(nonzero))
    not_square = nonzero[roots * roots != nonzero]
    if not_square.size < 0.05 * nonzero.size:
        return None
    examples = ", ".join(f"{v:g}" for v in np.unique(not_square)[:3])
    return (
        f"every value is a whole number and {100 * not_square.size / nonzero.size:.0f} % of "
        f"the non-zero ones are not perfect squares (e.g. {examples})"
    )


def warn_if_counts(raw: RawData, what: str) -> None:
    """Warn (:class:`~ptychopinn.errors.InputWarning`) when the diffraction of ``raw``
    looks like photon counts; the contract wants amplitude ``sqrt(counts)``."""
    reason = counts_suspicion(raw.diffraction)
    if reason is not None:
        warnings.warn(
            f"the {what} diffraction looks like photon counts, not amplitude: {reason}. "
            "The data contract wants sqrt(counts): convert it with numpy.sqrt or "
            "ptychopinn.data.counts_to_amplitude and save it again",
            InputWarning,
            stacklevel=2,
        )


def check_positions(raw: RawData, gridsize: int, what: str) -> None:
    """Scan-position checks before training or inference on ``raw``.

    Raises :class:`DataContractError` when a group cannot find ``gridsize**2`` distinct
    positions, or when patches lie outside ``objectGuess`` (when present); warns
    (:class:`~ptychopinn.errors.InputWarning`) when all or most positions repeat.
    """
    n = raw.n_positions
    positions = np.column_stack([raw.xcoords, raw.ycoords])
    n_distinct = int(np.unique(positions, axis=0).shape[0])
    c = gridsize * gridsize
    if n_distinct < c:
        raise DataContractError(
            f"the {what} data has only {n_distinct} distinct scan position(s) among {n}, but "
            f"a group needs gridsize**2 = {c} distinct neighbours; fix xcoords/ycoords or "
            "use a smaller gridsize"
        )
    if n > 1 and n_distinct == 1:
        warnings.warn(
            f"all {n} {what} scan positions are identical (x={raw.xcoords[0]:g}, "
            f"y={raw.ycoords[0]:g} object pixels): the reconstruction covers one probe "
            "area; check xcoords/ycoords",
            InputWarning,
            stacklevel=2,
        )
    elif n_distinct <= n // 2:
        warnings.warn(
            f"{n - n_distinct} of the {n} {what} scan positions repeat another position "
            f"({n_distinct} distinct); check xcoords/ycoords",
            InputWarning,
            stacklevel=2,
        )
    scan_ids = np.unique(raw.scan_index) if raw.scan_index is not None else np.zeros(1)
    for sid in scan_ids if scan_ids.size > 1 and c > 1 else ():
        in_scan = np.unique(positions[raw.scan_index == sid], axis=0).shape[0]
        if in_scan < c:
            raise DataContractError(
                f"the {what} data holds {scan_ids.size} scans (scan_index) and scan {int(sid)} "
                f"has only {in_scan} distinct position(s); a group never spans two scans and "
                f"needs gridsize**2 = {c} distinct positions: drop that scan or use a "
                "smaller gridsize"
            )
    if raw.object_guess is not None:
        _check_inside_object(raw, what)


def _check_inside_object(raw: RawData, what: str) -> None:
    """A patch of side N around (x, y) covers columns x - N/2 ... x + N/2 - 1 (rows
    likewise, specs/conventions.md); one pixel beyond the edge is tolerated."""
    height, width = raw.object_guess.shape
    half = raw.N / 2
    low_x, high_x = half - 1, width - half + 1
    low_y, high_y = half - 1, height - half + 1
    x, y = raw.xcoords, raw.ycoords
    outside = (x < low_x) | (x > high_x) | (y < low_y) | (y > high_y)
    n_out = int(np.count_nonzero(outside))
    if n_out:
        raise DataContractError(
            f"{n_out} of the {raw.n_positions} {what} scan positions put their "
            f"{raw.N}x{raw.N} patch outside objectGuess ({height} x {width} px): positions "
            f"span x {x.min():.1f} to {x.max():.1f}, y {y.min():.1f} to {y.max():.1f}, but "
            f"patch centres must lie within x {low_x:g} to {high_x:g}, y {low_y:g} to "
            f"{high_y:g} (object pixels). Fix xcoords/ycoords or leave objectGuess out"
        )
