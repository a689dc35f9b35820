"""A run's files: their names, the per-epoch CSV, the checkpoints, the test predictions that the
figures are drawn from, and the summaries. Every write is atomic; every read is checked.

    RESULTS_DIR/<Model>/
        <Model>_last.pth              checkpoint after the last finished epoch (what --resume reads)
        <Model>_best.pth              the checkpoint of the best epoch on the selection split
        <Model>_test_predictions.pt   the latest epoch's test labels and predictions, a few test images
        <Model>_results.csv           a row per epoch
        <Model>_results.json / .txt   the summary: the run's status after every epoch, its result at the end
        plots/                        the figures (report.py)

This module and runfolder.py (the names and a run's state, without PyTorch) are the one place
that knows these names: train.py and report.py ask this one, run.sh (through sweep.py) that one.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

import provenance
from augment import Mixing
from data import SOURCES
from errors import UsageError
from runfolder import FILE_MODE, TEMPORARY_SUFFIX, RunFolder, atomic_write, link_atomically, write_text

LOCK_NAME = ".lock"  # holds the process id of the run that has the folder
CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
               "epoch_seconds", "train_images_per_s")


class RunFileError(Exception):
    """A run's file exists but cannot be used; the message names it and says why."""


class RunFiles(RunFolder):
    """One run's files: reading and writing them."""

    def make_writable(self) -> None:
        """Create the folder and prove it takes files, before any time is spent training."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):  # a fresh, exclusive name: no planted link is followed
                pass
        except OSError as error:
            raise UsageError(f"cannot write results to {self.folder} ({error.strerror or error})") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's folder for this process: a second run there refuses, naming the first.
        The lock is the kernel's (flock), so it goes with the process however that ends."""
        descriptor = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
                raise UsageError(f"{self.folder} is in use by another run (process {holder}); wait for it to end, "
                                 "or give this run another --results-dir") from None
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(descriptor)

    def clear(self) -> None:
        """Delete what an earlier run wrote here (for --overwrite), before the new run writes
        anything: an overwrite stopped early must not leave the old run's checkpoints, CSV or
        figures beside the new run's summary. The summary goes first, so a kill halfway leaves a
        folder that claims no finished run. Only the run's own names; anything else stays."""
        for path in (self.json, self.txt, self.last, self.best, self.predictions, self.csv):
            path.unlink(missing_ok=True)
        for folder in (self.plots, self.tensorboard):
            if folder.is_symlink() or folder.is_file():
                folder.unlink()  # a planted link is removed, not followed
            elif folder.is_dir():
                shutil.rmtree(folder)

    def remove_leftovers(self) -> None:
        """Delete the temporary files that a killed process left behind (files only: anything
        else of that name was not made here)."""
        for leftover in self.folder.glob("**/.*" + TEMPORARY_SUFFIX):
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink()

    def save_checkpoint(self, state: dict, *, is_best: bool) -> None:
        atomic_write(self.last, lambda file: torch.save(state, file))
        if is_best:
            self.link_best()

    def link_best(self) -> None:
        """best.pth becomes the checkpoint just written."""
        link_atomically(self.last, self.best)

    def write_history(self, rows: list[dict]) -> None:
        """The CSV of ``rows``, each made by csv_row."""
        write_text(self.csv, csv_text(rows, rows[0].keys()))

    def read_history(self) -> list[dict]:
        """The per-epoch rows of the CSV, numbers as floats (epoch as int)."""
        try:
            with open(self.csv, newline="") as file:
                rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
        except (TypeError, ValueError) as error:
            raise RunFileError(f"{self.csv} is not a results CSV written by train.py ({error})") from None
        if not rows:
            raise RunFileError(f"{self.csv} has no epochs yet")
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return rows

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

    def write_result(self, result: dict) -> None:
        write_text(self.json, json.dumps(result, indent=2) + "\n")
        write_text(self.txt, summary_text(result))


def predictions_are_valid(saved) -> bool:
    if not isinstance(saved, dict) or not {"epoch", "classes", "labels", "predictions", "sample_images"} <= saved.keys():
        return False
    labels, predictions, images, classes = saved["labels"], saved["predictions"], saved["sample_images"], saved["classes"]
    tensors = (labels, predictions, images)
    if not all(isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8 for tensor in tensors):
        return False
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        return False
    return (labels.ndim == 1 and labels.shape == predictions.shape and len(labels) > 0
            and images.ndim == 4 and images.shape[1:] == (3, 32, 32) and len(images) <= len(labels)
            and max(int(labels.max()), int(predictions.max())) < len(classes))


def is_number(value) -> bool:
    """An int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_tensor_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) and isinstance(tensor, torch.Tensor)
                                           for key, tensor in value.items())


def _is_settings(value) -> bool:
    """The run's arguments, as far as building its model reads them."""
    return (isinstance(value, dict) and isinstance(value.get("model"), str)
            and value.get("shortcut") in (None, "A", "B") and value.get("stem") in (None, "cifar", "imagenet")
            and value.get("dataset", "cifar10") in SOURCES
            and _is_count(value.get("seed", 0)) and value.get("seed", 0) < 2**64)


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


def _is_history(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, dict) and all(column in CSV_COLUMNS and is_number(number) for column, number in row.items())
        and {"epoch", "test_acc"} <= row.keys() for row in value)


def _is_best(value) -> bool:
    return value is None or (isinstance(value, dict) and _is_count(value.get("epoch"))
                             and value.get("selected_on") in ("val", "test") and is_number(value.get("selected_acc")))


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
    return (isinstance(value, dict) and _is_count(value.get("step_count"))
            and _is_count(value.get("warmup_steps")) and isinstance(value.get("warming_up"), bool))


