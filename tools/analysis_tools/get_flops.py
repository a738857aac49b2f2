"""FLOPs and parameters of a detector, per top-level module.

    python tools/analysis_tools/get_flops.py CONFIG --shape 800 1333
    python tools/analysis_tools/get_flops.py CONFIG --num-images 100

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
``(1, 3, H, W)`` input (padded up to the preprocessor's
``pad_size_divisor``) through the detector's ``tensor`` forward (backbone,
neck, heads; no preprocessing and no box decoding/NMS). With
``--num-images N`` (mmdetection's way) the inputs are instead the first N
images of the test data loader, one at a time, after the test pipeline and
the preprocessor, and the table gives the mean per image. Its convention: a
multiply-add counts 2 FLOPs, so a k x k convolution costs
``2 * Cin * Cout * k * k * Hout * Wout / groups`` and a linear layer
``2 * in * out``; biases, normalisation, activations and pooling count 0.
For two-stage detectors the RoI head's share depends on the number of
proposals the (random) input produces.
"""
import argparse
import math
from collections import OrderedDict

import torch
from mmengine.config import Config, DictAction


def _load_cfg(path, cfg_options=None):
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    from detkit.utils import to_detkit_scope
    to_detkit_scope(cfg, source=path)  # mmdetection configs run as they are
    return cfg


def dummy_batch(model, height, width):
    """A random ``(1, 3, H', W')`` input and its data sample, ``H', W'``
    padded up to the model's ``pad_size_divisor``."""
    from detkit.structures import DetDataSample
    divisor = getattr(model.data_preprocessor, 'pad_size_divisor', 1)
    padded = (math.ceil(height / divisor) * divisor,
              math.ceil(width / divisor) * divisor)
    sample = DetDataSample(metainfo=dict(
        img_shape=(height, width), ori_shape=(height, width),
        pad_shape=padded, batch_input_shape=padded, scale_factor=(1., 1.)))
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(1, 3, *padded, generator=gen)
    return inputs.to(next(model.parameters()).device), [sample]


def dataset_batches(cfg, model, num_images):
    """``(inputs (1, 3, H, W), data_samples)`` of the first ``num_images``
    images of the config's test data loader, through the model's
    preprocessor."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    loader = dict(cfg.test_dataloader)
    loader.update(batch_size=1, num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dataloader = Runner.build_dataloader(loader)
    for i, batch in enumerate(dataloader):
        if i == num_images:
            return
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
        yield data['inputs'], data['data_samples']


def mean_table(tables):
    """Per-module mean FLOPs of several :func:`count_flops` tables (the
    parameters are the same in each)."""
    out = OrderedDict()
    for name in tables[0]:
        flops = [t.get(name, dict(flops=0))['flops'] for t in tables]
        out[name] = dict(flops=int(round(sum(flops) / len(flops))),
                         params=tables[0][name]['params'])
    return out


def count_flops(model, inputs, data_samples):
    """``{'total': {...}, <child name>: {'flops': int, 'params': int}}``
    for the model's direct children, through its ``tensor`` forward."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False, depth=None) as fc:
        model(inputs, data_samples, mode='tensor')
    flops = {name: int(sum(ops.values()))
             for name, ops in fc.get_flop_counts().items()}
    root = type(model).__name__
    table = OrderedDict()
    for name, child in model.named_children():
        if name == 'data_preprocessor':
            continue
        table[name] = dict(flops=_subtree_flops(flops, f'{root}.{name}'),
                           params=sum(p.numel() for p in child.parameters()))
    total = int(fc.get_total_flops())
    other = total - sum(row['flops'] for row in table.values())
    if other:  # functional ops called outside any child module
        table['other'] = dict(flops=other, params=0)
    table['total'] = dict(flops=total,
                          params=sum(p.numel() for p in model.parameters()))
    return table


def _subtree_flops(flops, prefix):
    """FLOPs under the module ``prefix``. The counter's entries are
    cumulative per module, and a module whose ``forward`` is called directly
    (not through ``__call__``, as detectors call their heads) has no entry
    of its own: then sum its topmost descendants that have one."""
    if prefix in flops:
        return flops[prefix]
    below = [name for name in flops if name.startswith(prefix + '.')]
    top = [name for name in below
           if not any(name.startswith(other + '.') for other in below)]
    return sum(flops[name] for name in top)


def format_table(table, shape):
    """``shape``: the input shape, or a line saying what the inputs were."""
    shape = shape if isinstance(shape, str) else tuple(shape)
    lines = [f'input shape: {shape}',
             f'{"module":<20}{"GFLOPs":>12}{"params (M)":>14}']
    for name, row in table.items():
        lines.append(f'{name:<20}{row["flops"] / 1e9:>12.4f}'
                     f'{row["params"] / 1e6:>14.4f}')
    lines.append('FLOPs: torch.utils.flop_counter (a multiply-add = 2 FLOPs; '
                 'norms, activations, pooling, decoding and NMS not counted)')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Count FLOPs and params')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input height and width (one number: square; '
                        'default 800 1333)')
    parser.add_argument('--num-images', type=int,
                        help='average over the first N test images instead '
                        'of one random input of --shape')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'model.neck.num_outs=4')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.num_images is not None:
        if args.shape is not None:
            raise SystemExit('--shape and --num-images exclude each other: '
                             'one random input of a shape, or real images')
        if args.num_images < 1:
            raise SystemExit(f'--num-images must be positive, got '
                             f'{args.num_images}')
        return _flops_of_images(args)
    shape = args.shape or [800, 1333]
    if len(shape) not in (1, 2):
        raise SystemExit(f'--shape takes H W or one size, got {shape}')
    height, width = (shape * 2)[:2]
    from detkit.apis import init_detector
    model = init_detector(_load_cfg(args.config, args.cfg_options),
                          device=args.device)
    inputs, samples = dummy_batch(model, height, width)
    table = count_flops(model, inputs, samples)
    print(format_table(table, inputs.shape))
    return dict(input_shape=tuple(inputs.shape), modules=table)


def _flops_of_images(args):
    from detkit.apis import init_detector
    cfg = _load_cfg(args.config, args.cfg_options)
    model = init_detector(cfg, device=args.device)
    tables, shapes = [], []
    for inputs, samples in dataset_batches(cfg, model, args.num_images):
        tables.append(count_flops(model, inputs, samples))
        shapes.append(tuple(inputs.shape))
    if not tables:
        raise SystemExit(f'{args.config}: the test data loader yields no '
                         'image')
    table = mean_table(tables)
    sizes = sorted(set(s[2:] for s in shapes))
    print(format_table(table, f'mean over {len(tables)} test images, '
                       f'padded sizes {sizes}'))
    return dict(num_images=len(tables), input_shapes=shapes, modules=table)


if __name__ == '__main__':
    main()
