"""Detect objects in many images at once: :class:`DetInferencer`.

``DetInferencer(model, weights, device)`` builds a detector once; calling it
on a path, a folder, a glob pattern, a BGR array or a list of these runs the
images through the config's test pipeline in batches and returns plain
Python predictions. With ``out_dir`` it also writes::

    out_dir/vis/<image name>          the picture with its detections drawn
    out_dir/preds/<image stem>.json   {"bboxes": [[x1, y1, x2, y2], ...],
                                       "scores": [...], "labels": [...],
                                       "label_names": [...]}

Boxes are in original-image pixels, ``x1, y1, x2, y2``. Arrays are named
``00000000.jpg``, ``00000001.jpg``, ... by their position in the input.
"""
import difflib
import glob
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.utils import ProgressBar

from ..utils.scope import to_detkit_scope
from .image_check import check_images
from .inference import (build_test_pipeline, check_device,
                        inference_detector, init_detector)

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                  '.tiff', '.webp')
CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))), 'configs')
InputType = Union[str, np.ndarray]


def resolve_config(model=None, weights: Optional[str] = None) -> Config:
    """The config for ``model``: a config file, a ``Config``, the name of a
    file under ``configs/`` (``'retinanet_r50_fpn_1x_coco'``), or None to
    use the config stored in the checkpoint ``weights`` (detkit's
    checkpoints keep it in ``meta['cfg']``)."""
    if isinstance(model, Config):
        return model
    if model is None:
        if weights is None:
            raise ValueError('DetInferencer needs a model (config file or '
                             'name) or weights whose meta holds the config')
        from ..engine.checkpoint import load_checkpoint_file
        from ..engine.plain_data import checkpoint_meta
        meta = checkpoint_meta(load_checkpoint_file(weights), weights)
        if not isinstance(meta.get('cfg'), str) or not meta['cfg']:
            raise ValueError(
                f'{weights} holds no config (meta["cfg"]); pass model=CONFIG '
                'as well')
        # mmdetection's own checkpoints: detkit takes the same configs.
        return to_detkit_scope(Config.fromstring(meta['cfg'], '.py'),
                               source=f'{weights} (meta["cfg"])')
    model = str(model)
    if osp.isfile(model):
        return to_detkit_scope(Config.fromfile(model), source=model)
    name = osp.splitext(osp.basename(model))[0]
    found = sorted(glob.glob(osp.join(CONFIG_ROOT, '**', name + '.py'),
                             recursive=True))
    if found:
        return Config.fromfile(found[0])
    known = [
        osp.splitext(osp.basename(p))[0] for p in glob.glob(
            osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True)
        if '_base_' not in p
    ]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise FileNotFoundError(
        f'{model!r} is neither a config file nor the name of a config under '
        f'{CONFIG_ROOT}.{hint}')


def check_score_thr(pred_score_thr) -> float:
    """``pred_score_thr`` if it is a number in [0, 1], else a ValueError
    saying so (scores are probabilities: above 1 nothing is kept, below 0
    the threshold filters nothing)."""
    if isinstance(pred_score_thr, bool) or not isinstance(
            pred_score_thr, (int, float)) or not 0 <= pred_score_thr <= 1:
        raise ValueError(
            f'pred_score_thr (--pred-score-thr) is {pred_score_thr!r}, but '
            'scores are between 0 and 1: use a value in [0, 1], e.g. 0.3 '
            '(0 keeps every detection).')
    return float(pred_score_thr)


