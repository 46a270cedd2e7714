"""Derivatives of xsep's three forward ops, for every namespace that implements them (torch.ops.xsep,
torch.ops.xsep_triton): written once here, whichever backend runs the kernels.

- First derivatives (`loss.backward()`, `torch.autograd.grad`) call the namespace's backward ops,
  so each backend's kernels serve both passes.
- Under `create_graph=True` (grad mode on inside the backward: double backward, gradient penalties,
  Hessian-vector products, torch.func.grad) the gradients come instead from the reference formulas
  (xsep/ops/reference.py: PyTorch's own convolutions), whose results are differentiable again.
- Forward mode (`torch.func.jvp`, `torch.autograd.forward_ad`): the tangent is computed with the
  reference ops (the ops are linear in each tensor argument); the primal output still comes from
  the backend's kernel.

`function(namespace, op)` is the autograd.Function with all of the above; it also works under
torch.func (grad, vjp, jacrev, jvp, vmap) when applied from Python, as xsep.functional does
(`apply`). Each forward op's Autograd kernel (the op called directly, and under torch.compile)
applies the same Function.
"""

from __future__ import annotations

import functools
import inspect

import torch

from xsep import _extension
from xsep.ops import reference
from xsep.ops.schemas import FORWARD_OPS

# Where each forward op's tensor arguments stand in its schema (the others: stride, padding, dilation,
# activations), and how many arguments it has; separable_conv2d's depthwise_bias comes last, after
# the activations. Optional tensors may be None. Within the tensors, BIAS is the bias added to the
# output (its gradient: grad_output summed over N, H, W).
TENSOR_POSITIONS = {"depthwise_conv2d": (0, 1, 2), "pointwise_conv2d": (0, 1, 2), "separable_conv2d": (0, 1, 2, 3, 9)}
NUM_ARGS = {"depthwise_conv2d": 7, "pointwise_conv2d": 3, "separable_conv2d": 10}
BIAS = {"depthwise_conv2d": 2, "pointwise_conv2d": 2, "separable_conv2d": 3}


def split_args(op: str, args) -> tuple[list, list]:
    """(tensors, rest) of a call's arguments in schema order; trailing defaults (None) filled in."""
    args = full_args(op, args)
    positions = TENSOR_POSITIONS[op]
    return [args[i] for i in positions], [a for i, a in enumerate(args) if i not in positions]


def full_args(op: str, args) -> list:
    """A call's arguments with its trailing defaults (None) filled in, as the Function takes them."""
    return list(args) + [None] * (NUM_ARGS[op] - len(args))


def join_args(op: str, tensors, rest) -> list:
    """The inverse of split_args: the arguments in schema order."""
    tensors, rest = iter(tensors), iter(rest)
    positions = TENSOR_POSITIONS[op]
    return [next(tensors) if i in positions else next(rest) for i in range(NUM_ARGS[op])]
BACKWARD_OPS = ("depthwise_conv2d_grad_input", "depthwise_conv2d_grad_weight", "depthwise_conv2d_backward",
                "pointwise_conv2d_grad_input", "pointwise_conv2d_grad_weight", "separable_conv2d_backward")


def _reference_of(op: str, tensors, rest, which):
    """The reference formula of `op` as a function of the tensors at positions `which` (the
    others, and the non-tensor arguments, held fixed)."""
    def f(*chosen):
        args = list(tensors)
        for i, t in zip(which, chosen):
            args[i] = t
        return getattr(reference, op)(*join_args(op, args, rest))
    return f


def _kernel_grads(namespace: str, op: str, tensors, rest, needs, grad_output):
    """First derivatives from the namespace's backward ops (bias: grad_output summed over N, H, W).
    Called with grad mode off (see `gradients`), so the ops run below autograd: nothing to record,
    and their Autograd kernel (Python, torch.library's) would cost a trip through it each call."""
    with torch._C._AutoDispatchBelowAutograd():
        return _kernel_grads_below_autograd(namespace, op, tensors, rest, needs, grad_output)


def _kernel_grads_below_autograd(namespace: str, op: str, tensors, rest, needs, grad_output):
    ops = getattr(torch.ops, namespace)
    grads = [None] * len(tensors)
    if op == "separable_conv2d":
        depthwise_bias = tensors[4]
        if any(needs[:3]) or (depthwise_bias is not None and needs[4]):
            # One fused pass gives all four: the depthwise output is recomputed, never stored.
            gi, gdw, gpw, gdb = ops.separable_conv2d_backward(grad_output, *tensors[:3], *rest, depthwise_bias)
            grads[:3] = [g if need else None for g, need in zip((gi, gdw, gpw), needs)]
            grads[4] = gdb if depthwise_bias is not None and needs[4] else None
    elif op == "depthwise_conv2d" and needs[0] and needs[1]:
        # Both from one call: a kernel may read grad_output once for the two.
        grads[:2] = ops.depthwise_conv2d_backward(grad_output, *tensors[:2], *rest)
    else:
        input, weight = tensors[:2]
        if needs[0]:
            grads[0] = getattr(ops, f"{op}_grad_input")(grad_output, input, weight, *rest)
        if needs[1]:
            grads[1] = getattr(ops, f"{op}_grad_weight")(grad_output, input, weight, *rest)
    bias = BIAS[op]
    if tensors[bias] is not None and needs[bias]:
        grads[bias] = grad_output.sum(dim=(0, 2, 3))
    return grads


