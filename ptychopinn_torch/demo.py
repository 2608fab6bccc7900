"""The main job: simulate, train, reconstruct a held-out scan, write images and metrics
(``python -m ptychopinn_torch.demo``).

Two scans of the benchmark's dense scenario (``ptychopinn.scenarios``: natural-image
object, 441 positions, 9 px steps, 1e6 photons) are simulated from different views of
the images; the recipe's network (``ptychopinn_torch.recipes``) trains unsupervised on
the first for a time budget and reconstructs the second, which it has never seen, then
the physics refinement improves that image against the measured data. One PNG shows the
ground truth, the network's image and the final image side by side with their SSIMs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ptychopinn._io import atomic_write_text, check_output_dir, existing_outputs
from ptychopinn.cli.common import (
    CliArgumentParser,
    build_or_exit,
    command_line_process,
    configure_console_logging,
    positive_float,
    positive_int,
    run_reporting_errors,
)
from ptychopinn.config import ExecutionConfig, InferenceConfig
from ptychopinn.scenarios import HELD_OUT_SEED, SCENARIOS, scenario_scan
from ptychopinn_torch.devices import accelerator_unavailable

logger = logging.getLogger("ptychopinn_torch.demo")

#: Training budget of the demo, minutes (the whole demo stays under 3 minutes on 2 cores).
DEFAULT_MINUTES = 1.5


def build_parser() -> argparse.ArgumentParser:
    dense = SCENARIOS["dense"]
    p = CliArgumentParser(
        prog="python -m ptychopinn_torch.demo",
        description="Simulate, train, reconstruct a held-out scan, write images + metrics.",
    )
    p.add_argument("--output_dir", type=Path, default=Path("demo_outputs"),
                   help="Where data, model, images and metrics go (default: demo_outputs).")
    p.add_argument("--minutes", type=positive_float, default=DEFAULT_MINUTES,
                   help=f"Training budget in minutes (default: {DEFAULT_MINUTES}).")
    p.add_argument("--max_epochs", type=positive_int, default=None,
                   help="Train exactly this many epochs instead of a time budget.")
    p.add_argument("--n-positions", dest="n_positions", type=positive_int,
                   default=dense["n_positions"],
                   help=f"Scan positions per simulated scan (default: {dense['n_positions']}).")
    p.add_argument("--gridsize", type=positive_int, default=1,
                   help="Group side (default: 1).")
    p.add_argument("--nphotons", type=positive_float, default=dense["nphotons"],
                   help=f"Photons per diffraction pattern (default: {dense['nphotons']:g}).")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps"),
                   default="auto", help="Hardware (default: auto).")
    p.add_argument("--seed", type=int, default=0, help="Simulation seed (default: 0).")
    p.add_argument("--quiet", action="store_true",
                   help="Print only the result lines (SSIMs and where the files are).")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    from ptychopinn_torch.recipes import RECIPE_MODEL

    model_config, execution = build_or_exit(parser, lambda: (
        RECIPE_MODEL.replace(gridsize=args.gridsize),
        ExecutionConfig(accelerator=args.accelerator, enable_progress_bar=not args.quiet,
                        logger="csv", seed=args.seed),
    ))
    if args.seed < 0:
        parser.error(f"argument --seed: must be >= 0, got {args.seed}")
    problem = accelerator_unavailable(execution.accelerator)
    if problem is not None:
        parser.error(f"argument --accelerator: {problem}")
    out = args.output_dir
    run_reporting_errors(parser, lambda: check_output_dir(out))
    earlier = existing_outputs(out)
    if earlier:  # the demo is meant to be rerun: say so, and replace its results
        logger.warning("reusing --output_dir %s: the earlier demo results there (%s) are "
                       "replaced", out, ", ".join(earlier))
    with command_line_process(parser.prog):
        summary = run_reporting_errors(
            parser, lambda: run_demo(args, model_config, execution))
    _print_result(summary, out)
    return 0


def run_demo(args: argparse.Namespace, model_config: Any,
             execution: ExecutionConfig) -> dict[str, Any]:
    """Simulate, train, reconstruct and write everything; returns the summary."""
    from ptychopinn_torch.figures import comparison_figure
    from ptychopinn_torch.inference import load_model, run_inference, truth_region
    from ptychopinn_torch.recipes import (
        RECIPE_LEARNING_RATE,
        RECIPE_SCHEDULER,
        recipe_training_config,
        train_network_for_probe,
    )
    from ptychopinn_torch.train import train

    out = args.output_dir
    start = time.perf_counter()
    scan = {"n_positions": args.n_positions, "nphotons": args.nphotons}
    logger.info("simulating two %d-position scans (natural-image object, %.0e photons)",
                args.n_positions, args.nphotons)
    train_data = scenario_scan("dense", seed=args.seed, **scan)
    test_data = scenario_scan("dense", seed=HELD_OUT_SEED + args.seed, **scan)
    train_data.save(out / "data" / "train.npz")
    test_data.save(out / "data" / "test.npz")

    t0 = time.perf_counter()
    if args.max_epochs is None:
        bundle = train_network_for_probe(train_data, out / "model", args.minutes, execution,
                                         model_config)
    else:
        config = recipe_training_config(train_data, out / "model", args.max_epochs,
                                        model_config)
        bundle = train(train_data, None, config, execution.replace(
            learning_rate=RECIPE_LEARNING_RATE, scheduler=RECIPE_SCHEDULER),
            overwrite=True).bundle_path
    training_s = time.perf_counter() - t0
    logger.info("training took %.1f s", training_s)

    model = load_model(bundle)
    recon, paths = run_inference(
        InferenceConfig(model_path=bundle, output_dir=out / "reconstruction"),
        execution, data=test_data, model=model)
    metrics = json.loads(paths["metrics"].read_text()) if "metrics" in paths else {}
    found = truth_region(recon, test_data.object_guess)
    if found is not None and metrics:
        truth, region = found
        paths["comparison_png"] = comparison_figure(
            out / "comparison.png", truth,
            [("network", recon.network_object if recon.network_object is not None
              else recon.object, metrics.get("network") or metrics),
             ("network + refinement", recon.object, metrics)],
            region, title="held-out scan: amplitude (top), phase (bottom)")
    summary = {
        "training_time_s": training_s,
        "inference_time_s": sum(recon.timings_s.values()),
        "timings_s": recon.timings_s,
        "total_time_s": time.perf_counter() - start,
        "bundle": str(bundle),
        "held_out_metrics": metrics,
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2))
    return summary


def _print_result(summary: dict[str, Any], out: Path) -> None:
    metrics = summary["held_out_metrics"]
    network = metrics.get("network") or {}
    nan = float("nan")
    if network:
        print(f"network alone:        amplitude SSIM {network.get('amplitude_ssim', nan):.3f}, "
              f"phase SSIM {network.get('phase_ssim', nan):.3f}")
    print(f"network + refinement: amplitude SSIM {metrics.get('amplitude_ssim', nan):.3f}, "
          f"phase SSIM {metrics.get('phase_ssim', nan):.3f} (held-out scan)")
    print(f"training {summary['training_time_s']:.0f} s, reconstruction "
          f"{summary['inference_time_s']:.1f} s, total {summary['total_time_s']:.0f} s")
    for name, path in summary["outputs"].items():
        print(f"{name}: {path}")
    print(f"summary: {out / 'demo_summary.json'}")


if __name__ == "__main__":
    sys.exit(main())
