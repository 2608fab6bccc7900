"""Speed knobs (ptychopinn_torch.runtime, ExecutionConfig): threads, channels-last,
bf16 inference, torch.compile with its fallback, the default inference batch, and the
timings and runtime record that inference writes."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ptychopinn.cli import infer as infer_cli
from ptychopinn.cli import train as train_cli
from ptychopinn.config import ExecutionConfig, InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.simulate import make_probe, simulate_dataset
from ptychopinn_torch import inference as inf
from ptychopinn_torch.module import PtychoPINNModule
from ptychopinn_torch.runtime import (
    NetworkRunner,
    default_inference_batch,
    is_channels_last,
    torch_threads,
)

N = 64
CPU = torch.device("cpu")
FIXTURE = Path(__file__).parent / "fixtures" / "minimal_dataset_v1.npz"


def _module(gridsize: int = 1) -> PtychoPINNModule:
    torch.manual_seed(0)
    mc = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1)
    tc = TrainingConfig(model=mc, neighbor_count=max(4, gridsize**2))
    return PtychoPINNModule(mc.to_dict(), tc.to_dict(), ExecutionConfig().to_dict(), 1.0, 1.0,
                            probe=make_probe("aperture", N)).eval()


def _batch(groups: int = 3, C: int = 1) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((groups, C, N, N), generator=gen) * 2
    return x, torch.zeros((groups, C, 2))


@torch.inference_mode()
def _eager(module: PtychoPINNModule, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return module.predict_patches(x, offsets)


def _loaded(module: PtychoPINNModule) -> inf.LoadedModel:
    return inf.LoadedModel(module, module.model_config, module.training_config,
                           module.execution_config, Path("in-memory"), {})


def _scan(n_positions: int = 30):
    return simulate_dataset("dead_leaves", "aperture", N=N, n_positions=n_positions,
                            scan_kind="raster", step_px=8.0, nphotons=1e6, seed=2)


# ----------------------------------------------------------------------------- threads
def test_torch_threads_sets_the_count_and_restores_it() -> None:
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    with torch_threads(other) as used:
        assert used == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads(None) as used:
        assert used == before


def test_reconstruct_uses_and_reports_the_thread_count() -> None:
    before = torch.get_num_threads()
    seen = []
    module = _module()
    original = module.predict_patches

    def spy(x, offsets):
        seen.append(torch.get_num_threads())
        return original(x, offsets)

    module.predict_patches = spy
    other = 2 if before == 1 else 1
    recon = inf.reconstruct(_loaded(module), _scan(), InferenceConfig(refine_iterations=0),
                            ExecutionConfig(accelerator="cpu", num_threads=other,
                                            enable_progress_bar=False))
    assert seen and set(seen) == {other}
    assert recon.runtime["threads"] == other
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------ memory format
@pytest.mark.parametrize("enabled", [True, False])
def test_channels_last_sets_the_layout_and_keeps_the_values(enabled: bool) -> None:
    x, offsets = _batch()
    reference = _eager(_module(), x, offsets)
    module = _module()
    runner = NetworkRunner(module, CPU, ExecutionConfig(channels_last=enabled), 3)
    assert is_channels_last(module.generator) is enabled
    convs = [m.weight for m in module.generator.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous() is not enabled for w in convs)
    out = runner(x, offsets)
    np.testing.assert_allclose(out.numpy(), reference.numpy(), rtol=1e-4, atol=1e-5)
    assert runner.record()["channels_last"] is enabled


# --------------------------------------------------------------------------- precision
def test_bf16_runs_the_convolutions_in_bfloat16_and_returns_complex64() -> None:
    x, offsets = _batch()
    dtypes: list[torch.dtype] = []
    module = _module()
    first_conv = next(m for m in module.generator.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    fp32 = NetworkRunner(module, CPU, ExecutionConfig(inference_precision="32"), 3)(x, offsets)
    bf16 = NetworkRunner(module, CPU, ExecutionConfig(inference_precision="bf16"), 3)(x, offsets)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert fp32.dtype == bf16.dtype == torch.complex64
    diff = (bf16 - fp32).abs()
    assert diff.max() > 0  # really computed differently
    assert diff.mean() < 0.02 * fp32.abs().mean()  # bfloat16 keeps about 3 digits


def test_bf16_inference_precision_reaches_the_reconstruction() -> None:
    data = _scan()
    common = dict(accelerator="cpu", enable_progress_bar=False)
    fp32 = inf.reconstruct(_loaded(_module()), data, InferenceConfig(refine_iterations=0),
                           ExecutionConfig(inference_precision="32", **common))
    bf16 = inf.reconstruct(_loaded(_module()), data, InferenceConfig(refine_iterations=0),
                           ExecutionConfig(inference_precision="bf16", **common))
    assert bf16.runtime["precision"] == "bf16" and fp32.runtime["precision"] == "32"
    assert not np.array_equal(bf16.object, fp32.object)
    assert bf16.object.dtype == np.complex64


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx512f avx512_bf16 avx512vl", "bf16"),
    ("fpu sse amx_tile amx_bf16", "bf16"),
    ("fpu sse avx2 avx512f avx512bw", "32"),  # bfloat16 would be emulated: slower
])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(
        monkeypatch, tmp_path, flags, expected) -> None:
    import builtins

    from ptychopinn_torch import runtime

    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)  # conftest sets it

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
        cpuinfo if str(path) == "/proc/cpuinfo" else path, *a, **k))
    assert runtime.resolve_precision("auto", CPU) == expected
    assert runtime.resolve_precision("32", CPU) == "32"  # explicit choices stay
    runner = NetworkRunner(_module(), CPU, ExecutionConfig(), 3)  # default: auto
    assert runner.precision == expected and runner.record()["precision"] == expected


def test_auto_precision_is_float32_where_cpu_flags_cannot_be_read(monkeypatch) -> None:
    import builtins

    from ptychopinn_torch import runtime

    def no_cpuinfo(path, *a, **k):
        raise FileNotFoundError(path)

    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    assert runtime.native_bf16(CPU) is False
    assert runtime.resolve_precision("auto", torch.device("meta")) == "32"


@pytest.mark.parametrize("value, expected", [("1", "bf16"), ("0", "32")])
def test_the_environment_overrides_the_bf16_detection(monkeypatch, value, expected) -> None:
    from ptychopinn_torch import runtime

    monkeypatch.setenv(runtime.NATIVE_BF16_ENV, value)
    assert runtime.resolve_precision("auto", CPU) == expected
    assert runtime.resolve_precision("bf16", CPU) == "bf16"  # an explicit choice stays


# ----------------------------------------------------------------------------- compile
def test_compile_with_a_working_compiler_pads_the_last_batch() -> None:
    x, offsets = _batch(groups=3)
    module = _module()
    eager = _eager(module, x, offsets)
    sizes: list[int] = []

    def compiler(fn, dynamic):
        assert dynamic is False

        def compiled(xb, ob):
            sizes.append(xb.shape[0])
            return fn(xb, ob)
        return compiled

    runner = NetworkRunner(module, CPU, ExecutionConfig(inference_compile=True,
                                                        channels_last=False), 5,
                           compiler=compiler)
    out = runner(x, offsets)
    assert runner.compiled and sizes == [5]  # 3 groups padded to the batch of 5
    assert out.shape == eager.shape
    np.testing.assert_allclose(out.numpy(), eager.numpy(), rtol=1e-6, atol=1e-7)


def test_compile_by_dynamo_gives_the_eager_result() -> None:
    # backend="eager": dynamo traces the real network (graph capture, guards), without
    # waiting for a C++ compiler; the code path is the one inductor takes.
    x, offsets = _batch(groups=2)
    module = _module()
    eager = _eager(module, x, offsets)
    runner = NetworkRunner(module, CPU, ExecutionConfig(inference_compile=True), 2,
                           compiler=partial(torch.compile, backend="eager"))
    out = runner(x, offsets)
    assert runner.compiled
    np.testing.assert_allclose(out.numpy(), eager.numpy(), rtol=1e-4, atol=1e-5)


def _failing_at_compile(fn, dynamic):
    raise RuntimeError("no C++ compiler found")


def _failing_at_first_call(fn, dynamic):
    def compiled(xb, ob):
        raise RuntimeError("InductorError: compilation of the graph failed")
    return compiled


@pytest.mark.parametrize("compiler", [_failing_at_compile, _failing_at_first_call])
def test_compile_failure_falls_back_to_eager_with_a_warning(compiler, caplog) -> None:
    x, offsets = _batch()
    module = _module()
    eager = _eager(module, x, offsets)
    with caplog.at_level(logging.WARNING, logger="ptychopinn_torch.runtime"):
        runner = NetworkRunner(module, CPU, ExecutionConfig(inference_compile=True), 3,
                               compiler=compiler)
        out = runner(x, offsets)
    assert not runner.compiled
    assert runner.record()["compile_error"].startswith("RuntimeError: ")
    assert any("running it uncompiled" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(out.numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)


def test_compile_switch_reaches_the_runner(monkeypatch) -> None:
    calls = []

    def fake_compile(fn, dynamic):
        calls.append(dynamic)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    data = _scan()
    for flag in (False, True):
        recon = inf.reconstruct(_loaded(_module()), data, InferenceConfig(refine_iterations=0),
                                ExecutionConfig(accelerator="cpu", inference_compile=flag,
                                                enable_progress_bar=False))
        assert recon.runtime["compiled"] is flag
    assert calls == [False]


# ------------------------------------------------------------------------ batch default
def test_default_inference_batch_is_the_measured_pixel_budget() -> None:
    assert default_inference_batch(CPU, 64, 1) == 16
    assert default_inference_batch(CPU, 128, 1) == 4
    assert default_inference_batch(CPU, 64, 4) == 4
    assert default_inference_batch(CPU, 256, 4) == 1
    assert default_inference_batch(torch.device("cuda"), 64, 1) == 256
    assert default_inference_batch(torch.device("cuda"), 128, 1) == 64


# -------------------------------------------------------------------- what is recorded
def test_metrics_record_the_stage_times_and_the_runtime(tmp_path) -> None:
    data = _scan()
    recon = inf.reconstruct(_loaded(_module()), data, InferenceConfig(refine_iterations=2),
                            ExecutionConfig(accelerator="cpu", num_threads=1,
                                            inference_batch_size=7, enable_progress_bar=False,
                                            inference_precision="32"))
    stages = recon.stage_times_s
    assert set(stages) == {"grouping", "prediction", "stitching"}
    assert all(v >= 0 for v in stages.values())
    assert stages["prediction"] + stages["stitching"] == pytest.approx(
        recon.timings_s["network"], rel=0.05, abs=0.05)
    paths = inf.write_outputs(recon, tmp_path, {}, data.object_guess)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["runtime"] == {"device": "cpu", "threads": 1, "batch_groups": 7,
                                  "precision": "32", "channels_last": True,
                                  "compiled": False}
    assert set(metrics["stage_times_s"]) == set(stages)
    with np.load(paths["npz"], allow_pickle=False) as saved:
        assert json.loads(str(saved["record_json"]))["runtime"]["batch_groups"] == 7


# ----------------------------------------------------------------------- command lines
def test_speed_flags_reach_the_execution_config() -> None:
    base = ["--model_path", "m.zip", "--test_data", str(FIXTURE), "--output_dir", "out"]
    _, ex = infer_cli.configs_from_args(infer_cli.build_parser().parse_args(
        [*base, "--num-threads", "3", "--no-channels-last", "--inference-precision", "bf16",
         "--compile"]))
    assert (ex.num_threads, ex.channels_last, ex.inference_precision,
            ex.inference_compile) == (3, False, "bf16", True)
    _, ex = infer_cli.configs_from_args(infer_cli.build_parser().parse_args(base))
    assert (ex.num_threads, ex.channels_last, ex.inference_precision,
            ex.inference_compile) == (None, True, "auto", False)
    args = train_cli.build_parser().parse_args(
        ["--train_data_file", str(FIXTURE), "--output_dir", "o", "--num-threads", "2",
         "--no-channels-last"])
    _, ex = train_cli.configs_from_args(args, N=64)
    assert ex.num_threads == 2 and ex.channels_last is False
    for flag in ("--precision", "--torch-precision"):
        args = train_cli.build_parser().parse_args(
            ["--train_data_file", str(FIXTURE), "--output_dir", "o", flag, "bf16-mixed"])
        assert train_cli.configs_from_args(args, N=64)[1].precision == "bf16-mixed"
    args = train_cli.build_parser().parse_args(["--train_data_file", str(FIXTURE),
                                                "--output_dir", "o"])
    assert train_cli.configs_from_args(args, N=64)[1].precision == "32-true"


def test_bad_training_precision_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_cli.build_parser().parse_args(["--train_data_file", str(FIXTURE),
                                             "--output_dir", "o", "--precision", "bf16"])
    assert info.value.code == 2 and "--precision" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--inference-precision", "16"], ["--num-threads", "0"]])
def test_bad_speed_flags_are_refused(argv, capsys) -> None:
    base = ["--model_path", "m.zip", "--test_data", str(FIXTURE), "--output_dir", "out"]
    with pytest.raises(SystemExit) as info:
        infer_cli.build_parser().parse_args([*base, *argv])
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err
