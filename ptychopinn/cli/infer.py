"""Inference command line: ``ptychopinn infer`` (also ``ptychopinn-inference`` and
``python -m ptychopinn_torch.inference``).

Flags (and ``--config FILE``) -> ``InferenceConfig`` + ``ExecutionConfig`` ->
``ptychopinn.workflows`` (the backend dispatcher). Defaults are the config dataclasses'
own. Nothing here imports torch, so ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptychopinn import workflows
from ptychopinn.cli.common import (
    TWIN_NOTE,
    CliArgumentParser,
    ResolvedValues,
    add_config_flags,
    add_execution_flags,
    add_field_flag,
    add_switch,
    build_or_exit,
    check_accelerator,
    check_fresh_output_dir,
    check_input_file,
    command_line_process,
    non_negative_int,
    number,
    parse_command_line,
    positive_int,
    require,
    resolve_values,
    run_reporting_errors,
    text_value,
)
from ptychopinn.config import (
    INFERENCE_PRECISIONS,
    STITCH_WEIGHTINGS,
    ExecutionConfig,
    InferenceConfig,
)
from ptychopinn.data import RawData

PROG = "ptychopinn infer"
SECTIONS = ("inference", "execution")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The inference command line's parser (every flag, its default and help)."""
    p = CliArgumentParser(
        prog=prog,
        description="Reconstruct a scan with a trained PtychoPINN model. Defaults are "
                    "those of the configs (specs/configuration.md).",
        epilog=TWIN_NOTE + "; every execution flag also answers to --torch-<flag>.",
    )
    add_config_flags(p, PROG)
    add_field_flag(p, "--model_path", section="inference", name="model_path", type=Path,
                   metavar="PATH", default_text="required unless --run_id",
                   help="Model bundle (.zip), Lightning checkpoint (.ckpt), weights file "
                        "(.pt), or a training output directory holding one")
    add_field_flag(p, "--run_id", section="inference", name="run_id", type=text_value,
                   metavar="RUN",
                   help="Load the model logged by this MLflow run (training with --logger "
                        "mlflow) instead of --model_path")
    add_field_flag(p, "--test_data", "--test_data_file", section="inference",
                   name="test_data_file", type=Path, metavar="NPZ", default_text="required",
                   help="NPZ scan to reconstruct")
    add_field_flag(p, "--output_dir", section="inference", name="output_dir", type=Path,
                   metavar="DIR", default_text="required",
                   help="Directory for the images, reconstruction.npz, metrics.json and "
                        "resolved_config.yaml; one that holds earlier outputs needs "
                        "--overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="Write into an --output_dir that holds earlier outputs, replacing "
                        "them (an earlier metrics.json is removed when no metrics can be "
                        "computed)")
    add_field_flag(p, "--n_images", "--n_groups", section="inference", name="n_groups",
                   type=positive_int, metavar="INT",
                   default_text="one per scan position, i.e. the whole scan",
                   help="Number of groups to reconstruct")
    add_execution_flags(p, inference=True)
    add_field_flag(p, "--inference-batch-size", section="execution",
                   name="inference_batch_size", type=positive_int, metavar="INT",
                   default_text="the measured best for the device: 16 patterns of 64 x 64 "
                                "on a CPU, 256 on a GPU",
                   help="Groups per inference batch")
    add_field_flag(p, "--inference-precision", section="execution",
                   name="inference_precision", choices=INFERENCE_PRECISIONS,
                   help="Arithmetic of the network: 32 (float32), bf16 (bfloat16 autocast; "
                        "fast on CPUs with AVX512-BF16/AMX and on recent GPUs) or auto "
                        "(bf16 where the hardware computes it natively)")
    add_switch(p, ["--compile"], ["--no-compile"], section="execution",
               name="inference_compile",
               help_on="Compile the network with torch.compile (falls back to uncompiled, "
                       "with a warning, when compiling fails)",
               help_off="Run the network uncompiled")
    add_field_flag(p, "--stitch-weighting", section="inference", name="stitch_weighting",
                   choices=STITCH_WEIGHTINGS, help="Weights of overlapping patches")
    add_field_flag(p, "--stitch-crop-px", "--middle_trim", section="inference",
                   name="stitch_crop_px", type=positive_int, metavar="PX",
                   default_text="N // 2",
                   help="Side of the central square of each patch that is stitched (the "
                        "seeds' middle_trim and reassembly M)")
    add_switch(p, ["--align-phase"], ["--no-align-phase"], section="inference",
               name="stitch_align_phase",
               help_on="Remove each patch's constant phase offset against its neighbours "
                       "while stitching",
               help_off="Keep each patch's own constant phase")
    add_field_flag(p, "--refine-iterations", section="inference", name="refine_iterations",
                   type=non_negative_int, metavar="INT",
                   help="Physics refinement after the network: at most this many iterations "
                        "against the measured data (0 = off; ptychopinn_torch.refine)")
    add_field_flag(p, "--refine-tolerance", section="inference", name="refine_tolerance",
                   type=number, metavar="FRACTION",
                   help="Stop the refinement once the loss improves by less than this "
                        "fraction per iteration (0 = always run every iteration)")
    add_switch(p, ["--refine-probe"], ["--no-refine-probe"], section="inference",
               name="refine_probe", help_on="Refine the probe together with the object",
               help_off="Keep the probe fixed during refinement")
    for flag, name, what in (("--flip_x", "flip_x", "Flip each patch left-right"),
                             ("--flip_y", "flip_y", "Flip each patch up-down"),
                             ("--transpose", "transpose", "Transpose each patch")):
        add_switch(p, [flag], [f"--no-{name}"], section="inference", name=name,
                   help_on=what, help_off=f"Do not: {what.lower()}")
    return p


