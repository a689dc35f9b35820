"""A run's folder, without PyTorch: the names of its files, the state the run is in, the atomic
writes every file of a run goes through, the folder's lock, the per-epoch CSV, and the summary
(JSON for programs, text for people) with the one table of its fields.

    RESULTS_DIR/<Model>/
        <Model>_last.pth              checkpoint after the last finished epoch (what --resume reads)
        <Model>_best.pth              the checkpoint of the best epoch on the selection split
        <Model>_test_predictions.pt   the latest epoch's test labels and predictions, a few test images
        <Model>_results.csv           a row per epoch
        <Model>_results.json / .txt   the summary: the run's status after every epoch, its result at the end
        plots/                        the figures (figures.py)

checkpoints.RunFiles adds the files that PyTorch writes (the two .pth files and the predictions).
This module and that one are the only ones that know these names. sweep.py needs this module
alone, so that run.sh's and slurm.sh's questions about a run take a tenth of a second, not the
seconds of importing torch.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Sequence, TypeVar

from cifar_resnet.errors import UsageError

TEMPORARY_SUFFIX = ".tmp"  # temporary files are .<name>.<random>.tmp beside the file they become
LOCK_NAME = ".lock"  # holds the process id of the run that has the folder
MAX_SUMMARY_BYTES = 1 << 20  # a summary has a few KB (10 KB with many parts): more is not train.py's
MAX_CSV_BYTES = 16 << 20  # a row has about 150 bytes: 100,000 epochs
MAX_SCHEDULE_STEPS = 10**7  # 150 times the paper's 64k; the lr figure draws each step
STATUSES = ("unfinished", "interrupted", "finished", "early-stopped", "diverged")
COMPLETE = ("finished", "early-stopped")  # the statuses of a run that ended as planned: its result is final
CSV_SUFFIX, JSON_SUFFIX = "_results.csv", "_results.json"
DATASETS = ("cifar10", "cifar100")  # data.SOURCES's names (a test checks), known here without PyTorch
CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
               "epoch_seconds", "train_images_per_s")
REQUIRED_CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")  # what the figures read
Folder = TypeVar("Folder", bound="RunFolder")


class RunFileError(Exception):
    """A run's file exists but cannot be used; the message names it and says why."""


# --------------------------------------------------------------------------------------------
# Atomic writes: a file is the old one or the new one, never half of one


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# mkstemp makes files readable by their owner only; results are ordinary files (as open() makes them).
FILE_MODE = 0o666 & ~_current_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file)`` into a new temporary file beside ``path``, then rename it over
    ``path`` (atomic on POSIX and Windows): a process killed at any moment leaves the old file or
    the new one, never half of one. The temporary file gets a fresh random name and is created
    exclusively, and a rename replaces a symlink at ``path`` rather than following it, so no
    planted link can redirect a write."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)  # only left where write() failed


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; OSError or ValueError for
    anything else. A link in its place is not followed (the run's files are never links), and a
    pipe, a device or a file past the limit is refused before it is read to its end, which for
    /dev/zero never comes."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{path} is not a regular file")
        content = file.read(limit + 1)
    if len(content) > limit:
        raise ValueError(f"{path} is larger than {limit:,} bytes")
    return content


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def own_folder(path: Path) -> Path:
    """``path`` made a real folder, for a run's files: a link in its place is removed, never
    followed (it would send them elsewhere, over another file of that name)."""
    if path.is_symlink():
        path.unlink()
    if path.exists() and not path.is_dir():
        raise RunFileError(f"{path} is a file where the run keeps a folder: move it away")
    path.mkdir(exist_ok=True)
    return path


