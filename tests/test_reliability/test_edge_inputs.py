"""Images without boxes, a batch without any box, an 8000x6000 photo and a
1x1 image: the small RetinaNet trains on them and predicts on them."""
import json

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from reliability_toys import tiny_cfg
from reliability_toys import one_thread  # noqa: F401 (a fixture)

from detkit.apis import inference_detector
from detkit.registry import DATASETS, MODELS
from detkit.structures import DetDataSample

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def model_and_cfg(tmp_path_factory):
    cfg = tiny_cfg(str(tmp_path_factory.mktemp('unused')), 'unused')
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    model.cfg = cfg
    return model, cfg


def _sgd(model):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))


def test_batch_without_any_box(model_and_cfg):
    model, _ = model_and_cfg
    model.train()
    samples = []
    for h, w in ((64, 64), (48, 64)):
        sample = DetDataSample(metainfo=dict(img_id=len(samples),
                                             img_shape=(h, w),
                                             ori_shape=(h, w)))
        sample.gt_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0,
                                                         dtype=torch.long))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8),
                        torch.randint(0, 255, (3, 48, 64),
                                      dtype=torch.uint8)],
                data_samples=samples)
    bias = model.bbox_head.retina_cls.bias.detach().clone()
    log_vars = model.train_step(data, _sgd(model))
    assert log_vars['loss_bbox'] == 0  # no positive anchor
    assert torch.isfinite(log_vars['loss_cls']) and log_vars['loss_cls'] > 0
    # Every anchor is background: the step lowers every class's logit bias.
    assert (model.bbox_head.retina_cls.bias < bias).all()


@pytest.fixture(scope='module')
def odd_sizes(tmp_path_factory):
    """An 8000 x 6000 photo with one box, a 1 x 1 image with one box and a
    64 x 64 image without boxes, as a COCO dataset."""
    root = tmp_path_factory.mktemp('odd_sizes')
    big = np.full((6000, 8000, 3), 90, np.uint8)
    cv2.rectangle(big, (1000, 2000), (4999, 4999), (0, 0, 255), -1)
    cv2.imwrite(str(root / 'big.jpg'), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    cv2.imwrite(str(root / 'dot.png'), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(root / 'empty.png'), np.full((64, 64, 3), 30, np.uint8))
    coco = dict(
        images=[dict(id=1, file_name='big.jpg', width=8000, height=6000),
                dict(id=2, file_name='dot.png', width=1, height=1),
                dict(id=3, file_name='empty.png', width=64, height=64)],
        annotations=[dict(id=1, image_id=1, category_id=1,
                          bbox=[1000, 2000, 4000, 3000], area=12e6,
                          iscrowd=0),
                     dict(id=2, image_id=2, category_id=2,
                          bbox=[0, 0, 1, 1], area=1, iscrowd=0)],
        categories=[dict(id=i + 1, name=name) for i, name in enumerate(
            ('circle', 'square', 'triangle', 'star', 'cross'))])
    (root / 'ann.json').write_text(json.dumps(coco))
    return root


def test_train_step_on_huge_tiny_and_empty_images(model_and_cfg, odd_sizes):
    model, cfg = model_and_cfg
    dataset_cfg = dict(cfg.train_dataloader.dataset)
    dataset_cfg.update(data_root=str(odd_sizes), ann_file='ann.json',
                       data_prefix=dict(img=''), filter_cfg=None)
    with DefaultScope.overwrite_default_scope('detkit'):
        dataset = DATASETS.build(dataset_cfg)
    np.random.seed(1)  # RandomFlip
    batch = pseudo_collate([dataset[i] for i in range(3)])
    shapes = [tuple(x.shape) for x in batch['inputs']]
    # Resize to fit 64 x 64 keeping the ratio: 8000 x 6000 * 0.008, 1 x 1
    # * 64; the boxes scale along.
    assert shapes == [(3, 48, 64), (3, 64, 64), (3, 64, 64)]
    samples = batch['data_samples']
    big = samples[0].gt_instances.bboxes
    flipped = samples[0].flip
    expected = [64 - 40, 16, 64 - 8, 40] if flipped else [8, 16, 40, 40]
    torch.testing.assert_close(big, torch.tensor([expected], dtype=big.dtype))
    torch.testing.assert_close(samples[1].gt_instances.bboxes,
                               torch.tensor([[0., 0., 64., 64.]]))
    assert len(samples[2].gt_instances) == 0
    model.train()
    log_vars = model.train_step(batch, _sgd(model))
    assert all(torch.isfinite(v) for v in log_vars.values())
    assert log_vars['loss_bbox'] > 0 and log_vars['loss_cls'] > 0


def test_inference_on_huge_and_tiny_images(model_and_cfg, odd_sizes):
    model, _ = model_and_cfg
    model.eval()
    paths = [str(odd_sizes / name) for name in ('big.jpg', 'dot.png')]
    results = inference_detector(model, paths, batch_size=2)
    results.append(inference_detector(model, np.zeros((1, 1, 3), np.uint8)))
    for result, (h, w) in zip(results, [(6000, 8000), (1, 1), (1, 1)]):
        assert result.ori_shape == (h, w)
        pred = result.pred_instances
        # score_thr 0 and max_per_img 100: always 100 boxes, on the image.
        assert len(pred) == 100
        boxes = pred.bboxes
        assert torch.isfinite(boxes).all() and torch.isfinite(
            pred.scores).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
    assert results[0].img_shape == (48, 64)
    assert results[0].scale_factor == (0.008, 0.008)
    assert results[1].scale_factor == (64.0, 64.0)
    # The huge image's boxes are in its own pixels: they reach far beyond
    # the 64-pixel network input.
    assert results[0].pred_instances.bboxes.max() > 1000
