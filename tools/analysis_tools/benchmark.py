"""Images per second of inference, of training, of the data loader, or of
the dataset pipeline alone.

    python tools/analysis_tools/benchmark.py CONFIG CHECKPOINT --task inference
    python tools/analysis_tools/benchmark.py CONFIG --checkpoint CHECKPOINT
    python tools/analysis_tools/benchmark.py CONFIG CHECKPOINT \
        --backend onnxruntime
    python tools/analysis_tools/benchmark.py CONFIG --task train \
        --max-iter 60 --num-warmup 10 [--num-workers 2]
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
iteration. The model is built as ``init_detector`` builds it: channels-last
unless ``--no-channels-last``, BatchNorm folded with ``--fuse-conv-bn``.

``--backend onnxruntime`` (inference, CPU, batch 1) exports the model with
``tools/deployment/export_onnx.py``'s code (``--dynamic``, so every test
image keeps its size) and times onnxruntime's CPU session with as many
intra-op threads as torch uses, on the same test pipeline's images: each
iteration feeds the packed image and its scale factor and turns the outputs
into ``pred_instances``, as ``model.test_step`` returns them.

``train`` runs real training through :class:`~detkit.engine.DetRunner`
for ``--max-iter`` iterations (an ``IterBasedTrainLoop`` over the config's
training data loader: its pipeline, workers, sampler; the model and
optimizer of the config; no validation, no checkpoints; ``--work-dir``, a
temporary folder by default) and reports, after ``--num-warmup``
iterations, images/s of the whole run (wall time of the timed iterations),
the seconds per iteration spent waiting for the batch (``data``: the time
between two ``train_step`` calls, which is the loader plus the hooks'
milliseconds) and in ``train_step`` (``step``), and the data-wait share.

``--launcher pytorch|slurm|mpi`` starts the process group as the training
tools do (gloo without CUDA). As in mmdetection, inference is measured in
one process only (``--nproc_per_node 1``; several would share, and slow,
one device); the data tasks run in every process, each on its share of the
data (the data loader's sampler splits it; ``dataset`` takes every
world-size-th index), and rank 0 prints each rank's speed and their sum.
"""
import argparse
import copy
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


class TrainTiming:
    """Seconds per training iteration: ``step`` (inside the model's
    ``train_step``) and ``data`` (from the end of one ``train_step``, or
    the start of the epoch, to the start of the next: the data loader plus
    the hooks), and the wall time of the loop. Install with
    :meth:`install` before ``runner.train()``; the validation loop's time
    is kept apart (``val``)."""

    def __init__(self):
        self.step, self.data, self.val = [], [], []
        self._mark = None
        self.train_start = self.train_end = None

    def install(self, runner):
        from mmengine.hooks import Hook
        timing = self
        model = runner.model
        train_step = model.train_step

        def timed_train_step(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            if timing._mark is not None:
                timing.data.append(start - timing._mark)
            try:
                return train_step(*args, **kwargs)
            finally:
                _sync()
                timing._mark = time.perf_counter()
                timing.step.append(timing._mark - start)

        model.train_step = timed_train_step

        class _Marks(Hook):
            priority = 'VERY_LOW'

            def before_train(self, runner):
                timing.train_start = time.perf_counter()

            def before_train_epoch(self, runner):
                timing._mark = time.perf_counter()

            def before_val(self, runner):
                timing._val_start = time.perf_counter()

            def after_val(self, runner):
                timing.val.append(time.perf_counter() - timing._val_start)

            def after_train(self, runner):
                timing.train_end = time.perf_counter()

        runner.register_hook(_Marks())
        return self

    def summary(self, batch_size, num_warmup=0):
        """images/s, data and step seconds (sum, median) and the data-wait
        share over the iterations after the first ``num_warmup``."""
        step = self.step[num_warmup:]
        data = self.data[num_warmup:]  # data[i]: the wait before step i
        if not step:
            raise RuntimeError('no timed iteration: raise --max-iter above '
                               '--num-warmup')
        busy = sum(step) + sum(data)
        return dict(
            iters=len(step), batch_size=batch_size,
            total_iters=len(self.step),
            images_per_second=batch_size * len(step) / busy,
            data_seconds=sum(data), step_seconds=sum(step),
            data_share=sum(data) / busy,
            median_data_time=statistics.median(data) if data else 0.0,
            median_step_time=statistics.median(step),
            val_seconds=sum(self.val),
            train_seconds=(self.train_end - self.train_start
                           if self.train_end is not None else None),
            step_times=step, data_times=data)


def _train_cfg(cfg, max_iter, batch_size, num_workers, work_dir):
    """The config trimmed to ``max_iter`` training iterations on its own
    training data loader: no validation, checkpoints or drawing."""
    import tempfile
    cfg = copy.deepcopy(cfg)
    cfg.train_dataloader = _dataloader_cfg(cfg, 'train', batch_size,
                                           num_workers)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iter,
                         val_interval=max_iter + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    hooks = dict(cfg.get('default_hooks') or {})
    hooks.pop('visualization', None)
    hooks.update(checkpoint=None)
    cfg.default_hooks = hooks
    cfg.load_from, cfg.resume = None, False
    cfg.work_dir = work_dir or tempfile.mkdtemp(prefix='detkit_benchmark_')
    return cfg


def benchmark_train(cfg, max_iter=60, num_warmup=10, batch_size=None,
                    num_workers=None, work_dir=None):
    """Train ``max_iter`` iterations of ``cfg`` through DetRunner; returns
    :meth:`TrainTiming.summary` after ``num_warmup``."""
    from detkit.apis.inference import _drop_pretrained
    from detkit.engine import DetRunner
    cfg = _train_cfg(cfg, max_iter, batch_size, num_workers, work_dir)
    _drop_pretrained(cfg.model)  # never download weights to benchmark
    runner = DetRunner.from_cfg(cfg)
    timing = TrainTiming().install(runner)
    runner.train()
    return timing.summary(cfg.train_dataloader['batch_size'], num_warmup)


def _ort_detector(cfg, checkpoint, threads):
    """``(model, onnx_detector)``: the PyTorch model (CPU) and an
    onnxruntime session of its export with a ``test_step`` like the
    model's."""
    import importlib.util
    import tempfile
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), 'deployment', 'export_onnx.py')
    spec = importlib.util.spec_from_file_location('detkit_export_onnx', path)
    export_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_onnx)
    from detkit.apis import init_detector
    model = init_detector(cfg, checkpoint, device='cpu', channels_last=False)
    folder = tempfile.mkdtemp(prefix='detkit_onnx_')
    out = os.path.join(folder, 'model.onnx')
    shape = export_onnx.test_input_shape(cfg)
    export_onnx.export(model, out, shape, dynamic=True)
    return model, export_onnx.ORTDetector(out, threads=threads)


