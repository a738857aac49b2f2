"""Distributed training through tools/dist_train.sh on CPU (gloo, 2
processes), a two-machine rehearsal on one host, and a crashing rank.

The tiny RetinaNet and the hooks that record what each rank saw are in
test_dist_common.py. Rank 1 only ever gets training images without boxes.
"""
import glob
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from detkit.engine import load_checkpoint
from detkit.registry import MODELS
from test_dist_common import (finish, free_port, make_shapes_data,
                              param_digest, read_json, run_script,
                              start_script, write_config)

TIMEOUT = 240


def _records(work_dirs):
    return [
        read_json(osp.join(work_dir, f'record_rank{rank}.json'))
        for rank, work_dir in enumerate(work_dirs)
    ]


def _files(work_dir, pattern):
    return sorted(
        osp.relpath(p, work_dir)
        for p in glob.glob(osp.join(work_dir, '**', pattern), recursive=True))


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
    """``dist_train.sh CONFIG 2 --auto-scale-lr``: 8 images, batch 2 per
    process, one epoch = 2 iterations."""
    root = tmp_path_factory.mktemp('dist_train')
    data_root = make_shapes_data(root / 'data')
    cfg = write_config(root / 'retina_tiny.py', data_root,
                       hooks=[dict(type='_DistRecordHook')])
    work_dir = str(root / 'work')
    rc, out, _ = run_script('dist_train.sh', cfg, 2, '--work-dir', work_dir,
                            '--auto-scale-lr', cwd=root, timeout=TIMEOUT,
                            PORT=free_port())
    assert rc == 0, out[-5000:]
    return dict(root=root, data_root=data_root, cfg=cfg, work_dir=work_dir,
                out=out, records=_records([work_dir, work_dir]))


def test_two_processes_train_one_model(two_process_run):
    records = two_process_run['records']
    work_dir = two_process_run['work_dir']
    assert [r['world_size'] for r in records] == [2, 2]
    # --auto-scale-lr: lr 0.002 tuned for 8 images, 2 processes x 2 images.
    assert [r['start']['initial_lr'] for r in records] == [0.002 * 4 / 8] * 2
    # Bit-identical parameters on both ranks, and in the checkpoint, which
    # loads strictly into a freshly built model.
    assert records[0]['end_params'] == records[1]['end_params']
    assert records[0]['end_params'] != records[0]['start']['params']
    ckpt_path = osp.join(work_dir, 'epoch_1.pth')
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (1, 2)
    names = records[0]['param_names']
    assert param_digest(
        (n, ckpt['state_dict'][n]) for n in names) == records[0]['end_params']
    cfg = Config.fromfile(two_process_run['cfg'])
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    load_checkpoint(model, ckpt_path, strict=True)
    assert param_digest(model.named_parameters()) == records[0]['end_params']
    # SyncBN cannot synchronise on CPU: plain BN, with a warning.
    assert '20 SyncBN layer(s) on CPU' in two_process_run['out']


def test_rank_without_ground_truth_trains_and_losses_are_averaged(
        two_process_run):
    rank0, rank1 = (r['iters'] for r in two_process_run['records'])
    assert [it['iter'] for it in rank0] == [it['iter'] for it in rank1] == [
        0, 1
    ]
    for it0, it1 in zip(rank0, rank1):
        # Rank 1's images have no boxes: no box loss, a background-only
        # classification loss; rank 0's have boxes.
        assert it1['local']['loss_bbox'] == 0.0
        assert it1['local']['loss_cls'] > 0 and it0['local']['loss_bbox'] > 0
        # Both ranks return (and rank 0 logs) the mean over the ranks.
        assert it0['logged'] == it1['logged']
        for key in ('loss', 'loss_cls', 'loss_bbox'):
            mean = (it0['local'][key] + it1['local'][key]) / 2
            assert it0['logged'][key] == pytest.approx(mean, rel=1e-6)
    # What LoggerHook wrote (rank 0's message hub): the first iteration's
    # averaged loss.
    scalars = _files(two_process_run['work_dir'], 'scalars.json')
    assert len(scalars) == 1
    with open(osp.join(two_process_run['work_dir'], scalars[0])) as f:
        first = json.loads(f.readline())
    assert first['loss'] == pytest.approx(rank0[0]['logged']['loss'],
                                          rel=1e-6)


