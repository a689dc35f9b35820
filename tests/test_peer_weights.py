"""Published weights in (issue 29, akamaster's part): a reference network in akamaster's layout,
written here from its description (option A padding the identity's new channels half in front,
half behind), with random weights saved as its .th files are, must compute what the imported
checkpoint computes in this project's own network."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import weights
from cifar_resnet import checkpoints, data
from cifar_resnet.peer_weights import AKAMASTER_MEAN, AKAMASTER_STD


class AkamasterBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class AkamasterResNet(nn.Module):
    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = [(16, 16, 1), (16, 32, 2), (32, 64, 2)]
        for index, (in_planes, planes, stride) in enumerate(widths, 1):
            setattr(self, f"layer{index}", nn.Sequential(*[AkamasterBlock(in_planes if block == 0 else planes, planes,
                                                                           stride if block == 0 else 1)
                                                           for block in range(blocks)]))
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def published(blocks: int, path, seed: int = 0) -> AkamasterResNet:
    """A reference network with random weights and BatchNorm statistics, saved as akamaster saves them."""
    torch.manual_seed(seed)
    reference = AkamasterResNet(blocks).eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                nn.init.normal_(tensor.data, 0, 0.5)
            module.running_var.data.uniform_(0.5, 2)
    state = {f"module.{key}": value for key, value in reference.state_dict().items() if "num_batches" not in key}
    torch.save({"best_prec1": 91.0, "state_dict": state}, path)
    return reference


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_imported_weights_compute_what_akamaster_s_network_computes(tmp_path, depth):
    reference = published((depth - 2) // 6, tmp_path / f"resnet{depth}.th", seed=depth)
    assert weights.main(["import", "akamaster", str(tmp_path / f"resnet{depth}.th"), str(tmp_path / "out.pth")]) == 0
    checkpoint = checkpoints.load_checkpoint(tmp_path / "out.pth", f"ResNet{depth}", to_resume=False)
    model = checkpoints.rebuild_model(checkpoint, tmp_path / "out.pth").eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-4, rtol=1e-4)
        # What torch.hub hands out: 0..1 images, normalised inside as akamaster's training normalised them.
        pixels = torch.rand(4, 3, 32, 32)
        normalised = (pixels - torch.tensor(AKAMASTER_MEAN).view(3, 1, 1)) / torch.tensor(AKAMASTER_STD).view(3, 1, 1)
        hub_model = checkpoints.trained_classifier(checkpoint, model)
        assert torch.allclose(hub_model(pixels), reference(normalised), atol=1e-4, rtol=1e-4)
    assert checkpoint["imported"]["source"] == "akamaster/pytorch_resnet_cifar10"
    assert hub_model.classes == data.CIFAR10.classes


@pytest.mark.parametrize("change,message", [
    (lambda path: path.write_bytes(b"not a weights file"), "is not a readable weights file"),
    (lambda path: torch.save({"weights": torch.zeros(3)}, path), "is not an akamaster weights file"),
    (lambda path: torch.save({"state_dict": {"module.linear.weight": torch.zeros(10, 64)}}, path),
     "holds no akamaster ResNet"),
    (lambda path: torch.save({"state_dict": {**torch.load(path, weights_only=True)["state_dict"],
                                             "module.linear.weight": torch.zeros(10, 3)}}, path),
     "its tensors do not make akamaster's ResNet20"),
])
def test_a_file_that_is_not_akamaster_s_is_refused_in_one_line(tmp_path, capsys, change, message):
    published(3, tmp_path / "resnet20.th")
    change(tmp_path / "resnet20.th")
    assert weights.main(["import", "akamaster", str(tmp_path / "resnet20.th"), str(tmp_path / "out.pth")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out.pth").exists()


def test_an_existing_output_is_never_overwritten(tmp_path, capsys):
    published(3, tmp_path / "resnet20.th")
    (tmp_path / "out.pth").write_text("the user's file")
    assert weights.main(["import", "akamaster", str(tmp_path / "resnet20.th"), str(tmp_path / "out.pth")]) == 2
    assert "exists: name a new file" in capsys.readouterr().err
    assert (tmp_path / "out.pth").read_text() == "the user's file"
