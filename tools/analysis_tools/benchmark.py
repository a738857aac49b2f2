"""Images per second of inference, of the data loader, or of the dataset
pipeline alone.

    python tools/analysis_tools/benchmark.py CONFIG CHECKPOINT --task inference
    python tools/analysis_tools/benchmark.py CONFIG --checkpoint CHECKPOINT
    python tools/analysis_tools/benchmark.py CONFIG --task dataloader \
        --dataset-type train --num-workers 4
    python tools/analysis_tools/benchmark.py CONFIG --task dataset
    python -m torch.distributed.run --nproc_per_node 2 \
        tools/analysis_tools/benchmark.py CONFIG --task dataloader \
        --launcher pytorch

Each repeat times ``--max-iter`` iterations, of which the first
``--num-warmup`` are not counted; the reported speed is ``batch size /
median iteration time`` (the median resists the odd slow iteration), with
the mean-based figure beside it. ``inference`` times ``model.test_step``
(preprocessing, forward, post-processing) on the test data loader with
batch size 1 unless ``--batch-size``; CUDA is synchronised around every
iteration.

``--launcher pytorch|slurm|mpi`` starts the process group as the training
tools do (gloo without CUDA). As in mmdetection, inference is measured in
one process only (``--nproc_per_node 1``; several would share, and slow,
one device); the data tasks run in every process, each on its share of the
data (the data loader's sampler splits it; ``dataset`` takes every
world-size-th index), and rank 0 prints each rank's speed and their sum.
"""
import argparse
import json
import os
import statistics
import time

import torch
from mmengine.config import Config, DictAction


def _load_cfg(path, cfg_options=None):
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    from detkit.utils import to_detkit_scope
    to_detkit_scope(cfg, source=path)  # mmdetection configs run as they are
    return cfg


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_iterations(step, iterable, max_iter, num_warmup):
    """Seconds of each ``step(item)`` after the first ``num_warmup``, over
    at most ``max_iter`` items of ``iterable``."""
    times = []
    iterator = iter(iterable)
    for i in range(max_iter):
        _sync()
        start = time.perf_counter()
        try:
            step(next(iterator))
        except StopIteration:
            break
        _sync()
        if i >= num_warmup:
            times.append(time.perf_counter() - start)
    return times


def summarize(times, batch_size):
    if not times:
        raise RuntimeError('no timed iteration: raise --max-iter above '
                           '--num-warmup, or use a larger dataset')
    median = statistics.median(times)
    mean = statistics.fmean(times)
    return dict(iters=len(times), median_time=median, mean_time=mean,
                images_per_second=batch_size / median,
                images_per_second_mean=batch_size / mean, times=times)


def _dataloader_cfg(cfg, dataset_type, batch_size, num_workers):
    loader = dict(cfg[f'{dataset_type}_dataloader'])
    if batch_size is not None:
        loader['batch_size'] = batch_size
    if num_workers is not None:
        loader['num_workers'] = num_workers
    if loader.get('num_workers', 0) == 0:
        loader['persistent_workers'] = False
    return loader


def init_launcher(launcher, cfg):
    """Start the default process group for ``launcher`` (``'none'``:
    nothing), with the config's ``env_cfg.dist_cfg``, the way the training
    tools do: detkit's gloo path without CUDA, else mmengine's."""
    if launcher == 'none':
        return
    from mmengine.dist import init_dist

    from detkit.engine.dist import init_gloo_dist, use_gloo
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if use_gloo(launcher, env_cfg):
        init_gloo_dist(launcher, **dist_cfg)
    else:
        init_dist(launcher, **dist_cfg)


