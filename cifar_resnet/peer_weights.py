"""Published CIFAR ResNet weights of other projects, as this project's checkpoints:

- akamaster/pytorch_resnet_cifar10's ``.th`` files (ResNet-20/32/44/56/110/1202 on CIFAR-10, the
  paper's option A), a dict ``{"state_dict": ..., "best_prec1": ...}`` with DataParallel's
  ``module.`` prefix on every name;
- chenyaofo/pytorch-cifar-models' ``.pt`` release files (ResNet-20/32/44/56 on CIFAR-10 and
  CIFAR-100), a bare state dict of a network whose shortcuts are option B (a 1x1 projection with
  BatchNorm where the shape changes, the identity elsewhere).

Both networks are this project's, with other layer names (``conv1``/``bn1``, ``layerS.B``,
``downsample``, ``linear``/``fc``), so a checkpoint is a renaming; akamaster's option A also pads
the identity's new channels half in front of it and half behind
(``F.pad(x, (0, 0, 0, 0, planes // 4, planes // 4))``), where ZeroPadShortcut appends them, so
there the residual stream's channels are permuted, stage by stage, until this project's own
network computes the same function (no second shortcut flavour in resnet.py). The checkpoint
carries the normalisation the weights were trained with, the source, its reported accuracy and
the SHA-256 of the file; ``--evaluate``, torch.hub and ``--init-from`` read it (not ``--resume``:
there is no training state). A file with anything else in it is refused in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cifar_resnet.data import SOURCES, file_digest
from cifar_resnet.errors import UsageError
from cifar_resnet.fields import printable
from resnet import MODELS, build_model

BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class Publisher:
    """Whose weights, and what their files and training were."""

    name: str  # the GitHub repository
    shortcut: str  # the option of their networks' shortcuts
    wrapped: bool  # {"state_dict": ..., "best_prec1": ...} with "module." names, or a bare state dict
    classifier: str  # their final layer's name
    # Per data set: the per-channel mean and std (on 0..1 images) their training normalised with.
    normalization: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]
    # The test accuracies (%) their README reports on the original test set, per data set and model:
    # chenyaofo's are its best epoch's (its logs say so); akamaster's trainer saves its last model
    # with best_prec1, the best accuracy seen (91.78% in the ResNet-20 file, 91.73% in its README).
    reported: dict[tuple[str, str], float]


PUBLISHERS = {
    "akamaster": Publisher(
        "akamaster/pytorch_resnet_cifar10", shortcut="A", wrapped=True, classifier="linear",
        normalization={"cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))},  # ImageNet's
        reported={("cifar10", "ResNet20"): 91.73, ("cifar10", "ResNet32"): 92.63, ("cifar10", "ResNet44"): 93.10,
                  ("cifar10", "ResNet56"): 93.39, ("cifar10", "ResNet110"): 93.68, ("cifar10", "ResNet1202"): 93.82}),
    "chenyaofo": Publisher(
        "chenyaofo/pytorch-cifar-models", shortcut="B", wrapped=False, classifier="fc",
        normalization={"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.201)),
                       "cifar100": ((0.507, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761))},
        reported={("cifar10", "ResNet20"): 92.60, ("cifar10", "ResNet32"): 93.53, ("cifar10", "ResNet44"): 94.01,
                  ("cifar10", "ResNet56"): 94.37, ("cifar100", "ResNet20"): 68.83, ("cifar100", "ResNet32"): 70.16,
                  ("cifar100", "ResNet44"): 71.63, ("cifar100", "ResNet56"): 72.63}),
}


def read_weights(path: Path, publisher: Publisher) -> dict:
    """The state dict in ``path``, as ``publisher`` writes its files, without DataParallel's
    ``module.`` prefix; a file that is not one is one UsageError."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign, or refused by the weights-only unpickler
        raise UsageError(f"{path} is not a readable weights file ({type(error).__name__})") from None
    if publisher.wrapped:
        form = 'a dict {"state_dict": tensors, "best_prec1": number}'
        is_wrapper = isinstance(saved, dict) and "state_dict" in saved and saved.keys() <= {"state_dict", "best_prec1"}
        saved = saved["state_dict"] if is_wrapper else None
    else:
        form = "a state dict of tensors"
    if not isinstance(saved, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              for key, value in saved.items()):
        raise UsageError(f"{path} is not a weights file of {publisher.name} ({form})")
    return {key.removeprefix("module."): value for key, value in saved.items()}


def their_name(ours: str, publisher: Publisher) -> str:
    """The name ``publisher``'s network gives to this project's tensor ``ours``."""
    name = re.sub(r"^stem\.0\.", "conv1.", ours)
    name = re.sub(r"^stem\.1\.", "bn1.", name)
    name = re.sub(r"^stages\.(\d+)\.", lambda match: f"layer{int(match[1]) + 1}.", name)
    name = re.sub(r"^fc\.", f"{publisher.classifier}.", name)
    return name.replace(".shortcut.", ".downsample.")


