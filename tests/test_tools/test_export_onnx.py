"""tools/deployment/export_onnx.py: onnxruntime's detections on a real
BCCD picture equal PyTorch's (``model.predict`` through the test
pipeline)."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from toolbox_toys import (make_checkpoint, run_tool, tiny_cfg,  # noqa: F401
                          tiny_setup, write_cfg)

pytest.importorskip('onnx', reason='onnx is optional (requirements/'
                    'optional.txt): pip install onnx onnxruntime')
ort = pytest.importorskip('onnxruntime', reason='onnxruntime is optional '
                          '(requirements/optional.txt)')

from detkit.apis import (build_test_pipeline, inference_detector,  # noqa: E402
                         init_detector)

EXPORT = run_tool('tools', 'deployment', 'export_onnx.py')


def _cfg(data_root, scale):
    """Tiny RetinaNet for BCCD's 3 classes, test images resized to
    ``scale = (w, h)`` (keep ratio); per level the top 300 pairs above
    0.3 go to NMS, 50 boxes are kept."""
    cfg = tiny_cfg(data_root, num_classes=3, max_per_img=50)
    cfg['model']['test_cfg'].update(nms_pre=300, score_thr=0.3)
    loader = copy.deepcopy(cfg['test_dataloader'])
    loader['dataset']['pipeline'][1]['scale'] = scale
    cfg['test_dataloader'] = cfg['val_dataloader'] = loader
    return cfg


def _compare(onnx_file, cfg, ckpt, image, tied_order=False):
    model = init_detector(cfg if isinstance(cfg, str) else Config(cfg), ckpt)
    expected = inference_detector(model, image).pred_instances
    packed = build_test_pipeline(model.cfg)(dict(img_path=image, img_id=0))
    feed = dict(input=packed['inputs'][None].float().numpy(),
                scale_factor=np.asarray(packed['data_samples'].scale_factor,
                                        dtype=np.float32))
    session = ort.InferenceSession(onnx_file,
                                   providers=['CPUExecutionProvider'])
    boxes, scores, labels = session.run(None, feed)
    assert len(expected) > 10  # enough boxes for the comparison to bite
    assert labels.dtype == np.int64
    if tied_order:
        # Detections whose scores agree to float rounding may come in
        # either order: put each library's equal-score runs in box order.
        def order(b, s, l):
            return np.lexsort((b[:, 1], b[:, 0], np.round(s, 5)))[::-1]
        exp = [t.numpy() for t in (expected.bboxes, expected.scores,
                                   expected.labels)]
        mine = order(boxes, scores, labels)
        theirs = order(*exp)
        boxes, scores, labels = boxes[mine], scores[mine], labels[mine]
        expected = expected[torch.from_numpy(theirs.copy())]
    np.testing.assert_array_equal(labels, expected.labels.numpy())
    np.testing.assert_allclose(scores, expected.scores.numpy(), atol=1e-5)
    # Float32 convolutions in onnxruntime and torch round differently; on
    # the 640 x 480 original the boxes agree to a hundredth of a pixel.
    np.testing.assert_allclose(boxes, expected.bboxes.numpy(), rtol=0,
                               atol=1e-2)
    return packed['inputs'].shape


def test_onnx_matches_pytorch_on_bccd(bccd_dir, tmp_path):
    image = osp.join(bccd_dir, 'images', 'BloodImage_00000.jpg')
    cfg = _cfg(bccd_dir, (320, 240))
    cfg_file = write_cfg(cfg, tmp_path / 'bccd_retinanet.py')
    ckpt = str(tmp_path / 'bccd_retinanet.pth')
    torch.manual_seed(0)
    model = make_checkpoint(cfg, ckpt)
    # Spread the scores so that ranks and NMS decisions are not ties.
    with torch.no_grad():
        model.bbox_head.retina_cls.weight.normal_(0, 0.3)
        model.bbox_head.retina_reg.weight.normal_(0, 0.1)
    from detkit.engine import save_checkpoint_file
    save_checkpoint_file(dict(state_dict=model.state_dict()), ckpt)

    static = str(tmp_path / 'static.onnx')
    EXPORT['main']([cfg_file, ckpt, '--shape', '240', '320', '--out', static])
    assert _compare(static, cfg, ckpt, image) == (3, 240, 320)

    # --dynamic: one graph for any size, here 200 x 150 (padded to 224 x 160
    # inside the graph).
    dynamic = str(tmp_path / 'dynamic.onnx')
    EXPORT['main']([cfg_file, ckpt, '--shape', '240', '320', '--out',
                    dynamic, '--dynamic'])
    assert _compare(dynamic, _cfg(bccd_dir, (200, 150)), ckpt,
                    image) == (3, 150, 200)


def test_two_stage_detectors_are_refused():
    class TwoStage(torch.nn.Module):
        bbox_head = None
        roi_head = torch.nn.Identity()

    with pytest.raises(NotImplementedError, match='single-stage'):
        EXPORT['SingleStageONNX'](TwoStage())


def test_ssdlite_onnx_matches_pytorch_on_bccd(bccd_dir, tmp_path):
    """SSD: softmax scores (background last), anchors varying per level."""
    cfg = Config.fromfile(osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
        'configs', 'ssd', 'ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'))
    channels = (24, 1280, 64, 32, 32, 16)  # widen_factor 0.25, thin extras
    cfg.merge_from_dict({
        'model.backbone.widen_factor': 0.25,
        'model.neck.in_channels': channels[:2],
        'model.neck.out_channels': channels,
        'model.bbox_head.in_channels': channels,
        'model.bbox_head.num_classes': 3,
        'model.test_cfg.max_per_img': 50,
        'test_dataloader.dataset.metainfo': dict(
            classes=('RBC', 'WBC', 'Platelets')),
    })
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (160, 160)
    torch.manual_seed(0)
    model = init_detector(cfg)
    with torch.no_grad():  # activations of order 1, so scores differ
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight,
                                              nonlinearity='relu')
    from detkit.engine import save_checkpoint_file
    ckpt = str(tmp_path / 'ssdlite.pth')
    save_checkpoint_file(dict(state_dict=model.state_dict()), ckpt)
    cfg_file = str(tmp_path / 'ssdlite.py')
    cfg.dump(cfg_file)
    onnx_file = str(tmp_path / 'ssdlite.onnx')
    EXPORT['main']([cfg_file, ckpt, '--shape', '160', '--out', onnx_file])
    image = osp.join(bccd_dir, 'images', 'BloodImage_00000.jpg')
    assert _compare(onnx_file, cfg_file, ckpt, image) == (3, 160, 160)


def test_heads_that_predict_their_own_way_are_refused(tiny_setup):  # noqa
    model = init_detector(tiny_setup['cfg_file'])
    head = model.bbox_head

    class OwnPrediction(type(head)):

        def predict_by_feat(self, *args, **kwargs):
            return []

    head.__class__ = OwnPrediction
    with pytest.raises(NotImplementedError, match='predicts its own way'):
        EXPORT['SingleStageONNX'](model)


def test_heads_with_nms_per_level_are_refused(tiny_setup):  # noqa
    # RPNHead inherits AnchorHead.predict_by_feat but runs NMS per level:
    # the per-class graph would give other proposals.
    model = init_detector(tiny_setup['cfg_file'])
    model.bbox_head.nms_groups = 'level'
    with pytest.raises(NotImplementedError, match="groups NMS by 'level'"):
        EXPORT['SingleStageONNX'](model)


def _faster_rcnn_cfg(width=32):
    """Faster R-CNN R50-FPN's config with a ResNet-18, ``width``-channel
    FPN / RPN / RoI features, 64-wide shared fcs and BCCD's 3 classes, test
    images resized to fit 320x240."""
    cfg = Config.fromfile(osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
        'configs', 'faster_rcnn', 'faster-rcnn_r50_fpn_1x_coco.py'))
    cfg.merge_from_dict({
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': width,
        'model.rpn_head.in_channels': width,
        'model.rpn_head.feat_channels': width,
        'model.roi_head.bbox_roi_extractor.out_channels': width,
        'model.roi_head.bbox_head.in_channels': width,
        'model.roi_head.bbox_head.fc_out_channels': 64,
        'model.roi_head.bbox_head.num_classes': 3,
        'test_dataloader.dataset.metainfo': dict(
            classes=('RBC', 'WBC', 'Platelets')),
    })
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (320, 240)
    return cfg


def test_faster_rcnn_onnx_matches_pytorch_on_bccd(bccd_dir, tmp_path):
    """Two-stage: RPN proposals (top-k per level, NMS within levels),
    RoIAlign from each proposal's level, the box head, class-wise decoding
    and multiclass NMS, in one graph; --dynamic, traced at another size
    than the picture's."""
    cfg = _faster_rcnn_cfg()
    torch.manual_seed(0)
    model = init_detector(cfg)
    with torch.no_grad():  # He-scaled weights: boxes and scores spread
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.normal_(
                    module.weight, std=(2 / module.weight[0].numel())**0.5)
        # ... but objectness well inside (0, 1) and moderate deltas:
        # saturated scores tie at 1.0, and onnxruntime's TopK /
        # NonMaxSuppression order ties differently from torch's (other
        # proposals); exp() of large deltas turns float rounding into
        # pixels.
        for layer in (model.rpn_head.rpn_cls, model.rpn_head.rpn_reg,
                      model.roi_head.bbox_head.fc_reg):
            layer.weight.mul_(0.1)
    from detkit.engine import save_checkpoint_file
    ckpt = str(tmp_path / 'faster_rcnn.pth')
    save_checkpoint_file(dict(state_dict=model.state_dict()), ckpt)
    cfg_file = str(tmp_path / 'faster_rcnn.py')
    cfg.dump(cfg_file)
    onnx_file = str(tmp_path / 'faster_rcnn.onnx')
    EXPORT['main']([cfg_file, ckpt, '--shape', '256', '320', '--dynamic',
                    '--out', onnx_file])
    image = osp.join(bccd_dir, 'images', 'BloodImage_00000.jpg')
    assert _compare(onnx_file, cfg_file, ckpt, image,
                    tied_order=True) == (3, 240, 320)


def test_two_stage_variants_it_cannot_reproduce_are_refused(bccd_dir):
    model = init_detector(_faster_rcnn_cfg())
    model.roi_head.bbox_head.reg_class_agnostic = True
    with pytest.raises(NotImplementedError, match='class-specific'):
        EXPORT['onnx_wrapper'](model)
    model.rpn_head = torch.nn.Identity()
    with pytest.raises(NotImplementedError, match='an RPNHead'):
        EXPORT['TwoStageONNX'](model)


def test_clip_to_image_clips_each_pair_and_keeps_empty_inputs():
    clip = EXPORT['clip_to_image']
    boxes = torch.tensor([[-3., 2., 50., 9., 10., -1., 12., 40.]])
    out = clip(boxes, torch.tensor(30.), torch.tensor(20.))
    assert out.tolist() == [[0., 2., 20., 9., 10., 0., 12., 30.]]
    # Random weights can leave no box above score_thr while tracing.
    empty = clip(torch.zeros(0, 4), 30, 20)
    assert empty.shape == (0, 4)
    assert clip(torch.zeros(2, 0, 8), 30, 20).shape == (2, 0, 8)
