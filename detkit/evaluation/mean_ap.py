"""Pascal VOC average precision, per class and averaged.

Matching (per image and class, detections in descending score order): a
detection whose best-IoU ground truth reaches ``iou_thr`` is a true positive
if that ground truth is not yet taken, else a false positive; when that
ground truth is ignored (``difficult``, or outside the evaluated area range)
the detection is neither. A detection below ``iou_thr`` with every ground
truth is a false positive (with area ranges: only when its own area is in
the range). Precision/recall over all images' detections of the class, in
descending score order, are then integrated:

- ``'area'``: the area under the precision envelope (VOC2010+);
- ``'11points'``: the mean of the envelope at recall 0, 0.1, ..., 1
  (VOC2007).

The mean AP averages the classes that have ground truth (per area range).
"""
import numpy as np

from .np_boxes import box_areas_np, box_iou_np

_EPS = np.finfo(np.float32).eps


def average_precision(recalls, precisions, mode='area'):
    """AP of a precision/recall curve.

    Args:
        recalls, precisions (ndarray): ``(K,)`` or ``(S, K)``: cumulative
            values at each detection in descending score order.
        mode (str): ``'area'`` or ``'11points'``.

    Returns:
        float or ndarray ``(S,)``.
    """
    recalls = np.atleast_2d(np.asarray(recalls, dtype=np.float64))
    precisions = np.atleast_2d(np.asarray(precisions, dtype=np.float64))
    if mode == 'area':
        zeros = np.zeros((recalls.shape[0], 1))
        mrec = np.hstack([zeros, recalls, zeros + 1])
        mpre = np.hstack([zeros, precisions, zeros])
        # Envelope: the best precision at this recall or any higher one.
        mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        steps = np.diff(mrec, axis=1)
        ap = (steps * mpre[:, 1:]).sum(axis=1)
    elif mode == '11points':
        ap = np.zeros(recalls.shape[0])
        for thr in np.linspace(0, 1, 11):
            above = np.where(recalls >= thr, precisions, 0)
            ap += above.max(axis=1) if above.size else 0
        ap /= 11
    else:
        raise ValueError(f"average_precision: mode must be 'area' or "
                         f"'11points', got {mode!r}")
    return ap if ap.size > 1 else float(ap[0])


def match_detections(det_bboxes, gt_bboxes, gt_ignored, iou_thr,
                     area_ranges=((None, None), ),
                     use_legacy_coordinate=False):
    """True/false positives of one image's detections of one class.

    Args:
        det_bboxes (ndarray): ``(K, 5)`` xyxy + score.
        gt_bboxes (ndarray): ``(G, 4)`` ground truths, ignored ones included.
        gt_ignored (ndarray): ``(G,)`` bool, ``difficult``/crowd boxes.
        area_ranges: ``(min_area, max_area)`` pairs, ``(None, None)`` = all.

    Returns:
        tuple[ndarray]: ``tp``, ``fp``: ``(len(area_ranges), K)`` in the
        order of ``det_bboxes``.
    """
    num_dets = det_bboxes.shape[0]
    tp = np.zeros((len(area_ranges), num_dets))
    fp = np.zeros((len(area_ranges), num_dets))
    det_areas = box_areas_np(det_bboxes[:, :4], use_legacy_coordinate)
    gt_areas = box_areas_np(gt_bboxes, use_legacy_coordinate)
    if gt_bboxes.shape[0]:
        ious = box_iou_np(det_bboxes[:, :4], gt_bboxes, use_legacy_coordinate)
        best_iou, best_gt = ious.max(axis=1), ious.argmax(axis=1)
    else:
        best_iou = np.zeros(num_dets)
        best_gt = np.zeros(num_dets, dtype=int)
    order = np.argsort(-det_bboxes[:, 4], kind='stable')
    for k, (min_area, max_area) in enumerate(area_ranges):
        if min_area is None:
            skip_gt = gt_ignored
            det_in_range = np.ones(num_dets, dtype=bool)
        else:
            skip_gt = gt_ignored | (gt_areas < min_area) | (gt_areas >=
                                                            max_area)
            det_in_range = (det_areas >= min_area) & (det_areas < max_area)
        taken = np.zeros(gt_bboxes.shape[0], dtype=bool)
        for i in order:
            if best_iou[i] < iou_thr:
                fp[k, i] = det_in_range[i]
                continue
            gt = best_gt[i]
            if skip_gt[gt]:
                continue  # neither: it found an ignored box
            if taken[gt]:
                fp[k, i] = 1
            else:
                taken[gt] = True
                tp[k, i] = 1
    return tp, fp


