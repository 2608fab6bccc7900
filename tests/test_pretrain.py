"""Pretraining on synthetic scans made with an experiment's own probe, geometry and dose
(issue 8): ``ptychopinn.simulate.simulate_pretraining_scans``, ``ptychopinn pretrain`` end
to end, fine-tuning from its bundle, and the one-line errors before any work.

Tiny settings throughout: N = 64, 36 positions, 1-2 objects, 1 epoch, 8 groups.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ptychopinn._io import file_sha256
from ptychopinn.data import RawData
from ptychopinn.grouping import mean_total_counts
from ptychopinn.simulate import (
    SimulationError,
    check_pretraining_inputs,
    far_field,
    simulate_dataset,
    simulate_pretraining_scans,
)

pytestmark = pytest.mark.usefixtures("restore_torch_determinism")

TINY = ["--max_epochs", "1", "--n_filters_scale", "1", "--n_images", "8", "--batch_size", "8",
        "--val_split", "0", "--accelerator", "cpu", "--disable-checkpointing"]


@pytest.fixture(scope="module")
def experiment() -> RawData:
    """The 'experiment': sub-pixel positions, a Gaussian probe (not the simulator's
    default aperture), 2e5 photons per pattern, no labels."""
    raw = simulate_dataset(object_kind="natural", probe_kind="gaussian", N=64, n_positions=36,
                           scan_kind="spiral", step_px=7.0, jitter_px=0.4, nphotons=2e5,
                           seed=9)
    # Positions far from the origin: the synthetic objects must not be this large.
    return dataclasses.replace(raw, labels=None, object_guess=None,
                               xcoords=raw.xcoords + 500.25, ycoords=raw.ycoords + 300.5)


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory, experiment) -> Path:
    path = tmp_path_factory.mktemp("experiment") / "scan.npz"
    experiment.save(path)
    return path


# ------------------------------------------------------------------ what is simulated
def test_simulated_scans_have_the_experiments_probe_geometry_and_dose(experiment):
    scans = simulate_pretraining_scans(experiment, n_objects=3,
                                       object_kinds=("dead_leaves", "lines"), seed=5,
                                       with_labels=True)
    counts = mean_total_counts(experiment.diffraction)
    assert len(scans) == 3
    for raw in scans:
        # The probe is the experiment's up to one real, positive (photon) scale.
        ratio = raw.probe_guess / experiment.probe_guess
        scale = float(np.median(ratio.real))
        assert scale > 0
        np.testing.assert_allclose(raw.probe_guess, scale * experiment.probe_guess,
                                   rtol=1e-5, atol=1e-6 * np.abs(raw.probe_guess).max())
        # The photon scale matches: noise-free counts average exactly the experiment's
        # mean total counts, the noisy ones within Poisson noise.
        expected = np.abs(far_field(raw.probe_guess.astype(np.complex128)
                                    * raw.labels.astype(np.complex128))) ** 2
        assert expected.sum(axis=(1, 2)).mean() == pytest.approx(counts, rel=1e-5)
        assert mean_total_counts(raw.diffraction) == pytest.approx(counts, rel=0.01)
        # The geometry: the experiment's positions moved by one whole-pixel shift...
        shift_x = raw.xcoords - experiment.xcoords
        shift_y = raw.ycoords - experiment.ycoords
        assert np.ptp(shift_x) < 1e-9 and np.ptp(shift_y) < 1e-9
        assert shift_x[0] == round(shift_x[0]) and shift_y[0] == round(shift_y[0])
        # ... into an object just large enough for every patch (1 px margins).
        height, width = raw.object_guess.shape
        assert raw.xcoords.min() >= 33 and raw.xcoords.max() <= width - 1 - 33
        assert width <= np.ptp(raw.xcoords) + 64 + 6 and height <= np.ptp(raw.ycoords) + 70
    # Kinds in turn, a new object each time, reproducible from the seed.
    objects = [raw.object_guess for raw in scans]
    assert not np.allclose(objects[0], objects[2])
    again = simulate_pretraining_scans(experiment, 3, ("dead_leaves", "lines"), seed=5)
    np.testing.assert_array_equal(again[1].diffraction, scans[1].diffraction)
    assert again[0].labels is None  # labels only when asked
    # A given dose overrides the experiment's.
    dim = simulate_pretraining_scans(experiment, 1, nphotons=1e3, seed=5)[0]
    assert mean_total_counts(dim.diffraction) == pytest.approx(1e3, rel=0.05)


@pytest.mark.parametrize(("change", "kwargs", "fragment"), [
    ("zero_probe", {}, "zero everywhere"),
    ("counts", {}, "outside the range"),
    (None, {"n_objects": 0}, "n_objects must be an integer >= 1"),
    (None, {"object_kinds": ()}, "object_kinds is empty"),
    (None, {"object_kinds": ("lines", "waves")}, "'waves' is not supported"),
    (None, {"nphotons": 1e20}, "outside the range"),
    ("memory", {}, "simulate fewer objects"),
])
def test_pretraining_inputs_are_refused_before_simulating(experiment, monkeypatch, change,
                                                          kwargs, fragment):
    scan = experiment
    if change == "zero_probe":
        scan = dataclasses.replace(scan, probe_guess=np.zeros_like(scan.probe_guess))
    elif change == "counts":
        scan = dataclasses.replace(scan, diffraction=scan.diffraction * np.float32(1e6))
    elif change == "memory":
        monkeypatch.setattr("ptychopinn.resources.available_memory_bytes", lambda: 1000)
    with pytest.raises(SimulationError if change not in ("counts",) else ValueError,
                       match=fragment):
        check_pretraining_inputs(scan, **kwargs)


# ------------------------------------------------------------------ the command
def _run(argv, capsys):
    from ptychopinn.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's way out for bad input
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pretrain_command_end_to_end_then_fine_tune(tmp_path, experiment_file, experiment,
                                                    capsys):
    from ptychopinn_torch.bundle import read_bundle

    pre = tmp_path / "pre"
    code, out, err = _run(["pretrain", "--probe-from", str(experiment_file), "--output_dir",
                           str(pre), "--n-objects", "2", "--object-kinds", "lines,dead_leaves",
                           "--seed", "7", "--logger", "none", *TINY], capsys)
    assert code == 0, err
    bundle = pre / "ptychopinn_model.zip"
    assert out.splitlines()[-2:] == [f"bundle_path: {bundle}",
                                     f"bundle_sha256: {file_sha256(bundle)}"]
    assert "simulating" in err and "pretraining: simulated 2 scans of 36 patterns" in err
    summary = read_bundle(bundle).training_summary
    record = summary["pretraining"]
    assert record["probe_source"] == str(experiment_file)
    assert record["probe_source_sha256"] == file_sha256(experiment_file)
    assert record["object_kinds"] == ["lines", "dead_leaves"]
    assert record["object_seeds"] == [7, 10] and record["noise_seeds"] == [9, 12]
    assert record["n_objects"] == 2 and record["n_positions_per_scan"] == 36
    assert record["nphotons"] == pytest.approx(mean_total_counts(experiment.diffraction))
    assert record["nphotons_from"] == "mean total counts of the probe scan"
    assert len(summary["scans"]) == 2 and summary["epochs_completed"] == 1

    # Fine-tuning from that bundle on the experiment: learning rate x fine_tune_gamma.
    fine = tmp_path / "fine"
    code, out, err = _run(["train", "--init-model", str(bundle), "--train_data_file",
                           str(experiment_file), "--output_dir", str(fine), "--quiet",
                           "--fine_tune_gamma", "0.25", *TINY], capsys)
    assert code == 0, err
    fine_summary = read_bundle(fine / "ptychopinn_model.zip").training_summary
    assert fine_summary["parent_bundle_sha256"] == file_sha256(bundle)
    with (fine / "lightning_logs" / "version_0" / "metrics.csv").open() as fh:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(fh)
                 if row.get("learning_rate")]
    assert rates == [pytest.approx(1e-3 * 0.25)]


def test_pretrain_quiet_prints_only_the_result(tmp_path, experiment_file, capsys):
    code, out, err = _run(["pretrain", "--probe-from", str(experiment_file), "--output_dir",
                           str(tmp_path / "q"), "--n-objects", "1", "--quiet", "--logger",
                           "none", *TINY], capsys)
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[0].startswith("bundle_path: ")


def test_python_api_pretrains_from_a_path(tmp_path, experiment_file, tiny_training_config,
                                          cpu_execution):
    from ptychopinn import workflows

    config = tiny_training_config(nepochs=1, nphotons=5e4)
    result = workflows.pretrain_with_backend(str(experiment_file), config,
                                             cpu_execution(logger="none", seed=3),
                                             n_objects=1, object_kinds=["natural"])
    record = result.summary["pretraining"]
    assert result.bundle_path.is_file()
    assert record["probe_source"] == str(experiment_file)
    assert record["probe_source_sha256"] == file_sha256(experiment_file)
    assert record["object_kinds"] == ["natural"] and record["object_seeds"] == [3]
    assert record["nphotons"] == 5e4 and record["nphotons_from"] == "nphotons"
    assert result.summary["mean_total_counts"] == pytest.approx(5e4, rel=0.02)


def _scan_without_probe(path: Path, experiment: RawData) -> None:
    arrays = experiment.to_arrays()
    del arrays["probeGuess"]
    np.savez(path, **arrays)


@pytest.mark.parametrize(("make", "extra", "fragment"), [
    ("missing", [], "no such file"),
    ("directory", [], "is a directory"),
    ("text", [], "not an .npz archive"),
    ("no_probe", [], "missing required key 'probeGuess'"),
    ("zero_probe", [], "zero everywhere"),
    ("counts", [], "outside the range PtychoPINN computes with"),
    ("ok", ["--n-objects", "0"], "--n-objects"),
    ("ok", ["--object-kinds", "lines,waves"], "expected comma-separated object kinds"),
    ("ok", ["--nphotons", "1e20"], "TrainingConfig.nphotons"),
    ("ok", ["--N", "128"], "the model uses N=128"),
    ("ok", ["--gridsize", "7"], "gridsize**2 = 49"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, experiment, experiment_file, capsys,
                                               make, extra, fragment):
    path = {"missing": tmp_path / "nope.npz", "directory": tmp_path}.get(make, experiment_file)
    if make == "text":
        path = tmp_path / "scan.npz"
        path.write_text("not an archive")
    elif make == "no_probe":
        path = tmp_path / "scan.npz"
        _scan_without_probe(path, experiment)
    elif make in ("zero_probe", "counts"):
        path = tmp_path / "scan.npz"
        changed = (dataclasses.replace(experiment, probe_guess=np.zeros((64, 64), np.complex64))
                   if make == "zero_probe" else
                   dataclasses.replace(experiment, diffraction=experiment.diffraction * 1e6))
        changed.save(path)
    out_dir = tmp_path / "out"
    code, out, err = _run(["pretrain", "--probe-from", str(path), "--output_dir", str(out_dir),
                           *TINY, *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ptychopinn pretrain: error: "), err
    assert fragment in lines[0]
    assert not out_dir.exists()  # nothing simulated, nothing written
