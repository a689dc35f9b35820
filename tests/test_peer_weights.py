"""Published weights in (issue 29): reference networks in akamaster's and chenyaofo's layouts,
written here from their descriptions (akamaster: option A padding the identity's new channels half
in front, half behind; chenyaofo: option B, a 1x1 projection with BatchNorm named ``downsample``),
with random weights saved as their files are, must compute what the imported checkpoint computes
in this project's own network, for every depth and data set they published."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import weights
from cifar_resnet import checkpoints, data
from cifar_resnet.peer_weights import PUBLISHERS


class ReferenceBlock(nn.Module):
    """Both publishers' basic block; only the shortcut where the shape changes differs: option A pads
    the identity's new channels half in front and half behind (akamaster), option B projects it
    (chenyaofo, named ``downsample``)."""

    def __init__(self, in_planes: int, planes: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        reshapes = stride != 1 or in_planes != planes
        self.pad = planes // 4 if reshapes and option == "A" else None
        if reshapes and option == "B":
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if hasattr(self, "downsample"):
            shortcut = self.downsample(x)
        else:
            shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ReferenceResNet(nn.Module):
    """The publishers' CIFAR ResNet under their names: conv1, bn1, layer1..3, and the classifier
    (akamaster's ``linear``, chenyaofo's ``fc``)."""

    def __init__(self, blocks: int, option: str, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = [(16, 16, 1), (16, 32, 2), (32, 64, 2)]
        for index, (in_planes, planes, stride) in enumerate(widths, 1):
            setattr(self, f"layer{index}", nn.Sequential(*[
                ReferenceBlock(in_planes if block == 0 else planes, planes, stride if block == 0 else 1, option)
                for block in range(blocks)]))
        self.classifier_name = "linear" if option == "A" else "fc"
        setattr(self, self.classifier_name, nn.Linear(64, classes))

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return getattr(self, self.classifier_name)(F.adaptive_avg_pool2d(out, 1).flatten(1))


def randomised(reference: nn.Module) -> nn.Module:
    """``reference`` in eval mode with random weights and BatchNorm statistics (not the initial 0 and 1,
    which would hide a BatchNorm tensor taken from the wrong channel)."""
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                nn.init.normal_(tensor.data, 0, 0.5)
            module.running_var.data.uniform_(0.5, 2)
    return reference.eval()


def published(blocks: int, path, seed: int = 0) -> ReferenceResNet:
    """A reference network of akamaster's, saved as akamaster saves them (older PyTorch: no BatchNorm step counters)."""
    torch.manual_seed(seed)
    reference = randomised(ReferenceResNet(blocks, "A"))
    state = {f"module.{key}": value for key, value in reference.state_dict().items() if "num_batches" not in key}
    torch.save({"best_prec1": 91.0, "state_dict": state}, path)
    return reference


def published_by_chenyaofo(blocks: int, classes: int, path, seed: int = 0) -> ReferenceResNet:
    """A reference network of chenyaofo's, saved as its release files are: the bare state dict."""
    torch.manual_seed(seed)
    reference = randomised(ReferenceResNet(blocks, "B", classes))
    torch.save(reference.state_dict(), path)
    return reference


def imported(tmp_path, source: str, file) -> tuple[dict, nn.Module]:
    """weights.py import's checkpoint of ``file``, and the network --evaluate and torch.hub rebuild from it."""
    assert weights.main(["import", source, str(file), str(tmp_path / "out.pth")]) == 0
    checkpoint = checkpoints.load_checkpoint(tmp_path / "out.pth", to_resume=False)
    return checkpoint, checkpoints.rebuild_model(checkpoint, tmp_path / "out.pth").eval()


