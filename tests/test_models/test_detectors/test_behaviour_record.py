"""Losses, gradients and predictions of RetinaNet, SSD300, RPN and Faster
R-CNN, compared with a record taken before the target-pipeline refactor.

Each detector is its real config with small widths (ResNet-18 instead of
50, 32-channel FPN, few classes; SSD300 keeps its VGG16 and 300x300 input),
random weights from a fixed seed and fixed inputs: images of different
sizes (so their ``pad_shape`` and valid anchors differ), one image without
ground truth, and an ignored box with ``ignore_iof_thr=0.5`` so that the
ignore path runs. For every detector the record holds each loss term, the
gradient of their sum (a SHA-256 of every parameter's gradient bytes and
the gradient norm per top-level module) and ``predict()``'s boxes, scores
and labels (``rescale=True``).

``behaviour_record.json`` was written by the code before the refactor:

    PYTHONPATH=<old tree> python tests/test_models/test_detectors/\
test_behaviour_record.py --write behaviour_record.json

(run from the old tree's root). Float32 convolutions can round differently
on another CPU instruction set or torch build, so the comparison is
bitwise only where torch's version and
``torch.backends.cpu.get_cpu_capability()`` equal the recorded ones (the
thread count is fixed to 2 here); elsewhere it allows a relative 1e-4 on
losses and gradient norms and 1e-3 px / 1e-4 on boxes / scores, and says
so in the failure message.
"""
import hashlib
import json
import logging
import os.path as osp
import sys

import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(HERE)))
RECORD = osp.join(HERE, 'behaviour_record.json')
THREADS = 2
MAX_DETS = 20  # detections kept per image, to keep the record small


# ------------------------------------------------------------------ models
def _small_resnet_fpn(model):
    """ResNet-18 (frozen stem + stage 1, norm_eval, as configured) and a
    32-channel FPN in place of ResNet-50 / 256 channels."""
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)


def _config(rel_path):
    from mmengine.config import Config
    return Config.fromfile(osp.join(REPO_ROOT, 'configs', rel_path)).model


def retinanet_cfg():
    model = _config('retinanet/retinanet_r50_fpn_1x_coco.py')
    _small_resnet_fpn(model)
    model.bbox_head.update(num_classes=5, in_channels=32, feat_channels=32,
                           stacked_convs=2)
    model.train_cfg.assigner.ignore_iof_thr = 0.5
    # Random weights score every class about 0.01.
    model.test_cfg.update(score_thr=0.005, max_per_img=MAX_DETS)
    return model


def ssd300_cfg():
    model = _config('ssd/ssd300_coco.py')
    model.backbone.init_cfg = None
    model.bbox_head.num_classes = 4
    model.train_cfg.assigner.ignore_iof_thr = 0.5
    model.test_cfg.max_per_img = MAX_DETS
    return model


def rpn_cfg():
    model = _config('rpn/rpn_r50_fpn_1x_coco.py')
    _small_resnet_fpn(model)
    model.rpn_head.update(in_channels=32, feat_channels=32)
    model.train_cfg.rpn.assigner.ignore_iof_thr = 0.5
    # Anchors crossing the image border take no part (the
    # allowed_border >= 0 path; the shipped configs use -1).
    model.train_cfg.rpn.allowed_border = 0
    model.test_cfg.rpn.max_per_img = MAX_DETS
    return model


def faster_rcnn_cfg():
    model = _config('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    _small_resnet_fpn(model)
    model.rpn_head.update(in_channels=32, feat_channels=32)
    model.roi_head.bbox_roi_extractor.out_channels = 32
    model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64,
                                    num_classes=5)
    model.train_cfg.rpn.assigner.ignore_iof_thr = 0.5
    model.train_cfg.rcnn.assigner.ignore_iof_thr = 0.5
    model.test_cfg.rcnn.max_per_img = MAX_DETS
    return model


# ------------------------------------------------------------------ inputs
def _sample(img_id, shape, ori_shape, boxes, labels, ignored=()):
    from mmengine.structures import InstanceData

    from detkit.structures import DetDataSample
    h, w = shape
    sample = DetDataSample(metainfo=dict(
        img_id=img_id, img_shape=shape, ori_shape=ori_shape,
        scale_factor=(w / ori_shape[1], h / ori_shape[0])))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    sample.ignored_instances = InstanceData(
        bboxes=torch.tensor(ignored, dtype=torch.float32).reshape(-1, 4),
        labels=torch.zeros(len(ignored), dtype=torch.long))
    return sample


def fpn_batch():
    """Three images: boxes + an ignored box, no ground truth, one box."""
    samples = [
        _sample(0, (120, 150), (240, 300),
                [[10., 12., 60., 70.], [50., 20., 140., 110.],
                 [5., 80., 40., 115.], [70., 60., 100., 90.]],
                [0, 3, 1, 4], ignored=[[100., 2., 148., 40.]]),
        _sample(1, (96, 128), (96, 128), [], []),
        _sample(2, (128, 100), (160, 125), [[20., 30., 90., 120.]], [2]),
    ]
    return _with_images(samples)


def ssd_batch():
    samples = [
        _sample(0, (300, 300), (400, 500),
                [[30., 40., 200., 220.], [150., 20., 290., 120.],
                 [10., 200., 80., 290.]], [0, 2, 3],
                ignored=[[220., 180., 298., 298.]]),
        _sample(1, (300, 300), (300, 300), [], []),
    ]
    return _with_images(samples)


def _with_images(samples):
    gen = torch.Generator().manual_seed(1234)
    inputs = [
        torch.randint(0, 256, (3, *s.metainfo['img_shape']),
                      dtype=torch.uint8, generator=gen) for s in samples
    ]
    return dict(inputs=inputs, data_samples=samples)


