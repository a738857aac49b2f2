"""FCOS and ATSS through the tools as RetinaNet goes: tools/train.py, a
resumed run equal to an uninterrupted one, tools/test.py, DetInferencer,
and two CPU processes through tools/dist_train.sh (one rank sees only
images without boxes: the positives' counts and centerness sums are
averaged over the ranks)."""
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import REPO_ROOT
from test_dist_common import (free_port, make_shapes_data, read_json,
                              run_script, write_config)

sys.path.insert(0, osp.join(REPO_ROOT, 'tests', 'test_tools'))
from toolbox_toys import make_shapes, tiny_cfg  # noqa: E402

from detkit.apis import DetInferencer, inference_detector  # noqa: E402
from detkit.apis import init_detector  # noqa: E402

TRAIN = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'train.py'),
                       run_name='detkit_tools_train')
TEST = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'test.py'),
                      run_name='detkit_tools_test')
GN = dict(type='GN', num_groups=4, requires_grad=True)
# The tiny FPN's four levels (strides 8 to 64) on 64 x 64 shapes.
HEADS = {
    'fcos': dict(
        detector='FCOS',
        bbox_head=dict(
            type='FCOSHead', num_classes=5, in_channels=16, feat_channels=16,
            stacked_convs=1, strides=[8, 16, 32, 64],
            regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 1e8)),
            center_sampling=True, norm_on_bbox=True, centerness_on_reg=True,
            conv_bias=True, norm_cfg=GN,
            loss_bbox=dict(type='GIoULoss', loss_weight=1.0)),
        train_cfg=None),
    'atss': dict(
        detector='ATSS',
        bbox_head=dict(
            type='ATSSHead', num_classes=5, in_channels=16, feat_channels=16,
            stacked_convs=1, norm_cfg=GN,
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                                  octave_base_scale=4, scales_per_octave=1,
                                  strides=[8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0, .0, .0, .0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9),
                       allowed_border=-1, pos_weight=-1)),
}
# score_thr 0: every image gets max_per_img boxes to compare
TEST_CFG = dict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                nms=dict(type='nms', iou_threshold=0.6), max_per_img=10)


def model_cfg(name):
    """The tiny toolbox detector with an FCOS or ATSS head."""
    spec = HEADS[name]
    model = tiny_cfg('unused')['model']
    model.update(type=spec['detector'], bbox_head=spec['bbox_head'],
                 test_cfg=TEST_CFG)
    model.pop('train_cfg')
    if spec['train_cfg']:
        model['train_cfg'] = spec['train_cfg']
    return model


@pytest.fixture(scope='module', params=['fcos', 'atss'])
def runs(request, tmp_path_factory):
    """One epoch, resumed for a second, and two epochs straight, through
    tools/train.py."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    paths = make_shapes(root / 'shapes')
    cfg = tiny_cfg(paths['data_root'])
    cfg['model'] = model_cfg(name)
    cfg['optim_wrapper']['optimizer'] = dict(type='AdamW', lr=1e-3)
    cfg['randomness'] = dict(seed=0)  # the same start for both runs
    cfg_file = str(root / f'{name}_tiny.py')
    Config(cfg).dump(cfg_file)
    work, straight = str(root / 'work'), str(root / 'straight')
    TRAIN['main']([cfg_file, '--work-dir', work, '--cfg-options',
                   'train_cfg.max_epochs=1', f'experiment_name={name}_1'])
    TRAIN['main']([cfg_file, '--work-dir', work, '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=2',
                   f'experiment_name={name}_resumed'])
    TRAIN['main']([cfg_file, '--work-dir', straight, '--cfg-options',
                   'train_cfg.max_epochs=2', f'experiment_name={name}_2'])
    return dict(name=name, cfg_file=cfg_file, img_dir=paths['img_dir'],
                ckpt=osp.join(work, 'epoch_2.pth'),
                straight=osp.join(straight, 'epoch_2.pth'), work=work)


def test_resumed_training_equals_the_uninterrupted_one(runs):
    resumed = torch.load(runs['ckpt'], weights_only=True)
    straight = torch.load(runs['straight'], weights_only=True)
    assert (resumed['meta']['epoch'], resumed['meta']['iter']) == (2, 4)
    assert resumed['state_dict'].keys() == straight['state_dict'].keys()
    for key, value in straight['state_dict'].items():
        assert torch.equal(resumed['state_dict'][key], value), key
    # the learnt per-level scales moved
    scales = [v.item() for k, v in straight['state_dict'].items()
              if k.startswith('bbox_head.scales.')]
    assert len(scales) == 4 and all(s != 1.0 for s in scales)


def test_tools_test_and_det_inferencer_predict_the_same(runs, tmp_path):
    metrics = TEST['main']([runs['cfg_file'], runs['ckpt'], '--work-dir',
                            str(tmp_path), '--cfg-options',
                            f'experiment_name={runs["name"]}_test'])
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    assert 0 <= metrics['coco/bbox_mAP_50'] <= 1
    images = [osp.join(runs['img_dir'], f'val_00000{i}.png')
              for i in range(3)]
    model = init_detector(runs['cfg_file'], runs['ckpt'])
    reference = [s.pred_instances for s in inference_detector(model, images)]
    inferencer = DetInferencer(runs['cfg_file'], weights=runs['ckpt'],
                               device='cpu', show_progress=False)
    out = inferencer(images, batch_size=2, pred_score_thr=0)
    for pred, ref in zip(out['predictions'], reference):
        assert len(ref) == 10  # max_per_img
        assert pred['labels'] == ref.labels.tolist()
        np.testing.assert_allclose(pred['bboxes'], ref.bboxes.numpy(),
                                   atol=1e-4)
        np.testing.assert_allclose(pred['scores'], ref.scores.numpy(),
                                   atol=1e-6)


@pytest.mark.parametrize('name', ['fcos', 'atss'])
def test_two_cpu_processes_train_one_model(name, tmp_path):
    data_root = make_shapes_data(tmp_path / 'data')
    spec = HEADS[name]
    head = dict(spec['bbox_head'], _delete_=True, num_classes=5)
    model = dict(type=spec['detector'], bbox_head=head, test_cfg=TEST_CFG,
                 train_cfg=dict(spec['train_cfg'] or {}, _delete_=True))
    cfg = write_config(tmp_path / f'{name}_dist.py', data_root,
                       hooks=[dict(type='_DistRecordHook')], model=model)
    work_dir = str(tmp_path / 'work')
    rc, out, _ = run_script('dist_train.sh', cfg, 2, '--work-dir', work_dir,
                            cwd=tmp_path, timeout=240, PORT=free_port())
    assert rc == 0, out[-5000:]
    records = [read_json(osp.join(work_dir, f'record_rank{r}.json'))
               for r in range(2)]
    assert [r['world_size'] for r in records] == [2, 2]
    assert records[0]['end_params'] == records[1]['end_params']
    assert records[0]['end_params'] != records[0]['start']['params']
    for it0, it1 in zip(records[0]['iters'], records[1]['iters']):
        # rank 1's images have no boxes: no box or centerness loss there
        assert it1['local']['loss_bbox'] == 0.0
        assert it1['local']['loss_centerness'] == 0.0
        assert it0['local']['loss_bbox'] > 0
        assert it0['logged'] == it1['logged']
        assert np.isfinite(it0['logged']['loss'])
