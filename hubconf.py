"""torch.hub entry points: every model of resnet.py, optionally with the weights of a checkpoint
that train.py wrote.

    model = torch.hub.load("<owner>/<repo>", "ResNet56")                        # from GitHub
    model = torch.hub.load("path/to/clone", "ResNet56", source="local")          # from a clone
    model = torch.hub.load("path/to/clone", "ResNet56", source="local",
                           weights="results/ResNet56/ResNet56_last.pth")          # or an https:// URL

    image = torchvision.io.decode_image("cat.png")                                # uint8, 3 x 32 x 32
    print(model.classes[model(image).argmax()])                                    # "cat"

Weights exported by ``weights.py export`` are found by name in their manifest (a file or a URL;
the weights lie beside it), and their SHA-256 must be the manifest's:

    model = torch.hub.load("<owner>/<repo>", "ResNet56", manifest="https://example.org/weights/manifest.jsonl")
    model = torch.hub.load("<owner>/<repo>", "ResNet56", manifest="exported/manifest.jsonl", weights="ResNet56_seed1")

A checkpoint is read with ``weights_only=True`` and checked before use; one that holds another
model, was trained for another number of classes than ``num_classes`` asks for or with other
options (``shortcut=``, ``stem=``), or whose SHA-256 is not ``sha256=``, is refused with a
ValueError, as are weights that cannot be read or downloaded. With weights, the network is built
as the checkpoint's run built it (shortcut, stem, classes), in eval mode, inside a
``TrainedClassifier`` that takes images as they come (uint8, or floats in 0..1) and normalises
them as the run did; ``.network`` is the bare model, ``.classes`` the class names. A relative
path is taken from the current folder, else from this clone's. A URL is downloaded once into
torch.hub's cache, under a name made from the whole URL.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urljoin, urlparse

import torch
import torch.nn as nn

from cifar_resnet import export
from cifar_resnet.checkpoints import load_checkpoint, rebuild_model, trained_classifier
from cifar_resnet.data import file_digest
from cifar_resnet.errors import UsageError
from resnet import MODELS, build_model

dependencies = ["torch", "numpy"]
CLONE = Path(__file__).resolve().parent
MANIFEST_TIMEOUT_SECONDS = 60  # for the server's answer, and between its packets


def checkpoint_file(weights, sha256: Optional[str]) -> Path:
    """A local path as it is, an http(s) URL downloaded once into torch.hub's cache; with
    ``sha256``, the file's SHA-256 must be that."""
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be a checkpoint's path or an http(s) URL, got {weights!r}")
    path = downloaded(str(weights)) if is_url(str(weights)) else local_file(Path(weights))
    found = file_digest(path, "sha256") if sha256 is not None and path.is_file() else None
    if found is not None and found != sha256.lower():
        raise ValueError(f"{weights} has the SHA-256 {found}, not the {sha256} asked for")
    return path


def local_file(path: Path) -> Path:
    """``path`` as given (from the current folder), or where that holds nothing and the path is
    relative, from this clone's folder: its own results/ are found from anywhere."""
    if path.exists() or path.is_absolute() or not (CLONE / path).exists():
        return path
    return CLONE / path


def downloaded(url: str) -> Path:
    """The file at ``url``, in torch.hub's cache under a name made from the whole URL, so that two
    URLs whose files share a name never share a cached file."""
    name = os.path.basename(urlparse(url).path) or "checkpoint.pth"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        fetch(url, cached, progress=True)
    return cached


def fetch(url: str, destination: Path, progress: bool) -> None:
    """torch.hub's download (into a temporary file, then renamed); any failure (no network, a 404,
    a full disk) is one sentence, as for any bad weights."""
    try:
        torch.hub.download_url_to_file(url, str(destination), progress=progress)
    except Exception as error:
        raise ValueError(f"could not download {url} ({type(error).__name__}: {error})") from None


