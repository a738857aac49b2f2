"""detkit: a modular, registry-based object-detection toolbox on mmengine."""
from .version import __version__

# Registers detkit's safe checkpoint loaders with mmengine, so that every
# way of loading weights (init_detector, load_from, Pretrained init_cfg,
# --resume) goes through them.
from . import engine  # noqa: E402,F401

__all__ = ['__version__']
