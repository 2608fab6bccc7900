"""One prepared GPU check (issue 9): training, inference and refinement on one CUDA GPU,
with SSIM against the CPU result of the same model. Well under 10 minutes on one GPU.

Steps (each records the ``uptime`` load; a step that would not fit the time budget is
skipped with a note, so the JSON is always written):

1. training, N = 64 and N = 128, a few epochs of simulated scans: patterns/s per epoch
   (float32 and bf16-mixed, channels-last), peak GPU memory, whether the groups stayed
   on the GPU, and how many host synchronisations one training epoch made
   (``torch.cuda.set_sync_debug_mode``);
2. held-out scan (N = 64, never seen in training): the trained model reconstructs it on
   the GPU (float32, bf16) and on the CPU (float32); amplitude/phase SSIM of each against
   the truth and of the GPU images against the CPU image;
3. 16,384 positions, N = 64 and N = 128: network patterns/s for a few batch sizes,
   float32 and bf16, then the whole reconstruction with 30 refinement iterations: stage
   times, patterns/s, seconds per refinement iteration, peak GPU memory;
4. torch.compile of the N = 64 network (time to compile, patterns/s), if time is left.

    python benchmarks/gpu_check.py                    # on the GPU machine
    python benchmarks/gpu_check.py --tiny             # CPU smoke test: every step, tiny
Writes ``--json`` (default gpu_check.json) and prints one line per figure. The published
figure to beat for a PINN at 64 x 64 is 6.1k patterns/s on one GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (benchmarks/speed.py: shared helpers)

from ptychopinn.config import (  # noqa: E402
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)
from ptychopinn.metrics import evaluate_reconstruction  # noqa: E402
from ptychopinn.simulate import simulate_dataset  # noqa: E402

FULL = {"train": {64: 1024, 128: 512}, "epochs": 3, "held_out": 1024, "scan": 16384,
        "refine_iterations": 30, "batches": [64, 256, 1024],
        "generator": ModelConfig.generator, "n_filters_scale": ModelConfig.n_filters_scale}
TINY = {"train": {64: 16, 128: 8}, "epochs": 2, "held_out": 64, "scan": 64,
        "refine_iterations": 2, "batches": [4, 16], "generator": "cnn", "n_filters_scale": 1}


class Budget:
    """Seconds left of the run; a step that needs more is skipped with a note."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, seconds: float, what: str, report: dict[str, Any]) -> bool:
        if self.left() >= seconds:
            return True
        report.setdefault("skipped", []).append(
            f"{what}: needs about {seconds:.0f} s, {self.left():.0f} s left")
        print(f"SKIPPED {what} (time budget)")
        return False


def gpu_memory_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def execution(device: torch.device, **changes: Any) -> ExecutionConfig:
    base = {"accelerator": "gpu" if device.type == "cuda" else "cpu",
            "enable_progress_bar": False, "logger": "none", "enable_checkpointing": False}
    return ExecutionConfig(**{**base, **changes})


