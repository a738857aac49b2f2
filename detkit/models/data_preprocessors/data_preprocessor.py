"""Batch images for the detector: to device, RGB, normalise, pad, stack."""
import math
from typing import List, Optional, Sequence, Union

import torch
from mmengine.model import ImgDataPreprocessor

from detkit.registry import MODELS


@MODELS.register_module()
class DetDataPreprocessor(ImgDataPreprocessor):
    """mmengine's ``ImgDataPreprocessor`` plus the detection meta data.

    ``forward(dict(inputs=[(3, h_i, w_i) uint8, ...], data_samples=[...]))``
    does, per image and in this order: move to the model's device, reverse
    the channels (``bgr_to_rgb``), convert to float32, ``(x - mean) / std``
    (mean and std in the channel order after the reversal), then pad every
    image at the bottom/right with ``pad_value`` (after normalisation) to
    ``(ceil(max_h / d) * d, ceil(max_w / d) * d)`` with ``d =
    pad_size_divisor``, and stack to ``(B, 3, H, W)`` float32. Every data
    sample gets ``batch_input_shape = (H, W)`` and ``pad_shape =
    (ceil(h_i / d) * d, ceil(w_i / d) * d)`` of its own image; its
    instances (``gt_instances.bboxes`` ...) move to the device.

    Args:
        mean, std: per-channel statistics, or None for no normalisation.
        pad_size_divisor: ``d`` above.
        pad_value: value of padded pixels.
        pad_mask, mask_pad_value, pad_seg, seg_pad_value: padding of
            instance masks / semantic maps, which detkit does not produce;
            pad_mask and pad_seg must stay False.
        bgr_to_rgb, rgb_to_bgr: reverse the channel order.
        boxtype2tensor: accepted for config compatibility; detkit's boxes
            are already plain tensors.
        non_blocking: asynchronous host-to-device copies.
        batch_augments: configs of batch transforms (``MODELS``, e.g.
            ``BatchFixedSizePad``), applied in training to ``(inputs,
            data_samples)`` after the padding above; they may change
            ``batch_input_shape`` and ``pad_shape``.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 pad_size_divisor: int = 1,
                 pad_value: Union[float, int] = 0,
                 pad_mask: bool = False,
                 mask_pad_value: int = 0,
                 pad_seg: bool = False,
                 seg_pad_value: int = 255,
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 boxtype2tensor: bool = True,
                 non_blocking: Optional[bool] = False,
                 batch_augments: Optional[List[dict]] = None):
        if pad_mask or pad_seg:
            raise NotImplementedError(
                'DetDataPreprocessor: detkit has no instance masks or '
                'semantic maps to pad; set pad_mask=False and pad_seg=False')
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError('DetDataPreprocessor: bgr_to_rgb and rgb_to_bgr '
                             'cannot both be True')
        if (mean is None) != (std is None):
            raise ValueError('DetDataPreprocessor: give both mean and std, '
                             'or neither')
        if not isinstance(pad_size_divisor, int) or pad_size_divisor < 1:
            raise ValueError('DetDataPreprocessor: pad_size_divisor must be '
                             f'a positive int, got {pad_size_divisor!r}')
        super().__init__(
            mean=mean,
            std=std,
            pad_size_divisor=pad_size_divisor,
            pad_value=pad_value,
            bgr_to_rgb=bgr_to_rgb,
            rgb_to_bgr=rgb_to_bgr,
            non_blocking=non_blocking)
        self.pad_mask = pad_mask
        self.mask_pad_value = mask_pad_value
        self.pad_seg = pad_seg
        self.seg_pad_value = seg_pad_value
        self.boxtype2tensor = boxtype2tensor
        if batch_augments is not None:
            batch_augments = torch.nn.ModuleList(
                [MODELS.build(aug) for aug in batch_augments])
        self.batch_augments = batch_augments

    def _pad_shapes(self, inputs) -> List[tuple]:
        """``(h, w)`` of each image padded alone to the divisor."""
        d = self.pad_size_divisor
        if isinstance(inputs, torch.Tensor):  # already stacked (B, C, H, W)
            shape = (math.ceil(inputs.shape[2] / d) * d,
                     math.ceil(inputs.shape[3] / d) * d)
            return [shape] * inputs.shape[0]
        return [(math.ceil(img.shape[1] / d) * d,
                 math.ceil(img.shape[2] / d) * d) for img in inputs]

    def forward(self, data: dict, training: bool = False) -> dict:
        """``data``: ``dict(inputs=list of (3, h, w) tensors or a (B, 3, H,
        W) tensor, data_samples=list of DetDataSample or None)``.

        Returns ``dict(inputs=(B, 3, H, W) float32 on the model's device,
        data_samples=...)``.
        """
        if 'inputs' not in data:
            raise KeyError('DetDataPreprocessor expects dict(inputs=..., '
                           f'data_samples=...), got keys {sorted(data)}')
        pad_shapes = self._pad_shapes(data['inputs'])
        data = super().forward(data=data, training=training)
        inputs, data_samples = data['inputs'], data['data_samples']
        if data_samples is not None:
            batch_input_shape = tuple(inputs.shape[-2:])
            for sample, pad_shape in zip(data_samples, pad_shapes):
                sample.set_metainfo({
                    'batch_input_shape': batch_input_shape,
                    'pad_shape': pad_shape
                })
        if training and self.batch_augments is not None:
            for augment in self.batch_augments:
                inputs, data_samples = augment(inputs, data_samples)
        return dict(inputs=inputs, data_samples=data_samples)
