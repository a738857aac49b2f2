"""Pascal VOC evaluation: per-class AP (or proposal recall) as a metric."""
from collections import OrderedDict

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement

from detkit.registry import METRICS
from .mean_ap import eval_map
from .np_boxes import as_numpy
from .recall import eval_recalls
from .table import format_table


@METRICS.register_module()
class VOCMetric(BaseMetric):
    """Pascal VOC AP with mmdetection's conventions.

    Boxes are compared with the VOC devkit's inclusive pixel convention
    (``use_legacy_coordinate``: widths and heights ``+1``), as mmdetection
    does; ``ignored_instances`` (``difficult`` objects) are neither true nor
    false positives.

    Args:
        iou_thrs (float | list[float]): IoU thresholds; one ``AP<iou>`` key
            each (``AP50``), and ``mAP`` is their mean. ``iou_thr`` is
            accepted as an alias.
        scale_ranges (list[tuple], optional): ``(min, max)`` ranges of
            ``sqrt(box area)``; adds ``AP50_<min>-<max>`` keys.
        metric (str): ``'mAP'`` or ``'recall'`` (proposal recall,
            ``recall@<num>@<iou>`` and ``AR@<num>`` keys).
        proposal_nums (Sequence[int]): numbers of proposals for ``recall``.
        eval_mode (str): ``'11points'`` (VOC2007) or ``'area'`` (VOC2010+).
        collect_device, prefix: as for mmengine's ``BaseMetric``; keys are
            prefixed ``pascal_voc/`` by default.
    """

    default_prefix = 'pascal_voc'

    def __init__(self,
                 iou_thrs=0.5,
                 scale_ranges=None,
                 metric='mAP',
                 proposal_nums=(100, 300, 1000),
                 eval_mode='11points',
                 collect_device='cpu',
                 prefix=None,
                 backend_args=None,
                 iou_thr=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if iou_thr is not None:
            iou_thrs = iou_thr
        self.iou_thrs = [iou_thrs] if isinstance(iou_thrs,
                                                 float) else list(iou_thrs)
        if metric not in ('mAP', 'recall'):
            raise KeyError(f"VOCMetric: metric must be 'mAP' or 'recall', "
                           f'got {metric!r}')
        if eval_mode not in ('area', '11points'):
            raise ValueError(f"VOCMetric: eval_mode must be 'area' or "
                             f"'11points', got {eval_mode!r}")
        self.metric = metric
        self.scale_ranges = scale_ranges
        self.proposal_nums = proposal_nums
        self.eval_mode = eval_mode

    def process(self, data_batch, data_samples):
        """Keep each image's ground truth and per-class detections."""
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            gt = sample['gt_instances']
            ignored = sample.get('ignored_instances') or {}
            ann = dict(
                bboxes=as_numpy(gt['bboxes'], (-1, 4)),
                labels=as_numpy(gt['labels'], -1),
                bboxes_ignore=as_numpy(
                    ignored.get('bboxes', np.zeros((0, 4))), (-1, 4)),
                labels_ignore=as_numpy(
                    ignored.get('labels', np.zeros(0)), -1))
            pred = sample['pred_instances']
            boxes = as_numpy(pred['bboxes'], (-1, 4))
            scores = as_numpy(pred['scores'], -1)
            labels = as_numpy(pred['labels'], -1)
            dets = [
                np.hstack([boxes[labels == c], scores[labels == c, None]])
                for c in range(num_classes)
            ]
            self.results.append((ann, dets))

    def compute_metrics(self, results):
        anns, dets = zip(*results)
        if self.metric == 'recall':
            return self._recall(anns, dets)
        eval_results = OrderedDict()
        mean_aps = []
        for iou_thr in self.iou_thrs:
            mean_ap, per_class = eval_map(
                dets, anns, iou_thr=iou_thr, eval_mode=self.eval_mode,
                use_legacy_coordinate=True)
            self._log_table(per_class, mean_ap, iou_thr)
            mean_aps.append(mean_ap)
            eval_results[f'AP{int(round(iou_thr * 100)):02d}'] = round(
                mean_ap, 3)
            if self.scale_ranges is not None:
                range_aps, _ = eval_map(
                    dets, anns, scale_ranges=self.scale_ranges,
                    iou_thr=iou_thr, eval_mode=self.eval_mode,
                    use_legacy_coordinate=True)
                for (lo, hi), ap in zip(self.scale_ranges, range_aps):
                    key = f'AP{int(round(iou_thr * 100)):02d}_{lo}-{hi}'
                    eval_results[key] = round(ap, 3)
        eval_results['mAP'] = sum(mean_aps) / len(mean_aps)
        eval_results.move_to_end('mAP', last=False)
        return eval_results

    def _recall(self, anns, dets):
        proposals = [np.concatenate(d) for d in dets]
        recalls = eval_recalls([a['bboxes'] for a in anns], proposals,
                               self.proposal_nums, self.iou_thrs,
                               use_legacy_coordinate=True)
        eval_results = OrderedDict()
        for i, num in enumerate(self.proposal_nums):
            for j, iou in enumerate(self.iou_thrs):
                eval_results[f'recall@{num}@{iou}'] = float(recalls[i, j])
        if recalls.shape[1] > 1:
            for i, num in enumerate(self.proposal_nums):
                eval_results[f'AR@{num}'] = float(recalls[i].mean())
        return eval_results

    def _log_table(self, per_class, mean_ap, iou_thr):
        rows = [[
            name, r['num_gts'], r['num_dets'],
            f"{r['recall'][-1] if r['recall'].size else 0.0:.3f}",
            f"{r['ap']:.3f}"
        ] for name, r in zip(self.dataset_meta['classes'], per_class)]
        rows.append(['mAP', '', '', '', f'{mean_ap:.3f}'])
        print_log(
            format_table(['class', 'gts', 'dets', 'recall', 'ap'], rows,
                         title=f'VOC AP at IoU {iou_thr} ({self.eval_mode})'),
            logger='current')
