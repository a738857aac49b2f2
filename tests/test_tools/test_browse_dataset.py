"""tools/analysis_tools/browse_dataset.py: samples after the pipeline."""
import json
import os.path as osp

import cv2
import numpy as np
import torch
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

from detkit.datasets import CocoDataset
from detkit.datasets.synthetic_shapes import SHAPES_CLASSES
from detkit.visualization import DetLocalVisualizer


def test_saves_resized_samples_with_their_boxes(tiny_setup, tmp_path):  # noqa
    out_dir = str(tmp_path / 'browse')
    saved = run_tool('tools', 'analysis_tools', 'browse_dataset.py')['main']([
        tiny_setup['cfg_file'], '--output-dir', out_dir, '--not-show',
        '--max-images', '2', '--cfg-options',
        'train_dataloader.dataset.pipeline.2.scale=(48,48)'
    ])
    assert [osp.basename(p) for p in saved] == ['train_000000.png',
                                                'train_000001.png']
    with open(osp.join(tiny_setup['data_root'], 'annotations',
                       'train.json')) as f:
        coco = json.load(f)
    visualizer = DetLocalVisualizer(name='expected_browse')
    visualizer.dataset_meta = dict(classes=SHAPES_CLASSES,
                                   palette=CocoDataset.METAINFO['palette'])
    for path, img in zip(saved, coco['images']):
        picture = cv2.imread(path)
        assert picture.shape == (48, 48, 3)
        # Expected independently: OpenCV's bilinear resize 64 -> 48 and
        # the annotated boxes scaled by 0.75, drawn by the visualizer.
        original = cv2.imread(osp.join(tiny_setup['img_dir'],
                                       img['file_name']))
        resized = cv2.resize(original, (48, 48),
                             interpolation=cv2.INTER_LINEAR)
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                              (a['bbox'] for a in anns)]) * 0.75
        labels = torch.tensor([a['category_id'] - 1 for a in anns])
        expected = visualizer.draw_instances(
            resized[..., ::-1], dict(bboxes=boxes, labels=labels),
            SHAPES_CLASSES)
        assert np.array_equal(picture[..., ::-1], expected)
        assert not np.array_equal(expected, resized[..., ::-1])  # drawn
