"""xsep.convert and xsep.fuse_for_inference on real model code (timm, torchvision) and small blocks:
what gets replaced, what is left alone, and that outputs do not change."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import xsep
from xsep.convert import find_chains
from xsep.testing import rel_error

TOLERANCE = 1e-5


def randomise_batch_norm_(model: nn.Module) -> nn.Module:
    """BNs away from identity (fresh ones are identities in eval mode, which would hide a wrong fold)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
    return model


def count(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def _is_dw(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups == m.in_channels > 1


def assert_same_outputs(original: nn.Module, rewritten: nn.Module, x: torch.Tensor, tol: float = TOLERANCE):
    with torch.no_grad():
        assert rel_error(rewritten(x), original(x)) <= tol


def assert_same_outputs_float64(original: nn.Module, rewritten: nn.Module, x: torch.Tensor):
    """float64 models (in eval mode) on a float64 input, NCHW and channels_last."""
    x = x.to(torch.float64)
    with torch.no_grad():
        reference = original(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            assert rel_error(rewritten(x.to(memory_format=layout)), reference) <= 1e-12, layout


def separable_pair(c, o, k=3, bias=False, dw_bias=False) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=dw_bias),
        pointwise=nn.Conv2d(c, o, 1, bias=bias)))


# --------------------------------------------------------------------------------------------------
# convert


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


def test_timm_legacy_xception_pairs_are_fused(timm, native):
    model = randomise_batch_norm_(timm.create_model("legacy_xception", pretrained=False)).eval()
    original = copy.deepcopy(model)
    converted = xsep.convert(model, backend="native")
    assert converted is model  # in place
    assert count(converted, xsep.SeparableConv2d) == 34
    assert count(converted, xsep.DepthwiseConv2d) == 0
    assert not any(_is_dw(m) for m in converted.modules())
    assert all(m.backend == "native" for m in converted.modules() if isinstance(m, xsep.SeparableConv2d))
    assert_same_outputs(original, converted, torch.randn(2, 3, 71, 71))


def test_timm_xception41_depthwise_only(timm, native):
    # Aligned Xception: BN between the depthwise and pointwise halves, so nothing is fused by convert.
    model = randomise_batch_norm_(timm.create_model("xception41", pretrained=False)).eval()
    original = copy.deepcopy(model)
    depthwise = sum(_is_dw(m) for m in model.modules())
    converted = xsep.convert(model)
    assert count(converted, xsep.DepthwiseConv2d) == depthwise > 30
    assert count(converted, xsep.SeparableConv2d) == 0
    assert_same_outputs(original, converted, torch.randn(1, 3, 64, 64))


def test_torchvision_mobilenet_v2_depthwise_only(native):
    torchvision = pytest.importorskip("torchvision")
    model = randomise_batch_norm_(torchvision.models.mobilenet_v2()).eval()
    original = copy.deepcopy(model)
    converted = xsep.convert(model)
    assert count(converted, xsep.DepthwiseConv2d) == 17
    assert count(converted, xsep.SeparableConv2d) == 0
    x = torch.randn(1, 3, 64, 64)
    assert_same_outputs(original, converted, x)
    # Training mode (batch statistics, dropout: same seed) and gradients too.
    original.train(), converted.train()
    x = torch.randn(4, 3, 64, 64)
    for m in (original, converted):
        torch.manual_seed(0)
        m(x).sum().backward()
    for layer in (2, 17):
        ours, theirs = converted.features[layer].conv[1][0].weight, original.features[layer].conv[1][0].weight
        assert rel_error(ours.grad, theirs.grad) <= 1e-4


def test_convnext_block_7x7_depthwise(native):
    pytest.importorskip("torchvision")
    from torchvision.models.convnext import CNBlock

    block = CNBlock(32, layer_scale=0.5, stochastic_depth_prob=0.0).eval()
    original = copy.deepcopy(block)
    converted = xsep.convert(block)
    depthwise = converted.block[0]
    assert type(depthwise) is xsep.DepthwiseConv2d
    assert depthwise.kernel_size == (7, 7) and depthwise.bias is not None
    assert_same_outputs(original, converted, torch.randn(2, 32, 14, 14))
    # depthwise 7x7 -> LayerNorm -> Linear...: no chain; fuse_for_inference leaves it as it is, exact.
    block = CNBlock(32, layer_scale=0.5, stochastic_depth_prob=0.0).eval().double()
    original = copy.deepcopy(block)
    assert find_chains(block) == []
    fused = xsep.fuse_for_inference(block)
    assert type(fused.block[0]) is xsep.DepthwiseConv2d and count(fused, xsep.SeparableConv2d) == 0
    assert_same_outputs_float64(original, fused, torch.randn(2, 32, 14, 14))


