"""Reassemble reconstructed patches into one object image (numpy, CPU, streamed).

Geometry follows ``specs/conventions.md``: the patch for scan position (x, y) (object
pixels, x = column, y = row) covers object pixel ``(y - N//2 + i, x - N//2 + j)`` at
patch pixel ``(i, j)``, so the patch centre ``[N//2, N//2]`` sits on the position.

Placement: object pixel (Y, X) receives, from the patch at (x, y), the value of the
patch bilinearly interpolated at patch coordinate ``(Y - y + N//2, X - x + N//2)``
with weight ``w`` = the patch's weight map (1 or normalised ``|probe|**2`` inside the
central ``crop_px`` square, 0 outside) bilinearly interpolated at the same coordinate.
Equivalently, patch and weight map are translated by the fractional part ``(fx, fy)`` of
the position (``out[i, j] = in[i - fy, j - fx]``) and added at its integer part.  Patch
values just outside the crop are used for the interpolation, so pixels at the edge of a
crop window are as accurate as interior ones; beyond the patch itself the edge value is
repeated.  Two float64 canvases accumulate ``w * value`` and ``w``; the result is their
ratio where ``w > 0`` and 0 elsewhere.  For integer positions this is plain slicing, so
stitching patches cut from an object returns the object exactly.

Memory: the canvases are sized by the scan extent (fixed up front from every position
that will be added) and nothing sized by the number of positions is kept, so patches can
be streamed batch by batch straight from the network.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ptychopinn.symmetry import mirror_index  # the one mirror convention

__all__ = ["StitchResult", "Stitcher", "mirror_index", "stitch_patches"]

_WEIGHTINGS = ("uniform", "probe")
# Bound on the per-chunk temporaries (elements of the (B, s+1, s+1) work arrays).
_CHUNK_ELEMENTS = 1 << 22


class StitchResult(NamedTuple):
    """Stitched object.

    Attributes:
        object: complex64 (H, W); row = y, column = x; 0 where nothing was placed.
        origin_px: (x0, y0), object-pixel coordinate of ``object[0, 0]``: scan position
            (x, y) lies at column ``x - x0``, row ``y - y0``.
        weight: float64 (H, W), summed placement weight per pixel (0 = not covered).
    """

    object: np.ndarray
    origin_px: tuple[int, int]
    weight: np.ndarray

    @property
    def coverage(self) -> np.ndarray:
        """Boolean (H, W) mask of the pixels that received any patch."""
        return self.weight > 0


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        tensor = array.detach().cpu()
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16/float16 have no numpy counterpart
            return tensor.float().numpy()
    return np.asarray(array)


def _positions(positions_px: Any, name: str) -> np.ndarray:
    pos = _to_numpy(positions_px)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2) with columns (x, y), got {pos.shape}")
    if not np.issubdtype(pos.dtype, np.number) or np.iscomplexobj(pos):
        raise ValueError(f"{name} must be real numbers, got dtype {pos.dtype}")
    pos = pos.astype(np.float64)
    if not np.all(np.isfinite(pos)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return pos


class Stitcher:
    """Accumulate patches into an object canvas; call :meth:`add` per batch, then :meth:`result`.

    Args:
        N: patch side, pixels.
        positions_px_all: (P, 2) scan positions (x, y) in object pixels of every patch that
            will be added; fixes the canvas extent (only min/max are kept).
        crop_px: side of the central square kept from each patch, pixels: patch rows and
            columns ``N//2 - crop_px//2`` to ``N//2 - crop_px//2 + crop_px - 1``.  None means
            ``N // 2`` (the region the network predicts best); ``N`` keeps everything.
        weighting: "uniform" (plain average of overlapping patches) or "probe" (each patch
            pixel weighted by ``|probe|**2`` there, normalised to max 1 over the crop).  The
            probe is given in the network's patch frame and gets the same flips/transpose
            as the patches, so each weight stays on the pixel it belongs to.
        probe: complex (N, N) probe, or (modes, N, N) of which mode 0 is used (as by the
            forward model); required for weighting="probe", ignored for "uniform".
        align_phase: rotate each patch by the constant phase that best matches what is
            already stitched where they overlap, before adding it. A constant phase of an
            object patch is invisible in its diffraction pattern, so a network may return
            any; aligning removes the resulting patch-to-patch steps. Patches are aligned
            in the order they are added.
        flip_x: mirror each patch left-right about its centre column before placement.
        flip_y: mirror each patch top-bottom about its centre row before placement.
        transpose: swap each patch's rows and columns before placement.

    Patch transforms, for data whose detector frame differs from the scan frame, are
    applied in the order transpose, flip_x, flip_y, each keeping the centre pixel
    ``[N//2, N//2]`` fixed: transpose ``out[i, j] = in[j, i]``; flip_x ``out[i, j] =
    in[i, (2*(N//2) - j) % N]``; flip_y ``out[i, j] = in[(2*(N//2) - i) % N, j]``.
    Positions are never transformed, so the output stays in the scan (object) frame and
    ``origin_px`` keeps its meaning.  (The legacy code negated the x / y scan coordinates
    for flip_x / flip_y instead; that gives the same image mirrored as a whole and breaks
    the position -> pixel mapping, so it is not reproduced.)
    """

    def __init__(
        self,
        N: int,
        positions_px_all: Any,
        *,
        crop_px: int | None = None,
        weighting: str = "uniform",
        probe: Any = None,
        flip_x: bool = False,
        flip_y: bool = False,
        transpose: bool = False,
        align_phase: bool = False,
    ) -> None:
        if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
            raise ValueError(f"N must be a positive integer, got {N!r}")
        self.N = int(N)
        if crop_px is None:
            crop_px = max(1, self.N // 2)
        if isinstance(crop_px, bool) or not isinstance(crop_px, int | np.integer):
            raise ValueError(f"crop_px must be an integer in [1, {self.N}] or None, got {crop_px!r}")
        if not 1 <= crop_px <= self.N:
            raise ValueError(f"crop_px must be in [1, N={self.N}], got {crop_px}")
        self.crop_px = int(crop_px)
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        for flag_name, flag in (("flip_x", flip_x), ("flip_y", flip_y), ("transpose", transpose)):
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(f"{flag_name} must be a bool, got {flag!r}")
        self.flip_x, self.flip_y, self.transpose = bool(flip_x), bool(flip_y), bool(transpose)
        self.align_phase = bool(align_phase)

        self._centre = self.N // 2
        self._crop0 = self._centre - self.crop_px // 2  # first kept patch row/column
        self._mirror = mirror_index(self.N)
        # Crop rows/columns plus one ring of support; clipping repeats the patch edge.
        self._support = np.clip(
            np.arange(self._crop0 - 1, self._crop0 + self.crop_px + 1), 0, self.N - 1
        )
        self._weight_map = self._make_weight_map(probe)
        # Zero ring: the weight, unlike the values, really ends at the crop border.
        self._padded_weight = np.pad(self._weight_map, 1)

        self.origin_px: tuple[int, int]
        self.canvas_shape: tuple[int, int]
        self.origin_px, self.canvas_shape = canvas_geometry(
            self.N, positions_px_all, self.crop_px
        )
        self._num = np.zeros(self.canvas_shape, dtype=np.complex128)
        self._den = np.zeros(self.canvas_shape, dtype=np.float64)
        self.n_added = 0

    def _make_weight_map(self, probe: Any) -> np.ndarray:
        s, r0 = self.crop_px, self._crop0
        if self.weighting == "uniform":
            return np.ones((s, s), dtype=np.float64)  # a probe, if given, is not needed
        if probe is None:
            raise ValueError('weighting="probe" needs the probe (complex (N, N) array)')
        pr = _to_numpy(probe)
        if pr.ndim == 3:
            pr = pr[0]
        if pr.shape != (self.N, self.N):
            raise ValueError(
                f"probe must have shape (N, N) = ({self.N}, {self.N}) or (modes, N, N), "
                f"got {_to_numpy(probe).shape}"
            )
        intensity = np.abs(pr.astype(np.complex128)) ** 2
        if not np.all(np.isfinite(intensity)):
            raise ValueError("probe contains NaN or infinite values")
        intensity = self.transform_patches(intensity)
        crop = intensity[r0 : r0 + s, r0 : r0 + s]
        peak = crop.max()
        if peak <= 0:
            raise ValueError("probe intensity is zero everywhere inside the crop; cannot weight")
        return crop / peak

    def transform_patches(self, patches: np.ndarray) -> np.ndarray:
        """The documented patch transform on the last two axes (used for the probe)."""
        if self.transpose:
            patches = patches.swapaxes(-1, -2)
        if self.flip_x:
            patches = patches[..., :, self._mirror]
        if self.flip_y:
            patches = patches[..., self._mirror, :]
        return patches

    def add(self, patches: Any, positions_px: Any) -> None:
        """Accumulate a batch.

        Args:
            patches: (B, N, N) complex (or real) numpy array or torch tensor.
            positions_px: (B, 2) scan positions (x, y), object pixels; each must lie within
                the extent given by ``positions_px_all``.
        """
        arr = _to_numpy(patches)
        if arr.ndim != 3 or arr.shape[1:] != (self.N, self.N):
            raise ValueError(f"patches must have shape (B, {self.N}, {self.N}), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"patches must be numeric, got dtype {arr.dtype}")
        pos = _positions(positions_px, "positions_px")
        if pos.shape[0] != arr.shape[0]:
            raise ValueError(
                f"got {arr.shape[0]} patches but {pos.shape[0]} positions; they must match"
            )
        ix = np.floor(pos[:, 0]).astype(np.int64)
        iy = np.floor(pos[:, 1]).astype(np.int64)
        fx = pos[:, 0] - ix
        fy = pos[:, 1] - iy
        s, offset = self.crop_px, self._crop0 - self._centre
        col0 = ix + offset - self.origin_px[0]
        row0 = iy + offset - self.origin_px[1]
        col1 = col0 + s + (fx > 0)
        row1 = row0 + s + (fy > 0)
        height, width = self.canvas_shape
        outside = (col0 < 0) | (row0 < 0) | (col1 > width) | (row1 > height)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"position {tuple(pos[k])} (x, y) lies outside the canvas fixed by "
                "positions_px_all; pass every position that will be added to the Stitcher"
            )

        # The transforms are folded into the gather indices, so only the cropped window of
        # each patch is ever copied (same result as transform_patches followed by cropping).
        gather_rows = self._mirror[self._support] if self.flip_y else self._support
        gather_cols = self._mirror[self._support] if self.flip_x else self._support
        chunk = max(1, _CHUNK_ELEMENTS // ((s + 2) * (s + 2)))
        for start in range(0, arr.shape[0], chunk):
            stop = min(start + chunk, arr.shape[0])
            block = arr[start:stop]
            if self.transpose:
                block = block.swapaxes(1, 2)
            window = block[:, gather_rows][:, :, gather_cols].astype(np.complex128)
            value = _bilinear_shift(window, fx[start:stop], fy[start:stop])
            den = _bilinear_shift(self._padded_weight[None], fx[start:stop], fy[start:stop])
            num = value * den
            for b in range(stop - start):
                k = start + b
                h, w = row1[k] - row0[k], col1[k] - col0[k]
                rows = slice(row0[k], row1[k])
                cols = slice(col0[k], col1[k])
                if self.align_phase:
                    # Weighted overlap inner product <patch, canvas>; its angle is the
                    # patch's phase offset from what is already there.
                    overlap = np.vdot(num[b, :h, :w], self._num[rows, cols])
                    if abs(overlap) > 0:
                        num[b] *= overlap / abs(overlap)
                self._num[rows, cols] += num[b, :h, :w]
                self._den[rows, cols] += den[b, :h, :w]
        self.n_added += arr.shape[0]

    def result(self) -> StitchResult:
        """Current stitched object (can be called again after more :meth:`add` calls)."""
        covered = self._den > 0
        obj = np.zeros(self.canvas_shape, dtype=np.complex64)
        obj[covered] = (self._num[covered] / self._den[covered]).astype(np.complex64)
        return StitchResult(object=obj, origin_px=self.origin_px, weight=self._den.copy())


#: Bytes per canvas pixel while stitching and writing the outputs: the complex128 sum,
#: the float64 weight, the complex64 result and its weight copy, and the float64 images
#: and masks that the outputs and metrics derive from it.
STITCH_BYTES_PER_PIXEL = 80


def canvas_geometry(
    N: int, positions_px: Any, crop_px: int | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(origin_px (x0, y0), canvas_shape (H, W))`` of the canvas :class:`Stitcher`
    builds for patches of side ``N`` at ``positions_px`` (n, 2) (x, y), object pixels,
    keeping the central ``crop_px`` square (default N // 2).  Allocates nothing, so
    callers can check the canvas memory first."""
    crop_px = max(1, N // 2) if crop_px is None else int(crop_px)
    pos = _positions(positions_px, "positions_px_all")
    if pos.shape[0] == 0:
        raise ValueError("positions_px_all is empty; nothing to stitch")
    start = np.floor(pos).astype(np.int64)
    # A fractional position spills one pixel further right/down (bilinear footprint).
    end = start + (pos > start) + crop_px
    offset = (N // 2 - crop_px // 2) - N // 2
    x0, y0 = int(start[:, 0].min()) + offset, int(start[:, 1].min()) + offset
    width = int(end[:, 0].max()) + offset - x0
    height = int(end[:, 1].max()) + offset - y0
    return (x0, y0), (height, width)


def _bilinear_shift(window: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Translate by (fx, fy) in [0, 1): ``out[a, b] = in[a - fy, b - fx]``, bilinear.

    ``window`` is (B or 1, s+2, s+2): the crop with one ring of support around it
    (window index 1 = first crop row/column).  Returns (B, s+1, s+1), output index 0 =
    first crop row/column; the extra last row/column holds the spill of a fractional shift.
    """
    s1 = window.shape[-1] - 1
    fx = fx[:, None, None]
    fy = fy[:, None, None]
    return (
        (1.0 - fy) * (1.0 - fx) * window[:, 1:, 1:]
        + (1.0 - fy) * fx * window[:, 1:, :s1]
        + fy * (1.0 - fx) * window[:, :s1, 1:]
        + fy * fx * window[:, :s1, :s1]
    )


def stitch_patches(patches: Any, positions_px: Any, **kwargs: Any) -> StitchResult:
    """Stitch all patches at once: ``Stitcher(N, positions_px, **kwargs)``, add, result.

    Args:
        patches: (P, N, N) complex patches (numpy or torch).
        positions_px: (P, 2) scan positions (x, y), object pixels.
        **kwargs: ``crop_px``, ``weighting``, ``probe``, ``flip_x``, ``flip_y``,
            ``transpose`` as for :class:`Stitcher`.
    """
    arr = _to_numpy(patches)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"patches must have shape (P, N, N), got {arr.shape}")
    stitcher = Stitcher(arr.shape[-1], positions_px, **kwargs)
    stitcher.add(arr, positions_px)
    return stitcher.result()
