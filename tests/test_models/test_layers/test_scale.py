"""Scale: mmdetection's parameter name and shape, forward and gradient."""
import torch
from conftest import read_compat

from detkit.models.layers import Scale
from detkit.registry import MODELS


def test_parameter_name_shape_and_default():
    scale = MODELS.build(dict(type='Scale'))
    assert list(scale.state_dict()) == ['scale']
    assert scale.scale.shape == () and scale.scale.dtype == torch.float32
    assert scale.scale.item() == 1.0
    assert Scale(scale=0.5).scale.item() == 0.5


def test_forward_and_gradient_by_hand():
    scale = Scale(2.5)
    x = torch.tensor([[1., -2.], [4., 0.]], requires_grad=True)
    out = scale(x)
    assert out.tolist() == [[2.5, -5.], [10., 0.]]
    out.sum().backward()
    assert scale.scale.grad.item() == 3.  # sum of x
    assert x.grad.tolist() == [[2.5, 2.5], [2.5, 2.5]]


def test_state_dict_keys_match_fcos_and_atss_checkpoints():
    for model in ('fcos_r50_fpn', 'atss_r50_fpn'):
        expected = {k: v for k, v in read_compat(model).items()
                    if k.startswith('bbox_head.scales.')}
        scales = torch.nn.ModuleList(Scale(1.0) for _ in range(5))
        ours = {
            f'bbox_head.scales.{k}':
            (tuple(v.shape), str(v.dtype).replace('torch.', ''))
            for k, v in scales.state_dict().items()
        }
        assert len(expected) == 5
        assert ours == expected
