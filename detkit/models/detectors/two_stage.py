"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head
(docs/detectors.md, docs/faster_rcnn.md).

Training: the RPN head (class-agnostic targets, so the samples are passed
as they are) returns its losses, named ``loss_rpn_cls`` / ``loss_rpn_bbox``
by RPNHead and ``rpn_`` + key by another dense head (``use_as_rpn`` at
construction), plus proposals from the detached outputs of the same
forward pass (``train_cfg.rpn_proposal``); the RoI head adds ``loss_cls``,
``acc`` and ``loss_bbox``. Inference: proposals with ``test_cfg.rpn`` in
resized-image pixels, then detections with ``test_cfg.rcnn``, rescaled to
the original image.
"""
import warnings

from mmengine.config import ConfigDict
from torch import Tensor

from ...registry import MODELS
from .base import BaseDetector
from .state_dict_renames import rename_prefix, rename_prefix_in_place


@MODELS.register_module()
class TwoStageDetector(BaseDetector):
    """Backbone, optional neck, ``rpn_head`` and ``roi_head``.

    Args:
        backbone, neck: MODELS configs.
        rpn_head: MODELS config; built with ``num_classes=1``,
            ``train_cfg.rpn`` and ``test_cfg.rpn``.
        roi_head: MODELS config; built with ``train_cfg.rcnn`` and
            ``test_cfg.rcnn``.
        train_cfg: ``rpn``, ``rpn_proposal`` (proposal settings during
            training; default ``test_cfg.rpn``) and ``rcnn``.
        test_cfg: ``rpn`` and ``rcnn``.
        **kwargs: ``data_preprocessor``, ``init_cfg``, ``skip_nonfinite``
            (:class:`BaseDetector`).
    """

    def __init__(self,
                 backbone: dict,
                 neck=None,
                 rpn_head=None,
                 roi_head=None,
                 train_cfg=None,
                 test_cfg=None,
                 **kwargs):
        super().__init__(backbone=backbone, neck=neck, **kwargs)
        train_cfg = ConfigDict(train_cfg) if train_cfg else None
        test_cfg = ConfigDict(test_cfg) if test_cfg else None
        if rpn_head is not None:
            rpn_head = dict(rpn_head)
            if rpn_head.get('num_classes', 1) != 1:
                warnings.warn(f'{type(self).__name__}: rpn_head.num_classes '
                              f'is {rpn_head["num_classes"]}; an RPN is '
                              'class-agnostic, so it is set to 1')
            rpn_head.update(
                num_classes=1,
                train_cfg=train_cfg.get('rpn') if train_cfg else None,
                test_cfg=test_cfg.get('rpn') if test_cfg else None)
            self.rpn_head = MODELS.build(rpn_head)
            # Whatever dense head is the RPN learns "object" and prefixes
            # its loss names with rpn_ (RPNHead does both by itself).
            if hasattr(self.rpn_head, 'use_as_rpn'):
                self.rpn_head.use_as_rpn()
        if roi_head is not None:
            roi_head = dict(roi_head)
            roi_head.update(
                train_cfg=train_cfg.get('rcnn') if train_cfg else None,
                test_cfg=test_cfg.get('rcnn') if test_cfg else None)
            self.roi_head = MODELS.build(roi_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    @property
    def with_rpn(self) -> bool:
        return getattr(self, 'rpn_head', None) is not None

    @property
    def with_roi_head(self) -> bool:
        return getattr(self, 'roi_head', None) is not None

    def revise_state_dict(self, state_dict):
        """Checkpoints of an RPN hold its head as ``bbox_head.*``: load
        them into ``rpn_head.*`` (mmdetection does the same)."""
        return rename_prefix(state_dict, 'bbox_head', 'rpn_head')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_prefix_in_place(state_dict, prefix, 'bbox_head', 'rpn_head')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _proposals(self, x, batch_data_samples):
        """Test-time proposals (resized-image pixels), or the samples' own
        ``proposals`` for a detector without an RPN."""
        if self.with_rpn:
            return self.rpn_head.predict(x, batch_data_samples, rescale=False)
        if batch_data_samples[0].get('proposals', None) is None:
            raise ValueError(f'{type(self).__name__} has no rpn_head, so '
                             'every data sample needs precomputed '
                             '`proposals`')
        return [sample.proposals for sample in batch_data_samples]

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> dict:
        """``loss_rpn_cls, loss_rpn_bbox, loss_cls, acc, loss_bbox``."""
        x = self.extract_feat(batch_inputs)
        losses = dict()
        if self.with_rpn:
            proposal_cfg = self.train_cfg.get('rpn_proposal',
                                              self.test_cfg.rpn)
            rpn_losses, rpn_results_list = self.rpn_head.loss_and_predict(
                x, batch_data_samples, proposal_cfg=proposal_cfg)
            losses.update(rpn_losses)
        else:
            rpn_results_list = self._proposals(x, batch_data_samples)
        roi_losses = self.roi_head.loss(x, rpn_results_list,
                                        batch_data_samples)
        clash = sorted(losses.keys() & roi_losses.keys())
        if clash:
            raise ValueError(
                f'{type(self).__name__}: the rpn_head '
                f'({type(self.rpn_head).__name__}) and the roi_head both '
                f'return {clash}; the RPN\'s losses must have names of '
                "their own (RPNHead's are loss_rpn_cls and loss_rpn_bbox)")
        losses.update(roi_losses)
        return losses

    def predict(self, batch_inputs: Tensor, batch_data_samples,
                rescale: bool = True) -> list:
        """Data samples with ``pred_instances``; ``rescale`` maps boxes to
        the original images."""
        x = self.extract_feat(batch_inputs)
        rpn_results_list = self._proposals(x, batch_data_samples)
        results_list = self.roi_head.predict(
            x, rpn_results_list, batch_data_samples, rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results_list)

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None):
        """``((cls_score, bbox_pred), )`` of the RoI head on the test
        proposals."""
        x = self.extract_feat(batch_inputs)
        rpn_results_list = self._proposals(x, batch_data_samples)
        return (self.roi_head.forward(x, rpn_results_list,
                                      batch_data_samples), )
