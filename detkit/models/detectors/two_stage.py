"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head
(MMDET_SEMANTICS §12).

Training: the RPN sees copies of the samples with every label 0 and returns
its losses (``loss_rpn_cls``, ``loss_rpn_bbox``) plus proposals from the
detached outputs of the same forward pass (``train_cfg.rpn_proposal``);
the RoI head adds ``loss_cls``, ``acc`` and ``loss_bbox``. Inference:
proposals with ``test_cfg.rpn`` in resized-image pixels, then detections
with ``test_cfg.rcnn``, rescaled to the original image.
"""
import collections
import copy
import warnings
from typing import Tuple

import torch
from mmengine.config import ConfigDict
from torch import Tensor

from ...registry import MODELS
from .base import BaseDetector
from .checks import check_neck_in_channels


def zero_label_copies(batch_data_samples) -> list:
    """Deep copies of the samples whose ground-truth labels are all 0: the
    RPN learns "object", not classes."""
    copies = copy.deepcopy(batch_data_samples)
    for sample in copies:
        sample.gt_instances.labels = torch.zeros_like(
            sample.gt_instances.labels)
    return copies


def rename_prefix(state_dict, old: str, new: str):
    """A copy of ``state_dict`` with keys ``old.*`` renamed ``new.*`` when it
    has ``old.*`` keys but no ``new.*`` key (also in ``_metadata``)."""
    old_keys = [k for k in state_dict if k.startswith(old + '.')]
    if not old_keys or any(k.startswith(new + '.') for k in state_dict):
        return state_dict

    def rename(mapping):
        renamed = collections.OrderedDict()
        for key, value in mapping.items():
            if key == old or key.startswith(old + '.'):
                key = new + key[len(old):]
            renamed[key] = value
        return renamed

    result = rename(state_dict)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        result._metadata = rename(metadata)
    return result


def rename_prefix_in_place(state_dict: dict, prefix: str, old: str,
                     new: str) -> None:
    """``rename_prefix`` for keys under ``prefix`` of a (sub)state_dict that
    ``nn.Module._load_from_state_dict`` is about to read."""
    local = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix)}
    renamed = rename_prefix(local, old, new)
    if renamed is local:
        return
    for key in local:
        del state_dict[prefix + key]
    for key, value in renamed.items():
        state_dict[prefix + key] = value


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
        data_preprocessor, init_cfg, skip_nonfinite: see BaseDetector.
    """

    def __init__(self,
                 backbone: dict,
                 neck=None,
                 rpn_head=None,
                 roi_head=None,
                 train_cfg=None,
                 test_cfg=None,
                 data_preprocessor=None,
                 init_cfg=None,
                 skip_nonfinite: bool = False):
        super().__init__(
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg,
            skip_nonfinite=skip_nonfinite)
        self.backbone = MODELS.build(backbone)
        check_neck_in_channels(self.backbone, neck)
        if neck is not None:
            self.neck = MODELS.build(neck)
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

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Backbone (and neck) features of a ``(B, 3, H, W)`` batch."""
        x = self.backbone(batch_inputs)
        if self.with_neck:
            x = self.neck(x)
        return x

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
                x, zero_label_copies(batch_data_samples),
                proposal_cfg=proposal_cfg)
            for key in list(rpn_losses):
                # A generic dense head's loss_cls must not collide with the
                # RoI head's.
                if 'loss' in key and 'rpn' not in key:
                    rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
            losses.update(rpn_losses)
        else:
            rpn_results_list = self._proposals(x, batch_data_samples)
        losses.update(
            self.roi_head.loss(x, rpn_results_list, batch_data_samples))
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