def benchmark(cfg, checkpoint=None, task='inference', dataset_type='test',
              max_iter=200, num_warmup=5, repeat_num=1, batch_size=None,
              num_workers=None, device=None, fuse_conv_bn=False,
              channels_last=False):
    """A list with one :func:`summarize` dict per repeat, of this process
    (with a process group, of its share of the data)."""
    from mmengine.dist import get_dist_info
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope(cfg.default_scope)
    rank, world_size = get_dist_info()
    if task == 'inference' and world_size > 1:
        raise RuntimeError(
            f'--task inference runs in one process, but {world_size} were '
            'started: several processes would share one device and measure '
            'each other. Start one (--nproc_per_node 1) or use --launcher '
            'none.')
    results = []
    if task == 'dataset':
        from detkit.registry import DATASETS
        dataset = DATASETS.build(cfg[f'{dataset_type}_dataloader']['dataset'])
        indices = range(rank, len(dataset), world_size)
        for _ in range(repeat_num):
            times = time_iterations(dataset.__getitem__, indices, max_iter,
                                    num_warmup)
            results.append(summarize(times, 1))
        return results
    if task == 'inference' and batch_size is None:
        batch_size = 1
    loader_cfg = _dataloader_cfg(cfg, dataset_type, batch_size, num_workers)
    dataloader = Runner.build_dataloader(loader_cfg)
    if task == 'dataloader':
        step = lambda batch: None  # noqa: E731  (only loading is timed)
    elif task == 'inference':
        from detkit.apis import init_detector
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        model = init_detector(cfg, checkpoint, device=device,
                              fuse_conv_bn=fuse_conv_bn,
                              channels_last=channels_last)

        @torch.inference_mode()
        def step(batch):
            model.test_step(batch)
    else:
        raise ValueError(f'--task must be inference, dataloader or dataset, '
                         f'got {task!r}')
    for _ in range(repeat_num):
        times = time_iterations(step, dataloader, max_iter, num_warmup)
        results.append(summarize(times, loader_cfg['batch_size']))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark images/s')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (inference;'
                        ' random weights when omitted)')
    parser.add_argument('--checkpoint', dest='checkpoint_flag',
                        metavar='CHECKPOINT',
                        help='the checkpoint, as mmdetection spells it')
    parser.add_argument('--task', default='inference',
                        choices=['inference', 'dataloader', 'dataset'])
    parser.add_argument('--dataset-type', default='test',
                        choices=['train', 'val', 'test'],
                        help='which data loader of the config')
    parser.add_argument('--max-iter', type=int, default=200,
                        help='iterations per repeat, warm-up included')
    parser.add_argument('--num-warmup', type=int, default=5)
    parser.add_argument('--repeat-num', type=int, default=1)
    parser.add_argument('--batch-size', type=int,
                        help='override the batch size (inference: 1)')
    parser.add_argument('--num-workers', type=int,
                        help='override the data loader workers')
    parser.add_argument('--device', help='inference device (default: cuda '
                        'if available)')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold BatchNorm into the preceding convs '
                        '(inference)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last memory format (inference)')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='how the processes were started (torchrun: '
                        'pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.checkpoint_flag is not None:
        if args.checkpoint not in (None, args.checkpoint_flag):
            parser.error(f'two checkpoints: {args.checkpoint!r} and '
                         f'--checkpoint {args.checkpoint_flag!r}; give one')
        args.checkpoint = args.checkpoint_flag
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = _load_cfg(args.config, args.cfg_options)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    init_launcher(args.launcher, cfg)
    from mmengine.dist import all_gather_object, get_dist_info
    results = benchmark(cfg, args.checkpoint, args.task, args.dataset_type,
                        args.max_iter, args.num_warmup, args.repeat_num,
                        args.batch_size, args.num_workers, args.device,
                        args.fuse_conv_bn, args.channels_last)
    rank, world_size = get_dist_info()
    per_rank = all_gather_object(results) if world_size > 1 else [results]
    if rank == 0:
        _report(args, per_rank)
    if world_size > 1:
        import torch.distributed as torch_dist
        torch_dist.barrier()
        torch_dist.destroy_process_group()
    return results


def _report(args, per_rank):
    """Print each repeat (per rank and their sum with several processes)
    and write ``--out``."""
    world_size = len(per_rank)
    totals = []
    for i in range(len(per_rank[0])):
        for rank, results in enumerate(per_rank):
            res = results[i]
            who = f' rank {rank}' if world_size > 1 else ''
            print(f'[{args.task}]{who} repeat {i + 1}/{len(results)}: '
                  f'{res["images_per_second"]:.2f} images/s (median of '
                  f'{res["iters"]} iterations, '
                  f'{res["median_time"] * 1e3:.2f} ms each; mean-based '
                  f'{res["images_per_second_mean"]:.2f} images/s)')
        totals.append(sum(r[i]['images_per_second'] for r in per_rank))
        if world_size > 1:
            print(f'[{args.task}] repeat {i + 1}: {totals[-1]:.2f} images/s '
                  f'over {world_size} processes')
    if args.out:
        out = dict(task=args.task, config=args.config,
                   results=per_rank[0])
        if world_size > 1:
            out.update(per_rank=per_rank, total_images_per_second=totals)
        with open(args.out, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()
