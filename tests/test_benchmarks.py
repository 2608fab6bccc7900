"""The benchmark scripts' own logic (they are run by hand, not in CI; their figures are
in README): what they read from other tools and how they decide."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_versus_iterative_reads_ptychi_wall_times_of_every_checkpoint():
    versus = _load("versus_iterative")
    summary = {"runs": {  # the shape run_lsqml.py writes
        "lsqml b441 compact+mom P-fixed e10": {
            "metrics": {"ssim_amp": 0.9}, "epochs": 10,
            "timing": {"build_s": 0.5, "run_s": 1.25, "total_s": 1.75}},
        "lsqml b441 compact+mom P-fixed e20": {
            "metrics": {"ssim_amp": 0.95}, "epochs": 20,
            "timing": {"build_s": 0.5, "run_s": 2.5, "total_s": 3.0}},
    }}
    assert versus._ptychi_wall_times(summary) == {10: 1.75, 20: 3.0}
    assert versus._ptychi_wall_times({"runs": {"x": {"epochs": 5}}}) == {}
