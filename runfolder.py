"""A run's folder, without PyTorch: the names of its files, the state the run is in, and the
atomic writes that every file of a run goes through. runfiles.RunFiles adds reading and writing
the files that need PyTorch; sweep.py needs this module alone, so that run.sh's and slurm.sh's
questions about a run take a tenth of a second, not the seconds of importing torch.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, TypeVar

TEMPORARY_SUFFIX = ".tmp"  # temporary files are .<name>.<random>.tmp beside the file they become
COMPLETE = ("finished", "early-stopped")  # the statuses of a run that ended as planned: its result is final
CSV_SUFFIX, JSON_SUFFIX = "_results.csv", "_results.json"
Folder = TypeVar("Folder", bound="RunFolder")


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


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


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


class RunFolder:
    """The paths of one run's files, and the state its summary and checkpoint say it is in."""

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
        """The run's summary, or None where there is none or it cannot be read."""
        try:
            result = json.loads(self.json.read_text())
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None

    def state(self) -> str:
        """finished (its summary says it finished or stopped early), diverged (its summary says
        so), resumable (it has a checkpoint) or new."""
        result = self.read_result()
        if result is not None and result.get("status") in COMPLETE:
            return "finished"
        if result is not None and result.get("status") == "diverged":
            return "diverged"
        return "resumable" if self.last.is_file() else "new"
