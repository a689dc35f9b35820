"""torch.hub entry points: every model of resnet.py, optionally with the weights of a checkpoint
that train.py wrote.

    model = torch.hub.load("<owner>/<repo>", "ResNet56")                        # from GitHub
    model = torch.hub.load("path/to/clone", "ResNet56", source="local")          # from a clone
    model = torch.hub.load("path/to/clone", "ResNet56", source="local",
                           weights="results/ResNet56/ResNet56_last.pth")          # or an https:// URL

A checkpoint is read with ``weights_only=True`` and checked before use; one that holds another
model, or was trained for another number of classes than ``num_classes`` asks for, is refused
with a ValueError. With weights, the model is built as the checkpoint's run built it (shortcut,
stem, classes) and returned in eval mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import torch
import torch.nn as nn

from cifar_resnet.checkpoints import load_checkpoint, rebuild_model
from cifar_resnet.errors import UsageError
from resnet import MODELS, build_model

dependencies = ["torch", "numpy"]


def checkpoint_file(weights: str) -> Path:
    """A local path as it is; an http(s) URL downloaded once into torch.hub's cache."""
    if urlparse(str(weights)).scheme not in ("http", "https"):
        return Path(weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights).path)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights, str(cached))
    return cached


def load_model(name: str, weights: Optional[str], num_classes: Optional[int], options: dict) -> nn.Module:
    if weights is None:
        return build_model(name, **options, **({} if num_classes is None else {"num_classes": num_classes}))
    try:
        path = checkpoint_file(weights)
        model = rebuild_model(load_checkpoint(path, name, to_resume=False), path)
    except UsageError as error:
        raise ValueError(str(error)) from None
    trained_for = model.fc.out_features
    if num_classes is not None and num_classes != trained_for:
        raise ValueError(f"{weights} holds a {name} for {trained_for} classes, not {num_classes}")
    return model.eval()


def entry_point(name: str) -> Callable[..., nn.Module]:
    def load(weights: Optional[str] = None, num_classes: Optional[int] = None, **options) -> nn.Module:
        return load_model(name, weights, num_classes, options)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"{name} (resnet.py), untrained, or with ``weights``: the path or URL of a {name} checkpoint "
                    "written by train.py. ``num_classes`` (10 or 100; default: 10, or the checkpoint's) and "
                    "the builder's options (shortcut, stem) as in resnet.py.")
    return load


globals().update({name: entry_point(name) for name in MODELS})
