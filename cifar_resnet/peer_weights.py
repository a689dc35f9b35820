"""Published CIFAR ResNet weights of another project, as this project's checkpoints: the .th files of
akamaster/pytorch_resnet_cifar10 (ResNet-20/32/44/56/110/1202, the paper's option A).

Its networks are this project's, but name their layers otherwise (``module.conv1``,
``layerS.B``, ``linear``) and pad the identity's new channels half in front of it and half behind
(``F.pad(x, (0, 0, 0, 0, planes // 4, planes // 4))``), where ZeroPadShortcut appends them. So the
residual stream's channels are permuted, stage by stage, until this project's own network
computes the same function; no second shortcut flavour is needed in resnet.py. The checkpoint
carries the normalisation the weights were trained with (ImageNet's per-channel mean and std on
0..1 images), the source, its reported accuracy and the SHA-256 of the file, and is what
``--evaluate`` and torch.hub read (not ``--resume``: there is no training state).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cifar_resnet.data import file_digest
from cifar_resnet.errors import UsageError
from resnet import build_model

AKAMASTER = "akamaster/pytorch_resnet_cifar10"
AKAMASTER_MEAN, AKAMASTER_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Test errors (%) its README reports for its files, on the original CIFAR-10 test set.
AKAMASTER_REPORTED_ERROR = {"ResNet20": 8.27, "ResNet32": 7.37, "ResNet44": 6.90, "ResNet56": 6.61}
STAGE_WIDTHS = (16, 32, 64)


def read_akamaster(path: Path) -> dict:
    """The state dict of an akamaster .th file, without DataParallel's ``module.`` prefix; a file
    that is not one ({"state_dict": tensors, "best_prec1": number}) is one UsageError."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign, or refused by the weights-only unpickler
        raise UsageError(f"{path} is not a readable weights file ({type(error).__name__})") from None
    weights = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                                 for key, value in weights.items()):
        raise UsageError(f"{path} is not an akamaster weights file (a dict with a state_dict of tensors)")
    return {key.removeprefix("module."): value for key, value in weights.items()}


def stage_orders() -> list[torch.Tensor]:
    """For each stage, which of akamaster's channels each of this network's channels is: the
    identity keeps its place here and sits in the middle there, between the padded halves."""
    orders = [torch.arange(STAGE_WIDTHS[0])]
    for width in STAGE_WIDTHS[:-1]:
        half = width // 2
        orders.append(torch.cat([orders[-1] + half, torch.arange(half), torch.arange(half + width, 2 * width)]))
    return orders


def akamaster_to_ours(weights: dict, model_name: str) -> dict:
    """akamaster's state dict as this project's ``model_name``'s, channels permuted (see above)."""
    blocks = (int(model_name.removeprefix("ResNet")) - 2) // 6
    orders = stage_orders()
    converted = {"stem.0.weight": weights["conv1.weight"], **bn("stem.1", weights, "bn1", orders[0])}
    for stage, order in enumerate(orders):
        for block in range(blocks):
            ours, theirs = f"stages.{stage}.{block}", f"layer{stage + 1}.{block}"
            block_input = orders[stage - 1] if stage and block == 0 else order
            converted[f"{ours}.conv1.weight"] = weights[f"{theirs}.conv1.weight"][:, block_input]
            converted.update(bn(f"{ours}.bn1", weights, f"{theirs}.bn1", None))
            converted[f"{ours}.conv2.weight"] = weights[f"{theirs}.conv2.weight"][order]
            converted.update(bn(f"{ours}.bn2", weights, f"{theirs}.bn2", order))
    converted["fc.weight"], converted["fc.bias"] = weights["linear.weight"][:, orders[-1]], weights["linear.bias"]
    return converted


def bn(ours: str, weights: dict, theirs: str, order) -> dict:
    """A BatchNorm's tensors under this project's name, its channels in ``order`` (None: as they are)."""
    return {f"{ours}.{name}": weights[f"{theirs}.{name}"] if order is None else weights[f"{theirs}.{name}"][order]
            for name in ("weight", "bias", "running_mean", "running_var")}


def model_of(weights: dict, path: Path) -> str:
    """The ResNet-N that akamaster's ``weights`` are, from the blocks of its first stage."""
    blocks = sum(1 for key in weights if key.startswith("layer1.") and key.endswith(".conv1.weight"))
    if blocks == 0:
        raise UsageError(f"{path} holds no akamaster ResNet (no layer1 blocks)")
    return f"ResNet{6 * blocks + 2}"


def import_akamaster(path: Path) -> dict:
    """The checkpoint of akamaster's .th file at ``path``: this project's network, the weights'
    normalisation, and where they came from; refused in one line where they do not fit."""
    weights = read_akamaster(path)
    name = model_of(weights, path)
    model = build_model(name)
    try:
        converted = akamaster_to_ours(weights, name)
        # BatchNorm's step counters are not in the file (older PyTorch); they play no part in evaluation.
        converted.update({key: value for key, value in model.state_dict().items() if key.endswith("num_batches_tracked")})
        model.load_state_dict(converted)
    except (KeyError, IndexError, RuntimeError):
        raise UsageError(f"{path}: its tensors do not make akamaster's {name} (a damaged or foreign file)") from None
    if not all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point()):
        raise UsageError(f"{path}: its weights are not all finite")
    reported = AKAMASTER_REPORTED_ERROR.get(name)
    return {"model": model.state_dict(), "epoch": 0,
            "args": {"model": name, "shortcut": "A", "dataset": "cifar10", "normalize": "channel", "seed": 0},
            "normalization": {"mean": torch.tensor(AKAMASTER_MEAN).view(3, 1, 1),
                              "std": torch.tensor(AKAMASTER_STD).view(3, 1, 1)},
            "imported": {"source": AKAMASTER, "file": path.name, "sha256": file_digest(path, "sha256"),
                         "reported_test_accuracy": None if reported is None else round(100 - reported, 2)}}
