"""Train a detector from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]]
        [--amp] [--auto-scale-lr] [--report report.html]
        [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

Several processes (CPU or GPU):
    python -m torch.distributed.run --nproc_per_node 2 tools/train.py CONFIG \
        --launcher pytorch

The config handling lives in detkit.engine.launch; this file only parses.
"""
import argparse
import sys

from detkit.engine.dist import ending_process_group
from detkit.engine.launch import (add_common_args, apply_train_args,
                                  build_runner, load_config)
from detkit.engine.work_dir_lock import WorkDirLockedError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CHECKPOINT; without a path, from the latest '
        'checkpoint in the work_dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='mixed-precision training (AmpOptimWrapper, dynamic loss scale)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size '
        '(config auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--report',
        help='write the HTML evaluation report of the last validation to '
        'this .html file (detkit.engine.hooks.ReportHook)')
    add_common_args(parser)
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        cfg = apply_train_args(load_config(args.config, args), args)
    except FileNotFoundError as err:
        parser.error(str(err))
    runner = build_runner(cfg)
    if args.report is not None:
        from detkit.engine.hooks import ReportHook
        runner.register_hook(ReportHook(out=args.report))
    # Every rank waits for the others before the process group ends (see
    # detkit.engine.dist.ending_process_group).
    with ending_process_group(runner):
        try:
            runner.train()
        except WorkDirLockedError as err:  # another run's: one line, exit 1
            sys.exit(f'tools/train.py: {err}')


if __name__ == '__main__':
    main()
