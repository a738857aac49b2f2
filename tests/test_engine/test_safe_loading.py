"""Foreign checkpoints load safely: mmengine objects become placeholders,
and a malicious pickle never runs, on every loading path detkit owns."""
import collections
import functools
import http.server
import logging
import os
import subprocess
import threading

import numpy as np
import pytest
import torch
from engine_toys import EngineToyModel, toy_cfg
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import \
    load_checkpoint as mmengine_load_checkpoint

from detkit.engine import (DetRunner, NeutralisedObject,
                           NeutralisedObjectsWarning, load_checkpoint,
                           load_checkpoint_file, load_state_dict,
                           message_hub_from_plain)
from detkit.engine.checkpoint import PartialCheckpointError

MARKER = None  # set per test: the file a payload would create


class SystemPayload:

    def __reduce__(self):
        return os.system, (f'touch {MARKER}', )


class SubprocessPayload:

    def __reduce__(self):
        return subprocess.call, (['touch', MARKER], )


class EvalPayload:

    def __reduce__(self):
        return eval, (f'open({MARKER!r}, "w").close()', )


class ImportOs:

    def __reduce__(self):
        return __import__, ('os', )


class GetSystem:
    """Pickles as ``getattr(__import__('os'), 'system')``."""

    def __call__(self):
        pass

    def __reduce__(self):
        return getattr, (ImportOs(), 'system')


class ChainedPayload:
    """Pickles as ``getattr(__import__('os'), 'system')('touch ...')``."""

    def __reduce__(self):
        return GetSystem(), (f'touch {MARKER}', )


PAYLOAD_GLOBALS = {
    'posix.system', 'subprocess.call', 'builtins.eval',
    'builtins.__import__', 'builtins.getattr'
}


def _toy_state_dict():
    model = EngineToyModel()
    with torch.no_grad():
        model.linear.weight.copy_(torch.arange(8.).reshape(2, 4))
        model.linear.bias.copy_(torch.tensor([-1., 1.]))
    return model.state_dict()


@pytest.fixture
def marker(tmp_path):
    global MARKER
    MARKER = str(tmp_path / 'payload_ran')
    yield MARKER
    MARKER = None


@pytest.fixture
def evil_ckpt(tmp_path, marker):
    """A resumable checkpoint whose meta, message hub and optimizer carry
    every payload."""
    payloads = [SystemPayload(), SubprocessPayload(), EvalPayload(),
                ChainedPayload()]
    ckpt = dict(
        meta=dict(epoch=3, iter=12, evil=payloads),
        state_dict=_toy_state_dict(),
        message_hub=dict(
            log_scalars={'train/loss': SystemPayload()},
            runtime_info=dict(evil=EvalPayload()),
            resumed_keys={'train/loss': True, 'evil': True}),
        param_schedulers=[dict(evil=SubprocessPayload())])
    path = tmp_path / 'evil.pth'
    torch.save(ckpt, path)
    assert not os.path.exists(marker)
    return str(path)


def _assert_toy_weights(model):
    model = getattr(model, 'module', model)
    assert torch.equal(model.linear.weight, torch.arange(8.).reshape(2, 4))
    assert torch.equal(model.linear.bias, torch.tensor([-1., 1.]))


def test_load_checkpoint_file_neutralises_payloads(evil_ckpt, marker):
    with pytest.warns(NeutralisedObjectsWarning) as record:
        ckpt = load_checkpoint_file(evil_ckpt)
    assert not os.path.exists(marker)
    assert len(record) == 1
    for name in PAYLOAD_GLOBALS:
        assert name in str(record[0].message)
    evil = ckpt['meta']['evil']
    assert [type(e).neutralised_global for e in evil] == [
        'posix.system', 'subprocess.call', 'builtins.eval',
        'builtins.getattr'
    ]
    assert evil[0].args == (f'touch {marker}', )
    assert isinstance(evil[3], NeutralisedObject)
    assert torch.equal(ckpt['state_dict']['linear.bias'],
                       torch.tensor([-1., 1.]))


