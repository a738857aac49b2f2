"""The docs/ folder: every page exists, every citation of a page (and of a
heading in it) resolves, nothing cites a document outside the repository,
and the worked examples in the pages are what detkit computes.
"""
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from detkit.registry import MODELS, TASK_UTILS, TRANSFORMS

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = osp.join(REPO_ROOT, 'docs')

# The fixed map that code comments point into.
PAGES = ('README.md', 'data_pipeline.md', 'anchors.md', 'assignment.md',
         'sampling.md', 'box_coders.md', 'losses.md', 'anchor_head.md',
         'dense_prediction.md', 'ssd.md', 'rpn.md', 'faster_rcnn.md',
         'detectors.md', 'fcos.md', 'atss.md')

# Where citations of docs pages may appear.
SCANNED = ('detkit', 'tests', 'tools', 'benchmarks', 'configs', 'docs',
           'README.md')
SKIP_DIRS = {'__pycache__', '.git', '.venv', 'detkit.egg-info'}
TEXT_SUFFIXES = ('.py', '.md', '.sh', '.txt', '.yml', '.yaml', '.cfg',
                 '.toml', '.ini', '.json')

# Built from two parts so that this file does not match itself.
OUTSIDE_DOC = 'MMDET_' + 'SEMANTICS'

CITATION = re.compile(r'docs/([A-Za-z0-9_.\-]+\.md)(#[A-Za-z0-9_\-]+)?')
MD_LINK = re.compile(r'\]\(([^)\s]+)\)')


def _text_files():
    for entry in SCANNED:
        path = osp.join(REPO_ROOT, entry)
        if osp.isfile(path):
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for name in files:
                if name.endswith(TEXT_SUFFIXES):
                    yield osp.join(root, name)


