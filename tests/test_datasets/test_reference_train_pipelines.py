"""mmdetection's multi-scale (``ms-3x``) and large-scale-jitter
(``lsj-200e``) training data, as their configs write it, on BCCD: the
RepeatDataset, the pipelines and the preprocessor with its batch augment
give batches whose sizes and boxes follow the transforms' rules."""
import numpy as np
import pytest
import torch
from conftest import require_shared
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from detkit.registry import MODELS

CLASSES = ('RBC', 'WBC', 'Platelets')


def _bccd_loader(config, bccd_dir, batch_size=4):
    cfg = Config.fromfile(require_shared('reference', 'mmdet-3.3.0',
                                         'configs', config))
    loader = cfg.train_dataloader
    loader.update(batch_size=batch_size, num_workers=0,
                  persistent_workers=False)
    repeat = loader.dataset
    assert repeat.type == 'RepeatDataset'
    repeat.dataset.update(data_root=bccd_dir + '/', ann_file='train.json',
                          data_prefix=dict(img='images/'),
                          metainfo=dict(classes=CLASSES))
    with DefaultScope.overwrite_default_scope('detkit'):
        dataloader = Runner.build_dataloader(loader, seed=0)
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    return cfg, dataloader, preprocessor


def test_lsj_batches_are_1024_square_with_boxes_inside(bccd_dir):
    cfg, dataloader, preprocessor = _bccd_loader(
        'retinanet/retinanet_r50_fpn_8xb8-amp-lsj-200e_coco.py', bccd_dir)
    # times=8 over BCCD's 292 training images (filter_empty_gt keeps all)
    assert len(dataloader.dataset) == 8 * 292
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    batches = iter(dataloader)
    for _ in range(2):
        batch = next(batches)
        for inputs, sample in zip(batch['inputs'], batch['data_samples']):
            h, w = sample.img_shape
            # RandomResize: 640 x 480 into (s, s), s = int(1024 r), r in
            # [0.1, 2): the long edge becomes s (up to rounding); RandomCrop
            # then cuts at most 1024 x 1024.
            assert inputs.shape[1:] == (h, w) and h <= 1024 and w <= 1024
            boxes = sample.gt_instances.bboxes
            assert len(boxes) > 0  # FilterAnnotations keep_empty drops none
            assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all()
            assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= h).all()
            # FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))
            assert ((boxes[:, 2:] - boxes[:, :2]) > 1e-2).all()
        out = preprocessor(batch, training=True)
        assert out['inputs'].shape == (4, 3, 1024, 1024)
        assert {s.batch_input_shape for s in out['data_samples']} == {
            (1024, 1024)}


def test_ms_3x_short_edges_lie_in_640_800(bccd_dir):
    _, dataloader, preprocessor = _bccd_loader(
        'faster_rcnn/faster-rcnn_r50_fpn_ms-3x_coco.py', bccd_dir,
        batch_size=2)
    assert len(dataloader.dataset) == 3 * 292
    shorts = []
    for i, batch in enumerate(dataloader):
        for sample in batch['data_samples']:
            h, w = sample.img_shape
            # 480 x 640 into (1333, s): factor s / 480 -> height s exactly
            assert 640 <= h <= 800
            assert w == int(640 * h / 480 + 0.5)
            shorts.append(h)
        if i == 5:
            break
    assert len(set(shorts)) > 1  # drawn, not fixed
    out = preprocessor(batch, training=True)
    assert out['inputs'].shape[-2] % 32 == 0


@pytest.mark.parametrize('config', [
    'retinanet/retinanet_r50_fpn_8xb8-amp-lsj-200e_coco.py',
    'faster_rcnn/faster-rcnn_r50_fpn_8xb8-amp-lsj-200e_coco.py',
    'retinanet/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
    'faster_rcnn/faster-rcnn_x101-32x8d_fpn_ms-3x_coco.py',
])
def test_reference_train_pipelines_build(config):
    """Every transform of these configs' training pipelines builds with the
    arguments written there."""
    from detkit.registry import TRANSFORMS
    cfg = Config.fromfile(require_shared('reference', 'mmdet-3.3.0',
                                         'configs', config))
    pipeline = cfg.train_dataloader.dataset.dataset.pipeline
    built = [TRANSFORMS.build(t) for t in pipeline]
    names = [type(t).__name__ for t in built]
    assert 'RandomResize' in names
    # a fixed draw through the whole pipeline on a synthetic image
    np.random.seed(0)
    results = dict(img=np.zeros((480, 640, 3), np.uint8), img_shape=(480, 640),
                   ori_shape=(480, 640), img_id=0, img_path='x.jpg',
                   gt_bboxes=np.float32([[100, 100, 300, 200]]),
                   gt_bboxes_labels=np.array([0]),
                   gt_ignore_flags=np.array([False]))
    for transform in built[2:]:  # after loading
        results = transform(results)
        if results is None:  # a crop without the box: a refetch
            break
    else:
        assert isinstance(results['inputs'], torch.Tensor)
