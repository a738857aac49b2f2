"""tools/analysis_tools/benchmark.py: what it times and how it reports."""
import json
import os
import os.path as osp
import socket
import statistics
import subprocess
import sys

import pytest
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