def link_atomically(source: Path, path: Path) -> None:
    """``path`` becomes a second name of ``source``'s bytes: a hard link where the file system has
    them, else a copy. ``source`` is only ever replaced by a rename, never written in place, so the
    link keeps its bytes."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}")
    try:
        os.link(source, temporary)  # fails on an existing name rather than following it
    except OSError:
        with open(source, "rb") as original:
            atomic_write(path, lambda file: shutil.copyfileobj(original, file))
        return
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The folder


class RunFolder:
    """The paths of one run's files, the state its summary and checkpoint say it is in, and
    reading and writing the files that need no PyTorch."""

    def __init__(self, folder: Path, model: str) -> None:
        self.folder, self.model = Path(folder), model
        self.last = self.folder / f"{model}_last.pth"
        self.best = self.folder / f"{model}_best.pth"
        self.predictions = self.folder / f"{model}_test_predictions.pt"
        self.csv = self.folder / f"{model}{CSV_SUFFIX}"
        self.json = self.folder / f"{model}{JSON_SUFFIX}"
        self.txt = self.folder / f"{model}_results.txt"
        self.plots = self.folder / "plots"
        self.tensorboard = self.folder / "tensorboard"

    @classmethod
    def of(cls: type[Folder], results_dir: Path, model: str, dataset: str = "cifar10") -> Folder:
        """Where train.py puts a run of ``model``: RESULTS_DIR/<model>/ on CIFAR-10, and
        RESULTS_DIR/cifar100/<model>/ on CIFAR-100, so that the two never share a folder."""
        return cls(Path(results_dir) / ("" if dataset == "cifar10" else dataset) / model, model)

    @classmethod
    def in_folder(cls: type[Folder], folder: Path) -> Optional[Folder]:
        """The run whose CSV or summary lies in ``folder``, whatever the folder is called; None if none does."""
        for suffix in (CSV_SUFFIX, JSON_SUFFIX):
            found = sorted(Path(folder).glob("*" + suffix))
            if found:
                return cls(folder, found[0].name[: -len(suffix)])
        return None

    @classmethod
    def under(cls: type[Folder], root: Path) -> list[Folder]:
        """Every run that has written a CSV or a summary in or below ``root``."""
        folders = {path.parent for suffix in (CSV_SUFFIX, JSON_SUFFIX) for path in Path(root).rglob("*" + suffix)}
        return [cls.in_folder(folder) for folder in sorted(folders)]

    def read_result(self) -> Optional[dict]:
        """The run's summary, or None where there is none, it cannot be read, or it is not what
        train.py writes (``summary_problem``)."""
        try:
            result = json.loads(read_small_file(self.json, MAX_SUMMARY_BYTES))
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            return None
        return None if summary_problem(result) else result

    def state(self) -> str:
        """finished (its summary says it finished or stopped early), diverged (its summary says
        so), resumable (it has a checkpoint) or new."""
        result = self.read_result()
        if result is not None and result.get("status") in COMPLETE:
            return "finished"
        if result is not None and result.get("status") == "diverged":
            return "diverged"
        return "resumable" if self.last.is_file() else "new"

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

    def write_history(self, rows: list[dict]) -> None:
        """The CSV of ``rows``, each made by csv_row."""
        write_text(self.csv, csv_text(rows, rows[0].keys()))

    def read_history(self) -> list[dict]:
        """The per-epoch rows of the CSV, numbers as floats (epoch as int)."""
        try:
            text = read_small_file(self.csv, MAX_CSV_BYTES).decode()
            rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(io.StringIO(text))]
        except (OSError, TypeError, ValueError) as error:
            raise RunFileError(f"{self.csv} is not a results CSV written by train.py ({error})") from None
        if not rows:
            raise RunFileError(f"{self.csv} has no epochs yet")
        missing = [column for column in REQUIRED_CSV_COLUMNS if column not in rows[0]]
        unknown = [column for column in rows[0] if column not in CSV_COLUMNS]
        if missing or unknown:
            raise RunFileError(f"{self.csv} is not a results CSV written by train.py ("
                               + (f"no {missing[0]!r} column)" if missing else f"an unknown column {unknown[0]!r})"))
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return rows

    def write_result(self, result: dict) -> None:
        """The summary, after checking it against SUMMARY_FIELDS: what every reader relies on."""
        problem = summary_problem(result, every_field_listed=True)
        if problem:
            raise ValueError(f"a summary that its readers would refuse: {problem}")
        write_text(self.json, json.dumps(result, indent=2) + "\n")
        write_text(self.txt, summary_text(result))


# --------------------------------------------------------------------------------------------
# What the fields of a run's files must be (checkpoints.py uses these too)


def is_number(value) -> bool:
    """An int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



def _is_percent(value) -> bool:
    return is_number(value) and 0 <= value <= 100  # NaN fails the comparison


def _is_amount(value) -> bool:
    """Seconds, device-hours or GiB: finite and not negative."""
    return is_number(value) and 0 <= value < math.inf


def _fits_column(column: str, value) -> bool:
    """Accuracies in 0..100; losses not negative (an evaluation loss may truly be infinite while the
    weights are finite); every other number finite and not negative."""
    if column.endswith("_acc"):
        return _is_percent(value)
    if column.endswith("_loss"):
        return is_number(value) and value >= 0  # NaN fails the comparison
    return _is_amount(value)


