"""Turn torchvision ImageNet weights into detkit backbone checkpoints.

    python tools/model_converters/torchvision2detkit.py \
        ~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth \
        resnet50_detkit.pth
    python tools/model_converters/torchvision2detkit.py vgg16-397923af.pth \
        vgg16_ssd.pth --arch vgg16
    python tools/model_converters/torchvision2detkit.py \
        mobilenet_v2-b0353104.pth mobilenet_v2_detkit.pth

The architecture is recognised from the keys unless ``--arch`` names it:

- ``resnet`` (ResNet-18/34/50/101/152): detkit's ResNet uses torchvision's
  names already; only the classifier ``fc.*`` is dropped.
- ``vgg16`` -> ``SSDVGG(depth=16)``: ``features.{0..28}`` convs keep their
  indices; fc6/fc7 become the dilated ``features.31`` (1024x512x3x3) and
  ``features.33`` (1024x1024x1x1) by decimation, as SSD (Liu et al., 2016)
  made its "fc-reduced" VGG: fc6 = ``classifier.0`` seen as 4096x512x7x7,
  every 4th output and every 3rd kernel row/column (0, 3, 6); fc7 =
  ``classifier.3``, every 4th output and input. ``--no-fc`` leaves them
  out (initialised at random instead).
- ``mobilenet_v2`` -> detkit's MobileNetV2: ``features.0`` -> ``conv1``,
  ``features.1..17`` -> ``layer1..7`` blocks (``expand_conv``,
  ``depthwise_conv``, ``linear_conv``), ``features.18`` -> ``conv2``.

torchvision's weights expect RGB input normalised with mean (123.675,
116.28, 103.53) and std (58.395, 57.12, 57.375); use them in the
DetDataPreprocessor (``bgr_to_rgb=True``). The input is read through
detkit's safe loader; the output holds ``state_dict`` and ``meta`` and
is used as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` on the
backbone.
"""
import argparse
import collections
import os.path as osp

import torch

# Inverted-residual blocks per MobileNetV2 layer (layer1..layer7).
MOBILENET_V2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def convert_resnet(state_dict):
    return collections.OrderedDict(
        (k, v) for k, v in state_dict.items() if not k.startswith('fc.'))


def _fc6_decimated(weight, bias):
    """fc6 ``(4096, 512*7*7)`` -> conv ``(1024, 512, 3, 3)``. Indexes
    without reshaping the whole matrix first."""
    if weight.shape != (4096, 512 * 7 * 7):
        raise ValueError('vgg16: classifier.0.weight must be 4096 x 25088 '
                         f'(fc6 of VGG-16), got {tuple(weight.shape)}')
    taps = torch.arange(0, 7, 3)
    cols = (torch.arange(512)[:, None, None] * 49 + taps[None, :, None] * 7 +
            taps[None, None, :]).reshape(-1)
    conv = weight[::4][:, cols].reshape(1024, 512, 3, 3)
    return conv.clone(), bias[::4].clone()


def _fc7_decimated(weight, bias):
    if weight.shape != (4096, 4096):
        raise ValueError('vgg16: classifier.3.weight must be 4096 x 4096 '
                         f'(fc7 of VGG-16), got {tuple(weight.shape)}')
    conv = weight[::4, ::4].reshape(1024, 1024, 1, 1)
    return conv.clone(), bias[::4].clone()


def convert_vgg16(state_dict, with_fc=True):
    out = collections.OrderedDict(
        (k, v) for k, v in state_dict.items() if k.startswith('features.'))
    conv_ids = sorted({int(k.split('.')[1]) for k in out})
    if conv_ids != [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]:
        raise ValueError('vgg16: expected the 13 convs of torchvision\'s '
                         'VGG-16 (features.0 ... features.28), got '
                         f'features.{conv_ids}; is this VGG-16 without BN?')
    if with_fc:
        out['features.31.weight'], out['features.31.bias'] = _fc6_decimated(
            state_dict['classifier.0.weight'],
            state_dict['classifier.0.bias'])
        out['features.33.weight'], out['features.33.bias'] = _fc7_decimated(
            state_dict['classifier.3.weight'],
            state_dict['classifier.3.bias'])
    return out