# ----------------------------------------------------------------------------- training
def train_step(n: int, mode: dict[str, Any], device: torch.device, tmp: Path,
               precision: str) -> dict[str, Any]:
    from ptychopinn_torch import datamodule as dm
    from ptychopinn_torch.train import train

    data = simulate_dataset("natural", "aperture", N=n, n_positions=mode["train"][n], seed=0)
    mc = ModelConfig(N=n, generator=mode["generator"], n_filters_scale=mode["n_filters_scale"])
    tc = TrainingConfig(model=mc, n_groups=mode["train"][n], nepochs=mode["epochs"],
                        validation_fraction=0.0,
                        output_dir=tmp / f"train_{n}_{precision}")
    ends: list[float] = []
    syncs: list[int] = []
    data_devices: list[str] = []
    original_setup = dm.PtychoDataModule.setup

    def setup(self: Any, stage: str) -> None:  # records where the groups live
        original_setup(self, stage)
        data_devices.append(str(self.data_device))

    def on_epoch(report: Any) -> None:
        ends.append(time.perf_counter())
        if device.type == "cuda" and len(ends) == 1:
            torch.cuda.set_sync_debug_mode("warn")  # count host syncs of epoch 2
        elif device.type == "cuda" and len(ends) == 2:
            torch.cuda.set_sync_debug_mode("default")

    reset_peak(device)
    dm.PtychoDataModule.setup = setup  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            result = train(data, None, tc, execution(device, precision=precision),
                           epoch_callback=on_epoch)
            syncs = [1 for w in caught if "synchroniz" in str(w.message).lower()]
    finally:
        dm.PtychoDataModule.setup = original_setup  # type: ignore[method-assign]
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    epoch_s = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    patterns = result.summary["n_train_groups"] * mc.C
    row = {"N": n, "network": f"{mc.generator}{mc.n_filters_scale}", "precision": precision,
           "epoch_s": epoch_s, "patterns_per_s": patterns / epoch_s[-1],
           "peak_gpu_mib": gpu_memory_mib(device), "data_device": data_devices[-1:],
           "host_syncs_in_epoch_2": len(syncs) if device.type == "cuda" else "no CUDA",
           "steps_per_epoch": -(-result.summary["n_train_groups"] // tc.batch_size),
           "bundle": str(result.bundle_path), "load": speed.load_average()["load_1min"]}
    print(f"train N={n} {precision:10s} {row['patterns_per_s']:9.1f} patterns/s, epochs "
          f"{' '.join(f'{s:.2f}' for s in epoch_s)} s, peak GPU {row['peak_gpu_mib']} MiB, "
          f"groups on {row['data_device']}, host syncs {row['host_syncs_in_epoch_2']}")
    return row


# ---------------------------------------------------------------------- held-out SSIM
def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    m = evaluate_reconstruction(a, b)
    return {"amplitude_ssim": m["amplitude_ssim"], "phase_ssim": m["phase_ssim"]}


def held_out_step(bundle: str, mode: dict[str, Any], device: torch.device) -> dict[str, Any]:
    from ptychopinn_torch import inference as inf

    data = simulate_dataset("natural", "aperture", N=64, n_positions=mode["held_out"],
                            seed=1000)
    runs = {"cpu_32": ("cpu", "32"), f"{device.type}_32": (device.type, "32"),
            f"{device.type}_bf16": (device.type, "bf16")}
    images: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, Any] = {"positions": data.n_positions}
    for name, (where, precision) in runs.items():
        model = inf.load_model(bundle)
        ex = execution(torch.device(where), inference_precision=precision)
        for refine in (0, mode["refine_iterations"]):
            t = time.perf_counter()
            recon = inf.reconstruct(model, data, InferenceConfig(refine_iterations=refine), ex)
            seconds = time.perf_counter() - t
            key = "network" if refine == 0 else "refined"
            images.setdefault(name, {})[key] = recon.object
            metrics = inf.compute_metrics(recon, data.object_guess) or {}
            out[f"{name}_{key}"] = {"amplitude_ssim": metrics.get("amplitude_ssim"),
                                    "phase_ssim": metrics.get("phase_ssim"),
                                    "seconds": seconds}
    for name in runs:
        if name != "cpu_32":
            for key in ("network", "refined"):
                out[f"{name}_{key}_vs_cpu"] = compare(images[name][key], images["cpu_32"][key])
    for key, value in out.items():
        if isinstance(value, dict):
            print(f"held-out {key:24s} " + ", ".join(
                f"{k} {v:.4f}" for k, v in value.items() if isinstance(v, float)))
    return out