def is_row(value) -> bool:
    """One epoch's row (csv_row): known columns, an epoch from 1, every number in its column's range."""
    return (isinstance(value, dict) and {"epoch", "test_acc"} <= value.keys() and is_count(value["epoch"])
            and value["epoch"] >= 1
            and all(column in CSV_COLUMNS and _fits_column(column, number) for column, number in value.items()))


def is_history(value) -> bool:
    """Rows of epochs 1, 2, 3, ... in order."""
    return (isinstance(value, list) and all(map(is_row, value))
            and [row["epoch"] for row in value] == list(range(1, len(value) + 1)))


def is_best(value) -> bool:
    return value is None or (isinstance(value, dict) and is_count(value.get("epoch")) and value["epoch"] >= 1
                             and value.get("selected_on") in ("val", "test") and _is_percent(value.get("selected_acc")))


def _is_plain_data(value, depth: int = 0) -> bool:
    """Whether ``value`` is what JSON holds (printable strings, finite numbers, booleans, None, lists
    and dicts of them), nested no deeper than a run's record."""
    if isinstance(value, str):
        return value.isprintable()  # no newline or escape code to forge a line of the text summary
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, (bool, int)):
        return True
    if depth >= 4:
        return False
    if isinstance(value, list):
        return all(_is_plain_data(item, depth + 1) for item in value)
    return isinstance(value, dict) and all(isinstance(key, str) and _is_plain_data(item, depth + 1)
                                           for key, item in value.items())


def is_part(value) -> bool:
    """One part of a run's provenance with every field its summary uses (provenance.finish_part)."""
    return (isinstance(value, dict) and _is_plain_data(value) and is_count(value.get("first_epoch"))
            and all(isinstance(value.get(key), dict) for key in ("code", "versions", "device", "data"))
            and isinstance(value["data"].get("official"), bool) and isinstance(value["data"].get("name"), str)
            and isinstance(value["code"].get("commit"), str) and isinstance(value["device"].get("type"), str)
            and is_count(value["device"].get("processes"))
            and all(_is_amount(value.get(key)) for key in ("wall_seconds", "device_hours", "peak_memory_gib")))


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_counts(value) -> bool:
    return isinstance(value, dict) and all(_is_text(key) and is_count(count) for key, count in value.items())


def _is_numbers(value) -> bool:
    return isinstance(value, list) and all(map(is_number, value))


def _is_schedule(value) -> bool:
    """A schedule's state_dict (recipe.Schedule), complete enough to redraw every step's rate, and
    no longer than a figure can draw (one Python call per step)."""
    return (isinstance(value, dict)
            and all(is_count(value.get(key)) for key in ("step_count", "warmup_steps", "total_steps",
                                                         "linear_warmup_steps"))
            and value["warmup_steps"] <= value["step_count"] <= value["total_steps"] <= MAX_SCHEDULE_STEPS
            and is_number(value.get("base_lr")) and isinstance(value.get("cosine"), bool)
            and (value["cosine"] or is_number(value.get("gamma")))
            and isinstance(value.get("milestone_steps"), list) and all(map(is_count, value["milestone_steps"])))


def _is_record(value) -> bool:
    """The summary's provenance (provenance.summary) as far as readers use it: whether every part
    read the official data, and its compute. Its parts are for people (older runs' have fewer fields)."""
    return (isinstance(value, dict) and isinstance(value.get("official_data"), bool)
            and _is_amount(value.get("device_hours"))
            and (value.get("peak_memory_gib") is None or _is_amount(value["peak_memory_gib"]))
            and isinstance(value.get("parts", []), list))


def _is_run_settings(value) -> bool:
    """A run's recorded settings, as far as the readers use them (the sweep compares the rest by value)."""
    return (isinstance(value, dict) and is_count(value.get("seed")) and value["seed"] < 2**64
            and value.get("dataset", "cifar10") in DATASETS)


def _is_early_stop(value) -> bool:
    return isinstance(value, dict) and is_count(value.get("epoch")) and _is_text(value.get("reason"))


