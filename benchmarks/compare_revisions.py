"""Training speed (and equality) of two detkit trees side by side.

    python benchmarks/compare_revisions.py --old /tmp/detkit_before
        [--new .] [--models retinanet faster_rcnn]
        [--parts iteration heads targets] [--batch-size 2]
        [--size 512 512] [--full] [--boxes 5 50] [--warmup 1]
        [--repeats 5] [--threads N] [--outputs] [--out F]

Each tree runs in its own long-lived worker process (``PYTHONPATH`` set to
the tree, its own ``configs/``); the two take turns, one timed call at a
time (``old new new old old new ...``), so a change of machine load hits
both alike and neither always runs right after the other. Per model it times

* ``iteration``: ``model.train_step`` (preprocess, forward, targets,
  losses, backward, SGD step) on a random batch, as the runner calls it;
* ``heads``: the heads alone on fixed neck features (their forward,
  targets, losses and backward; for Faster R-CNN the RPN's losses and
  proposals, then the RoI stage);
* ``targets``: what the target program does, on fixed head outputs:
  RetinaNet's ``loss_by_feat`` (anchors, assignment, targets, losses) and
  its backward; for Faster R-CNN the RPN's ``loss_by_feat`` (+ backward)
  and ``predict_by_feat``, then the RoI stage's assignment, sampling, RoI
  list and box targets,

and prints medians, min / max and the ratio new / old of wall-clock and
of process CPU time (all threads; the steadier figure on a shared
machine, best with ``--threads 1``). The models are the
R50-FPN configs (RetinaNet, Faster R-CNN) with random weights (seed 0);
both workers get the same weights, batch and random draws, so the script
also reports whether every iteration's losses were bitwise equal between
the trees. ``--size`` defaults to 512 x 512 (``--full``: 800 x 1333).

``--outputs`` instead compares the behaviour record of
``tests/test_models/test_detectors/test_behaviour_record.py`` (losses,
gradient hashes and predictions of small RetinaNet, SSD300, RPN and Faster
R-CNN models) computed by each tree from its own configs, bit for bit.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

from common import REPO_ROOT, print_header, save_json

CONFIGS = dict(
    retinanet='configs/retinanet/retinanet_r50_fpn_1x_coco.py',
    faster_rcnn='configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
PARTS = ['iteration', 'heads', 'targets']
RECORD_TEST = osp.join(REPO_ROOT, 'tests', 'test_models', 'test_detectors',
                       'test_behaviour_record.py')


# ------------------------------------------------------------------ worker
def random_batch(batch_size, size, boxes, seed=0):
    """``dict(inputs=[uint8 (3, h, w)], data_samples=[...])``: random
    pictures with ``boxes[0]..boxes[1]`` random boxes (2..min(400, side)
    px) and labels of 80 classes per image."""
    import torch
    from mmengine.structures import InstanceData

    from detkit.structures import DetDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                    generator=gen))
        n = int(torch.randint(boxes[0], boxes[1] + 1, (1, ), generator=gen))
        side = min(400., h - 1., w - 1.)
        wh = torch.rand(n, 2, generator=gen) * (side - 2) + 2
        xy = torch.rand(n, 2, generator=gen) * (torch.tensor([w, h]) - wh)
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
            img_id=i))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 80, (n, ), generator=gen))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


class Job:
    """One model of one tree: its training step and its heads."""

    def __init__(self, tree, name, args):
        import torch
        from mmengine.config import Config
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import DefaultScope

        from detkit.apis.inference import _drop_pretrained
        from detkit.registry import MODELS
        cfg = Config.fromfile(osp.join(tree, CONFIGS[name]))
        _drop_pretrained(cfg.model)
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope('detkit'):
            self.model = MODELS.build(cfg.model)
            self.model.init_weights()
            self.model.train()
            self.optim = build_optim_wrapper(self.model, cfg.optim_wrapper)
        self.name = name
        self.data = random_batch(args['batch_size'], args['size'],
                                 args['boxes'])
        pre = self.model.data_preprocessor(self.data, True)
        with torch.no_grad():
            feats = self.model.extract_feat(pre['inputs'])
        self.feats = [f.detach() for f in feats]
        self.samples = pre['data_samples']
        dense = (self.model.bbox_head if name == 'retinanet' else
                 self.model.rpn_head)
        with torch.no_grad():
            self.outs = [[t.detach() for t in level]
                         for level in dense(self.feats)]
        torch.manual_seed(1)  # the samplers' draws, the same in both trees

    def iteration(self):
        log_vars = self.model.train_step(self.data, self.optim)
        return {k: float(v.detach()).hex()
                for k, v in sorted(log_vars.items())}

    def targets(self):
        from detkit.models.utils import unpack_gt_instances
        gts, ignores, metas = unpack_gt_instances(self.samples)
        outs = [[t.requires_grad_() for t in level] for level in self.outs]
        model = self.model
        if self.name == 'retinanet':
            losses = model.bbox_head.loss_by_feat(*outs, gts, metas, ignores)
            sum(losses.values()).backward()
        else:
            head = model.rpn_head
            losses = head.loss_by_feat(*outs, gts, metas, ignores)
            sum(losses.values()).backward()
            cfg = model.train_cfg.get('rpn_proposal', model.test_cfg.rpn)
            proposals = head.predict_by_feat(
                *[[t.detach() for t in level] for level in outs],
                batch_img_metas=metas, cfg=cfg)
            roi = model.roi_head
            sampled = roi.sample(proposals, gts, ignores)
            if hasattr(sampled, 'roi_index'):  # the batched currency
                padded = roi.bbox_head.get_targets(
                    sampled.priors, sampled.gt_bboxes,
                    sampled.assign_result, sampled.pos_mask,
                    sampled.neg_mask, roi.train_cfg)
                img, cand = sampled.roi_index()
                rois = sampled.rois()
                _ = [padded[k][img, cand] for k in padded]
            else:
                from detkit.structures import bbox2roi
                rois = bbox2roi([res.priors for res in sampled])
                roi.bbox_head.get_targets(sampled, roi.train_cfg)
        for level in outs:
            for t in level:
                t.grad = None
        return {}

    def heads(self):
        feats = [f.requires_grad_() for f in self.feats]
        model = self.model
        if self.name == 'retinanet':
            losses = model.bbox_head.loss(feats, self.samples)
        else:
            cfg = model.train_cfg.get('rpn_proposal', model.test_cfg.rpn)
            losses, proposals = model.rpn_head.loss_and_predict(
                feats, self.samples, proposal_cfg=cfg)
            losses.update(model.roi_head.loss(feats, proposals,
                                              self.samples))
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        model.zero_grad()
        for f in feats:
            f.grad = None
        return {}


def worker(tree):
    """Answer ``{"model", "part"}`` requests on stdin with one JSON line
    (``seconds``, ``result``) each, until stdin closes."""
    import torch
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    jobs = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request['part'] == 'setup':
            torch.set_num_threads(request['threads'])
            jobs[request['model']] = Job(tree, request['model'], request)
            answer = dict(result={})
        elif request['part'] == 'outputs':
            answer = dict(result=behaviour_record(tree))
        else:
            job = jobs[request['model']]
            start, cpu = time.perf_counter(), time.process_time()
            result = getattr(job, request['part'])()
            answer = dict(seconds=time.perf_counter() - start,
                          cpu_seconds=time.process_time() - cpu,
                          result=result)
        print(json.dumps(answer), flush=True)


def behaviour_record(tree):
    """The behaviour record computed by this process's detkit from the
    configs of ``tree``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('behaviour', RECORD_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.REPO_ROOT = tree
    return module.record_all()


# -------------------------------------------------------------------- main
class Worker:

    def __init__(self, tree):
        env = dict(os.environ, PYTHONPATH=tree)
        self.tree = tree
        self.proc = subprocess.Popen(
            [sys.executable, __file__, '--worker', tree],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            cwd=tree, text=True)

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f'the worker of {self.tree} died; its error '
                             'is printed above')
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--old', help='the reference tree (e.g. a git '
                        'archive of an older commit)')
    parser.add_argument('--new', default=REPO_ROOT)
    parser.add_argument('--models', nargs='+', default=list(CONFIGS),
                        choices=list(CONFIGS))
    parser.add_argument('--parts', nargs='+', default=PARTS, choices=PARTS)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, nargs=2, default=(512, 512),
                        metavar=('H', 'W'))
    parser.add_argument('--full', action='store_true',
                        help='800 x 1333, the configs\' training size')
    parser.add_argument('--boxes', type=int, nargs=2, default=(5, 50),
                        metavar=('MIN', 'MAX'))
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--outputs', action='store_true',
                        help='compare the behaviour record instead')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--out')
    return parser.parse_args(argv)