class BackToBack(nn.Module):
    """Not a Sequential: forward calls the two convs one after the other."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 16, 5, stride=2, padding=2, groups=8, bias=True)  # multiplier 2, with a bias
        self.pw = nn.Conv2d(16, 12, 1, bias=True)

    def forward(self, x):
        return self.pw(self.dw(x)) * 2


def test_back_to_back_forward_with_depthwise_bias_and_multiplier(native):
    model = BackToBack()
    original = copy.deepcopy(model)
    xsep.convert(model)
    assert type(model.dw) is xsep.SeparableConv2d and type(model.pw) is nn.Identity
    assert model.dw.depth_multiplier == 2 and model.dw.stride == (2, 2)
    assert_same_outputs(original, model, torch.randn(2, 8, 15, 15))


class ReusedOutput(nn.Module):
    """The depthwise output also feeds something else: fusing would lose it."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 8, 1, bias=False)

    def forward(self, x):
        mid = self.dw(x)
        return self.pw(mid) + mid


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = separable_pair(8, 8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace this forward
            return self.pw(self.dw(x))
        return self.pair(x)


def test_pairs_that_are_not_immediate_are_not_fused(native):
    for model, x in ((ReusedOutput(), torch.randn(1, 8, 9, 9)), (Untraceable(), torch.randn(1, 8, 9, 9).abs())):
        original = copy.deepcopy(model)
        xsep.convert(model)
        assert type(model.dw) is xsep.DepthwiseConv2d and type(model.pw) is nn.Conv2d
        assert_same_outputs(original, model, x)
    # The Sequential inside the untraceable module is traced on its own, and fused.
    assert type(model.pair.depthwise) is xsep.SeparableConv2d


@pytest.mark.parametrize("activation, name", [(nn.ReLU(), "relu"), (nn.ReLU6(), "relu6"), (nn.ELU(), "elu")])
def test_activation_after_a_depthwise_bias_is_fused_with_the_bias_before_it(native, activation, name):
    # act(d + b): the bias stays between the halves (the fused op's depthwise_bias), in training mode too.
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), activation, nn.Conv2d(8, 6, 1)).double()
    with torch.no_grad():
        model[0].bias.mul_(4)  # so that relu6's upper kink and relu's lower one are both crossed
    original = copy.deepcopy(model)
    (chain,) = find_chains(model)
    assert (chain.depthwise, chain.activation, chain.pointwise, chain.mid_activation) == ("0", "1", "2", name)
    assert chain.reason is None
    xsep.convert(model)
    fused = model[0]
    assert type(fused) is xsep.SeparableConv2d and fused.mid_activation == name
    assert [type(m) for m in model[1:]] == [nn.Identity, nn.Identity]
    assert torch.equal(fused.depthwise.bias, original[0].bias) and torch.equal(fused.pointwise.bias, original[2].bias)
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64) * 3
    assert_same_outputs_float64(original, model, x)
    for m in (original, model):
        m(x).square().sum().backward()
    assert rel_error(fused.depthwise.bias.grad, original[0].bias.grad) <= 1e-10
    assert rel_error(fused.depthwise.weight.grad, original[0].weight.grad) <= 1e-10


def nested_chain(activation: nn.Module, c=6, o=10) -> nn.Sequential:
    """depthwise -> activation in one inner Sequential, the 1x1 conv in the enclosing one, then a BN."""
    return nn.Sequential(nn.Sequential(nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False),
                                                     nn.Identity()), activation),
                         nn.Conv2d(c, o, 1), nn.BatchNorm2d(o))


@pytest.mark.parametrize("activation, name", [(nn.ReLU(inplace=True), "relu"), (nn.ReLU6(), "relu6"),
                                              (nn.ELU(), "elu")])
def test_activation_after_a_bias_free_depthwise_conv_is_fused_across_nesting(native, activation, name):
    model = nested_chain(activation).double()  # float64: the gradients through a training-mode BN cancel a lot
    original = copy.deepcopy(model)
    (chain,) = find_chains(model)
    assert (chain.depthwise, chain.activation, chain.pointwise, chain.reason) == ("0.0.0", "0.1", "1", None)
    xsep.convert(model)
    fused = model[0][0][0]
    assert type(fused) is xsep.SeparableConv2d and fused.mid_activation == name and fused.stride == (2, 2)
    assert [type(m) for m in (model[0][0][1], model[0][1], model[1])] == [nn.Identity] * 3
    assert find_chains(model) == []
    # Training mode (the model is): same outputs, gradients and BN statistics.
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64)
    for m in (original, model):
        m(x).square().sum().backward()
    assert rel_error(fused.depthwise.weight.grad, original[0][0][0].weight.grad) <= 1e-10
    assert rel_error(fused.pointwise.weight.grad, original[1].weight.grad) <= 1e-10
    assert rel_error(model[2].running_var, original[2].running_var) <= 1e-12
    model.eval(), original.eval()
    assert_same_outputs_float64(original, model, x)


