"""Inference speed of detkit against torchvision's implementation of the same
detector, side by side in one process (random weights).

    python benchmarks/inference.py --model retinanet|ssd300|faster_rcnn
        [--variants plain,cl,fuse,fuse+cl,ort] [--dtype fp32|bf16|fp16]
        [--threads N] [--repeats 10] [--warmup 2] [--no-peak] [--out F]

detkit runs ``model.test_step`` (DetDataPreprocessor: BGR->RGB, normalise,
pad to 32; backbone, neck, head; decoding, rescale, NMS) on one uint8 image
already at the test size (800x1333, or 300x300 for SSD300), with the
standard config's ``test_cfg``. Variants (comma-separated, each timed):

* ``plain``: as built by ``init_detector``, under ``torch.no_grad`` (what
  the test loop does);
* ``fuse``: :func:`detkit.models.layers.fuse_conv_bn` applied;
* ``fuse+cl``: also channels-last memory format (``init_detector(...,
  fuse_conv_bn=True, channels_last=True)``);
* ``cl``: channels-last only (``init_detector``'s and ``tools/test.py``'s
  default);
* ``ort``: the ``plain`` model exported by tools/deployment/export_onnx.py
  (at the benchmark's image size) in onnxruntime's CPU session with the
  same number of intra-op threads as torch (``ORTDetector``; needs
  ``pip install onnx onnxruntime``).

Each detkit variant runs under ``torch.inference_mode``, except ``plain``.

torchvision (``weights=None, weights_backbone=None``) gets the same image as
a float tensor in [0, 1] with ``min_size``/``max_size`` equal to the image
size, so its transform normalises and pads but does not resize, and the
thresholds of detkit's ``test_cfg`` (see ``TV_SETTINGS``). Both get the
same number of classes (80 + background where the model has one).

``--dtype bf16|fp16`` runs everything (both libraries) under
``torch.autocast`` with that dtype (on CPU: bf16 uses AMX/AVX512-BF16 where
present).
"""
import argparse
import contextlib
import logging
import os.path as osp
import tempfile

import torch

from common import (REPO_ROOT, compare, conv_peak, count_flops, print_header,
                    report, save_json, set_threads)

CONFIGS = dict(
    retinanet='configs/retinanet/retinanet_r50_fpn_1x_coco.py',
    ssd300='configs/ssd/ssd300_coco.py',
    faster_rcnn='configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
SIZES = dict(retinanet=(800, 1333), ssd300=(300, 300),
             faster_rcnn=(800, 1333))
# torchvision keyword arguments that match detkit's test_cfg.
TV_SETTINGS = dict(
    retinanet=dict(
        num_classes=80, score_thresh=0.05, nms_thresh=0.5,
        detections_per_img=100, topk_candidates=1000),
    ssd300=dict(
        num_classes=81, score_thresh=0.02, nms_thresh=0.45,
        detections_per_img=200, topk_candidates=1000),
    faster_rcnn=dict(
        num_classes=81, rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.7,
        box_score_thresh=0.05, box_nms_thresh=0.5,
        box_detections_per_img=100))
DIFFERENCES = dict(
    retinanet='torchvision also drops boxes smaller than 0.01 px and clips '
    'before NMS; the FrozenBatchNorm2d of its backbone is an unfused '
    'multiply-add, like detkit\'s eval BatchNorm.',
    ssd300='torchvision\'s SSD transform always interpolates to its fixed '
    '300x300 size (a same-size resize here); torchvision picks the top '
    '1000 candidates per level per class-flattened score as detkit does.',
    faster_rcnn='torchvision\'s RoIAlign uses sampling_ratio=2, '
    'aligned=False; mmdetection\'s (and detkit\'s) sampling_ratio=0, '
    'aligned=True. The RPN keeps 1000 per level before NMS and 1000 after '
    'in both.')
DTYPES = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)


