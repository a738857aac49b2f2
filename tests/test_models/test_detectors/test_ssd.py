"""SSD300 / SSD512 / SSDLite / SSD300-VOC from the mmdetection-style
configs: checkpoint layouts, anchor counts from real feature maps, config
facts (mmdetection's SSD settings, docs/data_pipeline.md), and the loss /
predict / tensor interface."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from conftest import REPO_ROOT, read_compat
from detkit.models.utils import pad_gts
from detkit.registry import MODELS
from detkit.structures import DetDataSample

SSD300 = f'{REPO_ROOT}/configs/ssd/ssd300_coco.py'
SSD512 = f'{REPO_ROOT}/configs/ssd/ssd512_coco.py'
SSDLITE = (f'{REPO_ROOT}/configs/ssd/'
           'ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py')
SSD300_VOC = f'{REPO_ROOT}/configs/ssd/ssd300_voc0712.py'


def build(config, cfg_options=None, device=None):
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('detkit'):
        if device is None:
            return MODELS.build(cfg.model)
        with torch.device(device):
            return MODELS.build(cfg.model)


def layout(model):
    return {
        k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize('config, compat, num_keys', [
    (SSD300, 'ssd300_vgg16', 71),
    (SSD512, 'ssd512_vgg16', 79),
    (SSDLITE, 'ssdlite_mobilenetv2', 480),
])
def test_state_dict_equals_mmdetection_checkpoint_layout(
        config, compat, num_keys):
    got = layout(build(config, device='meta'))
    expected = read_compat(compat)
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert len(got) == num_keys


def test_mmdetection_type_name_builds_the_same_model():
    ssd = build(SSD300, device='meta')
    single = build(SSD300, {'model.type': 'SingleStageDetector'},
                   device='meta')
    assert type(ssd).__name__ == 'SSD'
    assert type(single).__name__ == 'SingleStageDetector'
    assert layout(ssd) == layout(single)


def test_strict_load_of_an_mmdetection_style_state_dict():
    model = build(SSDLITE)
    state = {k: torch.full(shape, 0.5).to(getattr(torch, dtype))
             for k, (shape, dtype) in read_compat(
                 'ssdlite_mobilenetv2').items()}
    model.load_state_dict(state, strict=True)
    assert model.bbox_head.cls_convs[5][1].bias.eq(0.5).all()


@pytest.mark.parametrize('config, size, per_level, total', [
    (SSD300, 300, [38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6,
                   3 * 3 * 4, 1 * 4], 8732),
    (SSD512, 512, [64 * 64 * 4, 32 * 32 * 6, 16 * 16 * 6, 8 * 8 * 6,
                   4 * 4 * 6, 2 * 2 * 4, 1 * 4], 24564),
    (SSDLITE, 320, [20 * 20 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 6,
                    2 * 2 * 6, 1 * 6], 3234),
])
def test_anchor_counts_from_the_detector_features(config, size, per_level,
                                                  total):
    model = build(config, device='meta').eval()
    cls_scores, bbox_preds = model(torch.empty(1, 3, size, size,
                                               device='meta'))
    assert sum(per_level) == total
    assert [c.shape[1] // 81 * c.shape[2] * c.shape[3]
            for c in cls_scores] == per_level
    assert [b.shape[1] // 4 * b.shape[2] * b.shape[3]
            for b in bbox_preds] == per_level


def test_voc_config_has_20_classes_and_voc_anchor_sizes():
    model = build(SSD300_VOC, device='meta')
    head = model.bbox_head
    assert head.num_classes == 20 and head.cls_out_channels == 21
    assert head.cls_convs[0][0].out_channels == 4 * 21
    gen = head.prior_generator
    assert gen.min_sizes == [30, 60, 111, 162, 213, 264]
    assert gen.max_sizes == [60, 111, 162, 213, 264, 315]
    cfg = Config.fromfile(SSD300_VOC)
    assert cfg.train_dataloader.dataset.type == 'RepeatDataset'
    assert cfg.train_dataloader.dataset.times == 10
    parts = cfg.train_dataloader.dataset.dataset
    assert parts.type == 'ConcatDataset'
    assert [d.ann_file for d in parts.datasets] == [
        'VOC2007/ImageSets/Main/trainval.txt',
        'VOC2012/ImageSets/Main/trainval.txt'
    ]
    assert [d.data_prefix.sub_data_root for d in parts.datasets] == [
        'VOC2007/', 'VOC2012/'
    ]
    assert cfg.val_dataloader.dataset.ann_file == \
        'VOC2007/ImageSets/Main/test.txt'
    assert cfg.val_evaluator == dict(type='VOCMetric', metric='mAP',
                                     eval_mode='11points')
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.train_cfg.max_epochs == 24
    assert cfg.param_scheduler[1].milestones == [16, 20]


@pytest.mark.parametrize('config, size, batch, lr, wd, epochs', [
    (SSD300, 300, 8, 2e-3, 5e-4, 24),
    (SSD512, 512, 8, 2e-3, 5e-4, 24),
    (SSDLITE, 320, 24, 0.015, 4e-5, 120),
])
def test_config_facts(config, size, batch, lr, wd, epochs):
    cfg = Config.fromfile(config)
    loader = cfg.train_dataloader
    assert loader.batch_size == batch and loader.batch_sampler is None
    assert loader.dataset.type == 'RepeatDataset'
    assert loader.dataset.times == 5
    assert loader.dataset.dataset.filter_cfg == dict(filter_empty_gt=True,
                                                     min_size=32)
    steps = loader.dataset.dataset.pipeline
    assert [s.type for s in steps] == [
        'LoadImageFromFile', 'LoadAnnotations', 'Expand', 'MinIoURandomCrop',
        'Resize', 'RandomFlip', 'PhotoMetricDistortion', 'PackDetInputs'
    ]
    assert steps[2].mean == [123.675, 116.28, 103.53] and steps[2].to_rgb
    assert steps[2].ratio_range == (1, 4)
    assert steps[3].min_ious == (0.1, 0.3, 0.5, 0.7, 0.9)
    assert steps[3].min_crop_size == 0.3
    assert steps[4].scale == (size, size) and steps[4].keep_ratio is False
    assert steps[6].brightness_delta == 32 and steps[6].hue_delta == 18
    test_steps = cfg.test_dataloader.dataset.pipeline
    assert [s.type for s in test_steps] == [
        'LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs'
    ]
    assert test_steps[1].scale == (size, size)
    assert cfg.val_dataloader.batch_size == 8
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.optim_wrapper.optimizer.weight_decay == wd
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.model.test_cfg == dict(
        nms_pre=1000, nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0, score_thr=0.02, max_per_img=200)
    assigner = cfg.model.train_cfg.assigner
    assert (assigner.pos_iou_thr, assigner.neg_iou_thr,
            assigner.min_pos_iou, assigner.gt_max_assign_all) == (0.5, 0.5,
                                                                  0., False)
    assert cfg.model.train_cfg.neg_pos_ratio == 3
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.pad_size_divisor == 1 and preprocessor.bgr_to_rgb


def test_ssd_schedules():
    ssd = Config.fromfile(SSD300)
    warmup, steps = ssd.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ('LinearLR',
                                                              500, 0.001)
    assert (steps.type, steps.milestones) == ('MultiStepLR', [16, 22])
    assert ssd.auto_scale_lr.base_batch_size == 64
    lite = Config.fromfile(SSDLITE)
    warmup, cosine = lite.param_scheduler
    assert (cosine.type, cosine.T_max, cosine.eta_min) == (
        'CosineAnnealingLR', 120, 0)
    assert lite.train_cfg.val_interval == 5
    assert lite.auto_scale_lr.base_batch_size == 192


def small_ssdlite():
    return build(SSDLITE, {'model.bbox_head.num_classes': 3})


def batch(model, with_gt=(True, False)):
    """160x160 inputs (half of SSDLite's 320, to keep the test fast) of
    320x240 originals."""
    inputs, samples = [], []
    for i, has_gt in enumerate(with_gt):
        gen = torch.Generator().manual_seed(i)
        inputs.append(
            torch.randint(0, 255, (3, 160, 160), dtype=torch.uint8,
                          generator=gen))
        ds = DetDataSample(
            metainfo=dict(
                img_id=i,
                img_shape=(160, 160),
                ori_shape=(240, 320),
                scale_factor=(0.5, 160 / 240)))
        boxes = [[5., 10., 80., 90.], [75., 25., 150., 100.]
                 ] if has_gt else []
        ds.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes).reshape(-1, 4),
            labels=torch.tensor([0, 2][:len(boxes)], dtype=torch.long))
        samples.append(ds)
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)


def test_loss_predict_and_tensor_modes():
    torch.manual_seed(0)
    model = small_ssdlite()
    data = batch(model)
    assert data['inputs'].shape == (2, 3, 160, 160)  # no padding (d = 1)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_cls'] > 0 and losses['loss_bbox'] > 0

    model.eval()
    with torch.no_grad():
        cls_scores, bbox_preds = model(data['inputs'], mode='tensor')
        assert [c.shape[1] for c in cls_scores] == [6 * 4] * 6
        assert [b.shape[1] for b in bbox_preds] == [6 * 4] * 6
        assert [tuple(c.shape[-2:]) for c in cls_scores] == [
            (10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
        # Image 1 has no GT: it adds 0 to the loss sums and 1 to N. With
        # BN frozen (eval), image 0's sums are the same alone or paired.
        pair = model(**data, mode='loss')
        single = model(**batch(model, with_gt=(True, )), mode='loss')
        head = model.bbox_head
        anchors, valid = head.get_anchors(
            [c.shape[-2:] for c in cls_scores],
            [s.metainfo for s in data['data_samples'][:1]], 'cpu')
        num_pos = int(head.get_targets(
            anchors, valid,
            pad_gts([data['data_samples'][0].gt_instances]))['pos_mask'].sum())
        assert num_pos >= 2  # at least one anchor per GT box
        for key in ('loss_cls', 'loss_bbox'):
            assert (pair[key] * (num_pos + 1)).item() == pytest.approx(
                (single[key] * num_pos).item(), rel=1e-5)
        out = model(**data, mode='predict')
    pred = out[0].pred_instances
    assert 0 < len(pred) <= 200
    assert (pred.scores > 0.02).all()
    assert (pred.scores[:-1] >= pred.scores[1:]).all()
    assert set(pred.labels.tolist()) <= {0, 1, 2}
    # rescaled to the 320x240 original: x by 2, y by 1.5
    assert pred.bboxes[:, 2].max() <= 320 + 1e-3
    assert pred.bboxes[:, 3].max() <= 240 + 1e-3
    assert pred.bboxes[:, 2].max() > 160  # really rescaled


def test_train_step_on_a_batch_without_any_gt_is_finite():
    from mmengine.optim import OptimWrapper
    model = small_ssdlite()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    samples = batch(model, with_gt=(False, False))
    data = dict(
        inputs=[torch.zeros(3, 160, 160, dtype=torch.uint8)] * 2,
        data_samples=samples['data_samples'])
    before = model.bbox_head.cls_convs[0][1].weight.clone()
    log_vars = model.train_step(data, optim)
    assert log_vars['loss_cls'].item() == 0.0
    assert log_vars['loss_bbox'].item() == 0.0
    assert model.num_skipped_steps == 0
    # zero loss, zero gradient: weight decay is 0 here, nothing moves
    assert torch.equal(before, model.bbox_head.cls_convs[0][1].weight)