def test_load_checkpoint_into_model_neutralises_payloads(evil_ckpt, marker):
    model = EngineToyModel()
    with pytest.warns(NeutralisedObjectsWarning):
        load_checkpoint(model, evil_ckpt)
    _assert_toy_weights(model)
    # mmengine's own load_checkpoint and init_cfg=dict(type='Pretrained')
    # use detkit's loader for local files.
    model = EngineToyModel()
    with pytest.warns(NeutralisedObjectsWarning):
        mmengine_load_checkpoint(model, evil_ckpt)
    _assert_toy_weights(model)
    model = EngineToyModel()
    with pytest.warns(NeutralisedObjectsWarning):
        PretrainedInit(checkpoint=evil_ckpt)(model)
    _assert_toy_weights(model)
    assert not os.path.exists(marker)


def test_runner_load_from_neutralises_payloads(evil_ckpt, marker, tmp_path):
    runner = DetRunner.from_cfg(
        Config(toy_cfg(tmp_path / 'work', load_from=evil_ckpt)))
    with pytest.warns(NeutralisedObjectsWarning):
        runner.load_or_resume()
    _assert_toy_weights(runner.model)
    assert not os.path.exists(marker)


def test_runner_resume_neutralises_payloads(evil_ckpt, marker, tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(evil_ckpt)
    runner = DetRunner.from_cfg(Config(toy_cfg(work_dir, resume=True)))
    # As Runner.train() does before load_or_resume.
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    with pytest.warns(NeutralisedObjectsWarning):
        runner.load_or_resume()
    assert not os.path.exists(marker)
    _assert_toy_weights(runner.model)
    assert (runner.epoch, runner.iter) == (3, 12)
    # The placeholders reached neither the hub nor the schedulers.
    assert 'train/loss' not in runner.message_hub.log_scalars
    assert runner.message_hub.get_info('evil') is None
    assert not any(hasattr(s, 'evil') for s in runner.param_schedulers)


def test_http_download_neutralises_payloads(evil_ckpt, marker, tmp_path):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        model = EngineToyModel()
        url = f'http://127.0.0.1:{server.server_address[1]}/evil.pth'
        with pytest.warns(NeutralisedObjectsWarning):
            load_checkpoint(model, url)
    finally:
        torch.hub.set_dir(hub_dir)
        server.shutdown()
        server.server_close()
    _assert_toy_weights(model)
    assert (tmp_path / 'hub' / 'checkpoints' / 'evil.pth').is_file()
    assert not os.path.exists(marker)


def _mmdet_style_ckpt(path):
    """What mmengine's Runner saves: HistoryBuffer objects in the message
    hub, numpy scalars in the meta."""
    hub = MessageHub('mmdet_style_ckpt')
    for loss in (0.5, 0.25, 0.125):
        hub.update_scalar('train/loss', loss)
    hub.update_info('iter', 3)
    torch.save(
        dict(
            meta=dict(epoch=1, iter=3, best_score=np.float64(0.375),
                      dataset_meta=dict(classes=('cat', 'dog'))),
            state_dict=_toy_state_dict(),
            message_hub=hub.state_dict()), path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)


def test_mmdet_style_checkpoint_loads_with_one_warning(tmp_path):
    path = tmp_path / 'retinanet_zoo.pth'
    _mmdet_style_ckpt(path)
    with pytest.warns(NeutralisedObjectsWarning) as record:
        ckpt = load_checkpoint_file(str(path))
    assert len(record) == 1
    assert ('neutralised' not in str(record[0].message)
            and 'mmengine.logging.history_buffer.HistoryBuffer'
            in str(record[0].message))
    assert ckpt['meta']['best_score'] == 0.375
    assert torch.equal(ckpt['state_dict']['linear.weight'],
                       torch.arange(8.).reshape(2, 4))
    # The placeholder keeps the buffer's data; the runner rebuilds it.
    hub = message_hub_from_plain(ckpt['message_hub'])
    logs, counts = hub['log_scalars']['train/loss'].data
    np.testing.assert_array_equal(logs, [0.5, 0.25, 0.125])
    np.testing.assert_array_equal(counts, [1, 1, 1])
    assert hub['runtime_info'] == {'iter': 3}


def test_runner_resumes_history_from_mmengine_checkpoint(tmp_path):
    path = tmp_path / 'mmengine_run.pth'
    _mmdet_style_ckpt(path)
    runner = DetRunner.from_cfg(
        Config(toy_cfg(tmp_path / 'work', load_from=str(path), resume=True)))
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    with pytest.warns(NeutralisedObjectsWarning):
        runner.load_or_resume()
    np.testing.assert_array_equal(
        runner.message_hub.get_scalar('train/loss').data[0],
        [0.5, 0.25, 0.125])
    assert (runner.epoch, runner.iter) == (1, 3)


class TwoLayers(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(3, 2)


def _partial_state_dict():
    return collections.OrderedDict([
        ('a.weight', torch.ones(3, 4)),  # loads
        ('a.bias', torch.ones(5)),  # shape mismatch
        ('extra.weight', torch.ones(1)),  # unexpected
        # b.weight and b.bias missing
    ])


def test_load_state_dict_reports_keys_by_name(caplog):
    model = TwoLayers()
    bias_before = model.a.bias.clone()
    logger = logging.getLogger('detkit_test_load_report')
    with caplog.at_level(logging.WARNING, logger=logger.name):
        report = load_state_dict(model, _partial_state_dict(), logger=logger)
    assert report.missing == ['b.weight', 'b.bias']
    assert report.unexpected == ['extra.weight']
    assert report.mismatched == [('a.bias', (5, ), (3, ))]
    assert torch.equal(model.a.weight, torch.ones(3, 4))
    assert torch.equal(model.a.bias, bias_before)
    text = caplog.text
    assert 'b.weight, b.bias' in text and 'extra.weight' in text
    assert 'a.bias (checkpoint (5,), model (3,))' in text


def test_load_checkpoint_strict_raises_with_full_list(tmp_path):
    path = tmp_path / 'partial.pth'
    # A full checkpoint saved from DDP: keys carry the 'module.' prefix.
    torch.save(
        dict(state_dict=collections.OrderedDict(
            (f'module.{k}', v) for k, v in _partial_state_dict().items())),
        path)
    model = TwoLayers()
    weight_before = model.a.weight.clone()
    with pytest.raises(RuntimeError) as err:
        load_checkpoint(model, str(path), strict=True)
    for name in ('b.weight', 'b.bias', 'extra.weight',
                 'a.bias (checkpoint (5,), model (3,))'):
        assert name in str(err.value)
    assert torch.equal(model.a.weight, weight_before)  # untouched
    load_checkpoint(model, str(path))  # strict=False: loads what matches
    assert torch.equal(model.a.weight, torch.ones(3, 4))


def test_missing_file_error_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_loaded_fraction_is_counted_and_logged_in_one_line(caplog):
    model = TwoLayers()
    logger = logging.getLogger('detkit_test_fraction')
    with caplog.at_level(logging.WARNING, logger=logger.name):
        report = load_state_dict(model, _partial_state_dict(), logger=logger)
    # a.weight loads; a.bias mismatches; b.weight, b.bias are missing.
    assert (report.loaded, report.total) == (1, 4)
    assert report.fraction == 0.25
    first_line = caplog.text.splitlines()[0]
    assert first_line.endswith("While loading a state_dict into TwoLayers: "
                               "loaded 1 of the model's 4 weight tensors, "
                               '25.0%')


def test_fewer_than_half_loaded_is_refused_when_asked(tmp_path):
    model = TwoLayers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PartialCheckpointError) as err:
        load_state_dict(model, _partial_state_dict(), allow_partial=False,
                        source='other.pth')
    assert str(err.value).startswith(
        'other.pth: only 1 of the 4 weight tensors of TwoLayers are in this '
        'checkpoint (25.0%, fewer than half); the rest would keep random '
        'initial values. Model keys not in the checkpoint: b.weight, b.bias;'
        ' checkpoint keys the model does not have: extra.weight; 1 shape '
        'mismatches, e.g. a.bias (checkpoint (5,), model (3,)).')
    assert 'allow_partial=True' in str(err.value)
    assert '--allow-partial-checkpoint' in str(err.value)
    for key, value in model.state_dict().items():  # untouched
        assert torch.equal(value, before[key])
    # Exactly half is enough: a.weight and a.bias of the right shapes.
    state = collections.OrderedDict(
        [('a.weight', torch.ones(3, 4)), ('a.bias', torch.ones(3))])
    report = load_state_dict(model, state, allow_partial=False)
    assert (report.loaded, report.total) == (2, 4)
    assert torch.equal(model.a.bias, torch.ones(3))


def test_refusal_lists_three_examples_of_each_side(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save(dict(state_dict={f'head.{i}.weight': torch.ones(1)
                                for i in range(5)}), path)
    with pytest.raises(PartialCheckpointError) as err:
        load_checkpoint(TwoLayers(), str(path), allow_partial=False)
    assert (f'{path}: only 0 of the 4 weight tensors of TwoLayers'
            in str(err.value))
    assert ('Model keys not in the checkpoint: a.weight, a.bias, b.weight '
            '(+1 more); checkpoint keys the model does not have: '
            'head.0.weight, head.1.weight, head.2.weight (+2 more).'
            in str(err.value))
    # The library default keeps mmengine's warn-and-continue.
    assert load_checkpoint(TwoLayers(), str(path))['state_dict']


def test_a_payload_in_place_of_a_weight_is_named(tmp_path, marker):
    state = collections.OrderedDict(_toy_state_dict())
    state['linear.bias'] = SystemPayload()
    path = tmp_path / 'weight_payload.pth'
    torch.save(dict(state_dict=state), path)
    model = EngineToyModel()
    bias_before = model.linear.bias.detach().clone()
    with pytest.warns(NeutralisedObjectsWarning) as record:
        load_checkpoint(model, str(path))
    message = str(record[0].message)
    assert ('These weights are placeholders, not tensors, and are NOT '
            "loaded (they keep the model's initial values): linear.bias "
            '(posix.system)' in message)
    assert 'unaffected' not in message.split('linear.bias')[0]
    assert not os.path.exists(marker)
    model = getattr(model, 'module', model)
    assert torch.equal(model.linear.weight, torch.arange(8.).reshape(2, 4))
    assert torch.equal(model.linear.bias, bias_before)


def test_load_from_in_training_warns_with_the_fraction(tmp_path):
    path = tmp_path / 'half.pth'
    torch.save(dict(state_dict={'linear.weight': torch.ones(2, 4),
                                'other.weight': torch.ones(1)}), path)
    runner = DetRunner.from_cfg(
        Config(toy_cfg(tmp_path / 'work', load_from=str(path))))
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    runner.logger.addHandler(handler)
    try:
        runner.load_or_resume()  # warns, does not refuse
    finally:
        runner.logger.removeHandler(handler)
    assert torch.equal(runner.model.linear.weight, torch.ones(2, 4))
    assert ["While loading a state_dict into EngineToyModel: loaded 1 of "
            "the model's 2 weight tensors, 50.0%",
            'missing keys in the checkpoint (left as initialised): '
            'linear.bias',
            'unexpected keys in the checkpoint (ignored): other.weight'] in [
                m.splitlines() for m in messages]
