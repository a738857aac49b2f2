"""Export a detector (single-stage: RetinaNet, SSD, ...; two-stage: Faster
R-CNN) to ONNX, boxes decoded and NMS included.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --shape 800 1216 \
        --out retinanet.onnx [--dynamic] [--opset 17] [--verify]

The graph (batch 1):

- inputs: ``input`` ``(1, 3, H, W)`` float32, the image *after* the test
  pipeline's resize, BGR 0..255 as OpenCV reads it (``H, W`` from
  ``--shape``; any size with ``--dynamic``); ``scale_factor`` ``(2,)``
  float32, the pipeline's ``(w_scale, h_scale)`` (``[1, 1]`` keeps boxes in
  input pixels).
- inside: the DetDataPreprocessor's channel flip, normalisation and padding
  to ``pad_size_divisor``; backbone, neck, head; per level the top
  ``nms_pre`` (prior, class) pairs scoring above ``score_thr``; box
  decoding clipped to ``(H, W)``; rescale by ``1 / scale_factor``; the
  ``min_bbox_size`` filter; class-wise NMS (mmcv's coordinate-offset
  trick, ``NonMaxSuppression``); the first ``max_per_img``.
- two-stage detectors (:class:`TwoStageONNX`: an ``RPNHead``, a
  ``StandardRoIHead`` with ``SingleRoIExtractor`` and a box head with
  class-specific regression): per level the ``test_cfg.rpn.nms_pre`` best
  anchors by objectness, decoded and clipped, boxes not larger than
  ``min_bbox_size`` dropped, NMS within each level, the first
  ``max_per_img`` proposals; each proposal pooled (RoIAlign, ONNX opset
  >= 16 for ``aligned=True``) from the level its scale maps to; the box
  head; softmax, class-wise decoding clipped to ``(H, W)``, rescale,
  ``multiclass_nms`` (pairs above ``test_cfg.rcnn.score_thr``, class-wise
  NMS, ``max_per_img``).
- outputs: ``boxes`` ``(N, 4)`` x1, y1, x2, y2 in original-image pixels,
  ``scores`` ``(N,)`` and ``labels`` ``(N,)`` int64, by descending score:
  the same as ``model.predict`` in PyTorch (``test_cfg`` of the config).

Uses torch's TorchScript-based exporter (``dynamo=False``; opset >= 11 for
NonMaxSuppression). Above 10000 candidates mmcv runs NMS per class; the
graph always runs one NMS (the same result unless boxes of different
classes share coordinates beyond the offset; configs keep ``nms_pre *
levels`` below 10000).
"""
import argparse
import os.path as osp
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from torchvision.ops import nms


def preprocess(pre, image):
    """The DetDataPreprocessor ``pre``'s channel flip, normalisation and
    padding to ``pad_size_divisor`` of ``image (1, 3, H, W)``."""
    x = image[:, [2, 1, 0]] if getattr(pre, '_channel_conversion',
                                       False) else image
    if getattr(pre, '_enable_normalize', False):
        x = (x - pre.mean) / pre.std
    divisor = int(getattr(pre, 'pad_size_divisor', 1))
    h, w = image.shape[-2:]
    pad_h = (divisor - h % divisor) % divisor
    pad_w = (divisor - w % divisor) % divisor
    return F.pad(x, (0, pad_w, 0, pad_h),
                 value=float(getattr(pre, 'pad_value', 0)))