# ------------------------------------------------------------------------- 16k scans
def scan_step(n: int, mode: dict[str, Any], device: torch.device, tmp: Path) -> dict[str, Any]:
    from ptychopinn_torch import inference as inf
    from ptychopinn_torch.runtime import NetworkRunner

    mc = ModelConfig(N=n, generator=mode["generator"], n_filters_scale=mode["n_filters_scale"])
    model = inf.load_model(speed.untrained_bundle(tmp / f"untrained_{n}.zip", mc))
    flops = speed.flops_per_pattern(model.module, n, mc.C)
    data = speed.synthetic_scan(mode["scan"], n)
    out: dict[str, Any] = {"N": n, "positions": data.n_positions,
                           "flops_per_pattern": flops, "network": []}
    for precision in ("32", "bf16"):
        for batch in mode["batches"]:
            groups = max(1, batch * 64 * 64 // (n * n))
            runner = NetworkRunner(model.module, device, execution(
                device, inference_precision=precision), groups)
            x = torch.rand(groups, mc.C, n, n, device=device)
            offsets = torch.zeros(groups, mc.C, 2, device=device)
            reset_peak(device)
            seconds = speed.best_seconds(lambda runner=runner, x=x, offsets=offsets:
                                         runner(x, offsets), device, repeats=5)
            row = {"precision": precision, "batch_groups": groups,
                   "patterns_per_s": groups * mc.C / seconds,
                   "gflops": flops * groups * mc.C / seconds / 1e9,
                   "peak_gpu_mib": gpu_memory_mib(device)}
            out["network"].append(row)
            print(f"network N={n} {precision:4s} batch {groups:5d}: "
                  f"{row['patterns_per_s']:10.1f} patterns/s ({row['gflops']:.0f} GFLOP/s), "
                  f"peak GPU {row['peak_gpu_mib']} MiB")
    for precision in ("32", "bf16"):
        reset_peak(device)
        ex = execution(device, inference_precision=precision)
        inf.reconstruct(model, speed.synthetic_scan(64, n, seed=1),
                        InferenceConfig(refine_iterations=1), ex)  # warm-up
        t = time.perf_counter()
        recon = inf.reconstruct(model, data, InferenceConfig(
            refine_iterations=mode["refine_iterations"], refine_tolerance=0.0), ex)
        total = time.perf_counter() - t
        stages = recon.stage_times_s
        row = {"precision": precision, "total_s": total, **stages,
               "refinement_s": recon.timings_s["refinement"],
               "refinement_s_per_iteration": recon.timings_s["refinement"]
               / recon.refinement.iterations,
               "patterns_per_s_network": data.n_positions / recon.timings_s["network"],
               "patterns_per_s_with_refinement": data.n_positions / total,
               "peak_gpu_mib": gpu_memory_mib(device), "runtime": recon.runtime,
               "load": speed.load_average()["load_1min"]}
        out[f"reconstruct_{precision}"] = row
        print(f"reconstruct N={n} {data.n_positions} positions {precision}: network "
              f"{row['patterns_per_s_network']:.0f} patterns/s (prediction "
              f"{stages['prediction']:.2f} s, stitching {stages['stitching']:.2f} s), refinement "
              f"{row['refinement_s_per_iteration'] * 1000:.1f} ms/iteration, total {total:.2f} s, "
              f"peak GPU {row['peak_gpu_mib']} MiB")
    return out


def compile_step(mode: dict[str, Any], device: torch.device, tmp: Path) -> dict[str, Any]:
    from ptychopinn_torch import inference as inf

    mc = ModelConfig(N=64, generator=mode["generator"], n_filters_scale=mode["n_filters_scale"])
    model = inf.load_model(speed.untrained_bundle(tmp / "compile.zip", mc))
    data = speed.synthetic_scan(mode["scan"], 64)
    out = {}
    for compiled in (False, True):
        ex = execution(device, inference_compile=compiled)
        t = time.perf_counter()
        inf.reconstruct(model, speed.synthetic_scan(64, 64, seed=1),
                        InferenceConfig(refine_iterations=0), ex)
        first = time.perf_counter() - t
        t = time.perf_counter()
        recon = inf.reconstruct(model, data, InferenceConfig(refine_iterations=0), ex)
        out["compiled" if compiled else "eager"] = {
            "first_call_s": first, "patterns_per_s": data.n_positions / (time.perf_counter() - t),
            "runtime": recon.runtime}
    print(f"compile: eager {out['eager']['patterns_per_s']:.0f}, compiled "
          f"{out['compiled']['patterns_per_s']:.0f} patterns/s (first call "
          f"{out['compiled']['first_call_s']:.1f} s; {out['compiled']['runtime']})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tiny", action="store_true",
                   help="tiny sizes (a smoke test, also on a CPU without CUDA)")
    p.add_argument("--budget-s", type=float, default=480,
                   help="seconds the check may take; later steps are skipped (default 480)")
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = p.parse_args(argv)
    mode = TINY if args.tiny else FULL
    budget = Budget(args.budget_s)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict[str, Any] = {"machine": speed.machine(), "device": str(device),
                              "mode": "tiny" if args.tiny else "full",
                              "started": speed.load_average()}
    if device.type != "cuda":
        report["note"] = ("no CUDA device: every step ran on the CPU; GPU memory, host-sync "
                          "counts and GPU-vs-CPU comparisons are not meaningful")
        print(f"NOTE: {report['note']}")
    print(json.dumps(report["machine"]))

    def save() -> None:
        report["finished"] = speed.load_average()
        args.json.write_text(json.dumps(report, indent=2, default=str))

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report["training"] = []
        bundle = None
        for n in (64, 128):
            for precision in ("32-true", "bf16-mixed"):
                if budget.allows(45 if not args.tiny else 5, f"training N={n} {precision}",
                                 report):
                    row = train_step(n, mode, device, tmp, precision)
                    report["training"].append(row)
                    if n == 64 and precision == "32-true":
                        bundle = row["bundle"]
                    save()
        if bundle is not None and budget.allows(60 if not args.tiny else 5, "held-out SSIM",
                                                report):
            report["held_out"] = held_out_step(bundle, mode, device)
            save()
        report["scans"] = []
        for n in (64, 128):
            if budget.allows(90 if not args.tiny else 5, f"16k scan N={n}", report):
                report["scans"].append(scan_step(n, mode, device, tmp))
                save()
        if budget.allows(120 if not args.tiny else 5, "torch.compile", report):
            try:
                report["compile"] = compile_step(mode, device, tmp)
            except Exception as exc:  # noqa: BLE001 - a failed optional step is a note
                report["compile"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"compile step failed: {report['compile']['error']}")
    save()
    print(f"wrote {args.json} ({budget.left():.0f} s of the budget left)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
