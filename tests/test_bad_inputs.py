"""Every bad input a careless or hostile user can give the command lines (specs/errors.md).

One table, one test.  Each case runs ``ptychopinn train | infer | simulate`` in-process
(``main(argv)``) and asserts: the exit code, a key phrase of the message, one line on
stderr and nothing on stdout for an error, no traceback, and that no file already in the
output directory changed (inode, size and modification time; every case starts from a
copy of an earlier run, passed with ``--overwrite`` where that is not what the case is
about, so a refusal must come before anything is deleted or rewritten).  A handful of
cases that are accepted with a warning run one tiny epoch.  Faults that need a real
process (kill -9, disk full, two processes) are in ``test_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock

from ptychopinn._io import LOCK_FILENAME, LOCK_NAMES, LOCK_OWNER_FILENAME
from ptychopinn.cli import infer as infer_cli
from ptychopinn.cli import simulate as simulate_cli
from ptychopinn.cli import train as train_cli
from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data import RawData
from ptychopinn_torch.bundle import BUNDLE_FILENAME, MANIFEST_DIGEST_KEY, manifest_digest
from ptychopinn_torch.inference import run_inference
from ptychopinn_torch.train import train

MAINS = {"train": train_cli.main, "infer": infer_cli.main, "simulate": simulate_cli.main}

# ------------------------------------------------------------------------- inputs
# Every crafted data file derives from the session's tiny scan (36 positions, N=64,
# objectGuess and labels); each function returns the arrays of one npz, or writes the
# file itself and returns None.


def _arrays(raw: RawData) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in raw.to_arrays().items()}


def _set(arrays: dict, key: str, value) -> dict:
    arrays[key] = value
    return arrays


def _pop(arrays: dict, *keys: str) -> dict:
    for key in keys:
        arrays.pop(key)
    return arrays


def _nan(a: dict) -> dict:
    a["diffraction"][0, 0, 0] = np.nan
    return a


def _negative(a: dict) -> dict:
    a["diffraction"][0, 0, 0] = -1.0
    return a


def _float64_overflow(a: dict) -> dict:
    diff = a["diffraction"].astype(np.float64)
    diff[0, 0, 0] = 1e39
    return _set(a, "diffraction", diff)


def _counts(a: dict) -> dict:
    return _set(a, "diffraction", np.round(a["diffraction"].astype(np.float64) ** 2)
                .astype(np.float32))


def _cropped(a: dict, n: int) -> dict:
    lo = (64 - n) // 2
    a = _pop(a, "Y")
    a["diffraction"] = np.ascontiguousarray(a["diffraction"][:, lo:lo + n, lo:lo + n])
    a["probeGuess"] = np.ascontiguousarray(a["probeGuess"][lo:lo + n, lo:lo + n])
    return a


def _padded_128(a: dict) -> dict:
    a = _pop(a, "Y")
    a["diffraction"] = np.pad(a["diffraction"], ((0, 0), (32, 32), (32, 32)))
    a["probeGuess"] = np.pad(a["probeGuess"], 32)
    return a


def _first(a: dict, n: int) -> dict:
    for key in ("diffraction", "xcoords", "ycoords", "scan_index", "Y"):
        a[key] = a[key][:n]
    return a


def _identical_positions(a: dict) -> dict:
    a["xcoords"][:] = a["xcoords"][0]
    a["ycoords"][:] = a["ycoords"][0]
    return a


def _mostly_duplicated(a: dict) -> dict:
    a["xcoords"][18:] = a["xcoords"][:18]
    a["ycoords"][18:] = a["ycoords"][:18]
    return a


def _far_without_object(a: dict) -> dict:
    a = _pop(a, "objectGuess")
    a["xcoords"][0] = 1e9  # a stitching canvas of ~1e9 x 100 px: terabytes
    return a


DATA: dict[str, Callable[[dict], dict]] = {
    "nan": _nan,
    "negative": _negative,
    "float64_overflow": _float64_overflow,
    "scaled_1e30": lambda a: _set(a, "diffraction", a["diffraction"] * np.float32(1e30)),
    "tiny_1e-30": lambda a: _set(a, "diffraction", a["diffraction"] * np.float32(1e-30)),
    "all_zero": lambda a: _set(a, "diffraction", np.zeros_like(a["diffraction"])),
    "counts": _counts,
    "n32": lambda a: _cropped(a, 32),
    "n128": _padded_128,
    "missing_xcoords": lambda a: _pop(a, "xcoords"),
    "missing_diffraction": lambda a: _pop(a, "diffraction"),
    "short_ycoords": lambda a: _set(a, "ycoords", a["ycoords"][:-1]),
    "complex_diffraction": lambda a: _set(a, "diffraction", a["diffraction"] + 1j),
    "nan_positions": lambda a: _set(a, "xcoords", np.where(np.arange(36) == 3, np.nan,
                                                           a["xcoords"])),
    "outside_object": lambda a: _set(a, "xcoords", a["xcoords"] + 500.0),
    "identical": _identical_positions,
    "mostly_duplicated": _mostly_duplicated,
    "one_position": lambda a: _first(a, 1),
    "unlabelled": lambda a: _pop(a, "Y"),
    "far_no_object": _far_without_object,
    "no_object": lambda a: _pop(a, "objectGuess"),
    "probe_wrong_shape": lambda a: _set(a, "probeGuess", a["probeGuess"][:32, :32]),
}


def _write_pickled(path: Path, a: dict) -> None:
    a["ycoords"] = np.array([object()] * 36, dtype=object)
    np.savez(path, **a)  # allow_pickle: an object array inside


def _write_declares_10_gib(path: Path, a: dict) -> None:
    """A 1 KiB file whose diffraction header declares (40000, 256, 256) float32."""
    from numpy.lib import format as npy_format

    with zipfile.ZipFile(path, "w") as zf:
        for key, value in a.items():
            if key == "diffraction":
                header = io_bytes(lambda fh: npy_format.write_array_header_1_0(fh, {
                    "descr": "<f4", "fortran_order": False, "shape": (40000, 256, 256)}))
                zf.writestr("diffraction.npy", header + b"\0" * 1024)
            else:
                zf.writestr(f"{key}.npy", io_bytes(lambda fh, v=value: np.save(fh, v)))


def io_bytes(write: Callable) -> bytes:
    import io

    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------- model files
def _rezip(src: Path, dst: Path, edit=None, resign=True, replace=None) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members.update(replace or {})
    manifest = json.loads(members["manifest.json"])
    if edit is not None:
        edit(manifest)
    if resign:
        manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _pickled_weights(manifest: dict) -> bytes:
    payload = io_bytes(lambda fh: torch.save({"__probe__": torch.zeros(2, 2), "x": _Exploit()},
                                             fh))
    manifest["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    return payload


MODELS: dict[str, Callable[[Path, Path], Path]] = {
    "edited_activation": lambda b, d: _rezip(
        b, d, lambda m: m["configs"]["model"].update(amp_activation="relu"), resign=False),
    "edited_summary": lambda b, d: _rezip(
        b, d, lambda m: m["training_summary"].update(epochs_completed=99), resign=False),
    "configs_N_128": lambda b, d: _rezip(b, d, lambda m: m["configs"]["model"].update(N=128)),
    "configs_gridsize_2": lambda b, d: _rezip(
        b, d, lambda m: m["configs"]["model"].update(gridsize=2)),
    "configs_filters_3": lambda b, d: _rezip(
        b, d, lambda m: m["configs"]["model"].update(n_filters_scale=3)),
    "no_training_section": lambda b, d: _rezip(b, d, lambda m: m["configs"].pop("training")),
    "negative_batch": lambda b, d: _rezip(
        b, d, lambda m: m["configs"]["training"].update(batch_size=-4)),
    "unknown_field": lambda b, d: _rezip(
        b, d, lambda m: m["configs"]["model"].update(wings=2)),
    "newer_format": lambda b, d: _rezip(b, d, lambda m: m.update(format_version=99)),
    "weights_changed": lambda b, d: _rezip(
        b, d, replace={"weights.pt": io_bytes(lambda fh: torch.save({"x": torch.ones(3)}, fh))}),
}


def _pickle_bundle(bundle: Path, dst: Path) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    payload = _pickled_weights(manifest)
    return _rezip(bundle, dst, lambda m: m.update(weights_sha256=manifest["weights_sha256"]),
                  replace={"weights.pt": payload})


# ------------------------------------------------------------------------- environment
@dataclass
class Env:
    root: Path
    raw: RawData
    test_raw: RawData
    previous_training: Path  # a finished 1-epoch run: bundle + checkpoints/last.ckpt
    previous_inference: Path  # outputs of one inference run
    cache: dict[str, Path] = field(default_factory=dict)

    def data(self, name: str) -> Path:
        if name not in self.cache:
            path = self.root / "data" / f"{name}.npz"
            path.parent.mkdir(exist_ok=True)
            if name == "good":
                self.raw.save(path)
            elif name == "good_test":
                self.test_raw.save(path)
            elif name == "pickled":
                _write_pickled(path, _arrays(self.raw))
            elif name == "declares_10_gib":
                _write_declares_10_gib(path, _arrays(self.raw))
            elif name == "truncated":
                good = self.data("good").read_bytes()
                path.write_bytes(good[: len(good) // 2])
            elif name == "text":
                path.write_text("x,y\n1,2\n")
            elif name == "empty":
                path.write_bytes(b"")
            elif name == "directory":
                path = self.root / "data" / "a_directory.npz"
                path.mkdir()
            else:
                np.savez(path, **DATA[name](_arrays(self.raw)))
            self.cache[name] = path
        return self.cache[name]

    def model(self, name: str) -> Path:
        key = f"model:{name}"
        if key not in self.cache:
            bundle = self.previous_training / BUNDLE_FILENAME
            folder = self.root / "models"
            folder.mkdir(exist_ok=True)
            path = folder / f"{name}.zip"
            if name == "good":
                path = bundle
            elif name == "directory_without_model":
                path = folder / "empty_run"
                path.mkdir()
            elif name == "missing":
                path = folder / "no_such_model.zip"
            elif name == "not_zip":
                path.write_text("not a model\n")
            elif name == "zip_without_manifest":
                with zipfile.ZipFile(path, "w") as zf:
                    zf.writestr("notes.txt", "hello")
            elif name == "pickled_weights":
                _pickle_bundle(bundle, path)
            elif name == "ckpt_list":
                path = folder / "list.ckpt"
                torch.save([torch.zeros(2)], path)
            elif name == "ckpt_text":
                path = folder / "notes.ckpt"
                path.write_text("epoch 3 looked good\n")
            elif name == "ckpt_pickle":
                path = folder / "exploit.ckpt"
                torch.save({"state_dict": {}, "hyper_parameters": {"x": _Exploit()}}, path)
            else:
                MODELS[name](bundle, path)
            self.cache[key] = path
        return self.cache[key]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_raw, tiny_test_raw) -> Env:
    root = tmp_path_factory.mktemp("bad_inputs")
    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=1, n_filters_scale=1), n_groups=8, batch_size=8,
        nepochs=1, validation_fraction=0.0, output_dir=root / "previous_training",
    )
    execution = ExecutionConfig(accelerator="cpu", enable_progress_bar=False, logger="none")
    result = train(tiny_raw, None, config, execution)
    env = Env(root, tiny_raw, tiny_test_raw, result.output_dir, root / "previous_inference")
    from ptychopinn.config import InferenceConfig

    run_inference(InferenceConfig(output_dir=env.previous_inference), execution,
                  data=tiny_test_raw, model=_load(result.bundle_path))
    return env


def _load(path: Path):
    from ptychopinn_torch.inference import load_model

    return load_model(path)


# ------------------------------------------------------------------------- cases
OUT = "<out>"  # placeholder for the case's output location


def D(name: str) -> str:  # noqa: N802 - reads as a table column
    return f"<data:{name}>"


def M(name: str) -> str:  # noqa: N802
    return f"<model:{name}>"


def train_args(*extra: str, data: str = "good", overwrite: bool = True) -> tuple[str, ...]:
    base = ["--train_data_file", D(data), "--output_dir", OUT, "--max_epochs", "1",
            "--n_images", "8", "--batch_size", "8", "--gridsize", "1", "--n_filters_scale",
            "1", "--quiet", "--logger", "none", "--accelerator", "cpu"]
    return (*base, *(["--overwrite"] if overwrite else []), *extra)


def infer_args(*extra: str, model: str = "good", data: str = "good_test",
               overwrite: bool = True) -> tuple[str, ...]:
    base = ["--model_path", M(model), "--test_data", D(data), "--output_dir", OUT,
            "--accelerator", "cpu", "--quiet"]
    return (*base, *(["--overwrite"] if overwrite else []), *extra)


def simulate_args(*extra: str, output: str = f"{OUT}/new.npz") -> tuple[str, ...]:
    return ("--output", output, "--n-positions", "16", "--quiet", *extra)


@dataclass(frozen=True)
class Case:
    """``out``: what the output location holds before the run -- "previous" (a copy of
    an earlier run of the same command), "absent", "locked" (previous, and another run
    holds the lock), "corrupt_checkpoint" (previous with a garbage last.ckpt).
    ``code`` 0 cases are accepted; ``phrase`` is then a line they must print."""

    id: str
    command: str
    args: tuple[str, ...]
    code: int
    phrase: str
    out: str = "previous"
    quiet_success: bool = False  # exit 0 and the output directory must stay untouched


C = Case
CASES = [
    # ------------------------------------------------------------------ train: flags
    C("train-missing-required", "train", ("--output_dir", OUT), 2, "required: --train_data_file"),
    C("train-unknown-flag", "train", train_args("--epochs", "3"), 2, "unrecognized arguments"),
    C("train-lr-negative-exponent", "train", train_args("--learning-rate", "-1e-3"), 2,
      "--learning-rate/--torch-learning-rate/--learning_rate/--torch_learning_rate: must be a "
      "finite number > 0, got -1e-3"),
    C("train-lr-zero", "train", train_args("--learning-rate", "0"), 2, "--learning-rate"),
    C("train-lr-nan", "train", train_args("--learning-rate", "nan"), 2, "--learning-rate"),
    C("train-lr-negative-inf", "train", train_args("--learning-rate", "-inf"), 2,
      "must be a finite number, got -inf"),
    C("train-epochs-zero", "train", train_args("--max_epochs", "0"), 2,
      "argument --max_epochs/--nepochs/--max-epochs: must be >= 1, got 0"),
    C("train-epochs-negative", "train", train_args("--max_epochs", "-5"), 2,
      "--max_epochs/--nepochs/--max-epochs: must be >= 1, got -5"),
    C("train-batch-text", "train", train_args("--batch_size", "abc"), 2, "expected an integer"),
    C("train-seed-negative", "train", train_args("--seed", "-1"), 2, "--seed"),
    C("train-seed-too-large", "train", train_args("--seed", str(2**32)), 2, "--seed"),
    C("train-nphotons-negative", "train", train_args("--nphotons", "-1e6"), 2, "--nphotons"),
    C("train-nphotons-1e300", "train", train_args("--nphotons", "1e300"), 2,
      "argument --nphotons: TrainingConfig.nphotons=1e+300 is invalid: must be a finite "
      "number in [1e-06, 1e+15]"),
    C("train-nphotons-inf", "train", train_args("--nphotons", "inf"), 2, "--nphotons"),
    C("train-N-unsupported", "train", train_args("--N", "32"), 2, "argument --N: invalid choice"),
    C("train-N-differs-from-data", "train", train_args("--N", "128"), 2,
      "the training data has 64x64 patterns but the model uses N=128"),
    C("train-neighbors-below-group", "train", train_args("--gridsize", "2", "--neighbor_count",
                                                         "2"), 2, "--neighbor_count"),
    C("train-monitor-unknown", "train", train_args("--checkpoint-monitor", "val_psnr"), 2,
      "is not a logged metric"),
    C("train-resume-and-overwrite", "train", train_args("--resume"), 2,
      "--resume continues the run in --output_dir and --overwrite replaces it"),
    # ------------------------------------------------------------------ train: data files
    C("train-data-missing", "train", train_args(data="does_not_exist"), 2, "no such file"),
    C("train-data-directory", "train", train_args(data="directory"), 2,
      "is a directory, not a data file"),
    C("train-data-empty", "train", train_args(data="empty"), 2, "not an .npz archive"),
    C("train-data-text", "train", train_args(data="text"), 2, "not an .npz archive"),
    C("train-data-truncated", "train", train_args(data="truncated"), 2,
      "the file is truncated or corrupt"),
    C("train-data-declares-10-GiB", "train", train_args(data="declares_10_gib"), 2,
      "declares shape (40000, 256, 256) float32 (9.8 GiB) but the archive holds only"),
    C("train-data-pickled", "train", train_args(data="pickled"), 2, "pickled"),
    C("train-data-missing-key", "train", train_args(data="missing_xcoords"), 2,
      "missing required key 'xcoords'"),
    C("train-data-no-diffraction", "train", train_args(data="missing_diffraction"), 2,
      "missing diffraction data"),
    C("train-data-nan", "train", train_args(data="nan"), 2, "non-finite (NaN/Inf)"),
    C("train-data-negative", "train", train_args(data="negative"), 2, "negative values"),
    C("train-data-float64-overflow", "train", train_args(data="float64_overflow"), 2,
      "beyond the float32 range"),
    C("train-data-complex", "train", train_args(data="complex_diffraction"), 2,
      "must hold real numbers"),
    C("train-data-lengths-differ", "train", train_args(data="short_ycoords"), 2,
      "xcoords and ycoords differ in length"),
    C("train-data-nan-position", "train", train_args(data="nan_positions"), 2,
      "xcoords has 1 non-finite"),
    C("train-data-probe-shape", "train", train_args(data="probe_wrong_shape"), 2,
      "does not match the diffraction"),
    C("train-data-scaled-1e30", "train", train_args(data="scaled_1e30"), 2,
      "photons per pattern, outside the range PtychoPINN computes with"),
    C("train-data-scaled-1e-30", "train", train_args(data="tiny_1e-30"), 2,
      "photons per pattern, outside the range"),
    C("train-data-all-zero", "train", train_args(data="all_zero"), 2,
      "is 0: the diffraction holds no photons at all"),
    C("train-data-32x32", "train", train_args(data="n32"), 2,
      "has 32x32 patterns; PtychoPINN supports 64, 128, 256 px patterns"),
    C("train-data-outside-object", "train", train_args(data="outside_object"), 2,
      "36 of the 36 training scan positions put their 64x64 patch outside objectGuess"),
    C("train-data-identical-gridsize-2", "train", train_args("--gridsize", "2", data="identical"),
      2, "only 1 distinct scan position(s) among 36"),
    C("train-data-fewer-than-group", "train", train_args("--gridsize", "2",
                                                         data="one_position"), 2,
      "has 1 positions; a group needs gridsize**2 = 4"),
    C("train-supervised-unlabelled", "train", train_args("--model_type", "supervised",
                                                         data="unlabelled"), 2,
      "needs ground-truth labels"),
    C("train-test-data-directory", "train", train_args("--test_data_file", D("directory")), 2,
      "--test_data_file"),
    C("train-test-data-other-N", "train", train_args("--test_data_file", D("n128")), 2,
      "the test data has 128x128 patterns but the model uses N=64"),
    # ------------------------------------------------------------------ train: resources
    C("train-filters-100000", "train", train_args("--n_filters_scale", "100000"), 2,
      "of CPU memory but only"),
    # ------------------------------------------------------------------ train: output dir
    C("train-output-is-file", "train", train_args(), 2, "is a file, not a directory",
      out="file"),
    C("train-output-under-file", "train", train_args(), 2, "which is a file, not a directory",
      out="under_file"),
    C("train-output-unwritable", "train", train_args(), 2, "is not writable", out="unwritable"),
    C("train-output-holds-earlier-run", "train", train_args(overwrite=False), 2,
      "already holds earlier outputs (checkpoints/, ptychopinn_model.zip, resolved_config.yaml); "
      "pass --resume to continue that training, --overwrite to replace it"),
    C("train-output-locked", "train", train_args(), 2,
      "is in use by another training (process 4242 on lab-pc", out="locked"),
    # ------------------------------------------------------------------ train: resume
    C("train-resume-without-checkpoint", "train", train_args("--resume", overwrite=False), 2,
      "--resume: there is no checkpoint to resume in", out="absent"),
    C("train-resume-other-filters", "train", train_args("--resume", "--n_filters_scale", "2",
                                                        overwrite=False), 2,
      "was trained with other settings: --n_filters_scale 1 -> 2"),
    C("train-resume-other-gridsize", "train", train_args("--resume", "--gridsize", "2",
                                                         overwrite=False), 2,
      "--gridsize 1 -> 2"),
    C("train-resume-corrupt-checkpoint", "train", train_args("--resume", overwrite=False), 2,
      "it is damaged or was not written by PtychoPINN", out="corrupt_checkpoint"),
    C("train-resume-complete", "train", train_args("--resume", overwrite=False), 0,
      "is already complete (1 of --max_epochs 1); the bundle was left unchanged",
      quiet_success=True),
    # ------------------------------------------------------------------ train: accepted, warned
    C("train-counts-not-amplitude", "train", train_args(data="counts"), 0,
      "warning: the training diffraction looks like photon counts, not amplitude", out="absent"),
    C("train-nphotons-far-from-data", "train", train_args("--nphotons", "1e12"), 0,
      "but --nphotons is 1e+12: the Poisson loss is scaled", out="absent"),
    C("train-duplicated-positions", "train", train_args(data="mostly_duplicated"), 0,
      "warning: 18 of the 36 training scan positions repeat another position", out="absent"),
    # ------------------------------------------------------------------ infer: flags, files
    C("infer-missing-required", "infer", ("--test_data", D("good")), 2, "required"),
    C("infer-batch-negative", "infer", infer_args("--inference-batch-size", "-4"), 2,
      "--torch_inference_batch_size: must be >= 1, got -4"),
    C("infer-n-images-zero", "infer", infer_args("--n_images", "0"), 2, "--n_images"),
    C("infer-tpu", "infer", infer_args("--accelerator", "tpu"), 2,
      "invalid choice: 'tpu' (choose from 'auto', 'cpu', 'gpu', 'cuda', 'mps')"),
    C("infer-data-missing", "infer", infer_args(data="does_not_exist"), 2, "no such file"),
    C("infer-data-directory", "infer", infer_args(data="directory"), 2, "is a directory"),
    C("infer-data-other-N", "infer", infer_args(data="n128"), 2,
      "the test data has 128x128 patterns but the model uses N=64"),
    C("infer-data-outside-object", "infer", infer_args(data="outside_object"), 2,
      "put their 64x64 patch outside objectGuess"),
    C("infer-data-far-positions", "infer", infer_args(data="far_no_object"), 2,
      "of memory but only"),
    C("infer-data-nan", "infer", infer_args(data="nan"), 2, "non-finite"),
    C("infer-counts-not-amplitude", "infer", infer_args(data="counts", overwrite=False), 0,
      "warning: the test diffraction looks like photon counts", out="absent"),
    C("infer-no-object-says-why", "infer", tuple(a for a in infer_args(
        data="no_object", overwrite=False) if a != "--quiet"), 0,
      "no metrics.json: the test data has no objectGuess (ground truth)", out="absent"),
    # ------------------------------------------------------------------ infer: model files
    C("infer-model-missing", "infer", infer_args(model="missing"), 2, "does not exist"),
    C("infer-model-dir-without-model", "infer", infer_args(model="directory_without_model"), 2,
      "holds no model: expected one of ptychopinn_model.zip, checkpoints/last.ckpt"),
    C("infer-model-not-zip", "infer", infer_args(model="not_zip"), 2, "is not a zip archive"),
    C("infer-model-zip-without-manifest", "infer", infer_args(model="zip_without_manifest"), 2,
      "not a PtychoPINN model bundle"),
    C("infer-manifest-activation-edited", "infer", infer_args(model="edited_activation"), 2,
      "the manifest was modified"),
    C("infer-manifest-summary-edited", "infer", infer_args(model="edited_summary"), 2,
      "the manifest was modified"),
    C("infer-configs-N-changed", "infer", infer_args(model="configs_N_128"), 2,
      "its weights do not fit the architecture its configs describe (N=128"),
    C("infer-configs-gridsize-changed", "infer", infer_args(model="configs_gridsize_2"), 2,
      "its weights do not fit the architecture its configs describe"),
    C("infer-configs-filters-changed", "infer", infer_args(model="configs_filters_3"), 2,
      "its weights do not fit the architecture"),
    C("infer-configs-section-missing", "infer", infer_args(model="no_training_section"), 2,
      "missing part: configs.training"),
    C("infer-configs-negative-batch", "infer", infer_args(model="negative_batch"), 2,
      "the model's configs are invalid (TrainingConfig.batch_size=-4"),
    C("infer-configs-unknown-field", "infer", infer_args(model="unknown_field"), 2,
      "unknown field(s) wings"),
    C("infer-bundle-newer-format", "infer", infer_args(model="newer_format"), 2,
      "upgrade PtychoPINN"),
    C("infer-bundle-weights-changed", "infer", infer_args(model="weights_changed"), 2,
      "checksum mismatch"),
    C("infer-bundle-pickled-weights", "infer", infer_args(model="pickled_weights"), 2,
      "refused without unpickling arbitrary objects (unsupported GLOBAL posix.system)"),
    C("infer-ckpt-not-a-checkpoint", "infer", infer_args(model="ckpt_list"), 2,
      "is not a PtychoPINN training checkpoint"),
    C("infer-ckpt-text", "infer", infer_args(model="ckpt_text"), 2,
      "is not a file written by torch.save (it starts with b'epoc'); give the "
      "ptychopinn_model.zip bundle or a checkpoints/last.ckpt"),
    C("infer-ckpt-pickled-object", "infer", infer_args(model="ckpt_pickle"), 2,
      "refused without unpickling arbitrary objects (unsupported GLOBAL posix.system)"),
    # ------------------------------------------------------------------ infer: output dir
    C("infer-output-is-file", "infer", infer_args(), 2, "is a file, not a directory",
      out="file"),
    C("infer-output-under-file", "infer", infer_args(), 2, "which is a file", out="under_file"),
    C("infer-output-unwritable", "infer", infer_args(), 2, "is not writable", out="unwritable"),
    C("infer-output-holds-earlier-run", "infer", infer_args(overwrite=False), 2,
      "already holds earlier outputs (metrics.json, reconstructed_amplitude.png, "
      "reconstructed_phase.png, reconstruction.npz, ...); pass --overwrite to replace them"),
    C("infer-output-locked", "infer", infer_args(), 2, "is in use by another training",
      out="locked"),
    # ------------------------------------------------------------------ simulate
    C("simulate-positions-zero", "simulate", simulate_args("--n-positions", "0"), 2,
      "--n-positions must be >= 1"),
    C("simulate-positions-negative", "simulate", simulate_args("--n-positions", "-5"), 2,
      "--n-positions must be >= 1, got -5"),
    C("simulate-positions-1e9", "simulate", simulate_args("--n-positions", "1000000000"), 2,
      "simulating 1000000000 patterns of 64x64 px needs about"),
    C("simulate-nphotons-1e300", "simulate", simulate_args("--nphotons", "1e300"), 2,
      "--nphotons must be a finite number in [1e-06, 1e+15]"),
    C("simulate-nphotons-negative", "simulate", simulate_args("--nphotons", "-1e6"), 2,
      "--nphotons"),
    C("simulate-step-negative", "simulate", simulate_args("--step-px", "-1"), 2, "--step-px"),
    C("simulate-jitter-nan", "simulate", simulate_args("--jitter-px", "nan"), 2, "--jitter-px"),
    C("simulate-seed-negative", "simulate", simulate_args("--seed", "-1"), 2, "--seed"),
    C("simulate-N-unsupported", "simulate", simulate_args("--N", "32"), 2, "invalid choice"),
    C("simulate-output-not-npz", "simulate", simulate_args(output=f"{OUT}/scan.h5"), 2,
      "--output must end in .npz"),
    C("simulate-output-directory", "simulate", simulate_args(output=OUT), 2,
      "--output must end in .npz"),
    C("simulate-output-npz-directory", "simulate", simulate_args(output=f"{OUT}/folder.npz"), 2,
      "is a directory; give a file path"),
    C("simulate-output-parent-missing", "simulate",
      simulate_args(output=f"{OUT}/missing/new.npz"), 2, "--output directory does not exist"),
    C("simulate-output-under-file", "simulate",
      simulate_args(output=f"{OUT}/previous.npz/new.npz"), 2, "which is a file"),
    C("simulate-output-unwritable", "simulate", simulate_args(), 2, "is not writable",
      out="unwritable"),
]


# ------------------------------------------------------------------------- running
def _unwritable(root: Path) -> Path:
    """An existing directory this process cannot write in (as root, permission bits do
    not stop writes; sysfs refuses new entries to everyone)."""
    if os.geteuid() != 0:
        locked = root / "read_only"
        locked.mkdir()
        locked.chmod(0o500)
        return locked
    if Path("/sys").is_dir():
        return Path("/sys")
    pytest.skip("no unwritable location available to root on this platform")


def _prepare_output(case: Case, env: Env, tmp_path: Path) -> tuple[Path, Path]:
    """(the path the case names as its output, the directory whose files must not
    change)."""
    out = tmp_path / "out"
    previous = {"train": env.previous_training, "infer": env.previous_inference}
    if case.command == "simulate":
        out.mkdir()
        (out / "previous.npz").write_bytes(b"an earlier simulation")
        (out / "folder.npz").mkdir()
        if case.out == "unwritable":
            return _unwritable(tmp_path), out
        return out, out
    if case.out == "absent":
        return out, out
    if case.out == "file":
        out.write_text("my notes\n")
        return out, tmp_path
    if case.out == "under_file":
        (tmp_path / "notes.txt").write_text("my notes\n")
        return tmp_path / "notes.txt" / "run", tmp_path
    if case.out == "unwritable":
        return _unwritable(tmp_path) / "run", tmp_path
    # Hard links: copying is instant, and any in-place write shows in inode/mtime.
    shutil.copytree(previous[case.command], out, copy_function=os.link)
    if case.out == "corrupt_checkpoint":
        last = out / "checkpoints" / "last.ckpt"
        last.unlink()
        last.write_bytes(b"\x80\x02garbage")
    return out, out


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): (st.st_ino, st.st_size, st.st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in LOCK_NAMES
        for st in [p.stat()]
    }


def _resolve(args: tuple[str, ...], env: Env, out: Path) -> list[str]:
    resolved = []
    for arg in args:
        if arg.startswith("<data:"):
            name = arg[len("<data:"):-1]
            arg = str(env.root / "absent.npz") if name == "does_not_exist" else str(env.data(name))
        elif arg.startswith("<model:"):
            arg = str(env.model(arg[len("<model:"):-1]))
        else:
            arg = arg.replace(OUT, str(out))
        resolved.append(arg)
    return resolved


def _hold_lock(directory: Path) -> FileLock:
    lock = FileLock(str(directory / LOCK_FILENAME), timeout=0)
    lock.acquire()
    (directory / LOCK_OWNER_FILENAME).write_text(json.dumps({
        "purpose": "training", "pid": 4242, "host": "lab-pc",
        "started_utc": "2025-01-01T08:00:00+00:00", "command": "ptychopinn train ..."}))
    return lock


def run_command(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = MAINS[command](argv)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line(case: Case, env: Env, tmp_path, capsys, monkeypatch):
    out, watched = _prepare_output(case, env, tmp_path)
    lock = _hold_lock(out) if case.out == "locked" else None
    argv = _resolve(case.args, env, out)
    before = _snapshot(watched)
    try:
        code, stdout, stderr = run_command(case.command, argv, capsys)
    finally:
        if lock is not None:
            lock.release()

    assert "Traceback" not in stderr, stderr
    assert code == case.code, f"exit {code}, stderr: {stderr}"
    lines = stderr.strip().splitlines()
    if case.code != 0:
        assert len(lines) == 1, f"expected one line, got: {stderr!r}"
        assert lines[0].startswith(f"ptychopinn {case.command}: error: "), lines[0]
        assert case.phrase in lines[0], lines[0]
        assert stdout == ""
    else:
        assert sum(case.phrase in line for line in lines) == 1, stderr
    if case.code != 0 or case.quiet_success:
        assert _snapshot(watched) == before
    if case.code != 0 and case.out == "absent":
        assert not out.exists(), "a refused run created its output directory"


def test_the_table_covers_every_command_and_many_cases():
    assert len(CASES) >= 60
    assert {c.command for c in CASES} == {"train", "infer", "simulate"}
    assert len({c.id for c in CASES}) == len(CASES)
    # every message phrase is specific (not just a flag name) for most cases
    assert sum(len(c.phrase) >= 20 for c in CASES) >= 0.6 * len(CASES)


def test_memory_shortfall_while_loading_is_refused(env, monkeypatch, capsys, tmp_path):
    """A file whose arrays exceed the free memory is refused before np.load allocates."""
    import ptychopinn.resources as resources

    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 1000)
    code, stdout, stderr = run_command(
        "train", _resolve(train_args(overwrite=False), env, tmp_path / "out"), capsys)
    assert code == 2 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert re.search(r"loading .*good\.npz needs about [\d.]+ MiB of memory but only 1000 B "
                     r"is available; the arrays in the file declare", line), line


def test_warnings_are_printed_once(env, capsys, tmp_path):
    """A run rebuilds its configs several times; each warning still shows once."""
    argv = _resolve(train_args("--num-workers", "1", "--disable_mlflow", overwrite=False),
                    env, tmp_path / "out")
    code, _, stderr = run_command("train", argv, capsys)
    assert code == 0, stderr
    assert stderr.count("num_workers > 0 with deterministic mode") == 1
    assert stderr.count("--disable_mlflow is deprecated") == 1
    assert "Traceback" not in stderr


def test_unwritable_probe_leaves_nothing_behind(tmp_path):
    from ptychopinn._io import check_output_dir

    check_output_dir(tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []

