"""Errors raised by the Ptychodus adapter."""

from __future__ import annotations

__all__ = [
    'ModelNotLoadedError',
    'PtychodusInputError',
    'UnsupportedPtychodusVersionError',
]


class PtychodusInputError(ValueError):
    """Data handed over by Ptychodus (or found on disk) that PtychoPINN cannot use."""


class ModelNotLoadedError(RuntimeError):
    """Reconstruct or save was asked for before a model was trained or loaded."""


class UnsupportedPtychodusVersionError(RuntimeError):
    """The installed Ptychodus is not a release this adapter was written for."""
