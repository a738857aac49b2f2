"""Small reusable layers: conv blocks, norm/activation builders, NMS."""
from .conv_module import (ConvModule, DepthwiseSeparableConvModule,
                          build_activation_layer, build_norm_layer)
from .fuse_conv_bn import count_batchnorms, fuse_conv_bn
from .nms import batched_nms, multiclass_nms, nms, soft_nms
from .roi_align import RoIAlign
from .scale import Scale

__all__ = [
    'ConvModule', 'DepthwiseSeparableConvModule', 'build_norm_layer',
    'build_activation_layer', 'nms', 'soft_nms', 'batched_nms',
    'multiclass_nms',
    'RoIAlign', 'fuse_conv_bn', 'count_batchnorms', 'Scale'
]