def configs_from_values(resolved: ResolvedValues) -> tuple[InferenceConfig, ExecutionConfig]:
    """The configs resolved values describe (ConfigError on invalid values)."""
    return (InferenceConfig(**resolved.values["inference"]),
            ExecutionConfig(**resolved.values["execution"]))


def configs_from_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser | None = None
) -> tuple[InferenceConfig, ExecutionConfig]:
    """The configs a parsed command line (and its --config file) describes."""
    return configs_from_values(resolve_values(parser or build_parser(), args, SECTIONS))


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the process exit code.

    Order (specs/errors.md): flags, config file and configs, accelerator, input files,
    output directory (writable; earlier outputs only with --overwrite), model, data; then
    the workflow checks the data against the model and the memory before anything is
    written.
    """
    with command_line_process(prog):
        return _run(argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    parser, args, resolved = parse_command_line(build_parser, argv, prog, SECTIONS)
    require(parser, resolved, (("inference", "test_data_file", "--test_data"),
                               ("inference", "output_dir", "--output_dir")))
    if resolved.get("inference", "model_path") is None and \
            resolved.get("inference", "run_id") is None:
        parser.error("the following arguments are required: --model_path (or --run_id)")
    inference, execution = build_or_exit(parser, lambda: configs_from_values(resolved),
                                         resolved)
    if execution.accelerator == "tpu":  # only a --config file can get here
        origin = resolved.origins.get(("execution", "accelerator"), "--accelerator")
        parser.error(f"{origin}: inference on TPU is not supported; use cpu or gpu")
    check_accelerator(parser, resolved, execution.accelerator, inference.backend)
    check_input_file(parser, "--test_data", inference.test_data_file)
    check_fresh_output_dir(parser, "--output_dir", inference.output_dir,
                           overwrite=args.overwrite)
    model = run_reporting_errors(parser, lambda: workflows.load_inference_bundle_with_backend(
        inference.model_path, inference.backend, run_id=inference.run_id,
        tracking_uri=execution.mlflow_tracking_uri), resolved)
    data = run_reporting_errors(parser, lambda: RawData.from_file(inference.test_data_file),
                                resolved)
    _, paths = run_reporting_errors(parser, lambda: workflows.run_inference_with_backend(
        inference, execution, data=data, model=model), resolved)
    if not args.quiet:
        for name, path in paths.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