# Every field of a run's summary (<Model>_results.json) and what it must be: train.py writes only
# these (write_result checks), and every reader takes a summary only where each field it holds fits.
SUMMARY_FIELDS = {
    "model": _is_text,
    "status": lambda value: value in STATUSES,
    "parameters": is_count,
    # "final_*" for a run that ended as planned (the result), "latest_*" for one that may go on
    **{f"{when}_{name}": _is_percent for when in ("final", "latest") for name in ("test_acc", "test_error", "val_acc")},
    "best": is_best,
    "epochs": is_count,
    "epochs_done": is_count,
    "steps": is_count,
    "steps_per_epoch": is_count,
    "images": _is_counts,
    "schedule": _is_schedule,
    "wall_seconds": _is_amount,
    "provenance": _is_record,  # older summaries have none
    "device": _is_text,
    "precision": _is_text,
    "compiled": lambda value: isinstance(value, bool),
    "compile_mode": lambda value: value is None or _is_text(value),
    "settings": _is_run_settings,
    "command": _is_text,
    "layer_response_std": _is_numbers,  # Figure 7's, for a run that ended as planned
    "stopped_by": _is_text,  # the status's reasons
    "diverged": _is_text,
    "early_stopped": _is_early_stop,
}
# What a summary that says the run ended as planned always holds: the report's numbers.
COMPLETE_FIELDS = ("model", "parameters", "final_test_error", "epochs", "steps_per_epoch", "wall_seconds", "settings")


def summary_problem(result, every_field_listed: bool = False) -> Optional[str]:
    """Why ``result`` is not a summary that train.py writes, or None where it is one: a status, each
    field of SUMMARY_FIELDS it holds as the table says, and COMPLETE_FIELDS once complete. Fields
    the table does not list are left alone (another version's), unless ``every_field_listed``."""
    if not isinstance(result, dict) or "status" not in result:
        return "not a summary with a status"
    for field, value in result.items():
        if field in SUMMARY_FIELDS and not SUMMARY_FIELDS[field](value):
            return f"its {field!r} is not what train.py writes"
        if field not in SUMMARY_FIELDS and every_field_listed:
            return f"its {field!r} is not a field of a summary"
    missing = [field for field in COMPLETE_FIELDS if field not in result]
    if result["status"] in COMPLETE and missing:
        return f"a complete run's summary without {missing[0]!r}"
    return None


# --------------------------------------------------------------------------------------------
# The CSV's rows and the summary as text


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
        *record_lines(result.get("provenance"), result["epochs_done"]),
        f"command: {result['command']}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
    ]
    return "\n".join(lines) + "\n"


def describe_data(data: Optional[dict]) -> str:
    if data is None:
        return "unknown"
    return (f"{data['name']}, the official release (every file's MD5 matches torchvision's)" if data["official"]
            else f"{data['name']} format, NOT the official release (checksums differ from torchvision's): "
                 "not comparable with published numbers")


def describe_code(code: dict) -> str:
    changes = code.get("uncommitted_changes")
    return code["commit"] + (" with uncommitted changes" if changes is True else
                             "" if changes is False else " (uncommitted changes unknown)")


def describe_part_device(device: dict) -> str:
    name = device.get("name", device["type"])
    processes = device["processes"]
    return f"{name}{f' x {processes} processes' if processes > 1 else ''}"


def record_lines(record: Optional[dict], epochs_done: int) -> list[str]:
    """The record of a run (``summary``) as lines of its text summary."""
    parts = record["parts"] if record else []
    if not parts:
        return []
    latest = parts[-1]
    versions = latest["versions"]
    officials = {part["data"]["official"] for part in parts}
    lines = [
        "data: " + (describe_data(latest["data"]) if len(officials) == 1 else
                    "NOT the official release in every part of the run: not comparable with published numbers"),
        "code: " + "; ".join(dict.fromkeys(describe_code(part["code"]) for part in parts)),
        f"versions: python {versions['python']}, torch {versions['torch']}, torchvision {versions['torchvision']}, "
        f"CUDA {versions['cuda'] or '-'}, cuDNN {versions['cudnn'] or '-'}",
        f"compute: {record['device_hours']:.3f} device-hours, peak memory {record['peak_memory_gib']:.2f} GiB",
    ]
    if latest["data"].get("val_split_sha256"):
        lines.append(f"validation split: sha256 {latest['data']['val_split_sha256']}")
    if len(parts) > 1:
        spans = [f"epochs {part['first_epoch']}-{following['first_epoch'] - 1}" for part, following in
                 zip(parts, parts[1:])] + [f"epochs {latest['first_epoch']}-{epochs_done}"]
        lines.append("parts: " + "; ".join(f"{span} on {describe_part_device(part['device'])}, {part.get('precision')}"
                                            for span, part in zip(spans, parts)))
    return lines
