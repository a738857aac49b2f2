"""The last pipeline step: results dict -> model input and DetDataSample."""
from typing import Sequence

import numpy as np
import torch
from mmengine.structures import InstanceData

from detkit.registry import TRANSFORMS
from detkit.structures import DetDataSample
from .base import BaseTransform


@TRANSFORMS.register_module()
class PackDetInputs(BaseTransform):
    """Pack the image, the ground truth and the meta information.

    Returns ``dict(inputs=..., data_samples=...)``:

    - ``inputs``: contiguous ``(C, H, W)`` tensor of the image, same dtype
      (uint8 normally, float32 after PhotoMetricDistortion); a 2-D image
      gets one channel.
    - ``data_samples``: a :class:`DetDataSample` whose ``gt_instances``
      hold the boxes with ``gt_ignore_flags == 0`` (``bboxes`` float32
      ``(N, 4)``, ``labels`` int64 ``(N,)``) and ``ignored_instances`` the
      flagged ones (crowd, VOC difficult). Its metainfo holds each of
      ``meta_keys`` present in the results (absent ones are skipped, so a
      test pipeline without RandomFlip needs no ``flip`` key).
    """

    _FIELDS = (('gt_bboxes', 'bboxes', np.float32, (-1, 4)),
               ('gt_bboxes_labels', 'labels', np.int64, (-1, )))

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_id', 'img_path',
                                             'ori_shape', 'img_shape',
                                             'scale_factor', 'flip',
                                             'flip_direction')):
        self.meta_keys = tuple(meta_keys)

    @staticmethod
    def _image_to_tensor(img: np.ndarray) -> torch.Tensor:
        if img.ndim < 3:
            img = img[..., None]
        # A flipped or cropped view has odd strides: one numpy copy in CHW
        # order is cheaper than permuting a strided tensor.
        if not img.flags.c_contiguous:
            return torch.from_numpy(np.ascontiguousarray(
                img.transpose(2, 0, 1)))
        return torch.from_numpy(img).permute(2, 0, 1).contiguous()

    def transform(self, results: dict) -> dict:
        packed = dict()
        if 'img' in results:
            packed['inputs'] = self._image_to_tensor(results['img'])

        gt, ignored = InstanceData(), InstanceData()
        flags = results.get('gt_ignore_flags')
        if flags is not None:
            flags = np.asarray(flags, dtype=bool)
        for key, name, dtype, shape in self._FIELDS:
            if results.get(key) is None:
                continue
            value = np.asarray(results[key], dtype=dtype).reshape(shape)
            if flags is None:
                gt[name] = torch.from_numpy(value.copy())
            else:
                gt[name] = torch.from_numpy(value[~flags].copy())
                ignored[name] = torch.from_numpy(value[flags].copy())

        sample = DetDataSample()
        sample.gt_instances = gt
        sample.ignored_instances = ignored
        sample.set_metainfo(
            {k: results[k]
             for k in self.meta_keys if k in results})
        packed['data_samples'] = sample
        return packed

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
