"""Where a run's numbers come from: the code, the libraries, the machine, the data and the compute.

A run records one ``part`` per process start (a resume starts a new part: it may run other code,
on another machine); ``summary`` adds them up for the run's summary.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

from cifar_resnet.hardware import Runtime, cpu_has_fast_bf16, cpuinfo_field

PROJECT = Path(__file__).resolve().parent
GIT_TIMEOUT_SECONDS = 10


def git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(PROJECT), *arguments], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT_SECONDS).stdout.strip()


def code_state() -> dict:
    """The project's git commit, and whether its tracked files differ from it: "unknown" for both
    outside a git checkout or without git. Untracked files are left out: results folders of any
    name are untracked, and code only runs from an untracked file if a tracked one imports it."""
    try:
        changes = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(changes)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "uncommitted_changes": "unknown"}


def library_versions() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    # str(): torch's version is a str subclass that weights-only loading would refuse in a checkpoint.
    # torchvision's comes from its installed package's metadata: importing torchvision takes a second
    # (it pulls in torch._dynamo), and no run needs it otherwise.
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": importlib.metadata.version("torchvision"), "cuda": torch.version.cuda, "cudnn": cudnn}


def device_record(runtime: Runtime) -> dict:
    """The hardware one process of the run used, and how many processes there were."""
    device, count = runtime.device, runtime.processes.count
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                "processes": count}
    if device.type == "cpu":
        return {"type": "cpu", "name": cpuinfo_field("model name") or platform.processor() or "unknown",
                "threads": torch.get_num_threads(), "fast_bf16": cpu_has_fast_bf16(), "processes": count}
    return {"type": device.type, "processes": count}


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; elsewhere the peak resident memory of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource  # Unix only, and only needed here

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def start_part(runtime: Runtime, command: str, first_epoch: int, data: dict) -> dict:
    """This process's part of the run, before its first epoch; ``finish_part`` adds its cost."""
    return {"first_epoch": first_epoch, "command": command, "code": code_state(), "versions": library_versions(),
            "device": device_record(runtime), "precision": runtime.precision, "compile_mode": runtime.compile_mode,
            "deterministic": torch.are_deterministic_algorithms_enabled(), "data": data}


def finish_part(part: dict, runtime: Runtime, wall_seconds: float) -> dict:
    """``part`` with the training and evaluation time it took, that time times the devices it held
    (device-hours: GPUs, or CPUs counted as one device per process) and its peak memory."""
    return {**part, "wall_seconds": wall_seconds,
            "device_hours": wall_seconds * runtime.processes.count / 3600,
            "peak_memory_gib": round(peak_memory_gib(runtime.device), 3)}


class Record:
    """A run's record, one part per start of the run (a resume may run other code on another
    machine): the earlier parts come from the checkpoint; this process's begins once it is loaded."""

    def __init__(self) -> None:
        self.earlier: list[dict] = []
        self.current: Optional[dict] = None
        self.started_at = 0.0  # the run's wall seconds when this process's part began

    def resume(self, parts: list[dict], wall_seconds: float) -> None:
        self.earlier, self.started_at = list(parts), wall_seconds

    def begin(self, runtime: Runtime, command: str, first_epoch: int, data: dict) -> None:
        """This process's part starts: what runs it, on what, from which data."""
        self.current = start_part(runtime, command, first_epoch, data)

    def ran(self, epoch: int, step_graph: str, compile_failure: Optional[str]) -> None:
        """What this part's ``epoch`` really ran: its step captured or not (``step_graph``: "on", or
        "off" and why), and where torch.compile failed, the first epoch of this part that ran eager.
        Nothing before ``begin``: a Training run outside train.py (benchmarks/classic_vs_ours.py) keeps no record."""
        if self.current is None:
            return
        self.current["step_graph"] = step_graph
        if compile_failure is not None:
            self.current.setdefault("compile_failed", {"epoch": epoch, "reason": compile_failure})

    def parts(self, runtime: Runtime, wall_seconds: float) -> list[dict]:
        """Every part so far, this process's with its cost up to the run's ``wall_seconds``."""
        if self.current is None:
            return list(self.earlier)
        return [*self.earlier, finish_part(self.current, runtime, wall_seconds - self.started_at)]


def summary(parts: list[dict]) -> dict:
    """The run's record from its parts: whether every part read the official data, its compute."""
    return {"official_data": bool(parts) and all(part["data"]["official"] for part in parts),
            "device_hours": sum(part["device_hours"] for part in parts),
            "peak_memory_gib": max((part["peak_memory_gib"] for part in parts), default=None),
            "parts": parts}
