"""ResNets for CIFAR-10, as in He et al., "Deep Residual Learning for Image Recognition" (2016).

Three families share one network class:

* the paper's CIFAR nets (Sec. 4.2): depth 6n+2, a 3x3 conv with 16 filters, three stages of
  n BasicBlocks with 16/32/64 filters on 32/16/8 maps, global average pooling, a linear layer.
  Shortcut option A (parameter-free) by default, as in the paper;
* plain nets: the same layers without any shortcut (the paper's Figure 6 control);
* ImageNet-style ResNet-18/34/50/101/152 (64/128/256/512 widths) with either a CIFAR stem
  (3x3 conv, stride 1, no max-pool) or the ImageNet stem (7x7 conv, stride 2, 3x3 max-pool).

Every model is built by a factory of its own name (``from resnet import ResNet56``), and
``MODELS`` maps each name to its factory. ``python resnet.py`` prints the table of all models.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MODELS", "build_model", "count_parameters", "count_macs", "layer_response_std",
    "ResNet", "BasicBlock", "Bottleneck", "PreActBlock", "PreActBottleneck", "ZeroPadShortcut",
    "ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110", "ResNet1202",
    "Plain20", "Plain32", "Plain44", "Plain56", "Plain110",
    "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152",
    "PreActResNet110", "PreActResNet164", "PreActResNet1001",
    "PreActResNet18", "PreActResNet34", "PreActResNet50", "PreActResNet101", "PreActResNet152",
    "ResNeXt29_8x64d", "ResNeXt29_16x64d", "ResNeXt29_32x4d", "ResNeXt29_2x64d",
]

SHORTCUTS = ("A", "B")
STEMS = ("cifar", "imagenet")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, since a BatchNorm always follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution; no bias, since a BatchNorm always follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity on the existing channels, zeros for the new ones, no parameters.

    Where the block halves the map, the shortcut takes every second pixel (the paper's
    "performed with a stride of 2") so that the addition lines up with the strided conv.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def make_shortcut(
    shortcut: Optional[str], in_planes: int, out_planes: int, stride: int, *, projection_bn: bool = True
) -> Optional[nn.Module]:
    """The shortcut branch of one block, or None for a plain (shortcut-free) block.

    Options A and B differ only where the shape changes; elsewhere both are the identity. A
    pre-activation block projects an input that its own BN has already normalised, so its
    projection is the 1x1 conv alone (``projection_bn=False``), as in the paper's code.
    """
    if shortcut is None:
        return None
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} or None, got {shortcut!r}")
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(stride, out_planes - in_planes)
    if not projection_bn:
        return conv1x1(in_planes, out_planes, stride)
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs; BN after each; the second ReLU comes after the addition."""

    expansion = 1
    num_layers = 2  # weighted layers on the main path, for the model's depth

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Optional[str] = "A") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def bottleneck_width(planes: int, groups: int, base_width: int) -> int:
    """Channels of a bottleneck's 3x3 conv: ``planes`` for a ResNet; for ResNeXt (Xie et al.
    2017) ``groups`` (the cardinality C) groups of ``base_width`` (d) channels at the first stage,
    doubling with ``planes`` at each later one, as in torchvision and facebookresearch/ResNeXt."""
    return int(planes * base_width / 64) * groups


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand to planes x 4; BN after each; ReLU after
    the addition.

    The stride sits on the 3x3 conv, not on the first 1x1 conv: a strided 1x1 conv would
    simply drop three quarters of its input (torchvision's "ResNet V1.5" choice).
    """

    expansion = 4
    num_layers = 3

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Optional[str] = "B",
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class PreActBlock(nn.Module):
    """He et al. 2016b ("Identity Mappings"): BN -> ReLU -> 3x3 conv, twice, and the addition with
    nothing after it. A projection shortcut takes the pre-activated input, as the paper's code does."""

    expansion = 1
    num_layers = 2
    preactivation = True

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Optional[str] = "B") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride, projection_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + project_or_keep(self.shortcut, x, activated)


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck: BN -> ReLU before each of 1x1, 3x3 and 1x1 (x4) convs."""

    expansion = 4
    num_layers = 3
    preactivation = True

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Optional[str] = "B") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride, projection_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + project_or_keep(self.shortcut, x, activated)


def project_or_keep(shortcut: nn.Module, x: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
    """A pre-activation block's shortcut: its identity carries the raw input x; its projection
    (where the shape changes) is applied to the pre-activated input."""
    return x if isinstance(shortcut, nn.Identity) else shortcut(activated)


Block = Type[Union[BasicBlock, Bottleneck, PreActBlock, PreActBottleneck]]


def make_stem(stem: str, out_planes: int, preactivation: bool = False) -> nn.Sequential:
    """The layers before the first stage: conv + BN + ReLU, and for ImageNet a max-pool. A
    pre-activation net's CIFAR stem is the conv alone: its first block normalises and activates."""
    if stem == "cifar" and preactivation:
        return nn.Sequential(conv3x3(3, out_planes))
    if stem == "cifar":
        return nn.Sequential(conv3x3(3, out_planes), nn.BatchNorm2d(out_planes), nn.ReLU(inplace=True))
    if stem == "imagenet":
        return nn.Sequential(
            nn.Conv2d(3, out_planes, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")


class ResNet(nn.Module):
    """Stem, one stage per entry of ``widths``, global average pooling, linear classifier.

    The first stage keeps the map size; every later stage halves it in its first block.
    ``shortcut=None`` builds the plain net of the same layers.
    """

    def __init__(
        self,
        block: Block,
        num_blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        shortcut: Optional[str] = "A",
        stem: str = "cifar",
        stem_width: Optional[int] = None,
        **block_options,
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError("num_blocks and widths must have one entry per stage")
        self.depth = 2 + block.num_layers * sum(num_blocks)  # stem conv + blocks + classifier
        preactivation = getattr(block, "preactivation", False)
        stem_width = stem_width or widths[0]
        self.stem = make_stem(stem, stem_width, preactivation)
        in_planes = stem_width
        stages = []
        for index, (planes, count) in enumerate(zip(widths, num_blocks)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_stride in [stride] + [1] * (count - 1):
                blocks.append(block(in_planes, planes, block_stride, shortcut, **block_options))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # A pre-activation net ends with the BN -> ReLU that its last addition is not followed by
        # (the paper's appendix; kuangliu/pytorch-cifar omits it, its issue #137).
        self.final = (nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True)) if preactivation
                      else nn.Identity())
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. 2015 ("Delving deep into rectifiers") for every conv, as the paper states;
        # BN starts as the identity. The linear layer keeps PyTorch's default initialisation.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.final(self.stages(self.stem(x)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


CIFAR_WIDTHS = (16, 32, 64)
IMAGENET_WIDTHS = (64, 128, 256, 512)


def cifar_resnet(depth: int, num_classes: int = 10, shortcut: Optional[str] = "A") -> ResNet:
    """The paper's CIFAR-10 net of the given depth (6n+2); ``shortcut=None`` gives the plain net."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n] * 3, CIFAR_WIDTHS, num_classes, shortcut, stem="cifar")


def ResNet20(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 269,722 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(20, num_classes, shortcut)


def ResNet32(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 464,154 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(32, num_classes, shortcut)


def ResNet44(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 658,586 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(44, num_classes, shortcut)


def ResNet56(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 853,018 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(56, num_classes, shortcut)


def ResNet110(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 1,727,962 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(110, num_classes, shortcut)


def ResNet1202(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    """He et al. 2016, Sec. 4.2 (Table 6): 19,421,274 parameters at 10 classes with option-A shortcuts."""
    return cifar_resnet(1202, num_classes, shortcut)


def Plain20(num_classes: int = 10) -> ResNet:
    """He et al. 2016, Figure 6's plain net: 269,722 parameters at 10 classes (the ResNet's, without shortcuts)."""
    return cifar_resnet(20, num_classes, shortcut=None)


def Plain32(num_classes: int = 10) -> ResNet:
    """He et al. 2016, Figure 6's plain net: 464,154 parameters at 10 classes (the ResNet's, without shortcuts)."""
    return cifar_resnet(32, num_classes, shortcut=None)


def Plain44(num_classes: int = 10) -> ResNet:
    """He et al. 2016, Figure 6's plain net: 658,586 parameters at 10 classes (the ResNet's, without shortcuts)."""
    return cifar_resnet(44, num_classes, shortcut=None)


def Plain56(num_classes: int = 10) -> ResNet:
    """He et al. 2016, Figure 6's plain net: 853,018 parameters at 10 classes (the ResNet's, without shortcuts)."""
    return cifar_resnet(56, num_classes, shortcut=None)


def Plain110(num_classes: int = 10) -> ResNet:
    """He et al. 2016, Figure 6's plain net: 1,727,962 parameters at 10 classes (the ResNet's, without shortcuts)."""
    return cifar_resnet(110, num_classes, shortcut=None)


def imagenet_resnet(
    block: Block, num_blocks: Sequence[int], num_classes: int = 10, shortcut: str = "B", stem: str = "cifar"
) -> ResNet:
    """An ImageNet-style ResNet (Table 1 of the paper) with the chosen stem."""
    return ResNet(block, num_blocks, IMAGENET_WIDTHS, num_classes, shortcut, stem)


def ResNet18(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    """He et al. 2016, Table 1's net with the CIFAR stem: 11,173,962 parameters at 10 classes with option B."""
    return imagenet_resnet(BasicBlock, [2, 2, 2, 2], num_classes, shortcut, stem)


