"""tools/model_converters: torchvision weights -> detkit backbones (same
features as torchvision's), and the mmdetection checkpoint checker."""
import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import DefaultScope
from toolbox_toys import REPO_ROOT, run_tool, tiny_setup  # noqa: F401

from conftest import read_compat
from detkit.engine import NeutralisedObjectsWarning, load_checkpoint_file
from detkit.registry import MODELS

CONVERT = run_tool('tools', 'model_converters', 'torchvision2detkit.py')
CHECK = run_tool('tools', 'model_converters', 'check_mmdet_checkpoint.py')


def _build(cfg):
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg)


def _convert(tmp_path, state_dict, *flags):
    src, dst = str(tmp_path / 'tv.pth'), str(tmp_path / 'detkit.pth')
    torch.save(state_dict, src)  # the layout of torchvision's downloads
    CONVERT['main']([src, dst, *flags])
    ckpt = torch.load(dst, weights_only=True)  # plain data only
    return dst, ckpt


def test_resnet_features_equal_torchvision(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    dst, ckpt = _convert(tmp_path, tv.state_dict())
    assert ckpt['meta']['arch'] == 'resnet'
    assert set(ckpt['state_dict']) == set(tv.state_dict()) - {
        'fc.weight', 'fc.bias'
    }
    # Used the way configs use it: a Pretrained init_cfg on the backbone.
    backbone = _build(dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type='Pretrained', checkpoint=dst)))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for layer, feat in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4),
                               feats):
            y = layer(y)
            torch.testing.assert_close(feat, y, rtol=0, atol=1e-5)


def test_mobilenet_v2_features_equal_torchvision(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2().eval()
    for module in tv.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    _, ckpt = _convert(tmp_path, tv.state_dict())
    assert ckpt['meta']['arch'] == 'mobilenet_v2'
    backbone = _build(dict(type='MobileNetV2', out_indices=(1, 7)))
    backbone.load_state_dict(ckpt['state_dict'], strict=True)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        layer2, conv2 = backbone(x)
        # layer2 ends after torchvision block 3; conv2 is features.18.
        torch.testing.assert_close(layer2, tv.features[:4](x), rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(conv2, tv.features(x), rtol=0, atol=1e-5)


VGG_CONVS = dict(zip(
    (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
     (256, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512),
     (512, 512))))


def _vgg16_state_dict(code):
    """torchvision's VGG-16 keys and shapes; values are index codes
    (``code='row'``: a matrix entry holds its row, ``'col'`` its column),
    built as expanded views so the 100M-entry fc6 takes no memory."""
    sd = {}
    for idx, (cin, cout) in VGG_CONVS.items():
        sd[f'features.{idx}.weight'] = torch.full((), float(idx)).expand(
            cout, cin, 3, 3)
        sd[f'features.{idx}.bias'] = torch.full((cout, ), float(idx))
    for idx, (rows, cols) in ((0, (4096, 25088)), (3, (4096, 4096)),
                              (6, (1000, 4096))):
        values = (torch.arange(rows, dtype=torch.float32)[:, None].expand(
            rows, cols) if code == 'row' else torch.arange(
                cols, dtype=torch.float32)[None].expand(rows, cols))
        sd[f'classifier.{idx}.weight'] = values
        sd[f'classifier.{idx}.bias'] = torch.arange(rows,
                                                    dtype=torch.float32)
    return sd


def test_vgg16_to_ssdvgg_decimates_fc6_fc7(tmp_path):
    _, ckpt = _convert(tmp_path, _vgg16_state_dict('row'))
    assert ckpt['meta']['arch'] == 'vgg16'
    converted = ckpt['state_dict']
    with torch.device('meta'):
        ssd_vgg = _build(dict(type='SSDVGG', depth=16))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in ssd_vgg.state_dict().items()}
    assert torch.equal(converted['features.28.weight'],
                       torch.full((512, 512, 3, 3), 28.))
    out = torch.arange(1024, dtype=torch.float32)
    # fc6: output o is fc6 row 4o; fc7: output o is row 4o, input i col 4i.
    assert torch.equal(converted['features.31.weight'],
                       (4 * out)[:, None, None, None].expand(1024, 512, 3, 3))
    assert torch.equal(converted['features.31.bias'], 4 * out)
    assert torch.equal(converted['features.33.weight'][:, 0, 0, 0], 4 * out)
    assert torch.equal(converted['features.33.bias'], 4 * out)

    by_col = CONVERT['convert_vgg16'](_vgg16_state_dict('col'))
    fc6 = by_col['features.31.weight']
    # fc6 column of (channel c, kernel row 3i, kernel column 3j) in the
    # 512 x 7 x 7 flattening: c * 49 + 21 i + 3 j.
    c = torch.arange(512)[:, None, None]
    i = torch.arange(3)[None, :, None]
    j = torch.arange(3)[None, None, :]
    expected = (c * 49 + 21 * i + 3 * j).float()
    assert torch.equal(fc6, expected[None].expand(1024, 512, 3, 3))
    assert torch.equal(by_col['features.33.weight'][0, :, 0, 0],
                       4 * torch.arange(1024, dtype=torch.float32))
    without_fc = CONVERT['convert_vgg16'](_vgg16_state_dict('row'),
                                          with_fc=False)
    assert 'features.31.weight' not in without_fc
    assert len(without_fc) == 26


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match='pass --arch'):
        CONVERT['convert']({'head.weight': torch.zeros(1)})


