"""Reconstruction quality on a held-out simulated scan (issue: 'Quality, measured').

Simulates two scans of different regions of a natural-image object (N=64, 1e6 photons
per pattern), trains unsupervised on the first for each gridsize, reconstructs the
second (never seen in training) and prints amplitude / phase SSIM and PSNR over the
scanned region, plus training and inference times.

    python benchmarks/quality.py [--epochs 40] [--n-positions 384] [--gridsizes 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.simulate import simulate_dataset
from ptychopinn_torch.inference import compute_metrics, load_model, reconstruct
from ptychopinn_torch.train import train


def run(gridsize: int, epochs: int, n_positions: int, nphotons: float, lr: float,
        n_filters_scale: int, out: Path) -> dict:
    train_data = simulate_dataset("natural", n_positions=n_positions, nphotons=nphotons, seed=0)
    test_data = simulate_dataset("natural", n_positions=n_positions, nphotons=nphotons,
                                 seed=1000)
    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=gridsize, n_filters_scale=n_filters_scale),
        n_groups=n_positions, batch_size=16, nepochs=epochs,
        neighbor_count=max(4, gridsize**2) + 2, validation_fraction=0.0,
        output_dir=out / f"gs{gridsize}",
    )
    execution = ExecutionConfig(accelerator="auto", learning_rate=lr, scheduler="WarmupCosine",
                                enable_progress_bar=False, logger="none",
                                enable_checkpointing=False)
    result = train(train_data, None, config, execution)
    model = load_model(result.bundle_path)
    t0 = time.perf_counter()
    recon = reconstruct(model, test_data, InferenceConfig(), execution)
    inference_s = time.perf_counter() - t0
    metrics = compute_metrics(recon, test_data.object_guess) or {}
    return {
        "gridsize": gridsize,
        "epochs": epochs,
        "n_positions": n_positions,
        "training_time_s": round(result.training_time_s, 1),
        "inference_time_s": round(inference_s, 2),
        "amplitude_ssim": metrics.get("amplitude_ssim"),
        "phase_ssim": metrics.get("phase_ssim"),
        "amplitude_psnr_db": metrics.get("amplitude_psnr_db"),
        "phase_psnr_db": metrics.get("phase_psnr_db"),
        "final_train_loss": result.history["train_loss"][-1],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-positions", type=int, default=384)
    p.add_argument("--nphotons", type=float, default=1e6)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--n-filters-scale", type=int, default=1)
    p.add_argument("--gridsizes", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        for gridsize in args.gridsizes:
            row = run(gridsize, args.epochs, args.n_positions, args.nphotons,
                      args.learning_rate, args.n_filters_scale, Path(tmp))
            print(json.dumps(row))


if __name__ == "__main__":
    main()