def _mobilenet_block_names():
    """torchvision block index (1..17) -> ``layer{i}.{j}``."""
    names, block = {}, 1
    for layer, count in enumerate(MOBILENET_V2_BLOCKS, 1):
        for j in range(count):
            names[block] = f'layer{layer}.{j}'
            block += 1
    return names


def convert_mobilenet_v2(state_dict):
    blocks = _mobilenet_block_names()
    out = collections.OrderedDict()
    for key, value in state_dict.items():
        parts = key.split('.')
        if parts[0] == 'classifier':
            continue
        if parts[0] != 'features':
            raise KeyError(f'mobilenet_v2: unexpected key {key}')
        index, rest = int(parts[1]), parts[2:]
        if index == 0 or index == 18:
            # Conv2dNormActivation: .0 conv, .1 bn
            module = 'conv1' if index == 0 else 'conv2'
            new = [module, ('conv', 'bn')[int(rest[0])]] + rest[1:]
        elif index in blocks:
            # expand ratio 1 (block 1): conv.0 = dw (conv, bn), conv.1 = pw
            # conv, conv.2 = its bn; otherwise conv.0 = expand (conv, bn),
            # conv.1 = dw (conv, bn), conv.2 = pw conv, conv.3 = its bn.
            names = (['depthwise_conv', 'linear_conv', 'linear_conv'] if
                     index == 1 else
                     ['expand_conv', 'depthwise_conv', 'linear_conv',
                      'linear_conv'])
            sub = int(rest[1])
            if sub < len(names) - 2:  # a Conv2dNormActivation
                new = [blocks[index], names[sub],
                       ('conv', 'bn')[int(rest[2])]] + rest[3:]
            else:
                kind = 'conv' if sub == len(names) - 2 else 'bn'
                new = [blocks[index], names[sub], kind] + rest[2:]
        else:
            raise KeyError(f'mobilenet_v2: unexpected key {key}')
        out['.'.join(new)] = value
    return out


def detect_arch(state_dict):
    keys = set(state_dict)
    if 'conv1.weight' in keys and 'layer1.0.conv1.weight' in keys:
        return 'resnet'
    if 'features.1.conv.0.0.weight' in keys:
        return 'mobilenet_v2'
    if 'features.28.weight' in keys and 'classifier.0.weight' in keys:
        return 'vgg16'
    raise ValueError('cannot tell the architecture from the keys (first: '
                     f'{sorted(keys)[:5]}); pass --arch')


def convert(state_dict, arch=None, with_fc=True):
    arch = arch or detect_arch(state_dict)
    if arch == 'resnet':
        return arch, convert_resnet(state_dict)
    if arch == 'vgg16':
        return arch, convert_vgg16(state_dict, with_fc)
    if arch == 'mobilenet_v2':
        return arch, convert_mobilenet_v2(state_dict)
    raise ValueError(f'--arch must be resnet, vgg16 or mobilenet_v2, got '
                     f'{arch!r}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='torchvision ImageNet weights -> detkit backbone')
    parser.add_argument('src', help='torchvision checkpoint (.pth)')
    parser.add_argument('dst', help='detkit checkpoint to write')
    parser.add_argument('--arch', choices=['resnet', 'vgg16', 'mobilenet_v2'],
                        help='default: recognised from the keys')
    parser.add_argument('--no-fc', action='store_true',
                        help='vgg16: leave out the decimated fc6/fc7')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the converted state_dict."""
    args = parse_args(argv)
    from detkit.engine import load_checkpoint_file, save_checkpoint_file
    checkpoint = load_checkpoint_file(args.src)
    state_dict = checkpoint.get('state_dict', checkpoint)
    arch, converted = convert(state_dict, args.arch, not args.no_fc)
    save_checkpoint_file(
        dict(state_dict=converted,
             meta=dict(converted_from=osp.basename(args.src), arch=arch,
                       converter='tools/model_converters/torchvision2detkit'
                       '.py')), args.dst)
    print(f'{arch}: wrote {len(converted)} tensors to {args.dst}')
    return converted


if __name__ == '__main__':
    main()
