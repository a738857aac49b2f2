"""One training iteration of detkit against torchvision's implementation of
the same detector, side by side in one process, with where the time goes.

    python benchmarks/train_iter.py --model retinanet|faster_rcnn
        [--variants default,exact] [--batch-size 2] [--size 800 1333]
        [--boxes 5 50] [--repeats 3] [--warmup 1] [--threads N]
        [--no-reference] [--device cpu|cuda] [--amp] [--out F]

detkit builds mmdetection's config (configs/retinanet/retinanet_r50_fpn_1x_coco.py,
configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py: ResNet-50 with the stem
and stage 1 frozen, ``norm_eval=True``; SGD as configured) with random
weights and times ``model.train_step`` (preprocess, forward, targets,
losses, backward, optimizer step), the call the runner makes. Variants:

* ``default``: what :class:`~detkit.engine.DetRunner` trains by default
  (:func:`detkit.engine.training_speedups`: channels-last memory format,
  the foreach optimizer step);
* ``exact``: ``channels_last=False`` and the optimizer as mmengine builds it
  (NCHW convolutions: mmdetection's arithmetic).

torchvision (``torchvision.models.detection``) is configured the same way,
by hand because its builders ignore ``trainable_backbone_layers`` and use
trainable BatchNorm when no weights are given: ``resnet_fpn_backbone`` with
``FrozenBatchNorm2d`` and ``trainable_layers=3`` (stem and layer1 frozen),
the same class count, matcher thresholds, sampler sizes and proposal counts
(``TV_SETTINGS``), the same SGD settings. What remains different is printed
(``DIFFERENCES``). Both get the same images (uint8 BGR for detkit, RGB
floats in [0, 1] for torchvision) and boxes.

The breakdown (per iteration, exclusive seconds, medians over the timed
rounds) comes from timing wrappers around the stages of both models:
``preprocess``, ``backbone``, ``neck``, ``head_fwd`` (dense head; for Faster
R-CNN also RoI pooling and the box head), ``targets`` (priors, assignment,
sampling, target encoding), ``proposals`` (RPN decoding and NMS),
``loss``, ``backward``, ``optimizer`` (step and zero_grad), ``other`` (the
rest of the iteration). On CUDA the wrappers synchronise, so ``--device
cuda`` times the iteration without them unless ``--breakdown``.
"""
import argparse
import collections
import contextlib
import statistics
import time

import torch

from common import (REPO_ROOT, print_header, report, save_json,
                    set_threads)