def test_activations_the_fused_op_lacks_are_not_chained():
    for activation in (nn.ELU(alpha=0.5), nn.SiLU(), nn.Hardtanh(0.0, 6.0), nn.LeakyReLU()):
        model = nested_chain(activation)
        assert find_chains(model) == []
        xsep.convert(model)
        assert type(model[0][0][0]) is xsep.DepthwiseConv2d and type(model[1]) is nn.Conv2d
    # Two activations, or a BN after the activation: not a chain either.
    for between in ((nn.ReLU(), nn.ReLU()), (nn.ReLU(), nn.BatchNorm2d(4))):
        model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), *between, nn.Conv2d(4, 5, 1))
        assert find_chains(model) == []


def test_containers_with_hooks_or_their_own_forward_are_not_entered(native):
    class Block(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    hooked = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))
    hooked.register_forward_hook(lambda module, args, output: output + 1)
    for inner in (hooked, Block(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))):
        model = nn.Sequential(inner, nn.Conv2d(4, 5, 1))
        original = copy.deepcopy(model)
        assert find_chains(model) == []
        xsep.convert(model)
        assert type(model[0][0]) is xsep.DepthwiseConv2d and type(model[1]) is nn.Conv2d
        assert_same_outputs(original, model, torch.randn(1, 4, 6, 6))


def test_left_alone(native):
    reflect = nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect")
    grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)  # grouped, not depthwise
    strided_1x1 = nn.Conv2d(8, 6, 1, stride=2)  # not a pointwise conv the fused op can absorb
    model = nn.Sequential(reflect, grouped, nn.Conv2d(8, 8, 3, padding=1, groups=8), strided_1x1)
    original = copy.deepcopy(model)
    xsep.convert(model)
    assert model[0] is reflect and model[1] is grouped
    assert type(model[2]) is xsep.DepthwiseConv2d and type(model[3]) is nn.Conv2d
    assert_same_outputs(original, model, torch.randn(1, 4, 10, 10))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_padding_strings_and_a_bare_depthwise_conv(native):
    same = nn.Conv2d(6, 6, 4, padding="same", groups=6)  # even kernel: PyTorch puts the extra pixel last, like TF
    converted = xsep.convert(copy.deepcopy(same))
    assert type(converted) is xsep.DepthwiseConv2d
    assert_same_outputs(same, converted, torch.randn(1, 6, 9, 9))
    with pytest.raises(ValueError, match="backend"):
        xsep.convert(same, backend="nope")
    with pytest.raises(TypeError, match="model"):
        xsep.convert("model")


def test_module_list_targets(native):
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.Conv2d(4, 5, 1)])

        def forward(self, x):
            return self.layers[1](self.layers[0](x))

    model = Stack()
    original = copy.deepcopy(model)
    xsep.convert(model)
    assert type(model.layers[0]) is xsep.SeparableConv2d and type(model.layers[1]) is nn.Identity
    assert_same_outputs(original, model, torch.randn(1, 4, 8, 8))


def test_converted_model_trains_like_the_original(native):
    model = nn.Sequential(separable_pair(4, 8, bias=True), nn.BatchNorm2d(8), nn.ReLU())
    original = copy.deepcopy(model)
    xsep.convert(model)
    x = torch.randn(2, 4, 8, 8)
    for m in (original, model):
        m(x).square().sum().backward()
    assert rel_error(model[0].depthwise.depthwise.weight.grad, original[0].depthwise.weight.grad) <= 1e-5
    assert rel_error(model[0].depthwise.pointwise.weight.grad, original[0].pointwise.weight.grad) <= 1e-5


