"""Rewriting existing models to use xsep's layers: `convert` (depthwise convs -> xsep, depthwise +
pointwise pairs -> one fused op) and `fuse_for_inference` (BatchNorm folded into the convs first).

Which convs count as a "depthwise -> pointwise" pair
----------------------------------------------------
Every module's own `forward` is traced one level deep with torch.fx (its submodules are leaves, not
entered). A pair is a depthwise conv whose output goes, through nothing but `nn.Identity` modules,
into a 1x1 conv and nowhere else, where each of the two modules is called exactly once in that
forward and no parameter of theirs is read directly. This finds pairs in an `nn.Sequential` and in
modules that call them back to back, such as timm's legacy `SeparableConv2d` (conv1 -> pointwise).

Limits: a module whose forward fx cannot trace (data-dependent control flow, unsupported Python) is
searched for nothing but stand-alone depthwise convs; a pair split across two modules (the depthwise
conv last in one, the pointwise first in the next) is not found; tracing specialises on the module's
current Python state (e.g. `self.training` branches are taken as they stand). Subclasses of
nn.Conv2d / nn.BatchNorm2d (timm's Conv2dSame, BatchNormAct2d, ...) are left alone, as are convs
whose padding_mode is not 'zeros'.

The fused module replaces the depthwise conv in its parent, and the pointwise conv becomes
`nn.Identity`, so the parent's forward is unchanged and computes the same function.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from xsep.nn import DepthwiseConv2d, SeparableConv2d


# --------------------------------------------------------------------------------------------------
# What counts as a depthwise / pointwise conv

def is_depthwise_conv(module: nn.Module) -> bool:
    """A plain nn.Conv2d with groups == in_channels, out_channels a multiple of it, zero padding."""
    return (type(module) is nn.Conv2d and module.groups == module.in_channels and module.groups > 1
            and module.out_channels % module.in_channels == 0 and module.padding_mode == "zeros")


def _is_pointwise_conv(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid") and module.groups == 1 and module.padding_mode == "zeros")


def _depthwise_half(module: nn.Module) -> bool:
    """What may start a fused pair: a depthwise nn.Conv2d, or an xsep DepthwiseConv2d (e.g. after convert)."""
    return is_depthwise_conv(module) or type(module) is DepthwiseConv2d


# --------------------------------------------------------------------------------------------------
# One-level tracing

@dataclass
class _Call:
    name: str          # the submodule's path in the parent (a child, or e.g. `layers.0` of a ModuleList)
    module: nn.Module
    node: torch.fx.Node


class _ChildrenAreLeaves(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def _children_in_call_order(parent: nn.Module) -> list[_Call]:
    """The submodules `parent.forward` calls, in call order; empty when it cannot be traced. Leaves
    out any submodule called more than once or whose parameters it reads directly (a rewrite of
    those would change more than the one call)."""
    if not any(True for _ in parent.children()):
        return []
    try:
        graph = _ChildrenAreLeaves().trace(parent)
    except Exception:  # noqa: BLE001 - any untraceable forward just means "no pairs found here"
        return []
    called = [n for n in graph.nodes if n.op == "call_module"]
    counts = Counter(n.target for n in called)
    read_directly = {n.target.rsplit(".", 1)[0] for n in graph.nodes if n.op == "get_attr" and "." in n.target}
    return [_Call(n.target, parent.get_submodule(n.target), n) for n in called
            if counts[n.target] == 1 and n.target not in read_directly]


def _replace(parent: nn.Module, path: str, new: nn.Module) -> None:
    owner, _, name = path.rpartition(".")
    setattr(parent.get_submodule(owner) if owner else parent, name, new)


def _next_through_identities(call: _Call, by_node: dict[torch.fx.Node, _Call]) -> list[_Call]:
    """The chain of calls that consume `call`'s output as their only input, when each output has that one
    user and the chain passes through nothing but nn.Identity: [identities..., final]."""
    chain, node = [], call.node
    while True:
        users = list(node.users)
        if len(users) != 1 or users[0] not in by_node or users[0].args != (node,) or users[0].kwargs:
            return []
        following = by_node[users[0]]
        chain.append(following)
        if type(following.module) is not nn.Identity:
            return chain
        node = following.node


def _pairs(parent: nn.Module, first, second) -> list[tuple[_Call, list[_Call]]]:
    """(first call, [identities..., second call]) for each `first`-kind child directly feeding a `second`-kind one."""
    calls = _children_in_call_order(parent)
    by_node = {c.node: c for c in calls}
    found = []
    for call in calls:
        if first(call.module):
            chain = _next_through_identities(call, by_node)
            if chain and second(chain[-1].module):
                found.append((call, chain))
    return found


# --------------------------------------------------------------------------------------------------
# Building the xsep modules

def _padding(conv: nn.Conv2d):
    return conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)


def _depthwise_from(conv: nn.Conv2d, backend: str | None) -> DepthwiseConv2d:
    weight = conv.weight
    new = DepthwiseConv2d(conv.in_channels, conv.kernel_size, conv.stride, _padding(conv), conv.dilation,
                          conv.out_channels // conv.in_channels, bias=conv.bias is not None, backend=backend,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    new.train(conv.training)
    return new


def _separable_from(depthwise: nn.Module, pointwise: nn.Conv2d, backend: str | None) -> SeparableConv2d:
    """One fused module computing pointwise(depthwise(x)). A depthwise bias b moves into the pointwise
    bias (the pointwise conv is linear and 1x1: W (d + b) + c = W d + (W b + c))."""
    if type(depthwise) is DepthwiseConv2d:
        in_channels, multiplier = depthwise.in_channels, depthwise.depth_multiplier
        input_activation = None if depthwise.input_activation == "none" else depthwise.input_activation
        backend = depthwise.backend if backend is None else backend
    else:
        in_channels, multiplier, input_activation = depthwise.in_channels, depthwise.out_channels // \
            depthwise.in_channels, None
    dw_bias = depthwise.bias
    has_bias = pointwise.bias is not None or dw_bias is not None
    weight = pointwise.weight
    new = SeparableConv2d(in_channels, pointwise.out_channels, depthwise.kernel_size, depthwise.stride,
                          _padding(depthwise), depthwise.dilation, multiplier, bias=has_bias,
                          input_activation=input_activation, backend=backend, device=weight.device,
                          dtype=weight.dtype)
    with torch.no_grad():
        new.depthwise.weight.copy_(depthwise.weight)
        new.pointwise.weight.copy_(weight)
        if has_bias:
            bias = pointwise.bias.clone() if pointwise.bias is not None else torch.zeros_like(new.pointwise.bias)
            if dw_bias is not None:
                bias += weight.flatten(1) @ dw_bias
            new.pointwise.bias.copy_(bias)
    new.train(pointwise.training)
    return new


# --------------------------------------------------------------------------------------------------
# convert

def convert(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Rewrites `model` in place and returns it (a bare depthwise nn.Conv2d is returned as its
    replacement): each depthwise -> pointwise pair (see the module
    docstring for the rule) becomes one xsep.SeparableConv2d (the pointwise conv becomes nn.Identity),
    and every other depthwise nn.Conv2d becomes an xsep.DepthwiseConv2d. Weights, device, dtype and
    train/eval mode are carried over; outputs are unchanged within floating-point tolerance.
    `backend` is given to every new module (None: automatic choice)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if backend is not None:
        from xsep import backends

        backends.check_name(backend)
    if _depthwise_half(model):  # the model is itself one depthwise conv
        return _depthwise_from(model, backend) if is_depthwise_conv(model) else model
    # Pairs first, over a snapshot of the tree (rewriting changes it), then the remaining depthwise convs.
    for parent in list(model.modules()):
        for depthwise, chain in _pairs(parent, _depthwise_half, _is_pointwise_conv):
            _replace(parent, depthwise.name, _separable_from(depthwise.module, chain[-1].module, backend))
            _replace(parent, chain[-1].name, nn.Identity())
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_depthwise_conv(child):
                setattr(parent, name, _depthwise_from(child, backend))
    return model


# --------------------------------------------------------------------------------------------------
# fuse_for_inference

def _is_foldable_batch_norm(module: nn.Module) -> bool:
    return (type(module) is nn.BatchNorm2d and not module.training and module.running_mean is not None
            and module.running_var is not None)


def _is_conv(module: nn.Module) -> bool:
    return ((type(module) is nn.Conv2d and module.padding_mode == "zeros")
            or type(module) in (DepthwiseConv2d, SeparableConv2d))


def _output_weight_and_bias(conv: nn.Module) -> tuple[nn.Module, nn.Parameter, str]:
    """(holder, weight, attribute) of the half whose output channels the BN normalises."""
    if type(conv) is SeparableConv2d:
        return conv.pointwise, conv.pointwise.weight, "bias"
    return conv, conv.weight, "bias"


def fold_batch_norm_(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """conv's weights absorb an eval-mode BN that follows it: with s = gamma / sqrt(var + eps),
    W' = W * s (per output channel) and b' = (b - mean) * s + beta (b = 0 when the conv has no bias)."""
    holder, weight, attr = _output_weight_and_bias(conv)
    with torch.no_grad():
        var, mean = bn.running_var.to(torch.float64), bn.running_mean.to(torch.float64)
        gamma = bn.weight.to(torch.float64) if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        bias = getattr(holder, attr)
        old_bias = bias.to(torch.float64) if bias is not None else torch.zeros_like(var)
        new_bias = (old_bias - mean) * scale + beta
        weight.copy_((weight.to(torch.float64) * scale.view(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype))
        if bias is None:
            setattr(holder, attr, nn.Parameter(new_bias.to(device=weight.device, dtype=weight.dtype)))
        else:
            bias.copy_(new_bias.to(bias.dtype))


def _sole_call(module: nn.Module) -> str | None:
    """The path of the one submodule `module.forward` amounts to (input -> that submodule -> any
    nn.Identity -> output, nothing else), or None."""
    if not any(True for _ in module.children()):
        return None
    try:
        graph = _ChildrenAreLeaves().trace(module)
    except Exception:  # noqa: BLE001
        return None
    nodes = list(graph.nodes)
    if [n.op for n in nodes[:1]] != ["placeholder"] or nodes[-1].op != "output":
        return None
    value, sole = nodes[0], None
    for node in nodes[1:-1]:
        if node.op != "call_module" or node.args != (value,) or node.kwargs:
            return None
        if type(module.get_submodule(node.target)) is not nn.Identity:
            if sole is not None:
                return None
            sole = node.target
        value = node
    return sole if nodes[-1].args == (value,) else None


def _collapse_wrappers(model: nn.Module) -> None:
    """Replaces each module whose forward is just one call of an xsep conv (e.g. timm's legacy
    SeparableConv2d after convert: the fused op, then the nn.Identity left for the pointwise conv) by
    that conv, so a BN after the wrapper is seen as following a conv."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            sole = _sole_call(child)
            if sole is not None and type(child.get_submodule(sole)) in (DepthwiseConv2d, SeparableConv2d):
                setattr(parent, name, child.get_submodule(sole))


