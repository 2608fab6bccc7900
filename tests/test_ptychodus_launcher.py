"""The ``ptychopinn-ptychodus`` launcher: version gate, registration, batch mode end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('ptychodus')

import ptychodus.model.core as ptychodus_model_core  # noqa: E402
from ptychodus.api.io import StandardFileLayout, load_product  # noqa: E402
from ptychopinn_ptychodus import launcher  # noqa: E402
from ptychopinn_ptychodus.errors import UnsupportedPtychodusVersionError  # noqa: E402
from ptychopinn_ptychodus.library import PtychoPINNReconstructorLibrary  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    # one intra-op thread: the test machine's few cores are shared by parallel runs
    env = dict(os.environ, QT_QPA_PLATFORM='offscreen', OMP_NUM_THREADS='1')
    return subprocess.run(
        [sys.executable, '-m', 'ptychopinn_ptychodus', *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize('installed', ['1.6.3', '2.0.0', '1.70.0'])
def test_unsupported_ptychodus_is_refused(monkeypatch, installed):
    monkeypatch.setattr(launcher, 'version', lambda name: installed)
    with pytest.raises(UnsupportedPtychodusVersionError, match=f'Ptychodus {installed}'):
        launcher.check_ptychodus_version()


def test_main_reports_an_unsupported_ptychodus_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(launcher, 'version', lambda name: '1.5.0')
    assert launcher.main(['-b', 'reconstruct', '-i', '.', '-o', '.']) == 2
    error = capsys.readouterr().err
    assert 'supports Ptychodus 1.7.x' in error and '1.5.0' in error
    assert ptychodus_model_core.PtychoPINNReconstructorLibrary is not PtychoPINNReconstructorLibrary


def test_supported_version_is_accepted():
    assert launcher.check_ptychodus_version().startswith('1.7.')


def test_missing_hook_is_reported(monkeypatch):
    monkeypatch.delattr(ptychodus_model_core, 'PtychoPINNReconstructorLibrary')
    with pytest.raises(UnsupportedPtychodusVersionError, match='PtychoPINNReconstructorLibrary'):
        launcher.install(gui=False)


def test_install_is_idempotent_and_uninstall_restores():
    original = ptychodus_model_core.PtychoPINNReconstructorLibrary
    original_processing = ptychodus_model_core.ProcessingCore
    try:
        launcher.install(gui=False)
        processing = ptychodus_model_core.ProcessingCore
        launcher.install(gui=False)
        assert ptychodus_model_core.PtychoPINNReconstructorLibrary is PtychoPINNReconstructorLibrary
        assert ptychodus_model_core.ProcessingCore is processing
        assert processing.__mro__[1] is original_processing
    finally:
        launcher.uninstall()
    assert ptychodus_model_core.PtychoPINNReconstructorLibrary is original
    assert ptychodus_model_core.ProcessingCore is original_processing


@pytest.mark.parametrize(
    ('argv', 'batch'),
    [
        (['-b', 'train', '-i', 'a', '-o', 'b'], True),
        (['--batch', 'reconstruct'], True),
        (['--batch=train'], True),
        (['-btrain'], True),
        (['-s', 'settings.ini'], False),
        ([], False),
    ],
)
def test_batch_mode_detection(argv, batch):
    assert launcher._is_batch(argv) is batch


@pytest.mark.slow
def test_console_script_runs_ptychodus(tmp_path):
    # The script of the environment running the tests (an inactive venv's bin is not on
    # PATH, and another installation's script may be).
    script = shutil.which('ptychopinn-ptychodus', path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip('the ptychopinn-ptychodus console script is not installed')
    result = subprocess.run([script, '--version'], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert launcher.check_ptychodus_version() in result.stdout


@pytest.mark.slow
def test_batch_train_then_reconstruct_end_to_end(tmp_path):
    pytest.importorskip('torch')
    pytest.importorskip('ptychopinn_torch.train')
    from ptychopinn_ptychodus.synthetic import simulated_reconstruct_input, write_standard_layout

    parameters, _ = simulated_reconstruct_input(N=64, n_positions=16)
    input_dir, train_dir, recon_dir = tmp_path / 'in', tmp_path / 'trained', tmp_path / 'recon'
    write_standard_layout(input_dir, parameters)
    (input_dir / StandardFileLayout.SETTINGS).write_text(
        '[Processing]\nAlgorithm = ptychopinn_pinn\n\n'
        '[PINNModel]\nNumFiltersScale = 1\n\n'
        '[PINNTraining]\nNumEpochs = 1\nNumGroups = 0\nBatchSize = 4\n\n'
        '[PINNExecution]\nAccelerator = cpu\nLogger = none\n'
    )

    # -b train reads diffraction.h5 + product.h5 (no exported NPZ here)
    result = _run('-b', 'train', '-i', str(input_dir), '-o', str(train_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (train_dir / 'ptychopinn_model.zip').is_file()
    assert (train_dir / 'model.zip').is_file()

    # -b reconstruct loads <input>/model.zip
    (input_dir / 'model.zip').write_bytes((train_dir / 'model.zip').read_bytes())
    result = _run('-b', 'reconstruct', '-i', str(input_dir), '-o', str(recon_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # exactly one result product, under the standard layout's name
    assert sorted(p.name for p in recon_dir.iterdir()) == ['product.h5']
    final_path = recon_dir / 'product.h5'
    product_in = load_product(input_dir / StandardFileLayout.PRODUCT)
    product_out = load_product(final_path)
    assert product_out.object_.get_geometry() == product_in.object_.get_geometry()
    changed = product_out.object_.get_layer(0) != product_in.object_.get_layer(0)
    assert changed.sum() > 0.2 * changed.size
    np.testing.assert_array_equal(product_out.probes.get_array(), product_in.probes.get_array())
