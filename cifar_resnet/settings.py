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

import torch

from cifar_resnet import data, distributed
from cifar_resnet.errors import OneLineParser, UsageError
from cifar_resnet.fields import printable
from cifar_resnet.hardware import COMPILE_MIN_EPOCHS, COMPILE_MODES, Runtime
from cifar_resnet.paper import RECIPE
from cifar_resnet.recipe import DEFAULT_STEP_SIZE, OPTIMIZERS, PRESETS, SCHEDULES, warms_up
from resnet import MODELS

MAX_SEED = 2**64 - 1  # torch.manual_seed and Generator.manual_seed take 64-bit seeds
MAX_MIX_ALPHA = 100.0  # Beta(100, 100) is already a lambda of 0.5 +- 0.035; timm's and DeiT's alphas are 0.8 and 1
# Every setting of train.py, once, by what it is to a run (a test checks that the parser has
# exactly these):
#   result:  changes the numbers the run computes; recorded, and --resume takes it from the checkpoint
#   host:    where and how fast it runs, and where its files go; recorded, and may differ between
#            the parts of a run
#   command: what to do this time; never recorded
SETTINGS = {
    "model": "result", "shortcut": "result", "stem": "result", "dataset": "result", "recipe": "result",
    **{name: "result" for name in RECIPE if name not in ("model", "precision")},
    "seed": "result", "subset": "result", "init_from": "result", "precision": "result", "sync_bn": "result",
    "device": "host", "threads": "host", "compile": "host", "compile_mode": "host", "step_graph": "host", "deterministic": "host", "data_dir": "host",
    "results_dir": "host", "tensorboard": "host",
    "resume": "command", "overwrite": "command", "evaluate": "command", "benchmark": "command",
    "benchmark_json": "command",
}
RESULT_SETTINGS = tuple(name for name, kind in SETTINGS.items() if kind == "result")
HOST_SETTINGS = tuple(name for name, kind in SETTINGS.items() if kind == "host")
# Never recorded: the command's flags, and what parse_args adds (the flags given, the command line).
COMMAND_FLAGS = (*(name for name, kind in SETTINGS.items() if kind == "command"), "given", "command")
PRESET_TABLE_SETTINGS = tuple(RECIPE)  # the rows of --help's table: what a preset may set


class TrainParser(OneLineParser):
    """train.py's parser: bad arguments are one line, and --help ends with the presets table."""

    def format_help(self) -> str:
        """The flags, then the presets side by side (made only here: the table parses each preset)."""
        self.epilog = "presets (--recipe NAME; every flag given overrides its preset's value):\n\n" + presets_table()
        return super().format_help()


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line, checked. A --recipe preset sets defaults only: every flag given wins."""
    parser = build_parser()
    preset = PRESETS[parser.parse_args(argv).recipe]
    # Not the model: without --model, --evaluate takes the checkpoint's (check_args fills it in).
    parser.set_defaults(**{name: value for name, value in preset.defaults.items() if name != "model"})
    args = parser.parse_args(argv)
    args.given = given_settings(argv)
    if preset.warmup_share and "warmup_epochs" not in args.given:
        args.warmup_epochs = round(preset.warmup_share * args.epochs, 6)
    check_args(args, preset.defaults.get("model", RECIPE["model"]))
    words = ["train.py", *(sys.argv[1:] if argv is None else argv)]
    args.command = " ".join([distributed.launcher(), *map(shell_word, words)])
    return args


def shell_word(word: str) -> str:
    """``word`` as bash reads it back: shlex's quoting, or $'...' where a character does not print."""
    return shlex.quote(word) if word.isprintable() else "$'" + printable(word).replace("'", "\\'") + "'"


def thread_count(text: str) -> str:
    """--threads: ``auto`` or a whole number from 1 (kept as text until pick_threads reads it)."""
    if text != "auto" and not (text.isdigit() and 1 <= int(text) <= 4096):
        raise argparse.ArgumentTypeError(f"expected auto or a whole number of threads from 1, got {text!r}")
    return text


