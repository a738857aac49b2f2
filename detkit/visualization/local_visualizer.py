"""Draw ground truth and predictions on images (OpenCV), save or show."""
import os
import os.path as osp
from typing import Optional

import cv2
import numpy as np
import torch
from mmengine.visualization import Visualizer

from ..registry import VISUALIZERS
from .palette import get_palette


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@VISUALIZERS.register_module()
class DetLocalVisualizer(Visualizer):
    """Boxes with class names and scores, drawn with OpenCV.

    ``add_datasample`` takes an RGB image and a data sample (a
    ``DetDataSample`` or its dict form); ground truth and prediction are
    drawn side by side when both are asked for and present.

    Args:
        bbox_color: one RGB colour for every box; None uses the class
            palette.
        text_color: RGB colour of labels.
        line_width: box outline width in pixels.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: Optional[np.ndarray] = None,
                 vis_backends: Optional[list] = None,
                 save_dir: Optional[str] = None,
                 bbox_color=None,
                 text_color=(255, 255, 255),
                 line_width: int = 2,
                 alpha: float = 0.8):
        super().__init__(
            name=name, image=image, vis_backends=vis_backends,
            save_dir=save_dir)
        self.bbox_color = bbox_color
        self.text_color = tuple(text_color)
        self.line_width = line_width
        self.alpha = alpha

    def draw_instances(self, image: np.ndarray, instances, classes,
                       score_thr: float = 0.0) -> np.ndarray:
        """Draw ``instances`` (bboxes, labels, optional scores) on a copy
        of an RGB ``image``; boxes scoring below ``score_thr`` are left
        out."""
        img = np.ascontiguousarray(image.copy())
        if instances is None:
            return img
        get = (instances.get if isinstance(instances, dict) else
               lambda k, d=None: getattr(instances, k, d))
        bboxes = get('bboxes')
        if bboxes is None or len(bboxes) == 0:
            return img
        bboxes = _to_numpy(bboxes).reshape(-1, 4)
        labels = _to_numpy(get('labels')).astype(int).reshape(-1)
        scores = get('scores')
        scores = None if scores is None else _to_numpy(scores).reshape(-1)
        if scores is not None:
            keep = scores >= score_thr
            bboxes, labels, scores = bboxes[keep], labels[keep], scores[keep]
        classes = list(classes or [])
        num_colors = max(len(classes), int(labels.max(initial=0)) + 1)
        palette = get_palette(num_colors,
                              (self.dataset_meta or {}).get('palette'))
        font_scale = max(0.35, min(img.shape[:2]) / 1000)
        for i, (box, label) in enumerate(zip(bboxes, labels)):
            color = tuple(self.bbox_color or palette[label])
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), color, self.line_width)
            name = classes[label] if label < len(classes) else f'class {label}'
            text = name if scores is None else f'{name} {scores[i]:.2f}'
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                             font_scale, 1)
            ty = max(y1, th + base)
            cv2.rectangle(img, (x1, ty - th - base), (x1 + tw, ty), color,
                          -1)
            cv2.putText(img, text, (x1, ty - base),
                        cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        self.text_color, 1, cv2.LINE_AA)
        return img

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample=None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       pred_score_thr: float = 0.3,
                       step: int = 0) -> np.ndarray:
        """Draw, then save to ``out_file`` (and/or the vis backends).

        Args:
            image: RGB uint8 ``(H, W, 3)``.

        Returns:
            The drawn RGB image (GT | prediction side by side if both).
        """
        classes = (self.dataset_meta or {}).get('classes')
        get = (data_sample.get if isinstance(data_sample, dict) else
               (lambda k, d=None: getattr(data_sample, k, d))
               if data_sample is not None else (lambda k, d=None: d))
        panels = []
        gt = get('gt_instances')
        if draw_gt and gt is not None:
            panels.append(self.draw_instances(image, gt, classes))
        pred = get('pred_instances')
        if draw_pred and pred is not None:
            panels.append(
                self.draw_instances(image, pred, classes, pred_score_thr))
        drawn = np.concatenate(panels, axis=1) if panels else image
        self.set_image(drawn)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            out_dir = osp.dirname(out_file)
            if out_dir:
                os.makedirs(out_dir, exist_ok=True)
            if not cv2.imwrite(out_file, drawn[..., ::-1]):
                raise OSError(f'could not write the picture to {out_file}')
        else:
            self.add_image(name, drawn, step)
        return drawn
