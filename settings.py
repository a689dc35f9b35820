"""A run's settings: the command line, checked; which settings change what a run computes;
"auto" and unset choices resolved to what the run used; and on --resume, the checkpoint's
settings adopted, so that a resumed run is the run that was started.
"""

from __future__ import annotations

import argparse
import inspect
import math
import shlex
import sys
from pathlib import Path
from typing import Optional

import data
from errors import UsageError
from recipe import warms_up
from resnet import MODELS
from runtime import COMPILE_MIN_EPOCHS, Runtime

MAX_SEED = 2**64 - 1  # torch.manual_seed and Generator.manual_seed take 64-bit seeds
# What changes the numbers a run computes; --resume takes these from the checkpoint. The rest
# (device, compile, determinism, paths) may differ between the parts of a run.
RESULT_SETTINGS = ("model", "shortcut", "stem", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                   "milestones", "gamma", "warmup", "normalize", "val_size", "seed", "precision")
# Flags that say what to do this time, not how the run computes: never recorded as its settings.
COMMAND_FLAGS = ("resume", "overwrite", "evaluate", "benchmark", "given", "command")


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument as one line (UsageError), not argparse's usage block."""

    def error(self, message: str):
        raise UsageError(message)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args)
    args.given = given_settings(argv)
    args.command = shlex.join(["python", "train.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def build_parser() -> OneLineParser:
    parser = OneLineParser(description="Train a ResNet on CIFAR-10 with the paper's recipe.", allow_abbrev=False)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, metavar="MODEL",
                       help=f"architecture, one of: {', '.join(MODELS)}; default: ResNet20, or with --evaluate "
                            "the checkpoint's")
    model.add_argument("--shortcut", choices=("A", "B"), default=None,
                       help="shortcut option (ResNets only); default: A for the CIFAR nets, B for ResNet18-152")
    model.add_argument("--stem", choices=("cifar", "imagenet"), default=None,
                       help="stem of ResNet18-152; default: cifar (3x3 conv, no max-pool)")

    schedule = parser.add_argument_group("schedule (the paper's SGD and step schedule)")
    schedule.add_argument("--epochs", type=int, default=164, help="epochs (164 x 390 steps = the paper's 64k iterations) (default: %(default)s)")
    schedule.add_argument("--batch-size", type=int, default=128, help="training batch size (default: %(default)s)")
    schedule.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: %(default)s)")
    schedule.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    schedule.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay (default: %(default)s)")
    schedule.add_argument("--milestones", type=float, nargs="+", default=None,
                          help="epochs at which the lr is multiplied by --gamma; default: 50%% and 75%% of --epochs")
    schedule.add_argument("--gamma", type=float, default=0.1, help="lr factor at each milestone (default: %(default)s)")
    schedule.add_argument("--warmup", choices=("auto", "on", "off"), default="auto",
                          help="lr/10 until the training error is below 80%%; auto: on for ResNet110 and ResNet1202 (default: %(default)s)")

    dataset = parser.add_argument_group("data")
    dataset.add_argument("--data-dir", type=Path, default=Path("data"), help=f"folder holding {data.FOLDER}/ (default: %(default)s)")
    dataset.add_argument("--normalize", choices=("pixel", "channel"), default="pixel",
                         help="pixel: subtract the per-pixel mean image (paper); channel: per-channel mean/std (default: %(default)s)")
    dataset.add_argument("--val-size", type=int, default=0,
                         help="training images held out for validation (the paper used 5000); 0: none (default: %(default)s)")
    dataset.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and the split (default: %(default)s)")

    control = parser.add_argument_group("run control")
    control.add_argument("--device", default="auto",
                         help="auto (the accelerator PyTorch sees: cuda, mps, ...; else cpu), cpu, cuda, cuda:N, mps (default: %(default)s)")
    control.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                         help="auto: bf16 autocast where the device has fast bf16, else fp32 (default: %(default)s)")
    control.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                         help=f"torch.compile the model; auto: on for runs of {COMPILE_MIN_EPOCHS}+ epochs on CUDA, "
                              "or on a Linux CPU with a C++ compiler, where it repays its start-up cost (default: %(default)s)")
    control.add_argument("--deterministic", action="store_true",
                         help="deterministic kernels only, so a resumed run repeats an uninterrupted one bit for bit")
    control.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                         help="continue a run from PATH, or without PATH from RESULTS_DIR/<model>/<model>_last.pth")
    control.add_argument("--overwrite", action="store_true", help="start afresh even where this model's results exist")
    control.add_argument("--benchmark", action="store_true",
                         help="time training steps and evaluation on random data at these settings, print images/s, "
                              "peak memory and the projected run time, and exit without writing anything")
    control.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                         help="evaluate a saved checkpoint on the test set instead of training")

    output = parser.add_argument_group("output")
    output.add_argument("--results-dir", type=Path, default=Path("results"), help="results go to RESULTS_DIR/<model>/ (default: %(default)s)")
    return parser


