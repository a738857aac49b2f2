"""COCO evaluation (pycocotools) as an mmengine metric, mmdetection's keys.

Ground truth comes from ``ann_file`` (categories matched to
``dataset_meta['classes']`` by name) or, without one, from the samples'
``gt_instances`` / ``ignored_instances`` (crowd), turned into an in-memory
COCO api object. Predictions are ``pred_instances`` in original-image xyxy
pixels with labels indexing ``dataset_meta['classes']``.

Which images are scored: those that were predicted (every image the
evaluator saw, with or without detections), so that evaluating part of a
dataset (``indices=4``, a shard) scores those images and not, with misses
for the rest, every image of ``ann_file``. One log line says how many of
the file's images that is. ``eval_all_images=True`` scores every image of
the file instead, as mmdetection does.
"""
import contextlib
import io
import json
import logging
import os
import os.path as osp
from collections import OrderedDict

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.datasets.coco import missing_path_hint
from detkit.registry import METRICS
from .np_boxes import as_numpy
from .recall import average_recalls
from .table import format_table

# Index of each item in COCOeval.stats.
_BBOX_ITEMS = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
BACKENDS = ('pycocotools', 'faster-coco-eval')


def _eval_backend(backend: str):
    """``(COCO class, COCOeval class)`` of a COCO evaluation backend."""
    if backend == 'pycocotools':
        return COCO, COCOeval
    if backend == 'faster-coco-eval':
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError as err:
            raise ImportError(
                "CocoMetric(backend='faster-coco-eval') needs the "
                'faster-coco-eval package: pip install faster-coco-eval (it '
                "is in requirements/optional.txt), or use backend="
                "'pycocotools'.") from err
        return FasterCOCO, COCOeval_faster
    raise ValueError(f'CocoMetric: backend must be one of {BACKENDS}, got '
                     f'{backend!r}')