def count_or_fraction(text: str) -> float:
    """--val-size: a whole number of images, or a fraction of the training set below 1."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # argparse turns a ValueError into "invalid count_or_fraction value"
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"{text} is neither a count of images nor a fraction between 0 and 1")
        return value


def build_parser() -> TrainParser:
    parser = TrainParser(description="Train a ResNet on CIFAR-10 (or CIFAR-100) with the paper's recipe, or another preset.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, metavar="MODEL",
                       help=f"architecture, one of: {', '.join(MODELS)}; default: the preset's (ResNet20 for the "
                            "paper), or with --evaluate the checkpoint's")
    model.add_argument("--shortcut", choices=("A", "B"), default=None,
                       help="shortcut option (ResNets only); default: A for the CIFAR nets, B for ResNet18-152")
    model.add_argument("--stem", choices=("cifar", "imagenet"), default=None,
                       help="stem of ResNet18-152; default: cifar (3x3 conv, no max-pool)")

    recipe = parser.add_argument_group("recipe (defaults: the paper's SGD and step schedule)")
    recipe.add_argument("--recipe", choices=tuple(PRESETS), default="paper",
                        help="a preset of the flags below (the table at the end) (default: %(default)s)")
    recipe.add_argument("--epochs", type=int, help="epochs (164 x 390 steps = the paper's 64k iterations) (default: %(default)s)")
    recipe.add_argument("--batch-size", type=int, help="training batch size (default: %(default)s)")
    recipe.add_argument("--optimizer", choices=OPTIMIZERS,
                        help="sgd (with momentum), nesterov (SGD with Nesterov momentum), adamw, adagrad (default: %(default)s)")
    recipe.add_argument("--lr", type=float, help="initial learning rate (default: %(default)s)")
    recipe.add_argument("--momentum", type=float, help="momentum of sgd and nesterov (default: %(default)s)")
    recipe.add_argument("--weight-decay", type=float,
                        help="L2 weight decay (decoupled for adamw) (default: %(default)s)")
    recipe.add_argument("--schedule", choices=SCHEDULES,
                        help="multistep: x --gamma at --milestones; step: x --gamma every --step-size epochs; "
                             "cosine: down to 0 at the last step; all per step (default: %(default)s)")
    recipe.add_argument("--milestones", type=float, nargs="+",
                        help="epochs at which multistep multiplies the lr by --gamma; default: 50%% and 75%% of --epochs")
    recipe.add_argument("--step-size", type=int,
                        help=f"epochs between the drops of --schedule step; default: {DEFAULT_STEP_SIZE}")
    recipe.add_argument("--gamma", type=float, help="lr factor at each drop (default: %(default)s)")
    recipe.add_argument("--warmup", choices=("auto", "on", "off"),
                        help="the paper's warm-up: lr/10 until the training error is below 80%%; auto: on for "
                             "ResNet110 and ResNet1202 without --warmup-epochs (default: %(default)s)")
    recipe.add_argument("--warmup-epochs", type=float,
                        help="a linear warm-up to --lr over this many epochs; 0: none (default: %(default)s)")
    recipe.add_argument("--early-stop", type=int, metavar="PATIENCE",
                        help="stop after PATIENCE epochs without a lower validation loss (needs --val-size); "
                             "default: off")

    regularisation = parser.add_argument_group("regularisation and augmentation (all off by default)")
    regularisation.add_argument("--label-smoothing", type=float,
                                help="label smoothing of the training loss (default: %(default)s)")
    regularisation.add_argument("--mixup", type=float, metavar="ALPHA",
                                help="MixUp with lambda ~ Beta(ALPHA, ALPHA), one per batch (default: %(default)s)")
    regularisation.add_argument("--cutmix", type=float, metavar="ALPHA",
                                help="CutMix with lambda ~ Beta(ALPHA, ALPHA); with --mixup too, one of the two per "
                                     "batch at even odds (default: %(default)s)")
    regularisation.add_argument("--color-jitter", type=float, metavar="STRENGTH",
                                help="brightness, contrast and saturation factors in [1-S, 1+S] per image (default: %(default)s)")
    regularisation.add_argument("--random-erasing", type=float, metavar="P",
                                help="erase a random box of each image with probability P (default: %(default)s)")

    dataset = parser.add_argument_group("data")
    dataset.add_argument("--dataset", choices=tuple(data.SOURCES), default="cifar10",
                         help="cifar10 (the paper's) or cifar100 (its 100 fine classes); a CIFAR-100 run goes to "
                              "RESULTS_DIR/cifar100/<model>/ (default: %(default)s)")
    dataset.add_argument("--data-dir", type=Path, default=Path("data"),
                         help=f"folder holding {data.CIFAR10.folder}/ or {data.CIFAR100.folder}/ (default: %(default)s)")
    dataset.add_argument("--normalize", choices=("pixel", "channel"),
                         help="pixel: subtract the per-pixel mean image (paper); channel: per-channel mean/std (default: %(default)s)")
    dataset.add_argument("--val-size", type=count_or_fraction,
                         help="training images held out for validation, as a count (the paper used 5000) or a "
                              "fraction (0.2); 0: none (default: %(default)s)")
    dataset.add_argument("--subset", type=int, default=0, metavar="N",
                         help="a smoke run: train on N training images and test on N/5 test images, the first of a "
                              "fixed shuffle (the same for every run); marked in the records, never a verdict; "
                              "0: all (default: %(default)s)")
    dataset.add_argument("--seed", type=int, default=0,
                         help="seed for initialisation, data order, augmentation and the split (default: %(default)s)")

    control = parser.add_argument_group("run control")
    control.add_argument("--device", default="auto",
                         help="auto (the accelerator PyTorch sees: cuda, mps, ...; else cpu), cpu, cuda, cuda:N, mps (default: %(default)s)")
    control.add_argument("--threads", type=thread_count, default="auto",
                         help="CPU threads for PyTorch; auto: OMP_NUM_THREADS if set, else the CPUs this process may "
                              "use (its affinity mask, a container's CPU quota). On CPUs shared with other work, "
                              "fewer are faster (docs/speed.md) (default: %(default)s)")
    control.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                         help="auto: bf16 autocast where the device has fast bf16, else fp32 (default: %(default)s)")
    control.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                         help=f"torch.compile the model; auto: on for runs of {COMPILE_MIN_EPOCHS}+ epochs on CUDA, "
                              "or on a Linux CPU with a C++ compiler, where it repays its start-up cost (default: %(default)s)")
    control.add_argument("--compile-mode", choices=("auto", *COMPILE_MODES), default="auto",
                         help="torch.compile's mode when compiled; auto: reduce-overhead (CUDA graphs) for one process "
                              "on CUDA, default elsewhere (default: %(default)s)")
    control.add_argument("--step-graph", choices=("off", "on"), default="off",
                         help="on: record the whole training step (batch, forward, backward, update) as one CUDA "
                              "graph and replay it; one process on CUDA; not yet measured, see docs/speed.md "
                              "(default: %(default)s)")
    control.add_argument("--sync-bn", action="store_true",
                         help="under torchrun on GPUs, BatchNorm statistics over all processes' slices (SyncBatchNorm) "
                              "instead of each process's own (as in the paper's two-GPU runs)")
    control.add_argument("--deterministic", action="store_true",
                         help="deterministic kernels only, so a resumed run repeats an uninterrupted one bit for bit")
    control.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                         help="continue a run from PATH, or without PATH from RESULTS_DIR/<model>/<model>_last.pth")
    control.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                         help="start a new run from a checkpoint's weights (fine-tuning): a run's, or weights.py's "
                              "import or export; the model, its options, the data set and the normalisation are "
                              "the checkpoint's, the recipe this command's")
    control.add_argument("--overwrite", action="store_true", help="start afresh even where this model's results exist")
    control.add_argument("--benchmark", action="store_true",
                         help="time training steps and evaluation on random data at these settings, print images/s, "
                              "peak memory and the projected run time, and exit without writing anything")
    control.add_argument("--benchmark-json", type=Path, default=None, metavar="FILE",
                         help="with --benchmark: also write its numbers to FILE as JSON (what sweep.py estimate reads)")
    control.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                         help="evaluate a saved checkpoint on the test set instead of training")

    output = parser.add_argument_group("output")
    output.add_argument("--results-dir", type=Path, default=Path("results"), help="results go to RESULTS_DIR/<model>/ (default: %(default)s)")
    output.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files to RESULTS_DIR/<model>/tensorboard/")
    # The paper's recipe is every recipe flag's default; the model's is filled in by check_args.
    parser.set_defaults(**{name: value for name, value in RECIPE.items() if name != "model"})
    return parser


def given_settings(argv: Optional[list[str]]) -> list[str]:
    """The settings named on the command line, as opposed to left at their defaults (the parser
    takes no abbreviations, so a flag is given exactly when its full name is there)."""
    flags = {token.split("=", 1)[0] for token in (sys.argv[1:] if argv is None else argv) if token.startswith("--")}
    return sorted(name for name in vars(build_parser().parse_args([])) if "--" + name.replace("_", "-") in flags)


def check_args(args: argparse.Namespace, preset_model: str) -> None:
    """Refuse what cannot run, in one line; fill in the defaults that depend on other settings."""
    if args.model is not None and args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from: {', '.join(MODELS)}")
    if args.resume == "":
        raise UsageError("--resume takes a checkpoint's path, or nothing for the run's own last checkpoint; "
                         "it was given an empty path")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.init_from is not None and (args.resume or args.evaluate):
        raise UsageError(f"--init-from starts a new run: --{'resume' if args.resume else 'evaluate'} takes its "
                         "weights from its own checkpoint")
    if args.evaluate and (args.resume or "recipe" in args.given):
        raise UsageError(f"--evaluate and --{'resume' if args.resume else 'recipe'} exclude each other "
                         "(an evaluation takes its settings from the checkpoint)")
    if args.benchmark_json is not None and not args.benchmark:
        raise UsageError("--benchmark-json goes with --benchmark")
    if (args.evaluate or args.benchmark) and distributed.from_environment().distributed:
        raise UsageError(f"--{'evaluate' if args.evaluate else 'benchmark'} runs in one process: start it with "
                         "python, not torchrun")
    if args.model is None and not args.evaluate:
        args.model = preset_model
    check_ranges(args)
    check_optimizer(args)
    check_schedule(args)
    if args.early_stop is not None and args.val_size == 0:
        raise UsageError("--early-stop watches the validation loss: hold images out with --val-size (0.2, say)")


def refuse_outside(args: argparse.Namespace, name: str, accepted, what: str) -> None:
    value = getattr(args, name)
    if not accepted(value) or (isinstance(value, float) and not math.isfinite(value)):  # NaN fails every comparison
        raise UsageError(f"--{name.replace('_', '-')} must be {what}, got {value}")


def check_ranges(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "lr", "gamma"):
        refuse_outside(args, name, lambda value: value > 0, "positive and finite")
    for name in ("momentum", "weight_decay", "val_size", "warmup_epochs"):
        refuse_outside(args, name, lambda value: value >= 0, "0 or more and finite")
    for name in ("mixup", "cutmix"):  # Python's betavariate never returns for an alpha of 1e308
        refuse_outside(args, name, lambda value: 0 <= value <= MAX_MIX_ALPHA, f"between 0 and {MAX_MIX_ALPHA:g}")
    for name in ("color_jitter", "random_erasing"):
        refuse_outside(args, name, lambda value: 0 <= value <= 1, "between 0 and 1")
    refuse_outside(args, "label_smoothing", lambda value: 0 <= value < 1, "at least 0 and below 1")
    refuse_outside(args, "early_stop", lambda value: value is None or value > 0, "a positive number of epochs")
    refuse_outside(args, "step_size", lambda value: value is None or value > 0, "a positive number of epochs")
    if args.subset < 0:
        raise UsageError(f"--subset must be 0 (all images) or a number of training images, got {args.subset}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must lie in 0..{MAX_SEED} (what torch's generators take), got {args.seed}")


def check_optimizer(args: argparse.Namespace) -> None:
    """Momentum belongs to SGD: given to another optimizer it is refused, left as a default it is
    recorded as None (unused)."""
    if args.optimizer in ("adamw", "adagrad"):
        if "momentum" in args.given:
            raise UsageError(f"--momentum applies to sgd and nesterov, not to --optimizer {args.optimizer}")
        args.momentum = None
    elif args.optimizer == "nesterov" and args.momentum == 0:
        raise UsageError("--optimizer nesterov needs a --momentum above 0")


def check_schedule(args: argparse.Namespace) -> None:
    """The settings of the chosen schedule, filled in; those of the others are refused when given
    and recorded as None (unused)."""
    owners = {"milestones": "multistep", "step_size": "step", "gamma": "multistep or step"}
    for name, owner in owners.items():
        if args.schedule not in owner.split(" or "):
            if name in args.given:
                raise UsageError(f"--{name.replace('_', '-')} applies to --schedule {owner}, not {args.schedule}")
            setattr(args, name, None)
    if args.schedule == "step" and args.step_size is None:
        args.step_size = DEFAULT_STEP_SIZE
    if args.schedule == "multistep":
        if args.milestones is None:
            args.milestones = [0.5 * args.epochs, 0.75 * args.epochs]
        steps = zip(args.milestones, args.milestones[1:])
        if any(not 0 < m < args.epochs for m in args.milestones) or any(later <= m for m, later in steps):
            raise UsageError(f"--milestones must increase and lie strictly between 0 and --epochs ({args.epochs}), "
                             f"got {args.milestones}")
    if not args.warmup_epochs < args.epochs:
        raise UsageError(f"--warmup-epochs must be below --epochs ({args.epochs}), got {args.warmup_epochs}")
    if args.warmup == "on" and args.warmup_epochs:
        raise UsageError("--warmup on and --warmup-epochs are two warm-ups: choose one")


def resolve(args: argparse.Namespace, runtime: Runtime) -> None:
    """Replace "auto" and unset choices by what this run uses, so that its records and a later
    --resume see the values, not the words that chose them."""
    resolve_model_and_warmup(args)
    args.precision = runtime.precision
    args.compile = "on" if runtime.compiled else "off"
    args.compile_mode = runtime.compile_mode
    args.device = str(runtime.device)
    args.threads = torch.get_num_threads()


def resolve_model_and_warmup(args: argparse.Namespace) -> None:
    """The warm-up ("on"/"off"), and the model's own default shortcut and stem where none was given."""
    args.warmup = "on" if warms_up(args) else "off"
    parameters = inspect.signature(MODELS[args.model]).parameters
    for name in ("shortcut", "stem"):
        if getattr(args, name) is None and name in parameters:
            setattr(args, name, parameters[name].default)


