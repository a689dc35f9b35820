"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(temporary_path)``, then rename over ``path`` (atomic on POSIX and Windows)."""
    path = Path(path)
    temporary = path.with_name(path.name + SUFFIX)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only left where write() failed


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


def remove_leftovers(folder: Path) -> None:
    """Delete temporary files that a killed process left behind in ``folder``."""
    for leftover in Path(folder).glob("**/*" + SUFFIX):
        leftover.unlink()
