"""A run's files that PyTorch writes and reads: the checkpoints (save, the best link, load with
the table of their fields), the test predictions the figures are drawn from, the check that a
saved optimizer state fits its model, and the one way to rebuild a checkpoint's network, used by
--evaluate and torch.hub alike. Everything is read with ``weights_only=True`` and checked field
by field before use: no file can run code, and a damaged or foreign one is refused in one line.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from cifar_resnet.augment import Mixing
from cifar_resnet.data import SOURCES, file_digest, is_class_name
from cifar_resnet.errors import UsageError
from cifar_resnet.fields import (
    COMPLETE,
    is_best,
    is_count,
    is_history,
    is_number,
    is_part,
    is_percent,
    is_row,
    is_sha256,
    is_start_record,
    is_text,
    printable,
)
from cifar_resnet.runfolder import RunFileError, RunFolder, atomic_write, link_atomically
from resnet import MODELS, build_model


class RunFiles(RunFolder):
    """A run's folder with the files that need PyTorch: checkpoints and test predictions."""

    def save_checkpoint(self, state: dict, *, is_best: bool) -> None:
        atomic_write(self.last, lambda file: torch.save(state, file))
        if is_best:
            self.link_best()

    def link_best(self) -> None:
        """best.pth becomes the checkpoint just written."""
        link_atomically(self.last, self.best)

    def write_predictions(self, predictions: dict) -> None:
        """``predictions``: epoch, classes (names), labels and predictions (uint8 tensors of the test
        set), sample_images (the first test images, N x 3 x 32 x 32 uint8)."""
        atomic_write(self.predictions, lambda file: torch.save(predictions, file))

    def read_predictions(self) -> Optional[dict]:
        """The saved test predictions, checked; None if the run has none yet."""
        if not self.predictions.is_file():
            return None
        try:
            saved = torch.load(self.predictions, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, foreign, or refused by the weights-only unpickler
            raise RunFileError(f"{self.predictions} is not readable ({type(error).__name__})") from None
        if not predictions_are_valid(saved):
            raise RunFileError(f"{self.predictions} does not hold test predictions written by train.py")
        return saved


def predictions_are_valid(saved) -> bool:
    if not isinstance(saved, dict) or not {"epoch", "classes", "labels", "predictions", "sample_images"} <= saved.keys():
        return False
    labels, predictions, images, classes = saved["labels"], saved["predictions"], saved["sample_images"], saved["classes"]
    tensors = (labels, predictions, images)
    if not all(isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8 for tensor in tensors):
        return False
    if not isinstance(classes, list) or not all(map(is_class_name, classes)):
        return False
    return (labels.ndim == 1 and labels.shape == predictions.shape and len(labels) > 0
            and images.ndim == 4 and images.shape[1:] == (3, 32, 32) and len(images) <= len(labels)
            and max(int(labels.max()), int(predictions.max())) < len(classes))


def _is_tensor_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) and isinstance(tensor, torch.Tensor)
                                           for key, tensor in value.items())


def _is_weights(value) -> bool:
    """A state dict whose floating-point tensors are all finite: NaN weights are no model."""
    return _is_tensor_dict(value) and all(torch.isfinite(tensor).all() for tensor in value.values()
                                          if tensor.is_floating_point())


def _is_settings(value) -> bool:
    """The run's arguments, as far as building its model reads them."""
    return (isinstance(value, dict) and isinstance(value.get("model"), str)
            and value.get("shortcut") in (None, "A", "B") and value.get("stem") in (None, "cifar", "imagenet")
            and value.get("dataset", "cifar10") in SOURCES
            and is_count(value.get("seed", 0)) and value.get("seed", 0) < 2**64)


def _is_normalization(value) -> bool:
    if not (isinstance(value, dict) and value.keys() == {"mean", "std"}):
        return False
    tensors = value["mean"], value["std"]
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and torch.isfinite(t).all() for t in tensors):
        return False
    try:
        fits = all(torch.broadcast_shapes(t.shape, (3, 32, 32)) == (3, 32, 32) for t in tensors)
    except RuntimeError:
        return False
    return fits and bool((value["std"] > 0).all())


