"""Memory over a long training run: does resident memory keep growing?

    python benchmarks/memory_long_run.py [--iters 2000] [--every 50]
        [--warmup-iters 200] [--threads N] [--work-dir DIR] [--out F]

Trains the quick-start model (configs/quickstart/retinanet_r18_fpn_shapes.py:
batch 4, one persistent dataloader worker, AdamW) through DetRunner on
freshly generated shapes data (the quick start's settings of
tools/misc/make_shapes_dataset.py: 128 px, up to 4 upright shapes, png),
``--iters-per-epoch`` x 4 training images, for ``--iters`` iterations
(whole epochs, rounded up). Two changes to the quick start: no validation,
and a checkpoint after every epoch (two kept), so that saving is part of
what is watched. Every ``--every`` iterations it samples

* ``peak``: the main process's resident high-water mark (``ru_maxrss``);
* ``rss``: its current resident size (``VmRSS``);
* ``workers``: the current resident size of its dataloader worker(s);

and at the end reports how much each grew from iteration ``--warmup-iters``
(allocator pools, the dataset cache and the first checkpoint are in place
by then) to the last sample. The target is a peak growth under 5%.

Not a speed benchmark: there is no reference to run beside it.
"""
import argparse
import math
import os
import os.path as osp
import resource
import tempfile

from common import REPO_ROOT, print_header, save_json, set_threads

CONFIG = osp.join(REPO_ROOT, 'configs', 'quickstart',
                  'retinanet_r18_fpn_shapes.py')
BATCH = 4  # the quick-start config's


def rss_kib(pid='self'):
    """Current resident size of a process in KiB (0 if it is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids():
    """Live children of this process (the dataloader workers)."""
    me = str(os.getpid())
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # field 4: the parent's pid
            pids.append(int(name))
    return pids


def make_sampler_hook(every, samples):
    from mmengine.hooks import Hook

    class MemorySampleHook(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            done = runner.iter + 1
            if done % every:
                return
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            sample = dict(iter=done, peak_mib=peak / 1024,
                          rss_mib=rss_kib() / 1024,
                          workers_mib=sum(map(rss_kib, child_pids())) / 1024)
            samples.append(sample)
            print(f"iter {done:5d}: peak {sample['peak_mib']:8.1f} MiB  "
                  f"rss {sample['rss_mib']:8.1f} MiB  workers "
                  f"{sample['workers_mib']:7.1f} MiB", flush=True)

    return MemorySampleHook()


def build_cfg(args, data_root, work_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    num_train = args.iters_per_epoch * BATCH
    epochs = math.ceil(args.iters / args.iters_per_epoch)
    root = data_root.rstrip('/') + '/'
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs)
    cfg.param_scheduler[1]['T_max'] = epochs
    cfg.param_scheduler[1]['end'] = epochs
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1,
                                        max_keep_ckpts=2)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg, num_train, epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--iters-per-epoch', type=int, default=125,
                        help='training images / batch 4 (default 125: 500 '
                        'images, 16 epochs for 2000 iterations)')
    parser.add_argument('--every', type=int, default=50,
                        help='sample every N iterations')
    parser.add_argument('--warmup-iters', type=int, default=200)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--out', default=None, help='results as JSON')
    args = parser.parse_args()
    info = print_header('memory over a long training run', args)
    info['threads'] = set_threads(args.threads)

    from detkit.datasets.synthetic_shapes import generate_shapes_dataset
    from detkit.engine import DetRunner
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='detkit_memory_')
    data_root = osp.join(work_dir, 'shapes')
    cfg, num_train, epochs = build_cfg(args, data_root, work_dir)
    # The quick start's data (tools/quickstart.sh), fewer training images.
    generate_shapes_dataset(
        data_root, num_train=num_train, num_val=8, img_size=128,
        max_objects=4, min_obj_size=16, max_rotation=0, img_format='png')
    print(f'{num_train} training images, {epochs} epochs of '
          f'{args.iters_per_epoch} iterations; work_dir {work_dir}')

    samples = []
    runner = DetRunner.from_cfg(cfg)
    runner.register_hook(make_sampler_hook(args.every, samples))
    runner.train()

    base = next(s for s in samples if s['iter'] >= args.warmup_iters)
    last = samples[-1]
    growth = {
        key: (last[key] - base[key]) / base[key] * 100
        for key in ('peak_mib', 'rss_mib', 'workers_mib') if base[key]
    }
    print(f"\nfrom iteration {base['iter']} to {last['iter']}:")
    for key, pct in growth.items():
        print(f'  {key[:-4]:8s} {base[key]:8.1f} -> {last[key]:8.1f} MiB '
              f'({pct:+.2f}%)')
    verdict = 'met' if growth['peak_mib'] < 5 else 'NOT met'
    print(f"peak RSS growth after iteration {base['iter']}: "
          f"{growth['peak_mib']:+.2f}% (target < 5%: {verdict})")
    save_json(args.out, dict(machine=info, args=vars(args), samples=samples,
                             growth_pct=growth))


if __name__ == '__main__':
    main()
