"""What each training change does to the network's image: one table, same held-out scan,
same training budget.

Every row trains on the dense scenario's training scan (``ptychopinn.scenarios``, seed 0,
another view of the images) for the same number of training patterns (``--epochs`` x 441;
the pretraining row spends three quarters of them on synthetic scans and the rest
fine-tuning), reconstructs the held-out dense scan and reports the network's image alone
and after 10 refinement iterations, scored over the scanned region
(``inference.compute_metrics``: the well-lit covered pixels). The last row uses no network at all: the one-step
physics back-projection that the U-Nets take as input, stitched the same way, as the
floor a network has to beat.

    python benchmarks/quality.py [--epochs 20] [--rows baseline probe_weighting ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.metrics import illumination_map
from ptychopinn.scenarios import scenario_scan
from ptychopinn_torch.inference import Reconstruction, compute_metrics, load_model, reconstruct
from ptychopinn_torch.networks import backproject
from ptychopinn_torch.pretrain import pretrain
from ptychopinn_torch.refine import refine_object
from ptychopinn_torch.stitching import Stitcher
from ptychopinn_torch.train import train


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 2e-3
    stitch_weighting: str = "probe"
    pretrain_objects: int = 0
    same_network_as: str = ""  # reuse that row's trained network (a stitching-only change)


VARIANTS = [
    Variant("baseline", "issue's default: unet, n_filters_scale 2, uniform stitching",
            model={"generator": "unet", "n_filters_scale": 2}, stitch_weighting="uniform"),
    Variant("probe_weighting", "+ stitching weighted by |probe|^2",
            model={"generator": "unet", "n_filters_scale": 2}, same_network_as="baseline"),
    Variant("width_1", "+ n_filters_scale 1 (4x cheaper)",
            model={"generator": "unet", "n_filters_scale": 1}),
    Variant("unet_lite", "+ unet_lite (shared decoder, 8x cheaper than baseline)",
            model={"generator": "unet_lite", "n_filters_scale": 1}),
    Variant("lr_5e-3", "unet_lite + learning rate 5e-3",
            model={"generator": "unet_lite", "n_filters_scale": 1}, learning_rate=5e-3),
    Variant("gridsize_2", "unet_lite + gridsize 2 (overlap constraint, object_big)",
            model={"generator": "unet_lite", "n_filters_scale": 1, "gridsize": 2},
            training={"neighbor_count": 6}),
    Variant("flips", "unet_lite + flip/rotation augmentation (probe is symmetric)",
            model={"generator": "unet_lite", "n_filters_scale": 1},
            training={"augment_flips": True}),
    Variant("pretrained", "unet_lite pretrained on 8 synthetic objects (dead leaves, lines) "
            "with the experiment's probe, then fine-tuned",
            model={"generator": "unet_lite", "n_filters_scale": 1}, pretrain_objects=8),
]


def _score(obj: np.ndarray, template: Reconstruction, truth: np.ndarray) -> tuple[float, float]:
    m = compute_metrics(Reconstruction(obj, template.origin_px, template.coverage,
                                       template.n_groups,
                                       illumination=template.illumination), truth)
    assert m is not None
    return round(m["amplitude_ssim"], 4), round(m["phase_ssim"], 4)


def run_variant(v: Variant, epochs: int, work: Path, execution: ExecutionConfig,
                trained: dict[str, tuple[Path, float, float]]) -> dict:
    train_scan = scenario_scan("dense", seed=0)
    test = scenario_scan("dense")
    model = ModelConfig(N=64, **v.model)
    config = TrainingConfig(model=model, n_groups=train_scan.n_positions, batch_size=16,
                            nepochs=epochs, validation_fraction=0.0,
                            output_dir=work / v.name, **v.training)
    ex = execution.replace(learning_rate=v.learning_rate)
    t0 = time.perf_counter()
    if v.same_network_as in trained:
        bundle, train_s, final_loss = trained[v.same_network_as]
    elif v.pretrain_objects:
        # Three quarters of the pattern budget on synthetic scans, the rest fine-tuning.
        pre_epochs = max(1, round(0.75 * epochs / v.pretrain_objects))
        pre = pretrain(train_scan, config.replace(output_dir=work / f"{v.name}_pre",
                                                  nepochs=pre_epochs,
                                                  n_groups=None), ex,
                       n_objects=v.pretrain_objects, overwrite=True)
        result = train(train_scan, None, config.replace(nepochs=max(1, epochs // 4)), ex,
                       init_model=pre.bundle_path, overwrite=True)
    else:
        result = train(train_scan, None, config, ex, overwrite=True)
    if v.same_network_as not in trained:
        bundle, train_s = result.bundle_path, time.perf_counter() - t0
        final_loss = result.history["train_loss"][-1]
        trained[v.name] = (bundle, train_s, final_loss)
    loaded = load_model(bundle)
    t0 = time.perf_counter()
    recon = reconstruct(loaded, test, InferenceConfig(stitch_weighting=v.stitch_weighting,
                                                      refine_iterations=0), execution)
    network_s = time.perf_counter() - t0
    refined = reconstruct(loaded, test, InferenceConfig(
        stitch_weighting=v.stitch_weighting, refine_iterations=10, refine_tolerance=0.0),
        execution)
    from torch.utils.flop_counter import FlopCounterMode

    # Forward FLOPs only (no autograd: the module has run under inference_mode).
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        loaded.module.generator(torch.rand(1, model.C, 64, 64), loaded.module.forward_model.probe)
    return {
        "row": v.name, "what": v.what, "train_s": round(train_s, 1),
        "network_s": round(network_s, 2), "gflop_per_group": round(flops.get_total_flops() / 1e9, 3),
        "final_train_loss": round(final_loss, 3),
        "network": _score(recon.object, recon, test.object_guess),
        "network+10": _score(refined.object, recon, test.object_guess),
    }


def physics_floor() -> dict:
    """The back-projection (the U-Nets' input) stitched with probe weights, no network."""
    test = scenario_scan("dense")
    positions = np.stack([test.xcoords, test.ycoords], axis=-1)
    t0 = time.perf_counter()
    estimate = backproject(torch.from_numpy(test.diffraction).unsqueeze(1),
                           torch.from_numpy(test.probe_guess))[:, 0].numpy()
    stitcher = Stitcher(test.N, positions, weighting="probe", probe=test.probe_guess,
                        align_phase=True)
    stitcher.add(estimate, positions)
    stitched = stitcher.result()
    seconds = time.perf_counter() - t0
    recon = Reconstruction(stitched.object, stitched.origin_px, stitched.coverage,
                           test.n_positions, illumination=illumination_map(
                               test.probe_guess, positions, stitched.origin_px,
                               stitched.object.shape))
    refined = refine_object(stitched.object, stitched.origin_px, test.probe_guess,
                            test.diffraction, positions, max_iterations=10, tolerance=0.0,
                            coverage=stitched.coverage)
    return {"row": "no_network", "what": "no network: one-step physics back-projection, "
            "probe-weighted stitching", "train_s": 0.0, "network_s": round(seconds, 2),
            "gflop_per_group": 0.0, "final_train_loss": None,
            "network": _score(stitched.object, recon, test.object_guess),
            "network+10": _score(refined.object, recon, test.object_guess)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20,
                   help="Training budget in epochs of the 441-pattern scan (default: 20)")
    p.add_argument("--rows", nargs="+", default=[v.name for v in VARIANTS] + ["no_network"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmark_outputs/quality.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    execution = ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none",
                                enable_checkpointing=False, scheduler="WarmupCosine")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}, budget {args.epochs} x 441 patterns")
    rows = []
    trained: dict[str, tuple[Path, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in VARIANTS:
            if v.name in args.rows or any(o.same_network_as == v.name and o.name in args.rows
                                          for o in VARIANTS):
                row = run_variant(v, args.epochs, Path(tmp), execution, trained)
                if v.name in args.rows:
                    rows.append(row)
                print(json.dumps(rows[-1]), flush=True)
    if "no_network" in args.rows:
        rows.append(physics_floor())
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'row':16s} {'GFLOP':>6s} {'train s':>8s} {'network A/P SSIM':>18s} "
          f"{'+10 refinement A/P':>19s}")
    for r in rows:
        print(f"{r['row']:16s} {r['gflop_per_group']:6.3f} {r['train_s']:8.0f} "
              f"{r['network'][0]:8.3f} / {r['network'][1]:.3f} "
              f"{r['network+10'][0]:9.3f} / {r['network+10'][1]:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "epochs": args.epochs,
                                    "load_average": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
