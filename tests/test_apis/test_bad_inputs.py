"""Bad input to the inference APIs, tools/test.py and the demos gets a
clear message (file, key or value named, and what to do), never a silent
wrong model or a traceback from inside detkit."""
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MMLogger

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO_ROOT, 'tests', 'test_tools'))
from toolbox_toys import run_tool, tiny_setup  # noqa: E402,F401

from detkit.apis import DetInferencer, check_device, init_detector  # noqa
from detkit.apis.det_inferencer import check_score_thr  # noqa: E402
from detkit.engine.checkpoint import PartialCheckpointError  # noqa: E402
from detkit.engine.launch import ConfigOverrideError  # noqa: E402


class Payload:
    """Unpickles as ``os.system('touch MARKER')``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture
def log_messages():
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _weights(setup):
    return torch.load(setup['ckpt'], weights_only=True)['state_dict']


def test_meta_that_is_not_plain_data_is_ignored(tiny_setup, tmp_path,  # noqa
                                                log_messages):
    marker = tmp_path / 'ran'
    path = str(tmp_path / 'meta_payload.pth')
    torch.save(dict(meta=Payload(marker), state_dict=_weights(tiny_setup)),
               path)
    model = init_detector(tiny_setup['cfg_file'], path)
    assert not marker.exists()
    assert (f'meta of {path} is not plain data (a placeholder for '
            'posix.system); ignored. Class names and the config come from '
            'the config file.') in log_messages
    assert model.dataset_meta['classes'][0] == 'circle'  # from the config
    ref = _weights(tiny_setup)
    assert torch.equal(model.bbox_head.retina_cls.bias,
                       ref['bbox_head.retina_cls.bias'])
    # DetInferencer reading its config from such a file says there is none.
    with pytest.raises(ValueError, match='holds no config'):
        DetInferencer(None, path, device='cpu', show_progress=False)


@pytest.mark.parametrize('kind', ['empty', 'other_detector'])
def test_checkpoint_that_does_not_fit_is_refused(tiny_setup, tmp_path,  # noqa
                                                 kind):
    path = str(tmp_path / f'{kind}.pth')
    state = {} if kind == 'empty' else {
        'roi_head.bbox_head.fc_cls.weight': torch.zeros(4, 8),
        'rpn_head.rpn_conv.weight': torch.zeros(8, 8, 3, 3),
        'rpn_head.rpn_cls.weight': torch.zeros(3, 8, 1, 1),
        'rpn_head.rpn_reg.weight': torch.zeros(12, 8, 1, 1)}
    torch.save(dict(state_dict=state), path)
    total = len(init_detector(tiny_setup['cfg_file']).state_dict())
    for build in (lambda **kw: init_detector(tiny_setup['cfg_file'], path,
                                             **kw),
                  lambda **kw: DetInferencer(tiny_setup['cfg_file'], path,
                                             device='cpu', **kw)):
        with pytest.raises(PartialCheckpointError) as err:
            build()
        message = str(err.value)
        assert message.startswith(
            f'{path}: only 0 of the {total} weight tensors of RetinaNet are '
            'in this checkpoint (0.0%, fewer than half)')
        assert ('Model keys not in the checkpoint: backbone.conv1.weight, '
                'backbone.bn1.weight, backbone.bn1.bias '
                f'(+{total - 3} more)') in message
        other = ('none' if kind == 'empty' else
                 'roi_head.bbox_head.fc_cls.weight, rpn_head.rpn_conv.weight,'
                 ' rpn_head.rpn_cls.weight (+1 more)')
        assert f'checkpoint keys the model does not have: {other}.' in message
        assert 'allow_partial=True' in message
        # The explicit option uses it anyway (random weights, a warning).
        assert build(allow_partial=True) is not None


def test_checkpoint_that_is_not_a_dict_is_refused(tiny_setup,  # noqa: F811
                                                  tmp_path):
    path = str(tmp_path / 'list.pth')
    torch.save([torch.zeros(3)], path)
    with pytest.raises(RuntimeError) as err:
        init_detector(tiny_setup['cfg_file'], path)
    assert str(err.value) == (
        f'{path} holds a list, not a checkpoint dict or a state_dict, so it '
        'has no weights to load. Pass a checkpoint written by tools/train.py'
        ' (or an mmdetection .pth).')


def test_tools_test_refuses_unless_allowed(tiny_setup, tmp_path):  # noqa
    path = str(tmp_path / 'empty.pth')
    torch.save(dict(state_dict={}), path)
    test = run_tool('tools', 'test.py')
    argv = [tiny_setup['cfg_file'], path, '--work-dir', str(tmp_path / 'w')]
    with pytest.raises(PartialCheckpointError, match=r'^' + path.replace(
            '.', r'\.') + ': only 0 of the'):
        test['main'](argv)
    metrics = test['main'](argv + ['--allow-partial-checkpoint'])
    assert set(metrics) >= {'coco/bbox_mAP', 'coco/bbox_mAP_50'}
    # A good checkpoint passes the guard.
    assert test['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                         '--work-dir', str(tmp_path / 'w2')])


def test_device_without_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(RuntimeError) as err:
        check_device('cuda')
    assert str(err.value).startswith("device 'cuda': no CUDA GPU is "
                                     'available (')
    assert str(err.value).endswith("use device='cpu' (--device cpu).")
    assert '\n' not in str(err.value)
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch "
                       "device name; use 'cpu', 'cuda' or 'cuda:N'"):
        check_device('gpu0')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert check_device('cuda:1') == 'cuda:1'
    with pytest.raises(RuntimeError, match=r"device 'cuda:2': only 2 CUDA "
                       r'GPU\(s\) are visible \(cuda:0 to cuda:1\)'):
        check_device('cuda:2')


@pytest.mark.parametrize('thr', [1.5, -0.1, 'high', True])
def test_score_threshold_outside_0_1_is_refused(thr):
    with pytest.raises(ValueError) as err:
        check_score_thr(thr)
    assert str(err.value) == (
        f'pred_score_thr (--pred-score-thr) is {thr!r}, but scores are '
        'between 0 and 1: use a value in [0, 1], e.g. 0.3 (0 keeps every '
        'detection).')
    assert check_score_thr(0) == 0.0 and check_score_thr(1) == 1.0


def _demo(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1',
               PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, 'demo/image_demo.py', *args],
                          cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_image_demo_bad_arguments_give_one_line(tiny_setup, tmp_path):  # noqa
    img, cfg = tiny_setup['img_dir'], tiny_setup['cfg_file']
    out = ['--out-dir', str(tmp_path / 'out')]
    result = _demo(img, cfg, '--pred-score-thr', '1.5', *out)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        'image_demo.py: error: argument --pred-score-thr: pred_score_thr '
        '(--pred-score-thr) is 1.5, but scores are between 0 and 1: use a '
        'value in [0, 1], e.g. 0.3 (0 keeps every detection).')
    result = _demo(img, cfg, '--device', 'cuda', *out)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().startswith(
        "image_demo.py: device 'cuda': no CUDA GPU is available (")
    assert len(result.stderr.strip().splitlines()) == 1
    empty = tmp_path / 'empty.pth'
    torch.save(dict(state_dict={}), empty)
    result = _demo(img, cfg, '--weights', str(empty), *out)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'image_demo.py: {empty}: only 0 of the')


def test_cfg_options_misspelled_top_level_key(tiny_setup, tmp_path):  # noqa
    cfg = tiny_setup['cfg_file']
    with pytest.raises(ConfigOverrideError) as err:
        init_detector(cfg, cfg_options={'modle.bbox_head.num_classes': 5})
    assert str(err.value) == (
        f"cfg_options modle.bbox_head.num_classes=5: {cfg} has no top-level "
        "key 'modle', and neither mmengine nor detkit reads one of that "
        "name, so the override would be "
        "ignored. Did you mean 'model'? To add a new top-level key on "
        'purpose, write it into the config file (or into a config that '
        'inherits it through _base_).')
    train = run_tool('tools', 'train.py')
    work_dir = tmp_path / 'work'
    with pytest.raises(ConfigOverrideError, match=(
            rf"--cfg-options trian_cfg.max_epochs=3: {cfg} has no top-level "
            r"key 'trian_cfg'.* Did you mean 'train_cfg'")):
        train['main']([cfg, '--work-dir', str(work_dir), '--cfg-options',
                       'trian_cfg.max_epochs=3'])
    assert not work_dir.exists()  # stopped before anything was written


def test_cfg_options_known_top_level_keys_are_accepted(tiny_setup):  # noqa
    cfg = tiny_setup['cfg_file']
    # Not in the file, but mmengine's runner reads them.
    model = init_detector(cfg, cfg_options={
        'randomness': dict(seed=3), 'auto_scale_lr': dict(enable=False),
        'find_unused_parameters': True, 'model.test_cfg.max_per_img': 7})
    assert model.cfg.randomness.seed == 3
    assert model.test_cfg['max_per_img'] == 7


def test_cfg_options_plain_value_for_a_dict(tiny_setup):  # noqa
    cfg = tiny_setup['cfg_file']
    with pytest.raises(ConfigOverrideError) as err:
        init_detector(cfg, cfg_options={'model.bbox_head': 3})
    assert str(err.value).startswith(
        f'cfg_options model.bbox_head=3: model.bbox_head is a dict in {cfg} '
        "(type='RetinaHead'), and a dict is "
        'expected there, not int 3. Set a key inside it instead: '
        'model.bbox_head.KEY=3, KEY one of ')
    # None (switching a component off) and dicts stay allowed.
    model = init_detector(cfg, cfg_options={'model.init_cfg': None})
    assert model.cfg.model.init_cfg is None


def test_inferencer_call_checks_the_threshold(tiny_setup):  # noqa: F811
    inferencer = DetInferencer(tiny_setup['cfg_file'], tiny_setup['ckpt'],
                               device='cpu', show_progress=False)
    image = osp.join(tiny_setup['img_dir'], 'val_000000.png')
    with pytest.raises(ValueError, match=r'pred_score_thr \(--pred-score-'
                       r'thr\) is 30, but scores are between 0 and 1'):
        inferencer(image, pred_score_thr=30)
    assert len(inferencer(image, pred_score_thr=0)['predictions']) == 1
