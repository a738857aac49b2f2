"""A synthetic COCO-format dataset of coloured shapes: detkit's quick start.

Five classes that differ by outline alone (:data:`SHAPES_CLASSES`), drawn
in saturated colours on noisy, blotchy backgrounds with faint lines. Sizes
run from ``min_obj_size`` (12 px) to ``max_obj_frac`` of the image side,
and each shape is turned by up to ``max_rotation`` degrees (180: any
angle; 0: upright, as in the quick start). Shapes may overlap, but each
one keeps at least ``min_visible`` of its pixels, and its box is tight
around its *visible* pixels. Everything is drawn without anti-aliasing, so
a box edge is exactly a shape edge.

Output of :func:`generate_shapes_dataset` (or
``tools/misc/make_shapes_dataset.py``)::

    OUT_DIR/images/{train,val}_000000.jpg
    OUT_DIR/annotations/{train,val}.json   COCO, category ids 1..5

and the dataset config that reads it::

    dict(type='CocoDataset', data_root=OUT_DIR,
         ann_file='annotations/train.json', data_prefix=dict(img='images/'),
         metainfo=dict(classes=SHAPES_CLASSES))

Every image draws from its own generator seeded with ``(seed, split,
index)``: the same arguments give byte-identical files, and changing
``num_train`` does not change the validation images.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

SHAPES_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
_SPLIT_CODES = {'train': 0, 'val': 1}


def _polygon(center, radii, angles) -> np.ndarray:
    cx, cy = center
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a))
           for r, a in zip(radii, angles)]
    return np.round(np.array(pts)).astype(np.int32)


def shape_mask(label: int, center: Tuple[float, float], size: float,
               angle: float, hw: Tuple[int, int]) -> np.ndarray:
    """Boolean ``(h, w)`` mask of shape ``SHAPES_CLASSES[label]``.

    ``size`` is about the extent in pixels (the diameter of the circle
    through the outer points) and ``angle`` a rotation in radians.
    """
    mask = np.zeros(hw, np.uint8)
    r = size / 2
    name = SHAPES_CLASSES[label]
    if name == 'circle':
        cv2.circle(mask, (int(round(center[0])), int(round(center[1]))),
                   max(int(round(r)), 1), 1, thickness=-1)
        return mask.astype(bool)
    if name == 'square':
        radii, angles = [r] * 4, [angle + math.pi / 4 + k * math.pi / 2
                                  for k in range(4)]
    elif name == 'triangle':
        radii, angles = [r] * 3, [angle + k * 2 * math.pi / 3
                                  for k in range(3)]
    elif name == 'star':
        radii = [r if k % 2 == 0 else 0.42 * r for k in range(10)]
        angles = [angle + k * math.pi / 5 for k in range(10)]
    else:  # cross: a plus sign of 12 corners with arms 0.36 * size thick
        t = 0.18 * size
        arm = math.sqrt(max(r * r - t * t, 1.0))
        corners = [(arm, -t), (arm, t), (t, t), (t, arm), (-t, arm),
                   (-t, t), (-arm, t), (-arm, -t), (-t, -t), (-t, -arm),
                   (t, -arm), (t, -t)]
        radii = [math.hypot(x, y) for x, y in corners]
        angles = [angle + math.atan2(y, x) for x, y in corners]
    cv2.fillPoly(mask, [_polygon(center, radii, angles)], 1)
    return mask.astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float ``(h, w, 3)``: a muted base colour, smooth blotches, lines."""
    base = rng.uniform(50, 205, size=3)
    blotches = cv2.resize(
        rng.normal(0, 22, size=(4, 4, 3)).astype(np.float32), (w, h),
        interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(base.astype(np.float32) + blotches)
    for _ in range(rng.integers(0, 5)):
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
        color = tuple(float(v) for v in base + rng.normal(0, 30, size=3))
        cv2.line(img, p1, p2, color, thickness=1)
    return img


def _contrasting_color(rng: np.random.Generator,
                       local_mean: np.ndarray) -> np.ndarray:
    """A saturated BGR colour at least 100 away (L2) from ``local_mean``."""
    for _ in range(30):
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(150, 255),
                          rng.uniform(130, 255)]]], np.uint8)
        color = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(float)
        if np.linalg.norm(color - local_mean) >= 100:
            return color
    return 255.0 - local_mean


