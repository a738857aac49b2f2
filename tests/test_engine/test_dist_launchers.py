"""The launcher scripts' command lines (with stand-in ``python`` and
``srun`` programs that record their arguments), and how the processes they
start find their rank and set up gloo."""
import os
import os.path as osp
import subprocess

import pytest
import torch
import torch.distributed as torch_dist

from detkit.engine.dist import init_gloo_dist, use_gloo
from test_dist_common import REPO_ROOT, free_port

TOOLS = osp.join(REPO_ROOT, 'tools')


def _recorder(path, name):
    """An executable ``name`` that writes its arguments, one per line,
    then ``PYTHONPATH=...``, to ``<path>/<name>.args``."""
    exe = path / name
    exe.write_text('#!/usr/bin/env bash\n'
                   f'printf "%s\\n" "$@" > "{path}/{name}.args"\n'
                   f'echo "PYTHONPATH=$PYTHONPATH" >> "{path}/{name}.args"\n')
    exe.chmod(0o755)
    return exe


def _run(tmp_path, script, *args, **env):
    """Run ``tools/<script>`` with the recorders first on PATH; returns the
    recorded argument list of the program it started."""
    full_env = {
        k: v for k, v in os.environ.items()
        if k not in ('PYTHON', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT',
                     'GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS',
                     'GRES', 'PYTHONPATH')
    }
    full_env['PATH'] = f'{tmp_path}{os.pathsep}{os.environ["PATH"]}'
    full_env.update(env)
    proc = subprocess.run(['bash', osp.join(TOOLS, script), *args],
                          env=full_env, capture_output=True, text=True,
                          timeout=30)
    return proc


def _recorded(tmp_path, name):
    lines = (tmp_path / f'{name}.args').read_text().splitlines()
    return lines[:-1], lines[-1]


def test_dist_train_defaults_to_one_local_node(tmp_path):
    _recorder(tmp_path, 'python')  # the active environment's python
    proc = _run(tmp_path, 'dist_train.sh', 'cfg.py', '4', '--cfg-options',
                'data_root=/my data/', '--amp')
    assert proc.returncode == 0, proc.stderr
    args, pythonpath = _recorded(tmp_path, 'python')
    assert args == [
        '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=0',
        '--master_addr=127.0.0.1', '--master_port=29500',
        '--nproc_per_node=4',
        osp.join(TOOLS, 'train.py'), 'cfg.py', '--launcher', 'pytorch',
        '--cfg-options', 'data_root=/my data/', '--amp'
    ]
    assert pythonpath == f'PYTHONPATH={REPO_ROOT}'


def test_dist_train_and_test_honour_the_multi_machine_variables(tmp_path):
    fake = _recorder(tmp_path, 'my_python')
    env = dict(PYTHON=str(fake), NNODES='2', NODE_RANK='1',
               MASTER_ADDR='10.1.2.3', PORT='29612', PYTHONPATH='/extra')
    machine_args = ['-m', 'torch.distributed.run', '--nnodes=2',
                    '--node_rank=1', '--master_addr=10.1.2.3',
                    '--master_port=29612', '--nproc_per_node=8']
    proc = _run(tmp_path, 'dist_train.sh', 'cfg.py', '8', **env)
    assert proc.returncode == 0, proc.stderr
    args, pythonpath = _recorded(tmp_path, 'my_python')
    assert args == machine_args + [
        osp.join(TOOLS, 'train.py'), 'cfg.py', '--launcher', 'pytorch']
    assert pythonpath == f'PYTHONPATH={REPO_ROOT}:/extra'
    proc = _run(tmp_path, 'dist_test.sh', 'cfg.py', 'e 1.pth', '8', '--out',
                'r.pkl', **env)
    assert proc.returncode == 0, proc.stderr
    assert _recorded(tmp_path, 'my_python')[0] == machine_args + [
        osp.join(TOOLS, 'test.py'), 'cfg.py', 'e 1.pth', '--launcher',
        'pytorch', '--out', 'r.pkl']


@pytest.mark.parametrize('script,nargs', [('dist_train.sh', 1),
                                          ('dist_test.sh', 2),
                                          ('slurm_train.sh', 3),
                                          ('slurm_test.sh', 3)])
def test_scripts_print_usage_when_arguments_are_missing(
        tmp_path, script, nargs):
    proc = _run(tmp_path, script, *['x'] * nargs)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f'usage: {osp.join(TOOLS, script)} ')


