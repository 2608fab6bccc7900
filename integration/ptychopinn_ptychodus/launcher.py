"""Start Ptychodus (GUI or ``-b`` batch mode) with the PtychoPINN library registered.

Ptychodus 1.7 hard-codes its reconstructor libraries in ``ModelCore.__init__`` and its
settings panels in ``ControllerCore.__init__``; it has no plugin hook for either. Both
look the classes up as module globals when they run, so :func:`install` replaces, at
runtime and without touching files on disk:

* ``ptychodus.model.core.PtychoPINNReconstructorLibrary`` (Ptychodus's own PtychoPINN
  slot, which needs the TensorFlow ``ptycho`` package) with
  :class:`~ptychopinn_ptychodus.library.PtychoPINNReconstructorLibrary`, so
  ``ModelCore`` builds ours, lists it in the algorithm selector and routes
  ``reconstruct`` / ``train`` / model I/O to it;
* ``ptychodus.model.core.ProcessingCore`` with a subclass that, after building, selects
  ``ptychopinn_pinn`` when the configured algorithm is not available (Ptychodus's
  default is pty-chi's LSQML; left alone, the selector would show PtychoPINN while a
  do-nothing placeholder is selected). A settings file naming an available algorithm
  still wins;
* ``ptychodus.controller.core.PtychoPINNViewControllerFactory`` with ours, so the
  settings panel under the selector shows the PtychoPINN settings (GUI only).

The replacements keep the replaced classes' constructor signatures. The algorithm keys
are ``ptychopinn_pinn`` and ``ptychopinn_supervised`` (``[Processing] Algorithm`` in a
settings file). Anything but Ptychodus 1.7.x is refused with
:class:`UnsupportedPtychodusVersionError` before Ptychodus starts.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .errors import UnsupportedPtychodusVersionError

__all__ = [
    'SUPPORTED_PTYCHODUS_SERIES',
    'check_ptychodus_version',
    'install',
    'is_installed',
    'main',
    'registered',
    'uninstall',
]

SUPPORTED_PTYCHODUS_SERIES = '1.7'

# (module, global name) pairs that install() replaces
_MODEL_HOOK = ('ptychodus.model.core', 'PtychoPINNReconstructorLibrary')
_PROCESSING_HOOK = ('ptychodus.model.core', 'ProcessingCore')
_VIEW_HOOK = ('ptychodus.controller.core', 'PtychoPINNViewControllerFactory')

_originals: dict[tuple[str, str], Any] = {}
_processing_subclasses: dict[type, type] = {}


def check_ptychodus_version() -> str:
    """Return the installed Ptychodus version; raise if it is not 1.7.x."""
    try:
        installed = version('ptychodus')
    except PackageNotFoundError as exc:
        raise UnsupportedPtychodusVersionError(
            'Ptychodus is not installed; install it with: pip install "ptychodus==1.7.*"'
        ) from exc

    parts = installed.split('.')

    if '.'.join(parts[:2]) != SUPPORTED_PTYCHODUS_SERIES:
        raise UnsupportedPtychodusVersionError(
            f'ptychopinn-ptychodus supports Ptychodus {SUPPORTED_PTYCHODUS_SERIES}.x, but '
            f'Ptychodus {installed} is installed; install a supported release with: '
            f'pip install "ptychodus=={SUPPORTED_PTYCHODUS_SERIES}.*"'
        )

    return installed


def _replace(hook: tuple[str, str], replacement: Any) -> None:
    module_name, attribute = hook
    module = importlib.import_module(module_name)

    if not hasattr(module, attribute):
        raise UnsupportedPtychodusVersionError(
            f'{module_name}.{attribute} is missing from this Ptychodus '
            f'({version("ptychodus")}); the PtychoPINN launcher cannot register its library'
        )

    current = getattr(module, attribute)

    if current is replacement:
        return

    _originals.setdefault(hook, current)
    setattr(module, attribute, replacement)


def _default_algorithm_processing_core(original: type) -> type:
    """``original`` (Ptychodus's ProcessingCore) selecting PtychoPINN when nothing valid is."""
    try:
        return _processing_subclasses[original]
    except KeyError:
        pass

    from .library import algorithm_key

    class ProcessingCoreWithPtychoPINNDefault(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            parameter = self.algorithm_parameter
            default = algorithm_key('PINN')
            available = set(parameter.available_reconstructors())

            if parameter.get_value() not in available and default in available:
                parameter.set_value(default)

    _processing_subclasses[original] = ProcessingCoreWithPtychoPINNDefault
    return ProcessingCoreWithPtychoPINNDefault


def install(*, gui: bool = True) -> None:
    """Register the PtychoPINN library (and with ``gui``, its settings panel) in Ptychodus.

    Idempotent; affects ModelCore / ControllerCore instances created afterwards.
    """
    check_ptychodus_version()
    from .library import PtychoPINNReconstructorLibrary

    _replace(_MODEL_HOOK, PtychoPINNReconstructorLibrary)
    processing_module = importlib.import_module(_PROCESSING_HOOK[0])
    original_processing_core = _originals.get(
        _PROCESSING_HOOK, getattr(processing_module, _PROCESSING_HOOK[1], None)
    )

    if original_processing_core is None:
        raise UnsupportedPtychodusVersionError(
            f'{_PROCESSING_HOOK[0]}.{_PROCESSING_HOOK[1]} is missing from this Ptychodus '
            f'({version("ptychodus")}); the PtychoPINN launcher cannot register its library'
        )

    _replace(_PROCESSING_HOOK, _default_algorithm_processing_core(original_processing_core))

    if gui:
        from .view import PtychoPINNViewControllerFactory

        _replace(_VIEW_HOOK, PtychoPINNViewControllerFactory)


def uninstall() -> None:
    """Put back whatever :func:`install` replaced."""
    for (module_name, attribute), original in list(_originals.items()):
        setattr(importlib.import_module(module_name), attribute, original)
        del _originals[module_name, attribute]


def is_installed() -> bool:
    """True while Ptychodus's ModelCore would build the PtychoPINN library."""
    from .library import PtychoPINNReconstructorLibrary

    module = sys.modules.get(_MODEL_HOOK[0])
    return module is not None and getattr(module, _MODEL_HOOK[1]) is PtychoPINNReconstructorLibrary


@contextmanager
def registered(*, gui: bool = False) -> Iterator[None]:
    """``with registered(): ModelCore(...)`` builds Ptychodus with our library, then restores."""
    already = set(_originals)
    install(gui=gui)

    try:
        yield
    finally:
        for hook in set(_originals) - already:
            module_name, attribute = hook
            setattr(importlib.import_module(module_name), attribute, _originals.pop(hook))


def _is_batch(argv: Sequence[str]) -> bool:
    return any(arg in ('-b', '--batch') or arg.startswith('--batch=') for arg in argv) or any(
        arg.startswith('-b') and len(arg) > 2 and not arg.startswith('--') for arg in argv
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``ptychopinn-ptychodus [ptychodus arguments]``: Ptychodus with PtychoPINN registered.

    Takes Ptychodus's own command line, e.g. ``-b train -i DIR -o DIR`` for batch mode
    or ``-s settings.ini`` for the GUI. Returns Ptychodus's exit code (2 when the
    installed Ptychodus is not supported).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    batch = _is_batch(args)

    try:
        install(gui=not batch)
    except UnsupportedPtychodusVersionError as exc:
        print(f'ptychopinn-ptychodus: error: {exc}', file=sys.stderr)
        return 2
    except ImportError as exc:  # PyQt5 missing: Ptychodus's own GUI needs it too
        print(f'ptychopinn-ptychodus: error: the GUI needs PyQt5 ({exc}); install it with: '
              'pip install PyQt5, or use batch mode (-b)', file=sys.stderr)
        return 2

    from ptychodus.__main__ import main as ptychodus_main

    saved_argv = sys.argv
    sys.argv = ['ptychopinn-ptychodus', *args]  # Ptychodus parses sys.argv itself

    try:
        return int(ptychodus_main())
    finally:
        sys.argv = saved_argv
