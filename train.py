"""Train a ResNet on CIFAR-10 with the paper's recipe (He et al. 2016, Sec. 4.2).

    python train.py --model ResNet56                     # 164 epochs, lr 0.1, drops at epochs 82 and 123
    python train.py --model ResNet110                    # warm-up at lr 0.01 until training error < 80%
    python train.py --model ResNet20 --val-size 5000     # the paper's 45k/5k split; best.pth picked on validation
    python train.py --model ResNet20 --epochs 1          # a smoke test with the same schedule shape
    python train.py --model ResNet56 --resume            # continue from results/ResNet56/ResNet56_last.pth

Writes results/<Model>/: <Model>_last.pth (every epoch), <Model>_best.pth, <Model>_results.csv
(a row per epoch), and at the end <Model>_results.txt and <Model>_results.json. The headline is
the final model's test accuracy; the best checkpoint is chosen on validation accuracy, or on test
accuracy (and labelled so) when there is no validation split.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data
import report
from atomic import atomic_write, remove_leftovers, write_text
from resnet import MODELS, build_model, count_parameters, layer_response_std

WARMUP_MODELS = ("ResNet110", "ResNet1202")  # the paper warms these up (Sec. 4.2)
WARMUP_FACTOR = 0.1  # lr 0.01 for a base lr of 0.1
WARMUP_EXIT_ERROR = 0.80  # leave the warm-up once the training error falls below 80%
WARMUP_CHECK_STEPS = 20  # how often (in steps) the warm-up reads the training error
FIGURE7_IMAGES = 1000  # test images on which a finished run measures its layer responses
# torch.compile costs about a minute on a CPU (less on a GPU) and saves more than that within a
# few epochs of 50k images; shorter runs (smoke tests, the test suite) stay eager.
COMPILE_MIN_EPOCHS = 10
BENCHMARK_SECONDS = 5.0  # roughly how long --benchmark times training steps (and, apart, evaluation)
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000
PREVIEW_IMAGES = 32  # test images shown in plots/predictions.png
# channels_last lets cuDNN and oneDNN pick their fastest convolution kernels; the maths is unchanged.
MEMORY_FORMAT = torch.channels_last


class UsageError(Exception):
    """A bad argument or input; reported as one line and exit status 2."""


class RunInterrupted(Exception):
    """SIGINT or SIGTERM arrived and the run stopped between two steps."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
        self.epochs_done = 0  # set by run(): the epochs the last checkpoint holds


