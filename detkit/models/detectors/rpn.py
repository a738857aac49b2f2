"""Region Proposal Network as a detector: its predictions are proposals
(``labels`` all 0), evaluated by proposal recall (docs/rpn.md)."""
import warnings

from ...registry import MODELS
from .single_stage import SingleStageDetector
from .state_dict_renames import rename_prefix, rename_prefix_in_place


@MODELS.register_module()
class RPN(SingleStageDetector):
    """Backbone, neck and an :class:`RPNHead`, held as ``bbox_head`` and
    built from ``rpn_head`` with ``train_cfg.rpn`` / ``test_cfg.rpn``. The
    head's targets are class-agnostic, so the samples' labels are never
    read.

    Checkpoints that name the head ``rpn_head.*`` (mmdetection's model zoo)
    load into ``bbox_head.*``. ``**kwargs``: ``data_preprocessor``,
    ``init_cfg``, ``skip_nonfinite`` (:class:`BaseDetector`).
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 rpn_head: dict,
                 train_cfg: dict,
                 test_cfg: dict,
                 **kwargs):
        rpn_head = dict(rpn_head)
        if rpn_head.get('num_classes', 1) != 1:
            warnings.warn(f'RPN: rpn_head.num_classes is '
                          f'{rpn_head["num_classes"]}; an RPN is '
                          'class-agnostic, so it is set to 1')
        rpn_head['num_classes'] = 1
        super().__init__(
            backbone,
            neck=neck,
            bbox_head=rpn_head,
            train_cfg=train_cfg['rpn'] if train_cfg is not None else None,
            test_cfg=test_cfg['rpn'],
            **kwargs)
        if hasattr(self.bbox_head, 'use_as_rpn'):
            # Class-agnostic targets; the head keeps its own loss names.
            self.bbox_head.use_as_rpn(rpn_loss_names=False)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def revise_state_dict(self, state_dict):
        """Rename ``rpn_head.*`` keys to ``bbox_head.*``."""
        return rename_prefix(state_dict, 'rpn_head', 'bbox_head')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_prefix_in_place(state_dict, prefix, 'rpn_head', 'bbox_head')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
