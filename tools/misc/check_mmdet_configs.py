"""Do mmdetection's config files build in detkit as they are?

    python tools/misc/check_mmdet_configs.py PATH_TO_MMDET_CONFIGS \
        [--folders retinanet ssd rpn faster_rcnn fcos atss] [--compat-dir DIR]

For each config under PATH (mmdetection's ``configs/`` folder, one method
folder, or one file) it builds the model (on the meta device: no memory,
no initialisation), every train / val / test / TTA pipeline transform, the
datasets and evaluators (on a dummy annotation file), the hooks, the
optimizer and LR schedule, and the TTA model where the config has one.
With ``--compat-dir`` the model's state_dict must also hold exactly the
keys, shapes and dtypes of ``DIR/<folder>/<config name>.txt`` (one
``key<TAB>shape<TAB>dtype`` line per tensor), as a checkpoint of that
config does. It prints one row per config (builds / FAILS with the stage
and the first line of the error; refused: a model detkit declines by
design, such as DCN, with the reason) and exits with 1 if any fails; with
``DETKIT_CONFIG_CHECK_TRACEBACK=1`` in the environment it also prints each
failure's traceback.

The checks live in ``detkit.utils.config_check`` (one config) and
``detkit.utils.config_tree`` (a tree); this file only parses.
"""
import argparse
import os.path as osp
import sys

from detkit.utils.config_tree import check_tree, format_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check that config files build in detkit unchanged')
    parser.add_argument('path', help='a config tree (such as mmdetection\'s '
                        'configs/), a folder of configs, or one config file')
    parser.add_argument(
        '--folders', nargs='+',
        help='method folders under PATH to check (default: retinanet ssd '
        'rpn faster_rcnn fcos atss where present, else every folder)')
    parser.add_argument(
        '--compat-dir',
        help='key lists: DIR/<folder>/<config>.txt, compared with each '
        "model's state_dict")
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the list of ``CheckResult``; exits 1 when one fails."""
    args = parse_args(argv)
    if not osp.exists(args.path):
        raise SystemExit(f'{args.path}: no such file or folder')
    if args.compat_dir is not None and not osp.isdir(args.compat_dir):
        raise SystemExit(f'--compat-dir {args.compat_dir}: no such folder')
    results = check_tree(args.path, args.folders, args.compat_dir)
    if not results:
        raise SystemExit(f'no config files under {args.path}'
                         + (f' in {args.folders}' if args.folders else ''))
    print(format_table(results))
    if any(not r.ok and not r.skipped for r in results):
        sys.exit(1)
    return results


if __name__ == '__main__':
    main()