def test_only_rank_zero_writes_checkpoints_and_logs(two_process_run):
    work_dir = two_process_run['work_dir']
    assert _files(work_dir, '*.pth') == ['epoch_1.pth']
    assert len(_files(work_dir, '*.log')) == 1
    assert _files(work_dir, '*rank1*') == ['record_rank1.json']  # the hook's


def test_two_node_rehearsal_resumes_and_skips_a_nan_step_together(
        two_process_run, tmp_path):
    """Two torchrun 'machines' (NNODES=2, NODE_RANK 0/1, loopback master),
    one process each, resume the two-process run for a second epoch. Rank
    1's loss is NaN at the first resumed iteration: with
    skip_nonfinite=True both ranks skip that step."""
    cfg = write_config(
        tmp_path / 'retina_resume.py', two_process_run['data_root'],
        hooks=[dict(type='_DistRecordHook', nan_at=(1, 2))],
        model=dict(skip_nonfinite=True), train_cfg=dict(max_epochs=2))
    ckpt = osp.join(two_process_run['work_dir'], 'epoch_1.pth')
    port = free_port()
    work_dirs = [str(tmp_path / f'node{node}') for node in (0, 1)]
    procs = [
        start_script('dist_train.sh', cfg, 1, '--work-dir', work_dirs[node],
                     '--resume', ckpt, cwd=tmp_path, NNODES=2,
                     NODE_RANK=node, MASTER_ADDR='127.0.0.1', PORT=port)
        for node in (0, 1)
    ]
    outs = finish(procs, TIMEOUT)
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-5000:]
    records = _records(work_dirs)
    trained = two_process_run['records'][0]['end_params']
    for record in records:
        assert record['world_size'] == 2
        assert (record['start']['epoch'], record['start']['iter']) == (1, 2)
        assert record['start']['params'] == trained
        assert [it['iter'] for it in record['iters']] == [2, 3]
        assert record['skipped'] == 1
    nan_step = [r['iters'][0] for r in records]
    assert all(math.isnan(v) for v in nan_step[1]['local'].values())
    assert all(math.isfinite(v) for v in nan_step[0]['local'].values())
    assert all(math.isnan(v) for s in nan_step for v in s['logged'].values())
    assert 'a loss on another rank' in outs[0]
    assert records[0]['end_params'] == records[1]['end_params'] != trained
    # Machine 0 holds rank 0: the checkpoint and the log are there only.
    ckpt2 = torch.load(osp.join(work_dirs[0], 'epoch_2.pth'),
                       map_location='cpu', weights_only=True)
    assert (ckpt2['meta']['epoch'], ckpt2['meta']['iter']) == (2, 4)
    assert param_digest((n, ckpt2['state_dict'][n])
                        for n in records[0]['param_names']) == records[0][
                            'end_params']
    assert _files(work_dirs[1], '*.pth') == []
    assert _files(work_dirs[1], '*.log') == []
    assert len(_files(work_dirs[0], '*.log')) == 1


def test_crash_on_one_rank_ends_the_job(tmp_path):
    """Rank 1 raises before iteration 2 while rank 0 is already waiting in
    that iteration's gradient all-reduce: the job must end non-zero with
    rank 1's error, not hang."""
    data_root = make_shapes_data(tmp_path / 'data')
    cfg = write_config(tmp_path / 'retina_crash.py', data_root,
                       hooks=[dict(type='_DistCrashHook', rank=1, iter=1)])
    rc, out, seconds = run_script(
        'dist_train.sh', cfg, 2, '--work-dir', tmp_path / 'work',
        cwd=tmp_path, timeout=TIMEOUT, PORT=free_port())
    assert '[killed after the' not in out
    assert rc != 0 and seconds < TIMEOUT
    assert 'RuntimeError: deliberate crash on rank 1 before iteration 2' in out
    assert _files(str(tmp_path / 'work'), '*.pth') == []