def _quiet(fn, *args):
    """Run a pycocotools call, returning its printout instead of printing."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue()


def _check_image_ids(coco, ann_file):
    """COCO image ids are integers; pycocotools (sorting, faster-coco-eval)
    fails on others, and only after the whole inference: refuse them when
    the metric is built."""
    bad = [img['id'] for img in coco.dataset.get('images', [])
           if isinstance(img.get('id'), bool)
           or not isinstance(img.get('id'), int)]
    if bad:
        raise ValueError(
            f'CocoMetric: ann_file {ann_file} has {len(bad)} image ids that '
            f'are not integers (e.g. {bad[0]!r}, a {type(bad[0]).__name__}); '
            'COCO evaluation needs integer image ids. Renumber the images '
            'with integers (and the image_id of their annotations), e.g. '
            'with python tools/misc/check_dataset.py CONFIG --split val '
            '--fix OUT.json.')


def _one_result_per_image(results):
    """``(gts, preds)`` with each image once: a dataset that lists an
    image twice (or a sampler that repeats one) must not count its
    detections twice."""
    seen, unique = set(), []
    for gt, pred in results:
        if pred['img_id'] not in seen:
            seen.add(pred['img_id'])
            unique.append((gt, pred))
    if len(unique) < len(results):
        print_log(f'CocoMetric: {len(results) - len(unique)} results repeat '
                  'an image already predicted (same img_id); each image is '
                  'evaluated once.', logger='current', level=logging.WARNING)
    if not unique:
        return (), ()
    gts, preds = zip(*unique)
    return gts, preds


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box AP and proposal AR, keyed like mmdetection.

    Args:
        ann_file (str, optional): COCO-format json; without it the ground
            truth is built from the samples.
        metric (str | list[str]): ``'bbox'``, ``'proposal'`` (AR through
            pycocotools with ``useCats=0``) and/or ``'proposal_fast'`` (AR
            with greedy one-to-one matching, see :mod:`.recall`).
        classwise (bool): also log a per-class AP table (and return
            ``bbox_<class>_precision``).
        proposal_nums (Sequence[int]): ``maxDets`` for pycocotools (three
            numbers; box AP uses the last) and the AR@N numbers.
        iou_thrs (Sequence[float], optional): default 0.5:0.05:0.95.
        metric_items (list[str], optional): which items to return (default
            ``mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l`` for bbox and
            ``AR@N..., AR_s@N, AR_m@N, AR_l@N`` for proposals).
        format_only (bool): only write ``<outfile_prefix>.bbox.json``.
        outfile_prefix (str, optional): where result json files go.
        file_client_args, backend_args: how to read ``ann_file`` (mmengine
            file backends); ``file_client_args`` is the deprecated spelling.
        collect_device, prefix: as for ``BaseMetric`` (``coco/`` prefix).
        sort_categories (bool): order ``ann_file``'s categories by id.
        backend (str): ``'pycocotools'`` (default) or ``'faster-coco-eval'``
            (the same COCOeval algorithm in C++, optional package; same
            numbers to 4 decimals, several times faster on large sets, see
            benchmarks/README.md).
        eval_all_images (bool): score against every image of ``ann_file``,
            counting the objects of images that were not predicted as
            missed (mmdetection's behaviour). Default False: only the
            predicted images are scored.

    After an evaluation, ``coco_evals[metric]`` (and ``last_coco_eval``,
    the last one run) is the COCOeval object with its accumulated
    ``eval['precision']`` / ``eval['recall']`` arrays, and
    ``coco_stats[metric]`` its unrounded ``stats``.
    """

    default_prefix = 'coco'

    def __init__(self,
                 ann_file=None,
                 metric='bbox',
                 classwise=False,
                 proposal_nums=(100, 300, 1000),
                 iou_thrs=None,
                 metric_items=None,
                 format_only=False,
                 outfile_prefix=None,
                 file_client_args=None,
                 backend_args=None,
                 collect_device='cpu',
                 prefix=None,
                 sort_categories=False,
                 backend='pycocotools',
                 eval_all_images=False):
        super().__init__(collect_device=collect_device, prefix=prefix)
        _eval_backend(backend)  # fail early: unknown or not installed
        self.backend = backend
        self.eval_all_images = eval_all_images
        self.coco_stats = {}
        self.coco_evals = {}
        self.last_coco_eval = None
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for name in self.metrics:
            if name not in ('bbox', 'proposal', 'proposal_fast'):
                raise KeyError(
                    f"CocoMetric: metric must be 'bbox', 'proposal' or "
                    f"'proposal_fast', got {name!r} (detkit has no masks, "
                    "so no 'segm').")
        self.proposal_nums = list(proposal_nums)
        if (set(self.metrics) & {'bbox', 'proposal'}
                and len(self.proposal_nums) != 3):
            raise ValueError('CocoMetric: proposal_nums must hold 3 numbers '
                             '(pycocotools reports AR at each and AP at the '
                             f'last), got {proposal_nums}.')
        self.iou_thrs = (np.linspace(.5, .95, 10)
                         if iou_thrs is None else np.asarray(iou_thrs))
        self.classwise = classwise
        self.metric_items = metric_items
        if format_only and outfile_prefix is None:
            raise ValueError('CocoMetric: format_only=True needs '
                             'outfile_prefix (where to write the json).')
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.sort_categories = sort_categories
        self._coco_api = None
        if ann_file is not None:
            self._coco_api = self._load_ann_file(
                ann_file, backend_args or file_client_args)
        self.ann_file = ann_file

    def _load_ann_file(self, ann_file, backend_args):
        try:
            with get_local_path(ann_file, backend_args=backend_args) as path:
                coco, _ = _quiet(COCO, path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'CocoMetric: ann_file {ann_file!r} (val_evaluator.ann_file '
                'or test_evaluator.ann_file in the config) does not exist'
                f'{missing_path_hint(ann_file)}.') from None
        if not self.format_only:  # writing results needs no integer ids
            _check_image_ids(coco, ann_file)
        if self.sort_categories:
            cats = sorted(coco.dataset['categories'], key=lambda c: c['id'])
            coco.dataset['categories'] = cats
            coco.cats = {c['id']: c for c in cats}
        return coco

    def _proposal_items(self):
        last = self.proposal_nums[-1]
        return ([f'AR@{n}' for n in self.proposal_nums] +
                [f'AR_{a}@{last}' for a in ('s', 'm', 'l')])

    def process(self, data_batch, data_samples):
        """Keep each image's predictions (and ground truth when there is no
        ``ann_file``) as numpy arrays."""
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            pred = sample['pred_instances']
            result = dict(
                img_id=sample['img_id'],
                bboxes=as_numpy(pred['bboxes'], (-1, 4)),
                scores=as_numpy(pred['scores'], -1),
                labels=as_numpy(pred['labels'], -1))
            gt = None
            if self._coco_api is None:
                gt = dict(img_id=sample['img_id'],
                          height=sample['ori_shape'][0],
                          width=sample['ori_shape'][1])
                for key in ('gt_instances', 'ignored_instances'):
                    inst = sample.get(key) or {}
                    boxes = inst.get('bboxes', np.zeros((0, 4)))
                    labels = inst.get('labels', np.zeros(0))
                    gt[key] = (as_numpy(boxes, (-1, 4)),
                               as_numpy(labels, -1))
            self.results.append((gt, result))

    def compute_metrics(self, results):
        gts, preds = _one_result_per_image(results)
        coco = self._coco_api or self._gt_to_coco(gts)
        cat_ids = self._cat_ids(coco)
        dets = self._to_coco_results(preds, cat_ids)
        if self.format_only or self.outfile_prefix is not None:
            path = self._dump(dets, self.outfile_prefix)
            if self.format_only:
                print_log(f'Results are saved in {path}', logger='current')
                return OrderedDict()
        if self._coco_api is None:
            # Ground truth from the samples: ids renumbered 0..n-1, so that
            # any img_id (VOC's '000001' strings) suits pycocotools.
            index = {gt['img_id']: i for i, gt in enumerate(gts)}
            preds = [dict(p, img_id=index[p['img_id']]) for p in preds]
            dets = self._to_coco_results(preds, cat_ids)
        img_ids = self._images_to_score(coco, preds)
        eval_results = OrderedDict()
        for metric in self.metrics:
            if metric == 'proposal_fast':
                eval_results.update(self._fast_recall(coco, preds, img_ids))
            else:
                eval_results.update(
                    self._coco_eval(coco, dets, metric, cat_ids, img_ids))
        return eval_results

    def _images_to_score(self, coco, preds):
        """The predicted images (all of ``ann_file``'s with
        ``eval_all_images``), sorted; says which in one log line and warns
        when they hold no annotation (every AP is then -1)."""
        file_ids = coco.getImgIds()
        predicted = {p['img_id'] for p in preds}
        unknown = predicted - set(file_ids)
        if unknown:
            raise ValueError(
                f'CocoMetric: {len(unknown)} predicted images are not in '
                f'ann_file {self.ann_file} (image ids '
                f'{sorted(unknown, key=str)[:5]}): the evaluator\'s ann_file '
                'must be the annotation file of the dataset that was run '
                '(compare val_evaluator.ann_file with '
                'val_dataloader.dataset.ann_file).')
        img_ids = sorted(file_ids if self.eval_all_images else predicted)
        if self._coco_api is not None:
            if self.eval_all_images:
                what = (f'all {len(file_ids)} images of {self.ann_file} '
                        f'({len(predicted)} of them predicted; '
                        'eval_all_images=True)')
            elif len(predicted) == len(file_ids):
                what = f'all {len(file_ids)} images of {self.ann_file}'
            else:
                what = (f'{len(predicted)} of the {len(file_ids)} images of '
                        f'{self.ann_file} (the images that were predicted; '
                        'eval_all_images=True scores all of them, as '
                        'mmdetection does)')
            print_log(f'CocoMetric: evaluating {what}', logger='current')
        if img_ids and not coco.getAnnIds(imgIds=img_ids):
            source = self.ann_file or 'the ground truth of the samples'
            print_log(
                f'CocoMetric: {source} has no annotations for the '
                f'{len(img_ids)} evaluated images, so every AP and AR below '
                'is -1 (undefined: there is nothing to detect), not a score. '
                'Point ann_file to the labeled annotations, or, for an '
                'unlabeled file (e.g. from images2coco.py), set '
                'format_only=True and outfile_prefix to save the '
                'predictions instead.', logger='current',
                level=logging.WARNING)
        return img_ids

    def _gt_to_coco(self, gts):
        """An in-memory COCO api object from the samples' instances;
        image ids are the samples' positions, category ids the class
        indices, crowd = ignored instances."""
        classes = self.dataset_meta['classes']
        images, annotations = [], []
        for img_id, gt in enumerate(gts):
            images.append(dict(id=img_id, width=gt['width'],
                               height=gt['height'], file_name=''))
            for key, crowd in (('gt_instances', 0), ('ignored_instances', 1)):
                for box, label in zip(*gt[key]):
                    w, h = float(box[2] - box[0]), float(box[3] - box[1])
                    annotations.append(
                        dict(id=len(annotations) + 1, image_id=img_id,
                             bbox=[float(box[0]), float(box[1]), w, h],
                             area=w * h, iscrowd=crowd,
                             category_id=int(label)))
        coco = COCO()
        coco.dataset = dict(
            info={}, licenses=[], images=images, annotations=annotations,
            categories=[dict(id=i, name=n) for i, n in enumerate(classes)])
        _quiet(coco.createIndex)
        return coco

    def _cat_ids(self, coco):
        """COCO category id of each class, matched by name."""
        by_name = {c['name']: c['id'] for c in coco.dataset['categories']}
        classes = self.dataset_meta['classes']
        missing = [name for name in classes if name not in by_name]
        if missing:
            raise ValueError(
                f'CocoMetric: classes {missing} of dataset_meta are not '
                f'categories of {self.ann_file or "the ground truth"} (it '
                f'has {sorted(by_name)}). Check the dataset\'s classes.')
        return [by_name[name] for name in classes]

    @staticmethod
    def _to_coco_results(preds, cat_ids):
        """COCO result format: xywh boxes, category ids."""
        dets = []
        for pred in preds:
            for box, score, label in zip(pred['bboxes'], pred['scores'],
                                         pred['labels']):
                x1, y1, x2, y2 = (float(v) for v in box)
                dets.append(dict(image_id=pred['img_id'],
                                 bbox=[x1, y1, x2 - x1, y2 - y1],
                                 score=float(score),
                                 category_id=cat_ids[int(label)]))
        return dets

    @staticmethod
    def _dump(dets, prefix):
        path = f'{prefix}.bbox.json'
        if osp.dirname(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(dets, f)
        return path

    def _fast_recall(self, coco, preds, img_ids):
        """AR@N over ``img_ids``; an image without predictions (only with
        ``eval_all_images``) has no proposals."""
        by_id = {pred['img_id']: pred for pred in preds}
        empty = dict(bboxes=np.zeros((0, 4)), scores=np.zeros(0))
        gts, proposals = [], []
        for img_id in img_ids:
            pred = by_id.get(img_id, empty)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            gts.append(
                np.array([[a['bbox'][0], a['bbox'][1],
                           a['bbox'][0] + a['bbox'][2],
                           a['bbox'][1] + a['bbox'][3]] for a in anns
                          if not (a.get('ignore', False) or a['iscrowd'])],
                         dtype=np.float64).reshape(-1, 4))
            proposals.append(np.hstack([pred['bboxes'],
                                        pred['scores'][:, None]]))
        ar = average_recalls(gts, proposals, self.proposal_nums,
                             self.iou_thrs)
        results = OrderedDict((f'AR@{n}', float(value))
                              for n, value in zip(self.proposal_nums, ar))
        print_log(''.join(f'\n{k}\t{v:.4f}' for k, v in results.items()),
                  logger='current')
        return results

    def _coco_eval(self, coco, dets, metric, cat_ids, img_ids):
        items = self.metric_items or (
            _BBOX_ITEMS if metric == 'bbox' else self._proposal_items())
        names = _BBOX_ITEMS + self._proposal_items()
        unknown = [item for item in items if item not in names]
        if unknown:
            raise KeyError(f'CocoMetric: metric_items {unknown} are not '
                           f'reported for {metric!r}; choose from {names}.')
        prefix = 'bbox_' if metric == 'bbox' else ''
        if not dets:
            print_log(f'CocoMetric: no predictions at all, {metric} metrics '
                      'are 0.', logger='current', level=logging.WARNING)
            return OrderedDict((prefix + item, 0.0) for item in items)
        coco_cls, eval_cls = _eval_backend(self.backend)
        if coco_cls is not COCO:
            gt = coco_cls()
            gt.dataset = coco.dataset
            _quiet(gt.createIndex)
            coco = gt
        coco_dt, _ = _quiet(coco.loadRes, [dict(d) for d in dets])
        evaluator = eval_cls(coco, coco_dt, 'bbox')
        evaluator.params.catIds = cat_ids
        evaluator.params.imgIds = img_ids
        evaluator.params.maxDets = list(self.proposal_nums)
        evaluator.params.iouThrs = self.iou_thrs
        if metric == 'proposal':
            evaluator.params.useCats = 0
        _, log = _quiet(lambda: (evaluator.evaluate(), evaluator.accumulate(),
                                 evaluator.summarize()))
        print_log(f'Evaluating {metric}...\n{log}', logger='current')
        # Unrounded COCOeval.stats of the last evaluation, per metric, and
        # the evaluator itself (its accumulated precision/recall arrays).
        self.coco_stats[metric] = [float(v) for v in evaluator.stats]
        self.coco_evals[metric] = self.last_coco_eval = evaluator
        results = OrderedDict(
            (prefix + item, float(f'{evaluator.stats[names.index(item)]:.3f}'))
            for item in items)
        if metric == 'bbox':
            if self.classwise:
                results.update(self._classwise(evaluator, coco, cat_ids))
            copypaste = ' '.join(f'{v:.3f}' for v in evaluator.stats[:6])
            print_log(f'bbox_mAP_copypaste: {copypaste}', logger='current')
        return results

    def _classwise(self, evaluator, coco, cat_ids):
        """Per-class AP table (all areas, last maxDets) and
        ``bbox_<class>_precision`` keys."""
        # precision: (iou thresholds, recall thresholds, classes, areas,
        # maxDets); -1 marks "no ground truth".
        precisions = evaluator.eval['precision']

        def mean_ap(p):
            p = p[p > -1]
            return float(np.mean(p)) if p.size else float('nan')

        rows, results = [], OrderedDict()
        for k, cat_id in enumerate(cat_ids):
            name = coco.loadCats(cat_id)[0]['name']
            aps = [mean_ap(precisions[:, :, k, 0, -1]),
                   mean_ap(precisions[0, :, k, 0, -1]),
                   mean_ap(precisions[5, :, k, 0, -1]) if len(
                       self.iou_thrs) > 5 else float('nan')]
            aps += [mean_ap(precisions[:, :, k, a, -1]) for a in (1, 2, 3)]
            rows.append([name] + [f'{ap:.3f}' for ap in aps])
            results[f'bbox_{name}_precision'] = round(aps[0], 3)
        print_log('\n' + format_table(['category'] + _BBOX_ITEMS, rows),
                  logger='current')
        return results
