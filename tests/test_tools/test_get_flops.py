"""tools/analysis_tools/get_flops.py: FLOPs of the tiny RetinaNet in closed
form. torch.utils.flop_counter counts a k x k convolution as
2 * Cin * Cout * k * k * Hout * Wout (a multiply-add = 2 FLOPs; bias,
norms and activations are free)."""
import pytest
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

TOOL = run_tool('tools', 'analysis_tools', 'get_flops.py')


def conv(cin, cout, k, h, w):
    return 2 * cin * cout * k * k * h * w


def test_neck_and_head_flops_in_closed_form(tiny_setup, capsys):  # noqa
    result = TOOL['main']([tiny_setup['cfg_file'], '--shape', '60', '64'])
    # 60 is padded to the preprocessor's divisor 32: the input is 64 x 64,
    # so C3, C4, C5 are 8x8, 4x4, 2x2 and the FPN adds a 1x1 P6.
    assert result['input_shape'] == (1, 3, 64, 64)
    table = result['modules']
    assert list(table) == ['backbone', 'neck', 'bbox_head', 'total']
    sizes = [8, 4, 2, 1]
    lateral = (conv(16, 16, 1, 8, 8) + conv(32, 16, 1, 4, 4) +
               conv(64, 16, 1, 2, 2))
    fpn_out = sum(conv(16, 16, 3, s, s) for s in sizes[:3])
    extra = conv(16, 16, 3, 1, 1)  # 3x3 stride 2 on P5 (on_output)
    assert table['neck']['flops'] == lateral + fpn_out + extra == 449024
    # One 3x3 conv per tower (16 -> 16) and the 3x3 outputs: 1 anchor x 5
    # classes, 1 anchor x 4 deltas, at every location of every level.
    per_location = 2 * 9 * 16 * (16 + 16 + 5 + 4)
    assert table['bbox_head']['flops'] == per_location * sum(
        s * s for s in sizes) == 1003680
    # The stem alone: 7x7 stride 2, 3 -> 8 channels on 32 x 32 outputs.
    assert table['backbone']['flops'] > conv(3, 8, 7, 32, 32)
    assert table['total']['flops'] == sum(
        table[k]['flops'] for k in ('backbone', 'neck', 'bbox_head'))
    # Parameters: head = 2 towers (16*16*9 + 16) + cls (16*5*9 + 5) +
    # reg (16*4*9 + 4).
    assert table['bbox_head']['params'] == 2 * (16 * 16 * 9 + 16) + (
        16 * 5 * 9 + 5) + (16 * 4 * 9 + 4)
    assert table['total']['params'] == sum(
        table[k]['params'] for k in ('backbone', 'neck', 'bbox_head'))
    printed = capsys.readouterr().out
    assert 'input shape: (1, 3, 64, 64)' in printed
    assert 'a multiply-add = 2 FLOPs' in printed


def test_num_images_averages_over_the_test_images(tiny_setup, capsys):  # noqa
    result = TOOL['main']([tiny_setup['cfg_file'], '--num-images', '2'])
    # the tiny test set: 64 x 64 images, resized to at most 64 and padded
    # to 32: the same 64 x 64 input as above, so the same closed forms
    assert result['num_images'] == 2
    assert result['input_shapes'] == [(1, 3, 64, 64)] * 2
    assert result['modules']['neck']['flops'] == 449024
    assert result['modules']['bbox_head']['flops'] == 1003680
    assert 'mean over 2 test images, padded sizes [(64, 64)]' in \
        capsys.readouterr().out
    # more images than the test set has: all 3 of them
    assert TOOL['main']([tiny_setup['cfg_file'], '--num-images',
                         '10'])['num_images'] == 3
    with pytest.raises(SystemExit, match='exclude each other'):
        TOOL['main']([tiny_setup['cfg_file'], '--num-images', '2',
                      '--shape', '64'])


def test_mean_table_is_the_per_module_mean():
    a = {'neck': dict(flops=10, params=3), 'total': dict(flops=30, params=5)}
    b = {'neck': dict(flops=20, params=3), 'total': dict(flops=50, params=5)}
    assert TOOL['mean_table']([a, b]) == {
        'neck': dict(flops=15, params=3), 'total': dict(flops=40, params=5)}