class ReluFeeds(nn.Module):
    """A ReLU feeding an xsep-convertible pair; `share` also returns the ReLU's input (an in-place ReLU
    changes it), `twice` feeds the ReLU's output to a second user, `on_input` applies it to the input."""

    def __init__(self, inplace: bool, share: bool = False, twice: bool = False, on_input: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=inplace)
        self.sep = separable_pair(4, 6)
        self.share, self.twice, self.on_input = share, twice, on_input

    def forward(self, x):
        y = x if self.on_input else self.bn(x)
        z = self.relu(y)
        out = self.sep(z)
        if self.share:
            out = out + y[:, :1]
        if self.twice:
            out = out + z[:, :1]
        return out


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_before_an_xsep_conv_becomes_its_input_activation(native, inplace):
    torch.manual_seed(0)
    model = randomise_batch_norm_(ReluFeeds(inplace)).double()
    original = copy.deepcopy(model)
    xsep.convert(model)
    assert type(model.relu) is nn.Identity and model.sep[0].input_activation == "relu"
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    assert_same_outputs_float64(original.eval(), model.eval(), x)
    # Training mode, gradients of the input and of every weight (the same parameter order).
    original.train(), model.train()
    grads = []
    for m in (original, model):
        xi = x.clone().requires_grad_()
        grads.append(torch.autograd.grad(m(xi).square().sum(), [xi, *m.parameters()]))
    assert len(grads[0]) == len(grads[1])
    for ours, theirs in zip(grads[1], grads[0]):
        assert rel_error(ours.reshape(theirs.shape), theirs) <= 1e-12


@pytest.mark.parametrize("case", ["in place, input shared", "in place, on the module's input", "output used twice"])
def test_relu_stays_where_absorbing_it_would_change_a_value(native, case):
    model = {"in place, input shared": ReluFeeds(True, share=True),
             "in place, on the module's input": ReluFeeds(True, on_input=True),
             "output used twice": ReluFeeds(False, twice=True)}[case]
    model = randomise_batch_norm_(model).double().eval()
    original = copy.deepcopy(model)
    xsep.convert(model)
    assert type(model.relu) is nn.ReLU and model.sep[0].input_activation == "none"
    # The in-place cases mutate their input: each model gets its own copy.
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert rel_error(model(x.clone()), original(x.clone())) <= 1e-12


# --------------------------------------------------------------------------------------------------
# fuse_for_inference


def test_fuse_for_inference_timm_legacy_xception(timm, native):
    model = randomise_batch_norm_(timm.create_model("legacy_xception", pretrained=False)).eval()
    original = copy.deepcopy(model)
    fused = xsep.fuse_for_inference(model)
    assert count(fused, nn.BatchNorm2d) == 0
    assert count(fused, xsep.SeparableConv2d) == 34
    # Every separable conv but two (block1's first and conv3, which read a block's output) reads a
    # ReLU's output that nothing else reads: the ReLU becomes the fused op's input activation. The
    # three left: act1 (a plain conv follows), act2 (block1's input, also its skip's) and act4.
    assert sum(m.input_activation == "relu" for m in fused.modules() if type(m) is xsep.SeparableConv2d) == 32
    assert count(fused, nn.ReLU) == 3
    assert_same_outputs(original, fused, torch.randn(2, 3, 71, 71))


def test_fuse_for_inference_folds_bn_between_halves(timm, native):
    # Aligned Xception's separable convs are DW -> BN -> PW -> BN: all of it becomes one fused op.
    model = randomise_batch_norm_(timm.create_model("xception41", pretrained=False)).eval()
    original = copy.deepcopy(model)
    chains = find_chains(model)
    assert len(chains) == 39 and all(c.batch_norm is not None for c in chains)
    assert sum(c.mid_activation == "relu" for c in chains) == 3
    fused = xsep.fuse_for_inference(model)
    # The exit module's three have a ReLU after the depthwise BN: its shift becomes their depthwise bias.
    assert count(fused, xsep.SeparableConv2d) == 39 and find_chains(fused) == []
    assert sum(m.depthwise.bias is not None for m in fused.modules() if isinstance(m, xsep.SeparableConv2d)) == 3
    assert count(fused, xsep.DepthwiseConv2d) == 0
    assert count(fused, nn.BatchNorm2d) == 0
    # timm's BatchNormAct2d (a BN subclass that applies an activation) after the stem and shortcuts: folded too,
    # its ReLU left in its place.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == 0
    assert all(m.pointwise.bias is not None for m in fused.modules() if isinstance(m, xsep.SeparableConv2d))
    assert_same_outputs(original, fused, torch.randn(1, 3, 64, 64))


