import pytest

from xsep.bench.work import Work, work


def test_forward_counts_by_hand():
    # batch 2, 4 -> 6 channels, 5x5 input, 3x3 kernel, stride 1: 50 pixels in and out
    dw = work("depthwise", "forward", batch=2, in_channels=4, out_channels=6, size=5, element_size=2)
    assert dw.flops == 2 * 50 * 4 * 9 and dw.gemm_flops == 0
    assert dw.bytes == 2 * (50 * 4 + 50 * 4 + 4 * 9)
    pw = work("pointwise", "forward", batch=2, in_channels=4, out_channels=6, size=5, element_size=2)
    assert pw.flops == pw.gemm_flops == 2 * 50 * 4 * 6
    assert pw.bytes == 2 * (50 * 4 + 50 * 6 + 24)
    sep = work("separable", "forward", batch=2, in_channels=4, out_channels=6, size=5, element_size=2)
    assert sep.flops == dw.flops + pw.flops and sep.gemm_flops == pw.flops
    assert sep.bytes == 2 * (50 * 4 + 50 * 6 + 36 + 24)  # no intermediate


def test_stride_and_depth_multiplier():
    w = work("depthwise", "forward", batch=1, in_channels=3, out_channels=6, size=7, stride=2, depth_multiplier=2)
    # output 4x4 (ceil(7/2)), 6 mid channels
    assert w.flops == 2 * 16 * 6 * 9
    assert w.bytes == 4 * (49 * 3 + 16 * 6 + 6 * 9)


def test_forward_backward_is_three_times_the_flops():
    f = work("separable", "forward", batch=1, in_channels=8, out_channels=8, size=4)
    fb = work("separable", "forward+backward", batch=1, in_channels=8, out_channels=8, size=4)
    assert fb.flops == 3 * f.flops and fb.gemm_flops == 3 * f.gemm_flops
    assert fb.bytes > 2 * f.bytes


def test_floor_is_the_slower_of_memory_and_matmul():
    w = Work(flops=10.0, gemm_flops=8.0, bytes=100.0)
    assert w.floor_seconds(copy_bytes_per_s=10.0, matmul_flops_per_s=1.0) == 10.0   # memory-bound
    assert w.floor_seconds(copy_bytes_per_s=1000.0, matmul_flops_per_s=1.0) == 8.0  # matmul-bound


@pytest.mark.parametrize("op, mode", [("conv", "forward"), ("separable", "backward")])
def test_bad_op_or_mode(op, mode):
    with pytest.raises(ValueError, match="op must be|mode must be"):
        work(op, mode, batch=1, in_channels=1, out_channels=1, size=1)


def test_output_bytes_are_the_returned_tensors():
    # batch 2, 4 -> 6 channels, 5x5, 3x3: forward returns y; forward+backward also grad_x and the weight grads
    kw = dict(batch=2, in_channels=4, out_channels=6, size=5, element_size=4)
    assert work("depthwise", "forward", **kw).output_bytes == 4 * 50 * 4
    assert work("separable", "forward", **kw).output_bytes == 4 * 50 * 6  # no intermediate
    assert work("separable", "forward+backward", **kw).output_bytes == 4 * (50 * 6 + 50 * 4 + 36 + 24)
    assert work("pointwise", "forward+backward", **kw).output_bytes == 4 * (50 * 6 + 50 * 4 + 24)
