"""High-level APIs: build a detector and run it on images."""
from .det_inferencer import DetInferencer
from .image_check import check_images
from .inference import (build_test_pipeline, check_device,
                        inference_detector, init_detector,
                        optimize_for_inference)

__all__ = [
    'init_detector', 'inference_detector', 'build_test_pipeline',
    'DetInferencer', 'optimize_for_inference', 'check_images', 'check_device'
]
