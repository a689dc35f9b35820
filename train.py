"""Train a ResNet on CIFAR-10 with the paper's recipe (He et al. 2016, Sec. 4.2).

    python train.py --model ResNet56                     # 164 epochs, lr 0.1, drops at epochs 82 and 123
    python train.py --model ResNet110                    # warm-up at lr 0.01 until training error < 80%
    python train.py --model ResNet20 --val-size 5000     # the paper's 45k/5k split; best.pth picked on validation
    python train.py --recipe modern                      # a PreActResNet project's recipe (recipe.py's PRESETS; see --help)
    python train.py --dataset cifar100 --model PreActResNet164   # CIFAR-100, into results/cifar100/
    torchrun --standalone --nproc_per_node=2 train.py --model ResNet1202   # two GPUs (distributed.py)
    python train.py --model ResNet20 --epochs 1          # a smoke test with the same schedule shape
    python train.py --model ResNet56 --resume            # continue from results/ResNet56/ResNet56_last.pth
    python train.py --model ResNet56 --benchmark         # images/s and the projected run time (benchmark.py)
    python train.py --evaluate results/ResNet56/ResNet56_last.pth   # re-evaluate a checkpoint (evaluate.py)

Reads top to bottom: arguments -> set-up (hardware.py) -> data (data.py) -> the training state (training.py) ->
the loop (passes.py, recipe.py) -> a run's files (runfolder.py, checkpoints.py), figures (figures.py) and what it
prints (console.py). The headline is the final model's test accuracy; the best checkpoint is
chosen on validation accuracy, or on test accuracy (and labelled so) when there is no validation
split.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional


def stop_while_loading(number: int, _frame) -> None:
    print(f"train.py: stopped by {signal.Signals(number).name} while starting; nothing was written", file=sys.stderr)
    raise SystemExit(128 + number)


if __name__ == "__main__":  # PyTorch takes seconds to load: Ctrl-C meanwhile is one line, not an import traceback
    signal.signal(signal.SIGINT, stop_while_loading)

import torch  # noqa: E402  (after the handler above)
import torch.nn as nn

from cifar_resnet import benchmark, data, distributed, evaluate, figures, settings
from cifar_resnet.checkpoints import RunFiles, load_checkpoint, load_weights, starting_point
from cifar_resnet.console import epoch_line, fail, memory_that_ran_out, print_paths_as_they_are, say, what_is_kept
from cifar_resnet.errors import Diverged, RunInterrupted, UsageError, one_line
from cifar_resnet.fields import plural, printable, summary_text
from cifar_resnet.hardware import Runtime, StopSignals, ignore_stop_signals, setup
from cifar_resnet.runfolder import RunFileError, link_atomically, own_folder
from cifar_resnet.settings import parse_args
from cifar_resnet.tensorboard_log import TensorBoardLog
from cifar_resnet.training import Training, run_ending
from resnet import count_parameters

REDRAW_SECONDS = 600.0  # a run redraws plots/ after the first epoch that ends this long after the last drawing

# --------------------------------------------------------------------------------------------
# The run


def checkpoint_path(args: argparse.Namespace, files: RunFiles) -> Optional[Path]:
    """The checkpoint --resume names: PATH, or without one the run's own last.pth; None without --resume."""
    if not args.resume:
        return None
    return files.last if args.resume == "last" else Path(args.resume)


def checkpoint_to_resume(args: argparse.Namespace, files: RunFiles) -> Optional[dict]:
    """The checkpoint --resume names, or None for a fresh run. Neither may clobber another run:
    a checkpoint from elsewhere is resumed only into a folder that holds no run of its own."""
    source = checkpoint_path(args, files)
    if source == files.last and not files.last.exists():
        raise UsageError(f"{files.folder} holds no checkpoint of {args.model} to resume (no epoch of a run there "
                         "finished); start the run without --resume")
    if files.last.exists() and not args.overwrite:
        if source is None:
            raise UsageError(f"{files.folder} already holds a run of {args.model}; continue it with --resume, "
                             "or start again with --overwrite")
        if not (source.exists() and source.samefile(files.last)):
            raise UsageError(f"{files.folder} already holds a run of {args.model}; resume {source} with another "
                             "--results-dir, or continue that run with --resume alone")
    # The data set names the folder, so a checkpoint of the other one is refused, not adopted.
    return None if source is None else load_checkpoint(source, args.model, to_resume=True, dataset=args.dataset)


