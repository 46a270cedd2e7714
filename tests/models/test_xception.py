"""xsep.models.xception: the paper's architecture and size, timm legacy_xception weight compatibility,
weight-file errors, the ablation options, memory formats, autocast, torch.compile and backends."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import xsep
from xsep import models
from xsep.testing import rel_error

# The paper's Table 3 (and Keras' trainable count): 20,806,952 features + 2,049,000 classifier.
PAPER_PARAMETERS = 22_855_952
# Small inputs keep these tests fast; 71x71 is Xception's minimum (the final map is 3x3).
SMALL = (2, 3, 71, 71)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def randomise_batch_norm_(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters away from identity, so a BN mapped to the wrong place or
    ignored changes the output (fresh BNs are identities in eval mode)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A timm legacy_xception with random weights and BN statistics, in eval mode, and its state_dict
    saved to a file (what a user would have from timm)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(5)
    model = randomise_batch_norm_(timm.create_model("legacy_xception", pretrained=False)).eval()
    path = tmp_path_factory.mktemp("weights") / "legacy_xception.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_parameter_count_is_the_papers():
    assert parameter_count(models.xception()) == PAPER_PARAMETERS
    # Features plus classifier, as the notes split them.
    assert parameter_count(models.xception(num_classes=0)) == 20_806_952


def test_299_input_gives_10x10_features_and_logits():
    model = models.xception(num_classes=7).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 299, 299))
        assert features.shape == (1, 2048, 10, 10)
        assert (features >= 0).all()  # ends with the ReLU
        assert model.forward_head(features).shape == (1, 7)
        assert model.forward_head(features, pre_logits=True).shape == (1, 2048)


def test_every_separable_conv_is_fused_and_relu_units_use_input_activation():
    model = models.xception()
    convs = [m for m in model.modules() if isinstance(m, xsep.SeparableConv2d)]
    assert len(convs) == 34  # the paper's 36 convs minus the 2-conv stem
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    # Only block1's first conv (input ReLU'd by the stem) and conv3 (after an add, no ReLU) read un-activated.
    plain = [name for name, m in model.named_modules()
             if isinstance(m, xsep.SeparableConv2d) and m.input_activation == "none"]
    assert plain == ["block1.rep.0", "conv3"]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) and m.pointwise.bias is None for m in convs)


def test_relu_units_run_as_single_fused_ops(native):
    """What actually runs: one xsep::separable_conv2d per separable conv, and no ReLU pass of its own
    except the stem's two and the last one (before pooling)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: list[str] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    model = models.xception_tiny(backend="native").eval()
    with torch.no_grad(), Recorder():
        model(torch.randn(*SMALL))
    separable = sum(isinstance(m, xsep.SeparableConv2d) for m in model.modules())
    assert calls.count("xsep::separable_conv2d") == separable == 13
    assert sum(name.startswith("aten::relu") for name in calls) == 3


def test_state_dict_keys_are_timms_except_the_depthwise_name(timm_weights):
    timm_model, _ = timm_weights
    ours = set(models.xception().state_dict())
    theirs = set(timm_model.state_dict())
    renamed = {re.sub(r"\.conv1\.weight$", ".depthwise.weight", k) for k in theirs}
    assert ours == renamed


def test_timm_weights_give_timms_logits(timm_weights, native):
    timm_model, path = timm_weights
    model = models.xception(weights=path, backend="native").eval()
    x = torch.randn(*SMALL)
    with torch.no_grad():
        expected, actual = timm_model(x), model(x)
    assert rel_error(actual, expected) <= 1e-5
    # And back: xsep's weights in timm's model (what the benchmark's baseline uses).
    twin = models.timm_legacy_xception(like=model)
    with torch.no_grad():
        assert rel_error(twin(x), expected) <= 1e-6


def test_xsep_checkpoint_round_trip(tmp_path):
    model = randomise_batch_norm_(models.xception_tiny(num_classes=3)).eval()
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)  # a training checkpoint loads too
    loaded = models.xception_tiny(num_classes=3, weights=path).eval()
    x = torch.randn(2, 3, 71, 71)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_weight_files_raise_clear_errors(tmp_path, timm_weights):
    _, timm_path = timm_weights
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="weights=.*garbage.pth.*weights_only"):
        models.xception(weights=garbage)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="expected a state_dict"):
        models.xception(weights=not_a_dict)

    with pytest.raises(FileNotFoundError):
        models.xception(weights=tmp_path / "missing.pth")

    state = torch.load(timm_path, weights_only=True)
    del state["block3.rep.4.conv1.weight"]
    state["block3.extra.weight"] = torch.zeros(1)
    state["bn2.weight"] = torch.zeros(65)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError) as error:
        models.xception(weights=broken)
    message = str(error.value)
    assert "missing keys (1): block3.rep.4.depthwise.weight" in message
    assert "unexpected keys (1): block3.extra.weight" in message
    assert "bn2.weight: file (65,), model (64,)" in message

    # A classifier of another size: named, with the way out.
    with pytest.raises(ValueError, match=r"fc\.weight: file \(1000, 2048\), model \(10, 2048\).*reset_classifier"):
        models.xception(num_classes=10, weights=timm_path)