def score_thr_arg(text: str) -> float:
    """argparse ``type`` of the demos' ``--pred-score-thr``: a number in
    [0, 1] (else argparse's one-line usage error)."""
    import argparse
    try:
        return check_score_thr(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_for_cli(prog: str, *args, **kwargs) -> 'DetInferencer':
    """``DetInferencer(*args, **kwargs)`` for a command-line tool: an
    unusable device or a checkpoint that does not fit the model ends the
    program with one line instead of a traceback."""
    from ..engine.checkpoint import PartialCheckpointError
    try:
        check_device(kwargs.get('device') or 'cpu')
    except (RuntimeError, ValueError) as err:
        sys.exit(f'{prog}: {err}')
    try:
        return DetInferencer(*args, **kwargs)
    except PartialCheckpointError as err:
        sys.exit(f'{prog}: {err}')


def collect_inputs(inputs) -> List[tuple]:
    """``(name, source)`` pairs, ``source`` a file path or a BGR array.

    A folder gives its images (non-recursive, sorted), a pattern with
    ``*``, ``?`` or ``[`` the images it matches (sorted; ``**`` recurses).
    Repeated file names get ``_1``, ``_2``, ... so no output is overwritten.
    """
    items = []

    def add(item):
        if isinstance(item, np.ndarray):
            if item.ndim not in (2, 3) or (item.ndim == 3
                                           and item.shape[2] != 3):
                raise ValueError('DetInferencer: an array input must be an '
                                 '(H, W, 3) BGR or (H, W) gray image, got '
                                 f'shape {item.shape}')
            items.append((f'{len(items):08d}.jpg', item))
        elif isinstance(item, (list, tuple)):
            for sub in item:
                add(sub)
        elif isinstance(item, (str, os.PathLike)):
            path = str(item)
            if osp.isdir(path):
                files = [osp.join(path, f) for f in sorted(os.listdir(path))
                         if f.lower().endswith(IMG_EXTENSIONS)]
                if not files:
                    raise FileNotFoundError(
                        f'DetInferencer: no image ({", ".join(IMG_EXTENSIONS)}'
                        f') in the folder {path}')
                items.extend((osp.basename(f), f) for f in files)
            elif osp.isfile(path):
                items.append((osp.basename(path), path))
            elif glob.has_magic(path):
                files = [f for f in sorted(glob.glob(path, recursive=True))
                         if f.lower().endswith(IMG_EXTENSIONS)]
                if not files:
                    raise FileNotFoundError(
                        f'DetInferencer: the pattern {path!r} matches no '
                        'image')
                items.extend((osp.basename(f), f) for f in files)
            else:
                raise FileNotFoundError(
                    f'DetInferencer: {path!r} is not a file, a folder or a '
                    'glob pattern')
        else:
            raise TypeError('DetInferencer: inputs must be paths, folders, '
                            'glob patterns, numpy arrays or lists of them, '
                            f'got {type(item).__name__}')

    add(inputs)
    seen = {}
    unique = []
    for name, source in items:
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count:
            stem, ext = osp.splitext(name)
            name = f'{stem}_{count}{ext}'
        unique.append((name, source))
    return unique


class DetInferencer:
    """Detect objects in images with a detector built once.

    Args:
        model: config file, ``Config``, config name under ``configs/``, or
            None to take the config from ``weights``.
        weights: checkpoint (detkit's or mmdetection's; loaded safely).
            None keeps random weights.
        device: ``'cpu'``, ``'cuda:0'``, ...; default CUDA when available.
        show_progress: print a progress bar (to stderr) while running.
        cfg_options: overrides merged into the config.
        allow_partial: use ``weights`` even when they hold fewer than half
            of the model's weights (refused by default, see
            :func:`~detkit.apis.init_detector`).
        fuse_conv_bn, channels_last: inference speed-ups of
            :func:`~detkit.apis.init_detector` (BatchNorm folded into
            convs; channels-last memory format). On by default here: the
            inferencer only predicts, and together they cut RetinaNet
            R50-FPN's CPU time by 22% (4.52 s -> 3.52 s at 800x1333) with
            the same detections up to float rounding
            (benchmarks/README.md). ``init_detector`` and
            ``tools/test.py`` use channels-last by default too but do not
            fold BatchNorm, because their model may be saved or trained
            further (a folded model has no norm weights).

    Example::

        >>> inferencer = DetInferencer('configs/ssd/ssd300_coco.py',
        ...                            weights='ssd300.pth')
        >>> out = inferencer('images/', batch_size=4, out_dir='outputs')
        >>> out['predictions'][0]['label_names']
    """

    def __init__(self,
                 model=None,
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 show_progress: bool = True,
                 cfg_options: Optional[dict] = None,
                 fuse_conv_bn: bool = True,
                 channels_last: bool = True,
                 allow_partial: bool = False):
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        check_device(device)  # before the config and weights are read
        cfg = resolve_config(model, weights)
        self.model = init_detector(cfg, weights, device=device,
                                   cfg_options=cfg_options,
                                   fuse_conv_bn=fuse_conv_bn,
                                   channels_last=channels_last,
                                   allow_partial=allow_partial)
        self.cfg = self.model.cfg
        self.classes = tuple(self.model.dataset_meta.get('classes') or ())
        self.show_progress = show_progress
        self._pipelines = {}
        self._visualizer = None

    @staticmethod
    def check_inputs(inputs, min_size: int = 32, max_aspect: float = 10.0):
        """Check the image files among ``inputs`` (same forms as for a
        call) without running the model: which ones cannot be read
        (missing, empty, truncated, corrupt, not a regular file) and which
        ones load but are odd (EXIF-rotated, grayscale, tiny, extreme
        aspect ratio). Returns an
        :class:`~detkit.apis.image_check.ImageCheckReport` (a list of
        problems; ``print()`` it, ``.errors`` are the unreadable ones).
        Needs no model: ``DetInferencer.check_inputs('images/')``."""
        return check_images(inputs, min_size, max_aspect)

    # ------------------------------------------------------------- helpers
    @property
    def visualizer(self):
        if self._visualizer is None:
            from ..visualization import DetLocalVisualizer
            self._visualizer = DetLocalVisualizer(
                name=f'det_inferencer_{id(self)}')
            self._visualizer.dataset_meta = self.model.dataset_meta
        return self._visualizer

    def _pipeline(self, from_ndarray: bool):
        if from_ndarray not in self._pipelines:
            self._pipelines[from_ndarray] = build_test_pipeline(
                self.cfg, from_ndarray)
        return self._pipelines[from_ndarray]

    def _class_ids(self, classes) -> Optional[torch.Tensor]:
        """Label indices of ``classes`` (names or indices)."""
        if classes is None:
            return None
        if isinstance(classes, (str, int)):
            classes = [classes]
        ids = []
        for cls in classes:
            if cls in self.classes:
                ids.append(self.classes.index(cls))
            elif isinstance(cls, int) or (isinstance(cls, str)
                                          and cls.isdigit()):
                ids.append(int(cls))
            else:
                raise ValueError(
                    f'DetInferencer: unknown class {cls!r}; the model knows '
                    f'{list(self.classes)} (names or indices)')
        return torch.tensor(ids, dtype=torch.long)

    def _label_name(self, label: int) -> str:
        return self.classes[label] if label < len(self.classes) else str(
            label)

    def _filter(self, sample, score_thr: float, class_ids):
        """The sample with only predictions scoring ``>= score_thr`` (and of
        ``class_ids`` when given)."""
        pred = sample.pred_instances
        keep = pred.scores >= score_thr
        if class_ids is not None:
            keep &= torch.isin(pred.labels, class_ids.to(pred.labels.device))
        sample.pred_instances = pred[keep]
        return sample

    def pred2dict(self, sample) -> dict:
        """Plain-Python predictions of one data sample."""
        pred = sample.pred_instances.cpu()
        labels = [int(label) for label in pred.labels]
        return dict(
            bboxes=pred.bboxes.reshape(-1, 4).tolist(),
            scores=pred.scores.tolist(),
            labels=labels,
            label_names=[self._label_name(label) for label in labels])

    @staticmethod
    def _rgb(source) -> np.ndarray:
        if isinstance(source, np.ndarray):
            img = source if source.ndim == 3 else np.repeat(
                source[..., None], 3, axis=2)
            return img[..., ::-1]
        img = cv2.imread(source, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f'DetInferencer: cannot read {source}')
        return img[..., ::-1]

    # ---------------------------------------------------------------- call
    def __call__(self,
                 inputs: Union[InputType, Sequence[InputType]],
                 batch_size: int = 1,
                 pred_score_thr: float = 0.3,
                 classes: Optional[Sequence] = None,
                 out_dir: str = '',
                 no_save_vis: bool = False,
                 no_save_pred: bool = False,
                 return_vis: bool = False,
                 return_datasamples: bool = False,
                 show: bool = False,
                 wait_time: float = 0) -> dict:
        """Detect objects in ``inputs``.

        Args:
            inputs: an image path, a folder, a glob pattern, a BGR uint8
                ``(H, W, 3)`` array, or a list of these.
            batch_size: images per forward pass.
            pred_score_thr: keep (return, draw and save) predictions
                scoring at least this.
            classes: keep only these classes (names or label indices).
            out_dir: write ``vis/`` pictures and ``preds/`` JSON files here
                (nothing is written when empty).
            no_save_vis, no_save_pred: skip one of the two outputs.
            return_vis: also return the drawn RGB pictures.
            return_datasamples: return ``DetDataSample`` objects instead of
                dicts as predictions.
            show: open a window per image (needs a display).

        Returns:
            dict: ``predictions`` (one per image, in input order) and
            ``visualization`` (RGB arrays; empty unless ``return_vis``).
        """
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        check_score_thr(pred_score_thr)
        items = collect_inputs(inputs)
        class_ids = self._class_ids(classes)
        save_vis = bool(out_dir) and not no_save_vis
        save_pred = bool(out_dir) and not no_save_pred
        draw = save_vis or return_vis or show
        for sub, on in (('vis', save_vis), ('preds', save_pred)):
            if on:
                os.makedirs(osp.join(out_dir, sub), exist_ok=True)
        bar = (ProgressBar(len(items), file=sys.stderr)
               if self.show_progress and items else None)
        predictions, visualization = [], []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            kinds = {isinstance(src, np.ndarray) for _, src in chunk}
            pipeline = self._pipeline(kinds.pop()) if len(kinds) == 1 else None
            samples = inference_detector(
                self.model, [src for _, src in chunk], pipeline,
                batch_size=len(chunk))
            for (name, source), sample in zip(chunk, samples):
                sample = self._filter(sample, pred_score_thr, class_ids)
                if draw:
                    out_file = (osp.join(out_dir, 'vis', name)
                                if save_vis else None)
                    drawn = self.visualizer.add_datasample(
                        name, self._rgb(source), data_sample=sample,
                        draw_gt=False, show=show, wait_time=wait_time,
                        out_file=out_file, pred_score_thr=pred_score_thr)
                    if return_vis:
                        visualization.append(drawn)
                pred = self.pred2dict(sample)
                if save_pred:
                    stem = osp.splitext(name)[0]
                    with open(osp.join(out_dir, 'preds', stem + '.json'),
                              'w') as f:
                        json.dump(pred, f)
                predictions.append(sample if return_datasamples else pred)
                if bar is not None:
                    bar.update()
        if bar is not None:
            sys.stderr.write('\n')
        return dict(predictions=predictions, visualization=visualization)
