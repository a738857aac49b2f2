"""Test (evaluate) a detector checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out out.pkl]
        [--report report.html] [--show] [--show-dir DIR] [--wait-time SECONDS]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
        [--fuse-conv-bn] [--no-channels-last] [--allow-partial-checkpoint]
        [--tta]

The model runs in channels-last memory format unless --no-channels-last
(or the config's ``channels_last=False``): the same metrics up to float
rounding, faster; NCHW is the layout whose arithmetic is mmdetection's bit
for bit (detkit.engine.speedups).

The config handling lives in detkit.engine.launch (and, for --tta,
detkit.models.test_time_augs.enable_tta); this file only parses.
"""
import argparse

from mmengine.hooks import Hook

from detkit.engine.dist import ending_process_group
from detkit.engine.launch import (add_common_args, add_dump_results,
                                  apply_test_args, build_runner, load_config)


class InferenceSpeedupHook(Hook):
    """Fold BatchNorm into convs (and keep channels-last) once the
    checkpoint is loaded, before testing (see
    ``detkit.apis.optimize_for_inference``)."""

    priority = 'VERY_HIGH'

    def __init__(self, fuse_conv_bn=False, channels_last=False):
        self.fuse_conv_bn = fuse_conv_bn
        self.channels_last = channels_last

    def before_test(self, runner):
        from mmengine.model import is_model_wrapper

        from detkit.apis.inference import optimize_for_inference
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        model.eval()
        optimize_for_inference(model, self.fuse_conv_bn, self.channels_last)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a '
                                     'detector checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (path or URL)')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the predictions of every image to this .pkl file')
    parser.add_argument(
        '--report',
        help='also write the HTML evaluation report to this .html file '
        '(detkit.engine.hooks.ReportHook)')
    parser.add_argument(
        '--show', action='store_true', help='show the predictions')
    parser.add_argument(
        '--show-dir',
        help='save images with drawn predictions to this directory (inside '
        'the run\'s log directory)')
    parser.add_argument(
        '--wait-time', type=float, default=2,
        help='seconds each image is shown with --show')
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation: the config\'s tta_model and '
        'tta_pipeline, or a horizontal-flip TTA of its test pipeline')
    parser.add_argument(
        '--fuse-conv-bn', action='store_true',
        help='fold BatchNorm into the preceding convs (faster; the same '
        'predictions up to float rounding)')
    parser.add_argument(
        '--allow-partial-checkpoint', action='store_true',
        help='test even when the checkpoint holds fewer than half of the '
        "model's weights (the rest keep random initial values); refused "
        'by default')
    parser.add_argument(
        '--channels-last', action=argparse.BooleanOptionalAction,
        default=None,
        help='channels-last memory format (faster convs on CPU/oneDNN and '
        'tensor-core GPUs; the default, or the config\'s channels_last). '
        '--no-channels-last: NCHW, mmdetection\'s arithmetic bit for bit')
    add_common_args(parser)
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out}: the dump file must end with .pkl '
                     'or .pickle')
    if args.report is not None and not args.report.endswith(('.html', '.htm')):
        parser.error(f'--report {args.report}: the report must end with .html')
    try:
        cfg = load_config(args.config, args)
        cfg = apply_test_args(cfg, args)
        if args.tta:
            from detkit.models.test_time_augs import enable_tta
            enable_tta(cfg)
    except FileNotFoundError as err:
        parser.error(str(err))
    if args.channels_last is not None:
        cfg.channels_last = args.channels_last
    runner = build_runner(cfg)
    if args.fuse_conv_bn:
        from detkit.engine import channels_last_enabled
        runner.register_hook(
            InferenceSpeedupHook(True, channels_last_enabled(cfg)))
    if args.out is not None:
        add_dump_results(runner, args.out)
    if args.report is not None:
        from detkit.engine.hooks import ReportHook
        runner.register_hook(ReportHook(out=args.report))
    with ending_process_group(runner):  # see detkit.engine.dist
        return runner.test()


if __name__ == '__main__':
    main()
