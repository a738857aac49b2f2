"""Print a config the way tools/train.py sees it: ``_base_`` files merged,
``--cfg-options`` applied.

    python tools/misc/print_config.py \
        configs/retinanet/retinanet_r50_fpn_1x_coco.py \
        --cfg-options model.bbox_head.num_classes=3 train_cfg.max_epochs=24
    python tools/misc/print_config.py CONFIG --save-path full_config.py
"""
import argparse

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--save-path', help='also write it to this .py file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'train_cfg.max_epochs=24')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the merged config's text."""
    args = parse_args(argv)
    from detkit.utils import to_detkit_scope
    # as the tools see it: an mmdetection config in detkit's scope
    cfg = to_detkit_scope(Config.fromfile(args.config), source=args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    text = cfg.pretty_text
    print(f'Config:\n{text}')
    if args.save_path:
        if not args.save_path.endswith('.py'):
            raise SystemExit(f'--save-path {args.save_path}: use a .py name')
        cfg.dump(args.save_path)
        print(f'saved to {args.save_path}')
    return text


if __name__ == '__main__':
    main()
