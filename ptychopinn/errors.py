"""The two kinds of failure every workflow reports, so callers (the command lines, the
Ptychodus adapter) can react without knowing which backend raised them.

``InputError``: the input is wrong and the user can fix it; raised before any long work
starts (command lines: one line, exit code 2). ``RuntimeFault``: the work started and
failed (command lines: one line, exit code 1).
"""

from __future__ import annotations

__all__ = ["InputError", "RuntimeFault"]


class InputError(ValueError):
    """Bad input (configuration, data, model file, setup); the message says what to fix."""


class RuntimeFault(RuntimeError):
    """A run that started failed (e.g. the loss became NaN); the message says why."""
