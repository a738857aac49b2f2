"""Train Faster R-CNN (ResNet-18 FPN, from scratch) on BCCD on the CPU for a
fixed schedule; report COCO mAP on BCCD's val split and the wall time.

    nice python benchmarks/train_faster_rcnn_bccd.py [--epochs 2]
        [--threads 1] [--data-root ../shared/data/bccd]
        [--work-dir work_dirs/bench_faster_rcnn_bccd]

The model is configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py with a
ResNet-18 backbone trained from scratch (no pretrained weights are fetched:
BN in training mode, no frozen stage), ``--width`` FPN / RPN / RoI channels,
shared fcs of ``4 * width`` and BCCD's 3 classes; RPN, RoI sampling, losses
and test settings are the config's. Images are resized to fit
``--scale`` (default 320x240, half of BCCD's 640x480) with random
horizontal flips. The schedule is the benchmark's own: batch
``--batch-size``, AdamW (weight decay 0.05) at ``--lr`` with ``--warmup``
iterations of linear warm-up, cosine decay over ``--epochs``, gradient
clipping at norm 10. Not run by CI.

The last line is a JSON summary (also written to WORK_DIR/result.json).
"""
import os.path as osp
import time

from common import REPO_ROOT, bccd_parser, run_bccd, use_bccd

CONFIG = osp.join(REPO_ROOT, 'configs', 'faster_rcnn',
                  'faster-rcnn_r50_fpn_1x_coco.py')


def parse_args(argv=None):
    parser = bccd_parser(__doc__.split('\n')[0],
                         work_dir='work_dirs/bench_faster_rcnn_bccd',
                         epochs=2, batch_size=2)
    parser.add_argument('--scale', type=int, nargs=2, default=(320, 240),
                        metavar=('LONG', 'SHORT'),
                        help='Resize scale (keep_ratio)')
    parser.add_argument('--width', type=int, default=32,
                        help='FPN, RPN and RoI feature channels')
    return parser.parse_args(argv)


def bench_cfg(args):
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    width = args.width
    cfg.merge_from_dict({
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.backbone.frozen_stages': -1,
        'model.backbone.norm_eval': False,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': width,
        'model.rpn_head.in_channels': width,
        'model.rpn_head.feat_channels': width,
        'model.roi_head.bbox_roi_extractor.out_channels': width,
        'model.roi_head.bbox_head.in_channels': width,
        'model.roi_head.bbox_head.fc_out_channels': 4 * width,
        'model.roi_head.bbox_head.num_classes': 3,
    })
    use_bccd(cfg, dict(train=cfg.train_dataloader.dataset,
                       val=cfg.val_dataloader.dataset), args, args.scale)
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True,
                                                   min_size=0)
    if args.train_images:
        cfg.train_dataloader.dataset.indices = args.train_images
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
    cfg.experiment_name = f'bench_faster_rcnn_bccd_{int(time.time())}'
    return cfg


def main(argv=None):
    args = parse_args(argv)
    return run_bccd(
        args, bench_cfg,
        dict(model=f'Faster R-CNN R-18 FPN (scratch, width {args.width})',
             data='BCCD train (292 images) -> val (72 images)',
             scale=list(args.scale),
             epochs=args.epochs,
             batch_size=args.batch_size,
             lr=args.lr))


if __name__ == '__main__':
    main()
