"""Model tests: shapes, gradients, exact parameter counts and the shortcut options."""

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import resnet
from resnet import MODELS, ZeroPadShortcut, build_model, count_macs, count_parameters

ROOT = Path(__file__).resolve().parent.parent

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
        + [f"PreActResNet{d}" for d in (110, 164, 1001)]
        + [f"PreActResNet{d}" for d in IMAGENET_DEPTHS]
        + ["ResNeXt29_8x64d", "ResNeXt29_16x64d", "ResNeXt29_32x4d", "ResNeXt29_2x64d"]
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


# One net per family (each builds its classifier in one place; basic and bottleneck blocks apart).
ONE_PER_FAMILY = ("ResNet20", "Plain20", "ResNet18", "ResNet50", "PreActResNet164", "PreActResNet18", "ResNeXt29_2x64d")


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
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
    assert build_model(name).depth == int(re.search(r"\d+", name).group())


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


@pytest.mark.parametrize("name", ["ResNet20", "ResNet50", "PreActResNet18", "ResNeXt29_2x64d"])
def test_macs_are_what_pytorch_s_flop_counter_counts(name):
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert count_macs(model) == counter.get_total_flops() // 2  # grouped convs, bottlenecks and the classifier


def test_he_initialisation_scales_by_the_output_fan():
    model = build_model("ResNet56")
    conv = model.stages[1][0].conv1  # 16 -> 32, 3x3: fan-in 144 and fan-out 288 give stds 0.118 and 0.083
    assert (conv.in_channels, conv.out_channels) == (16, 32)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)


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


# He et al. 2016b and Xie et al. 2017 nets, 10 classes, counted from the reference definitions
# (BN included; the pre-activation paper's 10.2M for ResNet-1001 counts convs and the classifier only).
PREACT_AND_RESNEXT_PARAMS = {
    "PreActResNet110": 1_730_522,
    "PreActResNet164": 1_703_258,
    "PreActResNet1001": 10_327_706,
    "PreActResNet18": 11_172_170,
    "PreActResNet34": 21_280_330,
    "PreActResNet50": 23_513_162,
    "PreActResNet101": 42_505_290,
    "PreActResNet152": 58_148_938,
    "ResNeXt29_8x64d": 34_426_698,
    "ResNeXt29_16x64d": 68_155_210,
    "ResNeXt29_32x4d": 4_775_754,
    "ResNeXt29_2x64d": 9_130_314,
}


@pytest.mark.parametrize("name,expected", PREACT_AND_RESNEXT_PARAMS.items())
def test_preact_and_resnext_parameter_counts(name, expected):
    assert count_parameters(build_model(name)) == expected


def test_preact_resnet1001_without_bn_is_the_paper_s_10_2m():
    model = build_model("PreActResNet1001")
    weights = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  for p in m.parameters(recurse=False))
    assert weights == 10_178_490


def test_preact_nets_end_with_bn_relu_that_kuangliu_omits():
    model = build_model("PreActResNet18")
    assert isinstance(model.final[0], nn.BatchNorm2d) and isinstance(model.final[1], nn.ReLU)
    assert count_parameters(model) - count_parameters(model.final) == 11_171_146  # kuangliu/pytorch-cifar's count
    assert isinstance(build_model("ResNet18").final, nn.Identity)
    assert len(model.stem) == 1  # the CIFAR stem is the conv alone: the first block activates


def test_a_preact_projection_takes_the_pre_activated_input():
    block = resnet.PreActBlock(16, 32, stride=2).eval()
    x = torch.randn(2, 16, 8, 8)
    activated = torch.relu(block.bn1(x))
    main_path = block.conv2(torch.relu(block.bn2(block.conv1(activated))))
    assert torch.allclose(block(x), main_path + block.shortcut(activated))
    assert isinstance(block.shortcut, nn.Conv2d)  # a 1x1 conv, no BN after it
    same_shape = resnet.PreActBlock(16, 16).eval()
    assert torch.allclose(same_shape(x), same_shape.conv2(torch.relu(same_shape.bn2(same_shape.conv1(
        torch.relu(same_shape.bn1(x)))))) + x)  # the identity carries the raw input


@pytest.mark.parametrize("name,groups,widths", [("ResNeXt29_8x64d", 8, (512, 1024, 2048)),
                                                ("ResNeXt29_32x4d", 32, (128, 256, 512))])
def test_resnext_groups_double_per_stage_from_the_same_bottleneck(name, groups, widths):
    model = build_model(name)
    blocks = [stage[0] for stage in model.stages]
    assert all(type(block) is resnet.Bottleneck for block in blocks)
    assert [block.conv2.groups for block in blocks] == [groups] * 3
    assert tuple(block.conv2.in_channels for block in blocks) == widths
    assert [block.conv3.out_channels for block in blocks] == [256, 512, 1024]
    assert isinstance(model.stem[1], nn.BatchNorm2d) and model.stem[0].out_channels == 64


def test_each_factory_names_its_paper_and_its_exact_parameter_count():
    for name, factory in MODELS.items():
        doc = factory.__doc__ or ""
        assert "\n" not in doc and re.search(r"(He|Xie) et al\. 20\d\d", doc), name
        with torch.device("meta"):  # shapes without storage: ResNeXt29_16x64d's 68M weights in no time
            model = factory()
        assert f"{count_parameters(model):,} parameters at 10 classes" in doc, name


def test_the_public_names_are_the_models_and_their_tools():
    assert set(MODELS) <= set(resnet.__all__)
    assert all(hasattr(resnet, name) for name in resnet.__all__)


@pytest.mark.slow
def test_the_model_table_has_a_title_and_ends_quietly_when_its_reader_stops_early():
    table = subprocess.run(f"{shlex.quote(sys.executable)} resnet.py | head -n 3", shell=True, cwd=ROOT,
                           capture_output=True, text=True)
    assert table.stdout.splitlines()[0].startswith("Every model of resnet.py") and "ResNet20" in table.stdout
    assert "Traceback" not in table.stderr


@pytest.mark.parametrize("name, options", [
    ("ResNet20", {}), ("ResNet20", {"shortcut": "B"}), ("Plain20", {}), ("ResNet18", {}), ("ResNet50", {}),
    ("ResNet18", {"stem": "imagenet"}), ("PreActResNet110", {}), ("PreActResNet18", {}), ("ResNeXt29_2x64d", {}),
])
def test_every_family_traces_as_one_graph_so_that_cuda_graphs_hold_the_whole_model(name, options):
    """torch.compile's graph of a training forward, with no break: reduce-overhead's graphs and the
    step graph (--step-graph on) then replay the whole model, whatever its depth (the blocks repeat)."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(build_model(name, **options).train())(torch.randn(2, 3, 32, 32))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
