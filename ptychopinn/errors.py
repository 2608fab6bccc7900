"""The two kinds of failure every workflow reports, so callers (the command lines, the
Ptychodus adapter) can react without knowing which backend raised them.

* :class:`InputError` (a ``ValueError``): the input is wrong and the user can fix it --
  a flag, a file, a model, an output location, a resource the input would need.  Raised
  before any long work starts (command lines: one line, exit code 2).
* :class:`RuntimeFault` (a ``RuntimeError``): the work started and failed although the
  input was valid -- the loss became NaN, the disk filled up (command lines: one line,
  exit code 1).  Nothing already on disk is lost.

Every error class a user can cause derives from one of the two, so a command line
catches exactly these two types.  Warnings a user should read are :class:`InputWarning`.
``specs/errors.md`` lists every bad input and fault and what each one gets.
"""

from __future__ import annotations

__all__ = ["InputError", "InputWarning", "OutputLocationError", "RuntimeFault", "SaveError"]


class InputError(ValueError):
    """Bad input (configuration, data, model file, setup); the message says what to fix."""


class RuntimeFault(RuntimeError):
    """A run that started failed (e.g. the loss became NaN); the message says why."""


class InputWarning(UserWarning):
    """Input that is accepted but probably not what the user meant (the message says why
    and how to fix it)."""


class OutputLocationError(InputError):
    """An output path that cannot be used: a file, under a file, not writable, holding
    an earlier run, or in use by another run."""


class SaveError(RuntimeFault):
    """Writing a result failed (disk full, file too large, I/O error); the previous file
    at that path is intact and no temporary file is left."""
