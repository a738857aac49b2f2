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
