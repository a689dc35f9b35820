"""A run's folder, without PyTorch: the names of its files, the state the run is in, the atomic
writes every file of a run goes through, the folder's lock, and reading and writing the per-epoch
CSV and the summary (JSON for programs, text for people), checked against fields.py's tables.

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
import glob
import io
import json
import os
import secrets
import shutil
import stat
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from cifar_resnet.errors import UsageError
from cifar_resnet.fields import COMPLETE, CSV_COLUMNS, REQUIRED_CSV_COLUMNS, summary_problem, summary_text

TEMPORARY_SUFFIX = ".tmp"  # temporary files are .<name>.<random>.tmp beside the file they become
LOCK_NAME = ".lock"  # holds the process id of the run that has the folder
MAX_SUMMARY_BYTES = 1 << 20  # a summary has a few KB (10 KB with many parts): more is not train.py's
MAX_CSV_BYTES = 16 << 20  # a row has about 150 bytes: 100,000 epochs
CSV_SUFFIX, JSON_SUFFIX = "_results.csv", "_results.json"
Folder = TypeVar("Folder", bound="RunFolder")


class RunFileError(Exception):
    """A run's file exists but cannot be used, or cannot be written; the message names it and says why."""


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
    planted link can redirect a write. Inside ``written_together`` the file waits for the others."""
    content = io.BytesIO()
    write(content)  # in memory first: a disk that fails then fails below, with its own reason (torch.save hides it)
    together = _WRITTEN_TOGETHER.get()
    if together is None:
        _replace_files({Path(path): content.getvalue()})
    else:
        together[Path(path)] = content.getvalue()


_WRITTEN_TOGETHER: ContextVar[Optional[dict]] = ContextVar("written_together", default=None)


@contextlib.contextmanager
def written_together() -> Iterator[None]:
    """The atomic writes inside become one set: each file is made in memory, and only once all of
    them are made are they written and renamed into place, one right after another. An error or a
    signal before that leaves every old file as it was, not some old and some new."""
    together: dict[Path, bytes] = {}
    token = _WRITTEN_TOGETHER.set(together)
    try:
        yield
    finally:
        _WRITTEN_TOGETHER.reset(token)
    _replace_files(together)


def _replace_files(contents: dict[Path, bytes]) -> None:
    temporaries: dict[Path, Path] = {}
    try:
        for path, content in contents.items():
            with failures_named(path):
                descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
                temporaries[path] = Path(name)
                with os.fdopen(descriptor, "wb") as file:
                    os.fchmod(descriptor, FILE_MODE)
                    file.write(content)
        for path, temporary in temporaries.items():
            with failures_named(path):
                os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)  # only left where a write failed


def remove_leftovers_of(path: Path) -> None:
    """Delete the temporary files that a killed atomic write of ``path`` left behind."""
    _remove_files(path.parent.glob(f".{glob.escape(path.name)}.*{TEMPORARY_SUFFIX}"))


def _remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_symlink() or path.is_file():  # anything else of that name was not made here
            path.unlink()


@contextlib.contextmanager
def failures_named(path: Path) -> Iterator[None]:
    """An OSError inside (a full disk, a quota, a read-only folder) becomes one RunFileError naming ``path``."""
    try:
        yield
    except OSError as error:
        raise RunFileError(f"cannot write {path} ({error.strerror or error})") from None


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
    # A folder's name need not be UTF-8 (Python holds the odd bytes as surrogates): written back as they were.
    atomic_write(path, lambda file: file.write(text.encode(errors="surrogateescape")))


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
        with failures_named(path):
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
        _remove_files(self.folder.glob("**/.*" + TEMPORARY_SUFFIX))

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


def csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header; None becomes an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()