def test_fuse_for_inference_mobilenet_v2(native):
    # InvertedResidual.conv = Sequential(Conv2dNormActivation(1x1 expand), Conv2dNormActivation(dw, BN, ReLU6),
    # Conv2d 1x1, BN) (no expansion in features[1]): each depthwise -> BN -> ReLU6 -> 1x1 chain crosses a
    # nesting level, and all 17 are found. Once the BN is folded, each is fused: the BN's shift becomes the fused
    # op's depthwise bias, before the ReLU6; the 1x1 conv's own BN folds into the pointwise half.
    torchvision = pytest.importorskip("torchvision")
    model = randomise_batch_norm_(torchvision.models.mobilenet_v2()).eval().double()
    chains = find_chains(model)
    assert len(chains) == 17
    for chain, layer in zip(chains, range(1, 18)):
        k = 0 if layer == 1 else 1
        assert (chain.depthwise, chain.batch_norm, chain.activation, chain.pointwise) == (
            f"features.{layer}.conv.{k}.0", f"features.{layer}.conv.{k}.1", f"features.{layer}.conv.{k}.2",
            f"features.{layer}.conv.{k + 1}")
        assert chain.mid_activation == "relu6" and "BatchNorm2d" in chain.reason
    original = copy.deepcopy(model)
    fused = xsep.fuse_for_inference(model)
    assert count(fused, nn.BatchNorm2d) == 0  # every BN follows a conv directly
    assert count(fused, xsep.SeparableConv2d) == 17 and count(fused, xsep.DepthwiseConv2d) == 0
    separable = [m for m in fused.modules() if isinstance(m, xsep.SeparableConv2d)]
    assert all(m.mid_activation == "relu6" and m.depthwise.bias is not None and m.pointwise.bias is not None
               for m in separable)
    assert count(fused, nn.ReLU6) == 35 - 17  # the others follow the 1x1 expansions
    assert find_chains(fused) == []
    assert_same_outputs_float64(original, fused, torch.randn(2, 3, 64, 64))


def test_fuse_for_inference_efficientnet_b0(native):
    # MBConv: depthwise -> BN -> SiLU -> SqueezeExcitation -> 1x1: no chain (SiLU is not a mid activation, SE
    # sits between); BNs folded, depthwise convs converted.
    torchvision = pytest.importorskip("torchvision")
    model = randomise_batch_norm_(torchvision.models.efficientnet_b0()).eval().double()
    assert find_chains(model) == []
    original = copy.deepcopy(model)
    fused = xsep.fuse_for_inference(model)
    assert count(fused, xsep.DepthwiseConv2d) == 16 and count(fused, xsep.SeparableConv2d) == 0
    assert count(fused, nn.BatchNorm2d) == 0
    assert_same_outputs_float64(original, fused, torch.randn(2, 3, 64, 64))


def test_fuse_for_inference_folds_timm_batch_norm_act(timm, native):
    # timm's EfficientNet: every conv is followed by a BatchNormAct2d (BN, then SiLU or nothing); each folds into
    # its conv and leaves its activation. With a drop layer (a BatchNormAct2d option), the dropout stays before it.
    model = randomise_batch_norm_(timm.create_model("efficientnet_b0", pretrained=False)).eval().double()
    bn_acts = [m for m in model.modules() if type(m).__name__ == "BatchNormAct2d"]
    assert len(bn_acts) == 49
    original = copy.deepcopy(model)
    fused = xsep.fuse_for_inference(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == 0
    assert count(fused, nn.SiLU) == count(original, nn.SiLU)  # the BNs' SiLUs, now in their place, and SE's
    assert_same_outputs_float64(original, fused, torch.randn(2, 3, 64, 64))

    norm_act = timm.layers.BatchNormAct2d(4, act_layer=nn.ReLU, drop_layer=nn.Dropout)
    model = randomise_batch_norm_(nn.Sequential(nn.Conv2d(3, 4, 3), norm_act)).eval().double()
    original = copy.deepcopy(model)
    xsep.fuse_for_inference(model)
    assert [type(m) for m in model[1]] == [nn.Dropout, nn.ReLU]
    assert_same_outputs_float64(original, model, torch.randn(2, 3, 9, 9))


def test_fold_batch_norm_math():
    # Depthwise bias + BN with affine=False and a non-default eps, depth multiplier 2.
    dw = nn.Conv2d(3, 6, 3, padding=1, groups=3, bias=True)
    bn = nn.BatchNorm2d(6, eps=1e-3, affine=False)
    pw = nn.Conv2d(6, 5, 1, bias=False)
    model = randomise_batch_norm_(nn.Sequential(dw, bn, pw)).eval()
    original = copy.deepcopy(model)
    xsep.fuse_for_inference(model)
    assert type(model[0]) is xsep.SeparableConv2d and type(model[1]) is nn.Identity and type(model[2]) is nn.Identity
    assert_same_outputs(original, model, torch.randn(2, 3, 7, 7))


def test_bn_after_activation_is_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    xsep.fuse_for_inference(model)
    assert type(model[2]) is nn.BatchNorm2d


def test_fuse_for_inference_needs_eval_mode():
    with pytest.raises(ValueError, match="eval"):
        xsep.fuse_for_inference(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
