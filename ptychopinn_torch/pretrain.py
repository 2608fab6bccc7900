"""Pretraining workflow: synthetic scans made with an experiment's own probe and scan
geometry -> a trained bundle that ``train(..., init_model=...)`` fine-tunes on the
experiment (``specs/workflows.md``, "Pretraining and fine-tuning").

Its command line is ``ptychopinn pretrain`` (``ptychopinn.cli.pretrain``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ptychopinn._io import file_sha256
from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn.simulate import (
    PRETRAIN_N_OBJECTS,
    PRETRAIN_OBJECT_KINDS,
    check_pretraining_inputs,
    simulate_pretraining_scans,
)
from ptychopinn_torch.inference import LoadedModel
from ptychopinn_torch.preflight import check_scan
from ptychopinn_torch.train import TrainingResult, train
from ptychopinn_torch.trainer import EpochCallback

logger = logging.getLogger(__name__)

__all__ = ["pretrain"]


def pretrain(
    probe_scan: RawData | str | os.PathLike[str],
    training_config: TrainingConfig,
    execution_config: ExecutionConfig | None = None,
    *,
    n_objects: int = PRETRAIN_N_OBJECTS,
    object_kinds: Sequence[str] = PRETRAIN_OBJECT_KINDS,
    test_data: RawData | None = None,
    epoch_callback: EpochCallback | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_model: str | Path | LoadedModel | None = None,
    probe_source: str | os.PathLike[str] | None = None,
) -> TrainingResult:
    """Pretrain on ``n_objects`` synthetic scans made for the experiment ``probe_scan``.

    ``probe_scan`` (a RawData or the path of its NPZ) gives the probe (its
    ``probeGuess``, mode 0) and the scan geometry (its positions); each synthetic scan
    images a new object (kinds ``object_kinds`` in turn, seeds from
    ``execution_config.seed``) at ``training_config.nphotons`` photons per pattern, or at
    the experiment's own mean total counts when that is None
    (:func:`ptychopinn.simulate.simulate_pretraining_scans`). The scans are then trained
    together like several scans (:func:`ptychopinn_torch.train.train`, all its checks and
    outputs) and the bundle's training summary gets a ``pretraining`` entry saying what
    was simulated, from which file (``probe_source``, with its SHA-256; default the path
    given as ``probe_scan``). The probe scan is checked (``preflight.check_scan``, the
    object kinds, the photons and the memory) before anything is simulated.
    """
    execution = execution_config or ExecutionConfig()
    if not isinstance(probe_scan, RawData):
        probe_source = probe_scan if probe_source is None else probe_source
        probe_scan = RawData.from_file(probe_scan)
    config = training_config
    check_scan(probe_scan, config.model, "probe scan (--probe-from)",
               training=config.nphotons is None)
    with_labels = config.uses_labels
    nphotons = check_pretraining_inputs(probe_scan, n_objects, object_kinds, config.nphotons,
                                        with_labels)
    seed = execution.seed
    with tqdm(total=n_objects, desc="simulating", unit="scan", file=sys.stderr,
              disable=not execution.enable_progress_bar, leave=False) as bar:
        scans = simulate_pretraining_scans(
            probe_scan, n_objects, object_kinds, nphotons, seed, with_labels,
            progress=lambda done, total, raw: bar.update(1))
    kinds = list(object_kinds)
    logger.info("pretraining: simulated %d scans of %d patterns (%s) at %.4g photons per "
                "pattern with the probe and positions of %s", n_objects,
                probe_scan.n_positions, ", ".join(dict.fromkeys(kinds)), nphotons,
                probe_source if probe_source is not None else "the given scan")
    first = scans[0]  # every scan has the same geometry
    shift = [float(first.xcoords[0] - probe_scan.xcoords[0]),
             float(first.ycoords[0] - probe_scan.ycoords[0])]
    probe = probe_scan.probe_guess if probe_scan.probe_guess.ndim == 2 \
        else probe_scan.probe_guess[0]
    source = None if probe_source is None else Path(probe_source)
    provenance: dict[str, Any] = {
        "probe_source": None if source is None else str(source),
        "probe_source_sha256": file_sha256(source) if source is not None and source.is_file()
        else None,
        "probe_sha256": hashlib.sha256(np.ascontiguousarray(probe).tobytes()).hexdigest(),
        "n_objects": n_objects,
        "object_kinds": [kinds[i % len(kinds)] for i in range(n_objects)],
        "object_seeds": [seed + 3 * i for i in range(n_objects)],
        "noise_seeds": [seed + 3 * i + 2 for i in range(n_objects)],
        "nphotons": nphotons,
        "nphotons_from": "nphotons" if config.nphotons is not None
        else "mean total counts of the probe scan",
        "n_positions_per_scan": probe_scan.n_positions,
        "object_shape": list(first.object_guess.shape),
        "position_shift_px": shift,
    }
    return train(scans, test_data, config, execution, epoch_callback=epoch_callback,
                 resume=resume, overwrite=overwrite, init_model=init_model,
                 extra_summary={"pretraining": provenance})
