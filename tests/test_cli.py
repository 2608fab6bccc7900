"""Command lines ``ptychopinn train`` / ``infer`` (``ptychopinn.cli``; specs/cli.md).

Everything here runs ``main([...])`` or the parsers in-process: flags, defaults, help
texts, the flag -> config mapping, deprecated flags, and every validation error (exit 2,
one line naming the flag, nothing loaded). The real train -> infer runs through the
command lines live in test_end_to_end.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.cli import infer as inference_cli
from ptychopinn.cli import train as train_cli
from ptychopinn.config import ExecutionConfig, InferenceConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn_torch import inference as inference_workflow
from ptychopinn_torch import train as train_workflow

FIXTURE = Path(__file__).parent / "fixtures" / "minimal_dataset_v1.npz"
TRAIN_PROG = "ptychopinn train"
INFER_PROG = "ptychopinn infer"

# Flags the legacy requirement documents (seeds 000/001/003) name, per command line.
SEED_TRAIN_FLAGS = [
    "--train_data_file", "--test_data_file", "--output_dir", "--max_epochs", "--n_images",
    "--gridsize", "--batch_size", "--model_type", "--torch-loss-mode", "--accelerator",
    "--deterministic", "--no-deterministic", "--num-workers", "--learning-rate",
    "--scheduler", "--accumulate-grad-batches", "--quiet", "--enable-checkpointing",
    "--disable-checkpointing", "--checkpoint-save-top-k", "--checkpoint-monitor",
    "--checkpoint-mode", "--early-stop-patience", "--logger", "--device", "--disable_mlflow",
]
SEED_INFER_FLAGS = [
    "--model_path", "--test_data", "--output_dir", "--n_images", "--accelerator",
    "--num-workers", "--inference-batch-size", "--quiet", "--device",
]


def _train_argv(*extra: str, data: Path = FIXTURE, out: str = "unused_out") -> list[str]:
    return ["--train_data_file", str(data), "--output_dir", out, *extra]


def _infer_argv(*extra: str, model: str = "no_such_model.zip", data: Path = FIXTURE,
                out: str = "unused_out") -> list[str]:
    return ["--model_path", model, "--test_data", str(data), "--output_dir", out, *extra]


def _forbid(what: str):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"{what} ran although a flag was invalid")
    return forbidden


@pytest.fixture
def no_loading(monkeypatch):
    """Any data, model or training access fails the test: validation must come first."""
    monkeypatch.setattr(RawData, "from_file", classmethod(_forbid("RawData.from_file")))
    monkeypatch.setattr(inference_workflow, "load_model", _forbid("load_model"))
    monkeypatch.setattr(inference_workflow, "run_inference", _forbid("run_inference"))
    monkeypatch.setattr(train_workflow, "train", _forbid("train"))


def _exit_line(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {captured.err!r}"
    assert captured.out == ""
    return lines[0]


# ----------------------------------------------------------------- flags, help, defaults
@pytest.mark.parametrize(
    ("parser_factory", "flags"),
    [(train_cli.build_parser, SEED_TRAIN_FLAGS), (inference_cli.build_parser, SEED_INFER_FLAGS)],
    ids=["train", "inference"],
)
def test_every_seed_flag_exists_with_help(parser_factory, flags, capsys):
    parser = parser_factory()
    options = {opt: a for a in parser._actions for opt in a.option_strings}
    missing = [f for f in flags if f not in options]
    assert not missing, f"flags missing: {missing}"
    for action in parser._actions:
        assert action.help and len(action.help) > 10, f"{action.option_strings} lacks help"
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text


def test_train_defaults_are_the_config_defaults():
    # One set of defaults (issue 13, item 9): a flag not given leaves the dataclass default.
    args = train_cli.build_parser().parse_args(_train_argv())
    training, execution = train_cli.configs_from_args(args, N=64)
    expected = TrainingConfig(train_data_file=FIXTURE, output_dir=Path("unused_out"))
    assert training == expected
    assert execution == ExecutionConfig()
    assert (training.nepochs, training.n_groups, training.batch_size) == (50, 512, 16)
    assert training.model.gridsize == 1 and training.neighbor_count == 4


def test_help_states_the_config_defaults(capsys):
    for parser in (train_cli.build_parser(), inference_cli.build_parser()):
        for action in parser._actions:
            section, dot, name = action.dest.partition(".")
            if not dot or action.nargs == 0:
                continue
            from ptychopinn.cli.common import field_default_text

            default = field_default_text(section, name)
            assert "(default: " in action.help, action.option_strings
            if default not in ("none",) and "required" not in action.help:
                stated = action.help.rsplit("(default: ", 1)[1]
                assert stated.startswith(default) or "from the data" in stated or \
                    "max(4" in stated or "N // 2" in stated or "training batch" in stated, (
                    action.option_strings, stated, default)


def test_inference_defaults():
    args = inference_cli.build_parser().parse_args(_infer_argv())
    inference, execution = inference_cli.configs_from_args(args)
    assert inference == InferenceConfig(
        model_path=Path("no_such_model.zip"), test_data_file=FIXTURE, n_groups=None,
        output_dir=Path("unused_out"),
    )
    assert execution.accelerator == "auto" and execution.num_workers == 0
    assert execution.inference_batch_size is None and execution.enable_progress_bar is True


def test_train_flags_map_onto_configs(tmp_path):
    argv = _train_argv(
        "--test_data_file", str(FIXTURE), "--max_epochs", "7", "--n_images", "33",
        "--gridsize", "1", "--batch_size", "5", "--model_type", "supervised",
        "--torch-loss-mode", "mae", "--accelerator", "cuda", "--no-deterministic",
        "--num-workers", "3", "--learning-rate", "2.5e-4", "--scheduler", "Exponential",
        "--accumulate-grad-batches", "2", "--quiet", "--disable-checkpointing",
        "--checkpoint-save-top-k", "-1", "--checkpoint-monitor", "train_loss",
        "--checkpoint-mode", "max", "--early-stop-patience", "9", "--logger", "tensorboard",
        "--N", "128", "--nphotons", "1e7", "--neighbor_count", "6", "--devices", "2",
        "--strategy", "ddp", "--seed", "5", out=str(tmp_path),
    )
    training, execution = train_cli.configs_from_args(train_cli.build_parser().parse_args(argv),
                                                      N=128)
    assert isinstance(training, TrainingConfig) and isinstance(execution, ExecutionConfig)
    assert training.test_data_file == FIXTURE and training.output_dir == tmp_path
    assert (training.nepochs, training.n_groups, training.batch_size) == (7, 33, 5)
    assert (training.model.N, training.model.gridsize, training.model.model_type) == (
        128, 1, "supervised")
    assert training.loss_mode == "mae" and training.nphotons == 1e7
    assert training.neighbor_count == 6
    # 'cuda' is an alias that Lightning knows as 'gpu'.
    assert execution.accelerator == "gpu" and execution.deterministic is False
    assert execution.num_workers == 3 and execution.learning_rate == 2.5e-4
    assert execution.scheduler == "Exponential" and execution.accumulate_grad_batches == 2
    assert execution.enable_progress_bar is False and execution.enable_checkpointing is False
    assert execution.checkpoint_save_top_k == -1
    assert execution.checkpoint_monitor == "train_loss" and execution.checkpoint_mode == "max"
    assert execution.early_stop_patience == 9 and execution.logger == "tensorboard"
    assert execution.devices == 2 and execution.strategy == "ddp" and execution.seed == 5


def test_inference_flags_map_onto_configs(tmp_path):
    argv = _infer_argv("--n_images", "12", "--accelerator", "cpu", "--num-workers", "2",
                       "--inference-batch-size", "17", "--quiet", "--stitch-weighting", "probe",
                       "--flip_x", "--flip_y", "--transpose", "--no-align-phase",
                       model="m.zip", out=str(tmp_path))
    inference, execution = inference_cli.configs_from_args(
        inference_cli.build_parser().parse_args(argv))
    assert inference.model_path == Path("m.zip") and inference.test_data_file == FIXTURE
    assert inference.output_dir == tmp_path and inference.n_groups == 12
    assert inference.stitch_weighting == "probe"
    assert inference.flip_x and inference.flip_y and inference.transpose
    assert inference.stitch_align_phase is False
    assert execution.accelerator == "cpu" and execution.num_workers == 2
    assert execution.inference_batch_size == 17 and execution.enable_progress_bar is False


def test_console_scripts_point_at_the_mains():
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert scripts["ptychopinn-train"].value == "ptychopinn.cli.train:main"
    assert scripts["ptychopinn-inference"].value == "ptychopinn.cli.infer:main"
    assert scripts["ptychopinn-train"].load() is train_cli.main
    assert scripts["ptychopinn-inference"].load() is inference_cli.main


# ----------------------------------------------------------------------- deprecated flags
@pytest.mark.parametrize(
    ("device", "accelerator", "expected"),
    [("cuda", None, "gpu"), ("gpu", None, "gpu"), ("cpu", None, "cpu"),
     ("cuda", "cpu", "cpu"), ("cpu", "gpu", "gpu"), ("cpu", "auto", "auto")],
)
def test_device_is_deprecated_and_accelerator_wins(device, accelerator, expected):
    extra = ["--device", device] + (["--accelerator", accelerator] if accelerator else [])
    for module, argv in ((train_cli, _train_argv(*extra)), (inference_cli, _infer_argv(*extra))):
        args = module.build_parser().parse_args(argv)
        with pytest.warns(DeprecationWarning, match="--device is deprecated"):
            if module is train_cli:
                _, execution = module.configs_from_args(args, N=64)
            else:
                _, execution = module.configs_from_args(args)
        assert execution.accelerator == expected


def test_no_deprecation_warning_without_legacy_flags():
    args = train_cli.build_parser().parse_args(_train_argv("--accelerator", "cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        _, execution = train_cli.configs_from_args(args, N=64)
    assert execution.accelerator == "cpu" and execution.logger == "csv"


def test_disable_mlflow_is_deprecated_and_means_logger_none():
    args = train_cli.build_parser().parse_args(_train_argv("--disable_mlflow"))
    with pytest.warns(DeprecationWarning, match="--logger none"):
        _, execution = train_cli.configs_from_args(args, N=64)
    assert execution.logger == "none"
    # It overrides an explicit --logger too (it can only ever mean "no tracking").
    args = train_cli.build_parser().parse_args(
        _train_argv("--disable_mlflow", "--logger", "tensorboard"))
    with pytest.warns(DeprecationWarning):
        _, execution = train_cli.configs_from_args(args, N=64)
    assert execution.logger == "none"


def test_main_warns_about_legacy_flags(no_loading, capsys, tmp_path):
    absent = tmp_path / "absent.npz"
    with pytest.raises(SystemExit) as info:
        train_cli.main(_train_argv("--device", "cpu", "--disable_mlflow", data=absent))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # one line per deprecated flag, once each, then the one error line
    assert sum("warning: --device is deprecated" in line for line in lines) == 1
    assert sum("warning: --disable_mlflow is deprecated" in line for line in lines) == 1
    assert len(lines) == 3 and "no such file" in lines[-1]
    with pytest.raises(SystemExit):
        inference_cli.main(_infer_argv("--device", "cpu", data=absent))
    lines = capsys.readouterr().err.strip().splitlines()
    assert "warning: --device is deprecated" in lines[0]
    assert len(lines) == 2 and "--test_data" in lines[-1]


# ----------------------------------------------------------------------- validation errors
TRAIN_ERRORS = [
    (["--max_epochs", "0"], "--max_epochs"),
    (["--max_epochs", "abc"], "--max_epochs"),
    (["--max_epochs", "1.5"], "--max_epochs"),
    (["--n_images", "0"], "--n_images"),
    (["--n_images", "-4"], "--n_images"),
    (["--gridsize", "0"], "--gridsize"),
    (["--batch_size", "0"], "--batch_size"),
    (["--model_type", "gan"], "--model_type"),
    (["--torch-loss-mode", "l2"], "--torch-loss-mode"),
    (["--accelerator", "quantum"], "--accelerator"),
    (["--device", "tpu"], "--device"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--num-workers", "two"], "--num-workers"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--learning-rate", "-1e-3"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--learning-rate", "inf"], "--learning-rate"),
    (["--learning-rate", "fast"], "--learning-rate"),
    (["--scheduler", "Cosine"], "--scheduler"),
    (["--accumulate-grad-batches", "0"], "--accumulate-grad-batches"),
    (["--checkpoint-save-top-k", "-2"], "--checkpoint-save-top-k"),
    (["--checkpoint-save-top-k", "best"], "--checkpoint-save-top-k"),
    (["--checkpoint-monitor", ""], "--checkpoint-monitor"),
    (["--checkpoint-mode", "avg"], "--checkpoint-mode"),
    (["--early-stop-patience", "0"], "--early-stop-patience"),
    (["--logger", "wandb"], "--logger"),
    (["--N", "100"], "--N"),
    (["--nphotons", "0"], "--nphotons"),
    (["--nphotons", "-1e6"], "--nphotons"),
    (["--gridsize", "2", "--neighbor_count", "3"], "--neighbor_count"),
    (["--devices", "0"], "--devices"),
    (["--devices", "many"], "--devices"),
    (["--strategy", "fsdp"], "--strategy"),
    (["--seed", "-1"], "--seed"),
    (["--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize(("extra", "flag"), TRAIN_ERRORS,
                         ids=[" ".join(e) or "empty" for e, _ in TRAIN_ERRORS])
def test_train_invalid_flag_exits_2_before_loading(extra, flag, no_loading, capsys):
    # The data path does not exist either: the bad flag must be what is reported.
    line = _exit_line(train_cli.main,
                      _train_argv(*extra, data=Path("no_such_dir/none.npz")), capsys)
    assert line.startswith(f"{TRAIN_PROG}: error:")
    assert flag in line
    assert "no such file" not in line


INFER_ERRORS = [
    (["--n_images", "0"], "--n_images"),
    (["--n_images", "x"], "--n_images"),
    (["--inference-batch-size", "0"], "--inference-batch-size"),
    (["--inference-batch-size", "-3"], "--inference-batch-size"),
    (["--inference-batch-size", "big"], "--inference-batch-size"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--accelerator", "quantum"], "--accelerator"),
    (["--accelerator", "tpu"], "--accelerator"),
    (["--device", "tpu"], "--device"),
    (["--stitch-weighting", "gauss"], "--stitch-weighting"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize(("extra", "flag"), INFER_ERRORS,
                         ids=[" ".join(e) for e, _ in INFER_ERRORS])
def test_inference_invalid_flag_exits_2_before_loading(extra, flag, no_loading, capsys):
    line = _exit_line(inference_cli.main,
                      _infer_argv(*extra, data=Path("no_such_dir/none.npz")), capsys)
    assert line.startswith(f"{INFER_PROG}: error:")
    assert flag in line
    assert "no such file" not in line


@pytest.mark.parametrize("missing", ["--train_data_file", "--output_dir"])
def test_train_required_flags(missing, no_loading, capsys):
    argv = _train_argv()
    i = argv.index(missing)
    del argv[i:i + 2]
    line = _exit_line(train_cli.main, argv, capsys)
    assert "required" in line and missing in line


@pytest.mark.parametrize("missing", ["--model_path", "--test_data", "--output_dir"])
def test_inference_required_flags(missing, no_loading, capsys):
    argv = _infer_argv()
    i = argv.index(missing)
    del argv[i:i + 2]
    line = _exit_line(inference_cli.main, argv, capsys)
    assert "required" in line and missing in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("main,argv", [(train_cli.main, _train_argv("--accelerator", "gpu")),
                                       (inference_cli.main, _infer_argv("--accelerator", "gpu"))],
                         ids=["train", "inference"])
def test_unavailable_gpu_is_one_line_not_a_traceback(main, argv, no_loading, capsys):
    line = _exit_line(main, argv, capsys)
    assert "--accelerator" in line and "CUDA" in line


@pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None, reason="has torch_xla")
def test_train_tpu_without_torch_xla_is_one_line(no_loading, capsys):
    line = _exit_line(train_cli.main, _train_argv("--accelerator", "tpu"), capsys)
    assert "--accelerator" in line and "torch_xla" in line


@pytest.mark.parametrize("flag", ["--train_data_file", "--test_data_file"])
def test_train_missing_data_file(flag, tmp_path, no_loading, capsys):
    missing = tmp_path / "absent.npz"
    argv = _train_argv("--test_data_file", str(FIXTURE), out=str(tmp_path / "o"))
    argv[argv.index(flag) + 1] = str(missing)
    line = _exit_line(train_cli.main, argv, capsys)
    assert f"{flag} {missing}: no such file" in line
    assert not (tmp_path / "o").exists()


def test_inference_missing_test_data(tmp_path, no_loading, capsys):
    line = _exit_line(inference_cli.main, _infer_argv(data=tmp_path / "absent.npz"), capsys)
    assert "--test_data" in line and "no such file" in line


def test_inference_missing_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(RawData, "from_file", classmethod(_forbid("RawData.from_file")))
    line = _exit_line(inference_cli.main,
                      _infer_argv("--accelerator", "cpu", model=str(tmp_path / "nope.zip")),
                      capsys)
    assert "nope.zip" in line and "does not exist" in line
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    line = _exit_line(inference_cli.main,
                      _infer_argv("--accelerator", "cpu", model=str(empty)), capsys)
    assert "holds no model" in line


@pytest.mark.parametrize("content", [b"not an npz at all", None], ids=["garbage", "no-keys"])
def test_train_unreadable_data_is_one_line(content, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_workflow, "train", _forbid("train"))
    bad = tmp_path / "bad.npz"
    if content is None:
        np.savez(bad, something=np.zeros(3))
    else:
        bad.write_bytes(content)
    line = _exit_line(train_cli.main, _train_argv("--accelerator", "cpu", data=bad,
                                                  out=str(tmp_path / "o")), capsys)
    assert str(bad) in line


def test_train_pattern_size_mismatch_is_one_line(tmp_path, capsys):
    # The fixture has N=64 patterns; --N 128 is a valid value but contradicts the data.
    line = _exit_line(train_cli.main,
                      _train_argv("--accelerator", "cpu", "--N", "128", "--logger", "none",
                                  out=str(tmp_path / "o")), capsys)
    assert "64x64" in line and "N=128" in line
    assert not (tmp_path / "o" / "ptychopinn_model.zip").exists()


def test_train_unknown_monitor_metric_is_one_line(tmp_path, capsys):
    # Only known once the model exists; still reported before any training or output.
    out = tmp_path / "o"
    line = _exit_line(train_cli.main,
                      _train_argv("--accelerator", "cpu", "--n_images", "4", "--logger", "none",
                                  "--checkpoint-monitor", "val_accuracy", out=str(out)), capsys)
    assert "--checkpoint-monitor" in line and "val_accuracy" in line and "val_loss" in line
    assert not out.exists()


def test_train_supervised_without_labels_is_one_line(tmp_path, capsys):
    raw = RawData.from_file(FIXTURE)
    unlabelled = tmp_path / "unlabelled.npz"
    RawData(diffraction=raw.diffraction, xcoords=raw.xcoords, ycoords=raw.ycoords,
            probe_guess=raw.probe_guess).save(unlabelled)
    line = _exit_line(train_cli.main,
                      _train_argv("--accelerator", "cpu", "--model_type", "supervised",
                                  data=unlabelled, out=str(tmp_path / "o")), capsys)
    assert "supervised" in line and "labels" in line


def test_build_or_exit_names_the_flag_of_a_config_field():
    from ptychopinn.cli.common import ResolvedValues, _origin_for
    from ptychopinn.config import ConfigError

    parser = train_cli.build_parser()
    assert _origin_for(parser, "ExecutionConfig.seed=-1 is invalid: x", None) == (
        "argument --seed")
    assert _origin_for(parser, "TrainingConfig.nepochs=0 is invalid: x", None) == (
        "argument --max_epochs")
    assert _origin_for(parser, "ModelConfig.n_filters_scale=0 is invalid: x", None) == (
        "argument --n_filters_scale")
    assert _origin_for(parser, "ModelConfig.probe_scale=0 is invalid: x", None) is None
    assert _origin_for(argparse.ArgumentParser(), "not a config message", None) is None
    # A value that came from a --config file is reported with the file and key.
    resolved = ResolvedValues({"training": {"nepochs": 0}},
                              {("training", "nepochs"): "run.yaml: nepochs"})
    assert _origin_for(parser, "TrainingConfig.nepochs=0 is invalid: x", resolved) == (
        "run.yaml: nepochs")
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------------------- demo
DEMO_ERRORS = [
    (["--max_epochs", "0"], "--max_epochs"),
    (["--n-positions", "0"], "--n-positions"),
    (["--gridsize", "0"], "--gridsize"),
    (["--nphotons", "-5"], "--nphotons"),
    (["--accelerator", "tpu"], "--accelerator"),
    (["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize(("extra", "flag"), DEMO_ERRORS, ids=[" ".join(e) for e, _ in DEMO_ERRORS])
def test_demo_invalid_flag_exits_2_before_simulating(extra, flag, tmp_path, monkeypatch, capsys):
    from ptychopinn_torch import demo

    monkeypatch.setattr(demo, "scenario_scan", _forbid("scenario_scan"))
    line = _exit_line(demo.main, ["--output_dir", str(tmp_path / "d"), *extra], capsys)
    assert line.startswith("python -m ptychopinn_torch.demo: error:") and flag in line
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_unavailable_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    from ptychopinn_torch import demo

    monkeypatch.setattr(demo, "scenario_scan", _forbid("scenario_scan"))
    line = _exit_line(demo.main, ["--output_dir", str(tmp_path), "--accelerator", "gpu"], capsys)
    assert "--accelerator" in line and "CUDA" in line


# ------------------------------------------------------- the unified `ptychopinn` command
def test_ptychopinn_command_routes_each_subcommand_to_the_same_parser(no_loading, capsys):
    from ptychopinn.cli import main

    line = _exit_line(main, ["train", *_train_argv("--max_epochs", "0")], capsys)
    assert line.startswith("ptychopinn train: error:") and "--max_epochs" in line
    line = _exit_line(main, ["infer", *_infer_argv("--n_images", "0")], capsys)
    assert line.startswith("ptychopinn infer: error:") and "--n_images" in line
    line = _exit_line(main, ["simulate", "--output", "x.npz", "--seed", "-1"], capsys)
    assert line.startswith("ptychopinn simulate: error:") and "--seed" in line


def test_ptychopinn_command_help_and_unknown_command(capsys):
    from ptychopinn.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "infer", "simulate", "pretrain"))
    assert main(["fit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fit'" in err[0] and "train, infer, simulate" in err[0]
    assert main([]) == 2


@pytest.mark.parametrize(
    ("argv", "prog"),
    [(["-m", "ptychopinn", "train"], "ptychopinn train"),
     (["-m", "ptychopinn", "infer"], "ptychopinn infer"),
     (["-m", "ptychopinn", "simulate"], "ptychopinn simulate"),
     (["-m", "ptychopinn", "pretrain"], "ptychopinn pretrain"),
     (["-m", "ptychopinn_torch.train"], "python -m ptychopinn_torch.train"),
     (["-m", "ptychopinn_torch.inference"], "python -m ptychopinn_torch.inference"),
     (["-m", "ptychopinn.simulate"], "python -m ptychopinn.simulate")],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_help_answers_without_importing_torch(argv, prog):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", *argv, "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {prog}")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