def adopt(args: argparse.Namespace, saved: dict) -> None:
    """--resume: take every result-changing setting from the checkpoint's ``saved`` settings; one
    given on the command line with another value is refused (a resumed run would splice two runs)."""
    check_saved(saved)
    for name in RESULT_SETTINGS:
        if name not in saved:
            continue
        given = getattr(args, name)
        if name in args.given and given != "auto" and given != saved[name]:
            why = " (its learning-rate drops are placed by its epochs: a longer run is another run)" if name == "epochs" else ""
            raise UsageError(f"--{name.replace('_', '-')} {given} differs from the run being resumed "
                             f"({saved[name]}); a resumed run keeps its settings{why}: start a new one "
                             "(another --results-dir, or --overwrite) to change them")
        setattr(args, name, saved[name])


def adopt_start(args: argparse.Namespace, saved: dict, path: Path) -> None:
    """--init-from: the model, its options, the data set and the normalisation are the starting
    checkpoint's (``saved``, its settings): its weights fit no other network, and expect their
    inputs normalised as they were. One of them given with another value is refused, as is a value
    that this command line would not take (a damaged or foreign checkpoint)."""
    adopted = {name: saved[name] for name in ("model", "shortcut", "stem", "dataset", "normalize")
               if saved.get(name) is not None}
    check_saved(adopted)
    for name in adopted:
        if name in args.given and getattr(args, name) != saved[name]:
            raise UsageError(f"--{name} {getattr(args, name)} does not fit the weights of {path}, whose {name} is "
                             f"{saved[name]}: leave it out, or start from other weights")
        setattr(args, name, saved[name])


