"""tools/analysis_tools/benchmark.py: what it times and how it reports."""
import json
import os
import os.path as osp
import socket
import statistics
import subprocess
import sys

import pytest
import torch
from toolbox_toys import REPO_ROOT, run_tool, tiny_setup  # noqa: F401

TOOL = run_tool('tools', 'analysis_tools', 'benchmark.py')


def test_time_iterations_skips_warmup_and_stops_at_the_end():
    seen = []
    times = TOOL['time_iterations'](seen.append, range(5), max_iter=4,
                                    num_warmup=1)
    assert seen == [0, 1, 2, 3] and len(times) == 3
    times = TOOL['time_iterations'](seen.append, range(2), max_iter=10,
                                    num_warmup=1)
    assert len(times) == 1  # two items, the first is warm-up
    summary = TOOL['summarize']([0.5, 0.1, 0.2], batch_size=2)
    assert summary['median_time'] == 0.2
    assert summary['images_per_second'] == pytest.approx(10.0)
    assert summary['images_per_second_mean'] == pytest.approx(2 / (0.8 / 3))
    with pytest.raises(RuntimeError, match='no timed iteration'):
        TOOL['summarize']([], 1)


@pytest.mark.parametrize('task,batch,timed', [('inference', 1, 2),
                                              ('dataloader', 2, 1),
                                              ('dataset', 1, 2)])
def test_each_task_on_the_tiny_config(tiny_setup, tmp_path,  # noqa: F811
                                      task, batch, timed):
    out = tmp_path / f'{task}.json'
    # 3 test images; the test loader holds 2 per batch (inference: 1).
    results = TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                            '--task', task, '--max-iter', '3',
                            '--num-warmup', '1', '--out', str(out)])
    result, = results
    assert result['iters'] == len(result['times']) == timed
    assert result['median_time'] == statistics.median(result['times'])
    assert result['images_per_second'] == pytest.approx(
        batch / result['median_time'])
    saved = json.loads(out.read_text())
    assert saved['task'] == task and saved['results'][0]['iters'] == timed


def test_checkpoint_flag_and_positional_name_the_same_file(
        tiny_setup, monkeypatch):  # noqa: F811
    import detkit.apis
    seen = []
    real = detkit.apis.init_detector

    def recording(cfg, checkpoint=None, **kwargs):
        seen.append(checkpoint)
        return real(cfg, checkpoint, **kwargs)

    monkeypatch.setattr(detkit.apis, 'init_detector', recording)
    common = ['--max-iter', '2', '--num-warmup', '1']
    TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'], *common])
    TOOL['main']([tiny_setup['cfg_file'], '--checkpoint', tiny_setup['ckpt'],
                  *common])
    TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'], '--checkpoint',
                  tiny_setup['ckpt'], *common])  # the same file twice: fine
    assert seen == [tiny_setup['ckpt']] * 3
    with pytest.raises(SystemExit):  # two different checkpoints
        TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                      '--checkpoint', 'other.pth', *common])


def test_inference_refuses_several_processes(tiny_setup, monkeypatch):  # noqa
    import mmengine.dist
    monkeypatch.setattr(mmengine.dist, 'get_dist_info', lambda: (0, 2))
    cfg = TOOL['_load_cfg'](tiny_setup['cfg_file'])
    with pytest.raises(RuntimeError, match='runs in one process, but 2'):
        TOOL['benchmark'](cfg, tiny_setup['ckpt'], task='inference')


