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
import argparse
import json
import os
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO_ROOT, 'configs', 'faster_rcnn',
                  'faster-rcnn_r50_fpn_1x_coco.py')
CLASSES = ('RBC', 'WBC', 'Platelets')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--data-root',
        default=osp.join(osp.dirname(REPO_ROOT), 'shared', 'data', 'bccd'),
        help='BCCD folder with train.json, val.json and images/')
    parser.add_argument('--work-dir',
                        default='work_dirs/bench_faster_rcnn_bccd')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--warmup', type=int, default=50,
                        help='iterations of linear warm-up')
    parser.add_argument('--scale', type=int, nargs=2, default=(320, 240),
                        metavar=('LONG', 'SHORT'),
                        help='Resize scale (keep_ratio)')
    parser.add_argument('--width', type=int, default=32,
                        help='FPN, RPN and RoI feature channels')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads; on a shared machine more '
                        'threads than free cores is several times slower')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--log-interval', type=int, default=10)
    parser.add_argument('--train-images', type=int, default=None,
                        help='use only the first N training images')
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
        'model.roi_head.bbox_head.num_classes': len(CLASSES),
    })
    for split in ('train', 'val'):
        ds = cfg[f'{split}_dataloader'].dataset
        ds.update(data_root=args.data_root, ann_file=f'{split}.json',
                  data_prefix=dict(img='images/'),
                  metainfo=dict(classes=CLASSES))
        for step in ds.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = tuple(args.scale)
        cfg[f'{split}_dataloader'].update(num_workers=0,
                                          persistent_workers=False)
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True,
                                                   min_size=0)
    if args.train_images:
        cfg.train_dataloader.dataset.indices = args.train_images
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(
        type='CocoMetric',
        ann_file=osp.join(args.data_root, 'val.json'),
        metric='bbox')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=args.epochs,
                         val_interval=args.epochs)
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
    cfg.default_hooks.logger.interval = args.log_interval
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=args.epochs, max_keep_ckpts=1)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    cfg.experiment_name = f'bench_faster_rcnn_bccd_{int(time.time())}'
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(osp.join(args.data_root, 'train.json')):
        sys.exit(f'{args.data_root}/train.json not found: pass --data-root '
                 '(the BCCD folder of ../shared/data)')
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from detkit.engine import DetRunner
    runner = DetRunner.from_cfg(bench_cfg(args))
    start = time.perf_counter()
    runner.train()  # ends with the validation of the last epoch
    total = time.perf_counter() - start
    scalars = runner.message_hub.log_scalars
    metrics = {
        key.split('/', 1)[1]: round(float(scalars[key].current()), 4)
        for key in scalars if key.startswith('val/coco/')
    }
    result = dict(
        model=f'Faster R-CNN R-18 FPN (scratch, width {args.width})',
        data='BCCD train (292 images) -> val (72 images)',
        scale=list(args.scale),
        epochs=args.epochs,
        batch_size=args.batch_size,
        iterations=runner.iter,
        lr=args.lr,
        torch_threads=torch.get_num_threads(),
        train_and_val_seconds=round(total, 1),
        **metrics)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
