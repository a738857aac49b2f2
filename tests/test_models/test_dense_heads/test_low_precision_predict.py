"""fp16/bf16 head outputs (autocast inference) are decoded in float32."""
import torch
from mmengine.config import ConfigDict

from detkit.models.dense_heads import RetinaHead

TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)


def test_bf16_outputs_decode_like_their_float32_values():
    head = RetinaHead(num_classes=3, in_channels=8, stacked_convs=0,
                      feat_channels=8, test_cfg=TEST_CFG)
    g = torch.Generator().manual_seed(0)
    # P3-P7 of a 256x384 input.
    sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    cls = [(torch.randn(1, 27, h, w, generator=g) * 3).bfloat16()
           for h, w in sizes]
    reg = [(torch.randn(1, 36, h, w, generator=g) * 0.3).bfloat16()
           for h, w in sizes]
    meta = dict(img_shape=(256, 384), scale_factor=(1., 1.))
    low = head.predict_by_feat(cls, reg, batch_img_metas=[meta],
                               cfg=ConfigDict(TEST_CFG))[0]
    ref = head.predict_by_feat([c.float() for c in cls],
                               [r.float() for r in reg],
                               batch_img_metas=[meta],
                               cfg=ConfigDict(TEST_CFG))[0]
    assert len(ref) == 100  # max_per_img
    assert low.bboxes.dtype == low.scores.dtype == torch.float32
    # The same numbers: the bf16 outputs are upcast before anything else.
    assert torch.equal(low.bboxes, ref.bboxes)
    assert torch.equal(low.scores, ref.scores)
    assert torch.equal(low.labels, ref.labels)


def _rpn_head():
    from detkit.models.dense_heads import RPNHead
    return RPNHead(
        in_channels=4, feat_channels=4,
        anchor_generator=dict(type='AnchorGenerator', scales=[8],
                              ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
        loss_bbox=dict(type='L1Loss'),
        test_cfg=dict(nms_pre=300, max_per_img=200, min_bbox_size=0,
                      nms=dict(type='nms', iou_threshold=0.7)))


def test_bf16_rpn_proposals_equal_those_of_their_float32_values():
    head = _rpn_head()
    g = torch.Generator().manual_seed(1)
    # P2-P6 of a 640x960 input: bf16 anchors there would be coarse.
    sizes = [(160, 240), (80, 120), (40, 60), (20, 30), (10, 15)]
    cls = [(torch.randn(1, 3, h, w, generator=g) * 2).bfloat16()
           for h, w in sizes]
    reg = [(torch.randn(1, 12, h, w, generator=g) * 0.2).bfloat16()
           for h, w in sizes]
    meta = dict(img_shape=(640, 960), scale_factor=(1., 1.))
    low = head.predict_by_feat(cls, reg, batch_img_metas=[meta])[0]
    ref = head.predict_by_feat([c.float() for c in cls],
                               [r.float() for r in reg],
                               batch_img_metas=[meta])[0]
    assert len(ref) == 200
    assert low.bboxes.dtype == low.scores.dtype == torch.float32
    assert torch.equal(low.bboxes, ref.bboxes)
    assert torch.equal(low.scores, ref.scores)


def test_bf16_roi_head_outputs_decode_like_their_float32_values():
    from detkit.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    head = Shared2FCBBoxHead(in_channels=2, fc_out_channels=8,
                             roi_feat_size=7, num_classes=3)
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(50, 2, generator=g) * 800
    wh = 20 + torch.rand(50, 2, generator=g) * 200
    rois = torch.cat([torch.zeros(50, 1), xy, xy + wh], 1)
    logits = torch.randn(50, 4, generator=g) * 3
    deltas = torch.randn(50, 12, generator=g) * 0.2
    meta = dict(img_shape=(1000, 1000), scale_factor=(0.8, 0.8))
    cfg = dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
               max_per_img=100)
    low = head.predict_by_feat(
        (rois.bfloat16(), ), (logits.bfloat16(), ), (deltas.bfloat16(), ),
        [meta], rcnn_test_cfg=cfg, rescale=True)[0]
    ref = head.predict_by_feat(
        (rois.bfloat16().float(), ), (logits.bfloat16().float(), ),
        (deltas.bfloat16().float(), ), [meta], rcnn_test_cfg=cfg,
        rescale=True)[0]
    assert len(ref) > 10
    assert low.bboxes.dtype == low.scores.dtype == torch.float32
    assert torch.equal(low.bboxes, ref.bboxes)
    assert torch.equal(low.scores, ref.scores)
    assert torch.equal(low.labels, ref.labels)
