"""Rewriting existing models to use xsep's layers: `convert` (depthwise convs -> xsep, depthwise ->
pointwise chains -> one fused op) and `fuse_for_inference` (BatchNorm folded into the convs first).

Which convs count as a "depthwise -> pointwise" chain
----------------------------------------------------
Every module's own `forward` is traced with torch.fx. The tracing enters plain containers, i.e.
`nn.Sequential` and subclasses that keep its forward (torchvision's Conv2dNormActivation), at any
depth, and records every other submodule as one call (a leaf, searched on its own when its own
forward is traced). A chain is a depthwise conv whose output goes, each value to exactly one
consumer, through nothing but `nn.Identity`, at most one `nn.BatchNorm2d` and then at most one
activation the fused op applies between its halves (`nn.ReLU`, `nn.ReLU6`, `nn.ELU(alpha=1)`), into
a 1x1 conv; each module is called exactly once in that forward and no parameter of theirs is read
directly. So a chain may cross nesting levels: in torchvision's mobilenet_v2 the depthwise conv,
its BN and ReLU6 sit in one Conv2dNormActivation and the 1x1 conv is the next element of the
enclosing Sequential. `find_chains(model)` lists the chains with the reason any is not fused.

What is fused (exactly, in training mode too): a chain with nothing but identities between the
halves (a depthwise bias moves into the pointwise bias), and a chain with an activation (it becomes
`mid_activation`; a depthwise bias stays the fused op's `depthwise_bias`, added before it, since
relu6(y + b) is not relu6(y) plus anything). Not fused as it stands: a chain with a BatchNorm;
`fuse_for_inference` folds it into the depthwise conv first (eval mode), which fuses every
depthwise -> BN -> activation -> 1x1 chain (mobilenet_v2's 17) with the folded shift as the
depthwise bias.

Limits: a module whose forward fx cannot trace (data-dependent control flow, unsupported Python) is
searched for nothing but stand-alone depthwise convs (containers inside it are traced on their own);
a chain split across two non-container modules (the depthwise conv last in one, the pointwise first
in the next, as when a custom block's forward ends with it) is not found; tracing specialises on the
module's current Python state (e.g. `self.training` branches are taken as they stand). Subclasses of
nn.Conv2d / nn.BatchNorm2d (timm's Conv2dSame, BatchNormAct2d, ...) and of the activations are left
alone by `convert`, as are convs whose padding_mode is not 'zeros'; `fuse_for_inference` folds timm's
BatchNormAct2d too (its BN into the conv before it, leaving its dropout and activation modules).

The fused module replaces the depthwise conv where it sits, and the pointwise conv and the activation
become `nn.Identity`, so every forward is unchanged and computes the same function.

Then an `nn.ReLU` whose output goes to nothing but one xsep conv (directly, through `nn.Identity`, or
into a module whose forward just calls one, such as timm's legacy SeparableConv2d) becomes that conv's
`input_activation` and an `nn.Identity`: the op applies it as it reads its input instead of a pass
over the tensor of its own (timm's legacy_xception: 32 of its 35 ReLUs). An in-place ReLU only where
its input is a conv's or BatchNorm's output that nothing else uses, since another user would have
seen the change.
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


def _mid_activation(module: nn.Module) -> str | None:
    """The fused op's name for an activation module it can apply between its halves, else None."""
    if type(module) is nn.ReLU:
        return "relu"
    if type(module) is nn.ReLU6:
        return "relu6"
    if type(module) is nn.ELU and module.alpha == 1.0:
        return "elu"
    return None


# --------------------------------------------------------------------------------------------------
# Tracing: containers entered, everything else one call

@dataclass
class _Call:
    name: str          # the submodule's path in the traced module (e.g. `conv.1.0`, `layers.0` of a ModuleList)
    module: nn.Module
    node: torch.fx.Node


def _is_container(module: nn.Module) -> bool:
    """An nn.Sequential (or a subclass keeping its forward, e.g. torchvision's Conv2dNormActivation)
    without hooks: its forward is nothing but its children called in turn, so tracing may enter it."""
    return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
            and not (module._forward_hooks or module._forward_pre_hooks))