def first_image(batch_fn):
    """Predict on the first image only (SSD's VGG16 is the slow part)."""

    def batch():
        data = batch_fn()
        return {key: value[:1] for key, value in data.items()}

    return batch


# name: (model config, training batch, prediction batch)
CASES = dict(
    retinanet=(retinanet_cfg, fpn_batch, fpn_batch),
    ssd300=(ssd300_cfg, ssd_batch, first_image(ssd_batch)),
    rpn=(rpn_cfg, fpn_batch, fpn_batch),
    faster_rcnn=(faster_rcnn_cfg, fpn_batch, fpn_batch),
)


# --------------------------------------------------------------- recording
def _hex(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach()
    return float(value).hex()


def _sha(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def run_case(name) -> dict:
    """Losses, gradient summary and predictions of one detector."""
    from mmengine.registry import DefaultScope

    from detkit.registry import MODELS
    cfg_fn, batch_fn, predict_batch_fn = CASES[name]
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg_fn())
    model.init_weights()
    model.train()
    data = model.data_preprocessor(batch_fn(), True)
    torch.manual_seed(1)  # the random samplers' draws
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    grads = {}
    for module_name, module in model.named_children():
        if module_name == 'data_preprocessor':
            continue
        params = [p.grad for p in module.parameters() if p.grad is not None]
        if not params:
            continue
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in params]))
        grads[module_name] = dict(sha256=_sha(params), norm=_hex(norm),
                                  num=len(params))

    model.eval()
    data = model.data_preprocessor(predict_batch_fn(), False)
    with torch.no_grad():
        results = model(**data, mode='predict')
    preds = []
    for sample in results:
        pred = sample.pred_instances
        preds.append(
            dict(bboxes=[_hex(v) for v in pred.bboxes.reshape(-1).tolist()],
                 scores=[_hex(v) for v in pred.scores.tolist()],
                 labels=pred.labels.tolist()))
    return dict(losses={k: _hex(v) for k, v in sorted(losses.items())},
                grads=grads, predictions=preds)


def environment() -> dict:
    return dict(torch=torch.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                threads=THREADS)


def record_all() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return dict(environment=environment(),
                    cases={name: run_case(name) for name in CASES})
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------- compare
def _floats(values):
    return torch.tensor([float.fromhex(v) for v in values],
                        dtype=torch.float64)


def compare_case(name, got, want, bitwise) -> list:
    """Differences between two records of one detector, as messages."""
    problems = []
    if sorted(got['losses']) != sorted(want['losses']):
        return [f'{name}: loss keys {sorted(got["losses"])} != recorded '
                f'{sorted(want["losses"])}']
    for key, value in want['losses'].items():
        a, b = float.fromhex(got['losses'][key]), float.fromhex(value)
        same = a == b if bitwise else abs(a - b) <= 1e-4 * max(abs(b), 1e-6)
        if not same:
            problems.append(f'{name}: {key} = {a!r}, recorded {b!r}')
    for module, summary in want['grads'].items():
        mine = got['grads'].get(module)
        if mine is None:
            problems.append(f'{name}: no gradient in {module}')
            continue
        if bitwise and mine['sha256'] != summary['sha256']:
            problems.append(
                f'{name}: gradients of {module} differ (norm '
                f'{float.fromhex(mine["norm"])!r}, recorded '
                f'{float.fromhex(summary["norm"])!r})')
        a, b = float.fromhex(mine['norm']), float.fromhex(summary['norm'])
        if not bitwise and abs(a - b) > 1e-4 * max(abs(b), 1e-6):
            problems.append(f'{name}: gradient norm of {module} {a!r}, '
                            f'recorded {b!r}')
    for i, (mine, ref) in enumerate(zip(got['predictions'],
                                        want['predictions'])):
        if len(mine['labels']) != len(ref['labels']):
            problems.append(f'{name}: image {i} has {len(mine["labels"])} '
                            f'detections, recorded {len(ref["labels"])}')
            continue
        if bitwise:
            for key in ('bboxes', 'scores', 'labels'):
                if mine[key] != ref[key]:
                    problems.append(f'{name}: image {i} {key} differ')
            continue
        if mine['labels'] != ref['labels']:
            problems.append(f'{name}: image {i} labels differ')
        if not torch.allclose(_floats(mine['bboxes']), _floats(ref['bboxes']),
                              rtol=0, atol=1e-3):
            problems.append(f'{name}: image {i} boxes differ by > 1e-3 px')
        if not torch.allclose(_floats(mine['scores']), _floats(ref['scores']),
                              rtol=1e-4, atol=0):
            problems.append(f'{name}: image {i} scores differ by > 1e-4')
    return problems


def test_losses_gradients_and_predictions_equal_the_record():
    with open(RECORD) as f:
        want = json.load(f)
    got = record_all()
    bitwise = got['environment'] == want['environment']
    problems = []
    for name in CASES:
        problems += compare_case(name, got['cases'][name],
                                 want['cases'][name], bitwise)
    mode = ('bitwise (same torch, CPU capability and threads as the '
            'record)' if bitwise else
            f'with tolerances: this machine is {got["environment"]}, the '
            f'record was taken on {want["environment"]}')
    assert not problems, f'compared {mode}:\n' + '\n'.join(problems)


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] != '--write':
        raise SystemExit(f'usage: {sys.argv[0]} --write OUT.json')
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    with open(sys.argv[2], 'w') as f:
        json.dump(record_all(), f, indent=1, sort_keys=True)
        f.write('\n')