class Diverged(Exception):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Arguments


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument as one line (UsageError), not argparse's usage block."""

    def error(self, message: str):
        raise UsageError(message)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(
        description="Train a ResNet on CIFAR-10 with the paper's recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"architecture, one of: {', '.join(MODELS)}; default: ResNet20, or with --evaluate "
                             "the checkpoint's")
    parser.add_argument("--shortcut", choices=("A", "B"), default=None,
                        help="shortcut option (ResNets only); default: A for the CIFAR nets, B for ResNet18-152")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default=None,
                        help="stem of ResNet18-152; default: cifar (3x3 conv, no max-pool)")
    parser.add_argument("--epochs", type=int, default=164, help="epochs (164 x 390 steps = the paper's 64k iterations)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    parser.add_argument("--milestones", type=float, nargs="+", default=None,
                        help="epochs at which the lr is multiplied by --gamma; default: 50%% and 75%% of --epochs")
    parser.add_argument("--gamma", type=float, default=0.1, help="lr factor at each milestone")
    parser.add_argument("--warmup", choices=("auto", "on", "off"), default="auto",
                        help="lr/10 until the training error is below 80%%; auto: on for ResNet110 and ResNet1202")
    parser.add_argument("--normalize", choices=("pixel", "channel"), default="pixel",
                        help="pixel: subtract the per-pixel mean image (paper); channel: per-channel mean/std")
    parser.add_argument("--val-size", type=int, default=0,
                        help="training images held out for validation (the paper used 5000); 0: none")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and the split")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast where the device has fast bf16, else fp32")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help=f"torch.compile the model; auto: on for runs of {COMPILE_MIN_EPOCHS}+ epochs on CUDA, "
                             "or on a Linux CPU with a C++ compiler, where it repays its start-up cost")
    parser.add_argument("--benchmark", action="store_true",
                        help="time training steps and evaluation on random data at these settings, print images/s, "
                             "peak memory and the projected run time, and exit without writing anything")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels only, so a resumed run repeats an uninterrupted one bit for bit")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help=f"folder holding {data.FOLDER}/")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="results go to RESULTS_DIR/<model>/")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                        help="continue a run from PATH, or without PATH from RESULTS_DIR/<model>/<model>_last.pth")
    parser.add_argument("--overwrite", action="store_true", help="start afresh even where this model's results exist")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                        help="evaluate a saved checkpoint on the test set instead of training")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    if args.model is not None and args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from: {', '.join(MODELS)}")
    for name in ("epochs", "batch_size", "lr"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.val_size < 0:
        raise UsageError(f"--val-size must be 0 or more, got {args.val_size}")
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


def model_options(model: str, settings: dict) -> dict:
    """The builder's keyword options that ``settings`` (the arguments, as a dict) set."""
    options = {name: settings[name] for name in ("shortcut", "stem") if settings.get(name) is not None}
    refused = [name for name in options if name not in inspect.signature(MODELS[model]).parameters]
    if refused:
        raise UsageError(f"{model} takes no {' / '.join('--' + name for name in refused)} option")
    return options


# --------------------------------------------------------------------------------------------
# Device and precision


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA device here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked for, but this machine has no MPS device; use --device cpu")
    return device


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix maths runs faster than fp32 here: Ampere+ GPUs, CPUs with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


def choose_kernels(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels only (an op without one raises; cuBLAS needs its workspace fixed for
    that), or else, on CUDA, cuDNN's autotuner, which picks the fastest kernel per shape."""
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def use_compile(choice: str, epochs: int, device: torch.device) -> bool:
    if choice != "auto":
        return choice == "on"
    if epochs < COMPILE_MIN_EPOCHS:
        return False
    if device.type == "cuda":
        return True
    # Inductor builds C++ kernels for the CPU; other platforms and devices stay eager.
    return device.type == "cpu" and sys.platform == "linux" and any(map(shutil.which, ("g++", "clang++")))


def make_optimizer(model: nn.Module, args: argparse.Namespace, device: torch.device) -> torch.optim.Optimizer:
    """The paper's SGD; one fused kernel for the whole update where PyTorch has it for the device."""
    options = dict(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if device.type in ("cuda", "cpu"):
        return torch.optim.SGD(model.parameters(), fused=True, **options)
    return torch.optim.SGD(model.parameters(), foreach=True, **options)


def pick_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return name


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Learning-rate schedule


def milestone_lr(step: int, base_lr: float, milestone_steps: list[int], gamma: float) -> float:
    """The step schedule: base_lr times gamma for each milestone already reached."""
    return base_lr * gamma ** sum(step >= m for m in milestone_steps)


class Schedule:
    """The paper's per-iteration step schedule, with its optional warm-up.

    During the warm-up the rate is a tenth of the schedule's; it ends for good the first time
    the training error is seen below 80%. Warm-up steps count toward the total, as in the paper.
    """

    def __init__(self, base_lr: float, milestone_steps: list[int], gamma: float, warmup: bool) -> None:
        self.base_lr = base_lr
        self.milestone_steps = milestone_steps
        self.gamma = gamma
        self.step_count = 0
        self.warming_up = warmup

    def lr(self) -> float:
        lr = milestone_lr(self.step_count, self.base_lr, self.milestone_steps, self.gamma)
        return lr * WARMUP_FACTOR if self.warming_up else lr

    def step(self) -> None:
        self.step_count += 1

    def observe_train_error(self, error: float) -> None:
        if self.warming_up and error < WARMUP_EXIT_ERROR:
            self.warming_up = False

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "warming_up": self.warming_up,
                "milestone_steps": list(self.milestone_steps), "base_lr": self.base_lr, "gamma": self.gamma}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step_count"]
        self.warming_up = state["warming_up"]


# --------------------------------------------------------------------------------------------
# Stopping on a signal


class StopSignals:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next step boundary, so
    the last checkpoint (the end of the last finished epoch) stays the state to resume from.
    A second signal stops at once."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *_exception) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, _frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    def check(self) -> None:
        if self.received is not None:
            raise RunInterrupted(self.received)


# --------------------------------------------------------------------------------------------
# Training and evaluation


def train_one_epoch(model: nn.Module, loader: data.DeviceLoader, optimizer: torch.optim.Optimizer,
                    schedule: Schedule, precision: str, stop: StopSignals, progress: Optional[tqdm]) -> dict:
    """One pass over the training loader. Loss and accuracy stay on the device until the end
    (or a warm-up check), so no step waits for the host."""
    model.train()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    window_correct, window_seen = torch.zeros((), device=device, dtype=torch.long), 0
    seen = 0
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader, 1):
        stop.check()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr()
        with autocast(device, precision):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

        batch_correct = (logits.argmax(dim=1) == labels).sum()
        loss_sum += loss.detach() * len(labels)
        correct += batch_correct
        seen += len(labels)
        if schedule.warming_up:
            window_correct += batch_correct
            window_seen += len(labels)
            if step % WARMUP_CHECK_STEPS == 0 or step == len(loader):
                schedule.observe_train_error(1 - window_correct.item() / window_seen)
                window_correct.zero_()
                window_seen = 0
        if progress is not None:
            progress.update(1)
            if step % 50 == 0 or step == len(loader):
                progress.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}%",
                                     img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
    loss_value, accuracy = loss_sum.item() / seen, 100 * correct.item() / seen  # the epoch's one sync
    seconds = time.perf_counter() - start
    return {"train_loss": loss_value, "train_acc": accuracy, "epoch_seconds": seconds, "train_images_per_s": seen / seconds}