def quiet_mmengine():
    """Drop mmengine's per-parameter init log lines."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)


def build_detkit(name, variant):
    from mmengine.config import Config

    from detkit.apis import init_detector
    cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIGS[name]))
    parts = set(variant.split('+'))
    unknown = parts - {'plain', 'fuse', 'cl'}
    if unknown:
        raise SystemExit(f'--variants: unknown part(s) {sorted(unknown)} in '
                         f'{variant!r}; use plain, fuse, cl, fuse+cl, ort')
    torch.manual_seed(0)
    return init_detector(cfg, fuse_conv_bn='fuse' in parts,
                         channels_last='cl' in parts)


def build_ort(name, folder):
    """An ``ORTDetector`` of the ``plain`` model's export (static size
    ``SIZES[name]``), with torch's intra-op thread count."""
    import importlib.util
    path = osp.join(REPO_ROOT, 'tools', 'deployment', 'export_onnx.py')
    spec = importlib.util.spec_from_file_location('detkit_export_onnx', path)
    export_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_onnx)
    out = osp.join(folder, f'{name}.onnx')
    export_onnx.export(build_detkit(name, 'plain'), out, SIZES[name])
    return export_onnx.ORTDetector(out, threads=torch.get_num_threads())


def detkit_batch(name):
    from detkit.structures import DetDataSample
    h, w = SIZES[name]
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                img_id=0)
    return img, meta, lambda: dict(
        inputs=[img], data_samples=[DetDataSample(metainfo=meta)])


def build_torchvision(name):
    import torchvision.models.detection as tvd
    h, w = SIZES[name]
    kwargs = dict(weights=None, weights_backbone=None, **TV_SETTINGS[name])
    torch.manual_seed(0)
    if name == 'retinanet':
        model = tvd.retinanet_resnet50_fpn(min_size=min(h, w),
                                           max_size=max(h, w), **kwargs)
    elif name == 'faster_rcnn':
        model = tvd.fasterrcnn_resnet50_fpn(min_size=min(h, w),
                                            max_size=max(h, w), **kwargs)
    else:
        model = tvd.ssd300_vgg16(**kwargs)
    return model.eval()


def autocast(dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast('cpu', dtype=dtype)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(CONFIGS), required=True)
    parser.add_argument('--variants', default='plain,fuse,fuse+cl',
                        help='detkit variants to time (comma-separated)')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (default: one per core)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--no-peak', action='store_true',
                        help='skip the 3x3-conv peak measurement')
    parser.add_argument('--no-reference', action='store_true',
                        help='time detkit only')
    parser.add_argument('--out', help='also write the results as JSON')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    quiet_mmengine()
    info = print_header(f'inference {args.model} ({args.dtype})', args)
    dtype = DTYPES[args.dtype]
    img, meta, make_batch = detkit_batch(args.model)

    fns, flops = {}, {}
    folder = tempfile.mkdtemp(prefix='detkit_bench_onnx_')
    for variant in args.variants.split(','):
        if variant == 'ort':
            if dtype is not None:
                raise SystemExit('--variants ort: fp32 only')
            session = build_ort(args.model, folder)
            fns['onnxruntime'] = lambda s=session: s.test_step(make_batch())
            continue
        model = build_detkit(args.model, variant)
        grad_mode = torch.no_grad if variant == 'plain' else \
            torch.inference_mode

        def run(model=model, grad_mode=grad_mode):
            with grad_mode(), autocast(dtype):
                return model.test_step(make_batch())

        fns[f'detkit:{variant}'] = run
        flops[f'detkit:{variant}'] = count_flops(run)
    if not args.no_reference:
        tv_model = build_torchvision(args.model)
        tv_img = img.flip(0).float().div(255)  # RGB in [0, 1]

        def run_tv():
            with torch.inference_mode(), autocast(dtype):
                return tv_model([tv_img])

        fns['torchvision'] = run_tv
        flops['torchvision'] = count_flops(run_tv)
        print('differences: ' + DIFFERENCES[args.model])
    peak = None
    if not args.no_peak:
        peak_res = conv_peak()
        peak = peak_res['peak']
        print(f'3x3 conv peak: {peak:.1f} GFLOP/s (NCHW '
              f'{peak_res["nchw_gflops"]:.1f}, channels-last '
              f'{peak_res["channels_last_gflops"]:.1f}; '
              f'{peak_res["gflop"]:.1f} GFLOP per call)')
        info['conv_peak'] = peak_res
    results = compare(fns, warmup=args.warmup, repeats=args.repeats)
    rows = report(results,
                  reference=None if args.no_reference else 'torchvision',
                  flops=flops, peak_gflops=peak)
    save_json(args.out, dict(model=args.model, dtype=args.dtype,
                             machine=info, rows=rows))
    return rows


if __name__ == '__main__':
    main()
