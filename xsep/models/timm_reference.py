"""timm's `legacy_xception` (plain PyTorch convolutions), the baseline xsep's Xception is compared with."""

from __future__ import annotations

from torch import nn

from xsep.models.weights import xsep_to_timm_state_dict
from xsep.models.xception import PAPER_MIDDLE_BLOCKS, Xception


def timm_legacy_xception(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                         like: Xception | None = None) -> nn.Module:
    """timm.create_model('legacy_xception', pretrained=False, ...) (never downloads). With `like`, an
    xsep Xception of the paper's size, it gets that model's weights (and device, dtype and train/eval
    mode), so both compute the same function: the fair baseline for benchmarks and tests."""
    try:
        import timm
    except ImportError as e:
        raise ImportError("timm_legacy_xception needs timm: pip install timm") from e
    if like is not None:
        if like.width != 1.0 or like.middle_blocks != PAPER_MIDDLE_BLOCKS or not like.residual:
            raise ValueError("like= must be a full-size residual xsep Xception (timm has no reduced variant)")
        if like.mid_activation not in (None, "none"):
            raise ValueError(f"like= has mid_activation={like.mid_activation!r}; timm's Xception has none")
        num_classes, in_chans, drop_rate = like.num_classes, like.in_chans, like.drop_rate
    model = timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              drop_rate=drop_rate)
    if like is not None:
        reference = like.bn1.weight
        model.to(device=reference.device, dtype=reference.dtype)
        model.load_state_dict(xsep_to_timm_state_dict(like.state_dict()))
        model.train(like.training)
    return model
