"""Where the AP goes: the COCO analysis of errors (Hoiem et al.'s
"Diagnosing error in object detectors" as the COCO toolkit's ``analyze``
does it), from the COCOeval object of a :class:`CocoMetric` run.

Each stage re-runs the *same* COCOeval class on the same detections with
one kind of error forgiven, and reads its precision-recall curve (area all,
the last ``maxDets``, per class):

1. ``AP75``, ``AP50``: the evaluation itself at IoU 0.75 and 0.5;
2. ``Loc``: IoU 0.1, so a detection that is roughly in the right place
   counts (duplicates are still false positives);
3. ``Oth``: IoU 0.1 and, for each class, the other classes' ground truths
   turned into crowd regions of that class: a detection on an object of
   another class becomes ignored instead of a false positive;
4. ``BG``: ``Oth`` with every remaining false positive (background) gone:
   precision 1 up to the highest recall ``Oth`` reached;
5. ``FN``: precision 1 at every recall (nothing missed): AP 1.

The AP lost to each kind of error is the gap between two stages:
localisation ``Loc - AP50``, class confusion ``Oth - Loc``, background false
positives ``BG - Oth``, missed objects ``1 - BG``; with ``AP50`` they add up
to 1. The overall row averages the classes that have ground truth, like
COCO's mAP.
"""
import contextlib
import io

import numpy as np

from .coco_arrays import iou_index, mean_valid

STAGES = ('AP75', 'AP50', 'Loc', 'Oth', 'BG')
LOSSES = ('localisation', 'confusion', 'background', 'missed')


def _rerun(coco_eval, coco_gt, iou):
    """Precision ``(R, K)`` of ``type(coco_eval)`` on ``coco_gt`` and the
    same detections at one IoU threshold (area all, last maxDets)."""
    p = coco_eval.params
    rerun = type(coco_eval)(coco_gt, coco_eval.cocoDt, 'bbox')
    rerun.params.imgIds = list(p.imgIds)
    rerun.params.catIds = list(p.catIds)
    rerun.params.iouThrs = np.array([iou])
    rerun.params.maxDets = [p.maxDets[-1]]
    rerun.params.areaRng = [p.areaRng[0]]
    rerun.params.areaRngLbl = ['all']
    with contextlib.redirect_stdout(io.StringIO()):
        rerun.evaluate()
        rerun.accumulate()
    return rerun.eval['precision'][0, :, :, 0, 0]


def _others_as_crowd(coco_eval):
    """A copy of the ground truth where, for each class ``k`` detected in
    an image, every ground truth of another class in that image is also a
    crowd region of class ``k`` (only those images matter: a crowd region
    never adds to the number of objects to find)."""
    gt = coco_eval.cocoGt
    p = coco_eval.params
    cats = set(p.catIds)
    detected = {}
    for img_id in p.imgIds:
        detected[img_id] = {d['category_id']
                            for d in coco_eval.cocoDt.imgToAnns.get(img_id, [])
                            if d['category_id'] in cats}
    anns = [dict(a) for a in gt.dataset['annotations']]
    next_id = max([a['id'] for a in anns], default=0) + 1
    for ann in list(anns):
        for cat in detected.get(ann['image_id'], ()):
            if cat != ann['category_id']:
                anns.append(dict(ann, id=next_id, category_id=cat, iscrowd=1,
                                 ignore=1))
                next_id += 1
    copy = type(gt)()
    copy.dataset = dict(gt.dataset, annotations=anns)
    with contextlib.redirect_stdout(io.StringIO()):
        copy.createIndex()
    return copy


def error_breakdown(coco_eval):
    """AP at each stage and the AP lost to each kind of error.

    Returns:
        dict or None (when IoU 0.5 or 0.75 was not evaluated): ``stages``
        ``{name: (K,) AP per class}`` for :data:`STAGES`, ``losses``
        ``{name: (K,)}`` for :data:`LOSSES` (nan where a class has no
        ground truth) and ``overall`` ``{name: float}`` for both, means
        over the classes with ground truth.
    """
    t50, t75 = iou_index(coco_eval, .5), iou_index(coco_eval, .75)
    if t50 is None or t75 is None:
        return None
    precision = coco_eval.eval['precision'][:, :, :, 0, -1]  # (T, R, K)
    curves = dict(AP75=precision[t75], AP50=precision[t50])
    curves['Loc'] = _rerun(coco_eval, coco_eval.cocoGt, .1)
    curves['Oth'] = _rerun(coco_eval, _others_as_crowd(coco_eval), .1)
    oth = curves['Oth']
    curves['BG'] = np.where(oth > -1, (oth > 0).astype(float), -1.)
    num_classes = precision.shape[2]
    stages = {name: np.array([mean_valid(curves[name][:, k])
                              for k in range(num_classes)])
              for name in STAGES}
    overall = {name: mean_valid(curves[name]) for name in STAGES}
    chain = [('localisation', 'Loc', 'AP50'), ('confusion', 'Oth', 'Loc'),
             ('background', 'BG', 'Oth')]
    losses = {name: stages[hi] - stages[lo] for name, hi, lo in chain}
    losses['missed'] = 1. - stages['BG']
    for name, hi, lo in chain:
        overall[name] = overall[hi] - overall[lo]
    overall['missed'] = 1. - overall['BG']
    return dict(stages=stages, losses=losses, overall=overall)