def _zoo_like(state_dict):
    """An mmdetection model-zoo style file: weights plus a message hub
    holding mmengine objects (which weights_only refuses)."""
    return dict(meta=dict(mmdet_version='3.3.0'), state_dict=state_dict,
                message_hub=dict(log_scalars={'train/loss':
                                              HistoryBuffer([1.0], [1])}))


def test_checker_matches_and_lists_differences(tiny_setup, tmp_path,  # noqa
                                               capsys):
    model = _build(Config(tiny_setup['cfg']).model)
    state = {f'module.{k}': v for k, v in model.state_dict().items()}
    good = tmp_path / 'good.pth'
    torch.save(_zoo_like(state), good)
    with pytest.warns(NeutralisedObjectsWarning, match='HistoryBuffer'):
        report = CHECK['main']([tiny_setup['cfg_file'], str(good)])
    assert not report
    assert f'OK: all {len(state)} keys' in capsys.readouterr().out

    state.pop('module.bbox_head.retina_reg.bias')
    state['module.bbox_head.retina_reg.biass'] = torch.zeros(4)
    state['module.bbox_head.retina_cls.weight'] = torch.zeros(3, 16, 3, 3)
    bad = tmp_path / 'bad.pth'
    torch.save(state, bad)
    report = CHECK['main']([tiny_setup['cfg_file'], str(bad)])
    assert report.missing == ['bbox_head.retina_reg.bias']
    assert report.unexpected == ['bbox_head.retina_reg.biass']
    assert report.mismatched == [('bbox_head.retina_cls.weight',
                                  (3, 16, 3, 3), (5, 16, 3, 3))]
    printed = capsys.readouterr().out
    assert 'missing in checkpoint: bbox_head.retina_reg.bias' in printed
    assert ('shape mismatch: bbox_head.retina_cls.weight: checkpoint '
            '(3, 16, 3, 3), model (5, 16, 3, 3)') in printed


def test_checker_on_mmdetection_retinanet_keys(tmp_path):
    """A file with exactly the keys and shapes of mmdetection's RetinaNet
    R50-FPN checkpoint (../shared/compat) passes against detkit's config."""
    keys = read_compat('retinanet_r50_fpn')
    dtypes = dict(float32=torch.float32, int64=torch.int64)
    state = {k: torch.zeros((), dtype=dtypes[dtype]).expand(shape)
             for k, (shape, dtype) in keys.items()}
    path = tmp_path / 'retinanet_zoo.pth'
    torch.save(_zoo_like(state), path)
    config = f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py'
    with pytest.warns(NeutralisedObjectsWarning):
        report = CHECK['main']([config, str(path)])
    assert not report and len(keys) == 354
    with pytest.warns(NeutralisedObjectsWarning):
        ckpt = load_checkpoint_file(str(path))
    assert ckpt['state_dict'].keys() == keys.keys()
