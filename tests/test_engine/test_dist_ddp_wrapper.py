"""DetDistributedDataParallel and DetRunner's distributed set-up, in one
process: loss averaging against a stand-in peer rank, the non-finite guard
under real (world size 1, gloo) DDP, the wrapper and SyncBN handling of the
runner, and gradients of a batch without ground truth."""
import copy
import zlib

import pytest
import torch
import torch.distributed as torch_dist
from engine_toys import toy_cfg
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS as ROOT_MODEL_WRAPPERS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from torch import nn

from detkit.engine import DetRunner
from detkit.engine import dist as det_dist
from detkit.engine.dist import DetDistributedDataParallel, average_across_ranks
from detkit.models.detectors.base import BaseDetector, NonFiniteLossError
from detkit.registry import MODELS
from detkit.structures import DetDataSample
from test_dist_common import free_port, write_config


class _Peer:
    """Rank 1 of a world of 2, seen from rank 0: ``all_reduce`` adds what
    rank 1 would contribute (its name signature, then its values)."""

    def __init__(self, names, values):
        signature = [len(names), zlib.crc32('\0'.join(names).encode())]
        self.pending = [torch.tensor(signature), torch.tensor(values)]

    def all_reduce(self, tensor):
        tensor += self.pending.pop(0).to(tensor.dtype)


def _as_rank0_of_two(monkeypatch, peer):
    monkeypatch.setattr(det_dist.torch_dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(det_dist.torch_dist, 'get_world_size', lambda: 2)
    monkeypatch.setattr(det_dist.torch_dist, 'get_rank', lambda: 0)
    monkeypatch.setattr(det_dist.torch_dist, 'all_reduce', peer.all_reduce)


def _log_vars(**values):
    return {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}


def test_average_across_ranks_is_the_mean_of_both_ranks(monkeypatch):
    names = ['loss', 'loss_cls', 'loss_bbox']
    peer = _Peer(names, [0.5, 0.5, 0.0])  # a rank without ground truth
    _as_rank0_of_two(monkeypatch, peer)
    mean = average_across_ranks(_log_vars(loss=3.0, loss_cls=1.0,
                                          loss_bbox=2.0))
    assert list(mean) == names
    assert [float(v) for v in mean.values()] == [1.75, 0.75, 1.0]
    assert not any(v.requires_grad for v in mean.values())
    assert peer.pending == []  # exactly two all_reduces


def test_average_across_ranks_nan_on_a_peer_reaches_every_rank(monkeypatch):
    _as_rank0_of_two(monkeypatch, _Peer(['loss'], [float('nan')]))
    assert torch.isnan(average_across_ranks(_log_vars(loss=1.0))['loss'])


def test_average_across_ranks_refuses_different_loss_names(monkeypatch):
    _as_rank0_of_two(monkeypatch, _Peer(['loss', 'loss_rpn'], [1.0, 1.0]))
    with pytest.raises(RuntimeError, match=r"rank 0 logs \['loss', "
                       r"'loss_cls'\], but other ranks log different"):
        average_across_ranks(_log_vars(loss=1.0, loss_cls=1.0))


def test_average_without_process_group_returns_the_values():
    mean = average_across_ranks(_log_vars(loss=2.5, acc=90.0))
    assert {k: float(v) for k, v in mean.items()} == dict(loss=2.5, acc=90.0)


@pytest.fixture
def gloo_world_of_one():
    torch_dist.init_process_group(
        'gloo', store=torch_dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        torch_dist.destroy_process_group()


class _ToyDetector(BaseDetector):
    """``loss = mean((w x + b)^2)`` plus a list-valued term."""

    def __init__(self, skip_nonfinite=False):
        super().__init__(skip_nonfinite=skip_nonfinite)
        self.linear = nn.Linear(2, 1)

    def loss(self, inputs, data_samples):
        out = self.linear(inputs)
        return dict(loss_a=(out**2).mean(),
                    loss_b=[out.abs().mean(), out.mean() * 0])


def _step(model, inputs, lr=0.1):
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr))
    return model.train_step(dict(inputs=inputs, data_samples=None), optim)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_wrapper_step_equals_the_detector_step(gloo_world_of_one):
    torch.manual_seed(1)
    single = _ToyDetector()
    wrapped = DetDistributedDataParallel(
        module=copy.deepcopy(single), device_ids=None)
    inputs = torch.tensor([[1., 2.], [-3., 0.5]])
    logged_single = _step(single, inputs)
    logged_wrapped = _step(wrapped, inputs)
    assert list(logged_wrapped) == ['loss', 'loss_a', 'loss_b']
    for key in logged_single:
        assert float(logged_wrapped[key]) == pytest.approx(
            float(logged_single[key]), rel=1e-6)
    for p_single, p_wrapped in zip(single.parameters(), wrapped.parameters()):
        torch.testing.assert_close(p_wrapped, p_single)


