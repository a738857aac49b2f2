"""Read back what an HTML report page shows (html.parser only), and a
tiny hand-made test set whose numbers are worked out by hand in
test_report.py."""
import json
from html.parser import HTMLParser

import cv2
import mmengine
import numpy as np
import torch

CLASSES = ('A', 'B')


class _Page(HTMLParser):

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.sections, self.figures, self.scripts = [], [], [], []
        self.tables, self.notes = {}, []
        self._table = self._row = self._cell = None
        self._in_note = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ('src', 'href'):
            if key in attrs:
                self.links.append((tag, attrs[key]))
        if tag == 'script':
            self.scripts.append(attrs)
        if tag == 'section':
            self.sections.append(attrs.get('id'))
        if tag == 'figure':
            self.figures.append(attrs)
        if tag == 'table':
            self._table = self.tables.setdefault(attrs.get('id'), [])
        if tag == 'tr' and self._table is not None:
            self._row = []
            self._table.append(self._row)
        if tag in ('td', 'th') and self._row is not None:
            self._cell = dict(attrs, text='')
            self._row.append(self._cell)
        if tag == 'p' and attrs.get('class') == 'note':
            self._in_note = True
            self.notes.append('')

    def handle_endtag(self, tag):
        if tag == 'table':
            self._table = self._row = None
        if tag in ('td', 'th'):
            self._cell = None
        if tag == 'p':
            self._in_note = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell['text'] += data
        if self._in_note:
            self.notes[-1] += data


def parse_page(text):
    """``dict(links=[(tag, url)], sections=[id], figures=[attrs], tables=
    {id: rows of cell dicts (attributes + text)}, notes=[text], scripts)``
    of a page."""
    page = _Page()
    page.feed(text)
    page.close()
    return dict(links=page.links, sections=page.sections,
                figures=page.figures, tables=page.tables, notes=page.notes,
                scripts=page.scripts)


def table_values(rows, key='data-value'):
    """``{first cell's text: [float of each other cell's key]}`` of the body
    rows (those whose cells carry ``key``)."""
    out = {}
    for row in rows:
        cells = [c for c in row if key in c]
        if not cells or len(cells) < len(row) - 2:
            continue
        values = []
        for c in row[1:]:
            raw = c.get(key, '')
            values.append(float(raw) if raw not in ('', None) else None)
        out[row[0]['text']] = values
    return out


def metric_values(page):
    """``{key: value}`` of the metrics table (None where it shows a dash:
    COCO's -1, nothing to measure)."""
    rows = page['tables']['metrics-table'][1:]
    return {row[0]['text']: float(row[2]['data-value'])
            if row[2]['data-value'] else None for row in rows}


def _xyxy_ann(i, img, cat, box):
    x1, y1, x2, y2 = box
    return dict(id=i, image_id=img, category_id=cat,
                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                iscrowd=0)


# Ground truth (xyxy, class index) per image id.
GTS = {
    1: [([0, 0, 10, 10], 0), ([20, 0, 30, 10], 0), ([40, 0, 50, 10], 1),
        ([60, 0, 70, 10], 0)],
    2: [([10, 10, 30, 30], 1)],
    3: [([5, 5, 25, 25], 0)],
}
# Predictions (xyxy, score, class index) per image id.
PREDS = {
    1: [([0, 0, 10, 10], .9, 0), ([22, 0, 32, 10], .8, 0),
        ([40, 0, 50, 10], .7, 0), ([100, 30, 110, 40], .6, 0),
        ([60, 0, 70, 30], .5, 0), ([40, 0, 50, 10], .9, 1)],
    2: [([10, 10, 30, 30], .95, 1)],
    3: [],
}
SIZES = {1: (120, 40), 2: (40, 40), 3: (40, 40)}


def write_hand_made(root, evaluator='coco'):
    """Images, annotation file, results file and config of the hand-made
    test set under ``root``; returns ``(config path, results path)``."""
    img_dir = root / 'images'
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for img_id, (w, h) in SIZES.items():
        name = f'img{img_id}.png'
        cv2.imwrite(str(img_dir / name),
                    rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append(dict(id=img_id, file_name=name, width=w, height=h))
    anns = []
    for img_id, gts in GTS.items():
        for box, label in gts:
            anns.append(_xyxy_ann(len(anns) + 1, img_id, label + 1, box))
    coco = dict(images=images, annotations=anns,
                categories=[dict(id=i + 1, name=n)
                            for i, n in enumerate(CLASSES)])
    ann_file = root / 'ann.json'
    ann_file.write_text(json.dumps(coco))
    results = []
    for img_id, preds in PREDS.items():
        gt = GTS[img_id]
        results.append(dict(
            img_id=img_id, img_path=str(img_dir / f'img{img_id}.png'),
            ori_shape=SIZES[img_id][::-1],
            pred_instances=dict(
                bboxes=torch.tensor([p[0] for p in preds],
                                    dtype=torch.float32).reshape(-1, 4),
                scores=torch.tensor([p[1] for p in preds]),
                labels=torch.tensor([p[2] for p in preds],
                                    dtype=torch.int64)),
            # what tools/test.py --out also holds (VOCMetric reads it)
            gt_instances=dict(
                bboxes=torch.tensor([g[0] for g in gt],
                                    dtype=torch.float32).reshape(-1, 4),
                labels=torch.tensor([g[1] for g in gt], dtype=torch.int64)),
            ignored_instances=dict(bboxes=torch.zeros(0, 4),
                                   labels=torch.zeros(0, dtype=torch.int64))))
    pkl = root / 'results.pkl'
    mmengine.dump(results, str(pkl))
    if evaluator == 'coco':
        metric = dict(type='CocoMetric', ann_file=str(ann_file), metric='bbox')
    else:
        metric = dict(type='VOCMetric', metric='mAP', eval_mode='11points')
    cfg = dict(
        default_scope='detkit',
        test_dataloader=dict(batch_size=1, dataset=dict(
            type='CocoDataset', data_root=str(root) + '/',
            ann_file='ann.json', data_prefix=dict(img='images/'),
            metainfo=dict(classes=CLASSES), test_mode=True, pipeline=[])),
        test_evaluator=metric)
    cfg_file = root / f'hand_{evaluator}.py'
    mmengine.Config(cfg).dump(str(cfg_file))
    return str(cfg_file), str(pkl)