def test_slurm_train_builds_the_srun_command(tmp_path):
    _recorder(tmp_path, 'srun')
    proc = _run(tmp_path, 'slurm_train.sh', 'gpu-part', 'retina', 'cfg.py',
                'work dir', '--resume', GPUS='16', GPUS_PER_NODE='8',
                CPUS_PER_TASK='4', SRUN_ARGS='--quotatype=auto --time=60')
    assert proc.returncode == 0, proc.stderr
    args, pythonpath = _recorded(tmp_path, 'srun')
    assert args == [
        '-p', 'gpu-part', '--job-name=retina', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
        '--quotatype=auto', '--time=60', 'python', '-u',
        osp.join(TOOLS, 'train.py'), 'cfg.py', '--work-dir=work dir',
        '--launcher=slurm', '--resume'
    ]
    assert pythonpath == f'PYTHONPATH={REPO_ROOT}'


def test_slurm_test_defaults_and_cpu_partition(tmp_path):
    _recorder(tmp_path, 'srun')
    # mmdetection's defaults: 8 tasks, 8 per node, 5 CPUs each.
    proc = _run(tmp_path, 'slurm_test.sh', 'p', 'j', 'cfg.py', 'e.pth')
    assert proc.returncode == 0, proc.stderr
    assert _recorded(tmp_path, 'srun')[0] == [
        '-p', 'p', '--job-name=j', '--gres=gpu:8', '--ntasks=8',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        'python', '-u', osp.join(TOOLS, 'test.py'), 'cfg.py', 'e.pth',
        '--launcher=slurm'
    ]
    # A partition without GPUs: no --gres; the tasks use gloo on CPU.
    proc = _run(tmp_path, 'slurm_test.sh', 'cpu', 'j', 'cfg.py', 'e.pth',
                '--out', 'r.pkl', GRES='', GPUS='4', GPUS_PER_NODE='2')
    assert proc.returncode == 0, proc.stderr
    assert _recorded(tmp_path, 'srun')[0] == [
        '-p', 'cpu', '--job-name=j', '--ntasks=4', '--ntasks-per-node=2',
        '--cpus-per-task=5', '--kill-on-bad-exit=1', 'python', '-u',
        osp.join(TOOLS, 'test.py'), 'cfg.py', 'e.pth', '--launcher=slurm',
        '--out', 'r.pkl'
    ]


def test_use_gloo_without_cuda_or_when_asked(monkeypatch):
    nccl = dict(dist_cfg=dict(backend='nccl'))
    gloo = dict(dist_cfg=dict(backend='gloo'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert [use_gloo(launcher, nccl) for launcher in
            ('none', 'pytorch', 'slurm')] == [False, False, False]
    assert [use_gloo(launcher, gloo) for launcher in
            ('none', 'pytorch', 'slurm', 'mpi')] == [False, True, True,
                                                     False]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert [use_gloo(launcher, nccl) for launcher in
            ('none', 'pytorch', 'slurm')] == [False, True, True]


def _clear_env(monkeypatch, *names):
    for name in names:
        # setenv first, so that the value set by the code under test is
        # undone too.
        monkeypatch.setenv(name, '')
        monkeypatch.delenv(name)


def test_slurm_task_finds_its_rank_and_master(tmp_path, monkeypatch):
    # scontrol expands the node list; the first node is the master.
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/usr/bin/env bash\n'
                        '[ "$*" = "show hostnames node[7-8]" ] || exit 1\n'
                        'printf "localhost\\nnode8\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
    _clear_env(monkeypatch, 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
               'MASTER_PORT', 'SLURM_JOB_NODELIST')
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1',
                           SLURM_LOCALID='0',
                           SLURM_NODELIST='node[7-8]').items():
        monkeypatch.setenv(key, value)
    port = free_port()
    init_gloo_dist('slurm', timeout=30, port=port)
    try:
        assert torch_dist.get_backend() == 'gloo'
        assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)
        assert [os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK',
                                        'MASTER_ADDR', 'MASTER_PORT')] == [
                                            '0', '1', '0', 'localhost',
                                            str(port)]
    finally:
        torch_dist.destroy_process_group()


def test_launch_errors_say_what_is_missing(monkeypatch):
    _clear_env(monkeypatch, 'RANK', 'WORLD_SIZE', 'MASTER_PORT',
               'SLURM_PROCID')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    with pytest.raises(RuntimeError, match='RANK, WORLD_SIZE, MASTER_PORT '
                       r'is/are not set.*torch.distributed.run'):
        init_gloo_dist('pytorch')
    with pytest.raises(RuntimeError, match='needs SLURM_PROCID.*srun'):
        init_gloo_dist('slurm')
    assert not torch_dist.is_initialized()
