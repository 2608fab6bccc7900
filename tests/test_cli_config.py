"""Command lines, second part (specs/cli.md, specs/configuration.md): --config files, the
resolved configuration, both spellings of every flag, the --torch-* aliases, the seeds'
names, one set of defaults, the new knobs' flags, help texts, and the one-line errors for
a missing backend package. Everything runs in-process except where a fresh interpreter is
the point (no Lightning installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptychopinn.cli import infer as infer_cli
from ptychopinn.cli import pretrain as pretrain_cli
from ptychopinn.cli import simulate as simulate_cli
from ptychopinn.cli import train as train_cli
from ptychopinn.config import ExecutionConfig, InferenceConfig, TrainingConfig
from ptychopinn.config_file import CONFIG_FILENAME, read_config_file, write_config_file

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "minimal_dataset_v1.npz"


def train_configs(*argv: str, N: int = 64) -> tuple[TrainingConfig, ExecutionConfig]:
    base = ["--train_data_file", str(FIXTURE), "--output_dir", "out"]
    return train_cli.configs_from_args(train_cli.build_parser().parse_args([*base, *argv]), N=N)


def infer_configs(*argv: str) -> tuple[InferenceConfig, ExecutionConfig]:
    base = ["--model_path", "m.zip", "--test_data", str(FIXTURE), "--output_dir", "out"]
    return infer_cli.configs_from_args(infer_cli.build_parser().parse_args([*base, *argv]))


def one_error_line(main, argv, capsys, code: int = 2) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ both spellings
@pytest.mark.parametrize("parser_factory", [train_cli.build_parser, infer_cli.build_parser,
                                            simulate_cli.build_parser,
                                            pretrain_cli.build_parser],
                         ids=["train", "infer", "simulate", "pretrain"])
def test_every_long_flag_answers_to_both_spellings(parser_factory):
    parser = parser_factory()
    options = parser._option_string_actions
    for option, action in options.items():
        if not option.startswith("--"):
            continue
        body = option[2:]
        for twin in (f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}"):
            assert options.get(twin) is action, f"{twin} is not the same flag as {option}"


def test_both_spellings_set_the_same_field():
    assert train_configs("--max-epochs", "7")[0].nepochs == 7
    assert train_configs("--max_epochs", "7")[0].nepochs == 7
    assert train_configs("--learning_rate", "2e-3")[1].learning_rate == 2e-3
    assert train_configs("--n-filters-scale", "1")[0].model.n_filters_scale == 1
    assert infer_configs("--inference_batch_size", "3")[1].inference_batch_size == 3


def test_inference_accepts_test_data_file_like_training(tmp_path):
    args = infer_cli.build_parser().parse_args(
        ["--model_path", "m.zip", "--test_data_file", str(FIXTURE), "--output_dir", "o"])
    inference, _ = infer_cli.configs_from_args(args)
    assert inference.test_data_file == FIXTURE


def test_abbreviations_are_not_flags(capsys):
    line = one_error_line(train_cli.main, ["--train_data_file", str(FIXTURE),
                                           "--output_dir", "o", "--max", "3"], capsys)
    assert "unrecognized arguments: --max" in line


# ------------------------------------------------------ the seeds' names and aliases
def test_seed_spellings_map_to_the_same_fields():
    training, _ = train_configs("--n_groups", "33", "--nepochs", "4", "--n_subsample", "20",
                                "--neighbor_count", "6", "--val_split", "0.2",
                                "--val_seed", "9", "--loss_mode", "mae")
    assert (training.n_groups, training.nepochs, training.n_subsample) == (33, 4, 20)
    assert training.neighbor_count == 6 and training.validation_fraction == 0.2
    assert training.val_seed == 9 and training.loss_mode == "mae"
    inference, _ = infer_configs("--n_groups", "5", "--middle_trim", "20")
    assert inference.n_groups == 5 and inference.stitch_crop_px == 20


TORCH_ALIASES = [
    ("--torch-accelerator", "cpu", "accelerator", "cpu"),
    ("--torch-num-workers", "2", "num_workers", 2),
    ("--torch-learning-rate", "5e-4", "learning_rate", 5e-4),
    ("--torch-scheduler", "Exponential", "scheduler", "Exponential"),
    ("--torch-logger", "none", "logger", "none"),
    ("--torch-accumulate-grad-batches", "3", "accumulate_grad_batches", 3),
    ("--torch-checkpoint-save-top-k", "-1", "checkpoint_save_top_k", -1),
    ("--torch-checkpoint-monitor", "train_loss", "checkpoint_monitor", "train_loss"),
    ("--torch-early-stop-patience", "5", "early_stop_patience", 5),
    ("--torch-devices", "2", "devices", 2),
    ("--torch-seed", "3", "seed", 3),
]


@pytest.mark.parametrize(("flag", "value", "field", "expected"), TORCH_ALIASES,
                         ids=[a[0] for a in TORCH_ALIASES])
def test_torch_execution_aliases_of_seed_004(flag, value, field, expected):
    _, execution = train_configs(flag, value)
    assert getattr(execution, field) == expected


def test_torch_switch_aliases():
    assert train_configs("--torch-no-deterministic")[1].deterministic is False
    assert train_configs("--torch-deterministic")[1].deterministic is True
    assert train_configs("--torch-disable-checkpointing")[1].enable_checkpointing is False
    assert infer_configs("--torch-inference-batch-size", "9")[1].inference_batch_size == 9
    assert infer_configs("--torch-accelerator", "cpu")[1].accelerator == "cpu"
    assert infer_configs("--torch-num-workers", "1")[1].num_workers == 1


# ----------------------------------------------------------------- the new knobs' flags
def test_new_training_flags_map_onto_configs(tmp_path):
    parent = tmp_path / "parent.zip"
    training, execution = train_configs(
        "--backend", "pytorch", "--init-model", str(parent), "--fine_tune_gamma", "0.5",
        "--subsample_seed", "3", "--sequential_sampling", "--stage_1_epochs", "1",
        "--stage_2_epochs", "2", "--stage_3_epochs", "3", "--physics_weight_schedule",
        "linear", "--stage_3_lr_factor", "0.2", "--max_epochs", "6",
        "--experiment_name", "exp", "--notes", "a note", "--model_name", "m", "--debug",
        "--eca_encoder", "--cbam_encoder", "--cbam_bottleneck", "--cbam_decoder",
        "--eca_decoder", "--spatial_decoder", "--decoder_spatial_kernel", "5",
        "--generator", "cnn", "--num-nodes", "2", "--strategy", "ddp",
        "--ddp_find_unused_parameters", "--no-ddp_static_graph",
        "--no-ddp_gradient_as_bucket_view", "--ddp_backend", "gloo", "--drop_last",
        "--scale_lr_with_batch", "--gradient_clip_val", "0.5",
        "--check_val_every_n_epoch", "3", "--mlflow-tracking-uri", "http://host:5000",
        "--accelerator", "cpu",
    )
    assert training.init_model == parent and training.fine_tune_gamma == 0.5
    assert training.subsample_seed == 3 and training.sequential_sampling is True
    assert (training.stage_1_epochs, training.stage_2_epochs, training.stage_3_epochs) == (
        1, 2, 3)
    assert training.physics_weight_schedule == "linear" and training.stage_3_lr_factor == 0.2
    assert (training.experiment_name, training.notes, training.model_name) == (
        "exp", "a note", "m")
    assert training.debug is True
    model = training.model
    assert all((model.eca_encoder, model.cbam_encoder, model.cbam_bottleneck,
                model.cbam_decoder, model.eca_decoder, model.spatial_decoder))
    assert model.decoder_spatial_kernel == 5 and model.generator == "cnn"
    assert execution.num_nodes == 2 and execution.strategy == "ddp"
    assert execution.ddp_find_unused_parameters is True
    assert execution.ddp_static_graph is False and execution.ddp_gradient_as_bucket_view is False
    assert execution.ddp_backend == "gloo" and execution.drop_last is True
    assert execution.scale_lr_with_batch is True and execution.gradient_clip_val == 0.5
    assert execution.check_val_every_n_epoch == 3
    assert execution.mlflow_tracking_uri == "http://host:5000"


def test_new_inference_flags_map_onto_configs():
    args = infer_cli.build_parser().parse_args(
        ["--run_id", "abc123", "--test_data", str(FIXTURE), "--output_dir", "o",
         "--mlflow-tracking-uri", "file:///tmp/mlruns", "--stitch-crop-px", "16",
         "--no-align-phase", "--flip_x", "--no-flip_x"])
    inference, execution = infer_cli.configs_from_args(args)
    assert inference.run_id == "abc123" and inference.model_path is None
    assert execution.mlflow_tracking_uri == "file:///tmp/mlruns"
    assert inference.stitch_crop_px == 16 and inference.stitch_align_phase is False
    assert inference.flip_x is False  # the last of a switch pair wins


@pytest.mark.parametrize(("argv", "flag", "phrase"), [
    (["--backend", "tensorflow"], "--backend", "no TensorFlow backend"),
    (["--stage_1_epochs", "80"], "--stage_1_epochs", "exceeds nepochs"),
    (["--num-nodes", "2"], "--num-nodes", "strategy='ddp'"),
    (["--decoder_spatial_kernel", "4"], "--decoder_spatial_kernel", "odd"),
    (["--fine_tune_gamma", "2"], "--fine_tune_gamma", "1.0]"),
    (["--val_split", "1.5"], "--val_split", "1.0)"),
    (["--experiment_name", ""], "--experiment_name", "non-empty"),
    (["--physics_weight_schedule", "step"], "--physics_weight_schedule", "invalid choice"),
])
def test_new_training_flags_are_validated_before_loading(argv, flag, phrase, capsys):
    line = one_error_line(train_cli.main, ["--train_data_file", "absent.npz",
                                           "--output_dir", "o", *argv], capsys)
    assert line.startswith("ptychopinn train: error:") and flag in line and phrase in line


def test_inference_needs_a_model_path_or_a_run_id(capsys):
    line = one_error_line(infer_cli.main, ["--test_data", str(FIXTURE), "--output_dir", "o"],
                          capsys)
    assert "--model_path" in line and "--run_id" in line
    line = one_error_line(infer_cli.main, ["--model_path", "m.zip", "--run_id", "r",
                                           "--test_data", str(FIXTURE), "--output_dir", "o"],
                          capsys)
    assert "--run_id" in line and "not both" in line


# ---------------------------------------------------------------- one set of defaults
def test_inference_defaults_are_the_config_defaults():
    inference, execution = infer_configs()
    assert inference == InferenceConfig(model_path="m.zip", test_data_file=FIXTURE,
                                        output_dir="out")
    assert execution == ExecutionConfig()


# ------------------------------------------------------------------------ config files
def test_config_file_sets_fields_and_flags_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model:\n  gridsize: 2\n  n_filters_scale: 1\n"
        "training:\n  batch_size: 4\n  n_images: 64\n"   # a seed name for n_groups
        "learning_rate: 1e-3\n"  # flat key; YAML 1.1 reads 1e-3 as a string: still a number
        "scheduler: WarmupCosine\nnepochs: 9\nnphotons: none\n"
    )
    training, execution = train_configs("--config", str(config), "--batch_size", "2")
    assert training.model.gridsize == 2 and training.model.n_filters_scale == 1
    assert training.nepochs == 9 and training.n_groups == 64
    assert training.batch_size == 2  # the flag wins over the file
    assert execution.learning_rate == 1e-3 and execution.scheduler == "WarmupCosine"
    assert training.nphotons is None


def test_toml_config_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('nepochs = 3\nlogger = "none"\nn_subsample = "none"\n'
                      '[model]\ngridsize = 2\n[execution]\nseed = 5\n')
    training, execution = train_configs("--config", str(config))
    assert training.nepochs == 3 and training.model.gridsize == 2
    assert execution.logger == "none" and execution.seed == 5 and training.n_subsample is None


@pytest.mark.parametrize(("text", "phrase"), [
    ("nepoch: 3\n", "unknown key 'nepoch'; did you mean 'nepochs'?"),
    ("training:\n  learning_rat: 1\n", "unknown key 'learning_rat' in section 'training'; "
     "did you mean 'learning_rate' (section 'execution')?"),
    ("model:\n  gridsize: 2\ngridsize: 3\n", "'gridsize' is given twice"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("nepochs: [1, 2\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line_errors(text, phrase, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    line = one_error_line(train_cli.main, ["--train_data_file", str(FIXTURE), "--output_dir",
                                           str(tmp_path / "o"), "--config", str(config)], capsys)
    assert phrase in line and str(config) in line
    assert not (tmp_path / "o").exists()


def test_a_bad_value_in_the_config_file_names_the_file_and_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("training:\n  nepochs: 0\n")
    line = one_error_line(train_cli.main, ["--train_data_file", str(FIXTURE), "--output_dir",
                                           "o", "--config", str(config)], capsys)
    assert f"{config}: nepochs: TrainingConfig.nepochs=0 is invalid" in line


def test_config_file_can_name_the_required_paths(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"train_data_file: {FIXTURE}\noutput_dir: {tmp_path / 'o'}\n")
    args = train_cli.build_parser().parse_args(["--config", str(config)])
    training, _ = train_cli.configs_from_args(args, N=64)
    assert training.train_data_file == FIXTURE and training.output_dir == tmp_path / "o"
    with pytest.raises(Exception, match="unknown key"):
        read_config_file(tmp_path / "run.yaml", ("inference", "execution"))


def test_other_suffixes_are_refused(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text("{}")
    line = one_error_line(train_cli.main, ["--train_data_file", str(FIXTURE), "--output_dir",
                                           "o", "--config", str(config)], capsys)
    assert ".yaml, .yml or .toml" in line


def test_resolved_config_file_is_accepted_by_config_and_gives_the_same_configs(tmp_path):
    training, execution = train_configs(
        "--gridsize", "2", "--max_epochs", "3", "--learning-rate", "2e-3", "--n_subsample",
        "30", "--eca_decoder", "--nphotons", "1e6", "--accelerator", "cpu", N=64)
    path = write_config_file(tmp_path / CONFIG_FILENAME,
                             {"model": training.model, "training": training,
                              "execution": execution}, "ptychopinn train")
    assert path.read_text().startswith("# Resolved configuration of a `ptychopinn train` run")
    args = train_cli.build_parser().parse_args(["--config", str(path)])
    again_training, again_execution = train_cli.configs_from_args(args)
    assert again_execution == execution
    # Paths are written absolute, so the file works from any directory.
    assert again_training == training.replace(output_dir=training.output_dir.resolve())
    inference, ex = infer_configs("--n_images", "4", "--stitch-weighting", "probe")
    path = write_config_file(tmp_path / "infer.yaml", {"inference": inference, "execution": ex},
                             "ptychopinn infer")
    args = infer_cli.build_parser().parse_args(["--config", str(path)])
    back, back_ex = infer_cli.configs_from_args(args)
    assert back == inference.replace(model_path=inference.model_path.resolve(),
                                     output_dir=inference.output_dir.resolve())
    assert back_ex == ex


# ------------------------------------------------------------------------- help texts
def test_inference_help_offers_no_tpu_and_says_what_quiet_does(capsys):
    with pytest.raises(SystemExit):
        infer_cli.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    accelerator_help = text[text.index("--accelerator"):text.index("--device")]
    assert "tpu" not in accelerator_help
    quiet_help = " ".join(text[text.index("\n  --quiet"):].split()[:30])
    assert "progress bar" in quiet_help and "epoch" not in quiet_help


def test_simulate_help_shows_every_default(capsys):
    parser = simulate_cli.build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "output", "quiet"):
            assert "(default:" in action.help, action.option_strings


def test_help_lists_the_twin_spelling_rule_once(capsys):
    with pytest.raises(SystemExit):
        train_cli.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--max_epochs, --nepochs INT" in text  # documented spellings; twins hidden
    assert "--max-epochs INT" not in text and "--max_epochs, --max-epochs" not in text
    assert "hyphens and underscores are" in " ".join(text.split())
    assert "--torch-learning-rate" in text


# --------------------------------------------------- a backend package is not installed
BLOCK_LIGHTNING = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "lightning":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from ptychopinn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a fresh interpreter that imports torch: a few seconds
def test_without_lightning_the_command_line_says_what_to_install(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_LIGHTNING, "train", "--train_data_file", str(FIXTURE),
         "--output_dir", str(out), "--accelerator", "cpu"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("ptychopinn train: error:")
    assert "lightning" in lines[0] and "pip install" in lines[0]
    assert not out.exists()


def test_unknown_backend_error_is_a_runtime_fault():
    from ptychopinn import workflows
    from ptychopinn.errors import RuntimeFault

    assert issubclass(workflows.BackendUnavailableError, RuntimeFault)
    assert issubclass(workflows.BackendUnavailableError, RuntimeError)
    json.dumps(workflows.INSTALL_HINT)  # a plain string users can copy


# ------------------------------------------------------------ specs/cli.md is complete
def _documented_flags(section_title: str) -> set[str]:
    import re

    text = (REPO / "specs" / "cli.md").read_text()
    start = text.index(section_title)
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"`(--[\w-]+)", text[start:end if end > 0 else None]))


@pytest.mark.parametrize(("parser_factory", "title"), [
    (train_cli.build_parser, "## Training: `ptychopinn train`"),
    (infer_cli.build_parser, "## Inference: `ptychopinn infer`"),
    (simulate_cli.build_parser, "## Simulation: `ptychopinn simulate`"),
    # Pretraining shares the training flags; its own are a subsection of Training.
    (pretrain_cli.build_parser, "## Training: `ptychopinn train`"),
], ids=["train", "infer", "simulate", "pretrain"])
def test_specs_cli_lists_every_flag(parser_factory, title):
    documented = _documented_flags(title)
    parser = parser_factory()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        shown = [s for s in action.option_strings
                 if s not in getattr(action, "twin_spellings", set())
                 and not s.startswith("--torch-") or s == "--torch-loss-mode"]
        assert set(shown) <= documented | {"--no-" + s[2:] for s in documented}, (
            f"{shown} missing from specs/cli.md {title}")
    known = {option for factory in (train_cli.build_parser, infer_cli.build_parser,
                                    simulate_cli.build_parser, pretrain_cli.build_parser)
             for option in factory()._option_string_actions}  # cross-references allowed
    stray = {f for f in documented if f not in known}
    assert not stray, f"specs/cli.md documents flags that do not exist: {stray}"


def test_missing_init_model_and_config_files_are_one_line_errors(tmp_path, capsys):
    base = ["--train_data_file", str(FIXTURE), "--output_dir", str(tmp_path / "o")]
    line = one_error_line(train_cli.main, [*base, "--init-model", str(tmp_path / "p.zip")],
                          capsys)
    assert f"--init-model {tmp_path / 'p.zip'}: no such file" in line
    line = one_error_line(train_cli.main, [*base, "--config", str(tmp_path / "c.yaml")], capsys)
    assert "no such config file" in line
    assert not (tmp_path / "o").exists()
