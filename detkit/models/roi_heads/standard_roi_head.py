"""The RoI stage of Faster R-CNN: assign proposals to ground truths, sample
RoIs, pool their features and run the box head (docs/faster_rcnn.md).

Training is one batched program in the currency of the dense heads
(docs/anchor_head.md), with proposals as per-image priors:

1. Proposals (``<= max_per_img`` per image, resized-image pixels) are
   padded to ``(B, N, 4)`` with a ``(B, N)`` mask, ground truths to ``(B,
   G, 4)`` (:func:`pad_gts`), and assigned in one batched
   ``MaxIoUAssigner`` call.
2. With ``add_gt_as_proposals`` the candidates become ``[ground truths ;
   proposals]`` ``(B, G + N, 4)`` (:func:`prepend_gts`); the sampler draws
   ``(B, G + N)`` positive / negative masks (per image, in mmdetection's
   random order).
3. The RoIs are, image after image, its positives then its negatives
   (:meth:`BatchSamplingResult.roi_index`); RoI pooling (and the optional
   ``shared_head``, e.g. C4's ResNet stage 4) and the box head run once over
   all of them, and the box head's targets (``(B, G + N, ...)``, gathered
   in RoI order) give the losses.

The sampler is built with ``context=self`` and its ``sample_batch`` gets
the candidates (``priors``, ``gt_flags``) and ``feats``, so that a sampler
that scores candidates before choosing (OHEM) can run
``context._bbox_forward(feats, rois)`` and
``context.bbox_head.loss(..., reduction_override='none')`` on them. It
returns ``(pos_mask, neg_mask)`` ``(B, G + N)``; the RoI order is always
the one of step 3 (mmdetection sorts OHEM's picks by index too).
"""
from typing import List, Optional, Sequence, Tuple

from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ...registry import MODELS, TASK_UTILS
from ...structures import bbox2roi
from ..task_modules.samplers import BatchSamplingResult, prepend_gts
from ..utils import empty_instances, pad_boxes, pad_gts, unpack_gt_instances


@MODELS.register_module()
class StandardRoIHead(BaseModule):
    """Box-only RoI head (no mask branch).

    Args:
        bbox_roi_extractor: MODELS config (``SingleRoIExtractor``).
        bbox_head: MODELS config (``Shared2FCBBoxHead``).
        shared_head: optional MODELS config of layers between RoI pooling
            and the box head (C4 detectors: a ResNet stage).
        train_cfg: ``assigner``, ``sampler``, ``pos_weight`` (the
            detector's ``train_cfg.rcnn``).
        test_cfg: ``score_thr``, ``nms``, ``max_per_img`` (the detector's
            ``test_cfg.rcnn``).
        mask_roi_extractor, mask_head: must be None.
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
                          ('mask_head', mask_head)):
            if cfg is not None:
                raise ValueError(
                    f'StandardRoIHead: {name} is not supported by detkit '
                    f'(boxes only); remove model.roi_head.{name}')
        if bbox_roi_extractor is None or bbox_head is None:
            raise ValueError('StandardRoIHead needs bbox_roi_extractor and '
                             'bbox_head configs (model.roi_head.*)')
        self.train_cfg = ConfigDict(train_cfg) if train_cfg else None
        self.test_cfg = ConfigDict(test_cfg) if test_cfg else None
        if shared_head is not None:
            self.shared_head = MODELS.build(shared_head)
        self.bbox_roi_extractor = MODELS.build(bbox_roi_extractor)
        self.bbox_head = MODELS.build(bbox_head)
        if self.train_cfg:
            self.bbox_assigner = TASK_UTILS.build(self.train_cfg['assigner'])
            self.bbox_sampler = TASK_UTILS.build(
                self.train_cfg['sampler'], default_args=dict(context=self))

    @property
    def with_bbox(self) -> bool:
        return True

    @property
    def with_mask(self) -> bool:
        return False

    @property
    def with_shared_head(self) -> bool:
        return getattr(self, 'shared_head', None) is not None

    # ------------------------------------------------------------ forward
    def _bbox_forward(self, x: Sequence[Tensor], rois: Tensor) -> dict:
        """``cls_score (R, C + 1)``, ``bbox_pred (R, 4C)`` and the pooled
        ``bbox_feats (R, C_feat, h, w)`` of ``rois (R, 5)``."""
        bbox_feats = self.bbox_roi_extractor(
            x[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            bbox_feats = self.shared_head(bbox_feats)
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
               batch_gt_instances_ignore=None,
               feats: Optional[Sequence[Tensor]] = None
               ) -> BatchSamplingResult:
        """Assign and sample the whole batch (steps 1 and 2); indexing the
        result gives mmdetection's per-image ``SamplingResult``."""
        if self.train_cfg is None:
            raise ValueError('StandardRoIHead: training needs train_cfg '
                             '(the detector\'s train_cfg.rcnn with assigner '
                             'and sampler)')
        device = rpn_results_list[0].bboxes.device
        proposals, proposals_valid = pad_boxes(
            [res.bboxes.detach() for res in rpn_results_list], device)
        gts = pad_gts(batch_gt_instances, batch_gt_instances_ignore, device)
        assign = self.bbox_assigner.assign_batch(
            proposals, gts.bboxes, gts.labels, gt_valid=gts.valid,
            priors_valid=proposals_valid, gt_bboxes_ignore=gts.ignore_bboxes,
            ignore_valid=gts.ignore_valid)
        priors, priors_valid = proposals, proposals_valid
        gt_flags = priors_valid.new_zeros(priors_valid.shape)
        if self.bbox_sampler.add_gt_as_proposals and gts.bboxes.size(1):
            assign, priors, priors_valid, gt_flags = prepend_gts(
                assign, proposals, proposals_valid, gts.bboxes, gts.labels,
                gts.valid)
        pos_mask, neg_mask = self.bbox_sampler.sample_batch(
            assign, priors=priors, gt_flags=gt_flags, feats=feats)
        return BatchSamplingResult(
            priors, priors_valid, gt_flags, assign, pos_mask, neg_mask,
            gts.bboxes,
            avg_factor_with_neg=self.bbox_sampler.avg_factor_with_neg)

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
        sampling_results = self.sample(rpn_results_list, gts, ignores,
                                       feats=x)
        return self.bbox_loss(x, sampling_results)['loss_bbox']

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: BatchSamplingResult) -> dict:
        """Forward all sampled RoIs at once; ``loss_bbox`` holds the loss
        dict (mmdetection's layout)."""
        rois = sampling_results.rois()
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
