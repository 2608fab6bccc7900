"""Side-by-side figures of reconstructions and their ground truth (demo, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["comparison_figure"]


def comparison_figure(path: Path, truth: np.ndarray, images: Sequence[tuple[str, np.ndarray,
                      dict[str, Any] | None]], region: np.ndarray, title: str = "") -> Path:
    """One PNG: a column per image (ground truth first), amplitude above phase.

    ``images`` are (title, complex object on the truth's canvas, metrics or None); the
    metrics' amplitude / phase SSIM go into the column title. Only ``region`` (bool, the
    compared pixels) is shown, each image with its global phase offset against the truth
    removed and its amplitude divided by its mean, as the metrics compare them. Written
    atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ptychopinn._io import atomic_output

    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    mask = region[box]
    ref = truth[box]
    shown = [("ground truth", truth, None), *images]
    fig, axes = plt.subplots(2, len(shown), figsize=(2.8 * len(shown), 6.0), squeeze=False)
    for j, (label, image, metrics) in enumerate(shown):
        part = image[box]
        part = part * np.exp(1j * np.angle(np.vdot(part[mask], ref[mask])))
        amplitude = np.where(mask, np.abs(part), np.nan)
        amplitude = amplitude / np.nanmean(amplitude)
        phase = np.where(mask, np.angle(part), np.nan)
        axes[0, j].imshow(amplitude, cmap="gray")
        axes[1, j].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
        if metrics is not None:
            label = (f"{label}\nSSIM amplitude {metrics['amplitude_ssim']:.3f}\n"
                     f"SSIM phase {metrics['phase_ssim']:.3f}")
        axes[0, j].set_title(label, fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("amplitude / its mean")
    axes[1, 0].set_ylabel("phase (rad)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close(fig)
    return path
