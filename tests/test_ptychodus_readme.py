"""README's Ptychodus section: the steps in order, the screenshots, the Qt system packages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _section() -> str:
    readme = (REPO / 'README.md').read_text()
    start = readme.index('\n## Ptychodus\n')
    end = readme.index('\n## ', start + 1)
    return readme[start:end]


def test_steps_from_a_loaded_scan_to_a_reconstruction_are_in_order():
    section = _section()
    steps = ['1. **Load the data.**', '2. **Export the training data.**', '3. **Train.**',
             '4. **Infer.**']
    positions = [section.index(step) for step in steps]
    assert positions == sorted(positions)
    assert 'Export Training Data...' in section and 'Load Model...' in section


def test_screenshots_exist_are_small_and_all_referenced():
    section = _section()
    referenced = re.findall(r'!\[[^\]]*\]\((docs/[^)]+\.png)\)', section)
    on_disk = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'docs').glob('ptychodus_*.png'))
    assert sorted(referenced) == on_disk
    assert len(on_disk) == 6
    for path in on_disk:
        data = (REPO / path).read_bytes()
        assert data.startswith(b'\x89PNG'), path
        assert len(data) < 150_000, path
    # the last one is the reconstruction, after the steps that make it
    assert referenced[-1] == 'docs/ptychodus_6_reconstruction.png'
    assert section.index(referenced[-1]) > section.index('4. **Infer.**')


def _debian_package(soname: str) -> str:
    """``libxcb-icccm.so.4`` -> ``libxcb-icccm4``, ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``."""
    name, version = re.fullmatch(r'(.+)\.so\.(\d+)', soname).groups()
    name = name.lower()
    return f'{name}-{version}' if name[-1].isdigit() else f'{name}{version}'


def test_the_qt_xcb_system_packages_are_named():
    section = _section()
    apt = re.search(r'apt-get install ([^`]+)```', section, re.S)
    assert apt is not None
    packages = set(apt[1].replace('\\', ' ').split())
    assert {'libxcb-icccm4', 'libxcb-keysyms1', 'libxcb-xinerama0', 'libxkbcommon-x11-0'} <= packages

    # every X library the installed Qt xcb platform links to is in the list
    qtcore = pytest.importorskip('PyQt5.QtCore')
    qt_lib = Path(qtcore.__file__).parent / 'Qt5' / 'lib' / 'libQt5XcbQpa.so.5'
    if not qt_lib.is_file() or shutil.which('ldd') is None:
        pytest.skip('no Qt xcb library or no ldd here')
    linked = re.findall(r'^\s*(lib(?:xcb|xkbcommon|X11-xcb)[\w-]*\.so\.\d+)', subprocess.run(
        ['ldd', str(qt_lib)], capture_output=True, text=True, check=True).stdout, re.M)
    needed = {_debian_package(soname) for soname in linked} - {'libxcb1', 'libxkbcommon0'}
    assert needed and needed <= packages, needed - packages
