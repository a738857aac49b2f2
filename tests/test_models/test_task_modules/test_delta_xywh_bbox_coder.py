"""DeltaXYWHBBoxCoder: mmdetection references and closed forms
(docs/box_coders.md)."""
import math

import numpy as np
import pytest
import torch
from conftest import load_reference

from detkit.models.task_modules.coders import DeltaXYWHBBoxCoder
from detkit.registry import TASK_UTILS

MAX_RATIO = 4.135166556742356  # |log(16 / 1000)|


@pytest.mark.parametrize('name, stds', [
    ('delta_xywh_coder_std1.pt', (1., 1., 1., 1.)),
    ('delta_xywh_coder_std0.1_0.2.pt', (.1, .1, .2, .2)),
])
def test_matches_mmdet_reference(name, stds):
    ref = load_reference(name)
    inputs, out = ref['inputs'], ref['outputs']
    coder = TASK_UTILS.build(
        dict(type='DeltaXYWHBBoxCoder', target_stds=stds))
    encoded = coder.encode(inputs['src_boxes'], inputs['gt_boxes'])
    # torch.log may differ from the reference machine's in the last bit
    # (e.g. log(0.75)); everything else is bit-exact.
    torch.testing.assert_close(encoded, out['encoded'], rtol=1e-6, atol=0)
    assert (encoded != out['encoded']).sum() <= 10
    decoded = coder.decode(inputs['dec_boxes'], inputs['dec_deltas'])
    assert torch.equal(decoded, out['decoded'])
    clipped = coder.decode(inputs['dec_boxes'], inputs['dec_deltas'],
                           max_shape=inputs['max_shape'])
    assert torch.equal(clipped, out['decoded_clipped'])
    roundtrip = coder.decode(inputs['src_boxes'], out['encoded'])
    assert torch.equal(roundtrip, out['roundtrip'])


def test_encode_closed_form():
    prior = torch.tensor([[0., 0., 10., 10.]])
    gt = torch.tensor([[5., 5., 15., 25.]])  # centre (10, 15), size 10x20
    plain = DeltaXYWHBBoxCoder().encode(prior, gt)
    torch.testing.assert_close(plain,
                               torch.tensor([[.5, 1., 0., math.log(2)]]))
    normed = DeltaXYWHBBoxCoder(target_means=(.1, 0, 0, .5),
                                target_stds=(.1, .1, .2, .2)).encode(
                                    prior, gt)
    torch.testing.assert_close(
        normed,
        torch.tensor([[4., 10., 0., (math.log(2) - .5) / .2]]))
    assert DeltaXYWHBBoxCoder.encode_size == 4


def test_decode_closed_form_and_roundtrip():
    coder = DeltaXYWHBBoxCoder(target_stds=(.1, .1, .2, .2))
    prior = torch.tensor([[0., 0., 10., 10.]])
    deltas = torch.tensor([[5., 10., 0., math.log(2) / .2]])
    torch.testing.assert_close(coder.decode(prior, deltas),
                               torch.tensor([[5., 5., 15., 25.]]))
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * 500
    priors = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 100 + 1],
                       1)
    xy = torch.rand(100, 2, generator=g) * 500
    gts = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 100 + 1], 1)
    back = coder.decode(priors, coder.encode(priors, gts))
    torch.testing.assert_close(back, gts, rtol=0, atol=1e-3)


def test_wh_clamp_value():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]])
    deltas = torch.tensor([[0., 0., 100., -100.], [0., 0., 4., -4.]])
    out = coder.decode(prior, deltas)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    # Clamped to exp(±4.1351666) = 62.5 and 0.016 (16 / 1000).
    assert torch.log(w[0]).item() == pytest.approx(MAX_RATIO, rel=1e-6)
    assert torch.log(h[0]).item() == pytest.approx(-MAX_RATIO, rel=1e-5)
    assert w[0].item() == pytest.approx(62.5, rel=1e-5)
    assert h[0].item() == pytest.approx(0.016, rel=1e-5)
    # Inside the bound nothing changes.
    assert w[1].item() == pytest.approx(math.exp(4), rel=1e-6)
    assert abs(math.log(16 / 1000)) == MAX_RATIO
    # A custom bound.
    out = coder.decode(prior[:1], deltas[:1], wh_ratio_clip=0.5)
    assert (out[0, 2] - out[0, 0]).item() == pytest.approx(2., rel=1e-6)


