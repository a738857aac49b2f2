"""Check that an mmdetection checkpoint loads strictly into a detkit config.

    python tools/model_converters/check_mmdet_checkpoint.py \
        configs/retinanet/retinanet_r50_fpn_1x_coco.py \
        retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth

The checkpoint is read through detkit's safe loader (objects that are not
tensors or plain data, such as mmengine's ``HistoryBuffer`` in the zoo's
``message_hub``, are replaced by inert placeholders and never run) and its
keys and shapes are matched against the model built from CONFIG (on the
``meta`` device: fast, no memory) the way ``init_detector`` and
``load_from`` match them. Prints ``OK`` when every key of both sides
matches in name and shape, otherwise the keys missing from the checkpoint,
the unexpected ones and the shape mismatches; the exit status is 0 or 1
accordingly.
"""
import argparse
import sys
import warnings

import torch
from mmengine.config import Config, DictAction


def build_model(cfg):
    """The model of ``cfg`` without weights: on the ``meta`` device (no
    memory, no initialisation; names and shapes are all that is compared),
    or on the CPU for a component that cannot be built there."""
    from mmengine.registry import DefaultScope

    from detkit.registry import MODELS
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope',
                                                      'detkit')):
        try:
            with torch.device('meta'):
                return MODELS.build(cfg.model)
        except (NotImplementedError, RuntimeError):
            return MODELS.build(cfg.model)


def check(cfg, checkpoint):
    """``(model, report)``: the report (a ``LoadReport``) is falsy when
    the checkpoint matches the model exactly. The keys go through
    ``load_model_weights``, as for ``init_detector`` and ``load_from``
    (DDP's ``module.`` prefix stripped)."""
    from detkit.engine import load_checkpoint_file, load_model_weights
    model = build_model(cfg)
    ckpt = load_checkpoint_file(checkpoint)
    with warnings.catch_warnings():
        # Copying into meta tensors is a no-op torch warns about per key.
        warnings.simplefilter('ignore', UserWarning)
        report = load_model_weights(model, ckpt, strict=False,
                                    source=checkpoint)
    return model, report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Does an mmdetection checkpoint load strictly?')
    parser.add_argument('config', help='detkit config of the model')
    parser.add_argument('checkpoint', help='mmdetection checkpoint (.pth)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the ``LoadReport`` (falsy when everything matched)."""
    args = parse_args(argv)
    from detkit.utils import to_detkit_scope
    cfg = to_detkit_scope(Config.fromfile(args.config), source=args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model, report = check(cfg, args.checkpoint)
    num_keys = len(model.state_dict())
    if not report:
        print(f'OK: all {num_keys} keys of {args.checkpoint} match the '
              f'model of {args.config} (names and shapes); it loads with '
              'strict=True')
        return report
    print(f'MISMATCH between {args.checkpoint} and {args.config} '
          f'({num_keys} model keys):')
    for name in report.missing:
        print(f'  missing in checkpoint: {name}')
    for name in report.unexpected:
        print(f'  unexpected in checkpoint: {name}')
    for name, ckpt_shape, model_shape in report.mismatched:
        print(f'  shape mismatch: {name}: checkpoint {tuple(ckpt_shape)}, '
              f'model {tuple(model_shape)}')
    return report


if __name__ == '__main__':
    sys.exit(1 if main() else 0)
