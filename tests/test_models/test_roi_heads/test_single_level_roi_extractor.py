"""SingleRoIExtractor: FPN level mapping (boundaries 112 / 224 / 448) and
RoIAlign against closed forms and against mmcv's RoIAlign written out
sample by sample (docs/faster_rcnn.md, RoIAlign)."""
import math

import pytest
import torch

from detkit.models.layers import RoIAlign
from detkit.models.roi_heads.roi_extractors import (SingleRoIExtractor,
                                                    map_roi_levels)

STRIDES = [4, 8, 16, 32]


def extractor(out_channels=1):
    return SingleRoIExtractor(
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
        out_channels=out_channels,
        featmap_strides=STRIDES)


def square_rois(sides):
    return torch.tensor([[0., 0., 0., s, s] for s in sides])


def test_level_of_hand_picked_sizes():
    sides = [1., 55.9, 111.9, 112., 150., 223.9, 224., 300., 447.9, 448.,
             2000.]
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert map_roi_levels(square_rois(sides), 4).tolist() == expected
    # the scale is sqrt(w * h): 224 x 56 has scale 112 -> P3; 448 x 112 has
    # scale 224 -> P4; a degenerate box has scale 0 -> P2 (clamped)
    rois = torch.tensor([[0., 0., 0., 224., 56.], [0., 10., 10., 458., 122.],
                         [0., 5., 5., 5., 50.]])
    assert map_roi_levels(rois, 4).tolist() == [1, 2, 0]
    # fewer levels clamp at the coarsest
    assert map_roi_levels(square_rois([2000.]), 2).tolist() == [1]


def test_constant_feature_map_pools_to_the_constant():
    ext = extractor()
    feats = [torch.full((2, 1, 256 // s, 256 // s), float(l + 1))
             for l, s in enumerate(STRIDES)]
    rois = torch.tensor([[0., 10., 10., 60., 40.],      # P2 -> 1
                         [1., 20., 30., 160., 180.],    # scale 145 -> P3 -> 2
                         [0., 0., 0., 250., 250.]])     # P4 -> 3
    out = ext(feats, rois)
    assert out.shape == (3, 1, 7, 7)
    assert torch.equal(out[0], torch.full((1, 7, 7), 1.))
    assert torch.equal(out[1], torch.full((1, 7, 7), 2.))
    assert torch.equal(out[2], torch.full((1, 7, 7), 3.))


def linear_map(h, w, a, b, c, batch=1):
    """f(y, x) = a x + b y + c at integer feature coordinates."""
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    return (a * x + b * y + c).float().expand(batch, 1, h, w).clone()


def test_linear_feature_map_gives_the_value_at_each_bin_centre():
    # bilinear interpolation of a linear function is exact, and the bin
    # average of a symmetric sub-grid is the value at the bin centre:
    #   x_c = x1 / s - 0.5 + (j + 0.5) * (x2 - x1) / (7 s)
    ext = extractor()
    coeffs = [(0.5, 2.0, 1.0), (1.0, -1.0, 3.0), (0.0, 0.0, 0.0),
              (0.0, 0.0, 0.0)]
    feats = [linear_map(128 // s, 128 // s, *coeffs[l])
             for l, s in enumerate(STRIDES)]
    rois = torch.tensor([[0., 20., 12., 76., 96.],     # scale 68.6 -> P2
                         [0., 8., 16., 120., 120.]])   # scale 107.9 -> P2
    big = torch.tensor([[0., 4., 2., 124., 122.]])     # scale 120 -> P3
    rois = torch.cat([rois, big])
    out = ext(feats, rois)
    for r, level in zip(range(3), (0, 0, 1)):
        a, b, c = coeffs[level]
        s = STRIDES[level]
        _, x1, y1, x2, y2 = rois[r].tolist()
        j = torch.arange(7, dtype=torch.float64)
        xc = x1 / s - 0.5 + (j + 0.5) * (x2 - x1) / (7 * s)
        yc = y1 / s - 0.5 + (j + 0.5) * (y2 - y1) / (7 * s)
        expected = a * xc[None, :] + b * yc[:, None] + c
        torch.testing.assert_close(
            out[r, 0].double(), expected, rtol=0, atol=1e-4)


def test_rois_keep_their_order_across_levels():
    ext = extractor()
    feats = [torch.full((1, 1, 512 // s, 512 // s), float(l + 1))
             for l, s in enumerate(STRIDES)]
    rois = square_rois([300., 20., 150., 500., 30.])
    out = ext(feats, rois)[:, 0, 3, 3]
    assert out.tolist() == [3., 1., 2., 4., 1.]


def reference_roi_align(feat, roi, scale, out=7):
    """mmcv's RoIAlign (docs/faster_rcnn.md), sample by sample (aligned,
    sampling_ratio 0)."""
    _, height, width = feat.shape
    x1, y1, x2, y2 = [v * scale - 0.5 for v in roi]
    roi_w, roi_h = x2 - x1, y2 - y1
    bin_w, bin_h = roi_w / out, roi_h / out
    grid_w, grid_h = math.ceil(roi_w / out), math.ceil(roi_h / out)
    count = max(grid_w * grid_h, 1)

    def bilinear(y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(feat.shape[0], dtype=torch.float64)
        y, x = max(y, 0.), max(x, 0.)
        y_lo, x_lo = int(y), int(x)
        if y_lo >= height - 1:
            y_lo = y_hi = height - 1
            y = float(y_lo)
        else:
            y_hi = y_lo + 1
        if x_lo >= width - 1:
            x_lo = x_hi = width - 1
            x = float(x_lo)
        else:
            x_hi = x_lo + 1
        ly, lx = y - y_lo, x - x_lo
        hy, hx = 1 - ly, 1 - lx
        f = feat.double()
        return (hy * hx * f[:, y_lo, x_lo] + hy * lx * f[:, y_lo, x_hi] +
                ly * hx * f[:, y_hi, x_lo] + ly * lx * f[:, y_hi, x_hi])

    result = torch.zeros(feat.shape[0], out, out, dtype=torch.float64)
    for ph in range(out):
        for pw in range(out):
            acc = torch.zeros(feat.shape[0], dtype=torch.float64)
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    acc += bilinear(y, x)
            result[:, ph, pw] = acc / count
    return result


@pytest.mark.parametrize('roi', [
    (3.0, 5.0, 40.0, 29.0),        # 1-2 samples per bin
    (-30.0, -12.0, 20.0, 70.0),    # reaches past the top-left border
    (50.0, 44.0, 95.0, 90.0),      # reaches past the bottom-right border
    (10.0, 10.0, 10.5, 30.0),      # thinner than a feature pixel
])
def test_torchvision_roi_align_follows_mmcv_semantics(roi):
    torch.manual_seed(1)
    feat = torch.randn(1, 3, 12, 16)
    layer = RoIAlign(output_size=7, spatial_scale=1 / 4, sampling_ratio=0)
    out = layer(feat, torch.tensor([[0., *roi]]))[0]
    expected = reference_roi_align(feat[0], roi, 1 / 4)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_unsupported_roi_layer_is_named():
    with pytest.raises(ValueError, match='RoIPool'):
        SingleRoIExtractor(
            roi_layer=dict(type='RoIPool', output_size=7),
            out_channels=1,
            featmap_strides=STRIDES)
    with pytest.raises(ValueError, match='max'):
        RoIAlign(7, pool_mode='max')
