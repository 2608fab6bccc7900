"""PtychoPINN as a Ptychodus reconstructor library (``PtychoPINN`` / ``PINN``, ``Supervised``).

Use from Python (notebooks)::

    from ptychodus.api.settings import SettingsRegistry
    from ptychopinn_ptychodus import PtychoPINNReconstructorLibrary

    library = PtychoPINNReconstructorLibrary(SettingsRegistry())
    pinn = library.pinn            # a ptychodus TrainableReconstructor

or start Ptychodus with the library registered: ``ptychopinn-ptychodus`` (GUI) or
``ptychopinn-ptychodus -b reconstruct|train -i DIR -o DIR`` (batch). The contract is in
``specs/reconstructor_api.md``. Importing this package does not import torch or Qt.
"""

from ptychopinn_ptychodus.errors import (
    ModelNotLoadedError,
    PtychodusInputError,
    UnsupportedPtychodusVersionError,
)
from ptychopinn_ptychodus.library import (
    LIBRARY_NAME,
    PtychoPINNReconstructorLibrary,
    algorithm_key,
)
from ptychopinn_ptychodus.reconstructor import PtychoPINNReconstructor
from ptychopinn_ptychodus.settings import PtychoPINNSettings, settings_to_configs

__all__ = [
    'LIBRARY_NAME',
    'ModelNotLoadedError',
    'PtychoPINNReconstructor',
    'PtychoPINNReconstructorLibrary',
    'PtychoPINNSettings',
    'PtychodusInputError',
    'UnsupportedPtychodusVersionError',
    'algorithm_key',
    'settings_to_configs',
]
