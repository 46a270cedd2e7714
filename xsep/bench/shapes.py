"""Layer shapes to verify and time: Xception's 34 separable convolutions (Chollet 2017), all 3x3,
stride 1, 'same' padding, depth multiplier 1, at a 299x299 input."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeparableLayer:
    name: str
    size: int          # input height = width
    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1


def xception_separable_layers() -> list[SeparableLayer]:
    """All 34, in network order: entry flow modules 2-4, middle flow (8 x 3), exit flow 13-14."""
    layers = []
    for block, (size, cin, cout) in enumerate([(147, 64, 128), (74, 128, 256), (37, 256, 728)], start=2):
        layers += [SeparableLayer(f"block{block}.sep1", size, cin, cout),
                   SeparableLayer(f"block{block}.sep2", size, cout, cout)]
    for block in range(5, 13):
        layers += [SeparableLayer(f"block{block}.sep{i}", 19, 728, 728) for i in (1, 2, 3)]
    layers += [SeparableLayer("block13.sep1", 19, 728, 728), SeparableLayer("block13.sep2", 19, 728, 1024),
               SeparableLayer("block14.sep1", 10, 1024, 1536), SeparableLayer("block14.sep2", 10, 1536, 2048)]
    return layers


def unique_layers(layers: list[SeparableLayer]) -> list[tuple[SeparableLayer, int]]:
    """Distinct shapes with how often each occurs (for weighting whole-network totals)."""
    counts: dict[tuple, list] = {}
    for layer in layers:
        key = (layer.size, layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride)
        counts.setdefault(key, [layer, 0])[1] += 1
    return [(layer, n) for layer, n in counts.values()]
