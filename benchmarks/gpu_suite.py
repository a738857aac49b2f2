"""Every GPU figure of benchmarks/README.md in one prepared run (needs CUDA;
refuses to start without it).

    python benchmarks/gpu_suite.py [--parts inference,train,syncs,bccd]
        [--repeats 20] [--warmup 5] [--bccd-epochs 2]
        [--data-root ../shared/data/bccd] [--out gpu_suite.json]

In one process, on ``cuda:0``:

1. ``inference``: RetinaNet R50-FPN and Faster R-CNN R50-FPN at 800x1333
   and SSD300, detkit's default path (``init_detector``: channels-last),
   its ``fuse+cl`` path and NCHW (``exact``), against torchvision's model
   (random weights, matched thresholds: ``benchmarks/inference.py``), in
   fp32 and under fp16 autocast; alternating rounds, medians, ratios.
2. ``train``: one training iteration (batch 2, 800x1333) of RetinaNet and
   Faster R-CNN as DetRunner trains them, fp32 and ``--amp``
   (AmpOptimWrapper; torchvision: autocast + GradScaler), against
   torchvision configured the same way (``benchmarks/train_iter.py``).
3. ``syncs``: the host synchronisations of one detkit training iteration
   of each model, counted by ``torch.cuda.set_sync_debug_mode('warn')``
   and listed by source line.
4. ``bccd``: 2 epochs of RetinaNet-R18 on BCCD (the setup of
   ``benchmarks/train_run_bccd.py`` at full width and 640x480), fp32 and
   ``--amp`` from the same seed: per-epoch mean losses and COCO mAP side
   by side, with the verdict of :func:`amp_close` (final-epoch mean loss
   within 5% relative, mAP within 0.02).

Prints the GPU's name, the software, the load average, each figure with
its reference and ratio, and writes ``--out`` as JSON. An absolute GPU
time is only meaningful with the GPU named beside it.
"""
import argparse
import collections
import contextlib
import math
import os.path as osp
import time
import warnings

import torch

from common import (DEFAULT_BCCD, REPO_ROOT, compare, print_header, report,
                    save_json)

PARTS = ('inference', 'train', 'syncs', 'bccd')
INFERENCE_MODELS = ('retinanet', 'faster_rcnn', 'ssd300')
TRAIN_MODELS = ('retinanet', 'faster_rcnn')
DTYPES = dict(fp32=None, fp16=torch.float16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--parts', default=','.join(PARTS),
                        help=f'comma-separated subset of {",".join(PARTS)}')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--train-repeats', type=int, default=10)
    parser.add_argument('--bccd-epochs', type=int, default=2)
    parser.add_argument('--bccd-scale', type=int, nargs=2,
                        default=(640, 480), metavar=('LONG', 'SHORT'))
    parser.add_argument('--bccd-width', type=int, default=256)
    parser.add_argument('--data-root', default=DEFAULT_BCCD)
    parser.add_argument('--work-dir', default='work_dirs/gpu_suite')
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(',') if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f'--parts: unknown {unknown}; choose from {PARTS}')
    args.parts = parts
    return args


def require_cuda():
    """The CUDA device name, or SystemExit with what is missing."""
    if not torch.cuda.is_available():
        build = ('this torch build has no CUDA' if torch.version.cuda is None
                 else f'torch {torch.__version__} (CUDA {torch.version.cuda}) '
                 'sees no GPU')
        raise SystemExit(
            f'gpu_suite.py measures GPU figures and needs a CUDA GPU: '
            f'{build}. Run it on a machine with one; the CPU figures come '
            'from benchmarks/inference.py and benchmarks/train_iter.py.')
    return torch.cuda.get_device_name(0)


# -------------------------------------------------------------- inference
def _autocast(dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast('cuda', dtype=dtype)


def build_detkit_inference(name, variant, device):
    """detkit's model for ``variant``: ``default`` (init_detector as is:
    channels-last), ``exact`` (NCHW), ``fuse+cl``."""
    from mmengine.config import Config

    from detkit.apis import init_detector
    from inference import CONFIGS
    cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIGS[name]))
    torch.manual_seed(0)
    kwargs = dict(default={}, exact=dict(channels_last=False),
                  **{'fuse+cl': dict(fuse_conv_bn=True, channels_last=True)})
    return init_detector(cfg, device=device, **kwargs[variant])


def inference_part(args, device):
    from inference import (DIFFERENCES, build_torchvision, detkit_batch,
                           quiet_mmengine)
    from detkit.structures import DetDataSample
    quiet_mmengine()
    out = {}
    for name in INFERENCE_MODELS:
        img, meta, _ = detkit_batch(name)
        img = img.to(device)
        tv_img = img.flip(0).float().div(255)
        models = {v: build_detkit_inference(name, v, device)
                  for v in ('default', 'fuse+cl', 'exact')}
        tv_model = build_torchvision(name).to(device)
        print(f'differences ({name}): {DIFFERENCES[name]}')
        for dtype_name, dtype in DTYPES.items():
            fns = {}
            for variant, model in models.items():
                # The test loop's no_grad for the unfused paths (as
                # benchmarks/inference.py times them).
                grad = torch.inference_mode if variant == 'fuse+cl' else \
                    torch.no_grad

                def run(model=model, grad=grad):
                    with grad(), _autocast(dtype):
                        return model.test_step(dict(
                            inputs=[img],
                            data_samples=[DetDataSample(metainfo=meta)]))

                fns[f'detkit:{variant}'] = run

            def run_tv():
                with torch.inference_mode(), _autocast(dtype):
                    return tv_model([tv_img])

            fns['torchvision'] = run_tv
            print(f'-- inference {name} {dtype_name}')
            rows = report(compare(fns, warmup=args.warmup,
                                  repeats=args.repeats),
                          reference='torchvision')
            out[f'{name}/{dtype_name}'] = rows
        models = tv_model = None  # free the GPU memory of this model
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------ train
def train_part(args, device):
    import train_iter
    out = {}
    for name in TRAIN_MODELS:
        for amp in (False, True):
            print(f'-- training iteration {name} {"amp" if amp else "fp32"}')
            argv = ['--model', name, '--device', device, '--repeats',
                    str(args.train_repeats), '--warmup', str(args.warmup)]
            rows, _ = train_iter.main(argv + (['--amp'] if amp else []))
            out[f'{name}/{"amp" if amp else "fp32"}'] = rows
            torch.cuda.empty_cache()
    return out


