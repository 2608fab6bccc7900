"""Simulation command line: ``ptychopinn simulate`` (also ``ptychopinn-simulate`` and
``python -m ptychopinn.simulate``): flags -> ``ptychopinn.simulate.simulate_dataset`` ->
an NPZ written atomically."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ptychopinn._io import check_output_file
from ptychopinn.cli.common import (
    CliArgumentParser,
    command_line_process,
    run_reporting_errors,
)
from ptychopinn.data import PHOTONS_PER_PATTERN_RANGE
from ptychopinn.simulate import OBJECT_KINDS, PROBE_KINDS, SCAN_KINDS, SUPPORTED_N, simulate_dataset

PROG = "ptychopinn simulate"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The simulation command line's parser."""
    p = CliArgumentParser(
        prog=prog,
        description="Simulate a synthetic ptychography data set (NPZ, amplitude diffraction).",
    )
    p.add_argument("--output", required=True, type=Path, help="output .npz file")
    p.add_argument("--object", default="natural", choices=OBJECT_KINDS, help="object kind")
    p.add_argument("--probe", default="aperture", choices=PROBE_KINDS, help="probe kind")
    p.add_argument("--scan", default="spiral", choices=SCAN_KINDS, help="scan pattern")
    p.add_argument("--N", type=int, default=64, choices=SUPPORTED_N,
                   help="diffraction pattern side, pixels")
    p.add_argument("--n-positions", type=int, default=512, help="number of scan positions")
    p.add_argument("--step-px", type=float, default=None,
                   help="scan step (raster) or mean spacing (spiral), object pixels; default N/8")
    p.add_argument("--jitter-px", type=float, default=0.0,
                   help="uniform position jitter amplitude, object pixels")
    p.add_argument("--nphotons", type=float, default=1e6, help="mean photons per pattern")
    p.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    p.add_argument("--quiet", action="store_true", help="print only the output path")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """CLI entry point: simulate, write the NPZ atomically, print its path.  Every flag,
    the photon range, the memory the scan needs and the output location are checked
    before anything is simulated."""
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: Sequence[str] | None, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.n_positions < 1:
        parser.error(f"--n-positions must be >= 1, got {args.n_positions}")
    if args.step_px is not None and not (math.isfinite(args.step_px) and args.step_px > 0):
        parser.error(f"--step-px must be a finite number > 0, got {args.step_px}")
    if not (math.isfinite(args.jitter_px) and args.jitter_px >= 0):
        parser.error(f"--jitter-px must be a finite number >= 0, got {args.jitter_px}")
    low, high = PHOTONS_PER_PATTERN_RANGE
    if not (math.isfinite(args.nphotons) and low <= args.nphotons <= high):
        parser.error(f"--nphotons must be a finite number in [{low:g}, {high:g}] photons per "
                     f"pattern, got {args.nphotons:g}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    output: Path = args.output
    if output.suffix != ".npz":
        parser.error(f"--output must end in .npz, got {str(output)!r}")
    if not output.parent.is_dir() and not output.parent.exists():
        parser.error(f"--output directory does not exist: {str(output.parent)!r}")
    run_reporting_errors(parser, lambda: check_output_file(output, "--output"))

    raw = run_reporting_errors(parser, lambda: simulate_dataset(
        object_kind=args.object, probe_kind=args.probe, N=args.N,
        n_positions=args.n_positions, scan_kind=args.scan, step_px=args.step_px,
        jitter_px=args.jitter_px, nphotons=args.nphotons, seed=args.seed))
    run_reporting_errors(parser, lambda: raw.save(output))  # atomic; SaveError if disk full
    if not args.quiet:
        counts = (raw.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)).mean()
        print(f"simulated {args.n_positions} patterns, N={args.N}, object "
              f"{raw.object_guess.shape[0]} x {raw.object_guess.shape[1]} px, "
              f"mean total counts {counts:.4g}", file=sys.stderr)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
