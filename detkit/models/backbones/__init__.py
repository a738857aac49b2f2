"""Backbones: image (B, 3, H, W) -> tuple of feature maps, fine to coarse."""
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet
from .resnext import ResNeXt
from .ssd_vgg import SSDVGG

__all__ = ['ResNet', 'ResNeXt', 'SSDVGG', 'MobileNetV2']
