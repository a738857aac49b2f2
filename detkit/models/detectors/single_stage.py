"""Single-stage detectors: backbone -> neck -> dense head."""
from ...registry import MODELS
from .base import BaseDetector


@MODELS.register_module()
class SingleStageDetector(BaseDetector):
    """Backbone, optional neck, and a dense ``bbox_head`` that predicts
    boxes directly from the features.

    ``train_cfg`` and ``test_cfg`` are handed to the head (assigner,
    sampler, NMS settings), as in mmdetection. ``**kwargs``:
    ``data_preprocessor``, ``init_cfg``, ``skip_nonfinite``
    (:class:`BaseDetector`).
    """

    def __init__(self,
                 backbone: dict,
                 neck=None,
                 bbox_head=None,
                 train_cfg=None,
                 test_cfg=None,
                 **kwargs):
        super().__init__(backbone=backbone, neck=neck, **kwargs)
        if bbox_head is None:
            raise ValueError(f'{type(self).__name__} needs a bbox_head '
                             'config (model.bbox_head)')
        bbox_head = dict(bbox_head)
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def loss(self, batch_inputs, batch_data_samples) -> dict:
        return self.bbox_head.loss(self.extract_feat(batch_inputs),
                                   batch_data_samples)

    def predict(self, batch_inputs, batch_data_samples,
                rescale: bool = True) -> list:
        """Data samples with ``pred_instances``; ``rescale`` maps boxes to
        the original images."""
        results = self.bbox_head.predict(
            self.extract_feat(batch_inputs),
            batch_data_samples,
            rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.bbox_head.forward(self.extract_feat(batch_inputs))
