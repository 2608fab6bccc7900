"""The main job: simulate a small dataset, train, reconstruct a held-out scan, and write
images and metrics (``python -m ptychopinn_torch.demo``).

Two scans of different regions of a natural-image object are simulated; the model trains
unsupervised on the first and reconstructs the second, which it has never seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ptychopinn._io import atomic_write_text
from ptychopinn.cli.common import (
    CliArgumentParser,
    build_or_exit,
    configure_console_logging,
    positive_float,
    positive_int,
)
from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.simulate import simulate_dataset
from ptychopinn_torch.devices import accelerator_unavailable

logger = logging.getLogger("ptychopinn_torch.demo")


def build_parser() -> argparse.ArgumentParser:
    p = CliArgumentParser(
        prog="python -m ptychopinn_torch.demo",
        description="Simulate, train, reconstruct a held-out scan, write images + metrics.",
    )
    p.add_argument("--output_dir", type=Path, default=Path("demo_outputs"),
                   help="Where data, model, images and metrics go (default: demo_outputs).")
    p.add_argument("--max_epochs", type=positive_int, default=30,
                   help="Training epochs (default: 30).")
    p.add_argument("--n-positions", dest="n_positions", type=positive_int, default=256,
                   help="Scan positions per simulated scan (default: 256).")
    p.add_argument("--gridsize", type=positive_int, default=1,
                   help="Group side (default: 1).")
    p.add_argument("--nphotons", type=positive_float, default=1e6,
                   help="Photons per diffraction pattern (default: 1e6).")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps"),
                   default="auto", help="Hardware (default: auto).")
    p.add_argument("--seed", type=int, default=0, help="Simulation seed (default: 0).")
    p.add_argument("--quiet", action="store_true", help="No progress output.")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    out = args.output_dir
    training, execution = build_or_exit(parser, lambda: (
        TrainingConfig(
            model=ModelConfig(N=64, gridsize=args.gridsize, n_filters_scale=1),
            n_groups=args.n_positions,
            batch_size=16,
            nepochs=args.max_epochs,
            neighbor_count=max(4, args.gridsize**2),
            output_dir=out / "model",
            validation_fraction=0.0,
        ),
        ExecutionConfig(accelerator=args.accelerator, learning_rate=2e-3,
                        scheduler="WarmupCosine", enable_progress_bar=not args.quiet,
                        logger="csv", seed=args.seed),
    ))
    problem = accelerator_unavailable(execution.accelerator)
    if problem is not None:
        parser.error(f"argument --accelerator: {problem}")
    from ptychopinn_torch.inference import load_model, run_inference
    from ptychopinn_torch.train import train

    start = time.perf_counter()
    logger.info("simulating two %d-position scans (natural-image object, %.0e photons)",
                args.n_positions, args.nphotons)
    train_data = simulate_dataset("natural", n_positions=args.n_positions,
                                  nphotons=args.nphotons, seed=args.seed)
    test_data = simulate_dataset("natural", n_positions=args.n_positions,
                                 nphotons=args.nphotons, seed=args.seed + 1000)
    data_dir = out / "data"
    train_data.save(data_dir / "train.npz")
    test_data.save(data_dir / "test.npz")

    logger.info("training %d epochs on %d patterns", args.max_epochs, train_data.n_positions)
    result = train(train_data, None, training, execution)
    logger.info("training took %.1f s", result.training_time_s)

    t0 = time.perf_counter()
    model = load_model(result.bundle_path)
    recon, paths = run_inference(
        InferenceConfig(model_path=result.bundle_path, output_dir=out / "reconstruction"),
        execution.replace(enable_progress_bar=False),
        data=test_data,
        model=model,
    )
    inference_s = time.perf_counter() - t0
    metrics = json.loads(paths["metrics"].read_text()) if "metrics" in paths else {}
    summary = {
        "training_time_s": result.training_time_s,
        "inference_time_s": inference_s,
        "total_time_s": time.perf_counter() - start,
        "final_train_loss": result.history["train_loss"][-1],
        "bundle": str(result.bundle_path),
        "held_out_metrics": metrics,
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2))
    if not args.quiet:
        print(f"held-out amplitude SSIM {metrics.get('amplitude_ssim', float('nan')):.3f}, "
              f"phase SSIM {metrics.get('phase_ssim', float('nan')):.3f}")
        print(f"training {result.training_time_s:.0f} s, inference {inference_s:.1f} s")
        for name, path in paths.items():
            print(f"{name}: {path}")
        print(f"summary: {out / 'demo_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
