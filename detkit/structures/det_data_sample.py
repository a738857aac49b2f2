"""The one record that travels from the dataset to the metric."""
from mmengine.structures import BaseDataElement, InstanceData


class DetDataSample(BaseDataElement):
    """Annotations, predictions and meta information of one image.

    Data fields (each an :class:`~mmengine.structures.InstanceData`):

    - ``gt_instances``: ``bboxes (N, 4)`` float32 x1y1x2y2 pixels of the
      current image, ``labels (N,)`` int64 in ``[0, num_classes)``.
    - ``ignored_instances``: boxes to ignore (crowd regions, VOC
      ``difficult``), same fields.
    - ``pred_instances``: ``bboxes (K, 4)``, ``scores (K,)``,
      ``labels (K,)``; in original-image pixels after ``rescale``.
    - ``proposals``: region proposals of a two-stage detector.

    Meta information (``metainfo``): ``img_id``, ``img_path``,
    ``ori_shape (h, w)``, ``img_shape (h, w)``, ``scale_factor (w_s, h_s)``,
    ``flip``, ``flip_direction``, ``pad_shape``, ``batch_input_shape``.
    """

    def _instance_property(name):  # noqa: N805 - a descriptor factory

        def fget(self):
            return getattr(self, f'_{name}')

        def fset(self, value):
            self.set_field(value, f'_{name}', dtype=InstanceData)

        def fdel(self):
            delattr(self, f'_{name}')

        return property(fget, fset, fdel, doc=f'``{name}`` (InstanceData)')

    gt_instances = _instance_property('gt_instances')
    ignored_instances = _instance_property('ignored_instances')
    pred_instances = _instance_property('pred_instances')
    proposals = _instance_property('proposals')
    del _instance_property


SampleList = list  # list[DetDataSample], for type hints
