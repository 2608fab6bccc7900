"""Speed from data file to image, and training throughput (issue 9).

For each pattern size N and scan length, a fresh process loads an NPZ scan, reconstructs
it with the model (grouping, network, stitching, physics refinement) and writes the
outputs; the table splits the wall time into those stages and reports patterns/s, the
network's FLOPs per pattern and the GFLOP/s it achieved against a float32 matrix product
and a 3x3 convolution timed in the same run (roofline fractions), and the peak resident
memory of that process. A least-squares line through time against positions shows
whether cost grows linearly (the marginal cost per position of the largest scans over
that of the smallest, ~1 when linear) and whether memory beyond the data and the canvas
stays flat. Training patterns/s per epoch are measured with the speed knobs off and on.

The machine's load (``uptime``) is recorded with every figure: on a shared machine,
compare only ratios measured in the same run, and repeat a run when the load changed.

    python benchmarks/speed.py --quick                  # about a minute on 2 quiet cores
    python benchmarks/speed.py                          # N = 64, 128; 256 ... 16384 positions
    python benchmarks/speed.py --n 64 --positions 256 4096 16384 --precision bf16 --threads 1
    python benchmarks/speed.py --model trained.zip --precision-check   # bf16 vs float32 SSIM

Results: a table on stdout and JSON (``--json``, default ``speed_results.json``).
Untrained weights time exactly like trained ones; give ``--model`` for the SSIM check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_STARTED = time.perf_counter()  # before the heavy imports: the child reports their cost

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import (  # noqa: E402
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)
from ptychopinn.data import RawData  # noqa: E402
from ptychopinn.simulate import make_probe, simulate_dataset  # noqa: E402

QUICK = {"n": [64], "positions": [256, 1024], "refine_iterations": 3, "train_groups": 48,
         "train_epochs": 2, "train_networks": ["default"], "reference_size": 1024}
FULL = {"n": [64, 128], "positions": [256, 1024, 4096, 16384], "refine_iterations": 30,
        "train_groups": 256, "train_epochs": 3, "train_networks": ["default", "unet2"],
        "reference_size": 2048}
TINY = {"n": [64], "positions": [32, 64, 128], "refine_iterations": 1, "train_groups": 16,
        "train_epochs": 2, "train_networks": ["cnn1"], "reference_size": 256,
        "generator": "cnn", "n_filters_scale": 1}


# ----------------------------------------------------------------------------- machine
def load_average() -> dict[str, Any]:
    """``uptime`` as text and the 1-minute load average (the figure to compare)."""
    try:
        text = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    return {"load_1min": round(os.getloadavg()[0], 2), "uptime": text.strip()}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_cores": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["cpu_bf16"] = "avx512_bf16" in Path("/proc/cpuinfo").read_text() or \
            "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return info


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Any, device: torch.device, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up (least disturbed by
    other work on the machine)."""
    fn()
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def references(device: torch.device, precision: str, size: int) -> dict[str, Any]:
    """GFLOP/s of a float32 matrix product (size^3) and of a 3x3 convolution (16 x 64 ch
    x 64 x 64 px, channels-last) in float32 and, with ``precision`` bf16, in bfloat16."""
    from ptychopinn_torch.runtime import autocast

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = best_seconds(lambda: a @ b, device)
    out = {"matmul_size": size, "matmul_gflops": 2 * size**3 / seconds / 1e9}
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(16, 64, 64, 64, device=device).to(memory_format=torch.channels_last)
    flops = 2 * 16 * 64 * 64 * 64 * 64 * 9
    for name in ("32", precision) if precision != "32" else ("32",):
        with torch.inference_mode(), autocast(device, name):
            seconds = best_seconds(lambda: conv(x), device)
        out[f"conv3x3_gflops_{name}"] = flops / seconds / 1e9
    return out


# ------------------------------------------------------------------------------ models
def model_config(n: int, generator: str, n_filters_scale: int) -> ModelConfig:
    return ModelConfig(N=n, generator=generator, n_filters_scale=n_filters_scale)


