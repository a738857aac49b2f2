"""The CPU-safe parts of the benchmark scripts (benchmarks/ is not run by
CI): gpu_suite.py refuses a machine without CUDA before doing anything and
judges an AMP run by fixed rules; train_iter.py's stage timer gives
exclusive times; train_run_bccd.py passes its flags to its child runs."""
import os.path as osp
import sys
import time
import warnings

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO_ROOT, 'benchmarks'))

import gpu_suite  # noqa: E402
import train_iter  # noqa: E402
import train_run_bccd  # noqa: E402


def test_gpu_suite_refuses_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    ran = []
    monkeypatch.setattr(gpu_suite, 'inference_part',
                        lambda *a: ran.append('inference'))
    with pytest.raises(SystemExit, match='needs a CUDA GPU'):
        gpu_suite.main(['--parts', 'inference'])
    assert ran == []  # nothing started
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(['--parts', 'inference,speed'])
    assert "unknown ['speed']" in capsys.readouterr().err
    assert gpu_suite.parse_args([]).parts == list(gpu_suite.PARTS)


def test_amp_verdict():
    fp32 = dict(epoch_losses=[1.50, 1.00], bbox_mAP=0.100)
    ok, details = gpu_suite.amp_close(
        fp32, dict(epoch_losses=[1.49, 1.04], bbox_mAP=0.115))
    assert ok and details['final_loss_rel_diff'] == pytest.approx(0.04)
    assert details['map_abs_diff'] == pytest.approx(0.015)
    assert not gpu_suite.amp_close(
        fp32, dict(epoch_losses=[1.4, 1.06], bbox_mAP=0.1))[0]  # 6% off
    assert not gpu_suite.amp_close(
        fp32, dict(epoch_losses=[1.4, 1.0], bbox_mAP=0.125))[0]
    assert not gpu_suite.amp_close(
        fp32, dict(epoch_losses=[1.4, float('nan')], bbox_mAP=0.1))[0]


def test_sync_sites_keep_synchronisation_warnings_only():
    def record(message, filename, lineno):
        return warnings.WarningMessage(message, UserWarning, filename,
                                       lineno)

    caught = [
        record('called a synchronizing CUDA operation',
               osp.join(REPO_ROOT, 'detkit', 'models', 'utils.py'), 158),
        record('called a synchronizing CUDA operation',
               osp.join(REPO_ROOT, 'detkit', 'models', 'utils.py'), 158),
        record('called a synchronizing CUDA operation', '/elsewhere/x.py',
               3),
        record('something else', '/elsewhere/x.py', 4),
    ]
    assert gpu_suite.sync_sites(caught) == {
        osp.join('detkit', 'models', 'utils.py') + ':158': 2,
        '/elsewhere/x.py:3': 1}


def test_stage_timer_times_are_exclusive(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, 'perf_counter', lambda: clock[0])
    timer = train_iter.StageTimer(sync=lambda: None)

    class Model:

        def inner(self):
            clock[0] += 2.0

        def outer(self):
            clock[0] += 1.0
            self.inner()
            clock[0] += 0.5

    model = Model()
    timer.wrap(model, 'inner', 'targets')
    timer.wrap(model, 'outer', 'loss')
    model.outer()  # inactive: not recorded
    assert timer.take() == {}
    timer.active = True
    model.outer()
    model.inner()
    assert timer.take() == {'loss': 1.5, 'targets': 4.0}
    assert timer.take() == {}


def test_train_run_child_gets_the_same_settings():
    args = train_run_bccd.parse_args([
        '--epochs', '3', '--scale', '400', '300', '--width', '32',
        '--threads', '1', '--train-images', '10', '--workers', '2,0',
        '--out', 'x.json'])
    child = train_run_bccd.parse_args(
        ['--single', '2'] + train_run_bccd.child_args(args))
    for key in ('epochs', 'scale', 'width', 'threads', 'train_images',
                'lr', 'warmup', 'batch_size', 'seed', 'data_root',
                'work_dir'):
        assert getattr(child, key) == getattr(args, key), key
    assert child.single == 2 and child.out is None


def test_train_run_config_sets_the_workers(bccd_dir):
    args = train_run_bccd.parse_args(['--data-root', bccd_dir])
    for workers in (0, 2):
        cfg = train_run_bccd.run_cfg(args, workers)
        for split in ('train', 'val'):
            loader = cfg[f'{split}_dataloader']
            assert loader.num_workers == workers
            assert loader.persistent_workers == (workers > 0)
        assert cfg.model.bbox_head.feat_channels == 64
        assert cfg.model.bbox_head.num_classes == 3
        resize = [step for step in cfg.train_dataloader.dataset.pipeline
                  if step['type'] == 'Resize']
        assert [step['scale'] for step in resize] == [(320, 240)]
