"""The contract of xsep's ops, written once: each op's schema and the activation names with their codes.

Every namespace that implements the ops registers exactly these schemas (tests/test_schemas.py and
tests/triton/test_triton_registration.py check it): the compiled library (torch.ops.xsep; its C++
header is generated from this file at build time, see xsep/_build.py) and the Triton backend
(torch.ops.xsep_triton). The activation codes are the integers the C++, CUDA and Triton kernels (and
the CUDA emulator's launchers) receive.

Importing this module must stay cheap and torch-free: the build loads it by path.
"""

from __future__ import annotations

# padding is (top, bottom, left, right); activations are names from INPUT_ACTIVATIONS (applied to
# the input as it is loaded) and MID_ACTIVATIONS (between the depthwise and pointwise halves).
_DEPTHWISE_ARGS = "int[2] stride, int[4] padding, int[2] dilation, str input_activation"
_SEPARABLE_ARGS = f"{_DEPTHWISE_ARGS}, str mid_activation"

SCHEMAS: dict[str, str] = {
    "depthwise_conv2d": f"(Tensor input, Tensor weight, Tensor? bias, {_DEPTHWISE_ARGS}) -> Tensor",
    "depthwise_conv2d_grad_input": f"(Tensor grad_output, Tensor input, Tensor weight, {_DEPTHWISE_ARGS}) -> Tensor",
    "depthwise_conv2d_grad_weight": f"(Tensor grad_output, Tensor input, Tensor weight, {_DEPTHWISE_ARGS}) -> Tensor",
    # Both gradients, (grad_input, grad_weight), in one call (what a training step needs): a kernel
    # may then read grad_output once for the two.
    "depthwise_conv2d_backward": (f"(Tensor grad_output, Tensor input, Tensor weight, {_DEPTHWISE_ARGS}) "
                                  "-> (Tensor, Tensor)"),
    "pointwise_conv2d": "(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
    "pointwise_conv2d_grad_input": "(Tensor grad_output, Tensor input, Tensor weight) -> Tensor",
    "pointwise_conv2d_grad_weight": "(Tensor grad_output, Tensor input, Tensor weight) -> Tensor",
    # depthwise_bias [C * M] is added to the depthwise output before the mid activation (a depthwise
    # convolution followed by a folded BatchNorm); last, with a default, so that calls without it
    # keep their form.
    "separable_conv2d": (f"(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, Tensor? bias, "
                         f"{_SEPARABLE_ARGS}, Tensor? depthwise_bias=None) -> Tensor"),
    # Returns (grad_input, grad_depthwise_weight, grad_pointwise_weight, grad_depthwise_bias), the
    # last one the depthwise output's gradient summed over (N, H, W), empty [0] without a depthwise
    # bias (a pass saved); the (pointwise) bias gradient is grad_output summed over (N, H, W), left
    # to the caller.
    "separable_conv2d_backward": (f"(Tensor grad_output, Tensor input, Tensor depthwise_weight, "
                                  f"Tensor pointwise_weight, {_SEPARABLE_ARGS}, Tensor? depthwise_bias=None) "
                                  "-> (Tensor, Tensor, Tensor, Tensor)"),
}

# The user-facing forward ops (each with its backward ops above).
FORWARD_OPS = ("depthwise_conv2d", "pointwise_conv2d", "separable_conv2d")

# Activation names; a name's position is its code in every kernel (C++ enum xsep::Activation).
ACTIVATIONS = ("none", "relu", "relu6", "elu")
INPUT_ACTIVATIONS = ACTIVATIONS[:2]
MID_ACTIVATIONS = ACTIVATIONS


def activation_code(name: str) -> int:
    return ACTIVATIONS.index(name)