def compare_outputs(old, new):
    a, b = old.ask(part='outputs')['result'], new.ask(
        part='outputs')['result']
    print(f'environment: old {a["environment"]}, new {b["environment"]}')
    same = True
    for name in a['cases']:
        equal = a['cases'][name] == b['cases'][name]
        same &= equal
        print(f'{name:<12} losses, gradient hashes and predictions '
              f'{"bitwise equal" if equal else "DIFFER"}')
    return dict(bitwise_equal=same)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if not args.old:
        raise SystemExit('--old TREE is required (e.g. git archive HEAD~5 '
                         '| tar -x -C /tmp/old)')
    if args.full:
        args.size = (800, 1333)
    threads = args.threads or os.cpu_count() or 1
    info = print_header('detkit: old tree vs new tree', args)
    trees = dict(old=osp.abspath(args.old), new=osp.abspath(args.new))
    print(f'old: {trees["old"]}\nnew: {trees["new"]}')
    workers = {key: Worker(tree) for key, tree in trees.items()}
    try:
        if args.outputs:
            summary = compare_outputs(workers['old'], workers['new'])
        else:
            summary = time_models(workers, args, threads)
    finally:
        for w in workers.values():
            w.close()
    save_json(args.out, dict(machine=info, trees=trees, **summary))