def ResNet34(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    """He et al. 2016, Table 1's net with the CIFAR stem: 21,282,122 parameters at 10 classes with option B."""
    return imagenet_resnet(BasicBlock, [3, 4, 6, 3], num_classes, shortcut, stem)


def ResNet50(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    """He et al. 2016, Table 1's net with the CIFAR stem: 23,520,842 parameters at 10 classes with option B."""
    return imagenet_resnet(Bottleneck, [3, 4, 6, 3], num_classes, shortcut, stem)


def ResNet101(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    """He et al. 2016, Table 1's net with the CIFAR stem: 42,512,970 parameters at 10 classes with option B."""
    return imagenet_resnet(Bottleneck, [3, 4, 23, 3], num_classes, shortcut, stem)


def ResNet152(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    """He et al. 2016, Table 1's net with the CIFAR stem: 58,156,618 parameters at 10 classes with option B."""
    return imagenet_resnet(Bottleneck, [3, 8, 36, 3], num_classes, shortcut, stem)


def preact_cifar_resnet(depth: int, num_classes: int = 10) -> ResNet:
    """He et al. 2016b's CIFAR pre-activation nets: basic blocks for depth 6n+2 up to 110 layers
    (16/32/64 filters), bottlenecks for depth 9n+2 beyond (outputs 64/128/256, width out/4)."""
    if depth <= 110:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a basic-block pre-activation ResNet has depth 6n+2, got {depth}")
        return ResNet(PreActBlock, [(depth - 2) // 6] * 3, CIFAR_WIDTHS, num_classes, shortcut="B")
    if (depth - 2) % 9:
        raise ValueError(f"a bottleneck pre-activation ResNet has depth 9n+2, got {depth}")
    return ResNet(PreActBottleneck, [(depth - 2) // 9] * 3, CIFAR_WIDTHS, num_classes, shortcut="B")


def PreActResNet110(num_classes: int = 10) -> ResNet:
    """He et al. 2016b (Identity Mappings), its CIFAR net: 1,730,522 parameters at 10 classes."""
    return preact_cifar_resnet(110, num_classes)


def PreActResNet164(num_classes: int = 10) -> ResNet:
    """He et al. 2016b (Identity Mappings), its CIFAR net: 1,703,258 parameters at 10 classes."""
    return preact_cifar_resnet(164, num_classes)


def PreActResNet1001(num_classes: int = 10) -> ResNet:
    """He et al. 2016b (Identity Mappings), its CIFAR net: 10,327,706 parameters at 10 classes."""
    return preact_cifar_resnet(1001, num_classes)


def PreActResNet18(num_classes: int = 10, stem: str = "cifar") -> ResNet:
    """He et al. 2016b's pre-activation blocks at Table 1's widths, CIFAR stem: 11,172,170 parameters at 10 classes."""
    return imagenet_resnet(PreActBlock, [2, 2, 2, 2], num_classes, "B", stem)


def PreActResNet34(num_classes: int = 10, stem: str = "cifar") -> ResNet:
    """He et al. 2016b's pre-activation blocks at Table 1's widths, CIFAR stem: 21,280,330 parameters at 10 classes."""
    return imagenet_resnet(PreActBlock, [3, 4, 6, 3], num_classes, "B", stem)


def PreActResNet50(num_classes: int = 10, stem: str = "cifar") -> ResNet:
    """He et al. 2016b's pre-activation blocks at Table 1's widths, CIFAR stem: 23,513,162 parameters at 10 classes."""
    return imagenet_resnet(PreActBottleneck, [3, 4, 6, 3], num_classes, "B", stem)


def PreActResNet101(num_classes: int = 10, stem: str = "cifar") -> ResNet:
    """He et al. 2016b's pre-activation blocks at Table 1's widths, CIFAR stem: 42,505,290 parameters at 10 classes."""
    return imagenet_resnet(PreActBottleneck, [3, 4, 23, 3], num_classes, "B", stem)


def PreActResNet152(num_classes: int = 10, stem: str = "cifar") -> ResNet:
    """He et al. 2016b's pre-activation blocks at Table 1's widths, CIFAR stem: 58,148,938 parameters at 10 classes."""
    return imagenet_resnet(PreActBottleneck, [3, 8, 36, 3], num_classes, "B", stem)


RESNEXT_WIDTHS = (64, 128, 256)  # planes per stage: outputs 256/512/1024


def resnext29(cardinality: int, base_width: int, num_classes: int = 10) -> ResNet:
    """ResNeXt-29 for CIFAR (Xie et al. 2017, Table 7): a 3x3 stem to 64 with BN-ReLU, three stages
    of three bottlenecks with ``cardinality`` groups of ``base_width`` channels (doubling per stage),
    projection shortcuts."""
    return ResNet(Bottleneck, [3, 3, 3], RESNEXT_WIDTHS, num_classes, shortcut="B", groups=cardinality,
                  base_width=base_width)


def ResNeXt29_8x64d(num_classes: int = 10) -> ResNet:
    """Xie et al. 2017 (ResNeXt), Table 7: 34,426,698 parameters at 10 classes."""
    return resnext29(8, 64, num_classes)


def ResNeXt29_16x64d(num_classes: int = 10) -> ResNet:
    """Xie et al. 2017 (ResNeXt), Table 7: 68,155,210 parameters at 10 classes."""
    return resnext29(16, 64, num_classes)


def ResNeXt29_32x4d(num_classes: int = 10) -> ResNet:
    """Xie et al. 2017 (ResNeXt), Table 7: 4,775,754 parameters at 10 classes."""
    return resnext29(32, 4, num_classes)


def ResNeXt29_2x64d(num_classes: int = 10) -> ResNet:
    """Xie et al. 2017 (ResNeXt), Table 7: 9,130,314 parameters at 10 classes."""
    return resnext29(2, 64, num_classes)


# The name -> builder table: the CLI's --model choices, in the order tables list them.
MODELS: dict[str, Callable[..., ResNet]] = {
    builder.__name__: builder
    for builder in (
        ResNet20, ResNet32, ResNet44, ResNet56, ResNet110, ResNet1202,
        Plain20, Plain32, Plain44, Plain56, Plain110,
        ResNet18, ResNet34, ResNet50, ResNet101, ResNet152,
        PreActResNet110, PreActResNet164, PreActResNet1001,
        PreActResNet18, PreActResNet34, PreActResNet50, PreActResNet101, PreActResNet152,
        ResNeXt29_8x64d, ResNeXt29_16x64d, ResNeXt29_32x4d, ResNeXt29_2x64d,
    )
}


def build_model(name: str, **options) -> ResNet:
    """The model called ``name`` in MODELS, built with the given keyword options."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    return MODELS[name](**options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass for one image: those of every convolution and linear
    layer (BN, ReLU, pooling and additions are left out, as is usual for FLOP tables; PyTorch's FLOP
    counter counts the same, as two FLOPs each), from one forward pass with a hook on each: 0.17 s
    for ResNet-1202 on a CPU, where PyTorch's FLOP counter took 1.65 s."""
    macs = []

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        macs.append(output.numel() * module.weight[0].numel())  # each output: in/groups x kernel, or in_features

    hooks = [module.register_forward_hook(count) for module in model.modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sum(macs)


def response_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BN right after every 3x3 conv, in forward order.

    Their outputs are the "responses" of the paper's Figure 7: after BN, before the ReLU or the
    addition. Shortcut projections and the Bottleneck's 1x1 convs are not 3x3 layers.
    """
    layers, previous = [], None
    for module in model.modules():  # registration order, which is forward order here
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and isinstance(previous, nn.Conv2d) \
                and previous.kernel_size == (3, 3):
            layers.append(module)
        previous = module
    return layers


@torch.no_grad()
def layer_response_std(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Standard deviation of each 3x3 layer's response to ``images``, in eval mode (Figure 7)."""
    stds: list[float] = []
    handles = [layer.register_forward_hook(lambda _m, _i, output: stds.append(output.float().std().item()))
               for layer in response_layers(model)]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return stds


def main() -> None:
    torch.set_num_threads(1)  # small sums: one thread never waits for a core that other work holds
    print("Every model of resnet.py: depth, parameters, and multiply-accumulates for one 32x32 image")
    print(f"{'model':<17} {'depth':>6} {'params':>12} {'MACs (32x32)':>14}")
    for name, builder in MODELS.items():
        model = builder()
        print(f"{name:<17} {model.depth:>6} {count_parameters(model):>12,} {count_macs(model) / 1e6:>13.1f}M")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `python resnet.py | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's last flush succeeds
