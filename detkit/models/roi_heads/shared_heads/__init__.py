"""Shared heads: layers between RoI pooling and the box head."""
from .res_layer import ResLayer

__all__ = ['ResLayer']
