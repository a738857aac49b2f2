"""A run killed with SIGKILL in epoch 2 and resumed with ``--resume`` ends
exactly like the run that was never interrupted; the per-sample seeding
that makes the epoch-2 data identical (detkit.engine.seeded_data)."""
import os.path as osp
import pickle
import random
import runpy
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from reliability_toys import (TRAIN_TOOL, dump_for_subprocess, make_shapes,
                              read_jsonl, state_dict_of, subprocess_env,
                              tiny_cfg, toy_runner_cfg)
from torch.utils.data import Dataset

from detkit.engine import DetRunner
from detkit.engine.seeded_data import (SeededDataset, SeededIndex,
                                       seed_rngs, seed_train_dataloader_cfg)

HOOKS = [dict(type='NumClassCheckHook'), dict(type='_RecordHook')]
TRAIN = runpy.run_path(TRAIN_TOOL, run_name='detkit_tools_train')


def _train_in_process(cfg_file, work_dir, *args):
    """tools/train.py in this process (a subprocess spends seconds on
    imports on a busy 2-core machine), on one thread like the subprocess;
    torch's global settings are put back afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        TRAIN['main']([cfg_file, '--work-dir', str(work_dir), *args,
                       '--cfg-options',
                       f'experiment_name={osp.basename(work_dir)}'])
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def test_sigkill_in_epoch_2_then_resume_equals_uninterrupted(tmp_path):
    data_root = make_shapes(tmp_path / 'shapes')
    # The quick start's loader setting (one persistent worker) is a case
    # mmengine alone gets wrong: the worker's RNG runs on across epochs.
    common = dict(
        randomness=dict(seed=0, deterministic=True),
        train_dataloader=dict(num_workers=1, persistent_workers=True))
    plain = dump_for_subprocess(
        tiny_cfg(data_root, tmp_path / 'unused', custom_hooks=HOOKS,
                 **common), tmp_path / 'tiny.py')
    killed = dump_for_subprocess(
        tiny_cfg(data_root, tmp_path / 'unused',
                 custom_hooks=HOOKS + [dict(type='_KillAtIterHook',
                                            iteration=6)], **common),
        tmp_path / 'tiny_killed.py')
    straight_dir, crash_dir = tmp_path / 'straight', tmp_path / 'crash'
    crash = subprocess.Popen(
        [sys.executable, TRAIN_TOOL, killed, '--work-dir', str(crash_dir)],
        env=subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        _train_in_process(plain, straight_dir)  # meanwhile
        out, _ = crash.communicate(timeout=300)
    finally:
        crash.kill()
    assert crash.returncode == -signal.SIGKILL, out
    # Killed after iteration 6 = iteration 2 of epoch 2: only epoch 1 saved.
    assert [b['iter'] for b in read_jsonl(crash_dir / 'batches.jsonl')] == [
        0, 1, 2, 3, 4, 5]
    assert not (crash_dir / 'epoch_2.pth').exists()
    assert (crash_dir / 'last_checkpoint').read_text() == str(
        crash_dir / 'epoch_1.pth')
    epoch_1 = state_dict_of(crash_dir / 'epoch_1.pth')

    _train_in_process(plain, crash_dir, '--resume')

    # The resumed run started at epoch 2 and saw the same images with the
    # same flips as the uninterrupted one...
    straight_batches = read_jsonl(straight_dir / 'batches.jsonl')
    crash_batches = read_jsonl(crash_dir / 'batches.jsonl')
    assert crash_batches[6:] == straight_batches[4:]  # resumed epoch 2
    assert crash_batches[4:6] == straight_batches[4:6]  # before the kill
    flips = [f for b in straight_batches for f in b['flips']]
    assert 0 < sum(flips) < len(flips)
    # ...so the parameters, optimizer state and losses are the same.
    a = torch.load(straight_dir / 'epoch_2.pth', weights_only=True)
    b = torch.load(crash_dir / 'epoch_2.pth', weights_only=True)
    assert a['meta']['epoch'] == b['meta']['epoch'] == 2
    assert a['state_dict'].keys() == b['state_dict'].keys()
    moved = 0
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=0,
                                   atol=1e-6, msg=key)
        moved += not torch.equal(value, epoch_1[key])
    assert moved > 50  # epoch 2 trained most tensors
    for key, state in a['optimizer']['state'].items():
        for name, value in state.items():
            torch.testing.assert_close(b['optimizer']['state'][key][name],
                                       value, rtol=0, atol=1e-6)
    losses = [c['message_hub']['log_scalars']['train/loss']['log_history']
              for c in (a, b)]
    assert len(losses[0]) == 8
    np.testing.assert_allclose(losses[1], losses[0], rtol=0, atol=1e-6)
    # ...and the final validation gives the same numbers.
    metrics = [read_jsonl(d / 'metrics.jsonl')[-1]
               for d in (straight_dir, crash_dir)]
    assert metrics[0]['epoch'] == metrics[1]['epoch'] == 2
    assert metrics[0]['metrics'] == metrics[1]['metrics']
    assert metrics[0]['metrics']['coco/AR@100'] > 0


def _toy_run(work_dir, **overrides):
    runner = DetRunner.from_cfg(Config(toy_runner_cfg(work_dir, **overrides)))
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ ==
                'RecordInputsHook')
    return runner, hook


def test_resume_follows_the_checkpoint_seed(tmp_path):
    # The resumed run's config has another seed (a config without one
    # gets a random one): mmengine switches to the checkpoint's seed after
    # the sampler was built, and the data follows.
    _toy_run(tmp_path / 'a', randomness=dict(seed=0), train_cfg=dict(
        by_epoch=True, max_epochs=1))
    resumed, resumed_hook = _toy_run(tmp_path / 'a', resume=True,
                                     randomness=dict(seed=123))
    straight, straight_hook = _toy_run(tmp_path / 'b',
                                       randomness=dict(seed=0))
    assert resumed.seed == 0 and resumed_hook.sampler_seed == 0
    assert len(resumed_hook.inputs) == 4 and len(straight_hook.inputs) == 8
    for got, expected in zip(resumed_hook.inputs, straight_hook.inputs[4:]):
        assert torch.equal(got, expected)
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------ per-sample seeding
class _Draws(Dataset):
    """Each sample is the randomness its fetch sees."""

    metainfo = dict(classes=('a', ))

    def __len__(self):
        return 6

    def __getitem__(self, idx):
        return (int(idx), int(np.random.randint(1 << 30)),
                random.random(), int(torch.randint(1 << 30, (1, ))))


def _loader(seeded, **kwargs):
    cfg = dict(dataset=_Draws(), sampler=dict(type='DefaultSampler'),
               batch_size=2, collate_fn=lambda batch: batch, **kwargs)
    if seeded:
        cfg = seed_train_dataloader_cfg(cfg)
    return Runner.build_dataloader(cfg, seed=0)


def _epoch(loader, epoch):
    """Samples of one epoch, and a draw of the main process right after
    its first batch (what a model would draw)."""
    sampler = loader.batch_sampler.sampler
    sampler.set_epoch(epoch)
    batches = iter(loader)
    samples = list(next(batches))
    main_draw = float(torch.rand(1))
    for batch in batches:
        samples += batch
    return samples, main_draw


def _uninterrupted_and_resumed(seeded, **kwargs):
    seed_rngs(0, all_devices=True)  # as the runner does at start
    loader = _loader(seeded, **kwargs)
    first = _epoch(loader, 0)
    second = _epoch(loader, 1)
    # A resumed run: seeded at start, other draws (building the model),
    # a new loader, and straight to epoch 2.
    seed_rngs(0, all_devices=True)
    np.random.rand(5), torch.rand(5)
    resumed = _epoch(_loader(seeded, **kwargs), 1)
    return first, second, resumed


@pytest.mark.parametrize('workers', [
    dict(num_workers=0),
    dict(num_workers=1, persistent_workers=True),
    dict(num_workers=2, persistent_workers=False),
])
def test_epoch_randomness_is_a_function_of_seed_and_epoch(workers):
    first, second, resumed = _uninterrupted_and_resumed(True, **workers)
    assert resumed == second
    assert sorted(s[0] for s in second[0]) == list(range(6))
    # Fresh randomness every epoch, and within an epoch.
    assert {s[1:] for s in first[0]}.isdisjoint(s[1:] for s in second[0])
    assert len({s[1] for s in second[0]}) == 6
    # Where the samples are fetched does not matter.
    baseline = _uninterrupted_and_resumed(True, num_workers=0)
    assert [s[:3] for s in second[0]] == [s[:3] for s in baseline[1][0]]


@pytest.mark.parametrize('workers', [
    dict(num_workers=0),
    dict(num_workers=1, persistent_workers=True),
])
def test_without_sample_seeds_a_resumed_epoch_differs(workers):
    # mmengine's seeding alone (what detkit fixes): the RNG streams of
    # the main process or of a persistent worker run on across epochs.
    _, second, resumed = _uninterrupted_and_resumed(False, **workers)
    assert [s[0] for s in resumed[0]] == [s[0] for s in second[0]]
    assert [s[1] for s in resumed[0]] != [s[1] for s in second[0]]


def test_seeded_index_and_dataset_wrappers():
    index = SeededIndex(3, 12345)
    assert index == 3 and [10, 11, 12, 13][index] == 13
    back = pickle.loads(pickle.dumps(index))
    assert (type(back), int(back), back.seed) == (SeededIndex, 3, 12345)
    assert repr(back) == 'SeededIndex(3, seed=12345)'
    dataset = SeededDataset(_Draws())
    assert dataset.metainfo == dict(classes=('a', )) and len(dataset) == 6
    # The same seed gives the same sample; a plain index is not reseeded.
    assert dataset[index] == dataset[SeededIndex(3, 12345)]
    assert dataset[index] != dataset[SeededIndex(3, 12346)]
    assert pickle.loads(pickle.dumps(dataset))[index] == dataset[index]
    # The runner's config wrapping is idempotent and leaves loaders alone.
    cfg = seed_train_dataloader_cfg(dict(dataset=dict(type='X'),
                                         sampler=dict(type='Y')))
    assert cfg['dataset']['type'] is SeededDataset
    assert seed_train_dataloader_cfg(cfg) is cfg
    loader = _loader(False)
    assert seed_train_dataloader_cfg(loader) is loader
