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
    TWIN_NOTE,
    CliArgumentParser,
    command_line_process,
    run_reporting_errors,
)
from ptychopinn.data import PHOTONS_PER_PATTERN_RANGE
from ptychopinn.simulate import (
    OBJECT_KINDS,
    PROBE_KINDS,
    SCAN_KINDS,
    SUPPORTED_N,
    simulate_datasets,
)

PROG = "ptychopinn simulate"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The simulation command line's parser."""
    p = CliArgumentParser(
        prog=prog,
        description="Simulate a synthetic ptychography data set (NPZ, amplitude diffraction).",
        epilog=TWIN_NOTE + ".",
    )
    p.add_argument("--output", required=True, type=Path, metavar="NPZ",
                   help="Output .npz file (required); with --objects_per_probe K > 1, K files "
                        "<stem>_obj<i>.npz next to it")
    p.add_argument("--object", "--object_class", default="natural", choices=OBJECT_KINDS,
                   help="Object kind (default: natural)")
    p.add_argument("--probe", default="aperture", choices=PROBE_KINDS,
                   help="Probe kind (default: aperture)")
    p.add_argument("--probe-radius-px", type=float, default=None, metavar="PX",
                   help="Aperture radius (aperture probe) or Gaussian sigma (gaussian "
                        "probe), pixels (default: N/8 or N/12)")
    p.add_argument("--integer-positions", action="store_true",
                   help="Round every scan position to a whole pixel (default: off)")
    p.add_argument("--scan", default="spiral", choices=SCAN_KINDS,
                   help="Scan pattern (default: spiral)")
    p.add_argument("--N", type=int, default=64, choices=SUPPORTED_N,
                   help="Diffraction pattern side, pixels (default: 64)")
    p.add_argument("--n-positions", "--diff_per_object", dest="n_positions", type=int,
                   default=512, metavar="INT",
                   help="Scan positions (diffraction patterns) per object (default: 512)")
    p.add_argument("--objects_per_probe", type=int, default=1, metavar="INT",
                   help="Objects simulated with the same probe, one file each (default: 1)")
    p.add_argument("--step-px", type=float, default=None, metavar="PX",
                   help="Scan step (raster) or mean spacing (spiral), object pixels "
                        "(default: N/8)")
    p.add_argument("--jitter-px", type=float, default=0.0, metavar="PX",
                   help="Uniform position jitter amplitude, object pixels (default: 0)")
    p.add_argument("--nphotons", type=float, default=1e6, metavar="FLOAT",
                   help="Mean photons per pattern (default: 1e6)")
    p.add_argument("--beamstop_diameter", type=float, default=0.0, metavar="PX",
                   help="Diameter of a centred beamstop that zeroes the measured "
                        "diffraction, pixels (default: 0 = none)")
    p.add_argument("--seed", type=int, default=0, metavar="INT",
                   help="Random seed, >= 0 (default: 0); another seed gives another object "
                        "region and noise")
    p.add_argument("--quiet", action="store_true", help="Print only the output path(s)")
    return p


def output_paths(output: Path, objects_per_probe: int) -> list[Path]:
    """``output`` itself for one object, else ``<stem>_obj<i>.npz`` beside it."""
    if objects_per_probe == 1:
        return [output]
    return [output.with_name(f"{output.stem}_obj{i}.npz") for i in range(objects_per_probe)]


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
    if args.objects_per_probe < 1:
        parser.error(f"--objects_per_probe must be >= 1, got {args.objects_per_probe}")
    if args.step_px is not None and not (math.isfinite(args.step_px) and args.step_px > 0):
        parser.error(f"--step-px must be a finite number > 0, got {args.step_px}")
    if args.probe_radius_px is not None and not (
            math.isfinite(args.probe_radius_px) and 0 < args.probe_radius_px <= args.N / 2):
        parser.error(f"--probe-radius-px must be a number of pixels in (0, N/2 = {args.N // 2}]"
                     f", got {args.probe_radius_px}")
    if not (math.isfinite(args.jitter_px) and args.jitter_px >= 0):
        parser.error(f"--jitter-px must be a finite number >= 0, got {args.jitter_px}")
    low, high = PHOTONS_PER_PATTERN_RANGE
    if not (math.isfinite(args.nphotons) and low <= args.nphotons <= high):
        parser.error(f"--nphotons must be a finite number in [{low:g}, {high:g}] photons per "
                     f"pattern, got {args.nphotons:g}")
    if not (math.isfinite(args.beamstop_diameter) and 0 <= args.beamstop_diameter < args.N):
        parser.error(f"--beamstop_diameter must be a number of pixels in [0, {args.N}), got "
                     f"{args.beamstop_diameter}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    output: Path = args.output
    if output.suffix != ".npz":
        parser.error(f"--output must end in .npz, got {str(output)!r}")
    if not output.parent.is_dir() and not output.parent.exists():
        parser.error(f"--output directory does not exist: {str(output.parent)!r}")
    run_reporting_errors(parser, lambda: check_output_file(output, "--output"))

    datasets = run_reporting_errors(parser, lambda: simulate_datasets(
        args.objects_per_probe, seed=args.seed, object_kind=args.object,
        probe_kind=args.probe, N=args.N, n_positions=args.n_positions, scan_kind=args.scan,
        step_px=args.step_px, jitter_px=args.jitter_px, nphotons=args.nphotons,
        beamstop_diameter=args.beamstop_diameter, probe_radius_px=args.probe_radius_px,
        integer_positions=args.integer_positions))
    for raw, path in zip(datasets, output_paths(output, args.objects_per_probe), strict=True):
        run_reporting_errors(parser, lambda raw=raw, path=path: raw.save(path))  # atomic
        if not args.quiet:
            counts = (raw.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)).mean()
            print(f"simulated {args.n_positions} patterns, N={args.N}, object "
                  f"{raw.object_guess.shape[0]} x {raw.object_guess.shape[1]} px, "
                  f"mean total counts {counts:.4g}", file=sys.stderr)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
