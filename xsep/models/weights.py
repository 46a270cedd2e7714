"""Loading weight files into xsep's models: timm `legacy_xception` state_dicts or xsep's own.

The two layouts differ in one name: timm's SeparableConv2d holds its depthwise half at `conv1.weight`,
xsep's at `depthwise.weight` (the pointwise half is `pointwise.weight` in both). Every other key of
timm's legacy_xception is used unchanged by xsep's Xception.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from os import PathLike, fspath

import torch
from torch import nn

_TIMM_DEPTHWISE = ".conv1.weight"  # only nested: the top-level `conv1.weight` is the stem conv
_XSEP_DEPTHWISE = ".depthwise.weight"
_WRAPPERS = ("model", "state_dict")  # checkpoints that hold the state_dict under one of these keys
_SHOWN = 12  # keys listed per kind of mismatch in an error message


def timm_to_xsep_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm legacy_xception keys -> xsep Xception keys (xsep keys pass through unchanged)."""
    return {(k[: -len(_TIMM_DEPTHWISE)] + _XSEP_DEPTHWISE if k.endswith(_TIMM_DEPTHWISE) else k): v
            for k, v in state_dict.items()}


def xsep_to_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """xsep Xception keys -> timm legacy_xception keys (for timm.create_model('legacy_xception'))."""
    return {(k[: -len(_XSEP_DEPTHWISE)] + _TIMM_DEPTHWISE if k.endswith(_XSEP_DEPTHWISE) else k): v
            for k, v in state_dict.items()}


def read_state_dict(path: str | PathLike) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file (unwrapping a checkpoint's 'model' / 'state_dict' entry and a
    DistributedDataParallel 'module.' prefix); ValueError when the file does not hold one."""
    where = f"weights={fspath(path)!r}"
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ValueError(f"{where}: not a torch.save file that loads with weights_only=True ({e})") from e
    for wrapper in _WRAPPERS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ValueError(f"{where}: expected a state_dict (a dict of tensors), got {type(loaded).__name__}")
    bad = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where}: expected a state_dict (a dict of str -> tensor); these entries are not: "
                         f"{_listing(map(repr, bad))}")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return dict(loaded)


def load_weights(model: nn.Module, weights: str | PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Loads a timm legacy_xception or xsep state_dict (a file path, or the dict itself) into `model`,
    checking every key and shape first: ValueError listing the missing and unexpected keys and the
    wrong shapes. BN `num_batches_tracked` counters may be absent (older files lack them)."""
    if isinstance(weights, Mapping):
        where, state_dict = "weights", dict(weights)
    else:
        where, state_dict = f"weights={fspath(weights)!r}", read_state_dict(weights)
    state_dict = timm_to_xsep_state_dict(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k}: file {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
                   for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        problems = [f"{name} ({len(keys)}): {_listing(keys)}" for name, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape))
                    if keys]
        hint = ""
        if any(k.startswith("fc.") for k in wrong_shape):
            hint = ("; the classifier differs: build the model with the file's num_classes, then call "
                    "reset_classifier(n)")
        raise ValueError(f"{where} does not match {type(model).__name__}: " + "; ".join(problems) + hint)
    for k, v in expected.items():
        state_dict.setdefault(k, v)  # absent num_batches_tracked: keep the model's own
    model.load_state_dict(state_dict, strict=True)
    return model


def _listing(items) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