def grid_anchors(generator, level, feat):
    """The anchors of ``AnchorGenerator.single_level_grid_priors`` (order
    y, x, anchor; same float ops), from the traced feature size so that
    ``--dynamic`` graphs follow the input size."""
    base = generator.base_anchors[level].to(feat)
    stride_w, stride_h = generator.strides[level]
    feat_h, feat_w = feat.shape[-2:]
    shift_x = torch.arange(feat_w, device=feat.device).to(
        feat.dtype) * stride_w
    shift_y = torch.arange(feat_h, device=feat.device).to(
        feat.dtype) * stride_h
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], -1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def clip_to_image(boxes, h, w):
    """``x`` into ``[0, w]``, ``y`` into ``[0, h]`` (traced sizes stay
    symbolic); ``boxes (..., 4k)``."""
    limit = torch.stack([w, h]).to(boxes) if isinstance(
        w, torch.Tensor) else boxes.new_tensor([w, h])
    # The pair count is spelled out: with no boxes left, -1 is ambiguous.
    shaped = boxes.reshape(*boxes.shape[:-1], boxes.shape[-1] // 2, 2)
    return torch.minimum(shaped.clamp(min=0), limit).reshape(boxes.shape)


def grouped_nms(boxes, scores, groups, iou_threshold):
    """mmcv's ``batched_nms`` in one NMS: every box of group ``k`` shifted
    by ``k * (max coordinate + 1)``; indices of the kept boxes by
    descending score."""
    # A zero joins the coordinates so that max() is defined when nothing
    # is left; boxes are clipped to >= 0, so it never wins.
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    shifted = boxes + (groups.to(boxes) * (top + 1))[:, None]
    return nms(shifted, scores, iou_threshold)


def _nms_threshold(nms_cfg, where):
    nms_cfg = dict(nms_cfg or {})
    if nms_cfg.get('type', 'nms') != 'nms' or 'iou_threshold' not in nms_cfg:
        raise NotImplementedError(f'{where}.nms={nms_cfg}: only '
                                  "dict(type='nms', iou_threshold=...)")
    return float(nms_cfg['iou_threshold']), nms_cfg.get('class_agnostic',
                                                        False)


def _top_k(scores, nms_pre):
    """``topk`` of the 1-D ``scores`` with ``k = min(len, nms_pre)``
    (``nms_pre <= 0``: all), kept symbolic while tracing."""
    k = scores.shape[0]
    if nms_pre > 0:
        k = (torch.clamp(k, max=nms_pre) if isinstance(k, torch.Tensor) else
             min(k, nms_pre))
    return scores.topk(k)


class SingleStageONNX(nn.Module):
    """A single-stage detector whose ``bbox_head`` is an ``AnchorHead``
    (priors, ``bbox_coder``, ``_scores_of``), as one exportable module:
    ``forward(input (1, 3, H, W), scale_factor (2,)) -> boxes, scores,
    labels``."""

    def __init__(self, model):
        super().__init__()
        head = getattr(model, 'bbox_head', None)
        if getattr(model, 'roi_head', None) is not None or head is None:
            raise NotImplementedError(
                f'{type(model).__name__}: export_onnx.py exports '
                'single-stage detectors (a bbox_head and no roi_head), such '
                'as RetinaNet and SSD')
        from detkit.models.dense_heads import AnchorHead
        if not isinstance(head, AnchorHead) or (
                type(head).predict_by_feat is not AnchorHead.predict_by_feat
                or head.nms_groups != 'class'):
            # The graph reproduces AnchorHead.predict_by_feat with NMS per
            # class; RPNHead shares that method but runs NMS per level.
            raise NotImplementedError(
                f'{type(head).__name__}: export_onnx.py reproduces '
                'AnchorHead.predict_by_feat with NMS per class (RetinaHead, '
                'SSDHead); this head is not an AnchorHead, predicts its own '
                f'way or groups NMS by {getattr(head, "nms_groups", None)!r}')
        self.model = model
        self.head = head
        cfg = head.test_cfg
        self.nms_pre = cfg.get('nms_pre', -1)
        self.score_thr = float(cfg.get('score_thr', 0))
        self.min_bbox_size = cfg.get('min_bbox_size', -1)
        self.max_per_img = cfg.get('max_per_img', -1)
        self.iou_threshold, self.class_agnostic = _nms_threshold(
            cfg.get('nms'), 'test_cfg')
        self.pre = model.data_preprocessor

    def _level(self, level, cls_score, bbox_pred):
        """Top pairs of one level: ``boxes (K, 4)`` in input pixels,
        ``scores (K,)``, ``labels (K,)``."""
        from detkit.models.utils import levels_to_images
        head = self.head
        priors = grid_anchors(head.prior_generator, level, cls_score)
        scores = head._scores_of(
            levels_to_images([cls_score], head.cls_out_channels))[0]
        deltas = levels_to_images([bbox_pred],
                                  head.bbox_coder.encode_size)[0]
        num_classes = scores.shape[1]
        # Thresholding after the top-k keeps the same pairs as mmcv's
        # threshold-then-top-k: every pair above the threshold outranks
        # every pair at or below it.
        top, idx = _top_k(scores.reshape(-1), self.nms_pre)
        prior_idx = torch.div(idx, num_classes, rounding_mode='floor')
        labels = idx - prior_idx * num_classes
        # Decode all k before filtering: the coder returns empty inputs
        # unchanged, a branch the tracer would freeze into the graph.
        boxes = head.bbox_coder.decode(priors[prior_idx], deltas[prior_idx])
        keep = top > self.score_thr
        return boxes[keep], top[keep], labels[keep]

    def forward(self, image, scale_factor):
        h, w = image.shape[-2:]
        feats = self.model.extract_feat(preprocess(self.pre, image))
        cls_scores, bbox_preds = self.head(feats)
        levels = [self._level(i, c, b)
                  for i, (c, b) in enumerate(zip(cls_scores, bbox_preds))]
        boxes = torch.cat([lvl[0] for lvl in levels])
        scores = torch.cat([lvl[1] for lvl in levels])
        labels = torch.cat([lvl[2] for lvl in levels])
        if getattr(self.head.bbox_coder, 'clip_border', True):
            boxes = clip_to_image(boxes, h, w)
        # mmdetection multiplies by the float32 reciprocal of the scale.
        boxes = boxes * (1 / scale_factor).repeat(2)
        if self.min_bbox_size >= 0:
            keep = ((boxes[:, 2] - boxes[:, 0] > self.min_bbox_size) &
                    (boxes[:, 3] - boxes[:, 1] > self.min_bbox_size))
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if self.class_agnostic:
            keep = nms(boxes, scores, self.iou_threshold)
        else:
            keep = grouped_nms(boxes, scores, labels, self.iou_threshold)
        if self.max_per_img > 0:
            keep = keep[:self.max_per_img]
        return boxes[keep], scores[keep], labels[keep]


class TwoStageONNX(nn.Module):
    """Faster R-CNN-style detector (``RPNHead``, ``StandardRoIHead`` with a
    ``SingleRoIExtractor`` and a class-specific box head) as one exportable
    module, with the forward of :class:`SingleStageONNX`."""

    def __init__(self, model):
        super().__init__()
        from detkit.models.dense_heads import RPNHead
        from detkit.models.roi_heads import StandardRoIHead
        from detkit.models.roi_heads.roi_extractors import \
            SingleRoIExtractor
        rpn, roi = (getattr(model, 'rpn_head', None),
                    getattr(model, 'roi_head', None))
        name = type(model).__name__
        if type(rpn) is not RPNHead or type(roi) is not StandardRoIHead:
            raise NotImplementedError(
                f'{name}: export_onnx.py exports two-stage detectors with '
                'an RPNHead and a StandardRoIHead (Faster R-CNN); got '
                f'{type(rpn).__name__} and {type(roi).__name__}')
        head = roi.bbox_head
        if roi.with_shared_head or type(
                roi.bbox_roi_extractor) is not SingleRoIExtractor or \
                head.reg_class_agnostic or head.reg_decoded_bbox or \
                not head.with_reg:
            raise NotImplementedError(
                f'{name}: export_onnx.py reproduces a SingleRoIExtractor '
                'and a box head with class-specific delta regression, '
                'without a shared head (C4)')
        self.model, self.rpn, self.roi = model, rpn, roi
        self.pre = model.data_preprocessor
        self.rpn_cfg = rpn.test_cfg
        self.rcnn_cfg = roi.test_cfg
        self.rpn_iou, _ = _nms_threshold(self.rpn_cfg.get('nms'),
                                         'test_cfg.rpn')
        self.rcnn_iou, self.rcnn_class_agnostic = _nms_threshold(
            self.rcnn_cfg.get('nms'), 'test_cfg.rcnn')

    def _proposals(self, feats, h, w):
        """Proposals ``(P, 4)`` in input pixels: RPNHead's prediction
        (``nms_groups='level'``) for one image."""
        from detkit.models.utils import levels_to_images
        rpn, cfg = self.rpn, self.rpn_cfg
        cls_scores, bbox_preds = rpn(feats)
        boxes, scores, level_ids = [], [], []
        for level, (cls_score, bbox_pred) in enumerate(
                zip(cls_scores, bbox_preds)):
            priors = grid_anchors(rpn.prior_generator, level, cls_score)
            objectness = rpn._scores_of(levels_to_images([cls_score],
                                                         1))[0, :, 0]
            deltas = levels_to_images([bbox_pred], 4)[0]
            top, idx = _top_k(objectness, cfg.get('nms_pre', -1))
            boxes.append(rpn.bbox_coder.decode(priors[idx], deltas[idx]))
            scores.append(top)
            level_ids.append(torch.full_like(idx, level))
        boxes = clip_to_image(torch.cat(boxes), h, w)
        scores, level_ids = torch.cat(scores), torch.cat(level_ids)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            keep = ((boxes[:, 2] - boxes[:, 0] > min_size) &
                    (boxes[:, 3] - boxes[:, 1] > min_size))
            boxes, scores, level_ids = (boxes[keep], scores[keep],
                                        level_ids[keep])
        keep = grouped_nms(boxes, scores, level_ids, self.rpn_iou)
        if cfg.get('max_per_img', -1) > 0:
            keep = keep[:cfg['max_per_img']]
        return boxes[keep]

    def _roi_feats(self, feats, rois):
        """SingleRoIExtractor: each RoI pooled from the level its scale
        maps to (``nonzero`` per level, so each level pools its own)."""
        from torchvision.ops import roi_align

        from detkit.models.roi_heads.roi_extractors.single_level_roi_extractor \
            import map_roi_levels
        extractor = self.roi.bbox_roi_extractor
        layers = extractor.roi_layers
        num_levels = extractor.num_inputs
        out_h, out_w = layers[0].output_size
        roi_feats = feats[0].new_zeros(
            (rois.shape[0], extractor.out_channels, out_h, out_w))
        levels = map_roi_levels(rois, num_levels, extractor.finest_scale)
        for level in range(num_levels):
            inds = (levels == level).nonzero()[:, 0]
            layer = layers[level]
            roi_feats[inds] = roi_align(
                feats[level], rois[inds], layer.output_size,
                layer.spatial_scale, layer.sampling_ratio, layer.aligned)
        return roi_feats

    def forward(self, image, scale_factor):
        h, w = image.shape[-2:]
        feats = self.model.extract_feat(preprocess(self.pre, image))
        proposals = self._proposals(feats, h, w)
        rois = torch.cat([proposals.new_zeros(proposals.shape[0], 1),
                          proposals], 1)
        extractor = self.roi.bbox_roi_extractor
        cls_score, bbox_pred = self.roi.bbox_head(
            self._roi_feats(feats[:extractor.num_inputs], rois))
        head, cfg = self.roi.bbox_head, self.rcnn_cfg
        scores = F.softmax(cls_score, dim=-1)[:, :-1]  # (R, C)
        num_classes = scores.shape[1]
        boxes = head.bbox_coder.decode(proposals, bbox_pred)  # (R, 4C)
        if getattr(head.bbox_coder, 'clip_border', True):
            boxes = clip_to_image(boxes, h, w)
        boxes = (boxes.reshape(-1, num_classes, 4) *
                 (1 / scale_factor).repeat(2)).reshape(-1, 4)
        labels = torch.arange(num_classes, device=boxes.device).repeat(
            scores.shape[0])
        scores = scores.reshape(-1)
        keep = (scores > float(cfg['score_thr'])).nonzero()[:, 0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if self.rcnn_class_agnostic:
            keep = nms(boxes, scores, self.rcnn_iou)
        else:
            keep = grouped_nms(boxes, scores, labels, self.rcnn_iou)
        if cfg.get('max_per_img', -1) > 0:
            keep = keep[:cfg['max_per_img']]
        return boxes[keep], scores[keep], labels[keep]


def onnx_wrapper(model):
    """:class:`TwoStageONNX` for a detector with a ``roi_head``, else
    :class:`SingleStageONNX` (both refuse what they cannot reproduce)."""
    if getattr(model, 'roi_head', None) is not None:
        return TwoStageONNX(model)
    return SingleStageONNX(model)


def export(model, out_file, shape, dynamic=False, opset=17):
    """Trace :func:`onnx_wrapper` of ``model`` at ``shape = (H, W)`` and
    write ``out_file``; returns the wrapper (in eval mode)."""
    wrapper = onnx_wrapper(model).eval()
    height, width = shape
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width, generator=gen) * 255
    scale_factor = torch.ones(2)
    axes = None
    if dynamic:
        axes = dict(input={2: 'height', 3: 'width'}, boxes={0: 'num_dets'},
                    scores={0: 'num_dets'}, labels={0: 'num_dets'})
    with warnings.catch_warnings():
        # The legacy exporter's deprecation and tracer notes are expected.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            wrapper, (image, scale_factor), out_file, dynamo=False,
            opset_version=opset, input_names=['input', 'scale_factor'],
            output_names=['boxes', 'scores', 'labels'], dynamic_axes=axes,
            do_constant_folding=True)
    return wrapper