def benchmark(cfg, checkpoint=None, task='inference', dataset_type='test',
              max_iter=200, num_warmup=5, repeat_num=1, batch_size=None,
              num_workers=None, device=None, fuse_conv_bn=False,
              channels_last=True, backend='pytorch', work_dir=None):
    """A list with one :func:`summarize` dict per repeat, of this process
    (with a process group, of its share of the data); ``task='train'``:
    one :meth:`TrainTiming.summary` dict per repeat."""
    from mmengine.dist import get_dist_info
    from mmengine.registry import init_default_scope

    from detkit.engine import DetRunner
    init_default_scope(cfg.default_scope)
    rank, world_size = get_dist_info()
    if task == 'inference' and world_size > 1:
        raise RuntimeError(
            f'--task inference runs in one process, but {world_size} were '
            'started: several processes would share one device and measure '
            'each other. Start one (--nproc_per_node 1) or use --launcher '
            'none.')
    results = []
    if backend != 'pytorch' and task != 'inference':
        raise ValueError(f'--backend {backend} times inference only, not '
                         f'--task {task}')
    if task == 'train':
        if world_size > 1:
            raise RuntimeError('--task train runs in one process here; '
                               'time distributed training with '
                               'tools/train.py')
        for _ in range(repeat_num):
            results.append(benchmark_train(cfg, max_iter, num_warmup,
                                           batch_size, num_workers,
                                           work_dir))
        return results
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
    # DetRunner's: the loader the runner trains with (pin_memory only with
    # CUDA, OpenCV single-threaded in the workers).
    dataloader = DetRunner.build_dataloader(loader_cfg)
    if task == 'dataloader':
        step = lambda batch: None  # noqa: E731  (only loading is timed)
    elif task == 'inference' and backend == 'onnxruntime':
        if loader_cfg['batch_size'] != 1 or device not in (None, 'cpu'):
            raise ValueError('--backend onnxruntime runs batch 1 on the CPU '
                             '(the exported graph takes one image)')
        _, detector = _ort_detector(cfg, checkpoint, torch.get_num_threads())
        step = detector.test_step
    elif task == 'inference':
        from detkit.apis import init_detector
        if backend != 'pytorch':
            raise ValueError(f'--backend must be pytorch or onnxruntime, got '
                             f'{backend!r}')
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        model = init_detector(cfg, checkpoint, device=device,
                              fuse_conv_bn=fuse_conv_bn,
                              channels_last=channels_last)

        @torch.inference_mode()
        def step(batch):
            model.test_step(batch)
    else:
        raise ValueError(f'--task must be inference, train, dataloader or '
                         f'dataset, got {task!r}')
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
                        choices=['inference', 'train', 'dataloader',
                                 'dataset'])
    parser.add_argument('--backend', default='pytorch',
                        choices=['pytorch', 'onnxruntime'],
                        help='inference backend (onnxruntime: CPU, batch 1, '
                        'the export of tools/deployment/export_onnx.py)')
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
    parser.add_argument('--channels-last',
                        action=argparse.BooleanOptionalAction, default=True,
                        help='channels-last memory format (inference; the '
                        'default, as in init_detector)')
    parser.add_argument('--work-dir', help='--task train: the run\'s work '
                        'directory (default: a temporary one)')
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
                        args.fuse_conv_bn, args.channels_last, args.backend,
                        args.work_dir)
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
    if args.task == 'train':
        for i, res in enumerate(per_rank[0]):
            print(f'[train] repeat {i + 1}/{len(per_rank[0])}: '
                  f'{res["images_per_second"]:.2f} images/s over '
                  f'{res["iters"]} iterations of {res["batch_size"]} images '
                  f'(data wait {res["data_seconds"]:.2f} s = '
                  f'{100 * res["data_share"]:.1f}%, steps '
                  f'{res["step_seconds"]:.2f} s; median data '
                  f'{res["median_data_time"] * 1e3:.1f} ms, step '
                  f'{res["median_step_time"] * 1e3:.1f} ms per iteration)')
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(dict(task=args.task, config=args.config,
                               results=per_rank[0]), f, indent=1)
        return
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
