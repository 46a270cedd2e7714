from xsep.nn.depthwise import DepthwiseConv2d
from xsep.nn.separable import SeparableConv2d

__all__ = ["DepthwiseConv2d", "SeparableConv2d"]
