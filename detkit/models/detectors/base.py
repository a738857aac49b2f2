"""The detector interface on mmengine's BaseModel (docs/detectors.md).

``forward(inputs, data_samples, mode)`` dispatches to ``loss`` (a dict of
named losses), ``predict`` (data samples with ``pred_instances``) or
``_forward`` (raw head outputs). The backbone and optional neck, and
``extract_feat`` over them, are built here once for every detector.
``train_step`` adds a guard against non-finite losses that names the
iteration, the loss term and the images.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from torch import Tensor

from ...registry import MODELS
from .checks import check_neck_in_channels


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


class BaseDetector(BaseModel):
    """Base of all detectors.

    Args:
        backbone: MODELS config of the backbone (None: the subclass builds
            its own).
        neck: MODELS config of the neck, or None.
        data_preprocessor: MODELS config of the data preprocessor.
        init_cfg: weight initialisation.
        skip_nonfinite: on a NaN/Inf loss, skip the optimizer step (logging
            a warning) instead of stopping the run.
    """

    def __init__(self,
                 backbone: Optional[dict] = None,
                 neck: Optional[dict] = None,
                 data_preprocessor=None,
                 init_cfg=None,
                 skip_nonfinite: bool = False):
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.skip_nonfinite = skip_nonfinite
        self.num_skipped_steps = 0
        if backbone is not None:
            self.build_backbone_and_neck(backbone, neck)

    @property
    def with_neck(self) -> bool:
        return getattr(self, 'neck', None) is not None

    @property
    def with_bbox(self) -> bool:
        return (getattr(self, 'bbox_head', None) is not None
                or getattr(self, 'roi_head', None) is not None)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``mode``: ``'loss'`` -> dict of losses, ``'predict'`` -> list of
        DetDataSample with ``pred_instances``, ``'tensor'`` -> head
        outputs."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f"Invalid mode {mode!r}: choose 'loss', "
                           "'predict' or 'tensor'")

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> dict:
        raise NotImplementedError

    def predict(self, batch_inputs: Tensor, batch_data_samples,
                rescale: bool = True) -> list:
        raise NotImplementedError

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None):
        raise NotImplementedError

    def build_backbone_and_neck(self, backbone: dict, neck=None) -> None:
        """Build ``self.backbone`` and, when ``neck`` is given,
        ``self.neck``, after checking that the neck's ``in_channels`` fit
        the backbone's outputs."""
        self.backbone = MODELS.build(backbone)
        check_neck_in_channels(self.backbone, neck)
        if neck is not None:
            self.neck = MODELS.build(neck)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Backbone (and neck) features of a ``(B, 3, H, W)`` batch."""
        x = self.backbone(batch_inputs)
        if self.with_neck:
            x = self.neck(x)
        return x

    @staticmethod
    def add_pred_to_datasample(data_samples, results_list) -> list:
        """Store each image's detections as ``pred_instances``."""
        for sample, results in zip(data_samples, results_list):
            sample.pred_instances = results
        return data_samples

    # ----------------------------------------------------------- training
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """mmengine's train step with a non-finite loss guard.

        All ranks agree on the decision (one all-reduce of a flag), so a
        NaN on one rank never leaves the others waiting in DDP's backward.
        """
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.parse_losses(losses)
        bad_terms = [
            name for name, value in log_vars.items()
            if not torch.isfinite(torch.as_tensor(value)).all()
        ]
        flag = torch.tensor(float(bool(bad_terms)), device=parsed_loss.device)
        if is_distributed():
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        if flag.item() > 0:
            self._handle_nonfinite(bad_terms, data, optim_wrapper)
            return log_vars
        optim_wrapper.update_params(parsed_loss)
        return log_vars

    def _handle_nonfinite(self, bad_terms: List[str], data,
                          optim_wrapper: OptimWrapper) -> None:
        message_hub = MessageHub.get_current_instance()
        iteration = message_hub.get_info('iter', None)
        img_ids = [
            sample.metainfo.get('img_id', sample.metainfo.get('img_path'))
            for sample in data.get('data_samples') or []
        ]
        where = (f'iteration {iteration + 1}'
                 if iteration is not None else 'this iteration')
        terms = ', '.join(bad_terms) if bad_terms else \
            'a loss on another rank'
        msg = (f'Non-finite loss at {where}: {terms} '
               f'(images in this batch: {img_ids}).')
        if not self.skip_nonfinite:
            raise NonFiniteLossError(
                msg + ' Training stopped. Lower the learning rate, add '
                'warm-up or gradient clipping (optim_wrapper.clip_grad), '
                'check these images\' annotations, or set '
                'model.skip_nonfinite=True to skip such steps.')
        self.num_skipped_steps += 1
        optim_wrapper.zero_grad()
        from mmengine.logging import print_log
        print_log(
            msg + f' Step skipped (skip_nonfinite=True; '
            f'{self.num_skipped_steps} skipped so far).',
            logger='current',
            level=30)