def _torchrun(nproc, *args, cwd):
    """``tools/analysis_tools/benchmark.py args --launcher pytorch`` in
    ``nproc`` processes; returns (return code, output)."""
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([REPO_ROOT] + [
                   p for p in [os.environ.get('PYTHONPATH')] if p]))
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           f'--nproc_per_node={nproc}', f'--master_port={port}',
           osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'benchmark.py'),
           *args, '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_launcher_pytorch_splits_the_data_between_processes(
        tiny_setup, tmp_path):  # noqa: F811
    out = tmp_path / 'dataset.json'
    # 3 test images over 2 processes: rank 0 takes indices 0 and 2, rank 1
    # index 1; no warm-up, so every fetch is timed
    rc, log = _torchrun(2, tiny_setup['cfg_file'], '--task', 'dataset',
                        '--num-warmup', '0', '--max-iter', '5', '--out',
                        str(out), cwd=tmp_path)
    assert rc == 0, log
    saved = json.loads(out.read_text())
    assert [r[0]['iters'] for r in saved['per_rank']] == [2, 1]
    assert saved['total_images_per_second'][0] == pytest.approx(
        sum(r[0]['images_per_second'] for r in saved['per_rank']))
    assert '[dataset] rank 1 repeat 1/1' in log
    assert 'images/s over 2 processes' in log
    # inference in one process, as mmdetection starts it
    rc, log = _torchrun(1, tiny_setup['cfg_file'], '--checkpoint',
                        tiny_setup['ckpt'], '--max-iter', '2',
                        '--num-warmup', '1', cwd=tmp_path)
    assert rc == 0, log
    assert '[inference] repeat 1/1' in log


def test_train_task_runs_the_config_and_splits_data_and_step(
        tiny_setup, tmp_path):  # noqa: F811
    """--task train: max_iter real training iterations through DetRunner;
    the figures after the warm-up add up (images/s = images / (data +
    step)), and the model's weights moved."""
    seen = {}
    import detkit.engine
    real = detkit.engine.DetRunner.train

    def spying_train(runner):
        model = runner.model
        seen['before'] = {k: v.clone() for k, v in model.state_dict().items()}
        out = real(runner)
        seen['after'] = model.state_dict()
        seen['iter'] = runner.iter
        return out

    detkit.engine.DetRunner.train = spying_train
    try:
        out = tmp_path / 'train.json'
        result, = TOOL['main']([tiny_setup['cfg_file'], '--task', 'train',
                                '--max-iter', '5', '--num-warmup', '2',
                                '--work-dir', str(tmp_path / 'work'),
                                '--out', str(out)])
    finally:
        detkit.engine.DetRunner.train = real
    assert seen['iter'] == 5 and result['total_iters'] == 5
    assert result['iters'] == len(result['step_times']) == 3
    assert len(result['data_times']) == 3
    busy = sum(result['step_times']) + sum(result['data_times'])
    assert result['images_per_second'] == pytest.approx(2 * 3 / busy)
    assert result['data_share'] == pytest.approx(
        sum(result['data_times']) / busy)
    assert result['median_step_time'] == statistics.median(
        result['step_times'])
    assert result['val_seconds'] == 0  # no validation in the timed run
    moved = [k for k in seen['before']
             if not torch.equal(seen['before'][k], seen['after'][k])]
    assert 'bbox_head.retina_cls.weight' in moved
    assert json.loads(out.read_text())['results'][0]['iters'] == 3
    with pytest.raises(ValueError, match='times inference only'):
        TOOL['benchmark'](TOOL['_load_cfg'](tiny_setup['cfg_file']),
                          task='train', backend='onnxruntime')


def test_onnxruntime_backend_predicts_what_pytorch_predicts(
        tiny_setup):  # noqa: F811
    """--backend onnxruntime: the exported graph's test_step gives the
    PyTorch model's detections on the config's test images (same labels,
    scores to 1e-5, boxes to 1e-3 px), and is timed like inference."""
    pytest.importorskip('onnxruntime', reason='onnxruntime is optional '
                        '(requirements/optional.txt)')
    from mmengine.runner import Runner
    cfg = TOOL['_load_cfg'](tiny_setup['cfg_file'])
    model, detector = TOOL['_ort_detector'](cfg, tiny_setup['ckpt'],
                                            threads=1)
    loader = Runner.build_dataloader(
        TOOL['_dataloader_cfg'](cfg, 'test', 1, 0))
    compared = 0
    for batch in loader:
        with torch.no_grad():
            expected = model.test_step(batch)[0].pred_instances
        got = detector.test_step(batch)[0].pred_instances
        assert torch.equal(got.labels, expected.labels)
        torch.testing.assert_close(got.scores, expected.scores, rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(got.bboxes, expected.bboxes, rtol=0,
                                   atol=1e-3)
        compared += len(expected)
    assert compared > 10
    result, = TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                            '--backend', 'onnxruntime', '--max-iter', '3',
                            '--num-warmup', '1'])
    assert result['iters'] == 2