def assert_computes_the_same(checkpoint: dict, model: nn.Module, reference: nn.Module, source: str) -> None:
    """The converted network's logits are the reference's, on normalised inputs and, as torch.hub hands
    it out, on 0..1 images normalised inside as the publisher's training normalised them."""
    images, pixels = torch.randn(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    mean, std = (torch.tensor(value).view(3, 1, 1)
                 for value in PUBLISHERS[source].normalization[checkpoint["args"]["dataset"]])
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-4, rtol=1e-4)
        hub_model = checkpoints.trained_classifier(checkpoint, model)
        assert torch.allclose(hub_model(pixels), reference((pixels - mean) / std), atol=1e-4, rtol=1e-4)
    assert checkpoint["imported"]["source"] == PUBLISHERS[source].name


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_imported_weights_compute_what_akamaster_s_network_computes(tmp_path, depth):
    reference = published((depth - 2) // 6, tmp_path / f"resnet{depth}.th", seed=depth)
    checkpoint, model = imported(tmp_path, "akamaster", tmp_path / f"resnet{depth}.th")
    assert checkpoint["args"]["model"] == f"ResNet{depth}" and checkpoint["args"]["shortcut"] == "A"
    assert_computes_the_same(checkpoint, model, reference, "akamaster")
    assert checkpoints.class_names(checkpoint) == data.CIFAR10.classes


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_imported_weights_compute_what_chenyaofo_s_network_computes(tmp_path, depth, dataset):
    source = data.SOURCES[dataset]
    file = tmp_path / f"{dataset}_resnet{depth}.pt"
    reference = published_by_chenyaofo((depth - 2) // 6, source.class_count, file, seed=depth)
    checkpoint, model = imported(tmp_path, "chenyaofo", file)
    assert (checkpoint["args"]["model"], checkpoint["args"]["shortcut"], checkpoint["args"]["dataset"]) == \
        (f"ResNet{depth}", "B", dataset)
    assert_computes_the_same(checkpoint, model, reference, "chenyaofo")
    assert checkpoint["imported"]["reported_test_acc"] == PUBLISHERS["chenyaofo"].reported[(dataset, f"ResNet{depth}")]


@pytest.mark.parametrize("change,message", [
    (lambda path: path.write_bytes(b"not a weights file"), "is not a readable weights file"),
    (lambda path: torch.save({"weights": torch.zeros(3)}, path), "is not a weights file of akamaster"),
    (lambda path: torch.save({"state_dict": {"module.linear.weight": torch.zeros(10, 64)}}, path),
     "holds no CIFAR ResNet of resnet.py"),
    (lambda path: torch.save({"state_dict": {**torch.load(path, weights_only=True)["state_dict"],
                                             "module.linear.weight": torch.zeros(10, 3)}}, path),
     "its tensors do not make akamaster/pytorch_resnet_cifar10's ResNet20"),
    (lambda path: torch.save({"state_dict": {**torch.load(path, weights_only=True)["state_dict"],
                                             "module.layer1.0.extra": torch.zeros(3)}}, path),
     "a layer1.0.extra that it has not"),
    (lambda path: torch.save({"state_dict": {key: value for key, value in torch.load(path, weights_only=True)[
        "state_dict"].items() if key != "module.layer2.1.bn2.bias"}}, path), "no layer2.1.bn2.bias"),
    (lambda path: torch.save({**torch.load(path, weights_only=True), "optimizer": {}}, path),
     "is not a weights file of akamaster"),
    (lambda path: torch.save({"state_dict": {**torch.load(path, weights_only=True)["state_dict"],
                                             "module.linear.weight": torch.zeros(100, 64),
                                             "module.linear.bias": torch.zeros(100)}}, path),
     "its classifier has 100 outputs; akamaster/pytorch_resnet_cifar10 published CIFAR-10 networks"),
    (lambda path: torch.save({"state_dict": {**torch.load(path, weights_only=True)["state_dict"],
                                             "module.linear.weight": torch.full((10, 64), float("nan"))}}, path),
     "its weights are not all finite"),
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


def test_one_publisher_s_file_is_not_taken_for_the_other_s(tmp_path, capsys):
    published(3, tmp_path / "resnet20.th")
    published_by_chenyaofo(3, 10, tmp_path / "cifar10_resnet20.pt")
    assert weights.main(["import", "chenyaofo", str(tmp_path / "resnet20.th"), str(tmp_path / "a.pth")]) == 2
    assert "is not a weights file of chenyaofo/pytorch-cifar-models (a state dict of tensors)" in capsys.readouterr().err
    assert weights.main(["import", "akamaster", str(tmp_path / "cifar10_resnet20.pt"), str(tmp_path / "b.pth")]) == 2
    assert "is not a weights file of akamaster/pytorch_resnet_cifar10" in capsys.readouterr().err
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "b.pth").exists()