CONFIGS = dict(
    retinanet='configs/retinanet/retinanet_r50_fpn_1x_coco.py',
    faster_rcnn='configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
STAGES = ('preprocess', 'backbone', 'neck', 'head_fwd', 'targets',
          'proposals', 'loss', 'backward', 'optimizer')
# torchvision keyword arguments that match the mmdetection configs'
# train_cfg (and the proposal settings of train_cfg.rpn_proposal).
TV_SETTINGS = dict(
    retinanet=dict(num_classes=80, fg_iou_thresh=0.5, bg_iou_thresh=0.4),
    faster_rcnn=dict(
        num_classes=81, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=256, rpn_positive_fraction=0.5,
        rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=1000,
        rpn_nms_thresh=0.7, box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
        box_batch_size_per_image=512, box_positive_fraction=0.25))
LR = dict(retinanet=0.01, faster_rcnn=0.02)
COMMON_DIFFERENCES = (
    'backbone norms: torchvision FrozenBatchNorm2d (no trainable affine '
    'parameters); mmdetection BatchNorm2d in eval mode whose affine '
    'weights and biases of stages 2-4 train (53 more parameter tensors '
    'with gradients and optimizer updates)',
    'torchvision\'s transform resizes at scale 1.0 (one bilinear pass over '
    'each image) before normalising and padding; detkit\'s preprocessor '
    'converts BGR->RGB, normalises and pads',
    'torchvision encodes the regression targets inside its loss '
    '(counted as loss), detkit in its targets',
)
DIFFERENCES = dict(
    retinanet=COMMON_DIFFERENCES + (
        'P6: mmdetection add_extra_convs=\'on_input\' (3x3 conv on C5, 2048 '
        'channels), torchvision LastLevelP6P7 on P5 (256 channels)',
        'matching: mmdetection MaxIoUAssigner(0.5, 0.4, min_pos_iou=0) '
        'lets every ground truth take all anchors of its maximum IoU; '
        'torchvision Matcher(allow_low_quality_matches=True) the same '
        'rule',
        'losses: both sigmoid focal loss (gamma 2, alpha 0.25) and L1 on '
        'deltas; torchvision normalises per image, mmdetection over the '
        'batch',
    ),
    faster_rcnn=COMMON_DIFFERENCES + (
        'RPN loss: mmdetection sigmoid CE + L1, torchvision BCE + smooth L1 '
        '(beta 1/9); RoI loss: mmdetection CE + L1, torchvision CE + smooth '
        'L1 (beta 1/9)',
        'RPN assignment: mmdetection min_pos_iou=0.3 for low-quality '
        'matches, torchvision any maximum IoU',
        'proposals: both 2000 per level before NMS (0.7) and 1000 per image '
        'after; torchvision also drops boxes under 1e-3 px',
    ))


# ----------------------------------------------------------------- timing
class StageTimer:
    """Exclusive time per stage label: wrapped methods push themselves on
    a stack, and a stage's time excludes the wrapped stages it calls."""

    def __init__(self, sync):
        self.sync = sync
        self.active = False
        self.totals = collections.defaultdict(float)
        self._stack = []

    def wrap(self, obj, attr, label):
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            if not self.active:
                return fn(*args, **kwargs)
            self.sync()
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                elapsed = time.perf_counter() - start
                inner = self._stack.pop()
                self.totals[label] += elapsed - inner
                if self._stack:
                    self._stack[-1] += elapsed

        setattr(obj, attr, timed)

    def take(self):
        totals, self.totals = dict(self.totals), collections.defaultdict(
            float)
        return totals


# ------------------------------------------------------------------- data
def random_batch(batch_size, size, boxes, seed=0):
    """``[(uint8 BGR (3, h, w), boxes (n, 4) xyxy, labels (n,) in 0..79)]``
    with ``boxes[0]..boxes[1]`` random boxes (2..400 px sides) per image."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for _ in range(batch_size):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                            generator=gen)
        n = int(torch.randint(boxes[0], boxes[1] + 1, (1, ), generator=gen))
        wh = torch.rand(n, 2, generator=gen) * 398 + 2
        xy = torch.rand(n, 2, generator=gen) * (torch.tensor([w, h]) - wh)
        out.append((img, torch.cat([xy, xy + wh], 1),
                    torch.randint(0, 80, (n, ), generator=gen)))
    return out


def detkit_data(batch):
    from mmengine.structures import InstanceData

    from detkit.structures import DetDataSample
    inputs, samples = [], []
    for i, (img, bboxes, labels) in enumerate(batch):
        h, w = img.shape[-2:]
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
            img_id=i))
        sample.gt_instances = InstanceData(bboxes=bboxes, labels=labels)
        inputs.append(img)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ----------------------------------------------------------------- models
def build_detkit(name, variant, device, amp=False):
    """``(model, optim_wrapper)`` as DetRunner trains ``variant``."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    from detkit.apis.inference import _drop_pretrained
    from detkit.engine import training_speedups
    from detkit.registry import MODELS
    if variant not in ('default', 'exact'):
        raise SystemExit(f'--variants: unknown {variant!r}; use default, '
                         'exact')
    cfg = Config.fromfile(f'{REPO_ROOT}/{CONFIGS[name]}')
    _drop_pretrained(cfg.model)
    if variant == 'exact':
        cfg.channels_last = False
        cfg.optim_wrapper.optimizer.foreach = False
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.to(device)
        optim_cfg = dict(cfg.optim_wrapper)
        if amp:
            optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
        model, optim_cfg = training_speedups(cfg, model, optim_cfg)
        model.train()
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    return model, optim_wrapper


def roi_align_difference(sampling_ratio):
    """The RoIAlign line of Faster R-CNN's differences."""
    same = ('the same sampling_ratio=0 (adaptive: ceil(RoI size / 7) '
            'samples per bin and axis)' if sampling_ratio == 0 else
            f'torchvision sampling_ratio={sampling_ratio}, mmdetection 0 '
            '(adaptive)')
    return (f'RoIAlign: {same}; mmdetection aligned=True (half-pixel '
            'offset), torchvision\'s MultiScaleRoIAlign aligned=False')


def build_torchvision(name, size, device, roi_sampling_ratio=0):
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import \
        resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    h, w = size
    torch.manual_seed(0)
    kwargs = dict(min_size=min(h, w), max_size=max(h, w),
                  **TV_SETTINGS[name])
    if name == 'retinanet':
        backbone = resnet_fpn_backbone(
            backbone_name='resnet50', weights=None,
            norm_layer=FrozenBatchNorm2d, trainable_layers=3,
            returned_layers=[2, 3, 4],
            extra_blocks=LastLevelP6P7(256, 256))
        model = RetinaNet(backbone, **kwargs)
    else:
        backbone = resnet_fpn_backbone(
            backbone_name='resnet50', weights=None,
            norm_layer=FrozenBatchNorm2d, trainable_layers=3)
        # mmdetection's RoIAlign samples adaptively (sampling_ratio=0);
        # torchvision's default pooler takes 2 x 2 samples per bin.
        from torchvision.ops import MultiScaleRoIAlign
        kwargs['box_roi_pool'] = MultiScaleRoIAlign(
            ['0', '1', '2', '3'], 7, sampling_ratio=roi_sampling_ratio)
        model = FasterRCNN(backbone, **kwargs)
    # mmdetection's ResNet starts with zero_init_residual=True (the last
    # norm of each bottleneck scaled by 0); without it and without
    # statistics, torchvision's random ResNet-50 overflows to NaN losses.
    from torchvision.models.resnet import Bottleneck
    with torch.no_grad():
        for module in model.backbone.body.modules():
            if isinstance(module, Bottleneck):
                module.bn3.weight.zero_()
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR[name], momentum=0.9,
                                weight_decay=1e-4)
    return model, optimizer


