"""The training loss path reads no device value on the host where it does
not have to (on a GPU every such read waits for all queued work).

Reads are counted with a dispatch mode on the CPU: ``.item()``,
``float()``, ``int()``, ``bool()`` of a tensor all run
``aten._local_scalar_dense``, and ``nonzero`` (and boolean indexing)
needs the output size on the host. What remains is named below; the
values are unchanged (the bitwise tests of each loss and sampler).
"""
import collections
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch.utils._python_dispatch import TorchDispatchMode

from detkit.models.losses import CrossEntropyLoss, FocalLoss, L1Loss, \
    SmoothL1Loss
from detkit.models.task_modules.samplers import PseudoSampler, RandomSampler
from detkit.registry import MODELS

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
READS = {'aten._local_scalar_dense', 'aten.nonzero', 'aten.masked_select'}


class CountHostReads(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in READS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _reads(fn):
    with CountHostReads() as mode:
        out = fn()
    return out, dict(mode.counts)


def test_box_losses_and_avg_factors_read_nothing():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(50, 4, generator=g, requires_grad=True)
    target = torch.randn(50, 4, generator=g)
    weight = (torch.rand(50, 4, generator=g) > 0.7).float()
    for loss in (L1Loss(), SmoothL1Loss(beta=1 / 9)):
        out, reads = _reads(lambda: loss(pred, target, weight,
                                         avg_factor=12.))
        assert reads == {}
        expected = (loss(pred, target, reduction_override='none') *
                    weight).sum() / (12. + torch.finfo(torch.float32).eps)
        assert torch.equal(out, expected)
        # No positive weight: mmdetection's (pred * weight).sum(), chosen
        # on the device.
        zero, reads = _reads(lambda: loss(pred, target, weight * 0,
                                          avg_factor=0.))
        assert reads == {} and zero.item() == 0 and zero.requires_grad
    pos = torch.rand(2, 100, generator=g) > 0.9
    neg = ~pos & (torch.rand(2, 100, generator=g) > 0.5)
    for sampler, expected in (
            (PseudoSampler(), pos.sum(1).clamp(min=1).sum()),
            (RandomSampler(256, 0.5), pos.sum(1).clamp(min=1).sum() +
             neg.sum(1).clamp(min=1).sum())):
        factor, reads = _reads(lambda: sampler.avg_factor(pos, neg))
        assert reads == {}
        assert factor.dtype == torch.float32 and factor == expected


def test_focal_and_sigmoid_ce_read_nothing_but_the_cpu_label_check():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 9, (300, ), generator=g)  # 8 = background
    weight = torch.rand(300, generator=g)

    def focal():
        out = FocalLoss()(logits, labels, weight, avg_factor=20.)
        out.backward()
        return out

    _, reads = _reads(focal)
    # labels.min() and labels.max(): on the CPU only (on a GPU the range
    # check is torch._assert_async, read by nobody).
    assert reads == {'aten._local_scalar_dense': 2}
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 8\]'):
        FocalLoss()(logits, labels + 1, weight, avg_factor=20.)
    bce = CrossEntropyLoss(use_sigmoid=True)
    binary = torch.randn(300, 1, generator=g)
    objectness = torch.randint(0, 2, (300, ), generator=g)
    _, reads = _reads(lambda: bce(binary, objectness, weight,
                                  avg_factor=30.))
    assert reads == {}
    one_hot = (objectness == 0).float()[:, None]  # label 0 is "object"
    expected = (torch.nn.functional.binary_cross_entropy_with_logits(
        binary, one_hot, reduction='none') * weight[:, None]).sum() / (
            30. + torch.finfo(torch.float32).eps)
    assert torch.equal(bce(binary, objectness, weight, avg_factor=30.),
                       expected)


def test_retinanet_loss_reads_only_the_label_check_and_the_positives():
    cfg = Config.fromfile(
        f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py')
    head_cfg = dict(cfg.model.bbox_head)
    head_cfg.update(num_classes=3, in_channels=8, feat_channels=8,
                    stacked_convs=1, train_cfg=cfg.model.train_cfg)
    with DefaultScope.overwrite_default_scope('detkit'):
        head = MODELS.build(head_cfg)
    from mmengine.structures import InstanceData
    feats = [torch.randn(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    metas = [dict(img_shape=(128, 128), pad_shape=(128, 128))] * 2
    gts = [InstanceData(bboxes=torch.tensor([[10., 10., 60., 50.]]),
                        labels=torch.tensor([1])),
           InstanceData(bboxes=torch.tensor([[5., 70., 90., 120.],
                                             [30., 30., 40., 45.]]),
                        labels=torch.tensor([0, 2]))]
    outs = head(feats)
    losses, reads = _reads(lambda: head.loss_by_feat(*outs, gts, metas))
    # The CPU label range check (2) and the positives' indices, whose
    # deltas alone are encoded (1). Before: also float(avg_factor),
    # bool(any(weight > 0)) and int(counts.max()) for the padding.
    assert reads == {'aten._local_scalar_dense': 2, 'aten.nonzero': 1}
    assert all(torch.isfinite(v) for v in losses.values())
