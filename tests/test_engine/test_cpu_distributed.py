"""Two processes with torchrun and gloo, through tools/train.py."""
import os
import socket
import subprocess
import sys

import torch
from engine_toys import toy_cfg
from mmengine.config import Config

from conftest import REPO_ROOT

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_process_gloo_training_writes_checkpoint(tmp_path):
    # Without CUDA, keep the usual 'nccl' in the config: DetRunner must
    # switch to gloo by itself. With CUDA, ask for gloo explicitly.
    backend = 'gloo' if torch.cuda.is_available() else 'nccl'
    cfg = Config(
        toy_cfg(
            tmp_path / 'unused',
            max_epochs=1,
            # SyncBN cannot run on CPU; DetRunner must turn it into BN.
            model=dict(type='_EngineToyModel', sync_bn=True),
            env_cfg=dict(dist_cfg=dict(backend=backend)),
            custom_hooks=[dict(type='_ParamSumHook')],
            custom_imports=dict(imports=['engine_toys'],
                                allow_failed_imports=False)))
    cfg_path = tmp_path / 'toy_dist.py'
    cfg.dump(str(cfg_path))
    work_dir = tmp_path / 'work'
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR]),
        OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [
            sys.executable, '-m', 'torch.distributed.run',
            '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
            '--master_port', str(_free_port()), 'tools/train.py',
            str(cfg_path), '--launcher', 'pytorch', '--work-dir',
            str(work_dir)
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(work_dir / 'epoch_1.pth', weights_only=True)
    # 8 samples over 2 processes, batch 2: 2 iterations per epoch.
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (1, 2)
    assert len(ckpt['message_hub']['log_scalars']['train/loss']
               ['log_history']) == 2
    # DDP kept both processes' parameters identical.
    sums = [(work_dir / f'rank{r}.txt').read_text().split() for r in (0, 1)]
    assert sums[0] == sums[1]
    assert sums[0][1] == '2'  # world size
    assert 'norm.running_mean' in ckpt['state_dict']
