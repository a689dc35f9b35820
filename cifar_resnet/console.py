"""What train.py shows: a progress bar on a terminal, a line per epoch, the one-line messages of
a failed or stopped run and the command that continues it. With several processes, rank 0 alone
speaks.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

from tqdm import tqdm

from cifar_resnet import distributed

ERROR_GRACE_SECONDS = 3  # how long a process other than rank 0 waits before exiting on an error


def progress_bar(total: int, description: str):
    """A tqdm bar on a terminal (rank 0's); nothing in a log, which gets one line per epoch instead."""
    if not sys.stderr.isatty() or not distributed.is_main_process():
        return contextlib.nullcontext()
    return tqdm(total=total, desc=description, leave=False)


def print_paths_as_they_are() -> None:
    """A path need not be UTF-8: Python holds its odd bytes as surrogates, which standard output
    refuses under a UTF-8 locale outside Python's UTF-8 mode. It now prints them as the bytes they were."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")


def say(line: str, to_stderr: bool = False) -> None:
    """Print a line, from rank 0 only when several processes train one run."""
    if distributed.is_main_process():
        print(line.rstrip("\n"), file=sys.stderr if to_stderr else sys.stdout, flush=True)


def fail(message: str, status: int) -> int:
    """Say why the command fails (rank 0), and return its exit status. The other processes, which
    met the same error, wait a moment first: torchrun ends every process once one has exited."""
    say(message, to_stderr=True)
    if not distributed.is_main_process():
        time.sleep(ERROR_GRACE_SECONDS)
    return status


def resume_command(args: argparse.Namespace) -> str:
    """What continues this run: its settings come from the checkpoint, so only the paths are needed."""
    command = f"{distributed.launcher()} train.py --model {args.model} --resume"
    if args.dataset != "cifar10":  # the data set names the run's folder
        command += f" --dataset {args.dataset}"
    for flag, value, default in (("--results-dir", args.results_dir, Path("results")),
                                 ("--data-dir", args.data_dir, Path("data"))):
        if Path(value) != default:
            command += f" {flag} {value}"
    return command


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"train {row['train_acc']:.2f}%"]
    if "val_acc" in row:
        parts.append(f"val {row['val_acc']:.2f}%")
    parts += [f"test {row['test_acc']:.2f}%", f"lr {row['lr']:.4g}", f"{row['epoch_seconds']:.1f}s",
              f"{row['train_images_per_s']:.0f} img/s"]
    return "  ".join(parts)