@torch.no_grad()
def evaluate(model: nn.Module, loader: data.DeviceLoader, precision: str) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy (%) and the predicted classes (on the CPU) over a loader, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    predictions = []
    for images, labels in loader:
        with autocast(loader.device, precision):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = 100 * (predicted == loader.labels).double().mean().item()
    return loss_sum.item() / len(loader.labels), accuracy, predicted.cpu()


def eval_batch_size(device: torch.device) -> int:
    """Large batches keep a GPU busy; on a CPU, batches of 100 stay in cache and run about
    1.5x faster than batches of 1,000 (measured on a 2-core AMD EPYC). Both divide 10k and 5k."""
    return 100 if device.type == "cpu" else 1000


def eval_loader(split: data.Split, normalization: data.Normalization, device: torch.device) -> data.DeviceLoader:
    return data.DeviceLoader(split, eval_batch_size(device), normalization, device, train=False,
                             memory_format=MEMORY_FORMAT)


# --------------------------------------------------------------------------------------------
# Files


CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
               "epoch_seconds", "train_images_per_s")


class RunFiles:
    """The paths of one run's artifacts: RESULTS_DIR/<model>/<model>_*."""

    def __init__(self, results_dir: Path, model: str) -> None:
        self.folder = Path(results_dir) / model
        self.last = self.folder / f"{model}_last.pth"
        self.best = self.folder / f"{model}_best.pth"
        self.csv = self.folder / f"{model}_results.csv"
        self.txt = self.folder / f"{model}_results.txt"
        self.json = self.folder / f"{model}_results.json"

    def make_writable(self) -> None:
        """Create the folder and prove it takes files, before any time is spent training."""
        probe = self.folder / ".write-test"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UsageError(f"cannot write results to {self.folder} ({error.strerror or error})") from None


