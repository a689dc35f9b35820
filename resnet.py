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

from typing import Callable, Optional, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

SHORTCUTS = ("A", "B")
STEMS = ("cifar", "imagenet")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, since a BatchNorm always follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


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
    shortcut: Optional[str], in_planes: int, out_planes: int, stride: int
) -> Optional[nn.Module]:
    """The shortcut branch of one block, or None for a plain (shortcut-free) block.

    Options A and B differ only where the shape changes; elsewhere both are the identity.
    """
    if shortcut is None:
        return None
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} or None, got {shortcut!r}")
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(stride, out_planes - in_planes)
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


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); BN after each; ReLU after the addition.

    The stride sits on the 3x3 conv, not on the first 1x1 conv: a strided 1x1 conv would
    simply drop three quarters of its input (torchvision's "ResNet V1.5" choice).
    """

    expansion = 4
    num_layers = 3

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Optional[str] = "B") -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


Block = Type[Union[BasicBlock, Bottleneck]]


def make_stem(stem: str, out_planes: int) -> nn.Sequential:
    """The layers before the first stage: conv + BN + ReLU, and for ImageNet a max-pool."""
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
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError("num_blocks and widths must have one entry per stage")
        self.depth = 2 + block.num_layers * sum(num_blocks)  # stem conv + blocks + classifier
        self.stem = make_stem(stem, widths[0])
        in_planes = widths[0]
        stages = []
        for index, (planes, count) in enumerate(zip(widths, num_blocks)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_stride in [stride] + [1] * (count - 1):
                blocks.append(block(in_planes, planes, block_stride, shortcut))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
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
        out = self.stages(self.stem(x))
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
    return cifar_resnet(20, num_classes, shortcut)


def ResNet32(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return cifar_resnet(32, num_classes, shortcut)


def ResNet44(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return cifar_resnet(44, num_classes, shortcut)


def ResNet56(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return cifar_resnet(56, num_classes, shortcut)


def ResNet110(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return cifar_resnet(110, num_classes, shortcut)


def ResNet1202(num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return cifar_resnet(1202, num_classes, shortcut)


def Plain20(num_classes: int = 10) -> ResNet:
    return cifar_resnet(20, num_classes, shortcut=None)


def Plain32(num_classes: int = 10) -> ResNet:
    return cifar_resnet(32, num_classes, shortcut=None)


def Plain44(num_classes: int = 10) -> ResNet:
    return cifar_resnet(44, num_classes, shortcut=None)


def Plain56(num_classes: int = 10) -> ResNet:
    return cifar_resnet(56, num_classes, shortcut=None)


def Plain110(num_classes: int = 10) -> ResNet:
    return cifar_resnet(110, num_classes, shortcut=None)


def imagenet_resnet(
    block: Block, num_blocks: Sequence[int], num_classes: int = 10, shortcut: str = "B", stem: str = "cifar"
) -> ResNet:
    """An ImageNet-style ResNet (Table 1 of the paper) with the chosen stem."""
    return ResNet(block, num_blocks, IMAGENET_WIDTHS, num_classes, shortcut, stem)


def ResNet18(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    return imagenet_resnet(BasicBlock, [2, 2, 2, 2], num_classes, shortcut, stem)


def ResNet34(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    return imagenet_resnet(BasicBlock, [3, 4, 6, 3], num_classes, shortcut, stem)


def ResNet50(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    return imagenet_resnet(Bottleneck, [3, 4, 6, 3], num_classes, shortcut, stem)


def ResNet101(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    return imagenet_resnet(Bottleneck, [3, 4, 23, 3], num_classes, shortcut, stem)


def ResNet152(num_classes: int = 10, shortcut: str = "B", stem: str = "cifar") -> ResNet:
    return imagenet_resnet(Bottleneck, [3, 8, 36, 3], num_classes, shortcut, stem)


# The name -> builder table: the CLI's --model choices, in the order tables list them.
MODELS: dict[str, Callable[..., ResNet]] = {
    builder.__name__: builder
    for builder in (
        ResNet20, ResNet32, ResNet44, ResNet56, ResNet110, ResNet1202,
        Plain20, Plain32, Plain44, Plain56, Plain110,
        ResNet18, ResNet34, ResNet50, ResNet101, ResNet152,
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
    """Multiply-accumulates of one forward pass for one image, as PyTorch's FLOP counter counts
    them (convolutions and matrix products; BN, ReLU, pooling and additions are left out, as is
    usual for FLOP tables). It counts a multiply-add as two FLOPs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def response_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BN right after every 3x3 conv, in forward order.

    Their outputs are the "responses" of the paper's Figure 7: after BN, before the ReLU or the
    addition. Shortcut projections and the Bottleneck's 1x1 convs are not 3x3 layers.
    """
    layers, previous = [], None
    for module in model.modules():  # registration order, which is forward order here
        if isinstance(module, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d) and previous.kernel_size == (3, 3):
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
    print(f"{'model':<12} {'depth':>6} {'params':>12} {'MACs (32x32)':>14}")
    for name, builder in MODELS.items():
        model = builder()
        print(f"{name:<12} {model.depth:>6} {count_parameters(model):>12,} {count_macs(model) / 1e6:>13.1f}M")


if __name__ == "__main__":
    main()