def test_wrapper_skips_a_non_finite_step_and_keeps_training(
        gloo_world_of_one):
    wrapped = DetDistributedDataParallel(
        module=_ToyDetector(skip_nonfinite=True), device_ids=None)
    before = _params(wrapped)
    logged = _step(wrapped, torch.tensor([[float('nan'), 1.], [2., 3.]]))
    assert all(torch.isnan(v) for v in logged.values())
    assert wrapped.module.num_skipped_steps == 1
    for p, q in zip(wrapped.parameters(), before):
        assert torch.equal(p, q)
    # DDP is not left waiting for the skipped backward pass.
    logged = _step(wrapped, torch.tensor([[1., 2.], [3., 4.]]))
    assert torch.isfinite(logged['loss'])
    assert any(not torch.equal(p, q)
               for p, q in zip(wrapped.parameters(), before))


def test_wrapper_stops_on_a_non_finite_loss_by_default(gloo_world_of_one):
    wrapped = DetDistributedDataParallel(module=_ToyDetector(),
                                         device_ids=None)
    with pytest.raises(NonFiniteLossError, match='loss, loss_a, loss_b'):
        _step(wrapped, torch.tensor([[float('inf'), 1.]]))


def test_runner_on_cpu_uses_gloo_det_wrapper_and_plain_bn(tmp_path,
                                                          monkeypatch):
    for key, value in dict(RANK=0, WORLD_SIZE=1, LOCAL_RANK=0,
                           MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=free_port()).items():
        monkeypatch.setenv(key, str(value))
    # The usual 'nccl' of configs: without CUDA, detkit switches to gloo.
    cfg = Config(toy_cfg(tmp_path, model=dict(type='_EngineToyModel',
                                              sync_bn=True),
                         launcher='pytorch',
                         env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    try:
        runner = DetRunner.from_cfg(cfg)
        assert torch_dist.get_backend() == 'gloo'
        assert type(runner.model) is DetDistributedDataParallel
        assert runner.model.device_ids is None
        norm = runner.model.module.norm
        assert type(norm).__name__ == '_BatchNormXd'  # SyncBN reverted
        # A config's own model_wrapper_cfg still decides.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel')
        cfg.experiment_name += '_plain'
        runner = DetRunner.from_cfg(cfg)
        assert type(runner.model).__name__ == 'MMDistributedDataParallel'
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_runner_with_nccl_hands_mmengine_the_det_wrapper(monkeypatch):
    """On GPUs mmengine's own wrap_model runs (device_ids=[LOCAL_RANK]);
    detkit only supplies the wrapper config, which the root registry must
    resolve to detkit's class."""
    seen = []
    monkeypatch.setattr(Runner, 'wrap_model',
                        lambda self, cfg, model: seen.append(cfg) or model)
    runner = object.__new__(DetRunner)
    runner._distributed, runner._gloo = True, False
    runner.cfg = Config(dict(find_unused_parameters=True))
    model = nn.Linear(1, 1)
    assert DetRunner.wrap_model(runner, None, model) is model
    # mmengine looks the type up in its root registry, where only the
    # scoped name finds detkit's class.
    assert seen == [dict(type='detkit.DetDistributedDataParallel',
                         broadcast_buffers=False,
                         find_unused_parameters=True)]
    with DefaultScope.overwrite_default_scope('detkit'):
        assert ROOT_MODEL_WRAPPERS.get(
            seen[0]['type']) is DetDistributedDataParallel
    # A config's own wrapper: detkit's gets its scope, mmengine's is kept.
    DetRunner.wrap_model(
        runner, dict(type='DetDistributedDataParallel', static_graph=True),
        model)
    assert seen[-1] == dict(type='detkit.DetDistributedDataParallel',
                            static_graph=True)
    DetRunner.wrap_model(runner, dict(type='MMDistributedDataParallel'),
                         model)
    assert seen[-1] == dict(type='MMDistributedDataParallel')


def test_batch_without_ground_truth_gives_every_parameter_a_gradient(
        tmp_path):
    """DDP (find_unused_parameters=False) needs a gradient for every
    parameter on every rank; a rank whose batch has no box must still
    produce one (zero where nothing is learnt)."""
    cfg = Config.fromfile(write_config(tmp_path / 'cfg.py', str(tmp_path)))
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_shape=(64, 64), ori_shape=(64, 64),
            scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                     for _ in range(2)],
             data_samples=samples), True)
    # SyncBN layers without a process group run as BN (torch's fallback).
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert float(log_vars['loss_bbox']) == 0.0
    assert float(log_vars['loss_cls']) > 0
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