def untrained_bundle(path: Path, mc: ModelConfig) -> Path:
    """A bundle with random weights (timing does not depend on the weights)."""
    from ptychopinn_torch.module import PtychoPINNModule
    from ptychopinn_torch.train import save_model_bundle

    torch.manual_seed(0)
    tc = TrainingConfig(model=mc)
    module = PtychoPINNModule(mc.to_dict(), tc.to_dict(), ExecutionConfig().to_dict(), 1.0, 1.0,
                              probe=make_probe("aperture", mc.N))
    return save_model_bundle(module, path, {})


def flops_per_pattern(module: Any, N: int, C: int) -> float:  # noqa: N803
    """Floating-point operations of the network for one pattern (FlopCounterMode:
    convolutions and matrix products; the FFTs of the back-projection are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = module.cpu().eval()
    x = torch.rand(1, C, N, N)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module.predict_patches(x, torch.zeros(1, C, 2))
    return counter.get_total_flops() / C


def synthetic_scan(n_positions: int, N: int, seed: int = 0) -> RawData:  # noqa: N803
    """A raster scan with N/8 steps and Poisson-like random amplitudes (for timing)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_positions)))
    grid = np.arange(side) * (N / 8) + N
    x, y = np.meshgrid(grid, grid)
    amplitude = np.sqrt(rng.poisson(4.0, (n_positions, N, N))).astype(np.float32)
    return RawData(diffraction=amplitude, xcoords=x.ravel()[:n_positions] + 0.25,
                   ycoords=y.ravel()[:n_positions] + 0.5, probe_guess=make_probe("aperture", N))


# --------------------------------------------------------------- one scan, own process
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Data file -> written image in this (fresh) process; stage times in seconds."""
    from ptychopinn_torch import inference as inf

    imports_s = time.perf_counter() - _STARTED

    ex = ExecutionConfig(**spec["execution"])
    cfg = InferenceConfig(refine_iterations=spec["refine_iterations"], refine_tolerance=0.0)
    model = inf.load_model(spec["model"])
    warm = synthetic_scan(max(model.model_config.C, 32), model.N, seed=1)
    inf.reconstruct(model, warm, cfg.replace(refine_iterations=1), ex)  # warm-up (compile)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    rss_mib = {"start": peak_rss_mib()}
    data = RawData.from_file(spec["data"])
    load_s = time.perf_counter() - start
    rss_mib["load"] = peak_rss_mib()
    t = time.perf_counter()
    recon = inf.reconstruct(model, data, cfg, ex)
    reconstruct_s = time.perf_counter() - t
    rss_mib["reconstruct"] = peak_rss_mib()
    t = time.perf_counter()
    inf.write_outputs(recon, Path(spec["out"]), {}, data.object_guess)
    writing_s = time.perf_counter() - t
    rss_mib["write"] = peak_rss_mib()
    stages = recon.stage_times_s
    refinement_s = recon.timings_s.get("refinement", 0.0)
    inner = recon.timings_s["network"] + stages["grouping"] + refinement_s
    return {
        "imports_s": imports_s,
        "load_s": load_s,
        "checks_s": max(0.0, reconstruct_s - inner),
        "grouping_s": stages["grouping"],
        "prediction_s": stages["prediction"],
        "stitching_s": stages["stitching"],
        "refinement_s": refinement_s,
        "refinement_iterations": recon.refinement.iterations if recon.refinement else 0,
        "writing_s": writing_s,
        "total_s": time.perf_counter() - start,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_mib_after": rss_mib,
        "peak_gpu_mib": (torch.cuda.max_memory_allocated() / 2**20
                         if torch.cuda.is_available() else None),
        "data_mib": data.diffraction.nbytes / 2**20,
        "canvas_px": list(recon.object.shape),
        "runtime": recon.runtime,
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process, MiB: Linux's VmHWM, which starts afresh
    with the process image (``ru_maxrss`` survives exec, so a child started by a parent
    that had grown would report the parent's peak); ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        spec = {**spec, "result": result.name}
        proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"error": " | ".join(tail)}
        return json.loads(Path(result.name).read_text())


# ---------------------------------------------------------------------------- analysis
def linearity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares time = a + b * positions; marginal cost per position between the two
    largest scans over that between the two smallest (1 = linear, 4 = quadratic over a
    4x step); working memory (peak RSS minus data and canvas) largest over smallest."""
    ok = [r for r in rows if "error" not in r]
    if len(ok) < 2:
        return {}
    n = np.array([r["positions"] for r in ok], dtype=float)
    pipeline = np.array([r["total_s"] - r["load_s"] for r in ok])
    slope, intercept = np.polyfit(n, pipeline, 1)
    fit = intercept + slope * n
    ss_res = float(((pipeline - fit) ** 2).sum())
    ss_tot = float(((pipeline - pipeline.mean()) ** 2).sum()) or 1.0
    marginal = None
    if len(ok) >= 3:  # two distinct intervals; with two points the ratio is 1 by definition
        first = (pipeline[1] - pipeline[0]) / (n[1] - n[0])
        last = (pipeline[-1] - pipeline[-2]) / (n[-1] - n[-2])
        marginal = last / first if first > 0 else None
    working = [r["peak_rss_mib"] - r["data_mib"] - r["canvas_mib"] for r in ok]
    return {
        "seconds_per_1000_positions": 1000 * slope,
        "intercept_s": intercept,
        "r_squared": 1 - ss_res / ss_tot,
        "marginal_cost_ratio": marginal,
        "working_memory_mib": working,
        "working_memory_ratio": max(working) / min(working) if min(working) > 0 else None,
    }