def _is_random_state(value) -> bool:
    """The generators' states: torch's and the data's (uint8 tensors), and where mixing was
    recorded, the state of its Python generator (which Random.setstate itself checks)."""
    if not (isinstance(value, dict) and all(isinstance(value.get(key), torch.Tensor)
                                            and value[key].dtype == torch.uint8 for key in ("torch", "data"))):
        return False
    augment = value.get("augment", [])  # one per process of a torchrun run
    if not (isinstance(augment, list) and all(isinstance(state, torch.Tensor) and state.dtype == torch.uint8
                                              for state in augment)):
        return False
    if "mix" not in value:
        return True
    try:
        Mixing(0, 0, 1, seed=0).load_state_dict(value["mix"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    return True


def _is_schedule_state(value) -> bool:
    return (isinstance(value, dict) and is_count(value.get("step_count"))
            and is_count(value.get("warmup_steps")) and isinstance(value.get("warming_up"), bool))


def _is_provenance(value) -> bool:
    return isinstance(value, list) and all(is_part(part) for part in value)


def _is_optimizer_state(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("state"), dict)
            and isinstance(value.get("param_groups"), list))


def _is_import_record(value) -> bool:
    """Where imported weights came from (peer_weights.py): the publisher, the file and its SHA-256,
    and the accuracy the publisher reports, where it reports one."""
    return (isinstance(value, dict) and is_text(value.get("source")) and is_text(value.get("file"))
            and is_sha256(value.get("sha256"))
            and (value.get("reported_test_acc") is None or is_percent(value["reported_test_acc"])))


def _is_export_record(value) -> bool:
    """What the run of exported weights was (export.py): its final test accuracy, status, epochs,
    command, provenance (the summary's lines) and the weights it started from (None: from scratch)."""
    return (isinstance(value, dict) and is_percent(value.get("final_test_acc")) and is_count(value.get("epochs"))
            and value.get("status") in COMPLETE and isinstance(value.get("official_data", False), bool)
            and isinstance(value.get("provenance"), list) and all(map(is_text, value["provenance"]))
            and is_text(value.get("run")) and is_text(value.get("command"))
            and is_start_record(value.get("started_from")))


def _is_class_names(value) -> bool:
    return isinstance(value, list) and all(map(is_class_name, value))  # as many as its data set's: load_checkpoint


# Every field of a checkpoint and what it must be: save_checkpoint writes only these, each as the
# table says; --evaluate, --init-from and torch.hub read EVALUATION_FIELDS, --resume every field
# (older checkpoints lack the OPTIONAL_FIELDS; present, each is checked).
CHECKPOINT_FIELDS = {
    "model": _is_weights,
    "args": _is_settings,
    "epoch": is_count,
    "normalization": _is_normalization,
    "optimizer": _is_optimizer_state,
    "scheduler": _is_schedule_state,
    "history": is_history,
    "metrics": is_row,  # the last epoch's row, for a reader of the file
    "best": is_best,
    "rng": _is_random_state,
    "wall_seconds": lambda value: is_number(value) and 0 <= value < math.inf,
    "provenance": _is_provenance,
    "test_predictions": predictions_are_valid,
    "started_from": is_start_record,
}
EVALUATION_FIELDS = ("model", "args", "epoch", "normalization")
OPTIONAL_FIELDS = ("metrics", "provenance", "started_from")
# The fields of weights that no run of this folder wrote, beside EVALUATION_FIELDS: weights imported
# from another project (peer_weights.py) or exported from a run (export.py). Checked where present.
WEIGHTS_FIELDS = {
    "imported": _is_import_record,
    "exported": _is_export_record,
    "classes": _is_class_names,
}


def checkpoint_problem(checkpoint: dict, fields) -> Optional[str]:
    """Which of ``fields`` is missing from ``checkpoint`` or not as CHECKPOINT_FIELDS (or
    WEIGHTS_FIELDS) says; None if none."""
    for field in fields:
        fits = CHECKPOINT_FIELDS.get(field) or WEIGHTS_FIELDS[field]
        if field in OPTIONAL_FIELDS or field in WEIGHTS_FIELDS:  # absent is fine, present must fit
            if field in checkpoint and not fits(checkpoint[field]):
                return f"its {field!r} is not what train.py writes"
        elif field not in checkpoint or not fits(checkpoint[field]):
            return f"its {field!r} is missing or not what train.py writes"
    return None


def schedule_problem(checkpoint: dict) -> Optional[str]:
    """Why a checkpoint's schedule state does not fit its epoch, or None: a resumed run takes its
    learning rate from the step count, so a forged count restarts or ends the schedule unseen."""
    state, epochs = checkpoint["scheduler"], checkpoint["args"].get("epochs")
    if not (is_count(state.get("total_steps")) and is_count(epochs) and epochs > 0):
        return None  # a checkpoint from before the schedule kept its totals; --epochs is checked when adopted
    steps_per_epoch, rest = divmod(state["total_steps"], epochs)
    expected = checkpoint["epoch"] * steps_per_epoch
    if rest or state["step_count"] != expected or state["warmup_steps"] > state["step_count"]:
        return (f"its schedule has taken {state['step_count']} steps ({state['warmup_steps']} of them warming up), "
                f"not the {expected} that {checkpoint['epoch']} epochs take")
    return None


def checked_for_saving(state: dict) -> dict:
    """``state`` as made for a checkpoint, after checking it against CHECKPOINT_FIELDS: a checkpoint
    that --resume would refuse, or one with a field the table does not list, is never written."""
    problem = checkpoint_problem(state, CHECKPOINT_FIELDS)
    unlisted = sorted(state.keys() - CHECKPOINT_FIELDS.keys())
    if problem or unlisted:
        raise ValueError(f"a checkpoint that --resume would refuse: {problem or f'unlisted fields {unlisted}'}")
    return state


def load_checkpoint(path: Path, model_name: Optional[str] = None, *, to_resume: bool,
                    dataset: Optional[str] = None) -> dict:
    """A checkpoint written by train.py, read without running any code from it, every field that
    is used (all of them ``to_resume``) checked before anything uses it; refused where it holds
    another model than ``model_name``, or a run on another data set than ``dataset``."""
    if not Path(path).is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign, or refused by the weights-only unpickler
        raise UsageError(f"{path} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"model", "args", "epoch"} <= checkpoint.keys():
        raise UsageError(f"{path} is not a checkpoint written by train.py")
    problem = checkpoint_problem(checkpoint, CHECKPOINT_FIELDS if to_resume else
                                 (*EVALUATION_FIELDS, *OPTIONAL_FIELDS, *WEIGHTS_FIELDS))
    if problem:
        raise UsageError(f"{path}: {problem} (a damaged or foreign checkpoint)")
    planned = checkpoint["args"].get("epochs")  # its type is checked when the settings are adopted
    if to_resume and is_count(planned) and checkpoint["epoch"] > planned:
        raise UsageError(f"{path}: it says {checkpoint['epoch']} epochs are done of {planned} (a damaged checkpoint)")
    if to_resume and checkpoint["best"] is not None and checkpoint["best"]["epoch"] > checkpoint["epoch"]:
        raise UsageError(f"{path}: its best epoch {checkpoint['best']['epoch']} lies beyond its epoch "
                         f"{checkpoint['epoch']} (a damaged checkpoint)")
    if to_resume and len(checkpoint["history"]) != checkpoint["epoch"]:
        raise UsageError(f"{path}: its history has {len(checkpoint['history'])} epochs, its epoch says "
                         f"{checkpoint['epoch']} (a damaged checkpoint)")
    problem = schedule_problem(checkpoint) if to_resume else None
    if problem:
        raise UsageError(f"{path}: {problem} (a damaged checkpoint)")
    validated = bool(checkpoint["args"].get("val_size"))
    if to_resume and any(({"val_loss", "val_acc"} <= row.keys()) != validated for row in checkpoint["history"]):
        raise UsageError(f"{path}: its history's validation columns do not match its --val-size (a damaged checkpoint)")
    if model_name is not None and checkpoint["args"]["model"] != model_name:
        raise UsageError(f"{path} holds a {checkpoint['args']['model']}, not a {model_name}")
    saved = checkpoint["args"].get("dataset", "cifar10")
    if "classes" in checkpoint and len(checkpoint["classes"]) != SOURCES[saved].class_count:
        raise UsageError(f"{path}: it names {len(checkpoint['classes'])} classes, {SOURCES[saved].name} has "
                         f"{SOURCES[saved].class_count} (a damaged checkpoint)")
    if dataset is not None and saved != dataset:
        raise UsageError(f"{path} holds a run on {SOURCES[saved].name}, not on {SOURCES[dataset].name}; "
                         f"give --dataset {saved} to use it")
    return checkpoint


def model_options(model: str, settings: dict) -> dict:
    """The builder's keyword options that ``settings`` (a run's arguments, as a dict) set, and the
    number of classes of its data set."""
    options = {name: settings[name] for name in ("shortcut", "stem") if settings.get(name) is not None}
    refused = [name for name in options if name not in inspect.signature(MODELS[model]).parameters]
    if refused:
        raise UsageError(f"{model} takes no {' / '.join('--' + name for name in refused)} option")
    return {**options, "num_classes": SOURCES[settings.get("dataset", "cifar10")].class_count}


def rebuild_model(checkpoint: dict, path: Path) -> nn.Module:
    """The network of a checkpoint that ``load_checkpoint`` has checked, built as its run built it
    (shortcut, stem, classes), with its weights, on the CPU: what --evaluate and torch.hub load."""
    settings = checkpoint["args"]
    name = settings["model"]
    if name not in MODELS:
        raise UsageError(f"{path} holds an unknown model {name!r}")
    model = build_model(name, **model_options(name, settings))
    load_weights(model, checkpoint, path)
    return model


def load_weights(model: nn.Module, checkpoint: dict, path: Path) -> None:
    """The checkpoint's weights into ``model`` (on any device), refused in one line where they do not fit it."""
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UsageError(f"{path}: its weights do not fit a {checkpoint['args']['model']} "
                         "(a damaged or foreign checkpoint)") from None


def starting_point(path: Path) -> dict:
    """The checkpoint that --init-from names, checked as --evaluate checks one (its weights when they
    are loaded: load_weights), with what the new run records of it as its ``started_from`` (as a
    resumed run's checkpoint holds it)."""
    checkpoint = load_checkpoint(path, to_resume=False)
    source = checkpoint["imported"]["source"] if "imported" in checkpoint else "train.py"
    return {**checkpoint, "started_from": {"checkpoint": printable(str(path)), "sha256": file_digest(path, "sha256"),
                                           "model": checkpoint["args"]["model"], "source": source,
                                           "epochs": checkpoint["epoch"]}}


class TrainedClassifier(nn.Module):
    """A trained network that takes images as people have them: N x 3 x 32 x 32 (or one image,
    3 x 32 x 32), uint8 in 0..255 or floats in 0..1 (torchvision's ToTensor), normalised inside as
    its training run normalised them. ``network`` is the bare model, which takes normalised images;
    ``classes`` names the outputs where the checkpoint or the data set does."""

    def __init__(self, network: nn.Module, normalization: dict, classes: tuple[str, ...]) -> None:
        super().__init__()
        self.network, self.classes = network, classes
        self.register_buffer("mean", normalization["mean"].float())  # in 0..1 units, as data.Normalization's
        self.register_buffer("std", normalization["std"].float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            return self(images.unsqueeze(0)).squeeze(0)
        if images.dtype == torch.uint8:
            images = images.float() / 255
        elif not images.is_floating_point():
            raise TypeError(f"images must be uint8 (0 to 255) or floating point (0 to 1), not {images.dtype}")
        return self.network((images - self.mean) / self.std)


def class_names(checkpoint: dict) -> tuple[str, ...]:
    """The names of a checkpoint's classes: its own (exported weights), its run's (from its data),
    else its data set's."""
    if "classes" in checkpoint:
        return tuple(checkpoint["classes"])
    saved = checkpoint.get("test_predictions")
    return (tuple(saved["classes"]) if predictions_are_valid(saved) else
            SOURCES[checkpoint["args"].get("dataset", "cifar10")].classes)


def trained_classifier(checkpoint: dict, network: nn.Module) -> TrainedClassifier:
    """``network`` (the checkpoint's, rebuilt) with the checkpoint's normalisation and class names."""
    return TrainedClassifier(network, checkpoint["normalization"], class_names(checkpoint))


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Raise ValueError unless ``saved`` (an optimizer state from a file) fits ``optimizer``.

    ``load_state_dict`` checks only the number of parameters per group: a momentum buffer of
    another shape loads without complaint, and the fused step then reads and writes past it.
    """
    groups = saved["param_groups"]
    if not all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups):
        raise ValueError("the optimizer's parameter groups are malformed")
    if [len(group["params"]) for group in groups] != [len(group["params"]) for group in optimizer.param_groups]:
        raise ValueError("the optimizer's parameter groups do not fit the model")
    for group, current in zip(groups, optimizer.param_groups):
        for name, value in current.items():
            if isinstance(value, torch.Tensor):  # the rate passes.TrainStep holds on the device: a float in a file
                value = float(value)
            if name != "params" and (type(group.get(name)) is not type(value)
                                     or (isinstance(value, float) and not math.isfinite(group[name]))):
                raise ValueError(f"the optimizer's {name} is {group.get(name)!r}, not a finite {type(value).__name__}")
    parameters = dict(zip((index for group in groups for index in group["params"]),
                          (parameter for group in optimizer.param_groups for parameter in group["params"])))
    for index, state in saved["state"].items():
        if index not in parameters or not isinstance(state, dict) or not all(
                fits_parameter(name, value, parameters[index]) for name, value in state.items()):
            raise ValueError(f"the optimizer's state for parameter {index} does not fit it")


def fits_parameter(name: str, value, parameter: torch.Tensor) -> bool:
    """An optimizer's per-parameter state: a step counter (a float scalar tensor) or a buffer
    (momentum, Adam's moments, Adagrad's sum) of the parameter's shape and dtype; None for SGD's
    momentum before its first step."""
    if name == "step":
        return isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point()
    return value is None or (isinstance(value, torch.Tensor) and value.shape == parameter.shape
                             and value.dtype == parameter.dtype)
