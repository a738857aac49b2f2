"""Where the wall time of a whole training run goes: a 12-epoch RetinaNet-R18
run on BCCD with the data loader's workers (the config's 2, persistent) and
the same run with ``num_workers=0``, one after the other.

    python benchmarks/train_run_bccd.py [--workers 2,0] [--epochs 12]
        [--scale 320 240] [--width 64] [--threads 2] [--batch-size 2]
        [--data-root ../shared/data/bccd] [--out F]

The model is configs/retinanet/retinanet_r18_fpn_1x_coco.py (mmdetection's
RetinaNet-R18) trained from scratch (no pretrained weights are fetched: BN
in training mode, no frozen stage) with ``--width`` FPN and head channels
(default 64: the config's 256 would make each run take hours on 2 cores)
and BCCD's 3 classes, on its 292 training images resized to fit
``--scale`` (default 320x240, half of BCCD's 640x480: each run then takes
about 10-15 minutes on 2 cores) with random horizontal flips; the pipeline
is otherwise the config's. AdamW (weight decay 0.05) at ``--lr`` with
linear warm-up, cosine decay, gradient clipping at norm 10, as the other
BCCD scripts; COCO mAP on the 72 validation images after the last epoch.

Each run is a fresh process (``--single``) that trains through DetRunner
with :class:`TrainTiming` of tools/analysis_tools/benchmark.py installed:
``data`` is the time between two train steps (waiting for the batch, plus
the hooks' milliseconds), ``step`` the time inside ``train_step``,
``val`` the final validation, ``other`` the rest of the wall time
(checkpoint, epoch ends, start-up of the loop). The load average is
printed before each run; runs this long cannot alternate, so compare
them only when the load stayed below the core count.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

from common import (DEFAULT_BCCD, REPO_ROOT, load_average, print_header,
                    save_json, use_bccd)

CONFIG = osp.join(REPO_ROOT, 'configs', 'retinanet',
                  'retinanet_r18_fpn_1x_coco.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default=DEFAULT_BCCD)
    parser.add_argument('--work-dir', default='work_dirs/bench_train_run')
    parser.add_argument('--workers', default='2,0',
                        help='data loader workers of each run, in order')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--scale', type=int, nargs=2, default=(320, 240),
                        metavar=('LONG', 'SHORT'))
    parser.add_argument('--width', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--warmup', type=int, default=100)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--log-interval', type=int, default=50)
    parser.add_argument('--train-images', type=int, default=None)
    parser.add_argument('--single', type=int, default=None,
                        metavar='WORKERS', help='(internal) one run, in '
                        'this process, with this many workers')
    parser.add_argument('--out')
    return parser.parse_args(argv)


def run_cfg(args, num_workers):
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    width = args.width
    cfg.merge_from_dict({
        'model.backbone.init_cfg': None,
        'model.backbone.frozen_stages': -1,
        'model.backbone.norm_eval': False,
        'model.neck.out_channels': width,
        'model.bbox_head.in_channels': width,
        'model.bbox_head.feat_channels': width,
        'model.bbox_head.num_classes': 3,
    })
    use_bccd(cfg, dict(train=cfg.train_dataloader.dataset,
                       val=cfg.val_dataloader.dataset), args, args.scale)
    for split in ('train', 'val'):
        # use_bccd sets 0: back to the config's loader, or none at all.
        cfg[f'{split}_dataloader'].update(
            num_workers=num_workers, persistent_workers=num_workers > 0)
    cfg.test_dataloader = cfg.val_dataloader
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
    cfg.default_hooks.checkpoint.save_best = None
    cfg.work_dir = osp.join(args.work_dir, f'workers{num_workers}')
    cfg.experiment_name = f'train_run_w{num_workers}_{int(time.time())}'
    return cfg


def _train_timing():
    path = osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('detkit_benchmark', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TrainTiming


def single_run(args, num_workers):
    """Train in this process; returns the summary dict."""
    if not osp.isfile(osp.join(args.data_root, 'train.json')):
        sys.exit(f'{args.data_root}/train.json not found: pass --data-root')
    import torch
    torch.set_num_threads(args.threads)
    from detkit.engine import DetRunner
    cfg = run_cfg(args, num_workers)
    runner = DetRunner.from_cfg(cfg)
    timing = _train_timing()().install(runner)
    load = load_average()
    runner.train()
    summary = timing.summary(args.batch_size)
    scalars = runner.message_hub.log_scalars
    metrics = {
        key.split('/', 1)[1]: round(float(scalars[key].current()), 4)
        for key in scalars if key.startswith('val/coco/bbox_mAP')
    }
    wall = summary['train_seconds']
    accounted = (summary['data_seconds'] + summary['step_seconds'] +
                 summary['val_seconds'])
    return dict(
        num_workers=num_workers, load_before=load,
        load_after=load_average(), iterations=runner.iter,
        torch_threads=torch.get_num_threads(),
        wall_seconds=round(wall, 1),
        data_seconds=round(summary['data_seconds'], 1),
        step_seconds=round(summary['step_seconds'], 1),
        val_seconds=round(summary['val_seconds'], 1),
        other_seconds=round(wall - accounted, 1),
        data_share_of_training=round(summary['data_share'], 4),
        train_images_per_second=round(summary['images_per_second'], 2),
        median_data_ms=round(summary['median_data_time'] * 1e3, 2),
        median_step_ms=round(summary['median_step_time'] * 1e3, 1),
        **metrics)


def child_args(args):
    """The flags of this run for the ``--single`` process."""
    out = ['--data-root', args.data_root, '--work-dir', args.work_dir,
           '--scale', *map(str, args.scale)]
    for name in ('epochs', 'batch_size', 'width', 'lr', 'warmup',
                 'threads', 'seed', 'log_interval', 'train_images'):
        value = getattr(args, name)
        if value is not None:
            out += ['--' + name.replace('_', '-'), str(value)]
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.single is not None:
        print('RESULT ' + json.dumps(single_run(args, args.single)))
        return None
    info = print_header('BCCD RetinaNet-R18 training run', args)
    runs = []
    for workers in (int(w) for w in args.workers.split(',')):
        load = load_average()
        print(f'-- num_workers={workers}: load average (1 min) {load:.2f}',
              flush=True)
        cmd = [sys.executable, osp.abspath(__file__), '--single',
               str(workers)] + child_args(args)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              cwd=os.getcwd())
        lines = [l for l in proc.stdout.splitlines()
                 if l.startswith('RESULT ')]
        if proc.returncode or not lines:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f'the run with {workers} workers failed '
                             f'(exit {proc.returncode})')
        runs.append(json.loads(lines[-1][len('RESULT '):]))
        print(json.dumps(runs[-1]), flush=True)
    print(f'{"workers":>8} {"wall s":>8} {"data s":>8} {"step s":>8} '
          f'{"val s":>7} {"other s":>8} {"data %":>7} {"img/s":>7} '
          f'{"mAP":>6} {"load":>11}')
    for run in runs:
        print(f'{run["num_workers"]:>8} {run["wall_seconds"]:>8.1f} '
              f'{run["data_seconds"]:>8.1f} {run["step_seconds"]:>8.1f} '
              f'{run["val_seconds"]:>7.1f} {run["other_seconds"]:>8.1f} '
              f'{100 * run["data_share_of_training"]:>7.2f} '
              f'{run["train_images_per_second"]:>7.2f} '
              f'{run.get("bbox_mAP", float("nan")):>6.3f} '
              f'{run["load_before"]:>5.2f}-{run["load_after"]:<5.2f}')
    if len(runs) > 1:
        print('wall time ratio (first / others): ' + ', '.join(
            f'{runs[0]["wall_seconds"] / r["wall_seconds"]:.3f}'
            for r in runs[1:]))
    save_json(args.out, dict(machine=info, runs=runs))
    return runs


if __name__ == '__main__':
    main()
