"""The network against an iterative solver on identical held-out scans, side by side.

One command, one process. For each scenario of ``ptychopinn.scenarios`` (dense overlap,
low dose, sparse overlap) it reconstructs the held-out scan (an object view no training
saw) with:

* the network alone (grouping, network, stitching);
* the network + physics refinement (``ptychopinn_torch.refine``) at 5, 10, 20 iterations;
* refinement from a flat start, no network (the iterative reference), at 10, 20, 50, 100
  iterations, and at the iteration count that takes as long as each network method;
* pty-chi's LSQML at 10, 20, 50, 100 epochs when ``--ptychi-python`` names a Python that
  runs ``../shared/tools/ptychi/run_lsqml.py`` (pty-chi needs torchvision, which does not
  load beside the CPU torch of this project's environment; without it the row is skipped
  with a note).

Every image is scored by the same code (``ptychopinn.metrics.evaluate_reconstruction``:
registration, phase-offset removal, amplitude normalised by its mean) over the same
region as ``metrics.json``: the well-lit pixels (summed probe intensity >= half its
maximum) of the scanned area. Prints a table, writes ``results.json`` and one PNG per scenario (ground truth and
every method's image, SSIMs in the titles) into ``--out``.

The network is trained here first (``--train-minutes``, default 12, on 2 CPU cores) unless
``--model`` gives a bundle; ``python benchmarks/versus_iterative.py --help`` lists the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychopinn.config import ExecutionConfig, InferenceConfig
from ptychopinn.data import RawData
from ptychopinn.metrics import evaluate_reconstruction, illumination_map
from ptychopinn.scenarios import SCENARIOS, scenario_scan
from ptychopinn_torch.figures import comparison_figure
from ptychopinn_torch.inference import (
    LoadedModel,
    Reconstruction,
    load_model,
    reconstruct,
    truth_region,
)
from ptychopinn_torch.recipes import train_network_for_probe
from ptychopinn_torch.refine import flat_object, refine_object

NETWORK_REFINE_ITERATIONS = (5, 10, 20)
FLAT_ITERATIONS = (10, 20, 50, 100)
PTYCHI_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "ptychi" / "run_lsqml.py"


@dataclass
class Row:
    scenario: str
    method: str
    seconds: float
    metrics: dict[str, Any]
    image: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "scenario": self.scenario,
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "amplitude_ssim": m.get("amplitude_ssim"),
            "phase_ssim": m.get("phase_ssim"),
            "amplitude_psnr_db": m.get("amplitude_psnr_db"),
            "phase_psnr_db": m.get("phase_psnr_db"),
            "amplitude_frc50_period_px": m.get("amplitude_frc50_period_px"),
            "phase_frc50_period_px": m.get("phase_frc50_period_px"),
        }


class Scorer:
    """Scores objects on the stitcher's canvas of a scan against its ground truth, over
    the region ``inference.compute_metrics`` uses (well-lit, covered, inside the object)."""

    def __init__(self, data: RawData, canvas_origin: tuple[int, int],
                 canvas_shape: tuple[int, int], coverage: np.ndarray) -> None:
        self.origin = canvas_origin
        self.shape = canvas_shape
        positions = np.stack([data.xcoords, data.ycoords], axis=-1)
        template = Reconstruction(np.zeros(canvas_shape, np.complex64), canvas_origin,
                                  coverage, data.n_positions, illumination=illumination_map(
                                      data.probe_guess, positions, canvas_origin,
                                      canvas_shape))
        found = truth_region(template, data.object_guess)
        assert found is not None
        self.truth, self.region = found

    def __call__(self, obj: np.ndarray) -> dict[str, Any]:
        return evaluate_reconstruction(obj, self.truth, region=self.region)


def _refine_flat(data: RawData, origin: tuple[int, int], shape: tuple[int, int],
                 iterations: int) -> tuple[np.ndarray, float]:
    positions = np.stack([data.xcoords, data.ycoords], axis=-1)
    t0 = time.perf_counter()
    start = flat_object(data.probe_guess, data.diffraction, shape)
    result = refine_object(start, origin, data.probe_guess, data.diffraction, positions,
                           max_iterations=iterations, tolerance=0.0)
    return result.object, time.perf_counter() - t0


def _network(model: LoadedModel, data: RawData, refine_iterations: int,
             execution: ExecutionConfig) -> tuple[Reconstruction, float]:
    config = InferenceConfig(refine_iterations=refine_iterations, refine_tolerance=0.0)
    t0 = time.perf_counter()
    recon = reconstruct(model, data, config, execution)
    return recon, time.perf_counter() - t0


def _ptychi(python: str, data: RawData, name: str, work: Path, scorer: Scorer,
            epochs: tuple[int, ...]) -> list[Row]:
    """pty-chi LSQML (known probe) on the same scan, through the shared tool in its own
    environment; its objects come back on the objectGuess grid."""
    n = data.N
    path = work / f"{name}.npz"
    # The tool's far field is the unnormalised FFT; ours is orthonormal: probe / N.
    np.savez(path, diffraction=data.diffraction, xcoords=data.xcoords, ycoords=data.ycoords,
             probeGuess=(data.probe_guess / n).astype(np.complex64),
             objectGuess=data.object_guess, scan_index=np.zeros(data.n_positions, np.int64))
    out = work / f"ptychi_{name}"
    cmd = [python, str(PTYCHI_TOOL), "--data", str(path), "--engines", "lsqml",
           "--epochs", str(max(epochs)), "--epoch-checkpoints", ",".join(map(str, epochs)),
           "--intensity-variation", "off", "--threads", str(torch.get_num_threads()),
           "--outdir", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads(next((out / "results").glob("*.json")).read_text())
    walls = _ptychi_wall_times(summary)
    rows = []
    x0, y0 = scorer.origin
    h, w = scorer.shape
    for e in epochs:
        full = np.load(next((out / "results").glob(f"*_lsqml_e{e}.npz")))["object"]
        canvas = np.zeros((h, w), np.complex64)
        r0, r1 = max(0, y0), min(full.shape[0], y0 + h)
        c0, c1 = max(0, x0), min(full.shape[1], x0 + w)
        canvas[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = full[r0:r1, c0:c1]
        rows.append(Row(name, f"pty-chi LSQML {e} epochs", walls.get(e, float("nan")),
                        scorer(canvas), canvas))
    return rows


def _ptychi_wall_times(summary: Any) -> dict[int, float]:
    """Epochs -> wall seconds (task build + run) from the tool's JSON: each run there is
    ``{"epochs": E, "timing": {"build_s", "run_s", "total_s"}, ...}``."""
    found: dict[int, float] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            epochs = node.get("epochs")
            timing = node.get("timing")
            wall = timing.get("total_s") if isinstance(timing, dict) else None
            if isinstance(epochs, int) and isinstance(wall, int | float):
                found[epochs] = float(wall)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(summary)
    return found


def run_scenario(name: str, model: LoadedModel, execution: ExecutionConfig,
                 ptychi_python: str | None, work: Path) -> list[Row]:
    data = scenario_scan(name)
    # Untimed warm-up of both paths: one-time costs (kernel selection, the first
    # bfloat16 convolutions, allocator growth) fall on no method's time.
    _network(model, data, 1, execution)
    recon, seconds = _network(model, data, 0, execution)
    # Every method is scored on the network's canvas and its coverage (the stitcher's
    # canvas: every position's central N/2 square).
    origin = (int(recon.origin_px[0]), int(recon.origin_px[1]))
    shape = recon.object.shape
    scorer = Scorer(data, origin, shape, recon.coverage)
    rows: list[Row] = [Row(name, "network", seconds, scorer(recon.object), recon.object)]
    for k in NETWORK_REFINE_ITERATIONS:
        refined, seconds = _network(model, data, k, execution)
        rows.append(Row(name, f"network + {k} refinement", seconds, scorer(refined.object),
                        refined.object))
    per_iteration = None
    _refine_flat(data, (int(recon.origin_px[0]), int(recon.origin_px[1])),
                 recon.object.shape, 1)
    for k in FLAT_ITERATIONS:
        obj, seconds = _refine_flat(data, origin, shape, k)
        rows.append(Row(name, f"flat start, {k} iterations", seconds, scorer(obj), obj))
        per_iteration = seconds / k
    assert per_iteration is not None
    # The iterative reference given exactly each network method's time.
    for row in [r for r in rows if r.method.startswith("network")]:
        k = max(1, int(row.seconds / per_iteration))
        obj, seconds = _refine_flat(data, origin, shape, k)
        rows.append(Row(name, f"flat start, {k} it. (time of {row.method})", seconds,
                        scorer(obj)))
    if ptychi_python:
        rows.extend(_ptychi(ptychi_python, data, name, work, scorer, FLAT_ITERATIONS))
    _figure(name, scorer, [r for r in rows if r.image is not None], work)
    return rows


def _figure(name: str, scorer: Scorer, rows: list[Row], out: Path) -> None:
    comparison_figure(out / f"versus_iterative_{name}.png", scorer.truth,
                      [(r.method, r.image, r.metrics) for r in rows], scorer.region,
                      title=f"{name}: held-out scan")


def _verdicts(rows: list[Row]) -> list[str]:
    out = []
    by = {(r.scenario, r.method): r for r in rows}
    dense_flat = by.get(("dense", "flat start, 100 iterations"))
    if dense_flat is not None:
        target_a = dense_flat.metrics["amplitude_ssim"] - 0.01
        target_p = dense_flat.metrics["phase_ssim"] - 0.01
        hits = [r for r in rows if r.scenario == "dense" and r.method.startswith("network +")
                and r.metrics["amplitude_ssim"] >= max(target_a, 0.97)
                and r.metrics["phase_ssim"] >= max(target_p, 0.93)]
        best = min(hits, key=lambda r: r.seconds, default=None)
        if best is None:
            out.append("dense: no network + refinement run reached 100 flat-start iterations' "
                       "quality within 0.01 SSIM (and 0.97 / 0.93)")
        else:
            out.append(f"dense: {best.method} reaches 100 flat-start iterations' quality within "
                       f"0.01 in {best.seconds:.2f} s = {best.seconds / dense_flat.seconds:.2f} "
                       f"of their {dense_flat.seconds:.2f} s (target <= 0.33)")
    for scenario in ("low_dose", "sparse"):
        for r in [r for r in rows if r.scenario == scenario and r.method.startswith("network")]:
            rival = next((x for x in rows if x.scenario == scenario
                          and x.method.endswith(f"(time of {r.method})")), None)
            if rival is None:
                continue
            wins = (r.metrics["amplitude_ssim"] > rival.metrics["amplitude_ssim"]
                    and r.metrics["phase_ssim"] > rival.metrics["phase_ssim"])
            out.append(f"{scenario}: {r.method} {'beats' if wins else 'does not beat'} "
                       f"{rival.method.split(' (')[0]} of equal time "
                       f"({r.metrics['amplitude_ssim']:.3f}/{r.metrics['phase_ssim']:.3f} vs "
                       f"{rival.metrics['amplitude_ssim']:.3f}/{rival.metrics['phase_ssim']:.3f})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None,
                   help="Trained bundle to use instead of training one here")
    p.add_argument("--train-minutes", type=float, default=12.0,
                   help="Training budget when no --model is given (default: 12)")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--ptychi-python", default=None,
                   help="Python of an environment where pty-chi imports (see "
                        "../shared/tools/ptychi/README.md); default: skip pty-chi")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", type=Path, default=Path("benchmark_outputs/versus_iterative"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    execution = ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load "
          f"{os.getloadavg()[0]:.2f}")
    if args.model is None:
        model_dir = args.out / "model"
        t0 = time.perf_counter()
        bundle = train_network_for_probe(scenario_scan("dense", seed=0), model_dir,
                                         minutes=args.train_minutes, execution=execution)
        print(f"trained in {time.perf_counter() - t0:.0f} s: {bundle}")
    else:
        bundle = args.model
    model = load_model(bundle)
    if args.ptychi_python is None:
        print("pty-chi: skipped (it needs torchvision, which does not run beside this CPU "
              "torch); run with --ptychi-python PATH of its own environment "
              "(../shared/tools/ptychi/README.md)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenarios:
            rows.extend(run_scenario(name, model, execution, args.ptychi_python, Path(tmp)))
            for png in Path(tmp).glob("*.png"):
                png.replace(args.out / png.name)
    header = f"{'scenario':9s} {'method':52s} {'s':>7s} {'A-SSIM':>7s} {'P-SSIM':>7s} " \
             f"{'A-PSNR':>7s} {'P-PSNR':>7s} {'A-FRC':>6s} {'P-FRC':>6s}"
    print(header)
    for row in rows:
        s = row.summary()

        def fmt(v: Any, spec: str) -> str:
            return format(v, spec) if isinstance(v, int | float) else "   n/a"

        print(f"{s['scenario']:9s} {s['method']:52s} {s['seconds']:7.2f} "
              f"{fmt(s['amplitude_ssim'], '7.3f')} {fmt(s['phase_ssim'], '7.3f')} "
              f"{fmt(s['amplitude_psnr_db'], '7.2f')} {fmt(s['phase_psnr_db'], '7.2f')} "
              f"{fmt(s['amplitude_frc50_period_px'], '6.1f')} "
              f"{fmt(s['phase_frc50_period_px'], '6.1f')}")
    verdicts = _verdicts(rows)
    for line in verdicts:
        print(line)
    (args.out / "results.json").write_text(json.dumps(
        {"rows": [r.summary() for r in rows], "verdicts": verdicts,
         "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
         "model": str(bundle)}, indent=2))
    print(f"results: {args.out / 'results.json'}; images: {args.out}/versus_iterative_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
