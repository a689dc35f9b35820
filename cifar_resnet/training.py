"""A run between epochs (``Training``): data, model, optimizer, schedule, random streams and the
record so far, one epoch at a time; ``state_dict`` is exactly what a checkpoint holds to resume it,
and ``result`` the summary at any moment. train.py runs it and writes its files.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Optional

import torch
import torch.nn as nn

from cifar_resnet import data, distributed, graphs, passes, provenance, settings
from cifar_resnet.checkpoints import check_optimizer_state, checked_for_saving
from cifar_resnet.console import progress
from cifar_resnet.errors import Diverged
from cifar_resnet.fields import COMPLETE, csv_row
from cifar_resnet.hardware import MEMORY_FORMAT, Runtime, StopSignals
from cifar_resnet.recipe import early_stop_reason, make_augmentation, make_mixing, make_optimizer, make_schedule
from cifar_resnet.tensorboard_log import TensorBoardLog
from resnet import count_parameters, layer_response_std

FIGURE7_IMAGES = 1000  # test images on which a finished run measures its layer responses
PREVIEW_IMAGES = 32  # test images shown in plots/predictions.png


def run_ending(args: argparse.Namespace, history: list[dict]) -> Optional[tuple[str, dict]]:
    """How a run with this history ends, with what its summary should add: ("finished", {}) after
    its last epoch, ("early-stopped", {...}) when --early-stop says so; None while it goes on."""
    if len(history) >= args.epochs:
        return "finished", {}
    reason = early_stop_reason(history, args.early_stop)
    if reason is not None:
        return "early-stopped", {"early_stopped": {"epoch": len(history), "reason": reason}}
    return None


def restore_generator(generator: torch.Generator, state: torch.Tensor) -> bool:
    """Whether ``state`` was restored; a generator of another kind of device keeps its own."""
    try:
        generator.set_state(state)
    except RuntimeError:  # the state of another kind of generator (its size says so)
        return False
    return True


class Training:
    """One run between epochs: data, model, optimizer, schedule, random generator and the record
    so far; ``state_dict`` is exactly what a checkpoint holds to resume it."""

    def __init__(self, args: argparse.Namespace, runtime: Runtime, model: nn.Module, dataset: data.Dataset,
                 start: Optional[dict] = None) -> None:
        """``start``: the checkpoint a run resumes or (--init-from) starts from; its normalisation is
        the one its weights were trained with, and its ``started_from`` says whether they were
        trained from scratch. Without one, the normalisation is fitted to the data."""
        self.args, self.runtime, self.model, self.dataset = args, runtime, model, dataset
        self.normalization = (data.Normalization(**start["normalization"]) if start is not None else
                              data.Normalization.fit(args.normalize, dataset.train.images))
        processes = runtime.processes
        self.generator = torch.Generator(device=runtime.device).manual_seed(args.seed)
        # One process draws its augmentation from the data generator, as always; several processes
        # share the permutation and each augments its slice with a stream of its own.
        self.augment_generator = (torch.Generator(device=runtime.device).manual_seed(
            (args.seed * 1_000_003 + processes.rank + 1) % 2**64) if processes.distributed else self.generator)
        self.train_loader = passes.train_loader(dataset.train, args.batch_size, self.normalization, self.generator,
                                                make_augmentation(args), (processes.rank, processes.count),
                                                self.augment_generator)
        self.mixing = make_mixing(args, classes=len(dataset.classes))
        self.eval_loaders = {"test": passes.eval_loader(dataset.test, self.normalization, runtime.device)}
        if dataset.val is not None:
            self.eval_loaders["val"] = passes.eval_loader(dataset.val, self.normalization, runtime.device)
        self.selected_on = "val" if dataset.val is not None else "test"
        self.step_model = runtime.compile(distributed.wrap(model, processes, runtime.device, args.sync_bn))
        self.eval_model = runtime.evaluation_model(model, self.step_model)
        self.optimizer = make_optimizer(model, args, runtime.device)
        self.train_step = passes.TrainStep(self.step_model, self.optimizer, self.train_loader, runtime, self.mixing,
                                           args.label_smoothing)
        if runtime.step_graph:
            graphs.capture_steps(self.train_step)
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = make_schedule(args, self.steps_per_epoch)
        self.history: list[dict] = []
        self.best: Optional[dict] = None
        # What the figures need beside each epoch's predictions; the same every epoch. The images
        # are a copy: a slice would save the whole test set's storage.
        self.test_preview = {"classes": list(dataset.classes), "labels": dataset.test.labels.to(torch.uint8),
                             "sample_images": dataset.test.images[:PREVIEW_IMAGES].clone()}
        self.test_predictions: Optional[dict] = None  # the latest epoch's, for the figures
        self.wall_seconds = 0.0
        self.record = provenance.Record()  # where the numbers come from
        # The weights it started from (--init-from), or None from scratch (checkpoints from before --init-from)
        self.started_from: Optional[dict] = None if start is None else start.get("started_from")

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def run_epoch(self, stop: StopSignals, log: Optional[TensorBoardLog] = None) -> dict:
        """Train one epoch and evaluate; returns its CSV row. Raises Diverged on a NaN/inf loss."""
        epoch = self.epochs_done + 1
        start = time.perf_counter()
        lr = self.schedule.lr()
        later_steps = (self.args.epochs - epoch) * self.steps_per_epoch
        with progress(self.steps_per_epoch, f"epoch {epoch}/{self.args.epochs}", later_steps) as shown:
            row = {"epoch": epoch, **passes.train_one_epoch(self.train_step, self.schedule, self.runtime, stop, shown,
                                                            log.training_loss if log is not None else None)}
        distributed.share_buffers(self.model)  # first: every process then judges and evaluates one model
        if not math.isfinite(row["train_loss"]):
            raise Diverged(f"the training loss became {row['train_loss']} in epoch {epoch}")
        if not all(torch.isfinite(tensor).all() for tensor in self.model.state_dict().values()
                   if tensor.is_floating_point()):
            raise Diverged(f"the weights or BatchNorm statistics became non-finite in epoch {epoch}")
        for split, loader in self.eval_loaders.items():
            row[f"{split}_loss"], row[f"{split}_acc"], predictions = passes.evaluate(self.eval_model, loader, self.runtime)
            if split == "test":
                self.test_predictions = {**self.test_preview, "epoch": epoch, "predictions": predictions.to(torch.uint8)}
        self.record.ran(epoch, self.train_step.graph_mode, self.runtime.compile_failure)
        row = distributed.from_main(csv_row({**row, "lr": lr}))  # rank 0's numbers decide for every process
        self.history.append(row)
        self.wall_seconds += time.perf_counter() - start
        return row

    def ending(self) -> Optional[tuple[str, dict]]:
        return run_ending(self.args, self.history)

    def is_best(self, row: dict) -> bool:
        """Whether ``row`` is the best epoch so far on the selection split; records it if so."""
        accuracy = row[f"{self.selected_on}_acc"]
        if self.best is not None and accuracy <= self.best["selected_acc"]:
            return False
        self.best = {"epoch": row["epoch"], "selected_on": self.selected_on, "selected_acc": accuracy}
        return True

    def state_dict(self) -> dict:
        """The checkpoint; with several processes, a collective call (it gathers every process's
        augmentation stream), so every process makes it and rank 0 writes it."""
        random_states = {"torch": torch.get_rng_state(), "data": self.generator.get_state(),
                         "mix": self.mixing.state_dict()}
        if self.runtime.processes.distributed:
            random_states["augment"] = distributed.gathered(self.augment_generator.get_state())
        return checked_for_saving({
            "model": self.model.state_dict(),
            "optimizer": self.train_step.optimizer_state(),
            "scheduler": self.schedule.state_dict(),
            "epoch": self.epochs_done,
            "args": settings.recorded(self.args),
            "metrics": self.history[-1],
            "history": self.history,
            "best": self.best,
            "normalization": {"mean": self.normalization.mean, "std": self.normalization.std},
            "rng": random_states,
            "wall_seconds": self.wall_seconds,
            "provenance": self.parts(),
            # also in a file of its own for the figures; here so a resume can rebuild that file
            "test_predictions": self.test_predictions,
            "started_from": self.started_from,
        })

    def load_state_dict(self, checkpoint: dict) -> None:
        """Resume from a checkpoint that checkpoints.load_checkpoint has checked; raises ValueError or
        RuntimeError where it still does not fit this run (another architecture, say)."""
        self.model.load_state_dict(checkpoint["model"])
        check_optimizer_state(self.optimizer, checkpoint["optimizer"])
        self.train_step.load_optimizer_state(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        if "mix" in checkpoint["rng"]:  # checkpoints from before MixUp/CutMix have none (and did not mix)
            self.mixing.load_state_dict(checkpoint["rng"]["mix"])
        self.load_random_streams(checkpoint["rng"], checkpoint["args"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        self.history, self.best = checkpoint["history"], checkpoint["best"]
        self.wall_seconds, self.test_predictions = checkpoint["wall_seconds"], checkpoint["test_predictions"]
        # none in checkpoints from before the record was kept
        self.record.resume(checkpoint.get("provenance", []), self.wall_seconds)

    def parts(self) -> list[dict]:
        """Every part of the run so far, this process's with its cost up to now."""
        return self.record.parts(self.runtime, self.wall_seconds)

    def load_random_streams(self, saved: dict, saved_settings: dict) -> None:
        """The data order's and the augmentation's random streams, where the checkpoint's fit this
        run. Written by another number of processes, or on another kind of device (a CUDA
        generator's state is not a CPU generator's), they start afresh from the seed, and the run
        is not the one an uninterrupted run would have been (said once, by rank 0)."""
        processes = self.runtime.processes
        restored = restore_generator(self.generator, saved["data"])
        augment = saved.get("augment")  # one per process, from a run of several processes
        if processes.distributed:
            restored &= (augment is not None and len(augment) == processes.count
                         and restore_generator(self.augment_generator, augment[processes.rank]))
        elif augment is not None:
            restored = False
        if not restored and processes.is_main:
            print(f"note: the checkpoint's random streams were drawn by {len(augment) if augment else 1} process(es) "
                  f"on {saved_settings.get('device')}, and this run has {processes.count} on {self.runtime.device}: "
                  "the data order and the augmentation start afresh, so the resumed run is not bit for bit the "
                  "uninterrupted one", flush=True)

    def result(self, status: str) -> dict:
        """The run's summary: the final model's test accuracy is the headline."""
        result = {"model": self.args.model, "status": status, "parameters": count_parameters(self.model)}
        if self.history:
            # "final" only for a run that ended as planned; "latest" says the run may go on.
            last, when = self.history[-1], "final" if status in COMPLETE else "latest"
            result.update({f"{when}_test_acc": last["test_acc"], f"{when}_test_error": 100 - last["test_acc"]})
            if "val_acc" in last:
                result[f"{when}_val_acc"] = last["val_acc"]
        result.update(
            best=self.best,
            epochs=self.args.epochs,
            epochs_done=self.epochs_done,
            steps=self.schedule.step_count,
            steps_per_epoch=self.steps_per_epoch,
            images={split: len(part.labels) for split, part in (("train", self.dataset.train), ("val", self.dataset.val),
                                                                 ("test", self.dataset.test)) if part is not None},
            schedule=self.schedule.state_dict(),  # the lr figure draws every step's rate from it
            wall_seconds=self.wall_seconds,
            provenance=provenance.summary(self.parts()),
            device=self.runtime.describe(),
            precision=self.runtime.precision,
            compiled=self.runtime.compiled,
            compile_mode=self.runtime.compile_mode,
            eval_compile_mode=self.runtime.eval_compile_mode,
            step_graph=self.train_step.graph_mode,
            settings=settings.recorded(self.args),
            command=self.args.command,
        )
        if self.started_from is not None:
            result["started_from"] = self.started_from
        if status in COMPLETE:
            result["layer_response_std"] = self.layer_response_std()
        return result

    def layer_response_std(self) -> list[float]:
        """The paper's Figure 7, measured on the first 1,000 test images."""
        images = self.dataset.test.images[:FIGURE7_IMAGES].to(self.runtime.device)
        images = self.normalization.to(self.runtime.device)(images).contiguous(memory_format=MEMORY_FORMAT)
        return layer_response_std(self.model, images)