def start_line(training: Training) -> str:
    args, runtime, schedule = training.args, training.runtime, training.schedule
    drops = ("cosine" if args.schedule == "cosine" else
             f"drops at steps {schedule.milestone_steps}" if schedule.milestone_steps else "no lr drop in this run")
    warmup = ("error-triggered warm-up" if schedule.warming_up else
              f"linear warm-up {plural(schedule.config['linear_warmup_steps'], 'step')}"
              if schedule.config["linear_warmup_steps"] else "no warm-up")
    return (f"{args.model}: {count_parameters(training.model):,} parameters, {len(training.dataset.train.labels)} "
            f"training images, {plural(training.steps_per_epoch, 'step')} an epoch, recipe {args.recipe} ({args.optimizer}, "
            f"{drops}, {warmup}), "
            f"{runtime.describe()}, {runtime.precision}, {runtime.describe_compile()}")


def save_epoch(training: Training, files: RunFiles, *, is_best: bool) -> None:
    """The checkpoint first: the other files may lag it by the epoch in flight, never lead it.
    Every process makes the checkpoint (a collective call); rank 0 alone writes."""
    state = training.state_dict()
    if not training.runtime.processes.is_main:
        return
    files.save_checkpoint(state, is_best=is_best)
    files.write_predictions(training.test_predictions)
    files.write_history(training.history)
    files.write_result(training.result("unfinished"))


def draw_figures(training: Training, files: RunFiles) -> None:
    if training.history:
        figures.draw_run(files.folder)


def finish(training: Training, files: RunFiles, status: str, **extra) -> dict:
    """Figures, then the summary: a summary that says finished is the last file a run writes
    (by rank 0; the other processes only return it)."""
    result = {**training.result(status), **extra}
    if training.runtime.processes.is_main:
        draw_figures(training, files)
        files.write_result(result)
    return result


def restore_files(training: Training, files: RunFiles, source: Path) -> None:
    """After a resume from ``source``, make the run's files agree with it: a process killed between
    the checkpoint and the next write leaves them behind, and a checkpoint resumed into a new folder
    has none there yet."""
    if not (files.last.exists() and files.last.samefile(source)):
        link_atomically(source, files.last)  # the run's own copy; never written in place, so never shared
    files.write_predictions(training.test_predictions)
    files.write_history(training.history)
    if training.best is not None and training.best["epoch"] == training.epochs_done:
        files.link_best()


def run(args: argparse.Namespace) -> Optional[dict]:
    """Train, or continue, one run; None when --resume finds it already finished."""
    start = None if args.init_from is None else starting_point(args.init_from)
    if start is not None:
        settings.adopt_start(args, start["args"], args.init_from)  # first: the data set names the folder
    files = RunFiles.of(args.results_dir, args.model, args.dataset)
    checkpoint = checkpoint_to_resume(args, files)
    if checkpoint is not None:
        settings.adopt(args, checkpoint["args"])
        ending = run_ending(args, checkpoint["history"])
        if ending is not None and files.state() == "finished":
            status, extra = ending
            done = (f"stopped early: {extra['early_stopped']['reason']}" if status == "early-stopped"
                    else f"finished its {plural(args.epochs, 'epoch')}")
            say(f"{files.folder}: this run {done}; nothing to do")
            return None
    runtime, model = setup(args, model=args.model, settings=vars(args), epochs=args.epochs)
    if start is not None:
        load_weights(model, start, args.init_from)
    settings.resolve(args, runtime)
    if args.sync_bn:
        distributed.check_sync_bn(runtime.processes, runtime.device, resumed=checkpoint is not None)
    # Every input is read and checked before the results folder is made: a failed start leaves none.
    source = data.SOURCES[args.dataset]
    folder = data.find_or_download(args.data_dir, source)
    dataset = data.load_dataset(folder, source, args.val_size, args.seed, args.subset)
    if not runtime.processes.is_main:  # the other processes train and leave the files to rank 0
        return run_locked(args, files, start if checkpoint is None else checkpoint, runtime, model, dataset)
    files.make_writable()
    with files.locked():
        return run_locked(args, files, start if checkpoint is None else checkpoint, runtime, model, dataset)


def run_locked(args: argparse.Namespace, files: RunFiles, start: Optional[dict], runtime: Runtime,
               model: nn.Module, dataset: data.Dataset) -> dict:
    """The run from ``start``: the checkpoint it resumes, the one whose weights it starts from
    (--init-from: already in ``model``), or None."""
    training = Training(args, runtime, model, dataset, start)
    checkpoint = start if args.resume else None
    if checkpoint is not None:
        try:
            training.load_state_dict(checkpoint)
        except (RuntimeError, ValueError) as error:
            raise UsageError(f"cannot resume from the checkpoint: {one_line(error)}") from None
    training.record.begin(runtime, args.command, training.epochs_done + 1, dataset.record)
    main_process = runtime.processes.is_main
    if main_process:
        if args.overwrite:
            files.clear()
        files.remove_leftovers()
        if checkpoint is not None:
            restore_files(training, files, checkpoint_path(args, files))
        files.write_result(training.result("unfinished"))  # from now on, the summary says where the run is
    log = (TensorBoardLog(own_folder(files.tensorboard), training.schedule.step_count)
           if args.tensorboard and main_process else None)
    try:
        result = train_until_done(training, files, log)
    finally:
        if log is not None:
            log.close()
    say(summary_text(result) + f"figures in {files.plots}")
    return result


