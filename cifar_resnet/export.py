"""A finished run's final model as weights others load by name, and the manifest that names them.

    exported/ResNet56-1a2b3c4d.pth     named as torchvision names its weights: the first 8 hex of its SHA-256
    exported/manifest.jsonl            one JSON line per file: name, file, full SHA-256, model, data set, accuracy

The weights file holds only what inference needs: the state dict, the run's settings (the model's
options among them), the normalisation, the class names, and what the run was (its final test
accuracy, status, epochs, command and provenance as its summary tells them). It is a checkpoint
that ``--evaluate``, torch.hub and ``--init-from`` read, never ``--resume``. torch.hub's
``manifest=`` finds a file by its name in a manifest, beside it (a folder or a URL), and checks
its SHA-256 against the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Optional

import torch

from cifar_resnet.checkpoints import RunFiles, class_names, load_checkpoint, rebuild_model
from cifar_resnet.data import file_digest
from cifar_resnet.errors import UsageError
from cifar_resnet.fields import COMPLETE, is_sha256, printable, record_lines
from cifar_resnet.runfolder import atomic_write, failures_named, read_small_file, write_text

MANIFEST = "manifest.jsonl"
MAX_MANIFEST_BYTES = 1 << 20  # a line has about 300 bytes: thousands of weights
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a name, and a file's name, that no path or shell misreads


def final_weights(folder: Path) -> dict:
    """What the weights file of the finished run in ``folder`` holds: its last checkpoint's model
    (the final model, whose test accuracy is the run's result; never best.pth), cut to what
    inference needs, with the run's record."""
    files = RunFiles.in_folder(folder)
    if files is None:
        raise UsageError(f"{folder} holds no run of train.py (no <model>_results.json or .csv)")
    result = finished_run(files)
    checkpoint = load_checkpoint(files.last, files.model, to_resume=False)
    if checkpoint["epoch"] != result["epochs_done"]:
        raise UsageError(f"{files.last} is of epoch {checkpoint['epoch']}, the summary of epoch {result['epochs_done']}: "
                         "they are not one run")
    rebuild_model(checkpoint, files.last)  # the weights fit the network the settings name
    try:
        provenance = record_lines(result.get("provenance"), result["epochs_done"])
    except (KeyError, TypeError, ValueError, IndexError):  # the summary's table leaves the parts to their readers
        raise UsageError(f"{files.json}: its provenance is not what train.py writes") from None
    return {"model": checkpoint["model"], "args": checkpoint["args"], "epoch": checkpoint["epoch"],
            "normalization": checkpoint["normalization"], "classes": list(class_names(checkpoint)),
            "exported": {"run": printable(str(folder)), "status": result["status"],
                         "final_test_acc": result["final_test_acc"], "epochs": result["epochs_done"],
                         "official_data": result.get("provenance", {}).get("official_data"),
                         "provenance": provenance, "command": result["command"],
                         "started_from": result.get("started_from")}}


def finished_run(files: RunFiles) -> dict:
    """The summary of the run in ``files``, which must say it finished and hold what an export records."""
    result = files.read_result()
    if result is None:
        raise UsageError(f"{files.json} is missing, unreadable or not a summary train.py writes")
    if result["status"] not in COMPLETE:
        raise UsageError(f"{files.folder}: its run is {result['status']}, with {result.get('epochs_done', '?')} of "
                         f"{result.get('epochs', '?')} epochs done; export a finished run (its final model is its result)")
    missing = [field for field in ("final_test_acc", "epochs_done", "command") if field not in result]
    if missing:
        raise UsageError(f"{files.json}: a finished run's summary without {missing[0]!r} (an older or damaged one)")
    return result


def default_name(weights: dict) -> str:
    """The model's name, with the data set's where it is not CIFAR-10: ResNet56, ResNet56_cifar100."""
    dataset = weights["args"].get("dataset", "cifar10")
    return weights["args"]["model"] + ("" if dataset == "cifar10" else f"_{dataset}")


def read_manifest(text: str, where: str) -> list[dict]:
    """The entries of a manifest's ``text`` (from ``where``), each checked: a name and a file name
    that are names, not paths, and a SHA-256; one UsageError for anything else."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            entry = None
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) and NAME.fullmatch(entry[key])
                                                for key in ("name", "file", "model"))
                and entry["file"].endswith(".pth") and is_sha256(entry.get("sha256"))):
            raise UsageError(f"{where}, line {number}: not a manifest entry (name, file, sha256, model)")
        entries.append(entry)
    return entries


def read_manifest_file(path: Path) -> list[dict]:
    """The entries of the manifest at ``path``; none where there is no file yet."""
    if not path.exists():
        return []
    try:
        text = read_small_file(path, MAX_MANIFEST_BYTES).decode()
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{path} is not a readable manifest ({error})") from None
    return read_manifest(text, str(path))


def manifest_entry(entries: list[dict], name: str, where: str) -> dict:
    found = [entry for entry in entries if entry["name"] == name]
    if not found:
        known = ", ".join(entry["name"] for entry in entries) or "none"
        raise UsageError(f"{where} names no weights {name!r} (it names: {known})")
    return found[-1]


def export(folder: Path, to: Path, name: Optional[str] = None) -> dict:
    """Write the final weights of the run in ``folder`` into ``to``/<model>-<sha256[:8]>.pth and add
    their line to ``to``/manifest.jsonl; returns the line. A name already in the manifest is
    refused, and no file is overwritten with other bytes."""
    weights = final_weights(folder)
    name = name or default_name(weights)
    if not NAME.fullmatch(name):
        raise UsageError(f"--name {name!r}: letters, digits, '_', '.' and '-' only, starting with a letter or digit")
    manifest = to / MANIFEST
    entries = read_manifest_file(manifest)
    if any(entry["name"] == name for entry in entries):
        raise UsageError(f"{manifest} already names weights {name!r}: give another --name")
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    content = buffer.getvalue()
    digest = hashlib.sha256(content).hexdigest()
    path = to / f"{name}-{digest[:8]}.pth"
    if path.exists() and (not path.is_file() or file_digest(path, "sha256") != digest):
        raise UsageError(f"{path} exists and holds other weights: move it away")
    settings, record = weights["args"], weights["exported"]
    entry = {"name": name, "file": path.name, "sha256": digest, "model": settings["model"],
             "dataset": settings.get("dataset", "cifar10"), "final_test_acc": record["final_test_acc"],
             "epochs": record["epochs"], "official_data": record["official_data"], "run": record["run"],
             # what makes it other than a run from scratch on all the data: a fine-tuning, a smoke run
             "started_from": (record["started_from"] or {}).get("source"), "subset": settings.get("subset", 0)}
    with failures_named(to):
        to.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write(content))  # first: the manifest never names a missing file
    write_text(manifest, "".join(json.dumps(line) + "\n" for line in [*entries, entry]))
    return entry