def _is_plain_data(value, depth: int = 0) -> bool:
    """Whether ``value`` is what JSON holds (strings, numbers, booleans, None, lists and dicts of
    them), nested no deeper than a run's record."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if depth >= 4:
        return False
    if isinstance(value, list):
        return all(_is_plain_data(item, depth + 1) for item in value)
    return isinstance(value, dict) and all(isinstance(key, str) and _is_plain_data(item, depth + 1)
                                           for key, item in value.items())


def is_part(value) -> bool:
    """One part of a run's provenance with every field its summary uses (provenance.finish_part)."""
    return (isinstance(value, dict) and _is_plain_data(value) and _is_count(value.get("first_epoch"))
            and all(isinstance(value.get(key), dict) for key in ("code", "versions", "device", "data"))
            and isinstance(value["data"].get("official"), bool) and isinstance(value["data"].get("name"), str)
            and isinstance(value["code"].get("commit"), str) and isinstance(value["device"].get("type"), str)
            and _is_count(value["device"].get("processes"))
            and all(is_number(value.get(key)) for key in ("wall_seconds", "device_hours", "peak_memory_gib")))


def _is_provenance(value) -> bool:
    return isinstance(value, list) and all(is_part(part) for part in value)


def _is_optimizer_state(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("state"), dict)
            and isinstance(value.get("param_groups"), list))


# What each field of a checkpoint must be. --evaluate needs the first four; --resume all of them.
CHECKPOINT_FIELDS = {
    "model": _is_tensor_dict,
    "args": _is_settings,
    "epoch": _is_count,
    "normalization": _is_normalization,
    "optimizer": _is_optimizer_state,
    "scheduler": _is_schedule_state,
    "history": _is_history,
    "best": _is_best,
    "rng": _is_random_state,
    "wall_seconds": is_number,
    "test_predictions": predictions_are_valid,
}
EVALUATION_FIELDS = ("model", "args", "epoch", "normalization")


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
    for field in CHECKPOINT_FIELDS if to_resume else EVALUATION_FIELDS:
        if field not in checkpoint or not CHECKPOINT_FIELDS[field](checkpoint[field]):
            raise UsageError(f"{path}: its {field!r} is missing or not what train.py writes "
                             "(a damaged or foreign checkpoint)")
    if to_resume and not _is_provenance(checkpoint.get("provenance", [])):  # older checkpoints have none
        raise UsageError(f"{path}: its 'provenance' is not what train.py writes (a damaged or foreign checkpoint)")
    if to_resume and len(checkpoint["history"]) != checkpoint["epoch"]:
        raise UsageError(f"{path}: its history has {len(checkpoint['history'])} epochs, its epoch says "
                         f"{checkpoint['epoch']} (a damaged checkpoint)")
    validated = bool(checkpoint["args"].get("val_size"))
    if to_resume and any(({"val_loss", "val_acc"} <= row.keys()) != validated for row in checkpoint["history"]):
        raise UsageError(f"{path}: its history's validation columns do not match its --val-size (a damaged checkpoint)")
    if model_name is not None and checkpoint["args"]["model"] != model_name:
        raise UsageError(f"{path} holds a {checkpoint['args']['model']}, not a {model_name}")
    saved = checkpoint["args"].get("dataset", "cifar10")
    if dataset is not None and saved != dataset:
        raise UsageError(f"{path} holds a run on {SOURCES[saved].name}, not on {SOURCES[dataset].name}; "
                         f"give --dataset {saved} to use it")
    return checkpoint


def csv_row(metrics: dict) -> dict:
    """An epoch's metrics in CSV order, floats rounded to keep the CSV readable."""
    return {column: round(metrics[column], 6) for column in CSV_COLUMNS if column in metrics}


def csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header; None becomes an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def summary_text(result: dict) -> str:
    """The summary JSON as a few lines for people; the final model's test accuracy first."""
    lines = [f"model: {result['model']} ({result['parameters']:,} parameters)"]
    if result["status"] == "diverged":
        lines.append(f"DIVERGED: {result['diverged']}")
    elif result["status"] == "early-stopped":
        lines.append(f"EARLY-STOPPED after epoch {result['early_stopped']['epoch']} of {result['epochs']}: "
                     f"{result['early_stopped']['reason']}")
    elif result["status"] != "finished":
        stopped = f", stopped by {result['stopped_by']}" if "stopped_by" in result else ""
        lines.append(f"{result['status'].upper()}: {result['epochs_done']} of {result['epochs']} epochs done{stopped}; "
                     "continue it with --resume")
    if "final_test_acc" in result:
        lines.append(f"final test accuracy: {result['final_test_acc']:.2f}%  "
                     f"(test error {100 - result['final_test_acc']:.2f}%)  <- the result")
    if "latest_test_acc" in result:
        lines.append(f"test accuracy after epoch {result['epochs_done']}: {result['latest_test_acc']:.2f}%  "
                     "(not a result: the run did not finish)")
    for when in ("final", "latest"):
        if f"{when}_val_acc" in result:
            lines.append(f"{when} validation accuracy: {result[f'{when}_val_acc']:.2f}%")
    best = result["best"]
    if best is not None:
        lines.append(f"best checkpoint: epoch {best['epoch']}, chosen on {best['selected_on']} accuracy "
                     f"{best['selected_acc']:.2f}%"
                     + ("  (chosen on the test set: not an unbiased result)" if best["selected_on"] == "test" else ""))
    lines += [
        f"epochs: {result['epochs_done']} of {result['epochs']} ({result['steps']} steps), "
        f"wall time {result['wall_seconds'] / 60:.1f} min",
        f"device: {result['device']}, precision {result['precision']}",
        *provenance.summary_lines(result.get("provenance"), result["epochs_done"]),
        f"command: {result['command']}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
    ]
    return "\n".join(lines) + "\n"
