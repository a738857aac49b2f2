"""What every benchmark script shares.

* Side-by-side timing: :func:`compare` runs detkit and a reference in the
  same process, alternating (``A B A B ...``) after warm-up, so a change of
  machine load hits both alike, and reports median / min / max seconds and
  the ratio detkit / reference.
* Machine facts (:func:`machine_info`), the thread count
  (:func:`set_threads`), model FLOPs (:func:`count_flops`, with
  ``torch.utils.flop_counter``, counted once) and the machine's measured
  peak for a large 3x3 convolution (:func:`conv_peak`), so that a model's
  achieved GFLOP/s can be put against what the hardware reaches.
* The BCCD training benchmarks' shared command line, data settings and
  summary (:func:`bccd_parser`, :func:`use_bccd`, :func:`run_bccd`).

Not run by CI; run the scripts from the repository root.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')
DEFAULT_BCCD = osp.join(osp.dirname(REPO_ROOT), 'shared', 'data', 'bccd')


# ------------------------------------------------------------------ machine
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else ``platform``'s."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: Optional[int]) -> int:
    """Fix torch's intra-op threads (None or 0: one per core) and return
    the number in use."""
    import torch
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def machine_info() -> dict:
    import torch
    info = dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version())
    try:
        import torchvision
        info['torchvision'] = torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def load_average() -> Optional[float]:
    """1-minute load average (None where the OS has none): a figure taken
    with a load above the core count was shared with something else."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# ------------------------------------------------------------------- timing
def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarize(times: List[float]) -> dict:
    """``median``, ``min``, ``max`` seconds and the raw ``times``."""
    return dict(median=statistics.median(times), min=min(times),
                max=max(times), n=len(times), times=times)


def compare(fns: Dict[str, Callable[[], object]],
            warmup: int = 2,
            repeats: int = 10) -> Dict[str, dict]:
    """Time each callable ``repeats`` times, alternating between them.

    Args:
        fns: name -> callable without arguments. Insertion order is the
            order within each round.
        warmup: untimed rounds first (allocator, oneDNN primitive caches,
            lazy initialisation).
        repeats: timed rounds.

    Returns:
        name -> :func:`summarize` dict (seconds).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: summarize(t) for name, t in times.items()}


def report(results: Dict[str, dict], reference: Optional[str] = None,
           flops: Optional[Dict[str, float]] = None,
           peak_gflops: Optional[float] = None) -> List[dict]:
    """Print one line per entry of :func:`compare`'s results and return
    the rows (with ``ratio`` to ``reference`` and, given ``flops``,
    ``gflops`` achieved = FLOPs / median and ``of_peak``)."""
    rows = []
    ref_median = results[reference]['median'] if reference else None
    for name, res in results.items():
        row = dict(name=name, median_s=res['median'], min_s=res['min'],
                   max_s=res['max'], n=res['n'])
        line = (f'{name:<28} median {res["median"] * 1e3:9.1f} ms  '
                f'min {res["min"] * 1e3:9.1f}  max {res["max"] * 1e3:9.1f}')
        if ref_median:
            row['ratio'] = res['median'] / ref_median
            line += f'  x{row["ratio"]:.3f} of {reference}'
        if flops and flops.get(name):
            row['gflop'] = flops[name] / 1e9
            row['gflops'] = flops[name] / res['median'] / 1e9
            line += (f'  {row["gflop"]:.1f} GFLOP -> '
                     f'{row["gflops"]:.1f} GFLOP/s')
            if peak_gflops:
                row['of_peak'] = row['gflops'] / peak_gflops
                line += f' ({100 * row["of_peak"]:.0f}% of peak)'
        print(line)
        rows.append(row)
    return rows


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter``: 2 per
    multiply-add of convolutions and matrix products; elementwise ops are
    not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_peak(shape=(1, 256, 200, 336), out_channels: int = 256,
              warmup: int = 2, repeats: int = 5) -> dict:
    """The machine's GFLOP/s on one large 3x3 convolution (pad 1, fp32,
    inference mode), in NCHW and in channels-last memory format; ``peak``
    is the better of the two. Default shape: a ResNet C2-sized map of an
    800x1344 input with 256 channels."""
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    conv = torch.nn.Conv2d(shape[1], out_channels, 3, padding=1).eval()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    conv_cl = torch.nn.Conv2d(shape[1], out_channels, 3, padding=1).eval()
    conv_cl.load_state_dict(conv.state_dict())
    conv_cl = conv_cl.to(memory_format=torch.channels_last)
    flops = count_flops(lambda: conv(x))

    def run(module, inp):
        def call():
            with torch.inference_mode():
                module(inp)
        return call

    res = compare(dict(nchw=run(conv, x), channels_last=run(conv_cl, x_cl)),
                  warmup=warmup, repeats=repeats)
    out = dict(shape=list(shape), out_channels=out_channels,
               gflop=flops / 1e9)
    for name, r in res.items():
        out[f'{name}_gflops'] = flops / r['median'] / 1e9
        out[f'{name}_median_s'] = r['median']
    out['peak'] = max(out['nchw_gflops'], out['channels_last_gflops'])
    return out


def print_header(title: str, args=None) -> dict:
    info = machine_info()
    print(f'== {title}')
    print('machine: ' + ', '.join(f'{k}={v}' for k, v in info.items()))
    load = load_average()
    if load is not None:
        print(f'load average (1 min) before the run: {load:.2f}')
        info['load_before'] = load
    if args is not None:
        print('command: python ' + ' '.join(sys.argv))
    return info


def save_json(path: Optional[str], payload: dict) -> None:
    if not path:
        return
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(payload, f, indent=1)
    print(f'results written to {path}')


# ------------------------------------------------------- BCCD training runs
def bccd_parser(description: str, work_dir: str, epochs: int,
                batch_size: int) -> argparse.ArgumentParser:
    """The flags both BCCD training benchmarks take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--data-root', default=DEFAULT_BCCD,
                        help='BCCD folder with train.json, val.json and '
                        'images/')
    parser.add_argument('--work-dir', default=work_dir)
    parser.add_argument('--epochs', type=int, default=epochs)
    parser.add_argument('--batch-size', type=int, default=batch_size)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--warmup', type=int, default=50,
                        help='iterations of linear warm-up')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads; on a shared machine more '
                        'threads than free cores is several times slower')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--log-interval', type=int, default=10)
    parser.add_argument('--train-images', type=int, default=None,
                        help='use only the first N training images')
    return parser