def from_manifest(manifest, weights: str, sha256: Optional[str]) -> tuple[str, str]:
    """Where the weights named ``weights`` in ``manifest`` (a path or an http(s) URL) lie, beside
    it, and the SHA-256 the manifest gives them (which ``sha256``, where given, must be)."""
    if not isinstance(manifest, (str, os.PathLike)) or not isinstance(weights, str):
        raise ValueError(f"with manifest=, weights must be a name in it, got {weights!r}")
    manifest = str(manifest)
    path = None if is_url(manifest) else local_file(Path(manifest))
    if path is not None and not path.is_file():
        raise ValueError(f"no manifest at {manifest}")
    entries = downloaded_manifest(manifest) if path is None else export.read_manifest_file(path)
    entry = export.manifest_entry(entries, weights, manifest)
    if sha256 is not None and sha256.lower() != entry["sha256"]:
        raise ValueError(f"{manifest} gives {weights!r} the SHA-256 {entry['sha256']}, not the {sha256} asked for")
    # The file's name is a name, never a path (export.NAME): it lies beside the manifest.
    return (urljoin(manifest, entry["file"]) if path is None else str(path.parent / entry["file"])), entry["sha256"]


def is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https")


def downloaded_manifest(url: str) -> list[dict]:
    """The entries of the manifest at ``url``, read afresh each time (a manifest gains entries); a
    server that sends more than a manifest may hold is refused once that much has come, not after
    all it sends."""
    limit = export.MAX_MANIFEST_BYTES
    try:
        with urllib.request.urlopen(url, timeout=MANIFEST_TIMEOUT_SECONDS) as response:
            content = response.read(limit + 1)
    except Exception as error:  # no network, a 404, a refused connection, a timeout
        raise ValueError(f"could not download {url} ({type(error).__name__}: {error})") from None
    if len(content) > limit:
        raise ValueError(f"{url} is larger than a manifest may be ({limit:,} bytes)")
    try:
        return export.read_manifest(content.decode(), url)
    except UnicodeDecodeError:
        raise ValueError(f"{url} is not a manifest (not UTF-8 text)") from None


def load_model(name: str, weights, num_classes: Optional[int], sha256: Optional[str], options: dict) -> nn.Module:
    if weights is None:
        return build_model(name, **options, **({} if num_classes is None else {"num_classes": num_classes}))
    path = checkpoint_file(weights, sha256)
    try:
        checkpoint = load_checkpoint(path, name, to_resume=False)
        model = rebuild_model(checkpoint, path)
    except UsageError as error:
        raise ValueError(str(error)) from None
    trained_for = model.fc.out_features
    if num_classes is not None and num_classes != trained_for:
        raise ValueError(f"{weights} holds a {name} for {trained_for} classes, not {num_classes}")
    for option, value in options.items():  # the checkpoint's run chose them: another value would not fit its weights
        if checkpoint["args"].get(option) != value:
            raise ValueError(f"{weights} holds a {name} with {option}={checkpoint['args'].get(option)!r}, not {value!r}")
    return trained_classifier(checkpoint, model).eval()


def entry_point(name: str) -> Callable[..., nn.Module]:
    def load(weights: Optional[str] = None, num_classes: Optional[int] = None, sha256: Optional[str] = None,
             manifest: Optional[str] = None, **options) -> nn.Module:
        if manifest is not None:
            try:
                weights, sha256 = from_manifest(manifest, name if weights is None else weights, sha256)
            except UsageError as error:
                raise ValueError(str(error)) from None
        return load_model(name, weights, num_classes, sha256, options)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"{name} (resnet.py), untrained, or with ``weights``: the path or URL of a {name} checkpoint "
                    "written by train.py, whose SHA-256 must be ``sha256`` where given; with ``manifest`` (a path "
                    f"or URL), ``weights`` is a name in it (default: {name!r}). ``num_classes`` (10 or "
                    "100; default: 10, or the checkpoint's) and the builder's options (shortcut, stem) as in "
                    "resnet.py; with weights, they must be the checkpoint's, and the model takes images as they "
                    "come (uint8, or floats in 0..1) and normalises them as the run did. Any problem raises "
                    "ValueError.")
    return load


globals().update({name: entry_point(name) for name in MODELS})
