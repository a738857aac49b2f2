"""Box operations of detkit.structures.bbox with hand-computed values."""
import pytest
import torch

from detkit.structures import (bbox2roi, bbox_areas, bbox_clip,
                               bbox_cxcywh_to_xyxy, bbox_flip, bbox_overlaps,
                               bbox_rescale, bbox_xyxy_to_cxcywh,
                               empty_box_as)

A = torch.tensor([[0., 0., 10., 10.], [0., 0., 4., 2.]])
B = torch.tensor([[5., 5., 15., 15.], [0., 0., 10., 5.], [20., 20., 30.,
                                                          30.]])


def test_iou_matrix_values():
    iou = bbox_overlaps(A, B)
    expected = torch.tensor([
        [25 / 175, 50 / 100, 0.],
        [0., 8 / 50, 0.],
    ])
    torch.testing.assert_close(iou, expected)
    assert iou.shape == (2, 3)


def test_iof_is_over_first_box_area():
    iof = bbox_overlaps(A, B, mode='iof')
    torch.testing.assert_close(
        iof, torch.tensor([[25 / 100, 50 / 100, 0.], [0., 1., 0.]]))
    with pytest.raises(ValueError, match='mode'):
        bbox_overlaps(A, B, mode='giou')


def test_aligned_and_batched():
    aligned = bbox_overlaps(A, B[:2], is_aligned=True)
    torch.testing.assert_close(aligned, torch.tensor([25 / 175, 8 / 50]))
    torch.testing.assert_close(
        bbox_overlaps(A, B[:2], mode='iof', is_aligned=True),
        torch.tensor([0.25, 1.]))
    # Leading batch dims: (2, 2, 4) x (2, 3, 4) -> (2, 2, 3).
    batched = bbox_overlaps(torch.stack([A, A]), torch.stack([B, B * 2]))
    assert batched.shape == (2, 2, 3)
    torch.testing.assert_close(batched[0], bbox_overlaps(A, B))
    torch.testing.assert_close(batched[1], bbox_overlaps(A, B * 2))
    # Shared (N, 4) against (B, M, 4) broadcasts.
    torch.testing.assert_close(
        bbox_overlaps(torch.stack([A, A]), B), batched[:1].expand(2, 2, 3))


def test_degenerate_and_empty():
    point = torch.tensor([[3., 3., 3., 3.]])
    assert bbox_overlaps(point, point).item() == 0  # 0 / eps, not NaN
    assert bbox_overlaps(point, A).tolist() == [[0., 0.]]
    assert bbox_overlaps(torch.zeros(0, 4), B).shape == (0, 3)
    assert bbox_overlaps(A, torch.zeros(0, 4)).shape == (2, 0)
    with pytest.raises(ValueError, match=r'\(\.\.\., 4\)'):
        bbox_overlaps(torch.zeros(2, 5), B)


def test_cxcywh_conversions():
    cxcywh = bbox_xyxy_to_cxcywh(A)
    assert cxcywh.tolist() == [[5., 5., 10., 10.], [2., 1., 4., 2.]]
    assert torch.equal(bbox_cxcywh_to_xyxy(cxcywh), A)
    assert bbox_cxcywh_to_xyxy(torch.tensor([1., 2., 3., 4.])).tolist() == \
        [-0.5, 0., 2.5, 4.]


def test_clip():
    boxes = torch.tensor([[-5., -1., 30., 12.], [2., 3., 4., 5.]])
    assert bbox_clip(boxes, (10, 20)).tolist() == [[0., 0., 20., 10.],
                                                   [2., 3., 4., 5.]]
    assert bbox_clip(boxes, (10, 20, 3)).tolist() == \
        bbox_clip(boxes, (10, 20)).tolist()


def test_flip_directions_are_involutions():
    box = torch.tensor([[1., 2., 4., 8.]])
    assert bbox_flip(box, (10, 20)).tolist() == [[16., 2., 19., 8.]]
    assert bbox_flip(box, (10, 20), 'vertical').tolist() == [[1., 2., 4.,
                                                              8.]]
    assert bbox_flip(box, (12, 20), 'vertical').tolist() == [[1., 4., 4.,
                                                              10.]]
    assert bbox_flip(box, (12, 20), 'diagonal').tolist() == [[16., 4., 19.,
                                                              10.]]
    for direction in ('horizontal', 'vertical', 'diagonal'):
        twice = bbox_flip(bbox_flip(box, (12, 20), direction), (12, 20),
                          direction)
        assert torch.equal(twice, box)
    with pytest.raises(ValueError, match='direction'):
        bbox_flip(box, (10, 20), 'sideways')


def test_rescale_areas_roi():
    boxes = torch.tensor([[2., 4., 6., 8.]])
    assert bbox_rescale(boxes, (0.5, 2.0)).tolist() == [[1., 8., 3., 16.]]
    assert bbox_areas(torch.cat([A, boxes])).tolist() == [100., 8., 16.]
    rois = bbox2roi([A, torch.zeros(0, 4), boxes])
    assert rois.tolist() == [[0., 0., 0., 10., 10.], [0., 0., 0., 4., 2.],
                             [2., 2., 4., 6., 8.]]
    # A score column is dropped.
    assert bbox2roi([torch.tensor([[1., 2., 3., 4., .9]])]).tolist() == [
        [0., 1., 2., 3., 4.]]
    empty = empty_box_as(torch.zeros(3, dtype=torch.float64))
    assert empty.shape == (0, 4) and empty.dtype == torch.float64