class _ChildrenAreLeaves(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


class _ContainersEntered(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not _is_container(module)


def _calls(parent: nn.Module) -> list[_Call]:
    """The submodules `parent.forward` calls (entering containers at any depth), in call order; empty
    when it cannot be traced. Leaves out any submodule called more than once or whose parameters it
    reads directly (a rewrite of those would change more than the one call)."""
    if not any(True for _ in parent.children()):
        return []
    try:
        graph = _ContainersEntered().trace(parent)
    except Exception:  # noqa: BLE001 - any untraceable forward just means "no chains found here"
        return []
    called = [n for n in graph.nodes if n.op == "call_module"]
    counts = Counter(n.target for n in called)
    read_directly = {n.target.rsplit(".", 1)[0] for n in graph.nodes if n.op == "get_attr" and "." in n.target}
    return [_Call(n.target, parent.get_submodule(n.target), n) for n in called
            if counts[n.target] == 1 and n.target not in read_directly]


def _replace(parent: nn.Module, path: str, new: nn.Module) -> None:
    owner, _, name = path.rpartition(".")
    setattr(parent.get_submodule(owner) if owner else parent, name, new)


def _sole_consumer(call: _Call, by_node: dict[torch.fx.Node, _Call]) -> _Call | None:
    """The call that takes `call`'s output as its only argument, when nothing else uses that output."""
    users = list(call.node.users)
    if len(users) != 1 or users[0] not in by_node or users[0].args != (call.node,) or users[0].kwargs:
        return None
    return by_node[users[0]]


def _pairs(parent: nn.Module, first, second) -> list[tuple[_Call, list[_Call]]]:
    """(first call, [identities..., second call]) for each `first`-kind call directly feeding a
    `second`-kind one through nothing but nn.Identity."""
    calls = _calls(parent)
    by_node = {c.node: c for c in calls}
    found = []
    for call in calls:
        if first(call.module):
            chain, following = [], _sole_consumer(call, by_node)
            while following is not None and type(following.module) is nn.Identity:
                chain.append(following)
                following = _sole_consumer(following, by_node)
            if following is not None and second(following.module):
                found.append((call, chain + [following]))
    return found


@dataclass
class Chain:
    """A depthwise conv feeding a 1x1 conv through nothing but nn.Identity, at most one BatchNorm2d,
    then at most one activation the fused op can apply between its halves. Paths are relative to the
    model given to `find_chains`. `reason`: why `convert` does not fuse it as it stands (None: it does)."""

    depthwise: str
    pointwise: str
    batch_norm: str | None = None
    activation: str | None = None
    mid_activation: str | None = None   # the activation's name for the fused op ('relu', 'relu6', 'elu')
    reason: str | None = None


@dataclass
class _Found:
    depthwise: _Call
    pointwise: _Call
    batch_norm: _Call | None
    activation: _Call | None


def _chains_in(parent: nn.Module) -> list[_Found]:
    """The chains (see `Chain`) in `parent.forward`'s calls."""
    calls = _calls(parent)
    by_node = {c.node: c for c in calls}
    found = []
    for call in calls:
        if not _depthwise_half(call.module):
            continue
        batch_norm = activation = None
        following = _sole_consumer(call, by_node)
        while following is not None:
            module = following.module
            if type(module) is nn.BatchNorm2d and batch_norm is None and activation is None:
                batch_norm = following
            elif _mid_activation(module) is not None and activation is None:
                activation = following
            elif type(module) is not nn.Identity:
                break
            following = _sole_consumer(following, by_node)
        if following is not None and _is_pointwise_conv(following.module):
            found.append(_Found(call, following, batch_norm, activation))
    return found


def _why_not_fused(found: _Found) -> str | None:
    if found.batch_norm is not None:
        return "a BatchNorm2d between the halves (fuse_for_inference folds it into the depthwise conv, in eval mode)"
    return None


def find_chains(model: nn.Module) -> list[Chain]:
    """Every depthwise -> [BatchNorm2d] -> [activation] -> 1x1 conv chain in `model` that `convert`
    and `fuse_for_inference` look for (rule in the module docstring), in module order, each with
    the reason it is not fused as it stands, if any. The model is not changed."""
    chains, seen = [], set()
    for prefix, parent in model.named_modules():

        def path(call: _Call | None) -> str | None:
            return None if call is None else (f"{prefix}.{call.name}" if prefix else call.name)

        for found in _chains_in(parent):
            if id(found.depthwise.module) in seen:  # also found from an enclosing module
                continue
            seen.add(id(found.depthwise.module))
            chains.append(Chain(path(found.depthwise), path(found.pointwise), path(found.batch_norm),
                                path(found.activation),
                                None if found.activation is None else _mid_activation(found.activation.module),
                                _why_not_fused(found)))
    return chains


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


def _separable_from(depthwise: nn.Module, pointwise: nn.Conv2d, backend: str | None,
                    mid_activation: str | None = None) -> SeparableConv2d:
    """One fused module computing pointwise(mid_activation(depthwise(x))). Without an activation a
    depthwise bias b moves into the pointwise bias (the pointwise conv is linear and 1x1:
    W (d + b) + c = W d + (W b + c), one addition fewer per pixel); with one, it stays the fused
    module's depthwise bias."""
    if type(depthwise) is DepthwiseConv2d:
        in_channels, multiplier = depthwise.in_channels, depthwise.depth_multiplier
        input_activation = None if depthwise.input_activation == "none" else depthwise.input_activation
        backend = depthwise.backend if backend is None else backend
    else:
        in_channels, multiplier, input_activation = depthwise.in_channels, depthwise.out_channels // \
            depthwise.in_channels, None
    keep_dw_bias = mid_activation is not None and depthwise.bias is not None
    dw_bias = None if keep_dw_bias else depthwise.bias  # what moves into the pointwise bias
    has_bias = pointwise.bias is not None or dw_bias is not None
    weight = pointwise.weight
    new = SeparableConv2d(in_channels, pointwise.out_channels, depthwise.kernel_size, depthwise.stride,
                          _padding(depthwise), depthwise.dilation, multiplier, bias=has_bias,
                          input_activation=input_activation, mid_activation=mid_activation, backend=backend,
                          device=weight.device, dtype=weight.dtype, depthwise_bias=keep_dw_bias)
    with torch.no_grad():
        new.depthwise.weight.copy_(depthwise.weight)
        new.pointwise.weight.copy_(weight)
        if keep_dw_bias:
            new.depthwise.bias.copy_(depthwise.bias)
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
    replacement): each depthwise -> pointwise chain (see the module docstring for the rule) with
    nothing but identities, or one activation, between the halves becomes one xsep.SeparableConv2d
    (the activation and the pointwise conv become nn.Identity), and
    every other depthwise nn.Conv2d becomes an xsep.DepthwiseConv2d. Weights, device, dtype and
    train/eval mode are carried over; outputs are unchanged within floating-point tolerance.
    `backend` is given to every new module (None: automatic choice)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if backend is not None:
        from xsep import backends

        backends.check_name(backend)
    if _depthwise_half(model):  # the model is itself one depthwise conv
        return _depthwise_from(model, backend) if is_depthwise_conv(model) else model
    # Chains first, over a snapshot of the tree (rewriting changes it; a chain seen from an enclosing
    # module is gone by the time its container is traced), then the remaining depthwise convs.
    for parent in list(model.modules()):
        for found in _chains_in(parent):
            if _why_not_fused(found) is not None:
                continue
            mid = None if found.activation is None else _mid_activation(found.activation.module)
            _replace(parent, found.depthwise.name,
                     _separable_from(found.depthwise.module, found.pointwise.module, backend, mid))
            _replace(parent, found.pointwise.name, nn.Identity())
            if found.activation is not None:
                _replace(parent, found.activation.name, nn.Identity())
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_depthwise_conv(child):
                setattr(parent, name, _depthwise_from(child, backend))
    _absorb_input_relus(model)
    return model


# Modules whose output is a tensor of its own (never a view of their input), so an in-place ReLU on it
# changes nothing another value shares.
_FRESH_OUTPUT = (nn.Conv2d, nn.BatchNorm2d, DepthwiseConv2d, SeparableConv2d)


def _sole_user_back_to_producer(call: _Call, by_node: dict[torch.fx.Node, _Call]) -> bool:
    """Whether the value `call` takes came from one of _FRESH_OUTPUT in this forward, through nothing
    but nn.Identity, with no other user on the way (an in-place ReLU changes it for every user)."""
    node = call.node.args[0] if len(call.node.args) == 1 and not call.node.kwargs else None
    while isinstance(node, torch.fx.Node) and len(node.users) == 1 and node in by_node:
        module = by_node[node].module
        if type(module) is not nn.Identity:
            return type(module) in _FRESH_OUTPUT
        node = node.args[0] if len(node.args) == 1 and not node.kwargs else None
    return False


def _absorb_input_relus(model: nn.Module) -> None:
    """Each nn.ReLU whose output feeds nothing but one xsep conv without an input activation (through
    nn.Identity at most; or a module that merely calls one, see _xsep_conv_in) becomes that conv's
    input_activation='relu' and an nn.Identity: the op applies it as it reads its input, instead of
    a pass of its own over the tensor (and its gradient). An in-place ReLU only where its input is a
    conv's or BN's output that nothing else uses (another user would have seen the change)."""
    for parent in list(model.modules()):
        calls = _calls(parent)
        by_node = {c.node: c for c in calls}
        for call in calls:
            if type(call.module) is not nn.ReLU:
                continue
            consumer = _sole_consumer(call, by_node)
            while consumer is not None and type(consumer.module) is nn.Identity:
                consumer = _sole_consumer(consumer, by_node)
            conv = None if consumer is None else _xsep_conv_in(consumer.module)
            if conv is None or conv.input_activation != "none":
                continue
            if call.module.inplace and not _sole_user_back_to_producer(call, by_node):
                continue
            conv.input_activation = "relu"
            _replace(parent, call.name, nn.Identity())


def _xsep_conv_in(module: nn.Module) -> DepthwiseConv2d | SeparableConv2d | None:
    """`module` if it is an xsep conv, or the xsep conv its forward amounts to (a wrapper such as timm's
    legacy SeparableConv2d after convert), else None."""
    if type(module) in (DepthwiseConv2d, SeparableConv2d):
        return module
    sole = _sole_call(module)
    inner = None if sole is None else module.get_submodule(sole)
    return inner if type(inner) in (DepthwiseConv2d, SeparableConv2d) else None


# --------------------------------------------------------------------------------------------------
# fuse_for_inference

def _is_batch_norm_act(module: nn.Module) -> bool:
    """timm's BatchNormAct2d: a BatchNorm2d subclass whose forward is the BN, then its `drop` and `act`
    modules (recognised by name and attributes: timm is an optional dependency)."""
    return (isinstance(module, nn.BatchNorm2d) and type(module).__name__ == "BatchNormAct2d"
            and isinstance(getattr(module, "drop", None), nn.Module)
            and isinstance(getattr(module, "act", None), nn.Module))


def _is_foldable_batch_norm(module: nn.Module) -> bool:
    return ((type(module) is nn.BatchNorm2d or _is_batch_norm_act(module)) and not module.training
            and module.running_mean is not None and module.running_var is not None)


def _after_fold(bn: nn.Module) -> nn.Module:
    """What is left of a BN once folded into its conv: nothing, or a BatchNormAct2d's drop and act."""
    if not _is_batch_norm_act(bn):
        return nn.Identity()
    return bn.act if type(bn.drop) is nn.Identity else nn.Sequential(bn.drop, bn.act)


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
    weights and bias, replacing the BN by nn.Identity (timm's BatchNormAct2d likewise, replaced by its
    activation, after its dropout if it has one); then runs `convert` again, which now also fuses
    depthwise -> BN -> pointwise (e.g. Aligned Xception, timm xception41) into one SeparableConv2d:
    the depthwise BN's scale lands in the depthwise weights, its shift is a per-channel bias on the
    intermediate tensor, which the 1x1 pointwise conv turns into a bias of its own (W t + c). A BN with
    an activation between it and the conv is not folded. A depthwise -> BN -> activation -> 1x1 chain
    (mobilenet_v2's) becomes one SeparableConv2d whose depthwise bias is the BN's shift, applied
    before the activation. Rewrites `model` in place and returns it;
    outputs unchanged within floating-point tolerance. The model must be in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_for_inference needs a model in eval mode (call model.eval() first): folding uses "
                         "BatchNorm's running statistics")
    convert(model, backend)  # fuses the chains with no BN in them, so wrappers of them can go
    _collapse_wrappers(model)
    for parent in list(model.modules()):
        for conv, chain in _pairs(parent, _is_conv, _is_foldable_batch_norm):
            fold_batch_norm_(conv.module, chain[-1].module)
            _replace(parent, chain[-1].name, _after_fold(chain[-1].module))
    return convert(model, backend)  # now also the chains that had a BN (and no activation) in them