def test_dx_dy_unclamped_unless_ctr_clamp():
    prior = torch.tensor([[0., 0., 100., 100.]])
    deltas = torch.tensor([[10., -10., 0., 5.]])
    out = DeltaXYWHBBoxCoder().decode(prior, deltas)
    assert ((out[0, 0] + out[0, 2]) / 2).item() == 50 + 1000
    ctr = DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=32)
    out = ctr.decode(prior, deltas)
    # Centre shift clamped to ±32 px; dh = 5 only bounded above (4.135).
    assert ((out[0, 0] + out[0, 2]) / 2).item() == 50 + 32
    assert ((out[0, 1] + out[0, 3]) / 2).item() == 50 - 32
    assert (out[0, 3] - out[0, 1]).item() == pytest.approx(
        100 * math.exp(MAX_RATIO), rel=1e-5)


def test_clip_single_and_per_image_shapes():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[-20., -10., 50., 300.]])
    zero = torch.zeros(1, 4)
    assert coder.decode(prior, zero, max_shape=(100, 40)).tolist() == [
        [0., 0., 40., 100.]]
    # (h, w, c) works like (h, w); clip_border=False leaves boxes alone.
    assert coder.decode(prior, zero, max_shape=(100, 40, 3)).tolist() == [
        [0., 0., 40., 100.]]
    free = DeltaXYWHBBoxCoder(clip_border=False)
    assert torch.equal(free.decode(prior, zero, max_shape=(100, 40)), prior)
    # Batched inputs (B, N, 4) with one shape per image.
    priors = prior.expand(2, 3, 4)
    deltas = torch.zeros(2, 3, 4)
    for shapes in ([(100, 40), (200, 30)], torch.tensor([[100, 40],
                                                          [200, 30]])):
        out = coder.decode(priors, deltas, max_shape=shapes)
        assert out[0, 2].tolist() == [0., 0., 40., 100.]
        assert out[1, 0].tolist() == [0., 0., 30., 200.]
    with pytest.raises(ValueError, match='leading batch dim'):
        coder.decode(prior, zero, max_shape=[(100, 40), (200, 30)])


def test_class_specific_deltas_decode_per_block():
    coder = DeltaXYWHBBoxCoder(target_stds=(.1, .1, .2, .2))
    g = torch.Generator().manual_seed(1)
    priors = torch.tensor([[10., 20., 50., 80.], [0., 0., 30., 30.]])
    deltas = torch.randn(2, 3 * 4, generator=g)
    out = coder.decode(priors, deltas, max_shape=(60, 45))
    assert out.shape == (2, 12)
    for k in range(3):
        block = coder.decode(priors, deltas[:, 4 * k:4 * k + 4],
                             max_shape=(60, 45))
        assert torch.equal(out[:, 4 * k:4 * k + 4], block)


def test_empty_and_shape_errors():
    coder = DeltaXYWHBBoxCoder()
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match='of one shape'):
        coder.encode(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match='4 values'):
        DeltaXYWHBBoxCoder(target_stds=(1., 1.))


def test_decode_is_differentiable_through_clipping():
    coder = DeltaXYWHBBoxCoder()
    priors = torch.tensor([[[0., 0., 10., 10.]], [[0., 0., 10., 10.]]])
    deltas = torch.zeros(2, 1, 4, requires_grad=True)
    # Image 0 clips x2 at 8; image 1 (numpy shapes work too) clips nothing.
    out = coder.decode(priors, deltas,
                       max_shape=np.array([[20, 8], [20, 20]]))
    assert out.tolist() == [[[0., 0., 8., 10.]], [[0., 0., 10., 10.]]]
    out[..., 2].sum().backward()
    # d x2 / d dx = pw = 10 and d x2 / d dw = pw / 2 = 5, zero where clipped.
    assert deltas.grad.tolist() == [[[0., 0., 0., 0.]], [[10., 0., 5., 0.]]]