def _reference_grads(op: str, tensors, rest, needs, grad_output):
    """First derivatives that are themselves differentiable (torch.func.vjp of the reference)."""
    which = [i for i, t in enumerate(tensors) if t is not None and needs[i]]
    _, vjp = torch.func.vjp(_reference_of(op, tensors, rest, which), *(tensors[i] for i in which))
    grads = [None] * len(tensors)
    for i, g in zip(which, vjp(grad_output)):
        grads[i] = g
    return grads


def gradients(namespace: str, op: str, tensors, rest, needs, grad_output):
    """The gradients of `op`'s tensor arguments (None where not needed)."""
    if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
        return _reference_grads(op, tensors, rest, needs, grad_output)
    return _kernel_grads(namespace, op, tensors, rest, needs, grad_output)


def _sum(terms):
    terms = [t for t in terms if t is not None]
    return None if not terms else functools.reduce(torch.add, terms)


def _depthwise_tangent(x, w, tx, tw, stride, padding, dilation, input_activation):
    """Tangent of depthwise(act(x), w) (no bias): linear in x through relu's 0/1 mask, linear in w."""
    terms = []
    if tx is not None:
        mask = tx if input_activation == "none" else tx * (x > 0)
        terms.append(reference.depthwise_conv2d(mask, w, None, stride, padding, dilation))
    if tw is not None:
        terms.append(reference.depthwise_conv2d(x, tw, None, stride, padding, dilation, input_activation))
    return _sum(terms)


def tangent(op: str, tensors, rest, tangents):
    """The forward-mode derivative of `op` for the given input tangents (None: zero), from the
    reference ops (the ops are linear in each tensor; the activations contribute their derivative)."""
    bias_tangent = None if tangents[BIAS[op]] is None else tangents[BIAS[op]][:, None, None]
    if op == "pointwise_conv2d":
        (x, w, _), (tx, tw, _) = tensors, tangents
        return _sum([None if tx is None else reference.pointwise_conv2d(tx, w, None),
                     None if tw is None else reference.pointwise_conv2d(x, tw, None), bias_tangent])
    if op == "depthwise_conv2d":
        (x, w, _), (tx, tw, _) = tensors, tangents
        return _sum([_depthwise_tangent(x, w, tx, tw, *rest), bias_tangent])
    (x, dw, pw, _, db), (tx, tdw, tpw, _, tdb) = tensors, tangents
    stride, padding, dilation, input_activation, mid_activation = rest
    d = reference.depthwise_conv2d(x, dw, db, stride, padding, dilation, input_activation)
    td = _sum([_depthwise_tangent(x, dw, tx, tdw, stride, padding, dilation, input_activation),
               None if tdb is None else tdb[:, None, None]])
    terms = [bias_tangent]
    if td is not None:
        terms.append(reference.pointwise_conv2d(td * reference.activation_derivative(d, mid_activation), pw, None))
    if tpw is not None:
        terms.append(reference.pointwise_conv2d(reference.activation(d, mid_activation), tpw, None))
    return _sum(terms)


# --------------------------------------------------------------------------------------------------
# Registration: the forward ops' Autograd kernel runs them through an autograd.Function with all of
# the above (torch.library.register_autograd has no forward mode, and its Function is not usable
# under torch.func).


@functools.cache
def function(namespace: str, op: str) -> type[torch.autograd.Function]:
    """The autograd.Function of torch.ops.<namespace>.<op>; its forward runs the op's kernel. It
    takes every argument of the op's schema, in order (see `apply`)."""
    def forward(*args):
        return _below_autograd(namespace, op, args)

    def setup_context(ctx, inputs, output):
        tensors, ctx.rest = split_args(op, inputs)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    backward = _backward(namespace, op)

    def jvp(ctx, *tangents):
        return tangent(op, ctx.saved_tensors, ctx.rest, split_args(op, tangents)[0])

    # Function.apply binds each call's arguments to forward's signature: computed once here, not per call.
    forward.__signature__ = inspect.signature(forward)
    return type(_function_name(namespace, op), (torch.autograd.Function,), {
        "generate_vmap_rule": True,  # torch.vmap over forward, backward and jvp
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp),
    })


def _function_name(namespace: str, op: str) -> str:
    """XsepDepthwiseConv2D for ("xsep", "depthwise_conv2d"): the name autograd shows (grad_fn)."""
    return "".join(part.title() for part in f"{namespace}_{op}".split("_"))


def _backward(namespace: str, op: str):
    """The backward of `op`'s autograd.Functions (ctx.rest: its non-tensor arguments)."""
    def backward(ctx, grad_output):
        needs, _ = split_args(op, ctx.needs_input_grad)
        grads = gradients(namespace, op, ctx.saved_tensors, ctx.rest, needs, grad_output)
        return tuple(join_args(op, grads, [None] * len(ctx.rest)))
    return backward