def train_until_done(training: Training, files: RunFiles, log: Optional[TensorBoardLog]) -> dict:
    """Epochs until the run finishes or stops early; the files after each. An interruption or a
    divergence is recorded (figures and summary) and raised on; a signal after the last step lets
    the run finish."""
    try:
        with StopSignals() as stop:
            say(start_line(training))  # inside: a signal that follows this line is handled
            result = train_and_finish(training, files, stop, log)
        ignore_stop_signals()
    except RunInterrupted as interruption:  # also one that a second signal raised while the figures were drawn
        interruption.epochs_done = training.epochs_done
        raise
    if stop.received is not None:  # it came after the last step: the run is complete
        say(f"train.py: {signal.Signals(stop.received).name} came as the run was finishing; it finished",
            to_stderr=True)
    if log is not None:
        log.hparams(settings.recorded(training.args), result)
    return result


def train_and_finish(training: Training, files: RunFiles, stop: StopSignals, log: Optional[TensorBoardLog]) -> dict:
    drawn = time.monotonic()
    try:
        while (ending := training.ending()) is None:
            row = training.run_epoch(stop, log)
            if log is not None:  # before the checkpoint: a resume purges what lies beyond it
                log.epoch(row, training.schedule.step_count)
            save_epoch(training, files, is_best=training.is_best(row))
            say(epoch_line(row, training.args.epochs))
            if time.monotonic() - drawn >= REDRAW_SECONDS and training.runtime.processes.is_main:
                draw_figures(training, files)  # a second or two: the curves of a long run, while it runs
                drawn = time.monotonic()
    except RunInterrupted as interruption:
        finish(training, files, "interrupted", stopped_by=str(interruption))
        raise
    except Diverged as divergence:
        kept = (f"the last good epoch ({training.epochs_done}) is kept in {printable(str(files.last))}"
                if training.epochs_done else "no epoch had finished")
        finish(training, files, "diverged", diverged=f"{divergence}; {kept}")
        raise Diverged(f"{divergence}; {kept}") from None
    status, extra = ending
    return finish(training, files, status, **extra)


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status: 0 done; 2 bad input, too little memory or a file that cannot be written (one line
    on stderr); 1 diverged, or another process of the run failed; 128 + signal when stopped. Under
    torchrun only rank 0 says why."""
    with StopSignals(at_once=True):  # until the epochs begin: they install their own
        try:
            return dispatch(argv)
        except RunInterrupted as interruption:  # while dispatch said why it ended (torchrun ending rank 1, say)
            return 128 + interruption.signal_number
        finally:
            distributed.stop()


def dispatch(argv: Optional[list[str]]) -> int:
    args = None
    print_paths_as_they_are()
    try:
        args = parse_args(argv)
        if args.evaluate:
            evaluate.evaluate_checkpoint(args)
        elif args.benchmark:
            benchmark.run(args)
        else:
            run(args)
    except (UsageError, data.DataError, RunFileError) as error:
        return fail(f"train.py: error: {error}", 2)
    except Diverged as divergence:
        return fail(f"train.py: stopped: {divergence}", 1)
    except torch.distributed.DistError as error:  # every process says this one: any may be the one that saw it
        print(f"train.py: error: rank {os.environ.get('RANK')}: another process of this run stopped or cannot be "
              f"reached ({type(error).__name__}); the last finished epoch is kept", file=sys.stderr)
        return 1
    except RuntimeError as error:  # torch.OutOfMemoryError is one (DistError too: caught above)
        memory = memory_that_ran_out(error)
        if memory is None:
            raise
        return fail(f"train.py: error: out of {memory} memory with --batch-size {args.batch_size}; try a smaller batch "
                    "(the paper's is 128)", 2)
    except RunInterrupted as interruption:
        say(f"train.py: stopped by {interruption}{what_is_kept(args, interruption.epochs_done)}", to_stderr=True)
        return 128 + interruption.signal_number
    except BrokenPipeError:
        # Whoever read the output went away (`train.py | head`, say). Everything written so far is
        # complete; stdout is pointed at /dev/null so that Python's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("train.py: error: standard output was closed; stopped (every file written so far is complete)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    status = main()
    ignore_stop_signals()
    sys.exit(status)
