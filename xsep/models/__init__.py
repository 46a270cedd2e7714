"""Models built from xsep's layers: Xception (timm `legacy_xception` weights load), and timm's own
Xception for comparison."""

from xsep.models.timm_reference import timm_legacy_xception
from xsep.models.weights import load_weights, timm_to_xsep_state_dict, xsep_to_timm_state_dict
from xsep.models.xception import Xception, xception, xception_tiny

__all__ = ["Xception", "load_weights", "timm_legacy_xception", "timm_to_xsep_state_dict", "xception",
           "xception_tiny", "xsep_to_timm_state_dict"]
