"""Training recipes: the optimizers, the learning-rate schedules, early stopping, and the named
presets (the paper's, and the two seed projects') that set their defaults.

The paper's recipe (Sec. 4.2) is SGD with momentum and a per-iteration step schedule, with the
error-triggered warm-up of its deepest nets. Every other part is an option that is off, or at the
paper's value, unless a flag or a preset asks for it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from cifar_resnet.augment import Augmentation, Mixing
from cifar_resnet.paper import RECIPE

WARMUP_MODELS = ("ResNet110", "ResNet1202")  # the paper warms these up (Sec. 4.2)
WARMUP_FACTOR = 0.1  # lr 0.01 for a base lr of 0.1
WARMUP_EXIT_ERROR = 0.80  # leave the warm-up once the training error falls below 80%
WARMUP_CHECK_STEPS = 20  # how often (in steps) the warm-up reads the training error
COSINE_FLOOR = 0.0  # the rate cosine annealing reaches at the last step (CosineAnnealingLR's eta_min)
DEFAULT_STEP_SIZE = 30  # epochs between drops of --schedule step (the course project's StepLR)
OPTIMIZERS = ("sgd", "nesterov", "adamw", "adagrad")
SCHEDULES = ("multistep", "step", "cosine")


# --------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """A recipe as its source ran it: the flag defaults it sets, and what its source reports."""

    source: str
    claim: str  # the accuracy its source reports, as the source's claim
    defaults: dict = field(default_factory=dict)
    # The linear warm-up as a share of --epochs, so that it scales with the run (as the paper's
    # milestones do) and a short test run still leaves room for the schedule after it.
    warmup_share: float = 0.0


PRESETS = {
    "paper": Preset("He et al. 2016, Sec. 4.2", "ResNet-20 91.25% test (Table 6)", dict(RECIPE)),
    "resnet18-course": Preset(
        "a ResNet-18 course project", "93.72% val. (ResNet-18; a claim)",
        dict(model="ResNet18", epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
             step_size=30, gamma=0.1, val_size=0.2, early_stop=20, normalize="channel")),
    "modern": Preset(
        "a PreActResNet project; DeiT, timm", "~95% PreActResNet (a claim)",
        dict(model="PreActResNet18", epochs=200, batch_size=256, lr=0.05, optimizer="nesterov", momentum=0.9,
             weight_decay=5e-4, schedule="cosine", label_smoothing=0.1, mixup=0.8, cutmix=1.0, color_jitter=0.4,
             random_erasing=0.25, normalize="channel"),
        warmup_share=5 / 200),  # 5 epochs of 200
}


# --------------------------------------------------------------------------------------------
# Optimizers and augmentation


def make_optimizer(model: nn.Module, args: argparse.Namespace, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer of ``args``; one fused kernel for the whole update where PyTorch has it for
    the device (all four on the CPU; SGD and AdamW on CUDA), else the multi-tensor one."""
    fused = device.type in ("cpu", "cuda") and (args.optimizer != "adagrad" or device.type == "cpu")
    speed = {"fused": True} if fused else {"foreach": True}
    parameters, lr, weight_decay = model.parameters(), args.lr, args.weight_decay
    if args.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **speed)
    if args.optimizer == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=weight_decay, **speed)
    return torch.optim.SGD(parameters, lr=lr, momentum=args.momentum, weight_decay=weight_decay,
                           nesterov=args.optimizer == "nesterov", **speed)


def make_augmentation(args: argparse.Namespace) -> Augmentation:
    return Augmentation(color_jitter=args.color_jitter, random_erasing=args.random_erasing)


def make_mixing(args: argparse.Namespace, classes: int) -> Mixing:
    """MixUp/CutMix as asked (inactive at alphas 0), its draws seeded by the run's seed."""
    return Mixing(args.mixup, args.cutmix, classes, seed=args.seed)


# --------------------------------------------------------------------------------------------
# Learning-rate schedules


def milestone_lr(step: int, base_lr: float, milestone_steps: list[int], gamma: float) -> float:
    """The step schedule: base_lr times gamma for each milestone already reached."""
    return base_lr * gamma ** sum(step >= m for m in milestone_steps)


