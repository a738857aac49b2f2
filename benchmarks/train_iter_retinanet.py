"""One RetinaNet training iteration, split into its parts (random weights).

    python benchmarks/train_iter_retinanet.py [--batch-size 2]
        [--size 800 1333] [--boxes 5 50] [--repeats 5] [--warmup 1]
        [--threads N] [--amp] [--compile] [--out F]

(``--amp`` needs a GPU: mmengine's AmpOptimWrapper refuses the CPU.)

The model is configs/retinanet/retinanet_r50_fpn_1x_coco.py as it trains
(frozen stem and stage 1, ``norm_eval``; pretrained weights are not
fetched), SGD as in the config. Each image is ``--size`` (800x1333, padded
to 800x1344 by the preprocessor) with a seeded random number of boxes in
``--boxes`` (5..50) and random labels.

Per iteration it times, alternating within the same loop:

* ``iteration``: ``model.train_step`` (preprocess, forward, targets,
  losses, backward, SGD step), the way the runner calls it;
* ``forward``: preprocessor + backbone + neck + head ``forward``;
* ``targets+losses``: everything in the head after ``forward``
  (``loss_by_feat``: anchors, batched assignment, targets, focal and L1
  losses) on the forward's outputs;
* ``assign``: the batched MaxIoUAssigner alone (part of the above).

The figure of interest is ``targets+losses`` / ``iteration`` (target
< 5%). It also prints the peak resident memory (``ru_maxrss``, the whole
process's high-water mark) and whether the assigner runs a Python loop over
images (it does not: one ``(B, G, N)`` tensor program).
"""
import argparse
import resource

import torch

from common import (REPO_ROOT, compare, print_header, report, save_json,
                    set_threads)

CONFIG = f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py'


def random_batch(batch_size, size, boxes, seed=0):
    """``dict(inputs=[uint8 (3, h, w)], data_samples=[...])`` with random
    pictures and ``boxes[0]..boxes[1]`` random boxes (2..400 px sides) per
    image."""
    from mmengine.structures import InstanceData

    from detkit.structures import DetDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(
            torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                          generator=gen))
        n = int(torch.randint(boxes[0], boxes[1] + 1, (1, ), generator=gen))
        wh = torch.rand(n, 2, generator=gen) * 398 + 2
        xy = torch.rand(n, 2, generator=gen) * (
            torch.tensor([w, h]) - wh)
        gt = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (n, ), generator=gen))
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
            img_id=i))
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build(args):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    from detkit.apis.inference import _drop_pretrained
    from detkit.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    _drop_pretrained(cfg.model)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        optim_cfg = dict(cfg.optim_wrapper)
        if args.amp:
            # What tools/train.py --amp sets (mmengine's AmpOptimWrapper
            # needs a GPU).
            optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    if args.compile:
        # What mmengine's Runner does for cfg.compile=True (only the
        # ``iteration`` timing goes through it).
        model.train_step = torch.compile(model.train_step)
    return model, optim_wrapper


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1333),
                        metavar=('H', 'W'))
    parser.add_argument('--boxes', type=int, nargs=2, default=(5, 50),
                        metavar=('MIN', 'MAX'))
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--amp', action='store_true',
                        help='AmpOptimWrapper, as tools/train.py --amp (GPU)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile(model.train_step), as the '
                        'runner does with compile=True')
    parser.add_argument('--out')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    from inference import quiet_mmengine
    quiet_mmengine()
    info = print_header('RetinaNet R50-FPN training iteration', args)
    model, optim_wrapper = build(args)
    head = model.bbox_head
    data = random_batch(args.batch_size, args.size, args.boxes)
    counts = [len(s.gt_instances) for s in data['data_samples']]
    print(f'batch {args.batch_size} x {tuple(args.size)}, boxes per image '
          f'{counts}')

    # Outputs of one forward pass, for the parts timed on their own.
    with optim_wrapper.optim_context(model):
        pre = model.data_preprocessor(data, True)
        feats = model.extract_feat(pre['inputs'])
        outs = head(feats)
    from detkit.models.utils import pad_instances, unpack_gt_instances
    gts, ignores, metas = unpack_gt_instances(pre['data_samples'])
    outs = [[t.detach().requires_grad_() for t in level] for level in outs]
    featmap_sizes = [s.shape[-2:] for s in outs[0]]
    anchors, valid = head.get_anchors(featmap_sizes, metas,
                                      outs[0][0].device)
    gt_bboxes, gt_labels, gt_valid = pad_instances(gts, anchors.device)
    print(f'anchors N = {anchors.size(0)}, padded G = {gt_bboxes.size(1)}')

    def iteration():
        model.train_step(data, optim_wrapper)

    def forward():
        with torch.no_grad(), optim_wrapper.optim_context(model):
            p = model.data_preprocessor(data, True)
            head(model.extract_feat(p['inputs']))

    def targets_losses():
        with optim_wrapper.optim_context(model):
            losses = head.loss_by_feat(*outs, gts, metas, ignores)
        # Autograd through the losses down to the head outputs, which the
        # iteration's backward also does; the head's convs are not run.
        sum(losses.values()).backward()

    def assign():
        head.assigner.assign_batch(anchors, gt_bboxes, gt_labels,
                                   gt_valid=gt_valid, priors_valid=valid)

    results = compare(dict(iteration=iteration, forward=forward,
                           targets_losses=targets_losses, assign=assign),
                      warmup=args.warmup, repeats=args.repeats)
    rows = report(results, reference='iteration')
    share = results['targets_losses']['median'] / \
        results['iteration']['median']
    print(f'targets + losses (incl. their backward to the head outputs): '
          f'{100 * share:.2f}% of the iteration')
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'peak resident memory (ru_maxrss, whole process): '
          f'{peak_rss:.0f} MiB')
    save_json(args.out, dict(machine=info, rows=rows, share=share,
                             peak_rss_mib=peak_rss, boxes=counts,
                             amp=args.amp, compile=args.compile))
    return rows


if __name__ == '__main__':
    main()