def _read(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read()


def _slug(heading):
    """GitHub's anchor of a markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def _anchors(page):
    """Anchors of the headings of ``docs/page`` (outside code blocks)."""
    anchors, in_code = set(), False
    for line in _read(osp.join(DOCS, page)).splitlines():
        if line.startswith('```'):
            in_code = not in_code
        elif not in_code and line.startswith('#'):
            anchors.add(_slug(line.lstrip('#')))
    return anchors


def _doc(page):
    return _read(osp.join(DOCS, page))


def _rel(path):
    return osp.relpath(path, REPO_ROOT)


# ---------------------------------------------------------------- pages
@pytest.mark.parametrize('page', PAGES)
def test_page_exists_with_title_and_intro(page):
    path = osp.join(DOCS, page)
    assert osp.isfile(path), f'docs/{page} is missing'
    lines = _read(path).splitlines()
    assert lines and lines[0].startswith('# '), \
        f'docs/{page} must start with a "# " title'
    intro = [ln for ln in lines[1:12] if ln and not ln.startswith('*')]
    assert len(' '.join(intro)) >= 200, \
        f'docs/{page} needs an opening paragraph on what it covers'
    assert 'How detkit computes it' in _doc(page) or page == 'README.md', \
        f'docs/{page} has no "How detkit computes it" section'


def test_every_cited_page_and_heading_exists():
    missing = []
    for path in _text_files():
        for match in CITATION.finditer(_read(path)):
            page, anchor = match.group(1), match.group(2)
            if not osp.isfile(osp.join(DOCS, page)):
                missing.append(f'{_rel(path)}: docs/{page}')
            elif anchor and anchor[1:] not in _anchors(page):
                missing.append(f'{_rel(path)}: docs/{page}{anchor} '
                               '(no such heading)')
    assert not missing, 'citations of missing docs:\n' + '\n'.join(
        sorted(set(missing)))


def test_links_between_pages_resolve():
    broken = []
    for page in os.listdir(DOCS):
        if not page.endswith('.md'):
            continue
        for target in MD_LINK.findall(_doc(page)):
            if '://' in target:
                continue
            name, _, anchor = target.partition('#')
            name = name or page
            if not osp.isfile(osp.join(DOCS, name)):
                broken.append(f'docs/{page}: {target}')
            elif anchor and anchor not in _anchors(name):
                broken.append(f'docs/{page}: {target} (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_nothing_cites_a_document_outside_the_repository():
    citing = [
        _rel(path) for path in _text_files()
        if OUTSIDE_DOC in _read(path)
    ]
    assert not citing, (
        f'these files cite {OUTSIDE_DOC}, which is not part of the '
        'repository; point them into docs/ instead:\n' + '\n'.join(citing))


def test_docs_do_not_depend_on_the_shared_folder():
    uses = [page for page in os.listdir(DOCS)
            if page.endswith('.md') and '../shared' in _doc(page)]
    assert not uses, f'docs pages that refer to ../shared: {uses}'


# ------------------------------------------------ worked examples = code
def test_ssd_anchor_counts_of_anchors_page():
    cases = [
        (dict(strides=[8, 16, 32, 64, 100, 300],
              ratios=([2], [2, 3], [2, 3], [2, 3], [2], [2]),
              basesize_ratio_range=(0.15, 0.9), input_size=300),
         [38, 19, 10, 5, 3, 1], 8732),
        (dict(strides=[8, 16, 32, 64, 128, 256, 512],
              ratios=([2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]),
              basesize_ratio_range=(0.1, 0.9), input_size=512),
         [64, 32, 16, 8, 4, 2, 1], 24564),
        (dict(strides=[16, 32, 64, 107, 160, 320], ratios=[[2, 3]] * 6,
              min_sizes=[48, 100, 150, 202, 253, 304],
              max_sizes=[100, 150, 202, 253, 304, 320]),
         [20, 10, 5, 3, 2, 1], 3234),
    ]
    page = _doc('anchors.md')
    for kwargs, sizes, total in cases:
        gen = TASK_UTILS.build(
            dict(type='SSDAnchorGenerator', scale_major=False, **kwargs))
        priors = gen.grid_priors([(s, s) for s in sizes])
        assert sum(len(p) for p in priors) == total
        assert f'**{total}**' in page
    ssd300 = TASK_UTILS.build(dict(type='SSDAnchorGenerator',
                                   scale_major=False, **cases[0][0]))
    assert ssd300.min_sizes == [21, 45, 99, 153, 207, 261]
    assert ssd300.max_sizes == [45, 99, 153, 207, 261, 315]
    torch.testing.assert_close(
        ssd300.base_anchors[0][2],
        torch.tensor([-10.8492, -3.4246, 18.8492, 11.4246]), atol=1e-4,
        rtol=0)
    assert '[-10.8492, -3.4246,  18.8492, 11.4246]' in page


def test_retinanet_anchors_of_anchors_page():
    gen = TASK_UTILS.build(
        dict(type='AnchorGenerator', octave_base_scale=4,
             scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
             strides=[8, 16, 32, 64, 128]))
    page = _doc('anchors.md')
    torch.testing.assert_close(
        gen.base_anchors[0][[0, 3, 8]],
        torch.tensor([[-22.6274, -11.3137, 22.6274, 11.3137],
                      [-16., -16., 16., 16.],
                      [-17.9594, -35.9188, 17.9594, 35.9188]]),
        atol=1e-4, rtol=0)
    level0 = gen.grid_priors([(2, 3)] + [(1, 1)] * 4)[0]
    torch.testing.assert_close(
        level0[9], torch.tensor([-14.6274, -11.3137, 30.6274, 11.3137]),
        atol=1e-4, rtol=0)
    assert '`[-14.6274, -11.3137, 30.6274, 11.3137]`' in page
    sizes = [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    assert sum(len(p) for p in gen.grid_priors(sizes)) == 19206
    assert '= 19206' in page
    flags = gen.valid_flags([(100, 136), (50, 68), (25, 34), (13, 17),
                             (7, 9)], (800, 1024))
    assert int(flags[0].sum()) // 9 == 12800 and int(flags[4].sum()) // 9 == 56
    assert '12800 of the 13600' in page and '56 of the 63' in page


def test_resize_example_of_data_pipeline_page():
    resize = TRANSFORMS.build(
        dict(type='Resize', scale=(1333, 800), keep_ratio=True))
    results = resize.transform(
        dict(img=np.zeros((480, 640, 3), np.uint8),
             gt_bboxes=np.array([[600, 100, 700, 300]], np.float32)))
    assert results['img_shape'] == (800, 1067)
    assert results['scale_factor'][0] == 1.6671875
    np.testing.assert_allclose(results['gt_bboxes'][0],
                               [1000.3125, 166.66666, 1067, 500], rtol=1e-6)
    page = _doc('data_pipeline.md')
    assert '| 640 x 480 | min(2.0828, 1.6667) = 1.6667 | 1067 x 800 |' in page
    assert '`[1000.3125, 166.66666, 1067, 500]`' in page


def test_assignment_example_of_assignment_page():
    # The page's IoU table, fed through the assigner's overlap function.
    table = torch.tensor([[0.6, 0.45, 0.1, 0.0], [0.55, 0.2, 0.3, 0.0]])

    def overlaps(boxes1, boxes2, mode='iou', is_aligned=False):
        # (..., 2 gts, 4 priors) or, called the other way round, (..., 4, 2)
        rows = table if boxes1.size(-2) == 2 else table.t()
        lead = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
        return rows.expand(*lead, *rows.shape).clone()

    def run(**kwargs):
        assigner = TASK_UTILS.build(dict(type='MaxIoUAssigner', **kwargs))
        assigner.iou_calculator = overlaps
        result = assigner.assign(
            InstanceData(priors=torch.zeros(4, 4)),
            InstanceData(bboxes=torch.zeros(2, 4),
                         labels=torch.tensor([3, 7])))
        return result.gt_inds.tolist(), result.labels.tolist()

    assert run(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0) == (
        [2, -1, 0, 0], [7, -1, -1, -1])
    assert run(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
               match_low_quality=False)[0] == [1, 0, 0, 0]
    page = _doc('assignment.md')
    assert '`gt_inds = [2, -1, 0, 0]`, `labels = [7, -1, -1, -1]`' in page
    assert '`gt_inds = [1, 0, 0, 0]`' in page


def test_level_mapping_of_faster_rcnn_page():
    extractor = MODELS.build(
        dict(type='SingleRoIExtractor',
             roi_layer=dict(type='RoIAlign', output_size=7,
                            sampling_ratio=0),
             out_channels=1, featmap_strides=[4, 8, 16, 32]))
    # Level l holds the constant l + 1, so a pooled RoI reveals its level.
    feats = [torch.full((1, 1, 1024 // s, 1024 // s), float(i + 1))
             for i, s in enumerate([4, 8, 16, 32])]
    sizes = {(32, 32): 2, (111, 112): 2, (112, 112): 3, (100, 150): 3,
             (224, 224): 4, (300, 300): 4, (448, 448): 5, (1000, 1000): 5}
    rois = torch.tensor([[0., 0., 0., w, h] for w, h in sizes])
    pooled = extractor(feats, rois).mean(dim=(1, 2, 3))
    levels = [round(float(v)) + 1 for v in pooled]
    assert levels == list(sizes.values())
    page = _doc('faster_rcnn.md')
    for row in ('| below 112 | P2 | 4 |', '| 112 to below 224 | P3 | 8 |',
                '| 224 to below 448 | P4 | 16 |',
                '| 448 and above | P5 | 32 |'):
        assert row in page


def test_loss_values_of_losses_page():
    focal = MODELS.build(dict(type='FocalLoss', gamma=2.0, alpha=0.25))
    zero = focal(torch.zeros(1, 2), torch.tensor([0]),
                 reduction_override='none')
    init = focal(torch.full((1, 2), -4.59512), torch.tensor([0]),
                 reduction_override='none')
    torch.testing.assert_close(zero, torch.tensor([[0.0433217, 0.1299651]]))
    torch.testing.assert_close(init[0, 0], torch.tensor(1.1283818))
    a = torch.tensor([[0., 0., 10., 10.]])
    b = torch.tensor([[5., 5., 15., 15.]])
    giou = MODELS.build(dict(type='GIoULoss'))(a, b)
    iou = MODELS.build(dict(type='IoULoss'))(a, b)
    torch.testing.assert_close(giou, torch.tensor(1.079365))
    torch.testing.assert_close(iou, torch.tensor(1.945910))
    page = _doc('losses.md')
    for number in ('0.0433217', '0.1299651', '1.1283818', '1.079365',
                   '1.945910'):
        assert number in page
    # avg_factor + eps: exact from 2 on, one float32 step below at 1.
    l1 = MODELS.build(dict(type='L1Loss'))
    pred, target = torch.full((1, 3), 1.), torch.zeros(1, 3)
    assert l1(pred, target, avg_factor=2).item() == 1.5
    assert l1(pred, target, avg_factor=1).item() == pytest.approx(
        2.9999998, abs=1e-7)
    assert '`3 / (1 + eps)` is `2.9999998`' in page


def test_delta_example_of_box_coders_page():
    coder = TASK_UTILS.build(
        dict(type='DeltaXYWHBBoxCoder', target_stds=(0.1, 0.1, 0.2, 0.2)))
    prior = torch.tensor([[0., 0., 10., 10.]])
    gt = torch.tensor([[2., 2., 12., 14.]])
    deltas = coder.encode(prior, gt)
    torch.testing.assert_close(deltas,
                               torch.tensor([[2., 3., 0., 0.9116080]]))
    torch.testing.assert_close(coder.decode(prior, deltas), gt)
    plain = TASK_UTILS.build(dict(type='DeltaXYWHBBoxCoder'))
    clamped = plain.decode(prior, torch.tensor([[0.5, 0., 5., -5.]]))
    torch.testing.assert_close(
        clamped, torch.tensor([[-302.5, 4.92, 322.5, 5.08]]))
    page = _doc('box_coders.md')
    assert 'the target is `(2, 3, 0, 0.91161)`' in page
    assert '`[-302.5, 4.92, 322.5, 5.08]`' in page
