"""One run over several processes (`torchrun --nproc_per_node=N train.py ...`): torchrun's
environment, the process group, and the few collective operations a run needs.

Plain `python train.py` (or torchrun with one process) is a single process and none of this
communicates. With N processes, DistributedDataParallel averages the gradients; besides that the
processes agree on three things: the epoch's metrics (summed), whether to stop (any process's
signal stops all of them at the same step), and what rank 0 measured (its evaluation decides for
all). Rank 0 alone writes files and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from cifar_resnet.errors import UsageError

# A process that waits longer than this for the others gives up with an error rather than hang
# (torchrun normally takes the others down first, as soon as one process dies).
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    count: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.count > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Whether this process prints: rank 0, or the only process (read without failing, for messages)."""
    return os.environ.get("RANK", "0") == "0"


def launcher() -> str:
    """How this process was started, for the commands a run records and suggests: python, or
    torchrun with its processes per node and, over several nodes (torchrun's GROUP_WORLD_SIZE),
    the number of nodes and the rendezvous to fill in."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world == "1":
        return "python"
    per_node, nodes = os.environ.get("LOCAL_WORLD_SIZE", world), os.environ.get("GROUP_WORLD_SIZE", "1")
    if nodes == "1":
        return f"torchrun --nproc_per_node={per_node}"
    return f"torchrun --nnodes={nodes} --nproc_per_node={per_node} --rdzv-backend=c10d --rdzv-endpoint=<HOST:PORT>"


def from_environment() -> Processes:
    """torchrun's variables, checked; one process where they are absent."""
    try:
        processes = Processes(*(int(os.environ.get(name, default)) for name, default in
                                (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"))))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") from None
    if not 0 <= processes.rank < processes.count:
        raise UsageError(f"RANK {processes.rank} does not lie in 0..WORLD_SIZE-1 ({processes.count - 1})")
    return processes


_control: Optional[dist.ProcessGroup] = None  # a gloo group: host-side agreement, no GPU sync


def start(processes: Processes, device: torch.device) -> None:
    """Join the process group: NCCL for CUDA, gloo otherwise."""
    global _control
    if not processes.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    _control = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else dist.group.WORLD


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, processes: Processes, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module that training steps call: the model itself, or with several processes the model
    in DistributedDataParallel (its BatchNorm layers synchronised across processes on request).
    Either way the weights are the model's, so checkpoints carry no ``module.`` prefixes."""
    if not processes.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def check_sync_bn(processes: Processes, device: torch.device, resumed: bool) -> None:
    """--sync-bn where it does something: over several processes, on GPUs. A run started with it
    may continue in one process (its parts record how many each had)."""
    if processes.distributed and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm runs on GPUs only")
    if not processes.distributed and not resumed:
        raise UsageError("--sync-bn synchronises BatchNorm over torchrun's processes, and one process has nothing to "
                         "synchronise: start the run with torchrun, or without --sync-bn")


def sum_over_processes(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes, in place."""
    if dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor)


def agreed_signal(received: Optional[int]) -> Optional[int]:
    """The signal any process received (the largest number, if several), for all of them."""
    if not dist.is_initialized():
        return received
    flag = torch.tensor([received or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_control)
    return int(flag) or None


def from_main(value):
    """Rank 0's ``value`` (any picklable object), on every process."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def gathered(value) -> list:
    """Every process's ``value``, in rank order, on every process."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value, group=_control)
    return values


def share_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm running statistics to every process, so that all evaluate one model
    (each process normalises its own slice during training, so their statistics drift apart)."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