def check_saved(saved: dict) -> None:
    """Raise UsageError unless a checkpoint's settings are what this command line accepts: they are
    written back into flags and parsed, so every check of a new run's flags applies, and each value
    must come back unchanged (a string where a number belongs does not)."""
    argv = []
    for name in RESULT_SETTINGS:
        value, flag = saved.get(name), f"--{name.replace('_', '-')}"
        if value is True or value is False:  # a switch (--sync-bn): named when on
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    try:
        parsed = parse_args(argv)
    except UsageError as error:
        raise UsageError(f"the checkpoint's settings are not valid ({error}): a damaged or foreign checkpoint") from None
    written = recorded(parsed)  # as the run recorded them: a path as text
    changed = [name for name in RESULT_SETTINGS if name in saved and saved[name] != written[name]]
    if changed:
        raise UsageError(f"the checkpoint's {changed[0]} is {saved[changed[0]]!r}, not what train.py writes "
                         "(a damaged or foreign checkpoint)")


def recorded(args: argparse.Namespace) -> dict:
    """The settings a run records (checkpoint, summary): every argument but the command flags, as
    strings, numbers and lists, which weights_only loading accepts."""
    return {key: printable(str(value)) if isinstance(value, Path) else value for key, value in vars(args).items()
            if key not in COMMAND_FLAGS}


def setting_text(value) -> str:
    """A setting as the presets table shows it: numbers short, lists space-separated, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(setting_text(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def preset_cell(preset, args: argparse.Namespace, name: str) -> str:
    """A preset's value of setting ``name`` at its own epochs; a warm-up that scales with --epochs says so."""
    text = setting_text(getattr(args, name))
    return f"{text} ({preset.warmup_share:.1%} of --epochs)" if name == "warmup_epochs" and preset.warmup_share else text


def presets_table() -> str:
    """Every preset's values side by side, as a Markdown table (in --help and in the README)."""
    resolved = {name: parse_args(["--recipe", name]) for name in PRESETS}
    rows = [["", *PRESETS], ["source", *(preset.source for preset in PRESETS.values())],
            ["its source reports", *(preset.claim for preset in PRESETS.values())]]
    rows += [[f"--{name.replace('_', '-')}", *(preset_cell(preset, args, name) for preset, args in
                                                 zip(PRESETS.values(), resolved.values()))]
             for name in PRESET_TABLE_SETTINGS]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines) + "\n"