def test_reset_classifier():
    model = models.xception_tiny(num_classes=10)
    assert model.get_classifier() is model.fc
    model.reset_classifier(4)
    assert model(torch.randn(1, 3, 71, 71)).shape == (1, 4)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(torch.randn(1, 3, 71, 71)).shape == (1, model.num_features)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": -1}, "num_classes"), ({"in_chans": 0}, "in_chans"), ({"drop_rate": 1.0}, "drop_rate"),
    ({"width": 0}, "width"), ({"middle_blocks": -1}, "middle_blocks"),
    ({"mid_activation": "gelu"}, "mid_activation"), ({"backend": "cuda"}, "backend"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.xception_tiny(**kwargs)


def test_reduced_variant():
    model = models.xception(num_classes=10, width=0.25, middle_blocks=2)
    assert model.num_blocks == 6 and model.num_features == 512
    assert models.xception_tiny().num_features == 256
    assert model(torch.randn(1, 3, 71, 71)).shape == (1, 10)


def test_mid_activation_option(native):
    model = models.xception_tiny(mid_activation="elu", backend="native")
    assert all(m.mid_activation == "elu" for m in model.modules() if isinstance(m, xsep.SeparableConv2d))
    # Same weights without the activation compute something else.
    plain = models.xception_tiny(backend="native")
    plain.load_state_dict(model.state_dict())
    x = torch.randn(*SMALL)
    assert 1e-3 < rel_error(model(x), plain(x)) < math.inf  # differ, and not by a NaN
    reference = models.xception_tiny(mid_activation="elu", backend="torch")
    reference.load_state_dict(model.state_dict())
    assert rel_error(model(x), reference(x)) <= 1e-5


def test_residual_false_removes_every_skip():
    model = models.xception_tiny(residual=False)
    assert not any(name.endswith(("skip", "skipbn")) for name, _ in model.named_modules())
    residual = models.xception_tiny()
    skip_parameters = sum(p.numel() for n, p in residual.named_parameters() if ".skip" in n)
    assert parameter_count(model) == parameter_count(residual) - skip_parameters
    # Each block's output is its rep's output alone.
    block = model.block4
    x = torch.randn(1, block.rep[0].in_channels, 9, 9)
    assert torch.equal(block(x), block.rep(x))


def test_native_and_torch_backends_agree_forward_and_backward(native):
    ours = randomise_batch_norm_(models.xception_tiny(backend="native", drop_rate=0.0))
    reference = models.xception_tiny(backend="torch")
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 71, 71)
    target = torch.randint(0, 10, (4,))
    for model in (ours, reference):
        nn.functional.cross_entropy(model(x), target).backward()  # training mode: batch statistics
    assert rel_error(ours(x), reference(x)) <= 1e-5
    grads = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert rel_error(p.grad, grads[name].grad) <= 1e-4, name


def test_channels_last_and_autocast(native):
    model = randomise_batch_norm_(models.xception_tiny(backend="native")).eval()
    x = torch.randn(*SMALL)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        features = model_cl.forward_features(x.to(memory_format=torch.channels_last))
        assert features.is_contiguous(memory_format=torch.channels_last)
        assert rel_error(model_cl.forward_head(features), expected) <= 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model_cl(x.to(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16
    assert rel_error(low.float(), expected) <= 0.05


def test_torch_compile_fullgraph(native):
    model = models.xception_tiny(backend="native").eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(*SMALL)
    with torch.no_grad():
        assert rel_error(compiled(x), model(x)) <= 1e-5


def test_train_step_under_compile(native):
    torch._dynamo.reset()
    model = models.xception_tiny(backend="native")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(*SMALL)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_timm_reference_rejects_reduced_models():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="like="):
        models.timm_legacy_xception(like=models.xception_tiny())


def test_fuse_for_inference_on_xsep_xception(native):
    model = randomise_batch_norm_(models.xception_tiny(backend="native")).eval()
    x = torch.randn(*SMALL)
    with torch.no_grad():
        expected = model(x)
        fused = xsep.fuse_for_inference(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        assert rel_error(fused(x), expected) <= 1e-5