def network_of(weights: dict, publisher: Publisher, path: Path) -> tuple[str, str]:
    """The model (ResNet-N, from the blocks of the first stage) and the data set (from the classes)
    that ``weights`` are, where ``publisher`` published such weights."""
    blocks = sum(1 for key in weights if re.fullmatch(r"layer1\.\d+\.conv1\.weight", key))
    name = f"ResNet{6 * blocks + 2}"
    if blocks == 0 or name not in MODELS:
        raise UsageError(f"{path} holds no CIFAR ResNet of resnet.py ({blocks} blocks in its first stage)")
    classifier = weights.get(f"{publisher.classifier}.weight")
    classes = classifier.shape[0] if classifier is not None and classifier.ndim == 2 else None
    dataset = next((key for key, source in SOURCES.items() if source.class_count == classes), None)
    if dataset not in publisher.normalization:
        raise UsageError(f"{path}: its classifier has {classes} outputs; {publisher.name} published "
                         f"{' and '.join(SOURCES[key].name for key in publisher.normalization)} networks")
    return name, dataset


def renamed(weights: dict, model: torch.nn.Module, name: str, publisher: Publisher, path: Path) -> dict:
    """``weights`` under this project's names: exactly the tensors ``model`` has (BatchNorm's step
    counters aside: older PyTorch did not save them, and evaluation never reads them)."""
    counters = {key: value for key, value in model.state_dict().items() if key.endswith("num_batches_tracked")}
    wanted = {their_name(ours, publisher): ours for ours in model.state_dict() if ours not in counters}
    theirs = {key for key in weights if not key.endswith("num_batches_tracked")}
    strays, missing = sorted(theirs - wanted.keys()), sorted(wanted.keys() - theirs)
    if strays or missing:
        what = f"no {missing[0]}" if missing else f"a {strays[0]} that it has not"
        raise UsageError(f"{path}: its tensors are not those of {publisher.name}'s {name} ({what}): "
                         "a damaged or foreign file")
    return {**counters, **{ours: weights[key] for key, ours in wanted.items()}}


def stage_orders() -> list[torch.Tensor]:
    """For each stage, which of akamaster's channels each of this network's channels is: the
    identity keeps its place here and sits in the middle there, between the padded halves."""
    orders = [torch.arange(STAGE_WIDTHS[0])]
    for width in STAGE_WIDTHS[:-1]:
        half = width // 2
        orders.append(torch.cat([orders[-1] + half, torch.arange(half), torch.arange(half + width, 2 * width)]))
    return orders


def akamaster_channels_as_ours(weights: dict, blocks: int) -> dict:
    """akamaster's weights (renamed) with the residual stream's channels in this project's order:
    each block reads the stream in it, and writes its residual into it. (The stem's order is the
    same in both: the first stage pads nothing.)"""
    orders, permuted = stage_orders(), dict(weights)
    for stage, order in enumerate(orders):
        for block in range(blocks):
            prefix = f"stages.{stage}.{block}"
            stream_in = orders[stage - 1] if stage and block == 0 else order
            permuted[f"{prefix}.conv1.weight"] = weights[f"{prefix}.conv1.weight"][:, stream_in]
            permuted[f"{prefix}.conv2.weight"] = weights[f"{prefix}.conv2.weight"][order]
            for name in BATCHNORM_TENSORS:
                permuted[f"{prefix}.bn2.{name}"] = weights[f"{prefix}.bn2.{name}"][order]
    permuted["fc.weight"] = weights["fc.weight"][:, orders[-1]]
    return permuted


def import_weights(source: str, path: Path) -> dict:
    """The checkpoint of ``source``'s published file at ``path`` ("akamaster" or "chenyaofo"): this
    project's network, the weights' normalisation, and where they came from; refused in one line
    where the file is anything else."""
    publisher = PUBLISHERS[source]
    weights = read_weights(path, publisher)
    name, dataset = network_of(weights, publisher, path)
    model = build_model(name, num_classes=SOURCES[dataset].class_count, shortcut=publisher.shortcut)
    converted = renamed(weights, model, name, publisher, path)
    try:
        if publisher.shortcut == "A":
            converted = akamaster_channels_as_ours(converted, (int(name.removeprefix("ResNet")) - 2) // 6)
        model.load_state_dict(converted)
    except (IndexError, RuntimeError):  # a tensor of another shape
        raise UsageError(f"{path}: its tensors do not make {publisher.name}'s {name} (a damaged or foreign file)") from None
    if not all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point()):
        raise UsageError(f"{path}: its weights are not all finite")
    mean, std = publisher.normalization[dataset]
    return {"model": model.state_dict(), "epoch": 0,
            "args": {"model": name, "shortcut": publisher.shortcut, "dataset": dataset, "normalize": "channel",
                     "seed": 0},
            "normalization": {"mean": torch.tensor(mean).view(3, 1, 1), "std": torch.tensor(std).view(3, 1, 1)},
            "imported": {"source": publisher.name, "file": printable(path.name), "sha256": file_digest(path, "sha256"),
                         "reported_test_acc": publisher.reported.get((dataset, name))}}