def sync_sites(caught, root=REPO_ROOT):
    """``{"path:line": count}`` of the synchronisation warnings in
    ``caught`` (``warnings.catch_warnings(record=True)``), paths relative
    to ``root``; other warnings are left out."""
    sites = collections.Counter()
    for item in caught:
        if 'synchroniz' not in str(item.message):
            continue
        path = item.filename
        if path.startswith(root):
            path = osp.relpath(path, root)
        sites[f'{path}:{item.lineno}'] += 1
    return dict(sites)


def syncs_part(args, device):
    import train_iter
    out = {}
    for name in TRAIN_MODELS:
        model, optim_wrapper = train_iter.build_detkit(name, 'default',
                                                       device)
        data = train_iter.detkit_data(train_iter.random_batch(
            2, (800, 1333), (5, 50)))
        model.train_step(data, optim_wrapper)  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                model.train_step(data, optim_wrapper)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        sites = sync_sites(caught)
        print(f'-- host synchronisations of one {name} training iteration: '
              f'{sum(sites.values())}')
        for site, count in sorted(sites.items(), key=lambda kv: -kv[1]):
            print(f'   {count:4d}  {site}')
        out[name] = sites
        del model, optim_wrapper
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------- bccd
def amp_close(fp32, amp, loss_rtol=0.05, map_atol=0.02):
    """Whether an ``--amp`` run matches its fp32 twin: the mean loss of
    the last epoch within ``loss_rtol`` (relative) and the COCO mAP within
    ``map_atol``. Returns ``(ok, details)``."""
    loss_a, loss_b = fp32['epoch_losses'][-1], amp['epoch_losses'][-1]
    rel = abs(loss_b - loss_a) / max(abs(loss_a), 1e-12)
    dmap = abs(amp['bbox_mAP'] - fp32['bbox_mAP'])
    ok = math.isfinite(loss_b) and rel <= loss_rtol and dmap <= map_atol
    return ok, dict(final_loss_rel_diff=rel, map_abs_diff=dmap,
                    loss_rtol=loss_rtol, map_atol=map_atol)


def _bccd_run(args, amp):
    from mmengine.hooks import Hook

    import train_run_bccd
    from detkit.engine import DetRunner
    run_args = train_run_bccd.parse_args([
        '--data-root', args.data_root, '--epochs', str(args.bccd_epochs),
        '--width', str(args.bccd_width), '--scale',
        *map(str, args.bccd_scale), '--work-dir',
        osp.join(args.work_dir, 'amp' if amp else 'fp32')])
    cfg = train_run_bccd.run_cfg(run_args, num_workers=2)
    if amp:  # what tools/train.py --amp does
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    losses = collections.defaultdict(list)

    class _Losses(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            losses[runner.epoch].append(float(outputs['loss']))

    runner = DetRunner.from_cfg(cfg)
    runner.register_hook(_Losses())
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    scalars = runner.message_hub.log_scalars
    return dict(
        amp=amp, seconds=round(seconds, 1),
        epoch_losses=[sum(v) / len(v) for _, v in sorted(losses.items())],
        bbox_mAP=float(scalars['val/coco/bbox_mAP'].current()),
        bbox_mAP_50=float(scalars['val/coco/bbox_mAP_50'].current()))


def bccd_part(args, device):
    if not osp.isfile(osp.join(args.data_root, 'train.json')):
        print(f'-- bccd: {args.data_root}/train.json not found, skipped '
              '(pass --data-root)')
        return None
    runs = [_bccd_run(args, amp) for amp in (False, True)]
    ok, details = amp_close(*runs)
    for run in runs:
        print(f'-- bccd {"amp " if run["amp"] else "fp32"}: epoch mean '
              f'losses {[round(v, 4) for v in run["epoch_losses"]]}, mAP '
              f'{run["bbox_mAP"]:.4f} (mAP_50 {run["bbox_mAP_50"]:.4f}), '
              f'{run["seconds"]} s')
    print(f'-- bccd amp close to fp32: {ok} ({details})')
    return dict(runs=runs, close=ok, **details)


def main(argv=None):
    args = parse_args(argv)
    gpu = require_cuda()
    device = 'cuda:0'
    info = print_header(f'GPU suite on {gpu}', args)
    results = dict(machine=info, gpu=gpu)
    steps = dict(inference=inference_part, train=train_part,
                 syncs=syncs_part, bccd=bccd_part)
    for part in args.parts:
        start = time.perf_counter()
        results[part] = steps[part](args, device)
        print(f'== {part} took {time.perf_counter() - start:.0f} s',
              flush=True)
    save_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
