"""Dihedral transforms of patterns about the centre pixel, and the probe symmetries that
make them valid training augmentations (``TrainingConfig.augment_flips``).

Pixel ``(i, j)`` (row, column) of an N x N pattern has the centred coordinates
``(x, y) = (j - N//2, i - N//2)``, taken modulo N (so index 0, which is ``-N/2``, is its
own mirror image, as in :func:`mirror_index`). A transform is an integer orthogonal
matrix ``R`` acting on ``(x, y)``; it maps an array ``a`` to ``T(a)[u] = a[R^-1 u]`` and
a local offset ``d`` (x, y) to ``R d``. The eight elements of the dihedral group: identity,
the mirrors ``flip_x`` (x -> -x) and ``flip_y`` (y -> -y), ``rotate_180``, ``transpose``
((x, y) -> (y, x)), ``antitranspose`` ((x, y) -> (-y, -x)), ``rotate_90`` ((x, y) ->
(-y, x)) and ``rotate_270`` ((x, y) -> (y, -x)).

Why a transformed pattern is a valid measurement. The far field
``F(psi) = fftshift(fft2(ifftshift(psi)))`` is the discrete Fourier transform in these
centred coordinates, and ``R`` permutes them, so ``F(T(psi)) = T(F(psi))`` exactly (the
sum over ``u`` of ``psi[R^-1 u] exp(-2 pi i k.u / N)`` is ``F(psi)[R^-1 k]`` because
``R^T = R^-1``). ``T`` also commutes with the product ``P * O``. So when the probe is
invariant, ``T(P) = exp(i phi) P``,

    T(|F(P * O)|) = |F(T(P) * T(O))| = |F(P * T(O))|:

the transformed pattern is the pattern of the transformed object patch under the same
probe (and its Poisson counts are those counts permuted). For a group, transforming the
object about any point moves the member at local offset ``d`` to ``R d`` and turns its
patch into ``T(patch)`` (exactly, apart from the patch's row and column 0, which the
modulo-N mirror maps onto themselves; they matter only where the probe is non-zero
there), so a group is augmented by transforming every pattern, mapping every offset
by ``R`` and restoring the canonical member order. When the probe is *not* invariant the
transformed pattern belongs to the probe ``T(P)``, which the model does not use: such a
transform is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ptychopinn.grouping import canonical_member_order

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "DihedralTransform",
    "augment_group",
    "mirror_index",
    "probe_asymmetry",
    "probe_symmetries",
]


def mirror_index(n: int) -> np.ndarray:
    """Index that mirrors an axis of length ``n`` about its centre pixel ``n // 2``.

    ``out[k] = in[(2 * (n // 2) - k) % n]``: the centre pixel (which sits on the scan
    position) stays put; for even ``n`` index 0 has no partner and maps onto itself.
    """
    return (2 * (n // 2) - np.arange(n)) % n


@lru_cache(maxsize=64)
def _pixel_index(matrix: tuple[tuple[int, int], tuple[int, int]], n: int) -> np.ndarray:
    r_inv = np.asarray(matrix, dtype=np.int64).T  # R is orthogonal: R^-1 = R^T
    half = n // 2
    rows, cols = np.mgrid[0:n, 0:n]
    x_out, y_out = cols - half, rows - half
    x_in = r_inv[0, 0] * x_out + r_inv[0, 1] * y_out
    y_in = r_inv[1, 0] * x_out + r_inv[1, 1] * y_out
    index = ((y_in + half) % n) * n + (x_in + half) % n
    index.setflags(write=False)
    return index.reshape(-1)


@dataclass(frozen=True)
class DihedralTransform:
    """One element of the dihedral group of the square, about the centre pixel N//2.

    ``matrix`` is ``R`` (rows of integers) acting on ``(x, y)`` column vectors.
    """

    name: str
    matrix: tuple[tuple[int, int], tuple[int, int]] = field(repr=False)

    def apply_to_patterns(self, arrays: np.ndarray) -> np.ndarray:
        """``T(a)[u] = a[R^-1 u]`` over the last two axes of (..., N, N) arrays."""
        arrays = np.asarray(arrays)
        n = arrays.shape[-1]
        if arrays.ndim < 2 or arrays.shape[-2] != n:
            raise ValueError(f"patterns must have shape (..., N, N), got {arrays.shape}")
        flat = arrays.reshape(*arrays.shape[:-2], n * n)
        return flat[..., _pixel_index(self.matrix, n)].reshape(arrays.shape)

    def apply_to_offsets(self, offsets_px: np.ndarray) -> np.ndarray:
        """``R d`` for (..., 2) offsets ``d = (x, y)``, object pixels (exact: R is +-1/0)."""
        offsets = np.asarray(offsets_px)
        return offsets @ np.asarray(self.matrix, dtype=offsets.dtype).T


DIHEDRAL_TRANSFORMS: tuple[DihedralTransform, ...] = (
    DihedralTransform("identity", ((1, 0), (0, 1))),
    DihedralTransform("flip_x", ((-1, 0), (0, 1))),
    DihedralTransform("flip_y", ((1, 0), (0, -1))),
    DihedralTransform("rotate_180", ((-1, 0), (0, -1))),
    DihedralTransform("transpose", ((0, 1), (1, 0))),
    DihedralTransform("antitranspose", ((0, -1), (-1, 0))),
    DihedralTransform("rotate_90", ((0, -1), (1, 0))),
    DihedralTransform("rotate_270", ((0, 1), (-1, 0))),
)
"""Identity first, then the seven others."""


def probe_asymmetry(probe: np.ndarray, transform: DihedralTransform) -> float:
    """``min over phi of ||T(P) - exp(i phi) P|| / ||P||`` (dimensionless, 0 = invariant).

    A (modes, N, N) probe uses mode 0 (the mode the forward model uses). The constant
    phase is free because ``exp(i phi)`` leaves every diffraction amplitude unchanged.
    """
    p = np.asarray(probe)
    if p.ndim == 3:
        p = p[0]
    p = p.astype(np.complex128)
    energy = float(np.vdot(p, p).real)
    if not energy > 0:
        raise ValueError("the probe is zero everywhere; its symmetry is undefined")
    overlap = abs(np.vdot(p, transform.apply_to_patterns(p)))
    # ||T P||^2 = ||P||^2 (T permutes pixels), so the best phase leaves 2 - 2|<P, T P>|.
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * overlap / energy)))


def probe_symmetries(
    probe: np.ndarray, tolerance: float
) -> tuple[tuple[DihedralTransform, ...], dict[str, float]]:
    """The dihedral transforms under which ``probe`` is invariant within ``tolerance``
    (:func:`probe_asymmetry` <= tolerance; identity always, first), and the asymmetry of
    each one skipped, by name."""
    kept: list[DihedralTransform] = []
    skipped: dict[str, float] = {}
    for transform in DIHEDRAL_TRANSFORMS:
        asymmetry = 0.0 if transform.name == "identity" else probe_asymmetry(probe, transform)
        if asymmetry <= tolerance:
            kept.append(transform)
        else:
            skipped[transform.name] = asymmetry
    return tuple(kept), skipped


def augment_group(
    diffraction: np.ndarray,
    local_offsets_px: np.ndarray,
    gridsize: int,
    transform: DihedralTransform,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One group under ``transform``: every (C, N, N) pattern (and label patch)
    transformed, every (C, 2) local offset mapped by ``R``, members put back in the
    canonical row-major order of ``ptychopinn.grouping``. Returns new arrays."""
    offsets = transform.apply_to_offsets(local_offsets_px)
    order = canonical_member_order(offsets, gridsize)
    patterns = transform.apply_to_patterns(diffraction)[order]
    patches = None if labels is None else transform.apply_to_patterns(labels)[order]
    return patterns, offsets[order], patches
