"""BatchFixedSizePad: pixels and meta after DetDataPreprocessor, the
cases it leaves alone, and what it refuses."""
import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.data_preprocessors import BatchFixedSizePad
from detkit.registry import MODELS
from detkit.structures import DetDataSample


def _data():
    samples = []
    for shape in ((20, 30), (25, 10)):
        sample = DetDataSample(metainfo=dict(img_shape=shape))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[1., 2., 3., 4.]]),
            labels=torch.zeros(1, dtype=torch.long))
        samples.append(sample)
    inputs = [torch.full((3, 20, 30), 30, dtype=torch.uint8),
              torch.full((3, 25, 10), 50, dtype=torch.uint8)]
    return dict(inputs=inputs, data_samples=samples)


def _preprocessor(**pad):
    # the lsj configs: batch_augments=[dict(type='BatchFixedSizePad',
    # size=image_size)] on the usual preprocessor
    return MODELS.build(dict(
        type='DetDataPreprocessor', mean=[10., 10., 10.], std=[2., 2., 2.],
        bgr_to_rgb=True, pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=(40, 64),
                             **pad)]))


def test_training_batch_is_padded_to_the_fixed_size():
    out = _preprocessor()(_data(), training=True)
    inputs = out['inputs']
    # divisor padding gives 32 x 32, the fixed size 40 x 64 (h, w)
    assert inputs.shape == (2, 3, 40, 64)
    # image 0: (30 - 10) / 2 = 10 inside, 0 in every padded pixel
    assert (inputs[0, :, :20, :30] == 10).all()
    assert (inputs[0, :, 20:, :] == 0).all() and (inputs[0, :, :, 30:] ==
                                                  0).all()
    assert (inputs[1, :, :25, :10] == 20).all()
    for sample in out['data_samples']:
        assert sample.batch_input_shape == (40, 64)
        assert sample.pad_shape == (40, 64)
        assert sample.gt_instances.bboxes.tolist() == [[1., 2., 3., 4.]]


def test_pad_value_and_inference_untouched():
    out = _preprocessor(img_pad_value=-7)(_data(), training=True)
    assert (out['inputs'][0, :, 32:, :] == -7).all()
    # the divisor padding (rows 20..31 of image 0) keeps the preprocessor's
    assert (out['inputs'][0, :, 20:32, :30] == 0).all()
    out = _preprocessor()(_data(), training=False)  # batch augments: train
    assert out['inputs'].shape == (2, 3, 32, 32)
    assert [s.pad_shape for s in out['data_samples']] == [(32, 32), (32, 32)]


def test_a_batch_at_least_as_large_is_left_alone():
    pad = BatchFixedSizePad(size=(16, 16))
    inputs = torch.randn(2, 3, 32, 20)
    samples = [DetDataSample(metainfo=dict(batch_input_shape=(32, 20),
                                           pad_shape=(32, 20)))]
    out, out_samples = pad(inputs, samples)
    assert out is inputs and out_samples[0].pad_shape == (32, 20)
    # one side shorter: only that side grows; the meta says what it is
    out, out_samples = BatchFixedSizePad(size=(16, 24))(inputs, samples)
    assert out.shape == (2, 3, 32, 24)
    assert torch.equal(out[..., :20], inputs)
    assert out_samples[0].batch_input_shape == (32, 24)


def test_refuses_masks_and_bad_sizes():
    with pytest.raises(NotImplementedError, match='pad_mask=False'):
        BatchFixedSizePad(size=(8, 8), pad_mask=True)
    with pytest.raises(ValueError, match='size must be \\(h, w\\)'):
        BatchFixedSizePad(size=1024)
    with pytest.raises(ValueError, match='size must be \\(h, w\\)'):
        BatchFixedSizePad(size=(0, 8))
