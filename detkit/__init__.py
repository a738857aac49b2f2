"""detkit: a modular, registry-based object-detection toolbox on mmengine."""
from .version import __version__

__all__ = ['__version__']
