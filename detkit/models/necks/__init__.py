"""Necks: tuple of backbone maps -> tuple of pyramid levels for the head."""
from .fpn import FPN
from .ssd_neck import SSDNeck

__all__ = ['FPN', 'SSDNeck']
