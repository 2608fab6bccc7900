"""PtychoPINN core: configuration, the NPZ data contract, grouping, simulation, metrics
and the backend dispatcher. Pure numpy/scipy: importing it never imports torch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptychopinn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
