"""Train FCOS (ResNet-18 FPN at reduced width, from scratch) on BCCD on the
CPU for a fixed schedule; report COCO mAP on BCCD's val split after every
epoch and the wall time.

    nice python benchmarks/train_fcos_bccd.py [--epochs 6] [--threads 2]
        [--data-root ../shared/data/bccd] [--work-dir DIR]

The model is configs/fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-
centeronreg-giou_1x_coco.py (the improved FCOS: centre sampling, distances
in stride units, centerness on the regression tower, GIoU) with a
ResNet-18 backbone of ``--base-channels`` (32: half width) trained from
scratch (no pretrained weights are fetched: pytorch style, BN in training
mode, no frozen stage, RGB mean/std input), an FPN and head of
``--width`` channels with ``--stacked-convs`` GN(8 groups) convs per tower,
and BCCD's 3 classes; the FCOS targets, losses and test settings are the
config's. Images are resized to fit ``--scale`` (default 320x240, half of
BCCD's 640x480) with random horizontal flips. The schedule is the
benchmark's own: batch ``--batch-size``, AdamW (weight decay 0.05) at
``--lr`` with ``--warmup`` iterations of linear warm-up, cosine decay over
``--epochs``, gradient clipping at norm 10. Not run by CI.

The last line is a JSON summary (also written to WORK_DIR/result.json),
with ``epoch_bbox_mAP``: the val mAP after each epoch.
"""
import json
import os.path as osp
import time

from common import REPO_ROOT, bccd_parser, run_bccd, use_bccd

CONFIG = osp.join(
    REPO_ROOT, 'configs', 'fcos',
    'fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py')
EPOCH_MAPS = 'epoch_maps.json'


def parse_args(argv=None, description=__doc__, work_dir='fcos'):
    parser = bccd_parser(description.split('\n')[0],
                         work_dir=f'work_dirs/bench_{work_dir}_bccd',
                         epochs=6, batch_size=4)
    parser.add_argument('--scale', type=int, nargs=2, default=(320, 240),
                        metavar=('LONG', 'SHORT'),
                        help='Resize scale (keep_ratio)')
    parser.add_argument('--base-channels', type=int, default=32,
                        help='ResNet-18 stem width (64 is the full width)')
    parser.add_argument('--width', type=int, default=32,
                        help='FPN and head channels')
    parser.add_argument('--stacked-convs', type=int, default=2,
                        help='convs per head tower')
    return parser.parse_args(argv)


def small_scratch_model(cfg, args):
    """The config's detector on a from-scratch ResNet-18 of
    ``args.base_channels``, with FPN / head of ``args.width`` channels."""
    base = args.base_channels
    cfg.merge_from_dict({
        'model.data_preprocessor.mean': [123.675, 116.28, 103.53],
        'model.data_preprocessor.std': [58.395, 57.12, 57.375],
        'model.data_preprocessor.bgr_to_rgb': True,
        'model.backbone.depth': 18,
        'model.backbone.base_channels': base,
        'model.backbone.style': 'pytorch',
        'model.backbone.norm_cfg': dict(type='BN', requires_grad=True),
        'model.backbone.norm_eval': False,
        'model.backbone.frozen_stages': -1,
        'model.backbone.init_cfg': None,
        'model.neck.in_channels': [base, 2 * base, 4 * base, 8 * base],
        'model.neck.out_channels': args.width,
        'model.bbox_head.in_channels': args.width,
        'model.bbox_head.feat_channels': args.width,
        'model.bbox_head.stacked_convs': args.stacked_convs,
        'model.bbox_head.norm_cfg': dict(type='GN', num_groups=8,
                                         requires_grad=True),
        'model.bbox_head.num_classes': 3,
    })


def bccd_schedule(cfg, args, name):
    """BCCD data, AdamW + cosine schedule, validation after every epoch
    recorded into WORK_DIR/epoch_maps.json."""
    use_bccd(cfg, dict(train=cfg.train_dataloader.dataset,
                       val=cfg.val_dataloader.dataset), args, args.scale)
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True,
                                                   min_size=0)
    if args.train_images:
        cfg.train_dataloader.dataset.indices = args.train_images
    cfg.train_cfg.val_interval = 1
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='EpochMAPRecorder', path=osp.join(args.work_dir,
                                                    EPOCH_MAPS))
    ]
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=args.lr, weight_decay=0.05),
        clip_grad=dict(max_norm=10, norm_type=2))
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
             end=args.warmup),
        dict(type='CosineAnnealingLR', T_max=args.epochs,
             eta_min=args.lr * 0.01, by_epoch=True, begin=0,
             end=args.epochs)
    ]
    cfg.experiment_name = f'bench_{name}_bccd_{int(time.time())}'


def register_recorder():
    from mmengine.hooks import Hook

    from detkit.registry import HOOKS

    @HOOKS.register_module(name='EpochMAPRecorder', force=True)
    class EpochMAPRecorder(Hook):
        """Appends each validation's COCO bbox mAP (and the seconds since
        training began) to a JSON list."""

        def __init__(self, path):
            self.path, self.values, self.start = path, [], time.perf_counter()

        def after_val_epoch(self, runner, metrics=None):
            self.values.append(dict(
                epoch=runner.epoch,
                bbox_mAP=round(float(metrics['coco/bbox_mAP']), 4),
                bbox_mAP_50=round(float(metrics['coco/bbox_mAP_50']), 4),
                seconds=round(time.perf_counter() - self.start, 1)))
            with open(self.path, 'w') as f:
                json.dump(self.values, f)


def run_with_epoch_maps(args, make_cfg, summary):
    """:func:`run_bccd` plus the per-epoch mAPs in the summary."""
    register_recorder()
    result = run_bccd(args, make_cfg, summary)
    with open(osp.join(args.work_dir, EPOCH_MAPS)) as f:
        epochs = json.load(f)
    result['epoch_bbox_mAP'] = [e['bbox_mAP'] for e in epochs]
    result['epoch_seconds'] = [e['seconds'] for e in epochs]
    with open(osp.join(args.work_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


def run(name, config, doc, argv=None):
    """Train the detector of ``config`` as the module docstring says."""
    from mmengine.config import Config
    args = parse_args(argv, doc, work_dir=name)

    def make_cfg(args):
        cfg = Config.fromfile(config)
        small_scratch_model(cfg, args)
        bccd_schedule(cfg, args, name)
        return cfg

    return run_with_epoch_maps(
        args, make_cfg,
        dict(model=f'{name.upper()} R-18 FPN (scratch, base '
             f'{args.base_channels}, width {args.width}, '
             f'{args.stacked_convs} convs)',
             data='BCCD train (292 images) -> val (72 images)',
             scale=list(args.scale),
             epochs=args.epochs,
             batch_size=args.batch_size,
             lr=args.lr))


def main(argv=None):
    return run('fcos', CONFIG, __doc__, argv)


if __name__ == '__main__':
    main()
