"""The ``PtychoPINN`` reconstructor library for Ptychodus."""

from __future__ import annotations

from collections.abc import Iterator

from ptychodus.api.reconstruct import Reconstructor, ReconstructorLibrary
from ptychodus.api.settings import SettingsRegistry

from .reconstructor import PtychoPINNReconstructor
from .settings import PtychoPINNSettings

__all__ = ['LIBRARY_NAME', 'LOGGER_NAME', 'PtychoPINNReconstructorLibrary', 'algorithm_key']

LIBRARY_NAME = 'PtychoPINN'
"""Shown in the algorithm list; Ptychodus splits algorithm keys on '_', so none here."""

LOGGER_NAME = 'ptychopinn_ptychodus'
"""Ptychodus attaches its processing-log handler here; our module loggers are children."""


def algorithm_key(reconstructor_name: str) -> str:
    """The ``[Processing] Algorithm`` value selecting a reconstructor, e.g. ``ptychopinn_pinn``."""
    return f'{LIBRARY_NAME.casefold()}_{reconstructor_name.casefold()}'


class PtychoPINNReconstructorLibrary(ReconstructorLibrary):
    """Reconstructors ``PINN`` (unsupervised, physics loss) and ``Supervised``.

    Registers the PtychoPINN settings groups in ``settings_registry``. The constructor
    signature matches Ptychodus's own reconstructor libraries, so the launcher can put
    this class in their place; ``is_developer_mode_enabled`` is accepted and unused.
    """

    def __init__(
        self, settings_registry: SettingsRegistry, is_developer_mode_enabled: bool = False
    ) -> None:
        super().__init__(LOGGER_NAME)
        self.settings = PtychoPINNSettings.create(settings_registry)
        self.pinn = PtychoPINNReconstructor('PINN', 'pinn', self.settings)
        self.supervised = PtychoPINNReconstructor('Supervised', 'supervised', self.settings)

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter((self.pinn, self.supervised))
