"""What train.py shows: a progress bar on a terminal or a progress line a minute in a log, a line
per epoch, the one-line messages of a failed or stopped run and the command that continues it.
With several processes, rank 0 alone speaks.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from cifar_resnet import distributed
from cifar_resnet.fields import plural

ERROR_GRACE_SECONDS = 3  # how long a process other than rank 0 waits before exiting on an error
BAR_REFRESH_STEPS = 50  # steps between refreshes of the bar's numbers (each costs a sync)
LINE_SECONDS = 60.0  # between a log's progress lines

Numbers = Callable[[], dict]  # the epoch so far: loss, acc (%), images_per_s; reading them costs a sync


def progress(steps: int, description: str, later_steps: int):
    """How rank 0 shows an epoch of ``steps`` steps while it runs (``later_steps``: the run's steps
    after it): a bar on a terminal, a line a minute in a log; nothing from the other processes."""
    if not distributed.is_main_process():
        return contextlib.nullcontext()
    return ProgressBar(steps, description) if sys.stderr.isatty() else ProgressLines(steps, description, later_steps)


class Progress:
    """Told of every step of an epoch; it reads ``numbers`` only when it shows them."""

    def __init__(self, steps: int, description: str) -> None:
        self.steps, self.description, self.done = steps, description, 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exception) -> None:
        pass

    def step(self, numbers: Numbers) -> None:
        self.done += 1


class ProgressBar(Progress):
    """A tqdm bar, its numbers refreshed every BAR_REFRESH_STEPS steps; gone when the epoch ends."""

    def __enter__(self) -> "ProgressBar":
        self.bar = tqdm(total=self.steps, desc=self.description, leave=False)
        return self

    def __exit__(self, *_exception) -> None:
        self.bar.close()

    def step(self, numbers: Numbers) -> None:
        super().step(numbers)
        self.bar.update(1)
        if self.done % BAR_REFRESH_STEPS == 0 or self.done == self.steps:
            now = numbers()
            self.bar.set_postfix(loss=f"{now['loss']:.3f}", acc=f"{now['acc']:.1f}%",
                                 img_s=f"{now['images_per_s']:.0f}", refresh=False)


class ProgressLines(Progress):
    """What a log gets instead of a bar (which a file would hold as one line rewritten for ever):
    every LINE_SECONDS, the step, the loss and accuracy so far, images/s and the training time left."""

    def __init__(self, steps: int, description: str, later_steps: int) -> None:
        super().__init__(steps, description)
        self.later_steps = later_steps
        self.start = self.last_line = time.perf_counter()

    def step(self, numbers: Numbers) -> None:
        super().step(numbers)
        now = time.perf_counter()
        if now - self.last_line < LINE_SECONDS or self.done == self.steps:  # the epoch's own line follows
            return
        self.last_line = now
        seconds_per_step = (now - self.start) / self.done
        epoch_left = (self.steps - self.done) * seconds_per_step
        shown = numbers()
        say(f"  {self.description}, step {self.done}/{self.steps}: loss {shown['loss']:.4f}  train {shown['acc']:.2f}%  "
            f"{shown['images_per_s']:.0f} img/s  training time left: {duration(epoch_left)} of the epoch, "
            f"{duration(epoch_left + self.later_steps * seconds_per_step)} of the run")


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


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


def memory_that_ran_out(error: RuntimeError) -> Optional[str]:
    """"GPU" or "CPU" where ``error`` says an allocation failed, else None. PyTorch has an exception
    class for the GPU's; the CPU allocator's failure is a plain RuntimeError, known by its words."""
    if isinstance(error, torch.OutOfMemoryError):
        return "GPU"
    return "CPU" if "DefaultCPUAllocator: can't allocate memory" in str(error) else None


def what_is_kept(args: Optional[argparse.Namespace], epochs_done: int) -> str:
    """The end of the line that reports a stop: what the run keeps and how to go on."""
    if args is None or args.evaluate or args.benchmark:
        return ""  # nothing was being written
    if epochs_done:
        return f" with {plural(epochs_done, 'finished epoch')} saved; continue with: {resume_command(args)}"
    if args.resume:
        return " before training resumed; the run is as it was: run the same command to continue it"
    return " before its first epoch finished, so there is nothing to resume: run the same command to start it again"


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