# The layouts argument of xsep._C's functions for a call already on the native backend: any.
_ANY_LAYOUT = sum(_extension.LAYOUT_BITS.values())


@functools.cache
def plain_function(namespace: str, op: str) -> type[torch.autograd.Function]:
    """`function`'s first and higher derivatives without its forward mode and torch.func support,
    for calls with neither (xsep.functional.module_call): a Function whose forward takes ctx has no
    setup_context, and Function.apply then calls it as it is, where with setup_context it first binds
    each call's arguments to forward's signature (inspect; inside mobilenet_v2's training step, with
    the interpreter's data out of the caches, tens of microseconds a call)."""
    def forward(ctx, *args):  # (grad mode off: the library's function runs the kernel, see module_call)
        tensors, ctx.rest = split_args(op, args)
        ctx.save_for_backward(*tensors)
        native = _extension.MODULE_CALLS.get(op) if namespace == "xsep" else None
        out = None if native is None else native(_ANY_LAYOUT, *args)
        return _below_autograd(namespace, op, args) if out is None else out

    return type(_function_name(namespace, op) + "Plain", (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(_backward(namespace, op))})


def apply(namespace: str, op: str, *args):
    """torch.ops.<namespace>.<op>(*args) with its derivatives, as the public API runs it: through
    its autograd.Function, applied here so that torch.func's transforms see it. Under torch.compile
    and torch.jit.trace the op itself instead (a node of the graph, differentiated by its Autograd
    kernel): Dynamo cannot trace an autograd.Function that has a jvp, and a trace would record the
    Function as an opaque Python call that torch.jit.save cannot keep."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return getattr(getattr(torch.ops, namespace), op)(*args)
    if not records_derivatives(op, args):
        return _below_autograd(namespace, op, args)
    return function(namespace, op).apply(*full_args(op, args))


def records_derivatives(op: str, args) -> bool:
    """Whether a call has anything for autograd to record: grad mode on with a tensor argument that
    requires grad, a forward-mode AD level open (dual tensors), or a torch.func transform active.
    Inference calls skip the Function (its apply binds the arguments to forward's signature and
    builds a context on every call: tens of microseconds, as much as a small layer's kernel)."""
    if torch._C._functorch.peek_interpreter_stack() is not None or torch.autograd.forward_ad._current_level >= 0:
        return True
    return records_gradients(op, args)


def records_gradients(op: str, args) -> bool:
    """records_derivatives without its forward-mode and torch.func checks, for callers that made
    them already (xsep.functional.module_call): grad mode on and a tensor argument requiring grad."""
    if not torch.is_grad_enabled():
        return False
    positions = TENSOR_POSITIONS[op]
    return any(i < len(args) and args[i] is not None and args[i].requires_grad for i in positions)


def _below_autograd(namespace: str, op: str, args):
    with torch._C._AutoDispatchBelowAutograd():  # to the kernel, past the Autograd kernel
        return getattr(getattr(torch.ops, namespace), op)(*args)


def _autograd_kernel(namespace: str, op: str):
    """The Autograd kernel of a forward op called directly (torch.ops.<namespace>.<op>)."""
    fn = function(namespace, op)

    def kernel(*args):
        if torch._C._functorch.peek_interpreter_stack() is not None:
            # A Function applied inside the dispatcher cannot take part in torch.func's transforms.
            raise RuntimeError(f"{namespace}.{op} called directly under a torch.func transform: call it "
                               f"through xsep.functional.{op} (or the xsep modules) instead")
        if not records_derivatives(op, args):
            return _below_autograd(namespace, op, args)
        return fn.apply(*full_args(op, args))
    return kernel


def _no_derivative(namespace: str, name: str):
    def backward(ctx, *grads):
        raise RuntimeError(f"{namespace}.{name} has no derivative (no double backward through a backward op called "
                           f"directly): differentiate through the forward ops ({', '.join(FORWARD_OPS)}), whose "
                           "backward is differentiable under create_graph=True")
    return backward


def register(namespace: str, lib: torch.library.Library) -> None:
    """Autograd for the ops of `namespace` (`lib`: a Library of that namespace that lives as long as
    the ops). The backward ops raise when differentiated (rather than PyTorch's default for ops
    without a formula: a warning and silently missing gradients)."""
    # A torch.library.custom_op (torch.ops.xsep_triton) comes with an Autograd kernel of its own, which
    # this one replaces: torch 2.11 refuses that unless told (allow_override=False by default; 2.14: True).
    override = {"allow_override": True} if "allow_override" in inspect.signature(lib.impl).parameters else {}
    for op in FORWARD_OPS:
        lib.impl(op, _autograd_kernel(namespace, op), "Autograd", **override)
    for name in BACKWARD_OPS:
        torch.library.register_autograd(f"{namespace}::{name}", _no_derivative(namespace, name), lib=lib)
