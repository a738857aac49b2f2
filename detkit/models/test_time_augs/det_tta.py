"""``DetTTAModel``: one detection per object from several views of an image.

``TestTimeAug`` turns each test image into views (scales, flips); the
dataloader batches view ``v`` of every image together, and
mmengine's ``BaseTTAModel.test_step`` runs the wrapped detector once per
view. :meth:`DetTTAModel.merge_preds` then merges, for each image:

1. the boxes of every view, which the detector already rescaled to the
   original image, are un-flipped with the view's ``flip_direction`` inside
   ``ori_shape`` (horizontal: ``x1 = w - x2'``, ``x2 = w - x1'``; vertical
   likewise with ``h`` and y; diagonal both) — see
   :func:`merge_aug_bboxes`;
2. boxes, scores and labels of all views are concatenated;
3. ``batched_nms`` by label with ``tta_cfg.nms`` (boxes of different
   classes never suppress each other) keeps the best of each cluster, by
   descending score;
4. the first ``tta_cfg.max_per_img`` are kept.

The merged ``pred_instances`` go into the first view's data sample (its
metainfo, ``img_id`` included, is what evaluation reads). An image without
any detection in any view keeps the first view's empty prediction.

The merge is per image (each has its own number of boxes per view, and
NMS groups must not mix images); it runs once per test image, off any
training path.
"""
from typing import List, Optional, Sequence

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor

from detkit.registry import MODELS
from detkit.structures import bbox_flip
from ..layers.nms import batched_nms


def merge_aug_bboxes(aug_bboxes: Sequence[Tensor],
                     aug_scores: Optional[Sequence[Tensor]],
                     img_metas: Sequence[dict]):
    """Map each view's boxes back to the unflipped original image and
    concatenate them.

    Args:
        aug_bboxes: per view, ``(N_v, 4)`` ``x1, y1, x2, y2`` boxes in
            original-image pixels of the (possibly flipped) view.
        aug_scores: per view, ``(N_v,)``; or None.
        img_metas: per view, its metainfo: ``ori_shape`` ``(h, w)``,
            ``flip`` and ``flip_direction`` (False / None when the view's
            pipeline had no flip).

    Returns:
        ``(sum N_v, 4)`` boxes, and with ``aug_scores`` the ``(sum N_v,)``
        scores as a second value.
    """
    recovered = []
    for bboxes, meta in zip(aug_bboxes, img_metas):
        if meta.get('flip', False):
            bboxes = bbox_flip(bboxes, meta['ori_shape'],
                               meta['flip_direction'])
        recovered.append(bboxes)
    bboxes = torch.cat(recovered, dim=0)
    if aug_scores is None:
        return bboxes
    return bboxes, torch.cat(list(aug_scores), dim=0)


@MODELS.register_module()
class DetTTAModel(BaseTTAModel):
    """Merge a detector's predictions over test-time views.

    Args:
        module: the detector (a config dict or a built model).
        tta_cfg: ``dict(nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100)``: the NMS applied across views and the number
            of detections kept per image.
        data_preprocessor: replaces the detector's when given (mmengine's
            ``BaseTTAModel`` rule).
    """

    def __init__(self, module, tta_cfg: Optional[dict] = None,
                 data_preprocessor=None):
        if isinstance(module, dict):
            module = dict(module)
            if data_preprocessor is not None:
                module['data_preprocessor'] = data_preprocessor
            module = MODELS.build(module)
        super().__init__(module=module)
        if (not isinstance(tta_cfg, dict) or 'nms' not in tta_cfg
                or 'max_per_img' not in tta_cfg):
            raise ValueError(
                'DetTTAModel needs tta_cfg=dict(nms=dict(type=\'nms\', '
                'iou_threshold=0.5), max_per_img=100) (the NMS across '
                f'views and the detections kept per image), got {tta_cfg!r}')
        self.tta_cfg = tta_cfg

    def merge_preds(self, data_samples_list: List[list]) -> list:
        """``data_samples_list[i][v]``: view ``v`` of image ``i``; returns
        one data sample per image."""
        return [self._merge_single_sample(samples)
                for samples in data_samples_list]

    def _merge_single_sample(self, data_samples: list):
        preds = [s.pred_instances for s in data_samples]
        bboxes, scores = merge_aug_bboxes([p.bboxes for p in preds],
                                          [p.scores for p in preds],
                                          [s.metainfo for s in data_samples])
        labels = torch.cat([p.labels for p in preds], dim=0)
        merged = data_samples[0]
        if bboxes.numel() == 0:
            return merged
        dets, keep = batched_nms(bboxes, scores, labels, self.tta_cfg['nms'])
        max_per_img = self.tta_cfg['max_per_img']
        dets, keep = dets[:max_per_img], keep[:max_per_img]
        results = InstanceData()
        results.bboxes = dets[:, :4]
        results.scores = dets[:, 4]
        results.labels = labels[keep]
        merged.pred_instances = results
        return merged
