"""The ways a command can end other than by finishing; train.main and report.main turn each into its exit status."""

from __future__ import annotations

import argparse
import signal


class UsageError(Exception):
    """A bad argument or input the user can fix: one line on stderr, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument as one line (UsageError), not argparse's usage block."""

    def error(self, message: str):
        raise UsageError(message)


class RunInterrupted(Exception):
    """SIGINT or SIGTERM arrived and the run stopped between two steps: exit status 128 + signal."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
        self.epochs_done = 0  # set by train.run: the epochs the last checkpoint holds


class Diverged(Exception):
    """The training loss became NaN or infinite: exit status 1."""


class ReportError(Exception):
    """A results folder that report.py cannot draw or compare; the message says why."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """``error`` as its type and message on one printable line (PyTorch's messages span many), at most
    ``limit`` characters of the message: for a note, an error line or a record's field."""
    message = "".join(char if char.isprintable() else "?" for char in " ".join(str(error).split()))
    return f"{type(error).__name__}: {message[:limit]}"