def load_checkpoint(path: Path, model_name: Optional[str] = None) -> dict:
    """A checkpoint written by this script, read without running any code from it."""
    if not Path(path).is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign, or refused by the weights-only unpickler
        raise UsageError(f"{path} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"model", "args", "epoch"} <= checkpoint.keys():
        raise UsageError(f"{path} is not a checkpoint written by train.py")
    if model_name is not None and checkpoint["args"].get("model") != model_name:
        raise UsageError(f"{path} holds a {checkpoint['args'].get('model')}, not a {model_name}")
    return checkpoint


def plain_args(args: argparse.Namespace) -> dict:
    """The arguments as strings, numbers and lists, which weights_only loading accepts."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def order_columns(row: dict) -> dict:
    """The row's columns in CSV order, floats rounded to keep the CSV readable."""
    return {column: round(row[column], 6) for column in CSV_COLUMNS if column in row}


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"train {row['train_acc']:.2f}%"]
    if "val_acc" in row:
        parts.append(f"val {row['val_acc']:.2f}%")
    parts += [f"test {row['test_acc']:.2f}%", f"lr {row['lr']:.4g}", f"{row['epoch_seconds']:.1f}s",
              f"{row['train_images_per_s']:.0f} img/s"]
    return "  ".join(parts)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def summary_text(result: dict) -> str:
    lines = [f"model: {result['model']} ({result['parameters']:,} parameters)"]
    if result["status"] == "diverged":
        lines.append(f"DIVERGED: {result['diverged']}")
    if "final_test_acc" in result:
        lines.append(f"final test accuracy: {result['final_test_acc']:.2f}%  "
                     f"(test error {100 - result['final_test_acc']:.2f}%)  <- the result")
    if "final_val_acc" in result:
        lines.append(f"final validation accuracy: {result['final_val_acc']:.2f}%")
    best = result["best"]
    if best is not None:
        lines.append(f"best checkpoint: epoch {best['epoch']}, chosen on {best['selected_on']} accuracy "
                     f"{best['selected_acc']:.2f}%"
                     + ("  (chosen on the test set: not an unbiased result)" if best["selected_on"] == "test" else ""))
    lines += [
        f"epochs: {result['epochs_done']} of {result['epochs']} ({result['steps']} steps), "
        f"wall time {result['wall_seconds'] / 60:.1f} min",
        f"device: {result['device']}, precision {result['precision']}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The run


class Training:
    """The state of one run between epochs: data, model, optimizer, schedule, random generators
    and the record so far; ``state_dict`` is exactly what a checkpoint holds to resume it."""

    def __init__(self, args: argparse.Namespace, device: torch.device, precision: str, dataset: data.Cifar10) -> None:
        self.args, self.device, self.precision, self.dataset = args, device, precision, dataset
        torch.manual_seed(args.seed)
        normalize = data.Normalization.per_pixel if args.normalize == "pixel" else data.Normalization.per_channel
        self.normalization = normalize(self.dataset.train.images)
        self.generator = torch.Generator(device=device).manual_seed(args.seed)
        self.train_loader = data.DeviceLoader(self.dataset.train, args.batch_size, self.normalization, device, True,
                                              self.generator, MEMORY_FORMAT)
        self.eval_loaders = {"test": eval_loader(self.dataset.test, self.normalization, device)}
        if self.dataset.val is not None:
            self.eval_loaders["val"] = eval_loader(self.dataset.val, self.normalization, device)
        self.selected_on = "val" if self.dataset.val is not None else "test"

        self.model = build_model(args.model, **model_options(args.model, vars(args)))
        self.model.to(device, memory_format=MEMORY_FORMAT)
        self.compiled = use_compile(args.compile, args.epochs, device)
        self.step_model = torch.compile(self.model) if self.compiled else self.model
        self.optimizer = make_optimizer(self.model, args, device)
        self.steps_per_epoch = len(self.train_loader)
        warmup = args.warmup == "on" or (args.warmup == "auto" and args.model in WARMUP_MODELS)
        milestone_steps = [round(m * self.steps_per_epoch) for m in args.milestones]
        self.schedule = Schedule(args.lr, milestone_steps, args.gamma, warmup)
        self.history: list[dict] = []
        self.best: Optional[dict] = None
        self.evaluation: Optional[dict] = None  # the latest test labels, predictions and sample images
        self.wall_seconds = 0.0

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def run_epoch(self, stop: StopSignals) -> dict:
        """Train one epoch and evaluate; returns its CSV row. Raises Diverged on a NaN/inf loss."""
        epoch = self.epochs_done + 1
        start = time.perf_counter()
        progress = (tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.args.epochs}", leave=False)
                    if sys.stderr.isatty() else None)
        lr = self.schedule.lr()
        try:
            row = {"epoch": epoch, **train_one_epoch(self.step_model, self.train_loader, self.optimizer, self.schedule,
                                                     self.precision, stop, progress)}
        finally:
            if progress is not None:
                progress.close()
        if not math.isfinite(row["train_loss"]):
            raise Diverged(f"the training loss became {row['train_loss']} in epoch {epoch}")
        for split, loader in self.eval_loaders.items():
            row[f"{split}_loss"], row[f"{split}_acc"], predictions = evaluate(self.step_model, loader, self.precision)
            if split == "test":
                self.evaluation = {"labels": self.dataset.test.labels.to(torch.uint8),
                                   "predictions": predictions.to(torch.uint8),
                                   "sample_images": self.dataset.test.images[:PREVIEW_IMAGES].clone()}
        row["lr"] = lr
        row = order_columns(row)
        self.history.append(row)
        self.wall_seconds += time.perf_counter() - start
        return row

    def is_best(self, row: dict) -> bool:
        """Whether ``row`` is the best epoch so far on the selection split; records it if so."""
        accuracy = row[f"{self.selected_on}_acc"]
        if self.best is not None and accuracy <= self.best["selected_acc"]:
            return False
        self.best = {"epoch": row["epoch"], "selected_on": self.selected_on, "selected_acc": accuracy}
        return True

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "epoch": self.epochs_done,
            "args": plain_args(self.args),
            "metrics": self.history[-1],
            "history": self.history,
            "best": self.best,
            "normalization": {"mean": self.normalization.mean, "std": self.normalization.std},
            "evaluation": self.evaluation,
            "rng": {"torch": torch.get_rng_state(), "data": self.generator.get_state()},
            "wall_seconds": self.wall_seconds,
        }

    def load_state_dict(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        self.generator.set_state(checkpoint["rng"]["data"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        self.history, self.best = checkpoint["history"], checkpoint["best"]
        self.evaluation, self.wall_seconds = checkpoint["evaluation"], checkpoint["wall_seconds"]

    def result(self, status: str) -> dict:
        """The run's summary: the final model's test accuracy is the headline."""
        result = {"model": self.args.model, "status": status,
                  "parameters": count_parameters(self.model)}
        if self.history:
            final = self.history[-1]
            result.update(final_test_acc=final["test_acc"], final_test_error=100 - final["test_acc"])
            if "val_acc" in final:
                result["final_val_acc"] = final["val_acc"]
        result.update(
            best=self.best,
            epochs=self.args.epochs,
            epochs_done=self.epochs_done,
            steps=self.schedule.step_count,
            steps_per_epoch=self.steps_per_epoch,
            wall_seconds=self.wall_seconds,
            device=describe_device(self.device),
            precision=self.precision,
            compiled=self.compiled,
            settings={key: value for key, value in plain_args(self.args).items()
                      if key not in ("resume", "overwrite", "evaluate")},
        )
        if status == "finished":
            # The paper's Figure 7, measured on the first 1,000 test images.
            images = self.normalization.to(self.device)(self.dataset.test.images[:FIGURE7_IMAGES].to(self.device))
            result["layer_response_std"] = layer_response_std(self.model, images.contiguous(memory_format=MEMORY_FORMAT))
        return result


def checkpoint_to_resume(args: argparse.Namespace, files: RunFiles) -> Optional[dict]:
    """The checkpoint --resume names, or None for a fresh run (which must not clobber an earlier one)."""
    if args.resume:
        return load_checkpoint(files.last if args.resume == "last" else Path(args.resume), args.model)
    if files.last.exists() and not args.overwrite:
        raise UsageError(f"{files.folder} already holds a run of {args.model}; continue it with --resume, "
                         "or start again with --overwrite")
    return None


def resume_command(args: argparse.Namespace) -> str:
    command = f"python train.py --model {args.model} --resume"
    if args.results_dir != Path("results"):
        command += f" --results-dir {args.results_dir}"
    return command + " (with the same other flags)"


def save_epoch(training: Training, files: RunFiles, is_best: bool) -> None:
    state = training.state_dict()
    atomic_write(files.last, lambda temporary: torch.save(state, temporary))
    if is_best:
        atomic_write(files.best, lambda temporary: torch.save(state, temporary))
    write_text(files.csv, report.csv_text(training.history, training.history[0].keys()))


def draw_figures(training: Training, files: RunFiles) -> None:
    if training.history:
        report.draw_run(files.folder, training.evaluation)


def write_summary(training: Training, files: RunFiles, status: str, **extra) -> dict:
    result = {**training.result(status), **extra}
    write_text(files.json, json.dumps(result, indent=2) + "\n")
    write_text(files.txt, summary_text(result))
    draw_figures(training, files)
    return result


def run(args: argparse.Namespace) -> dict:
    files = RunFiles(args.results_dir, args.model)
    checkpoint = checkpoint_to_resume(args, files)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    model_options(args.model, vars(args))  # a bad option fails before the data is read
    choose_kernels(args.deterministic, device)
    files.make_writable()
    dataset = data.load_cifar10(data.find_or_download(args.data_dir), args.val_size, args.seed)
    training = Training(args, device, precision, dataset)
    if checkpoint is not None:
        try:
            training.load_state_dict(checkpoint)
        except (KeyError, RuntimeError, ValueError) as error:
            raise UsageError(f"cannot resume from the checkpoint: {type(error).__name__}: {str(error)[:200]}") from None
    remove_leftovers(files.folder)

    print(f"{args.model}: {count_parameters(training.model):,} parameters, {len(training.dataset.train.labels)} "
          f"training images, {training.steps_per_epoch} steps/epoch, milestones at steps "
          f"{training.schedule.milestone_steps}, warm-up {'on' if training.schedule.warming_up else 'off'}, "
          f"{describe_device(device)}, {precision}, {'compiled' if training.compiled else 'eager'}", flush=True)
    with StopSignals() as stop:
        try:
            while training.epochs_done < args.epochs:
                row = training.run_epoch(stop)
                save_epoch(training, files, training.is_best(row))
                print(epoch_line(row, args.epochs), flush=True)
        except RunInterrupted as interruption:
            draw_figures(training, files)
            interruption.epochs_done = training.epochs_done
            raise
        except Diverged as divergence:
            kept = (f"the last good epoch ({training.epochs_done}) is kept in {files.last}" if training.epochs_done
                    else "no epoch had finished")
            write_summary(training, files, "diverged", diverged=f"{divergence}; {kept}")
            raise Diverged(f"{divergence}; {kept}") from None
    result = write_summary(training, files, "finished")
    print(summary_text(result), end="")
    print(f"figures in {files.folder / 'plots'}")
    return result


def peak_memory(device: torch.device) -> str:
    """Peak GPU memory allocated on CUDA; peak resident memory of this process on the CPU."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU memory"
    import resource  # Unix only, and only needed here

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return f"{kib / 2**20:.2f} GiB CPU RSS"


def benchmark(args: argparse.Namespace) -> dict:
    """--benchmark: time the real training step and evaluation (the same functions a run uses,
    data path included) on random images, after a warm-up that absorbs compilation."""
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    model_options(args.model, vars(args))
    choose_kernels(args.deterministic, device)
    random_images = torch.Generator().manual_seed(args.seed)
    eval_images = 10 * eval_batch_size(device)
    training = Training(args, device, precision,
                        data.Cifar10(data.random_split(2 * args.batch_size, random_images),
                                     data.random_split(eval_images, random_images)))
    stop = StopSignals()  # not installed: Ctrl-C stops a benchmark at once

    def train_steps(steps: int) -> dict:
        training.train_loader = data.DeviceLoader(data.random_split(steps * args.batch_size, random_images),
                                                  args.batch_size, training.normalization, device, True,
                                                  training.generator, MEMORY_FORMAT)
        return train_one_epoch(training.step_model, training.train_loader, training.optimizer, training.schedule,
                               precision, stop, None)

    start = time.perf_counter()
    train_steps(2)  # compilation, autotuning, allocator warm-up
    test_loader = training.eval_loaders["test"]
    evaluate(training.step_model, test_loader, precision)
    warmup_seconds = time.perf_counter() - start
    probe = train_steps(2)
    steps = max(3, min(500, math.ceil(BENCHMARK_SECONDS * 2 / probe["epoch_seconds"])))
    train_rate = train_steps(steps)["train_images_per_s"]
    start, evaluated = time.perf_counter(), 0
    while evaluated == 0 or time.perf_counter() - start < BENCHMARK_SECONDS:
        evaluate(training.step_model, test_loader, precision)
        evaluated += eval_images
    eval_rate = evaluated / (time.perf_counter() - start)

    train_images = CIFAR_TRAIN_IMAGES - args.val_size
    epoch_seconds = (train_images // args.batch_size * args.batch_size) / train_rate + CIFAR_TEST_IMAGES / eval_rate
    if args.val_size:
        epoch_seconds += args.val_size / eval_rate
    result = {"model": args.model, "device": describe_device(device), "precision": precision,
              "compiled": training.compiled, "batch_size": args.batch_size, "train_steps_timed": steps,
              "train_images_per_s": train_rate, "eval_images_per_s": eval_rate, "warmup_seconds": warmup_seconds,
              "epoch_seconds": epoch_seconds, "projected_run_seconds": warmup_seconds + args.epochs * epoch_seconds,
              "peak_memory": peak_memory(device)}
    print(f"{args.model} on {result['device']}, {precision}, {'compiled' if training.compiled else 'eager'}, "
          f"batch {args.batch_size}")
    print(f"training:   {train_rate:,.0f} images/s ({steps} steps timed)")
    print(f"evaluation: {eval_rate:,.0f} images/s (batches of {eval_batch_size(device)})")
    print(f"warm-up (compilation included): {warmup_seconds:.1f} s; peak memory: {result['peak_memory']}")
    print(f"projected: {epoch_seconds:.1f} s per epoch of CIFAR-10 (train + test), "
          f"{result['projected_run_seconds'] / 60:.1f} min for {args.epochs} epochs")
    return result


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """--evaluate: the checkpoint's test accuracy, per-class accuracy and classification report,
    and its confusion matrix in plots/ beside it. Architecture and settings come from the file."""
    from sklearn.metrics import classification_report  # only evaluation needs scikit-learn

    path = Path(args.evaluate)
    checkpoint = load_checkpoint(path, args.model)
    name = checkpoint["args"]["model"]
    if name not in MODELS:
        raise UsageError(f"{path} holds an unknown model {name!r}")
    model = build_model(name, **model_options(name, checkpoint["args"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UsageError(f"{path}: its weights do not fit a {name} (a damaged or foreign checkpoint)") from None
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    model.to(device, memory_format=MEMORY_FORMAT)
    test = data.Split(*data.read_split(data.find_or_download(args.data_dir), data.TEST_FILES))
    normalization = data.Normalization(**checkpoint["normalization"])
    loss, accuracy, predictions = evaluate(model, eval_loader(test, normalization, device), precision)

    labels, predicted = test.labels.numpy(), predictions.numpy()
    per_class = {label: 100 * float((predicted[labels == index] == index).mean())
                 for index, label in enumerate(data.CLASSES) if (labels == index).any()}
    print(f"{path}: {name}, epoch {checkpoint['epoch']}, {describe_device(device)}, {precision}")
    print(f"test accuracy: {accuracy:.2f}%  (error {100 - accuracy:.2f}%, loss {loss:.4f}, {len(labels)} images)")
    print("per-class accuracy: " + ", ".join(f"{label} {value:.2f}%" for label, value in per_class.items()))
    print(classification_report(labels, predicted, labels=range(len(data.CLASSES)), target_names=data.CLASSES,
                                digits=4, zero_division=0))
    figure = path.parent / "plots" / f"{path.stem}_confusion_matrix.png"
    figure.parent.mkdir(exist_ok=True)
    report.plot_confusion(labels, predicted, figure, f"{name} ({path.name})")
    print(f"confusion matrix: {figure}")
    return {"model": name, "test_loss": loss, "test_acc": accuracy, "per_class_acc": per_class}


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status: 0 done; 2 bad input (one line on stderr); 1 diverged; 128 + signal when stopped."""
    args = None
    try:
        args = parse_args(argv)
        if args.evaluate:
            evaluate_checkpoint(args)
        elif args.benchmark:
            benchmark(args)
        else:
            run(args)
    except (UsageError, data.DataError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        print(f"train.py: error: out of GPU memory with --batch-size {args.batch_size}; try a smaller batch "
              "(the paper's is 128)", file=sys.stderr)
        return 2
    except Diverged as divergence:
        print(f"train.py: stopped: {divergence}", file=sys.stderr)
        return 1
    except RunInterrupted as interruption:
        print(f"train.py: stopped by {interruption} with {interruption.epochs_done} finished epochs saved; "
              f"continue with: {resume_command(args)}", file=sys.stderr)
        return 128 + interruption.signal_number
    return 0


if __name__ == "__main__":
    sys.exit(main())
