"""The batch currency of the target programs (detkit/models/utils.py):
padding, the shared target rule, and the distributed mean."""
import math

import torch
from mmengine.structures import InstanceData

from detkit.models.task_modules.assigners import AssignResult
from detkit.models.task_modules.coders import DeltaXYWHBBoxCoder
from detkit.models.utils import (pad_boxes, pad_gts, pad_instances,
                                 reduce_mean, sampled_targets)


def gt(boxes, labels):
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))


def test_pad_instances_keeps_each_image_s_rows_in_order():
    batch = [gt([[0, 0, 2, 2], [1, 1, 3, 4]], [3, 1]), None,
             gt([[5, 5, 6, 7]], [0])]
    bboxes, labels, valid = pad_instances(batch, 'cpu')
    assert bboxes.shape == (3, 2, 4) and bboxes.dtype == torch.float32
    assert bboxes[0].tolist() == [[0, 0, 2, 2], [1, 1, 3, 4]]
    assert bboxes[1].abs().sum() == 0
    assert bboxes[2].tolist() == [[5, 5, 6, 7], [0, 0, 0, 0]]
    assert labels.tolist() == [[3, 1], [-1, -1], [0, -1]]
    assert valid.tolist() == [[True, True], [False, False], [True, False]]
    _, no_labels, _ = pad_instances(batch, 'cpu', with_labels=False)
    assert (no_labels == -1).all()
    # no box anywhere: G = 0
    bboxes, labels, valid = pad_instances([None, gt([], [])], 'cpu')
    assert bboxes.shape == (2, 0, 4) and valid.shape == (2, 0)
    padded, mask = pad_boxes([torch.ones(3, 4), torch.zeros(0, 4)], 'cpu')
    assert padded.shape == (2, 3, 4) and mask.sum(1).tolist() == [3, 0]


def test_pad_gts_pads_ignores_only_when_an_image_has_one():
    gts = [gt([[0, 0, 2, 2]], [1]), gt([], [])]
    plain = pad_gts(gts, [None, gt([], [])], 'cpu')
    assert plain.ignore_bboxes is None and plain.ignore_valid is None
    ignored = pad_gts(gts, [None, gt([[1, 1, 5, 5], [2, 2, 3, 3]], [0, 0])],
                      'cpu')
    assert ignored.ignore_bboxes.shape == (2, 2, 4)
    assert ignored.ignore_valid.tolist() == [[False, False], [True, True]]
    assert ignored.labels.tolist() == [[1], [-1]]


def targets_of(class_agnostic=False, reg_decoded_bbox=False, pos_weight=-1,
               per_image_priors=False):
    priors = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 20.],
                           [5., 5., 15., 15.]])
    if per_image_priors:
        priors = torch.stack([priors, priors + 100])
    gt_bboxes = torch.tensor([[[0., 0., 10., 12.], [0., 0., 0., 0.]],
                              [[100., 100., 120., 120.],
                               [5., 5., 25., 25.]]])
    # image 0: prior 0 -> GT 0 (label 4), prior 1 negative, prior 2 ignored;
    # image 1: prior 1 -> GT 1 (label 2), prior 0 negative.
    gt_inds = torch.tensor([[1, 0, -1], [0, 2, -1]])
    labels = torch.tensor([[4, -1, -1], [-1, 2, -1]])
    assign = AssignResult(torch.tensor([1, 2]), gt_inds,
                          torch.zeros(2, 3), labels)
    return sampled_targets(
        priors, gt_bboxes, assign, gt_inds > 0, gt_inds == 0, num_classes=5,
        bbox_coder=DeltaXYWHBBoxCoder(), reg_decoded_bbox=reg_decoded_bbox,
        pos_weight=pos_weight, class_agnostic=class_agnostic), gt_bboxes


def test_sampled_targets_label_weights_and_deltas():
    targets, _ = targets_of()
    assert targets['labels'].tolist() == [[4, 5, 5], [5, 2, 5]]
    assert targets['label_weights'].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert targets['bbox_weights'].sum(-1).tolist() == [[4, 0, 0], [0, 4, 0]]
    # (0,0,10,10) -> (0,0,10,12): dy = (6 - 5) / 10, dh = ln(1.2)
    torch.testing.assert_close(targets['bbox_targets'][0, 0],
                               torch.tensor([0., 0.1, 0., math.log(1.2)]))
    # (0,0,20,20) -> (5,5,25,25): a shift by a quarter of the size
    torch.testing.assert_close(targets['bbox_targets'][1, 1],
                               torch.tensor([0.25, 0.25, 0., 0.]))
    assert targets['bbox_targets'][0, 1:].abs().sum() == 0


def test_sampled_targets_options():
    agnostic, _ = targets_of(class_agnostic=True)
    assert agnostic['labels'].tolist() == [[0, 5, 5], [5, 0, 5]]
    weighted, _ = targets_of(pos_weight=3.)
    assert weighted['label_weights'].tolist() == [[3, 1, 0], [1, 3, 0]]
    decoded, gt_bboxes = targets_of(reg_decoded_bbox=True)
    assert decoded['bbox_targets'][0, 0].tolist() == gt_bboxes[0, 0].tolist()
    assert decoded['bbox_targets'][1, 1].tolist() == gt_bboxes[1, 1].tolist()
    # (B, N, 4) priors (the RoI stage) give the same rule per image:
    # image 1's priors moved by 100 make prior 1 (100,100,120,120) equal
    # to its GT 1 shifted, i.e. a different delta than above
    per_image, _ = targets_of(per_image_priors=True)
    assert per_image['labels'].tolist() == [[4, 5, 5], [5, 2, 5]]
    torch.testing.assert_close(
        per_image['bbox_targets'][1, 1],
        DeltaXYWHBBoxCoder().encode(torch.tensor([100., 100., 120., 120.]),
                                    torch.tensor([5., 5., 25., 25.])))


def _reduce_mean_worker(rank, port, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    try:
        value = torch.tensor([float(rank + 1), 10. * rank])
        mean = reduce_mean(value)
        with open(f'{out_dir}/{rank}.txt', 'w') as f:
            f.write(' '.join(str(v) for v in mean.tolist() + value.tolist()))
    finally:
        dist.destroy_process_group()


def test_reduce_mean_is_the_mean_over_ranks(tmp_path):
    value = torch.tensor(7.)
    assert reduce_mean(value) is value  # not distributed: the value itself
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    mp.spawn(_reduce_mean_worker, args=(port, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = [float(v) for v in (tmp_path / f'{rank}.txt').read_text(
        ).split()]
        # mean of (1, 0) and (2, 10) on every rank; the inputs untouched
        assert got[:2] == [1.5, 5.0]
        assert got[2:] == [rank + 1., 10. * rank]