def fuse_for_inference(model: nn.Module, backend: str | None = None) -> nn.Module:
    """For inference: runs `convert`, replaces modules that merely wrap one xsep conv (timm's legacy
    SeparableConv2d) by that conv, folds every eval-mode BatchNorm2d that directly follows a conv (nn.Conv2d,
    xsep.DepthwiseConv2d or xsep.SeparableConv2d; same detection rule as `convert`) into that conv's
    weights and bias, replacing the BN by nn.Identity; then runs `convert` again, which now also fuses
    depthwise -> BN -> pointwise (e.g. Aligned Xception, timm xception41) into one SeparableConv2d:
    the depthwise BN's scale lands in the depthwise weights, its shift is a per-channel bias on the
    intermediate tensor, which the 1x1 pointwise conv turns into a bias of its own (W t + c). A BN with
    an activation between it and the conv is not folded. Rewrites `model` in place and returns it;
    outputs unchanged within floating-point tolerance. The model must be in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_for_inference needs a model in eval mode (call model.eval() first): folding uses "
                         "BatchNorm's running statistics")
    convert(model, backend)  # fuses the pairs with nothing between them, so wrappers of them can go
    _collapse_wrappers(model)
    for parent in list(model.modules()):
        for conv, chain in _pairs(parent, _is_conv, _is_foldable_batch_norm):
            fold_batch_norm_(conv.module, chain[-1].module)
            _replace(parent, chain[-1].name, nn.Identity())
    return convert(model, backend)  # now also the pairs that had a BN between them
