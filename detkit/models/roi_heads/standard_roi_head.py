"""The RoI stage of Faster R-CNN: assign proposals to ground truths, sample
RoIs, pool their features and run the box head (MMDET_SEMANTICS §11).

Training, per batch:

1. Proposals (``<= max_per_img`` per image, resized-image pixels) are
   padded to the batch's largest count and assigned to the ground truths in
   one batched ``MaxIoUAssigner`` call.
2. Each image is sampled by ``RandomSampler.sample`` (the counts differ per
   image), which prepends the ground truths as proposals; the RoIs of an
   image are its positives then its negatives.
3. RoI pooling, the box head and the losses run once over all RoIs of all
   images.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ...registry import MODELS, TASK_UTILS
from ...structures import bbox2roi
from ..utils import empty_instances, pad_instances, unpack_gt_instances


def pad_proposals(proposals: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """``(B, N, 4)`` proposals zero-padded to the largest count and their
    ``(B, N)`` bool validity."""
    counts = [len(p) for p in proposals]
    num = max(counts, default=0)
    device = proposals[0].device
    padded = torch.zeros((len(counts), num, 4), device=device)
    valid = torch.zeros((len(counts), num), dtype=torch.bool, device=device)
    for i, (props, count) in enumerate(zip(proposals, counts)):
        padded[i, :count] = props
        valid[i, :count] = True
    return padded, valid


@MODELS.register_module()
class StandardRoIHead(BaseModule):
    """Box-only RoI head (no mask branch, no shared head).

    Args:
        bbox_roi_extractor: MODELS config (``SingleRoIExtractor``).
        bbox_head: MODELS config (``Shared2FCBBoxHead``).
        train_cfg: ``assigner``, ``sampler``, ``pos_weight`` (the
            detector's ``train_cfg.rcnn``).
        test_cfg: ``score_thr``, ``nms``, ``max_per_img`` (the detector's
            ``test_cfg.rcnn``).
        mask_roi_extractor, mask_head, shared_head: must be None.
    """

    def __init__(self,
                 bbox_roi_extractor: Optional[dict] = None,
                 bbox_head: Optional[dict] = None,
                 mask_roi_extractor: Optional[dict] = None,
                 mask_head: Optional[dict] = None,
                 shared_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        for name, cfg in (('mask_roi_extractor', mask_roi_extractor),
                          ('mask_head', mask_head),
                          ('shared_head', shared_head)):
            if cfg is not None:
                raise ValueError(
                    f'StandardRoIHead: {name} is not supported by detkit '
                    f'(boxes only); remove model.roi_head.{name}')
        if bbox_roi_extractor is None or bbox_head is None:
            raise ValueError('StandardRoIHead needs bbox_roi_extractor and '
                             'bbox_head configs (model.roi_head.*)')
        self.train_cfg = ConfigDict(train_cfg) if train_cfg else None
        self.test_cfg = ConfigDict(test_cfg) if test_cfg else None
        self.bbox_roi_extractor = MODELS.build(bbox_roi_extractor)
        self.bbox_head = MODELS.build(bbox_head)
        if self.train_cfg:
            self.bbox_assigner = TASK_UTILS.build(self.train_cfg['assigner'])
            self.bbox_sampler = TASK_UTILS.build(self.train_cfg['sampler'])

    @property
    def with_bbox(self) -> bool:
        return True

    @property
    def with_mask(self) -> bool:
        return False

    @property
    def with_shared_head(self) -> bool:
        return False

    # ------------------------------------------------------------ forward
    def _bbox_forward(self, x: Sequence[Tensor], rois: Tensor) -> dict:
        """``cls_score (R, C + 1)``, ``bbox_pred (R, 4C)`` and the pooled
        ``bbox_feats (R, C_feat, 7, 7)`` of ``rois (R, 5)``."""
        bbox_feats = self.bbox_roi_extractor(
            x[:self.bbox_roi_extractor.num_inputs], rois)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        return dict(
            cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def forward(self, x: Sequence[Tensor], rpn_results_list: List,
                batch_data_samples=None) -> tuple:
        """Raw head outputs for all proposals (the ``'tensor'`` mode):
        ``(cls_score, bbox_pred)``."""
        rois = bbox2roi([res.bboxes for res in rpn_results_list])
        results = self._bbox_forward(x, rois)
        return results['cls_score'], results['bbox_pred']

    # ------------------------------------------------------------- train
    def sample(self, rpn_results_list: List[InstanceData],
               batch_gt_instances: List[InstanceData],
               batch_gt_instances_ignore=None) -> list:
        """One ``SamplingResult`` per image (batched assignment, per-image
        sampling)."""
        if self.train_cfg is None:
            raise ValueError('StandardRoIHead: training needs train_cfg '
                             '(the detector\'s train_cfg.rcnn with assigner '
                             'and sampler)')
        proposals = [res.bboxes.detach() for res in rpn_results_list]
        device = proposals[0].device
        if hasattr(self.bbox_assigner, 'assign_batch'):
            priors, priors_valid = pad_proposals(proposals)
            gt_bboxes, gt_labels, gt_valid = pad_instances(
                batch_gt_instances, device)
            ignore = ignore_valid = None
            if batch_gt_instances_ignore is not None and any(
                    ign is not None and len(ign) > 0
                    for ign in batch_gt_instances_ignore):
                ignore, _, ignore_valid = pad_instances(
                    batch_gt_instances_ignore, device, with_labels=False)
            assign = self.bbox_assigner.assign_batch(
                priors, gt_bboxes, gt_labels, gt_valid=gt_valid,
                priors_valid=priors_valid, gt_bboxes_ignore=ignore,
                ignore_valid=ignore_valid)
            assign_results = []
            for i, props in enumerate(proposals):
                result = assign.for_image(i)
                count = len(props)
                result.gt_inds = result.gt_inds[:count]
                result.max_overlaps = result.max_overlaps[:count]
                result.labels = result.labels[:count]
                assign_results.append(result)
        else:
            ignores = batch_gt_instances_ignore or [None] * len(proposals)
            assign_results = [
                self.bbox_assigner.assign(
                    InstanceData(priors=props), gts, ign)
                for props, gts, ign in zip(proposals, batch_gt_instances,
                                           ignores)
            ]
        return [
            self.bbox_sampler.sample(result, InstanceData(priors=props), gts)
            for result, props, gts in zip(assign_results, proposals,
                                          batch_gt_instances)
        ]

    def loss(self, x: Tuple[Tensor], rpn_results_list: List[InstanceData],
             batch_data_samples) -> dict:
        """``loss_cls``, ``acc`` and ``loss_bbox`` of the sampled RoIs.

        Args:
            x: FPN features, per level ``(B, C, H_l, W_l)``.
            rpn_results_list: per image ``bboxes (N_i, 4)`` proposals in the
                resized input's pixels.
            batch_data_samples: with ``gt_instances``.
        """
        gts, ignores, _ = unpack_gt_instances(batch_data_samples)
        sampling_results = self.sample(rpn_results_list, gts, ignores)
        return self.bbox_loss(x, sampling_results)['loss_bbox']

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: list) -> dict:
        """Forward all sampled RoIs at once; ``loss_bbox`` holds the loss
        dict (mmdetection's layout)."""
        rois = bbox2roi([res.priors for res in sampling_results])
        results = self._bbox_forward(x, rois)
        targets = self.bbox_head.loss_and_target(
            cls_score=results['cls_score'],
            bbox_pred=results['bbox_pred'],
            rois=rois,
            sampling_results=sampling_results,
            rcnn_train_cfg=self.train_cfg)
        results.update(loss_bbox=targets['loss_bbox'], rois=rois)
        return results

    # ------------------------------------------------------------ predict
    def predict(self,
                x: Tuple[Tensor],
                rpn_results_list: List[InstanceData],
                batch_data_samples,
                rescale: bool = False) -> List[InstanceData]:
        """Detections per image: ``bboxes (K, 4)`` (original-image pixels
        with ``rescale``), ``scores (K,)``, ``labels (K,)``."""
        metas = [sample.metainfo for sample in batch_data_samples]
        return self.predict_bbox(
            x, metas, rpn_results_list, self.test_cfg, rescale=rescale)

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: List[InstanceData],
                     rcnn_test_cfg: Optional[ConfigDict],
                     rescale: bool = False) -> List[InstanceData]:
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.size(0) == 0:
            return [empty_instances(rois.device) for _ in proposals]
        results = self._bbox_forward(x, rois)
        counts = [len(p) for p in proposals]
        bbox_pred = results['bbox_pred']
        return self.bbox_head.predict_by_feat(
            rois=rois.split(counts),
            cls_scores=results['cls_score'].split(counts),
            bbox_preds=(bbox_pred.split(counts) if bbox_pred is not None else
                        [None] * len(counts)),
            batch_img_metas=batch_img_metas,
            rcnn_test_cfg=rcnn_test_cfg,
            rescale=rescale)
