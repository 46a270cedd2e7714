"""Per-backend implementations of xsep's three ops, with normalised arguments (stride and dilation
pairs, padding (top, bottom, left, right), activation names). Most users want xsep.functional.

`implementation(backend)` returns an object with `depthwise_conv2d`, `pointwise_conv2d` and
`separable_conv2d`, each differentiable.
"""

from __future__ import annotations

import torch

from xsep.ops import reference


class _Native:
    """The compiled ops (torch.ops.xsep exists once xsep._extension.load() succeeded). A plain
    class rather than a namespace object built per call, so that torch.compile can trace through."""

    @staticmethod
    def depthwise_conv2d(*args):
        return torch.ops.xsep.depthwise_conv2d(*args)

    @staticmethod
    def pointwise_conv2d(*args):
        return torch.ops.xsep.pointwise_conv2d(*args)

    @staticmethod
    def separable_conv2d(*args):
        return torch.ops.xsep.separable_conv2d(*args)


def implementation(backend: str):
    if backend == "torch":
        return reference
    if backend == "native":
        return _Native
    if backend == "triton":
        from xsep.triton._ops import Ops  # registers torch.ops.xsep_triton on first use

        return Ops
    raise ValueError(f"no implementation for backend '{backend}'")