def eval_map(det_results, annotations, scale_ranges=None, iou_thr=0.5,
             eval_mode='area', use_legacy_coordinate=False):
    """VOC mean AP.

    Args:
        det_results (list[list[ndarray]]): per image, per class, ``(K, 5)``
            detections (xyxy + score).
        annotations (list[dict]): per image: ``bboxes (G, 4)``, ``labels
            (G,)``, and optionally ``bboxes_ignore (Gi, 4)``,
            ``labels_ignore (Gi,)``.
        scale_ranges (list[tuple], optional): ``(min_size, max_size)``
            ranges of ``sqrt(area)``; AP is computed per range.
        iou_thr (float): IoU for a true positive.
        eval_mode (str): ``'area'`` or ``'11points'``.

    Returns:
        tuple: ``mean_ap`` (float, or list per scale range) and a list with
        one dict per class: ``num_gts``, ``num_dets``, ``recall``,
        ``precision`` (arrays over detections) and ``ap``.
    """
    if len(det_results) != len(annotations):
        raise ValueError(f'eval_map: {len(det_results)} images of '
                         f'detections but {len(annotations)} annotations.')
    area_ranges = ([(lo**2, hi**2) for lo, hi in scale_ranges]
                   if scale_ranges is not None else [(None, None)])
    num_classes = len(det_results[0]) if det_results else 0
    results = []
    for cls in range(num_classes):
        tps, fps, dets = [], [], []
        num_gts = np.zeros(len(area_ranges))
        for img_dets, ann in zip(det_results, annotations):
            gts, ignored = _class_gts(ann, cls)
            cls_dets = np.asarray(img_dets[cls],
                                  dtype=np.float64).reshape(-1, 5)
            tp, fp = match_detections(cls_dets, gts, ignored, iou_thr,
                                      area_ranges, use_legacy_coordinate)
            tps.append(tp)
            fps.append(fp)
            dets.append(cls_dets)
            num_gts += _count_gts(gts[~ignored], area_ranges,
                                  use_legacy_coordinate)
        dets = np.concatenate(dets)
        order = np.argsort(-dets[:, 4], kind='stable')
        tp = np.cumsum(np.concatenate(tps, axis=1)[:, order], axis=1)
        fp = np.cumsum(np.concatenate(fps, axis=1)[:, order], axis=1)
        recalls = tp / np.maximum(num_gts[:, None], _EPS)
        precisions = tp / np.maximum(tp + fp, _EPS)
        ap = (average_precision(recalls, precisions, eval_mode)
              if dets.shape[0] else np.zeros(len(area_ranges)))
        single = scale_ranges is None
        results.append(
            dict(num_gts=int(num_gts[0]) if single else num_gts.astype(int),
                 num_dets=int(dets.shape[0]),
                 recall=recalls[0] if single else recalls,
                 precision=precisions[0] if single else precisions,
                 ap=float(np.atleast_1d(ap)[0]) if single else np.atleast_1d(
                     ap)))
    return _mean_over_classes(results, len(area_ranges), scale_ranges), results


def _class_gts(ann, cls):
    """Ground truths of class ``cls`` with an ``ignored`` mask."""
    boxes = np.asarray(ann['bboxes'], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(ann['labels']).reshape(-1)
    ign_boxes = np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))),
                           dtype=np.float64).reshape(-1, 4)
    ign_labels = np.asarray(ann.get('labels_ignore', np.zeros(0))).reshape(-1)
    gts = np.concatenate([boxes[labels == cls], ign_boxes[ign_labels == cls]])
    ignored = np.zeros(gts.shape[0], dtype=bool)
    ignored[int((labels == cls).sum()):] = True
    return gts, ignored


def _count_gts(gts, area_ranges, use_legacy_coordinate):
    if area_ranges[0][0] is None:
        return np.array([gts.shape[0]], dtype=np.float64)
    areas = box_areas_np(gts, use_legacy_coordinate)
    return np.array([((areas >= lo) & (areas < hi)).sum()
                     for lo, hi in area_ranges], dtype=np.float64)


def _mean_over_classes(results, num_ranges, scale_ranges):
    """Mean AP over the classes that have ground truth (0 if none do)."""
    if not results:
        return 0.0
    aps = np.array([np.atleast_1d(r['ap']) for r in results])
    gts = np.array([np.atleast_1d(r['num_gts']) for r in results])
    means = [
        float(aps[gts[:, k] > 0, k].mean()) if (gts[:, k] > 0).any() else 0.0
        for k in range(num_ranges)
    ]
    return means[0] if scale_ranges is None else means
