"""One pass of training, and one of evaluation, over a device-resident loader.

Loss and accuracy are summed on the device and read once per pass (and every few steps
during a warm-up), so no step waits for the host. No files, no arguments: the callers
(train.py, evaluate.py, benchmark.py) decide what a pass is for.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar_resnet import data
from cifar_resnet.augment import Augmentation, Mixing
from cifar_resnet.console import Progress
from cifar_resnet.distributed import sum_over_processes
from cifar_resnet.hardware import MEMORY_FORMAT, Runtime, StopSignals
from cifar_resnet.recipe import WARMUP_CHECK_STEPS, Schedule

LOSS_LOG_EVERY = 50  # steps between the training losses handed to log_loss (each costs a sync)


class TrainStep:
    """One training step as one function of device tensors, the same on every device: the batch's
    images gathered from the device-resident split, augmented and normalised (DeviceLoader.batch);
    forward, loss and backward; the optimizer's update at the learning rate held in ``lr``, a
    device tensor that a fused optimizer reads; and the pass's running sums of loss and of right
    answers. Nothing in it reads a value back to the host, so on CUDA one graph can capture it
    whole and replay it (graphs.py), except with MixUp/CutMix, whose per-batch draws are made on
    the host (a captured step would repeat the first batch's forever): those steps stay uncaptured.

    With MixUp/CutMix the loss is taken against the mixed (soft) targets, and an image counts as
    right when the model predicts its dominant label (the one with the larger share).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: data.DeviceLoader,
                 runtime: Runtime, mixing: Optional[Mixing] = None, label_smoothing: float = 0.0) -> None:
        self.model, self.optimizer, self.loader, self.runtime = model, optimizer, loader, runtime
        self.mixing = mixing if mixing is not None and mixing.active else None
        self.label_smoothing = label_smoothing
        device = loader.device
        # A fused optimizer reads its rate from a device tensor; the others take a float each step
        # (their multi-tensor kernels would read a tensor's value back to the host).
        fused = all(group.get("fused") for group in optimizer.param_groups)
        self.lr = torch.tensor(float(optimizer.param_groups[0]["lr"]), device=device) if fused else None
        self.hold_rate()
        self.loss = torch.zeros((), device=device)  # the last batch's, for the loss log
        self.batch_correct = torch.zeros((), device=device, dtype=torch.long)  # the last batch's
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.capturing = False  # set by graphs.CapturedStep while a graph records a step
        self.graph: Optional[Callable[[torch.Tensor], None]] = None  # graphs.CapturedStep, where one replays it
        self.graph_mode = "off"  # what the run's summary records: "on", or "off" and why (graphs.py)

    def hold_rate(self) -> None:
        """Point the optimizer at ``lr`` (after its state is loaded, which puts floats there)."""
        if self.lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr

    def set_rate(self, value: float) -> None:
        """The rate of the next step: written into ``lr`` on the device, no re-capture needed."""
        if self.lr is None:
            for group in self.optimizer.param_groups:
                group["lr"] = value
        else:
            self.lr.fill_(value)

    def optimizer_state(self) -> dict:
        """The optimizer's state as a checkpoint holds it: the rate a float, as always."""
        state = self.optimizer.state_dict()
        return {**state, "param_groups": [{**group, "lr": float(group["lr"])} for group in state["param_groups"]]}

    def load_optimizer_state(self, saved: dict) -> None:
        self.optimizer.load_state_dict(saved)
        self.hold_rate()

    def start_pass(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def take(self, index: torch.Tensor) -> None:
        """The step on the images at ``index``: replayed by its CUDA graph where it has one, else run."""
        (self if self.graph is None else self.graph)(index)

    def __call__(self, index: torch.Tensor) -> None:
        images, labels = self.loader.batch(index)
        targets = labels
        if self.mixing is not None:
            images, targets = self.mixing(images, labels)
            labels = targets.argmax(dim=1)
        # Before the forward pass: under CUDA graphs the last step's gradients live in the graph's
        # memory, which this step's replay reuses.
        self.optimizer.zero_grad(set_to_none=True)
        with self.runtime.autocast(cache=not self.capturing):  # a graph may not keep autocast's cache
            logits = self.model(images)
            loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        loss.backward()
        self.optimizer.step()
        self.loss.copy_(loss.detach())
        self.batch_correct.copy_((logits.argmax(dim=1) == labels).sum())
        self.loss_sum.add_(self.loss * len(labels))
        self.correct.add_(self.batch_correct)


def train_one_epoch(train_step: TrainStep, schedule: Schedule, runtime: Runtime, stop: StopSignals,
                    progress: Optional[Progress], log_loss: Optional[Callable[[int, float], None]] = None,
                    steps: Optional[int] = None) -> dict:
    """One pass over the training loader (its first ``steps`` batches where given: the benchmark),
    a ``train_step`` per batch: the pass's mean loss, accuracy (%), seconds and images/s.
    ``log_loss(step, loss)`` receives the batch loss every LOSS_LOG_EVERY steps of the run."""
    train_step.model.train()
    train_step.start_pass()
    loader, device = train_step.loader, train_step.loader.device
    window_correct, window_seen = torch.zeros((), device=device, dtype=torch.long), 0
    seen = 0
    start = time.perf_counter()
    last = len(loader) if steps is None else min(steps, len(loader))
    for number, index in enumerate(itertools.islice(loader.indices(), last), 1):
        stop.check()
        train_step.set_rate(schedule.lr())
        train_step.take(index)
        schedule.step()
        if log_loss is not None and schedule.step_count % LOSS_LOG_EVERY == 0:
            log_loss(schedule.step_count, train_step.loss.item())
        seen += len(index)
        if schedule.warming_up:
            window_correct += train_step.batch_correct
            window_seen += len(index)
            if number % WARMUP_CHECK_STEPS == 0 or number == last:
                sum_over_processes(window_correct)  # every process leaves the warm-up at the same step
                schedule.observe_train_error(1 - window_correct.item() / (window_seen * runtime.processes.count))
                window_correct.zero_()
                window_seen = 0
        if progress is not None:  # the numbers cost a sync: read only when they are shown
            progress.step(lambda: {"loss": train_step.loss_sum.item() / seen, "acc": 100 * train_step.correct.item() / seen,
                                   "images_per_s": seen / (time.perf_counter() - start)})
    loss_sum, correct = train_step.loss_sum.clone(), train_step.correct.clone()
    sum_over_processes(loss_sum, correct)
    seen *= runtime.processes.count  # every process trained on a slice of the same size
    loss_value, accuracy = loss_sum.item() / seen, 100 * correct.item() / seen  # the epoch's one sync
    seconds = time.perf_counter() - start
    return {"train_loss": loss_value, "train_acc": accuracy, "epoch_seconds": seconds, "train_images_per_s": seen / seconds}


@torch.no_grad()
def evaluate(model: nn.Module, loader: data.DeviceLoader, runtime: Runtime) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy (%) and the predicted classes (on the CPU) over a loader, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    predictions = []
    for images, labels in loader:
        with runtime.autocast():
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


def train_loader(split: data.Split, batch_size: int, normalization: data.Normalization, generator: torch.Generator,
                 augmentation: Augmentation = Augmentation(), shard: tuple[int, int] = (0, 1),
                 augment_generator: Optional[torch.Generator] = None) -> data.DeviceLoader:
    """Shuffled, augmented full batches on the generator's device (this process's slice of them)."""
    return data.DeviceLoader(split, batch_size, normalization, generator.device, train=True, generator=generator,
                             memory_format=MEMORY_FORMAT, augmentation=augmentation, shard=shard,
                             augment_generator=augment_generator)


def eval_loader(split: data.Split, normalization: data.Normalization, device: torch.device) -> data.DeviceLoader:
    """Every image once, in order, unaugmented."""
    return data.DeviceLoader(split, eval_batch_size(device), normalization, device, train=False,
                             memory_format=MEMORY_FORMAT)
