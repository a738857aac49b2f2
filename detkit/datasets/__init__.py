"""Datasets, samplers and transforms; importing this registers them."""
from . import transforms
from .base_det_dataset import BaseDetDataset, DatasetSampleError
from .coco import COCO_CLASSES, CocoDataset
from .samplers import AspectRatioBatchSampler
from .synthetic_shapes import SHAPES_CLASSES, generate_shapes_dataset
from .voc import VOC_CLASSES, VOCDataset

__all__ = [
    'transforms', 'BaseDetDataset', 'DatasetSampleError', 'CocoDataset',
    'COCO_CLASSES', 'VOCDataset', 'VOC_CLASSES', 'AspectRatioBatchSampler',
    'SHAPES_CLASSES', 'generate_shapes_dataset'
]