def verify(wrapper, out_file, shape):
    """Run the file with onnxruntime on a random image; returns the
    largest absolute difference from PyTorch (boxes and scores), and
    raises when the detections differ in number or labels."""
    import numpy as np
    import onnxruntime as ort
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, *shape, generator=gen) * 255
    scale = torch.ones(2)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(image, scale)]
    session = ort.InferenceSession(out_file,
                                   providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': image.numpy(),
                             'scale_factor': scale.numpy()})
    if got[0].shape != expected[0].shape or not np.array_equal(
            got[2], expected[2]):
        raise RuntimeError(f'onnxruntime gives {len(got[0])} detections, '
                           f'PyTorch {len(expected[0])} (or other labels)')
    return max(float(np.abs(g - e).max(initial=0))
               for g, e in zip(got[:2], expected[:2]))


def test_input_shape(cfg, default=(800, 1333)):
    """``(H, W)`` of the config's test images after its ``Resize``
    (``scale=(w, h)``), to trace a ``--dynamic`` graph at a typical size."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset = loader.get('dataset', {})
    while 'dataset' in dataset:  # wrappers
        dataset = dataset['dataset']
    for step in dataset.get('pipeline', []):
        scale = step.get('scale')
        if step.get('type') == 'Resize' and scale is not None:
            w, h = (scale, scale) if isinstance(scale, int) else scale
            return (min(h, w), max(h, w)) if step.get('keep_ratio') else \
                (h, w)
    return default


class ORTDetector:
    """An exported graph in onnxruntime's CPU session, with the
    ``test_step`` of a detector: it takes the test pipeline's batch
    (``inputs``: uint8 ``(3, H, W)`` BGR images, ``data_samples`` with
    ``scale_factor``) and returns the data samples with ``pred_instances``
    (``bboxes`` in original-image pixels, ``scores``, ``labels``), one
    image per ``session.run``.

    Args:
        onnx_file: the export of :func:`export` (``--dynamic`` for test
            images of varying size).
        threads: onnxruntime's intra-op threads (None: its default, one
            per core); inter-op parallelism is off, as in torch.
    """

    def __init__(self, onnx_file, threads=None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            onnx_file, options, providers=['CPUExecutionProvider'])

    def test_step(self, data):
        import numpy as np
        from mmengine.structures import InstanceData
        samples = data['data_samples']
        for image, sample in zip(data['inputs'], samples):
            feed = dict(
                input=image[None].float().numpy(),
                scale_factor=np.asarray(sample.metainfo['scale_factor'],
                                        dtype=np.float32))
            boxes, scores, labels = self.session.run(None, feed)
            sample.pred_instances = InstanceData(
                bboxes=torch.from_numpy(boxes),
                scores=torch.from_numpy(scores),
                labels=torch.from_numpy(labels))
        return samples


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--shape', type=int, nargs='+', required=True,
                        help='input height and width after resizing (one '
                        'number: square)')
    parser.add_argument('--out', help='ONNX file (default: the checkpoint '
                        'name with .onnx)')
    parser.add_argument('--dynamic', action='store_true',
                        help='accept any input height and width')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on a random '
                        'image')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the path of the written file."""
    args = parse_args(argv)
    if len(args.shape) not in (1, 2):
        raise SystemExit(f'--shape takes H W or one size, got {args.shape}')
    shape = tuple((args.shape * 2)[:2])
    out = args.out or osp.splitext(args.checkpoint)[0] + '.onnx'
    from detkit.apis import init_detector
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = init_detector(cfg, args.checkpoint, device='cpu')
    wrapper = export(model, out, shape, args.dynamic, args.opset)
    print(f'wrote {out} (input 1x3x{shape[0]}x{shape[1]}'
          f'{", dynamic H and W" if args.dynamic else ""})')
    if args.verify:
        diff = verify(wrapper, out, shape)
        print(f'onnxruntime matches PyTorch (max abs difference {diff:.2e})')
    return out


if __name__ == '__main__':
    main()