def scan_rows(args: argparse.Namespace, n: int, mc: ModelConfig, bundle: Path,
              tmp: Path, ref: dict[str, Any], flops: float) -> list[dict[str, Any]]:
    rows = []
    for positions in args.positions:
        data_path = tmp / f"scan_N{n}_{positions}.npz"
        synthetic_scan(positions, n).save(data_path)
        spec = {"model": str(bundle), "data": str(data_path), "out": str(tmp / f"out_{n}_{positions}"),
                "refine_iterations": args.refine_iterations,
                "execution": execution_fields(args, inference=True)}
        row = {"N": n, "positions": positions, "network": network_name(mc),
               **run_child(spec, args.timeout)}
        data_path.unlink()
        if "error" not in row:
            h, w = row["canvas_px"]
            row["canvas_mib"] = h * w * 80 / 2**20  # stitching.STITCH_BYTES_PER_PIXEL
            network_s = row["prediction_s"] + row["stitching_s"]
            row["patterns_per_s_network"] = positions / network_s
            row["patterns_per_s_end_to_end"] = positions / row["total_s"]
            row["stitching_share_of_network"] = row["stitching_s"] / network_s
            row["refinement_s_per_iteration"] = (row["refinement_s"] / row["refinement_iterations"]
                                                 if row["refinement_iterations"] else None)
            row["network_gflops"] = flops * positions / row["prediction_s"] / 1e9
            conv = ref.get(f"conv3x3_gflops_{args.precision}", ref["conv3x3_gflops_32"])
            row["fraction_of_conv3x3"] = row["network_gflops"] / conv
            row["fraction_of_matmul"] = row["network_gflops"] / ref["matmul_gflops"]
        rows.append(row)
        print_scan_row(row)
    return rows


def network_name(mc: ModelConfig) -> str:
    return f"{mc.generator}{mc.n_filters_scale}"


def execution_fields(args: argparse.Namespace, inference: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"accelerator": args.accelerator, "enable_progress_bar": False,
                              "num_threads": args.threads, "channels_last": args.channels_last}
    if inference:
        fields.update(inference_batch_size=args.batch_size, inference_precision=args.precision,
                      inference_compile=args.compile)
    return fields


