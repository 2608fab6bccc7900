"""Inference throughput and memory for growing scans (model weights need no training for
timing). Prints patterns per second and the peak resident memory of each run, to show
that reconstruction time grows linearly and memory stays bounded by the canvas.

    python benchmarks/inference_speed.py [--sizes 256 1024 4096] [--accelerator auto]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn.simulate import make_probe
from ptychopinn_torch.inference import load_model, reconstruct
from ptychopinn_torch.module import PtychoPINNModule
from ptychopinn_torch.train import save_model_bundle


def synthetic_scan(n_positions: int, N: int, rng: np.random.Generator) -> RawData:
    side = int(np.ceil(np.sqrt(n_positions)))
    step = N / 8
    grid = np.arange(side) * step + N
    x, y = np.meshgrid(grid, grid)
    amplitude = rng.uniform(0, 3, (n_positions, N, N)).astype(np.float32)
    return RawData(diffraction=amplitude, xcoords=x.ravel()[:n_positions],
                   ycoords=y.ravel()[:n_positions], probe_guess=make_probe("aperture", N))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--gridsize", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--accelerator", default="auto")
    args = p.parse_args()
    N = 64
    model_config = ModelConfig(N=N, gridsize=args.gridsize)
    training = TrainingConfig(model=model_config, neighbor_count=max(4, args.gridsize**2))
    module = PtychoPINNModule(model_config.to_dict(), training.to_dict(),
                              ExecutionConfig().to_dict(), intensity_scale=1.0,
                              input_scale=1.0, probe=make_probe("aperture", N))
    execution = ExecutionConfig(accelerator=args.accelerator,
                                inference_batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save_model_bundle(module, Path(tmp) / "model.zip", {})
        model = load_model(bundle)
        reconstruct(model, synthetic_scan(64, N, rng), InferenceConfig(), execution)  # warm-up
        for n in args.sizes:
            data = synthetic_scan(n, N, rng)
            start = time.perf_counter()
            recon = reconstruct(model, data, InferenceConfig(), execution)
            seconds = time.perf_counter() - start
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({
                "positions": n, "seconds": round(seconds, 2),
                "patterns_per_s": round(n / seconds, 1),
                "canvas_px": list(recon.object.shape),
                "data_mib": round(data.diffraction.nbytes / 2**20, 1),
                "peak_rss_mib_so_far": round(peak_mib),
            }))


if __name__ == "__main__":
    main()