def given_settings(argv: Optional[list[str]]) -> list[str]:
    """The settings named on the command line, as opposed to left at their defaults (the parser
    takes no abbreviations, so a flag is given exactly when its full name is there)."""
    flags = {token.split("=", 1)[0] for token in (sys.argv[1:] if argv is None else argv) if token.startswith("--")}
    return sorted(name for name in vars(build_parser().parse_args([])) if "--" + name.replace("_", "-") in flags)


def check_args(args: argparse.Namespace) -> None:
    if args.model is not None and args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from: {', '.join(MODELS)}")
    for name in ("epochs", "batch_size", "lr", "gamma"):
        if not getattr(args, name) > 0 or not math.isfinite(getattr(args, name)):  # NaN fails every comparison
            raise UsageError(f"--{name.replace('_', '-')} must be positive and finite, got {getattr(args, name)}")
    for name in ("momentum", "weight_decay", "val_size"):
        if not getattr(args, name) >= 0 or not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more and finite, got {getattr(args, name)}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must lie in 0..{MAX_SEED} (what torch's generators take), got {args.seed}")
    if args.milestones is None:
        args.milestones = [0.5 * args.epochs, 0.75 * args.epochs]
    if any(not 0 < m < args.epochs for m in args.milestones) or sorted(args.milestones) != args.milestones:
        raise UsageError(f"--milestones must increase and lie strictly between 0 and --epochs ({args.epochs}), got {args.milestones}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.evaluate and args.resume:
        raise UsageError("--evaluate and --resume exclude each other")
    if args.model is None and not args.evaluate:
        args.model = "ResNet20"


def resolve(args: argparse.Namespace, runtime: Runtime) -> None:
    """Replace "auto" and unset choices by what this run uses, so that its records and a later
    --resume see the values, not the words that chose them."""
    resolve_recipe(args)
    args.precision = runtime.precision
    args.compile = "on" if runtime.compiled else "off"
    args.device = str(runtime.device)


def resolve_recipe(args: argparse.Namespace) -> None:
    """The warm-up ("on"/"off"), and the model's own default shortcut and stem where none was given."""
    args.warmup = "on" if warms_up(args) else "off"
    parameters = inspect.signature(MODELS[args.model]).parameters
    for name in ("shortcut", "stem"):
        if getattr(args, name) is None and name in parameters:
            setattr(args, name, parameters[name].default)


def adopt(args: argparse.Namespace, saved: dict) -> None:
    """--resume: take every result-changing setting from the checkpoint's ``saved`` settings; one
    given on the command line with another value is refused (a resumed run would splice two runs)."""
    for name in RESULT_SETTINGS:
        if name not in saved:
            continue
        given = getattr(args, name)
        if name in args.given and given != "auto" and given != saved[name]:
            raise UsageError(f"--{name.replace('_', '-')} {given} differs from the run being resumed "
                             f"({saved[name]}); a resumed run keeps its settings: start a new one "
                             "(another --results-dir, or --overwrite) to change them")
        setattr(args, name, saved[name])


def recorded(args: argparse.Namespace) -> dict:
    """The settings a run records (checkpoint, summary): every argument but the command flags, as
    strings, numbers and lists, which weights_only loading accepts."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
            if key not in COMMAND_FLAGS}