def use_bccd(cfg, datasets: dict, args, resize_scale) -> None:
    """Point ``datasets`` (split name -> dataset config) at BCCD, set the
    pipelines' ``Resize`` scale, single-process loaders, the COCO
    evaluator on val.json, and the run's bookkeeping (epochs, logging, one
    checkpoint at the end, work dir, seed)."""
    for split, ds in datasets.items():
        ds.update(data_root=args.data_root, ann_file=f'{split}.json',
                  data_prefix=dict(img='images/'),
                  metainfo=dict(classes=BCCD_CLASSES))
        for step in ds.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = tuple(resize_scale)
        cfg[f'{split}_dataloader'].update(num_workers=0,
                                          persistent_workers=False)
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(
        type='CocoMetric',
        ann_file=osp.join(args.data_root, 'val.json'),
        metric='bbox')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=args.epochs,
                         val_interval=args.epochs)
    cfg.default_hooks.logger.interval = args.log_interval
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=args.epochs, max_keep_ckpts=1)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)


def run_bccd(args, make_cfg: Callable, summary: dict) -> dict:
    """Train ``make_cfg(args)`` through DetRunner (ending with the
    validation of the last epoch), then print and save (WORK_DIR/
    result.json) ``summary`` plus iterations, threads, wall time and the
    COCO metrics."""
    if not osp.isfile(osp.join(args.data_root, 'train.json')):
        sys.exit(f'{args.data_root}/train.json not found: pass --data-root '
                 '(the BCCD folder of ../shared/data)')
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from detkit.engine import DetRunner
    runner = DetRunner.from_cfg(make_cfg(args))
    start = time.perf_counter()
    runner.train()
    total = time.perf_counter() - start
    scalars = runner.message_hub.log_scalars
    metrics = {
        key.split('/', 1)[1]: round(float(scalars[key].current()), 4)
        for key in scalars if key.startswith('val/coco/')
    }
    result = dict(summary)
    result.update(iterations=runner.iter,
                  torch_threads=torch.get_num_threads(),
                  train_and_val_seconds=round(total, 1), **metrics)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result
