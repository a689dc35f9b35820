"""Model tests: shapes, gradients, exact parameter counts and the shortcut options."""

import math

import pytest
import torch
import torch.nn as nn

import resnet
from resnet import MODELS, ZeroPadShortcut, build_model, count_macs, count_parameters

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
PLAIN_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)

# Table 6 of the paper / DESIGN.md: option A, 10 classes.
CIFAR_PARAMS = {
    "ResNet20": 269_722,
    "ResNet32": 464_154,
    "ResNet44": 658_586,
    "ResNet56": 853_018,
    "ResNet110": 1_727_962,
    "ResNet1202": 19_421_274,
}
# ImageNet-style nets with the CIFAR stem, 10 classes.
IMAGENET_PARAMS = {
    "ResNet18": 11_173_962,
    "ResNet34": 21_282_122,
    "ResNet50": 23_520_842,
    "ResNet101": 42_512_970,
    "ResNet152": 58_156_618,
}
# Two 1x1 projections with BN: 16->32 (512 + 64) and 32->64 (2,048 + 128).
OPTION_B_EXTRA = 2_752
# 7x7x3x64 - 3x3x3x64 weights in the first conv.
IMAGENET_STEM_EXTRA = 7_680


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_model_table_lists_every_model_by_its_factory_name():
    expected = (
        [f"ResNet{d}" for d in CIFAR_DEPTHS]
        + [f"Plain{d}" for d in PLAIN_DEPTHS]
        + [f"ResNet{d}" for d in IMAGENET_DEPTHS]
    )
    assert list(MODELS) == expected
    for name, builder in MODELS.items():
        assert getattr(resnet, name) is builder


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_gives_finite_output_and_every_parameter_a_gradient(name):
    model = build_model(name)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", list(MODELS))
def test_hundred_classes_output_shape(name):
    # Training mode: an untrained net's BN running statistics are the identity, and through
    # hundreds of residual blocks they let eval-mode activations overflow.
    model = build_model(name, num_classes=100)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,expected", CIFAR_PARAMS.items())
def test_cifar_resnet_parameter_counts(name, expected):
    assert count_parameters(build_model(name)) == expected
    assert count_parameters(build_model(name, shortcut="B")) == expected + OPTION_B_EXTRA


@pytest.mark.parametrize("depth", PLAIN_DEPTHS)
def test_plain_net_has_the_parameters_of_the_option_a_resnet(depth):
    plain = build_model(f"Plain{depth}")
    assert count_parameters(plain) == CIFAR_PARAMS[f"ResNet{depth}"]
    blocks = [m for m in plain.modules() if isinstance(m, resnet.BasicBlock)]
    assert len(blocks) == (depth - 2) // 2
    assert all(block.shortcut is None for block in blocks)


@pytest.mark.parametrize("name,expected", IMAGENET_PARAMS.items())
def test_imagenet_style_parameter_counts(name, expected):
    assert count_parameters(build_model(name)) == expected
    assert count_parameters(build_model(name, stem="imagenet")) == expected + IMAGENET_STEM_EXTRA


def test_imagenet_stem_quarters_the_map_before_the_first_stage():
    model = build_model("ResNet18", stem="imagenet")
    assert model.stem(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    assert build_model("ResNet18").stem(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 32, 32)


@pytest.mark.parametrize("name", list(MODELS))
def test_depth_matches_the_name(name):
    digits = "".join(ch for ch in name if ch.isdigit())
    assert build_model(name).depth == int(digits)


def test_option_a_shortcut_has_no_parameters_and_zero_pads_subsampled_input():
    shortcut = ZeroPadShortcut(stride=2, extra_channels=16)
    assert count_parameters(shortcut) == 0
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


def test_option_a_resnet_has_no_parameters_outside_its_convs_bns_and_classifier():
    model = build_model("ResNet56")
    shortcut_params = [n for n, _ in model.named_parameters() if "shortcut" in n]
    assert shortcut_params == []
    assert sum(isinstance(m, ZeroPadShortcut) for m in model.modules()) == 2


def test_option_b_projects_only_where_the_shape_changes():
    model = build_model("ResNet20", shortcut="B")
    projections = [m for m in model.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)
                   and m[0].kernel_size == (1, 1)]
    assert [(p[0].in_channels, p[0].out_channels, p[0].stride) for p in projections] == [(16, 32, (2, 2)), (32, 64, (2, 2))]


def test_bottleneck_accepts_option_a_shortcuts():
    model = build_model("ResNet50", shortcut="A")
    assert count_parameters(model) < IMAGENET_PARAMS["ResNet50"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_forward_macs():
    # conv1 442,368 + stage 1 (6 convs) 14,155,776 + stages 2 and 3 12,976,128 each + fc 640
    assert count_macs(build_model("ResNet20")) == 40_551_040


def test_he_initialisation_and_identity_batchnorm():
    model = build_model("ResNet56")
    conv = model.stages[2][1].conv2  # 64 -> 64, 3x3
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: build_model("ResNet21"), "choose from: ResNet20"),
        (lambda: resnet.cifar_resnet(21), r"depth 6n\+2"),
        (lambda: build_model("ResNet20", shortcut="C"), "shortcut must be one of"),
        (lambda: build_model("ResNet18", stem="tiny"), "stem must be one of"),
    ],
)
def test_bad_options_get_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "model,count",
    [
        (lambda: build_model("ResNet20"), 19),  # 6n+1 3x3 convs
        (lambda: build_model("Plain56"), 55),
        (lambda: build_model("ResNet20", shortcut="B"), 19),  # the 1x1 projections are not counted
        (lambda: build_model("ResNet50"), 17),  # the 3x3 stem + one 3x3 conv in each of 16 Bottlenecks
    ],
)
def test_response_layers_are_the_bns_after_every_3x3_conv(model, count):
    layers = resnet.response_layers(model())
    assert len(layers) == count
    assert all(isinstance(layer, nn.BatchNorm2d) for layer in layers)


def test_layer_response_std_measures_each_layer_in_eval_mode_and_restores_the_mode():
    model = build_model("ResNet20")
    images = torch.randn(8, 3, 32, 32)
    stds = resnet.layer_response_std(model, images)
    assert len(stds) == 19 and all(value > 0 for value in stds)
    assert model.training
    model.eval()
    with torch.no_grad():
        stem_response = model.stem[1](model.stem[0](images))
    assert stds[0] == pytest.approx(stem_response.std().item(), rel=1e-5)
