"""Start Ptychodus (GUI or ``-b`` batch mode) with the PtychoPINN library registered.

Ptychodus 1.7 hard-codes its reconstructor libraries in ``ModelCore.__init__`` and its
settings panels and Processing-view controller in ``ControllerCore.__init__``; it has no
plugin hook for either. Both look the classes up as module globals when they run, so
:func:`install` replaces, at runtime and without touching files on disk:

* ``ptychodus.model.core.PtychoPINNReconstructorLibrary`` (Ptychodus's own PtychoPINN
  slot, which needs the TensorFlow ``ptycho`` package) with
  :class:`~ptychopinn_ptychodus.library.PtychoPINNReconstructorLibrary`, so
  ``ModelCore`` builds ours, lists it in the algorithm selector and routes
  ``reconstruct`` / ``train`` / model I/O to it;
* ``ptychodus.model.core.ProcessingCore`` with a subclass
  (:func:`~ptychopinn_ptychodus.model_hooks.processing_core_class`) that selects
  ``ptychopinn_pinn`` when the configured algorithm is not available (Ptychodus's default
  is pty-chi's LSQML) and checks our actions before Ptychodus starts a task
  (:class:`~ptychopinn_ptychodus.model_hooks.PtychoPINNProcessingAPI`);
* ``ptychodus.model.core.PtychoPINNTorchReconstructorLibrary`` with a stand-in that, when
  Ptychodus's PtychoPINN-Torch integration has nothing to offer, registers no settings
  (:func:`~ptychopinn_ptychodus.model_hooks.ptychopinn_torch_library`);
* GUI only: ``ptychodus.controller.core.PtychoPINNViewControllerFactory`` with ours (the
  settings panel under the selector) and ``ptychodus.controller.core.ProcessingController``
  with a subclass (:func:`~ptychopinn_ptychodus.controller.processing_controller_class`:
  Infer only with a model, buttons refreshed when a task ends, epoch and loss in the
  progress bar).

The replacements keep the replaced classes' constructor signatures. The algorithm keys
are ``ptychopinn_pinn`` and ``ptychopinn_supervised`` (``[Processing] Algorithm`` in a
settings file). Anything but Ptychodus 1.7.x is refused with
:class:`UnsupportedPtychodusVersionError` before Ptychodus starts.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
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
_TORCH_LIBRARY_HOOK = ('ptychodus.model.core', 'PtychoPINNTorchReconstructorLibrary')
_VIEW_HOOK = ('ptychodus.controller.core', 'PtychoPINNViewControllerFactory')
_CONTROLLER_HOOK = ('ptychodus.controller.core', 'ProcessingController')

_originals: dict[tuple[str, str], Any] = {}
_wrappers: dict[tuple[tuple[str, str], Any], Any] = {}  # (hook, original) -> replacement


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


def _original(hook: tuple[str, str]) -> Any:
    """What Ptychodus itself has at ``hook`` (also while our replacement is installed)."""
    if hook in _originals:
        return _originals[hook]

    module_name, attribute = hook
    module = importlib.import_module(module_name)

    if not hasattr(module, attribute):
        raise UnsupportedPtychodusVersionError(
            f'{module_name}.{attribute} is missing from this Ptychodus '
            f'({version("ptychodus")}); the PtychoPINN launcher cannot register its library'
        )

    return getattr(module, attribute)


def _replace(hook: tuple[str, str], replacement: Any) -> None:
    original = _original(hook)
    module_name, attribute = hook
    _originals.setdefault(hook, original)
    setattr(importlib.import_module(module_name), attribute, replacement)


def _replace_wrapping(hook: tuple[str, str], make: Callable[[Any], Any]) -> None:
    """Replace ``hook`` by ``make(original)``, built once per original (idempotent)."""
    original = _original(hook)
    key = (hook, original)

    if key not in _wrappers:
        _wrappers[key] = make(original)

    _replace(hook, _wrappers[key])


def install(*, gui: bool = True) -> None:
    """Register the PtychoPINN library (and with ``gui``, its panel and controller) in Ptychodus.

    Idempotent; affects ModelCore / ControllerCore instances created afterwards.
    """
    check_ptychodus_version()
    from .library import PtychoPINNReconstructorLibrary
    from .model_hooks import processing_core_class, ptychopinn_torch_library

    _replace(_MODEL_HOOK, PtychoPINNReconstructorLibrary)
    _replace_wrapping(_PROCESSING_HOOK, processing_core_class)
    _replace_wrapping(_TORCH_LIBRARY_HOOK, ptychopinn_torch_library)

    if gui:
        from .controller import processing_controller_class
        from .view import PtychoPINNViewControllerFactory

        _replace(_VIEW_HOOK, PtychoPINNViewControllerFactory)
        _replace_wrapping(_CONTROLLER_HOOK, processing_controller_class)


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
