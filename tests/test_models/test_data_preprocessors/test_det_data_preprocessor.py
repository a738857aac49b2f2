"""DetDataPreprocessor against pixels computed by hand."""
import pytest
import torch
from mmengine.structures import InstanceData
from torch import nn

from detkit.models.data_preprocessors import DetDataPreprocessor
from detkit.registry import MODELS
from detkit.structures import DetDataSample


def _image(h, w, bgr):
    """(3, h, w) uint8 filled with one BGR colour."""
    return torch.tensor(bgr, dtype=torch.uint8).view(3, 1, 1).repeat(1, h, w)


def _sample(boxes=((1., 2., 3., 4.), )):
    sample = DetDataSample(metainfo=dict(img_shape=(0, 0)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes), labels=torch.zeros(len(boxes),
                                                       dtype=torch.long))
    return sample


def test_rgb_normalise_pad_and_meta():
    pre = DetDataPreprocessor(mean=[10, 20, 30], std=[1, 2, 5],
                              bgr_to_rgb=True, pad_size_divisor=4)
    # A: 2x3 with BGR (40, 60, 80); B: 5x2 with BGR (30, 20, 10)
    data = dict(inputs=[_image(2, 3, (40, 60, 80)),
                        _image(5, 2, (30, 20, 10))],
                data_samples=[_sample(), _sample()])
    out = pre(data)
    inputs = out['inputs']
    # batch max 5 x 3 padded up to multiples of 4: 8 x 4
    assert inputs.shape == (2, 3, 8, 4) and inputs.dtype == torch.float32
    # A: RGB (80, 60, 40) -> ((80-10)/1, (60-20)/2, (40-30)/5) = (70, 20, 2)
    assert inputs[0, :, 0, 0].tolist() == [70, 20, 2]
    assert inputs[0, :, 1, 2].tolist() == [70, 20, 2]
    # padding (bottom rows 2.., right column 3) is 0 after normalising
    assert (inputs[0, :, 2:, :] == 0).all() and (inputs[0, :, :, 3] ==
                                                 0).all()
    # B: RGB (10, 20, 30) -> (0, 0, 0); (x - mean) / std = 0 everywhere
    assert inputs[1, :, 4, 1].tolist() == [0, 0, 0]
    a, b = out['data_samples']
    assert a.batch_input_shape == (8, 4) and b.batch_input_shape == (8, 4)
    # each image padded alone: A 2x3 -> 4x4, B 5x2 -> 8x4
    assert a.pad_shape == (4, 4) and b.pad_shape == (8, 4)
    assert a.gt_instances.bboxes.tolist() == [[1, 2, 3, 4]]


def test_ssd_style_divisor_one_and_pad_value():
    pre = MODELS.build(
        dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
             std=[1, 1, 1], bgr_to_rgb=True, pad_size_divisor=1,
             pad_value=7))
    out = pre(dict(inputs=[_image(3, 3, (103, 116, 124)),
                           _image(2, 3, (0, 0, 0))],
                   data_samples=[_sample(), _sample()]))
    inputs = out['inputs']
    assert inputs.shape == (2, 3, 3, 3)
    torch.testing.assert_close(inputs[0, :, 0, 0],
                               torch.tensor([0.325, -0.28, -0.53]))
    # the 2x3 image gets one padded row of 7
    assert (inputs[1, :, 2, :] == 7).all()
    torch.testing.assert_close(inputs[1, :, 0, 0],
                               torch.tensor([-123.675, -116.28, -103.53]))
    assert out['data_samples'][1].pad_shape == (2, 3)
    assert out['data_samples'][1].batch_input_shape == (3, 3)


def test_no_normalisation_keeps_values_and_accepts_stacked_batch():
    pre = DetDataPreprocessor(pad_size_divisor=32)
    batch = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    out = pre(dict(inputs=batch, data_samples=[_sample(), _sample()]))
    assert out['inputs'].shape == (2, 3, 32, 32)
    assert torch.equal(out['inputs'][:, :, :4, :5], batch.float())
    assert out['data_samples'][0].pad_shape == (32, 32)
    # without data samples (pure inference on tensors)
    out = pre(dict(inputs=[batch[0]]))
    assert out['data_samples'] is None and out['inputs'].shape == (1, 3, 32,
                                                                   32)


class _AddOne(nn.Module):

    def forward(self, inputs, data_samples):
        return inputs + 1, data_samples


def test_batch_augments_only_in_training():
    MODELS.register_module('_TestAddOneBatchAug', module=_AddOne, force=True)
    pre = DetDataPreprocessor(
        batch_augments=[dict(type='_TestAddOneBatchAug')])
    data = dict(inputs=[_image(1, 1, (5, 5, 5))], data_samples=[_sample()])
    assert pre(dict(data), training=False)['inputs'].flatten().tolist() == [
        5, 5, 5
    ]
    assert pre(dict(data), training=True)['inputs'].flatten().tolist() == [
        6, 6, 6
    ]


def test_argument_errors():
    with pytest.raises(NotImplementedError, match='pad_mask'):
        DetDataPreprocessor(pad_mask=True)
    with pytest.raises(ValueError, match='both'):
        DetDataPreprocessor(mean=[1, 2, 3])
    with pytest.raises(ValueError, match='bgr_to_rgb and rgb_to_bgr'):
        DetDataPreprocessor(bgr_to_rgb=True, rgb_to_bgr=True)
    with pytest.raises(TypeError, match='pad_size_divisr'):
        MODELS.build(dict(type='DetDataPreprocessor', pad_size_divisr=32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_moves_images_and_boxes_to_the_model_device():
    pre = DetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1]).cuda()
    out = pre(dict(inputs=[_image(2, 2, (1, 2, 3))],
                   data_samples=[_sample()]))
    assert out['inputs'].is_cuda
    assert out['data_samples'][0].gt_instances.bboxes.is_cuda
    assert out['data_samples'][0].gt_instances.bboxes.tolist() == [[1, 2, 3,
                                                                    4]]
