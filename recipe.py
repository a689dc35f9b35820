"""The paper's training recipe (Sec. 4.2): SGD with momentum, and the per-iteration step schedule
with the warm-up of its deepest nets."""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn

WARMUP_MODELS = ("ResNet110", "ResNet1202")  # the paper warms these up (Sec. 4.2)
WARMUP_FACTOR = 0.1  # lr 0.01 for a base lr of 0.1
WARMUP_EXIT_ERROR = 0.80  # leave the warm-up once the training error falls below 80%
WARMUP_CHECK_STEPS = 20  # how often (in steps) the warm-up reads the training error


def make_optimizer(model: nn.Module, args: argparse.Namespace, device: torch.device) -> torch.optim.Optimizer:
    """The paper's SGD; one fused kernel for the whole update where PyTorch has it for the device."""
    options = dict(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if device.type in ("cuda", "cpu"):
        return torch.optim.SGD(model.parameters(), fused=True, **options)
    return torch.optim.SGD(model.parameters(), foreach=True, **options)


def milestone_lr(step: int, base_lr: float, milestone_steps: list[int], gamma: float) -> float:
    """The step schedule: base_lr times gamma for each milestone already reached."""
    return base_lr * gamma ** sum(step >= m for m in milestone_steps)


def lr_history(state: dict) -> list[float]:
    """The rate of every step a schedule has taken, from its state_dict (for the lr figure)."""
    return [milestone_lr(step, state["base_lr"], state["milestone_steps"], state["gamma"])
            * (WARMUP_FACTOR if step < state["warmup_steps"] else 1) for step in range(state["step_count"])]


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
        self.warmup_steps = 0  # steps taken at the warm-up rate

    def lr(self) -> float:
        lr = milestone_lr(self.step_count, self.base_lr, self.milestone_steps, self.gamma)
        return lr * WARMUP_FACTOR if self.warming_up else lr

    def step(self) -> None:
        self.warmup_steps += self.warming_up
        self.step_count += 1

    def observe_train_error(self, error: float) -> None:
        if self.warming_up and error < WARMUP_EXIT_ERROR:
            self.warming_up = False

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "warming_up": self.warming_up, "warmup_steps": self.warmup_steps,
                "milestone_steps": list(self.milestone_steps), "base_lr": self.base_lr, "gamma": self.gamma}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step_count"]
        self.warming_up = state["warming_up"]
        self.warmup_steps = state["warmup_steps"]


def warms_up(args: argparse.Namespace) -> bool:
    """The warm-up is on when asked for, or with ``--warmup auto`` for the models the paper warms up."""
    return args.warmup == "on" or (args.warmup == "auto" and args.model in WARMUP_MODELS)


def make_schedule(args: argparse.Namespace, steps_per_epoch: int) -> Schedule:
    """The schedule of ``args``: milestones (in epochs) turned into steps, and the warm-up."""
    milestone_steps = [round(m * steps_per_epoch) for m in args.milestones]
    return Schedule(args.lr, milestone_steps, args.gamma, warms_up(args))


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Raise ValueError unless ``saved`` (an optimizer state from a file) fits ``optimizer``.

    ``load_state_dict`` checks only the number of parameters per group: a momentum buffer of
    another shape loads without complaint, and the fused step then reads and writes past it.
    """
    groups = saved["param_groups"]
    if not all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups):
        raise ValueError("the optimizer's parameter groups are malformed")
    if [len(group["params"]) for group in groups] != [len(group["params"]) for group in optimizer.param_groups]:
        raise ValueError("the optimizer's parameter groups do not fit the model")
    for group, current in zip(groups, optimizer.param_groups):
        for name, value in current.items():
            if name != "params" and (type(group.get(name)) is not type(value)
                                     or (isinstance(value, float) and not math.isfinite(group[name]))):
                raise ValueError(f"the optimizer's {name} is {group.get(name)!r}, not a finite {type(value).__name__}")
    parameters = dict(zip((index for group in groups for index in group["params"]),
                          (parameter for group in optimizer.param_groups for parameter in group["params"])))
    for index, state in saved["state"].items():
        buffer = state.get("momentum_buffer") if isinstance(state, dict) else None
        if index not in parameters or not isinstance(state, dict) or (buffer is not None and not (
                isinstance(buffer, torch.Tensor) and buffer.shape == parameters[index].shape
                and buffer.dtype == parameters[index].dtype)):
            raise ValueError(f"the optimizer's state for parameter {index} does not fit it")