def render_image(rng: np.random.Generator,
                 img_wh: Tuple[int, int],
                 max_objects: int = 6,
                 min_obj_size: float = 12,
                 max_obj_frac: float = 0.6,
                 min_visible: float = 0.8,
                 max_rotation: float = 180):
    """Draw one image.

    Returns ``(img, objects)``: ``img`` is BGR uint8 ``(h, w, 3)``;
    ``objects`` is a list of ``dict(label, mask, bbox=[x, y, w, h], area,
    full)`` where ``mask`` is the visible part (bool ``(h, w)``), ``bbox``
    the tight pixel box around it (``x + w`` is one past the last column),
    ``area`` its pixel count and ``full`` the pixel count of the whole
    shape before later shapes covered part of it.
    """
    w, h = img_wh
    img = _background(rng, h, w)
    objects: List[dict] = []
    lo, hi = math.sqrt(min_obj_size), math.sqrt(max_obj_frac * min(w, h))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(SHAPES_CLASSES)))
        # Uniform in sqrt(size): mostly medium objects, some small.
        size = float(rng.uniform(lo, hi)**2)
        angle = float(rng.uniform(-1, 1) * math.radians(max_rotation))
        for _attempt in range(20):
            margin = 0.6 * size + 1
            center = (rng.uniform(margin, w - margin),
                      rng.uniform(margin, h - margin))
            mask = shape_mask(label, center, size, angle, (h, w))
            if mask.sum() < 0.15 * size * size:
                continue  # degenerate after rasterisation
            if all((obj['mask'] & ~mask).sum() >= min_visible * obj['full']
                   for obj in objects):
                break
        else:
            continue
        color = _contrasting_color(rng, img[mask].mean(axis=0))
        img[mask] = color
        for obj in objects:
            obj['mask'] &= ~mask
        objects.append(dict(label=label, mask=mask, full=int(mask.sum())))
    img += 6 * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    for obj in objects:
        ys, xs = np.nonzero(obj['mask'])
        x0, y0 = int(xs.min()), int(ys.min())
        obj['bbox'] = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
        obj['area'] = int(obj['mask'].sum())
    return img, objects


def _write_split(out_dir: str, split: str, num: int, img_wh, seed: int,
                 first_img_id: int, img_format: str, **render_kw) -> dict:
    images, annotations = [], []
    for index in range(num):
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))
        img, objects = render_image(rng, img_wh, **render_kw)
        file_name = f'{split}_{index:06d}.{img_format}'
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if img_format == 'jpg' else []
        ok, data = cv2.imencode(f'.{img_format}', img, params)
        if not ok:
            raise RuntimeError(f'OpenCV cannot encode {file_name}')
        with open(osp.join(out_dir, 'images', file_name), 'wb') as f:
            f.write(data.tobytes())
        img_id = first_img_id + index
        images.append(dict(id=img_id, file_name=file_name, width=img_wh[0],
                           height=img_wh[1]))
        for obj in objects:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=img_id,
                     category_id=obj['label'] + 1,
                     bbox=[float(v) for v in obj['bbox']],
                     area=float(obj['area']), iscrowd=0))
    return dict(
        info=dict(description=f'detkit synthetic shapes, {split} split',
                  seed=seed),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(SHAPES_CLASSES)])


def generate_shapes_dataset(out_dir: str,
                            num_train: int = 400,
                            num_val: int = 80,
                            img_size: Union[int, Tuple[int, int]] = 192,
                            seed: int = 0,
                            max_objects: int = 6,
                            min_obj_size: float = 12,
                            max_obj_frac: float = 0.6,
                            max_rotation: float = 180,
                            img_format: str = 'jpg') -> Dict[str, str]:
    """Write the dataset under ``out_dir`` (see the module docstring).

    Args:
        img_size: side of the square images, or ``(w, h)``.
        max_objects: 1 to ``max_objects`` shapes per image.
        min_obj_size, max_obj_frac: the shape extent runs from
            ``min_obj_size`` px to ``max_obj_frac * min(w, h)``.
        max_rotation: shapes are turned by a uniform angle in
            ``[-max_rotation, max_rotation]`` degrees (0: all upright).
        img_format: ``'jpg'`` (quality 95) or ``'png'``.

    Returns:
        Absolute paths: ``data_root``, ``img_dir``, ``train_ann_file``,
        ``val_ann_file``.
    """
    if img_format not in ('jpg', 'png'):
        raise ValueError(f"img_format must be 'jpg' or 'png', got "
                         f'{img_format!r}')
    img_wh = (img_size, img_size) if isinstance(img_size, int) else tuple(
        img_size)
    if min(img_wh) < 4 * min_obj_size:
        raise ValueError(f'img_size {img_size} is too small for objects of '
                         f'{min_obj_size} px; use at least {4 * min_obj_size}')
    out_dir = osp.abspath(out_dir)
    paths = dict(
        data_root=out_dir,
        img_dir=osp.join(out_dir, 'images'),
        train_ann_file=osp.join(out_dir, 'annotations', 'train.json'),
        val_ann_file=osp.join(out_dir, 'annotations', 'val.json'))
    os.makedirs(paths['img_dir'], exist_ok=True)
    os.makedirs(osp.dirname(paths['train_ann_file']), exist_ok=True)
    render_kw = dict(max_objects=max_objects, min_obj_size=min_obj_size,
                     max_obj_frac=max_obj_frac, max_rotation=max_rotation)
    first_id = 1
    for split, num in (('train', num_train), ('val', num_val)):
        coco = _write_split(out_dir, split, num, img_wh, seed, first_id,
                            img_format, **render_kw)
        first_id += num
        with open(paths[f'{split}_ann_file'], 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
    return paths
