"""tools/dist_test.sh with 2 CPU processes gives exactly the metrics and the
predictions of tools/test.py with one process, on 5 images (an odd number:
mmengine's DefaultSampler pads rank 1's share with image 0 again, and the
duplicate must not be counted)."""
import os.path as osp
import runpy

import mmengine
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from detkit.engine import save_checkpoint_file
from detkit.registry import MODELS
from test_dist_common import (REPO_ROOT, free_port, make_shapes_data,
                              read_json, run_script, write_config)

TEST_TOOL = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'test.py'),
                           run_name='detkit_tools_test_dist')


def test_two_process_test_equals_one_process_test(tmp_path):
    data_root = make_shapes_data(tmp_path / 'data', num_train=2, num_val=5)
    # Batch 1: a batch of 2 can round a conv differently than the same
    # images in another pairing (boxes moved by 7.6e-6 px when measured),
    # and with 2 processes the pairs differ. Every box is kept
    # (score_thr=0), so the metrics depend on every score.
    cfg_file = write_config(
        tmp_path / 'retina_test.py', data_root,
        hooks=[dict(type='_DistMetricsHook')],
        test_dataloader=dict(batch_size=1),
        model=dict(test_cfg=dict(nms_pre=1000, min_bbox_size=0,
                                 score_thr=0.0,
                                 nms=dict(type='nms', iou_threshold=0.5),
                                 max_per_img=100)))
    cfg = Config.fromfile(cfg_file)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = str(tmp_path / 'init.pth')
    save_checkpoint_file(dict(state_dict=model.state_dict(), meta=dict()),
                         ckpt)

    dist_dir, one_dir = tmp_path / 'dist', tmp_path / 'one'
    rc, out, _ = run_script(
        'dist_test.sh', cfg_file, ckpt, 2, '--work-dir', dist_dir, '--out',
        dist_dir / 'preds.pkl', cwd=tmp_path, timeout=240, PORT=free_port())
    assert rc == 0, out[-5000:]
    # 3 batches of 1 per process: 6 images tested for 5, one twice.
    assert 'Epoch(test) [3/3]' in out and 'Epoch(test) [4/' not in out
    TEST_TOOL['main']([
        cfg_file, ckpt, '--work-dir', str(one_dir), '--out',
        str(one_dir / 'preds.pkl')
    ])

    dist_metrics = read_json(dist_dir / 'metrics.json')
    one_metrics = read_json(one_dir / 'metrics.json')
    assert dist_metrics == one_metrics
    assert len(one_metrics) == 6 and one_metrics['coco/bbox_mAP_50'] > 0
    dist_preds = mmengine.load(str(dist_dir / 'preds.pkl'))
    one_preds = mmengine.load(str(one_dir / 'preds.pkl'))
    val_ids = [img['id'] for img in read_json(
        osp.join(data_root, 'annotations', 'val.json'))['images']]
    # Each image once, in dataset order, with identical detections.
    assert [p['img_id'] for p in dist_preds] == val_ids
    assert [p['img_id'] for p in one_preds] == val_ids
    for dist_pred, one_pred in zip(dist_preds, one_preds):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(dist_pred['pred_instances'][key],
                               one_pred['pred_instances'][key])
        assert len(one_pred['pred_instances']['scores']) == 100
