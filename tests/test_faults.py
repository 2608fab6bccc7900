"""Faults that need a real process (specs/errors.md, "Faults"): a training killed with
SIGKILL and resumed; a bundle save killed half-way; a disk that is full (a file-size
limit, RLIMIT_FSIZE); two trainings started on one output directory.

Each asserts the user-visible contract: one line and the right exit code, nothing that
was on disk lost, no temporary left for good.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ptychopinn.cli import train as train_cli
from ptychopinn.errors import SaveError
from ptychopinn_torch.bundle import BUNDLE_FILENAME, read_bundle, save_bundle

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp*"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, tiny_raw) -> Path:
    path = tmp_path_factory.mktemp("faults") / "train.npz"
    tiny_raw.save(path)
    return path


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--train_data_file", str(data), "--output_dir", str(out), "--n_images", "8",
            "--batch_size", "8", "--gridsize", "1", "--n_filters_scale", "1",
            "--accelerator", "cpu", "--logger", "none", "--quiet", *extra]


def _start_training(data: Path, out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ptychopinn", "train", *_train_argv(data, out, *extra)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _wait_for(condition, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"process ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def _epochs_in(checkpoint: Path) -> int:
    ckpt = torch.load(checkpoint, weights_only=True)
    return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


def test_second_run_is_refused_then_a_sigkilled_run_resumes_with_every_epoch(
    data_file, tmp_path, capsys
):
    """One real training process: a second training on its directory is refused naming
    it; then it is killed with SIGKILL, and --resume finishes it."""
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    first = _start_training(data_file, out, "--max_epochs", "200")
    try:
        _wait_for(lambda: last.is_file() and _epochs_in(last) >= 2, first)
        with pytest.raises(SystemExit) as info:
            train_cli.main(_train_argv(data_file, out, "--max_epochs", "1", "--overwrite"))
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        line = err.strip()
        assert f"is in use by another training (process {first.pid} on " in line
        assert "ptychopinn train --train_data_file" in line  # the first run's command
        assert first.poll() is None  # the first run goes on, its checkpoints not wiped
        assert last.is_file()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (out / BUNDLE_FILENAME).exists()
    done = _epochs_in(last)  # complete: the checkpoint is written atomically

    # The killed run held the lock: the OS released it, so --resume may start.
    code = train_cli.main(_train_argv(data_file, out, "--resume", "--max_epochs",
                                      str(done + 1)))
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"bundle_path: {out / BUNDLE_FILENAME}" in stdout
    summary = read_bundle(out / BUNDLE_FILENAME).training_summary
    assert summary["epochs_completed"] == done + 1
    # the bundle's loss history covers the killed run's epochs and the resumed one
    assert len(summary["train_loss_history"]) == done + 1
    assert _temporaries(out) == []


_KILLED_SAVE = textwrap.dedent("""
    import sys, time, zipfile
    from pathlib import Path
    import numpy as np, torch
    from ptychopinn_torch.bundle import save_bundle

    real_writestr = zipfile.ZipFile.writestr

    def slow_writestr(self, name, data, *args, **kwargs):
        if name == "weights.pt":  # half the weights are on disk, then the process dies
            real_writestr(self, "partial", data[: len(data) // 2])
            self.fp.flush()
            Path(sys.argv[2]).touch()
            time.sleep(600)
        return real_writestr(self, name, data, *args, **kwargs)

    zipfile.ZipFile.writestr = slow_writestr
    save_bundle(sys.argv[1], state_dict={"w": torch.ones(100_000)},
                configs={"model": {"N": 64}}, intensity_scale=1.0,
                probe=np.ones((64, 64), np.complex64), training_summary={})
""")


def _bundle_inputs(value: float) -> dict:
    import numpy as np

    return {"state_dict": {"w": torch.full((1000,), value)}, "configs": {"model": {"N": 64}},
            "intensity_scale": 1.0, "probe": np.ones((64, 64), np.complex64),
            "training_summary": {"value": value}}


def test_bundle_save_killed_half_way_keeps_the_old_bundle(tmp_path):
    bundle = save_bundle(tmp_path / BUNDLE_FILENAME, **_bundle_inputs(1.0))
    before = _sha(bundle)
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(bundle), str(ready)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(ready.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert _sha(bundle) == before  # the old bundle is intact and readable
    assert read_bundle(bundle).training_summary == {"value": 1.0}
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".{BUNDLE_FILENAME}.")  # the killed save's
    # The next save removes the dead process's temporary and writes the new bundle.
    save_bundle(bundle, **_bundle_inputs(2.0))
    assert _temporaries(tmp_path) == []
    assert read_bundle(bundle).training_summary == {"value": 2.0}


def _limit_file_size(limit_bytes: int):
    def apply() -> None:  # runs in the child before exec; SIGXFSZ keeps its default
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_run(
    data_file, tmp_path
):
    out = tmp_path / "run"
    out.mkdir()
    bundle_before = _sha(save_bundle(out / BUNDLE_FILENAME, **_bundle_inputs(1.0)))
    # A checkpoint of this network is ~5.6 MB; everything written before it is tiny.
    process = _start_training(data_file, out, "--max_epochs", "1", "--overwrite",
                              preexec_fn=_limit_file_size(1_000_000))
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    # (Lightning's own banner lines may precede it; the failure itself is one line.)
    (line,) = [line for line in stderr.splitlines() if ": error:" in line]
    assert line.startswith("ptychopinn train: error: could not write ")
    assert ("checkpoints/last.ckpt: File too large; the file size limit (ulimit -f) is too "
            "small for it. Earlier files are intact") in line
    assert _sha(out / BUNDLE_FILENAME) == bundle_before  # the previous bundle stays
    assert _temporaries(out) == []


def test_disk_full_while_saving_the_bundle_keeps_the_previous_one(tmp_path):
    """The kernel's own refusal (RLIMIT_FSIZE -> EFBIG), in this process for speed."""
    bundle = save_bundle(tmp_path / BUNDLE_FILENAME, **_bundle_inputs(1.0))
    before = _sha(bundle)
    big = {**_bundle_inputs(2.0), "state_dict": {"w": torch.ones(1_000_000)}}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
    try:
        with pytest.raises(SaveError, match=r"could not write .*ptychopinn_model\.zip: File "
                                            r"too large; the file size limit"):
            save_bundle(bundle, **big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert _sha(bundle) == before
    assert _temporaries(tmp_path) == []
