import torch
from torch import nn

import xsep
from xsep.bench.shapes import SeparableLayer, separable_layers, unique_layers, xception_separable_layers


def test_xception_layers_come_from_the_model():
    layers = xception_separable_layers()
    assert len(layers) == 34
    # entry flow at 147, 74, 37; middle flow at 19; exit flow at 19 then 10 (Chollet 2017, Fig. 5)
    assert [(l.size, l.in_channels, l.out_channels) for l in layers[:6]] == [
        (147, 64, 128), (147, 128, 128), (74, 128, 256), (74, 256, 256), (37, 256, 728), (37, 728, 728)]
    assert [(l.size, l.in_channels, l.out_channels) for l in layers[-4:]] == [
        (19, 728, 728), (19, 728, 1024), (10, 1024, 1536), (10, 1536, 2048)]
    assert all(l.kernel_size == 3 and l.stride == 1 and l.depth_multiplier == 1 for l in layers)
    assert len({l.name for l in layers}) == 34


def test_unique_layers_count_repeats_in_network_order():
    distinct = unique_layers(xception_separable_layers())
    assert len(distinct) == 10
    assert sum(n for _, n in distinct) == 34
    counts = {(l.size, l.in_channels, l.out_channels): n for l, n in distinct}
    assert counts[(19, 728, 728)] == 25  # 24 in the middle flow, 1 in the exit flow
    assert distinct[0][0].size == 147 and distinct[-1][0].out_channels == 2048


def test_separable_layers_follow_strides_and_leave_the_model_alone():
    model = nn.Sequential(
        xsep.SeparableConv2d(3, 8, 3, stride=2, padding=1, depth_multiplier=2),
        nn.ReLU(),
        nn.Sequential(xsep.SeparableConv2d(8, 16, 5, padding=2)),
    )
    layers = separable_layers(model, 32)
    assert layers == [SeparableLayer("0", 32, 3, 8, 3, 2, 2), SeparableLayer("2.0", 16, 8, 16, 5, 1, 1)]
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 16, 16, 16)