# ---------------------------------------------------------------------------- training
def training_speed(args: argparse.Namespace, mc: ModelConfig, groups: int, epochs: int,
                   knobs: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Training patterns/s of the last epoch (the first pays for warm-up)."""
    from ptychopinn_torch.train import train

    data = simulate_dataset("dead_leaves", "aperture", N=mc.N, n_positions=groups, seed=0)
    tc = TrainingConfig(model=mc, n_groups=groups, nepochs=epochs, validation_fraction=0.0,
                        output_dir=tmp / f"train_{network_name(mc)}_{len(os.listdir(tmp))}")
    ex = ExecutionConfig(**{**execution_fields(args, inference=False), "logger": "none",
                            "enable_checkpointing": False, **knobs})
    ends: list[float] = []
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = train(data, None, tc, ex, epoch_callback=lambda report: ends.append(
        time.perf_counter()), write_bundle=False)
    epoch_s = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    n_patterns = result.summary["n_train_groups"] * mc.C
    return {"network": network_name(mc), "N": mc.N, "knobs": knobs, "epoch_s": epoch_s,
            "patterns_per_s": n_patterns / epoch_s[-1], "load_1min_before": round(load_before, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


#: Networks whose training throughput can be measured (ModelConfig fields besides N).
TRAIN_NETWORKS: dict[str, dict[str, Any]] = {
    "default": {},
    "unet2": {"generator": "unet", "n_filters_scale": 2},
    "unet1": {"generator": "unet", "n_filters_scale": 1},
    "cnn1": {"generator": "cnn", "n_filters_scale": 1},
}

TRAIN_VARIANTS = {
    "knobs off": {"channels_last": False, "precision": "32-true"},
    "channels-last": {"channels_last": True, "precision": "32-true"},
    "channels-last + bf16": {"channels_last": True, "precision": "bf16-mixed"},
    # Groups are in-memory tensors gathered a batch at a time: a worker process can only
    # take a core from the convolutions. Measured, to choose the default (0).
    "channels-last + 1 loader worker": {"channels_last": True, "precision": "32-true",
                                        "num_workers": 1},
}


# ------------------------------------------------------------------ precision (SSIM)
def precision_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Held-out SSIM of bf16 against float32 inference with a trained model: ``--model``
    (one trained on the dense benchmark scenario, as ``versus_iterative.py`` and the
    recipe do), or one trained here for ``--precision-train-epochs`` on that scenario's
    training scan (N = 64). The held-out scan is the scenario's held-out scan."""
    from ptychopinn.scenarios import HELD_OUT_SEED, scenario_scan
    from ptychopinn_torch import inference as inf
    from ptychopinn_torch.train import train

    held_out = scenario_scan("dense", seed=HELD_OUT_SEED)
    trained_here = None
    if args.model is None:
        train_data = scenario_scan("dense", seed=0)
        tc = TrainingConfig(model=ModelConfig(N=64, n_filters_scale=args.n_filters_scale,
                                              generator=args.generator),
                            n_groups=None, nepochs=args.precision_train_epochs,
                            validation_fraction=0.0, output_dir=tmp / "precision_model")
        result = train(train_data, None, tc, ExecutionConfig(
            **{**execution_fields(args, inference=False), "logger": "none",
               "enable_checkpointing": False}))
        model_path = result.bundle_path
        trained_here = {"epochs": args.precision_train_epochs,
                        "final_train_loss": result.summary["final_train_loss"]}
    else:
        model_path = args.model
    out: dict[str, Any] = {"model": str(model_path), "trained_here": trained_here}
    for refine in (0, args.refine_iterations):
        scores = {}
        for precision in ("32", "bf16"):
            ex = ExecutionConfig(**{**execution_fields(args, inference=True),
                                    "inference_precision": precision})
            model = inf.load_model(model_path)
            t = time.perf_counter()
            recon = inf.reconstruct(model, held_out, InferenceConfig(refine_iterations=refine),
                                    ex)
            seconds = time.perf_counter() - t
            metrics = inf.compute_metrics(recon, held_out.object_guess) or {}
            scores[precision] = {"amplitude_ssim": metrics.get("amplitude_ssim"),
                                 "phase_ssim": metrics.get("phase_ssim"), "seconds": seconds}
        key = "network" if refine == 0 else f"network+refinement{refine}"
        out[key] = {**scores, "delta_amplitude_ssim": scores["bf16"]["amplitude_ssim"]
                    - scores["32"]["amplitude_ssim"],
                    "delta_phase_ssim": scores["bf16"]["phase_ssim"] - scores["32"]["phase_ssim"]}
    return out


# ------------------------------------------------------------------------------ sweeps
def network_sweep(args: argparse.Namespace, mc: ModelConfig, device: torch.device,
                  threads: list[int], batches: list[int]) -> list[dict[str, Any]]:
    """Network-only patterns/s (best of 3) for each thread count and batch size."""
    from ptychopinn_torch.module import PtychoPINNModule
    from ptychopinn_torch.runtime import NetworkRunner, torch_threads

    tc = TrainingConfig(model=mc)
    module = PtychoPINNModule(mc.to_dict(), tc.to_dict(), ExecutionConfig().to_dict(), 1.0, 1.0,
                              probe=make_probe("aperture", mc.N))
    rows = []
    for n_threads in threads:
        with torch_threads(n_threads):
            for batch in batches:
                ex = ExecutionConfig(**{**execution_fields(args, inference=True),
                                        "num_threads": n_threads})
                runner = NetworkRunner(module, device, ex, batch)
                x = torch.rand(batch, mc.C, mc.N, mc.N, device=device)
                offsets = torch.zeros(batch, mc.C, 2, device=device)
                reps = max(1, 64 // batch)

                def run(runner=runner, x=x, offsets=offsets, reps=reps) -> None:
                    for _ in range(reps):
                        runner(x, offsets)
                seconds = best_seconds(run, device, repeats=3)
                rows.append({"threads": n_threads, "batch_groups": batch,
                             "patterns_per_s": reps * batch * mc.C / seconds,
                             "load_1min": round(os.getloadavg()[0], 2)})
                print(f"  threads {n_threads:3d}  batch {batch:5d}  "
                      f"{rows[-1]['patterns_per_s']:9.1f} patterns/s  load {rows[-1]['load_1min']}")
    return rows


# ------------------------------------------------------------------------------ output
def print_scan_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  N={r['N']:<4} {r['positions']:>6}  FAILED: {r['error']}")
        return
    print(f"  N={r['N']:<4} {r['positions']:>6}  load {r['load_s']:6.2f}  checks "
          f"{r['checks_s']:5.2f}  group {r['grouping_s']:5.2f}  network {r['prediction_s']:7.2f}"
          f"  stitch {r['stitching_s']:5.2f} ({100 * r['stitching_share_of_network']:4.1f} %)"
          f"  refine {r['refinement_s']:6.2f}  write {r['writing_s']:5.2f}  total "
          f"{r['total_s']:7.2f} s | {r['patterns_per_s_network']:7.1f} pat/s network, "
          f"{r['patterns_per_s_end_to_end']:6.1f} end to end | {r['network_gflops']:6.1f} GFLOP/s"
          f" = {100 * r['fraction_of_conv3x3']:3.0f} % conv | RSS {r['peak_rss_mib']:6.0f} MiB"
          f" (data {r['data_mib']:5.0f}) | load {r['load_1min_before']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="N=64, 256 and 1024 positions, "
                   "3 refinement iterations, one short training: about a minute")
    p.add_argument("--tiny", action="store_true", help="smallest run that exercises every "
                   "part (a smoke test, seconds)")
    p.add_argument("--n", type=int, nargs="+", help="pattern sizes (64 128; 256 if it fits)")
    p.add_argument("--positions", type=int, nargs="+", help="scan lengths")
    p.add_argument("--generator", choices=("unet_lite", "unet", "cnn"),
                   help="network layout (default: ModelConfig's; cnn with --tiny)")
    p.add_argument("--n-filters-scale", type=int,
                   help="network width (default: ModelConfig's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="groups per inference batch (default: the runtime's measured best)")
    p.add_argument("--precision", default="auto", choices=("auto", "32", "bf16"),
                   help="inference precision (ExecutionConfig.inference_precision; auto, the "
                        "default, is bf16 where the hardware computes it natively)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--refine-iterations", type=int, default=None)
    p.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "auto"))
    p.add_argument("--model", type=Path, default=None,
                   help="a trained bundle: used for the precision check (its N and network)")
    p.add_argument("--skip-scans", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--train-networks", nargs="+", choices=tuple(TRAIN_NETWORKS),
                   help="networks whose training throughput is measured (default: "
                        "ModelConfig's; unet2 is the default before unet_lite)")
    p.add_argument("--precision-check", action="store_true",
                   help="held-out SSIM of bf16 against float32 inference (trains a small "
                        "model unless --model is given)")
    p.add_argument("--precision-train-epochs", type=int, default=10)
    p.add_argument("--sweep", action="store_true",
                   help="network patterns/s for every thread count and batch size")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per scan process")
    p.add_argument("--json", type=Path, default=Path("speed_results.json"))
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        spec = json.loads(args._child)
        Path(spec["result"]).write_text(json.dumps(child(spec)))
        return 0
    mode = TINY if args.tiny else QUICK if args.quick else FULL
    args.n = args.n or mode["n"]
    args.generator = args.generator or mode.get("generator", ModelConfig.generator)
    args.n_filters_scale = args.n_filters_scale or mode.get("n_filters_scale",
                                                            ModelConfig.n_filters_scale)
    args.positions = sorted(args.positions or mode["positions"])
    if args.refine_iterations is None:
        args.refine_iterations = mode["refine_iterations"]
    networks = args.train_networks or mode["train_networks"]
    device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available()
                          else "cpu")
    from ptychopinn_torch.runtime import resolve_precision

    args.precision = resolve_precision(args.precision, device)
    from ptychopinn_torch.runtime import torch_threads

    report: dict[str, Any] = {"machine": machine(), "started": load_average(),
                              "settings": {k: (str(v) if isinstance(v, Path) else v)
                                           for k, v in vars(args).items() if k != "_child"}}
    print(json.dumps(report["machine"]))
    print(f"load at start: {report['started']['uptime']}")
    with torch_threads(args.threads) as threads, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report["threads"] = threads
        ref = references(device, args.precision, mode["reference_size"])
        ref["load"] = load_average()
        report["references"] = ref
        print(f"references ({threads} threads): matmul {ref['matmul_gflops']:.0f} GFLOP/s, conv3x3 "
              + ", ".join(f"{k.rsplit('_', 1)[1]}: {v:.0f}" for k, v in ref.items()
                          if k.startswith("conv3x3")) + f" GFLOP/s; load {ref['load']['load_1min']}")
        report["scans"] = {}
        if not args.skip_scans:
            for n in args.n:
                mc = model_config(n, args.generator, args.n_filters_scale)
                bundle = untrained_bundle(tmp / f"model_N{n}.zip", mc)
                from ptychopinn_torch.inference import load_model

                flops = flops_per_pattern(load_model(bundle).module, n, mc.C)
                print(f"N={n} {network_name(mc)}: {flops / 1e9:.3f} GFLOP per pattern")
                rows = scan_rows(args, n, mc, bundle, tmp, ref, flops)
                fit = linearity(rows)
                report["scans"][str(n)] = {"network": network_name(mc), "flops_per_pattern": flops,
                                           "rows": rows, "linearity": fit}
                if fit:
                    print(f"  linear fit: {fit['seconds_per_1000_positions']:.2f} s per 1000 "
                          f"positions + {fit['intercept_s']:.2f} s (R^2 {fit['r_squared']:.4f}); "
                          f"marginal cost largest/smallest {fit['marginal_cost_ratio'] or float('nan'):.2f}; "
                          f"working memory {' '.join(f'{m:.0f}' for m in fit['working_memory_mib'])} MiB"
                          f" (ratio {fit['working_memory_ratio']:.2f})")
        if args.sweep:
            mc = model_config(args.n[0], args.generator, args.n_filters_scale)
            print(f"network sweep, N={args.n[0]} {network_name(mc)}:")
            counts = sorted({1, os.cpu_count() or 1, max(1, (os.cpu_count() or 1) // 2)})
            report["sweep"] = network_sweep(args, mc, device, counts, [4, 8, 16, 32, 64, 128])
        report["training"] = []
        if not args.skip_training:
            for name in networks:
                for label, knobs in TRAIN_VARIANTS.items():
                    row = training_speed(args, ModelConfig(N=args.n[0], **TRAIN_NETWORKS[name]),
                                         mode["train_groups"],
                                         mode["train_epochs"], knobs, tmp)
                    row["variant"] = label
                    report["training"].append(row)
                    print(f"training {name:8s} {label:22s} {row['patterns_per_s']:7.1f} patterns/s"
                          f" (epochs {' '.join(f'{s:.1f}' for s in row['epoch_s'])} s) load "
                          f"{row['load_1min_before']}")
        if args.precision_check:
            report["precision_check"] = pc = precision_check(args, tmp)
            for key in ("network", f"network+refinement{args.refine_iterations}"):
                if key in pc:
                    print(f"bf16 - float32 held-out SSIM, {key}: amplitude "
                          f"{pc[key]['delta_amplitude_ssim']:+.4f}, phase "
                          f"{pc[key]['delta_phase_ssim']:+.4f} (float32 {pc[key]['32']})")
    report["finished"] = load_average()
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"load at end: {report['finished']['uptime']}\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