def cosine_lr(step: int, base_lr: float, start: int, last: int) -> float:
    """base_lr until ``start``, then half a cosine down to COSINE_FLOOR at step ``last``."""
    progress = min(max(step - start, 0) / (last - start), 1.0) if last > start else 1.0
    return COSINE_FLOOR + (base_lr - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


def scheduled_lr(step: int, state: dict) -> float:
    """The rate of ``step`` without the error-triggered warm-up, from a schedule's state_dict."""
    if state["cosine"]:
        lr = cosine_lr(step, state["base_lr"], state["linear_warmup_steps"], state["total_steps"] - 1)
    else:
        lr = milestone_lr(step, state["base_lr"], state["milestone_steps"], state["gamma"])
    if step < state["linear_warmup_steps"]:
        lr *= (step + 1) / state["linear_warmup_steps"]
    return lr


def lr_history(state: dict) -> list[float]:
    """The rate of every step a schedule has taken, from its state_dict (for the lr figure)."""
    return [scheduled_lr(step, state) * (WARMUP_FACTOR if step < state["warmup_steps"] else 1)
            for step in range(state["step_count"])]


class Schedule:
    """The learning rate of every step: a step schedule (the paper's milestones, or a drop every
    few epochs) or cosine annealing, after an optional linear warm-up, and the paper's optional
    error-triggered warm-up.

    During the error-triggered warm-up the rate is a tenth of the schedule's; it ends for good
    the first time the training error is seen below 80%. Warm-up steps count toward the total,
    as in the paper. The linear warm-up rises to the base rate over its steps (the first at
    base/steps), and cosine annealing starts after it.
    """

    def __init__(self, base_lr: float, total_steps: int, *, milestone_steps: list[int], gamma: float,
                 cosine: bool = False, linear_warmup_steps: int = 0, error_warmup: bool = False) -> None:
        self.config = {"base_lr": base_lr, "total_steps": total_steps, "milestone_steps": list(milestone_steps),
                       "gamma": gamma, "cosine": cosine, "linear_warmup_steps": linear_warmup_steps}
        self.step_count = 0
        self.warming_up = error_warmup
        self.warmup_steps = 0  # steps taken at the error-triggered warm-up's rate

    @property
    def milestone_steps(self) -> list[int]:
        return self.config["milestone_steps"]

    def lr(self) -> float:
        lr = scheduled_lr(self.step_count, self.config)
        return lr * WARMUP_FACTOR if self.warming_up else lr

    def step(self) -> None:
        self.warmup_steps += self.warming_up
        self.step_count += 1

    def observe_train_error(self, error: float) -> None:
        if self.warming_up and error < WARMUP_EXIT_ERROR:
            self.warming_up = False

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "warming_up": self.warming_up, "warmup_steps": self.warmup_steps,
                **self.config, "milestone_steps": list(self.milestone_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step_count"]
        self.warming_up = state["warming_up"]
        self.warmup_steps = state["warmup_steps"]


def warms_up(args: argparse.Namespace) -> bool:
    """The error-triggered warm-up is on when asked for, or with ``--warmup auto`` for the models the
    paper warms up, unless a linear warm-up (--warmup-epochs) takes its place."""
    return args.warmup == "on" or (args.warmup == "auto" and args.model in WARMUP_MODELS and not args.warmup_epochs)


def milestone_epochs(args: argparse.Namespace) -> list[float]:
    """Where the rate drops, in epochs: --milestones, or every --step-size epochs; none for cosine."""
    if args.schedule == "multistep":
        return args.milestones
    if args.schedule == "step":
        return [float(epoch) for epoch in range(args.step_size, args.epochs, args.step_size)]
    return []


def make_schedule(args: argparse.Namespace, steps_per_epoch: int) -> Schedule:
    """The schedule of ``args``, its epochs (milestones, warm-up) turned into steps."""
    return Schedule(args.lr, args.epochs * steps_per_epoch,
                    milestone_steps=[round(m * steps_per_epoch) for m in milestone_epochs(args)], gamma=args.gamma,
                    cosine=args.schedule == "cosine", linear_warmup_steps=round(args.warmup_epochs * steps_per_epoch),
                    error_warmup=warms_up(args))


# --------------------------------------------------------------------------------------------
# Early stopping


def epochs_without_improvement(val_losses: list[float]) -> int:
    """Epochs since the validation loss last reached a new low (0 right after one)."""
    best = min(range(len(val_losses)), key=val_losses.__getitem__)  # the first epoch at the lowest loss
    return len(val_losses) - 1 - best


def early_stop_reason(history: list[dict], patience: Optional[int]) -> Optional[str]:
    """Why the run stops now, where --early-stop ``patience`` epochs have passed without a lower
    validation loss; None while it goes on (or without early stopping)."""
    if not patience or not history:
        return None
    losses = [row["val_loss"] for row in history]
    waited = epochs_without_improvement(losses)
    if waited < patience:
        return None
    best = len(losses) - waited
    return (f"the validation loss has not improved for {waited} epoch{'s' * (waited != 1)} (--early-stop {patience}); "
            f"its lowest was {losses[best - 1]:.4f} after epoch {best}")