def time_models(workers, args, threads):
    print(f'batch {args.batch_size} x {tuple(args.size)}, boxes '
          f'{tuple(args.boxes)} per image, {threads} threads; '
          f'{args.warmup} warm-up + {args.repeats} timed rounds, '
          'alternating old / new and new / old')
    rows, equal = [], True
    for model in args.models:
        for w in workers.values():
            w.ask(part='setup', model=model, threads=threads,
                  batch_size=args.batch_size, size=list(args.size),
                  boxes=list(args.boxes))
        times = {(part, key, clock): []
                 for part in args.parts for key in workers
                 for clock in ('seconds', 'cpu_seconds')}
        for rnd in range(args.warmup + args.repeats):
            # old-new, then new-old: whoever runs second in a round
            # (after the other's data left the caches) changes each round
            order = list(workers) if rnd % 2 == 0 else list(workers)[::-1]
            for part in args.parts:
                answers = {key: workers[key].ask(part=part, model=model)
                           for key in order}
                if part == 'iteration':
                    equal &= answers['old']['result'] == \
                        answers['new']['result']
                if rnd >= args.warmup:
                    for key, answer in answers.items():
                        for clock in ('seconds', 'cpu_seconds'):
                            times[(part, key, clock)].append(answer[clock])
        for part in args.parts:
            for clock in ('seconds', 'cpu_seconds'):
                old = times[(part, 'old', clock)]
                new = times[(part, 'new', clock)]
                row = dict(model=model, part=part, clock=clock,
                           old_median_s=statistics.median(old),
                           new_median_s=statistics.median(new),
                           old_min_s=min(old), new_min_s=min(new),
                           old_max_s=max(old), new_max_s=max(new),
                           old=old, new=new)
                row['ratio'] = row['new_median_s'] / row['old_median_s']
                rows.append(row)
                label = 'wall' if clock == 'seconds' else 'cpu'
                print(f'{model:<12} {part:<9} {label:<4} old '
                      f'{row["old_median_s"]:7.3f} s [{row["old_min_s"]:.3f}'
                      f'..{row["old_max_s"]:.3f}]  new '
                      f'{row["new_median_s"]:7.3f} s [{row["new_min_s"]:.3f}'
                      f'..{row["new_max_s"]:.3f}]  new/old '
                      f'{row["ratio"]:.3f}')
    if 'iteration' in args.parts:
        print('losses of every iteration bitwise equal between the trees: '
              f'{"yes" if equal else "NO"}')
    return dict(rows=rows, losses_bitwise_equal=equal,
                batch_size=args.batch_size, size=list(args.size))


if __name__ == '__main__':
    main()