def torchvision_data(batch, name, device):
    images, targets = [], []
    for img, bboxes, labels in batch:
        images.append(img.flip(0).float().div(255).to(device))
        # Faster R-CNN's class 0 is the background.
        offset = 1 if name == 'faster_rcnn' else 0
        targets.append(dict(boxes=bboxes.to(device),
                            labels=(labels + offset).to(device)))
    return images, targets


# ---------------------------------------------------------------- stages
def wrap_detkit(timer, model, optim_wrapper, name):
    timer.wrap(model.data_preprocessor, 'forward', 'preprocess')
    timer.wrap(model.backbone, 'forward', 'backbone')
    timer.wrap(model.neck, 'forward', 'neck')
    heads = [model.bbox_head] if name == 'retinanet' else [model.rpn_head]
    for head in heads:
        timer.wrap(head, 'forward', 'head_fwd')
        timer.wrap(head, 'get_priors', 'targets')
        timer.wrap(head, 'get_targets', 'targets')
        timer.wrap(head, 'loss_by_feat', 'loss')
        timer.wrap(head, 'predict_by_feat', 'proposals')
    if name == 'faster_rcnn':
        roi = model.roi_head
        timer.wrap(roi, 'sample', 'targets')
        timer.wrap(roi, '_bbox_forward', 'head_fwd')
        timer.wrap(roi.bbox_head, 'loss_and_target', 'loss')
    timer.wrap(optim_wrapper, 'backward', 'backward')
    timer.wrap(optim_wrapper, 'step', 'optimizer')
    timer.wrap(optim_wrapper, 'zero_grad', 'optimizer')


def wrap_torchvision(timer, model, name):
    timer.wrap(model.transform, 'forward', 'preprocess')
    timer.wrap(model.backbone.body, 'forward', 'backbone')
    timer.wrap(model.backbone.fpn, 'forward', 'neck')
    if name == 'retinanet':
        timer.wrap(model.head, 'forward', 'head_fwd')
        timer.wrap(model.anchor_generator, 'forward', 'targets')
        timer.wrap(model, 'compute_loss', 'targets')  # the matching loop
        timer.wrap(model.head, 'compute_loss', 'loss')
        return
    import torchvision.models.detection.roi_heads as tv_roi_heads
    rpn, roi = model.rpn, model.roi_heads
    timer.wrap(rpn.head, 'forward', 'head_fwd')
    timer.wrap(rpn.anchor_generator, 'forward', 'targets')
    timer.wrap(rpn, 'assign_targets_to_anchors', 'targets')
    timer.wrap(rpn.box_coder, 'encode', 'targets')
    timer.wrap(rpn.box_coder, 'decode', 'proposals')
    timer.wrap(rpn, 'filter_proposals', 'proposals')
    timer.wrap(rpn, 'compute_loss', 'loss')
    timer.wrap(roi, 'select_training_samples', 'targets')
    timer.wrap(roi.box_roi_pool, 'forward', 'head_fwd')
    timer.wrap(roi.box_head, 'forward', 'head_fwd')
    timer.wrap(roi.box_predictor, 'forward', 'head_fwd')
    timer.wrap(tv_roi_heads, 'fastrcnn_loss', 'loss')


