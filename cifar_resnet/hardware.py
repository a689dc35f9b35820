"""Where and how the work runs, decided once for training, evaluation and --benchmark alike.

``setup`` picks the device, the precision, the kernels and whether to compile, and builds the
model on the device. ``StopSignals`` turns Ctrl-C and SIGTERM into a stop at the next step.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from cifar_resnet import distributed
from cifar_resnet.checkpoints import model_options
from cifar_resnet.distributed import Processes
from cifar_resnet.errors import RunInterrupted, UsageError, one_line
from resnet import build_model

# torch.compile costs about a minute on a CPU (less on a GPU) and saves more than that within a
# few epochs of 50k images; shorter runs (smoke tests, the test suite) stay eager.
COMPILE_MIN_EPOCHS = 10
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
# The modes that record CUDA graphs of their own (Inductor's triton.cudagraphs), and their counterparts without
CUDA_GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
# channels_last lets cuDNN and oneDNN pick their fastest convolution kernels; the maths is unchanged.
MEMORY_FORMAT = torch.channels_last
CPU_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}  # /proc/cpuinfo's names for fast bf16 matrix maths


@dataclass
class Runtime:
    device: torch.device
    precision: str  # "bf16" (autocast) or "fp32"
    compile_mode: Optional[str]  # torch.compile's mode, as chosen at the start; None: eager
    processes: Processes = Processes()
    step_graph: bool = False  # the training step captured whole as one CUDA graph (graphs.py)
    compile_failure: Optional[str] = None  # why torch.compile failed, after which every module runs eager

    @property
    def compiled(self) -> bool:
        """Whether the modules of ``compile`` run compiled now."""
        return self.compile_mode is not None and self.compile_failure is None

    def autocast(self, cache: bool = True):
        """bf16 autocast, or nothing in fp32. ``cache=False`` while a CUDA graph captures (it may
        not hold autocast's cast weights past the capture)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        return contextlib.nullcontext()

    @property
    def eval_compile_mode(self) -> Optional[str]:
        """Evaluation's mode. Under --step-graph on the training step is one graph of default-mode
        kernels, and evaluation, which that graph does not hold, replays CUDA graphs of its own
        (reduce-overhead): a forward of up to a few hundred kernels per batch is one launch."""
        return "reduce-overhead" if self.step_graph and self.compile_mode == "default" else self.compile_mode

    def compile(self, model: nn.Module, mode: Optional[str] = None):
        """What to call for steps: the model compiled (in ``mode``, else the runtime's; falling back
        to it, eager, where compiling fails), or the model itself. Either way its weights are the
        model's, so checkpoints carry no ``_orig_mod.`` prefixes."""
        return CompiledModel(model, self, mode or self.compile_mode) if self.compiled else model

    def evaluation_model(self, model: nn.Module, step_model):
        """What to call for evaluation: ``step_model`` (the training step's) where it serves, else
        ``model`` compiled on its own: under DDP (evaluation runs outside DDP's wrapper) or in
        another mode (``eval_compile_mode``)."""
        if self.processes.distributed or self.eval_compile_mode != self.compile_mode:
            return self.compile(model, self.eval_compile_mode)
        return step_model

    def fall_back_to_eager(self, error: Exception) -> None:
        """Compiling failed: say so in one line; every compiled module of this runtime runs eager from now on."""
        self.compile_failure = one_line(error)
        print(f"note: torch.compile failed ({self.compile_failure}); the run goes on eager", flush=True)

    def describe_compile(self) -> str:
        if self.compile_mode is None:
            return "eager"
        if not self.compiled:
            return "eager (torch.compile failed)"
        evaluation = "" if self.eval_compile_mode == self.compile_mode else f"; evaluation: {self.eval_compile_mode}"
        return f"compiled ({self.compile_mode}{evaluation})"

    def describe(self) -> str:
        count = self.processes.count
        return describe_device(self.device) + (f" x {count} processes" if count > 1 else "")


class CompiledModel:
    """A model called through torch.compile until compiling fails (no C++ compiler for Inductor's
    CPU kernels, no Triton for the GPU, a PyTorch bug), which can happen at the first step or later,
    when evaluation's graph is first compiled: then the runtime falls back to eager and this calls
    the model itself. torch.compile compiles a graph when it first meets it, and these models are
    one graph each, so the failing call has run nothing yet and is simply made again, eager."""

    def __init__(self, model: nn.Module, runtime: Runtime, mode: str) -> None:
        self.model, self.runtime = model, runtime
        self.compiled = torch.compile(model, mode=mode)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.runtime.compiled:
            try:
                return self.compiled(*inputs)
            except torch._dynamo.exc.TorchDynamoException as error:  # Inductor's and Dynamo's failures
                self.runtime.fall_back_to_eager(error)
        return self.model(*inputs)

    def train(self, mode: bool = True) -> "CompiledModel":
        self.model.train(mode)
        return self

    def eval(self) -> "CompiledModel":
        return self.train(False)


def describe_device(device: torch.device) -> str:
    """The device for logs and summaries: the GPU's name, or the CPU's thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
    return device.type


def setup(args: argparse.Namespace, *, model: str, settings: dict, epochs: int) -> tuple[Runtime, nn.Module]:
    """The runtime for ``epochs`` epochs of work at the arguments' device, precision, compile and
    determinism choices, and ``model`` built from ``settings`` (its options and seed) on the device.

    A bad choice fails here, before any data is read.
    """
    runtime = start(args, epochs=epochs)
    options = model_options(model, settings)
    torch.manual_seed(settings.get("seed", 0))  # the initial weights are the seed's
    return runtime, build_model(model, **options).to(runtime.device, memory_format=MEMORY_FORMAT)


def start(args: argparse.Namespace, *, epochs: int) -> Runtime:
    """The runtime for ``epochs`` epochs of work at the arguments' device, precision, compile,
    determinism and thread choices (the kernels chosen, the process group joined)."""
    torch.set_num_threads(pick_threads(args.threads))
    processes = distributed.from_environment()
    device = pick_device(args.device, processes)
    distributed.start(processes, device)
    step_graph = use_step_graph(args.step_graph, device, processes)
    compiled = use_compile(args.compile, epochs, device)
    compile_mode = pick_compile_mode(args.compile_mode, device, processes, step_graph) if compiled else None
    choose_kernels(deterministic=args.deterministic, device=device)
    return Runtime(device, pick_precision(args.precision, device), compile_mode, processes, step_graph)


def use_step_graph(choice: str, device: torch.device, processes: Processes) -> bool:
    """--step-graph on: CUDA graphs are CUDA's, and under DDP the gradients' all-reduce runs between
    the backward's kernels, which one graph of the whole step cannot hold."""
    if choice == "on" and (device.type != "cuda" or processes.distributed):
        raise UsageError(f"--step-graph on records the training step as a CUDA graph: it needs one process on a "
                         f"CUDA device, not {'torchrun' if processes.distributed else device.type}")
    return choice == "on"


def pick_threads(threads: str) -> int:
    """--threads: a number, or ``auto``: OMP_NUM_THREADS where it is set (torchrun sets 1 per
    process), else the CPUs this process may use. Not the machine's count, which a container or a
    job's CPU set leaves partly to others: threads that wait for a busy CPU slow every step."""
    if threads != "auto":
        return int(threads)
    preset = os.environ.get("OMP_NUM_THREADS", "")
    return int(preset) if preset.isdigit() and int(preset) > 0 else usable_cpus()


def usable_cpus() -> int:
    """The CPUs of this process's affinity mask (taskset, a Slurm job's CPU set), capped by the CPU
    quota of its cgroup and the cgroups above it (a container's --cpus)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min([count, *cgroup_cpu_quotas()]))


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quotas() -> list[int]:
    """Each CPU limit (cgroup v2's cpu.max, "QUOTA PERIOD" or "max PERIOD") on the way from this
    process's cgroup up to the root, rounded up to whole CPUs."""
    try:
        own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        own = "/"
    quotas = []
    folder = CGROUP_ROOT / own.strip().lstrip("/")
    for limits in (folder, *folder.parents):
        if not limits.is_relative_to(CGROUP_ROOT):
            break
        try:
            quota, period = (limits / "cpu.max").read_text().split()
            quotas.append(math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, ZeroDivisionError):  # absent, "max" (no limit), or not numbers
            continue
    return quotas


def pick_device(name: str, processes: Processes = Processes()) -> torch.device:
    """``auto``: the machine's accelerator (CUDA, MPS, ...) if PyTorch sees one, else the CPU.
    Under torchrun, each process takes the GPU of its local rank unless told a numbered one."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if processes.distributed and accelerator is not None and name in ("auto", accelerator.type):
        name = f"{accelerator.type}:{processes.local_rank}"
    if name == "auto":
        if accelerator is not None:
            return accelerator
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible.strip() not in ("", "-1"):  # GPUs were chosen for this run (run.sh's GPUS), yet none is seen
            raise UsageError(f"CUDA_VISIBLE_DEVICES={visible} names GPUs, but PyTorch sees none of them here; "
                             "check the ids, or pass --device cpu to train on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if accelerator is None or accelerator.type != device.type:
        raise UsageError(f"--device {name} was asked for, but PyTorch sees no {device.type.upper()} device here; "
                         "use --device cpu")
    if device.index is not None and device.index >= torch.accelerator.device_count():
        raise UsageError(f"--device {name} was asked for, but PyTorch sees only "
                         f"{torch.accelerator.device_count()} {device.type.upper()} device(s)")
    return device


def pick_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return name


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix maths runs faster than fp32 here: Ampere+ GPUs, CPUs with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def cpu_has_fast_bf16() -> bool:
    # PyTorch's own probes are private (they may go away); the kernel's CPU flags say the same.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    return bool(CPU_BF16_FLAGS & cpu_flags())


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (not Linux)."""
    return set(cpuinfo_field("flags").split())


def cpuinfo_field(name: str) -> str:
    """The first CPU's ``name`` line of /proc/cpuinfo ("model name", "flags"); "" where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def use_compile(choice: str, epochs: int, device: torch.device) -> bool:
    if choice != "auto":
        return choice == "on"
    if epochs < COMPILE_MIN_EPOCHS:
        return False
    if device.type == "cuda":
        return True
    # Inductor builds C++ kernels for the CPU; other platforms and devices stay eager.
    return device.type == "cpu" and sys.platform == "linux" and any(map(shutil.which, ("g++", "clang++")))


def pick_compile_mode(name: str, device: torch.device, processes: Processes = Processes(),
                      step_graph: bool = False) -> str:
    """``auto``: CUDA graphs ("reduce-overhead") for one process on a GPU, "default" elsewhere, and
    "default" under --step-graph on, whose one graph holds the compiled kernels (the graphs of
    reduce-overhead and max-autotune cannot be recorded inside another: refused).

    A CIFAR ResNet's step is a few hundred small kernels (ResNet-20's convolutions take
    microseconds at batch 128), so on a GPU launching them costs more than running them; a CUDA
    graph replays the whole forward, and the whole backward, as one launch each. Under DDP the
    gradient all-reduce hooks split the graphs, so several processes keep the default mode."""
    if step_graph and name in CUDA_GRAPH_MODES:
        raise UsageError(f"--compile-mode {name} records CUDA graphs of its own, which --step-graph on cannot hold "
                         f"in its graph: use --compile-mode {CUDA_GRAPH_MODES[name]} (or auto)")
    if name != "auto":
        return name
    return "reduce-overhead" if device.type == "cuda" and not processes.distributed and not step_graph else "default"


def choose_kernels(*, deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels only (an op without one raises; cuBLAS needs its workspace fixed for
    that), or else, on CUDA, cuDNN's autotuner, which picks the fastest kernel per shape. Set
    either way: the setting is global, and a run that follows another in the same process (the
    tests, a notebook) must not inherit it."""
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports inductor: 1.5 s
        torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals() -> None:
    """The command's work is complete and written: what is left (a line on screen, letting go of
    the folder, exiting) takes a moment, and a signal then would only turn success into failure.
    A StopSignals that is still active restores its predecessors when it ends."""
    if threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


class StopSignals:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next step boundary, so
    the last checkpoint (the end of the last finished epoch) stays the state to resume from.
    A second signal stops at once (that process only: torchrun then ends the others), and so
    does the first with ``at_once``: what a command does outside its epochs (start-up, a
    benchmark, an evaluation) has nothing to save, so it ends there with one line, not a traceback."""

    def __init__(self, at_once: bool = False) -> None:
        self.at_once = at_once
        self.received: Optional[int] = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *_exception) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, _frame) -> None:
        if self.at_once or self.received is not None:
            raise RunInterrupted(number)  # from wherever the program is: atomic writes stay whole
        self.received = number

    def check(self) -> None:
        """Raise RunInterrupted if a signal arrived here, or with several processes, at any of them
        (all of them then stop at this same step)."""
        number = distributed.agreed_signal(self.received)
        if number is not None:
            raise RunInterrupted(number)
