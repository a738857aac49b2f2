"""The report's pictures: an image with its ground truth (left, green) and
its predictions (right, orange) drawn by :class:`DetLocalVisualizer`,
resized so that each panel's longer side is :data:`PANEL` pixels, as a JPEG
``data:`` URI that the page embeds.

The image is resized before drawing (boxes scaled with it), so labels keep
a readable size whatever the original resolution.
"""
import base64

import cv2
import numpy as np

from ..local_visualizer import DetLocalVisualizer
from ...evaluation.analysis import predictions

PANEL = 400
JPEG_QUALITY = 82
GT_COLOR = (30, 170, 60)
PRED_COLOR = (245, 130, 0)


def _placeholder(text):
    image = np.full((PANEL * 3 // 4, PANEL, 3), 235, np.uint8)
    cv2.putText(image, text[:48], (10, PANEL // 3), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (120, 0, 0), 1, cv2.LINE_AA)
    return image


def painters():
    """The two visualizers :func:`draw_pair` draws with (made once per
    page: a visualizer sets up a matplotlib canvas when it is built)."""
    return (DetLocalVisualizer(name='report_gt', bbox_color=GT_COLOR),
            DetLocalVisualizer(name='report_pred', bbox_color=PRED_COLOR))


def draw_pair(truth, result, classes, score_thr, painters):
    """``(RGB uint8 picture, readable)``: ground truth | predictions with
    ``score >= score_thr``, side by side; ``painters`` from
    :func:`painters`."""
    image = cv2.imread(truth['img_path'], cv2.IMREAD_COLOR)
    if image is None:
        missing = _placeholder(f'cannot read {truth["img_path"]}')
        return np.concatenate([missing, missing], axis=1), False
    scale = PANEL / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)),
            max(1, round(image.shape[0] * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA
                       if scale < 1 else cv2.INTER_LINEAR)[..., ::-1]
    bboxes, scores, labels = predictions(result)
    keep = ~truth['ignore']
    gt = dict(bboxes=truth['bboxes'][keep] * scale,
              labels=truth['labels'][keep])
    pred = dict(bboxes=bboxes * scale, labels=labels, scores=scores)
    left = painters[0].draw_instances(image, gt, classes)
    right = painters[1].draw_instances(image, pred, classes, score_thr)
    divider = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([left, divider, right], axis=1), True


def jpeg_data_uri(rgb):
    """A ``data:image/jpeg;base64,...`` URI of an RGB uint8 image."""
    ok, data = cv2.imencode('.jpg', np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV could not encode a JPEG for the report')
    return 'data:image/jpeg;base64,' + base64.b64encode(
        data.tobytes()).decode('ascii')