def autocast(device, amp):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.split(':')[0], dtype=torch.float16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(CONFIGS), required=True)
    parser.add_argument('--variants', default='default',
                        help='detkit variants (comma-separated): default, '
                        'exact')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1333),
                        metavar=('H', 'W'))
    parser.add_argument('--boxes', type=int, nargs=2, default=(5, 50),
                        metavar=('MIN', 'MAX'))
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='fp16 autocast: AmpOptimWrapper for detkit (as '
                        'tools/train.py --amp), autocast + GradScaler for '
                        'torchvision (CUDA only)')
    parser.add_argument('--breakdown', action='store_true',
                        help='collect the stage breakdown on CUDA too '
                        '(synchronises around every stage)')
    parser.add_argument('--no-reference', action='store_true')
    parser.add_argument(
        '--tv-roi-sampling-ratio', type=int, default=0,
        help='sampling_ratio of torchvision\'s Faster R-CNN RoIAlign '
        '(default 0 as in mmdetection\'s config; torchvision\'s own '
        'default is 2)')
    parser.add_argument('--out')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    from inference import quiet_mmengine
    quiet_mmengine()
    if args.amp and not args.device.startswith('cuda'):
        raise SystemExit('--amp needs --device cuda (mmengine\'s '
                         'AmpOptimWrapper refuses the CPU)')
    info = print_header(f'{args.model} R50-FPN training iteration', args)
    cuda = args.device.startswith('cuda')

    def sync():
        if cuda:
            torch.cuda.synchronize()

    collect = not cuda or args.breakdown
    batch = random_batch(args.batch_size, args.size, args.boxes)
    print(f'batch {args.batch_size} x {tuple(args.size)}, boxes per image '
          f'{[len(b[1]) for b in batch]}')

    fns, timers, last_losses = {}, {}, {}
    for variant in args.variants.split(','):
        model, optim_wrapper = build_detkit(args.model, variant,
                                            args.device, args.amp)
        data = detkit_data(batch)
        stage_timer = StageTimer(sync)
        wrap_detkit(stage_timer, model, optim_wrapper, args.model)
        key = f'detkit:{variant}'

        def run(model=model, optim_wrapper=optim_wrapper, data=data,
                key=key):
            last_losses[key] = {
                k: round(float(v), 4)
                for k, v in model.train_step(data, optim_wrapper).items()}

        fns[key], timers[key] = run, stage_timer
    if not args.no_reference:
        tv_model, optimizer = build_torchvision(
            args.model, args.size, args.device, args.tv_roi_sampling_ratio)
        images, targets = torchvision_data(batch, args.model, args.device)
        tv_timer = StageTimer(sync)
        wrap_torchvision(tv_timer, tv_model, args.model)
        scaler = torch.amp.GradScaler('cuda') if args.amp else None

        def backward(loss):
            (scaler.scale(loss) if scaler else loss).backward()

        def step():
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad()

        holder = type('H', (), {})()
        holder.backward, holder.step = backward, step
        tv_timer.wrap(holder, 'backward', 'backward')
        tv_timer.wrap(holder, 'step', 'optimizer')

        def run_tv():
            with autocast(args.device, args.amp):
                losses = tv_model(images, targets)
            holder.backward(sum(losses.values()))
            holder.step()
            last_losses['torchvision'] = {
                k: round(float(v), 4) for k, v in losses.items()}

        fns['torchvision'], timers['torchvision'] = run_tv, tv_timer
        differences = DIFFERENCES[args.model]
        if args.model == 'faster_rcnn':
            differences += (roi_align_difference(
                args.tv_roi_sampling_ratio),)
        for line in differences:
            print('difference: ' + line)
        print(f'torchvision settings: {TV_SETTINGS[args.model]}')

    # compare() semantics (warm-up rounds, then alternating timed rounds),
    # with the stage totals of every timed call kept.
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    times = {key: [] for key in fns}
    stages = {key: [] for key in fns}
    for _ in range(args.repeats):
        for key, fn in fns.items():
            timers[key].active = collect
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - start)
            timers[key].active = False
            stages[key].append(timers[key].take())
    from common import summarize
    results = {key: summarize(t) for key, t in times.items()}
    rows = report(results,
                  reference=None if args.no_reference else 'torchvision')
    breakdown = {}
    if collect:
        print('breakdown (median seconds per iteration; exclusive):')
        print(f'{"stage":<12}' + ''.join(f'{k:>22}' for k in fns))
        for key in fns:
            per_stage = {}
            for stage in STAGES:
                per_stage[stage] = statistics.median(
                    s.get(stage, 0.0) for s in stages[key])
            per_stage['other'] = statistics.median(
                t - sum(s.values()) for t, s in zip(times[key], stages[key]))
            breakdown[key] = per_stage
        for stage in STAGES + ('other', ):
            print(f'{stage:<12}' + ''.join(
                f'{breakdown[k][stage]:>22.3f}' for k in fns))
    for key, losses in last_losses.items():
        print(f'losses of the last {key} iteration: {losses}')
    save_json(args.out, dict(model=args.model, machine=info, rows=rows,
                             breakdown=breakdown, losses=last_losses,
                             amp=args.amp, device=args.device))
    return rows, breakdown


if __name__ == '__main__':
    main()
