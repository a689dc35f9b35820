"""Helpers that several test files use: the tiny sweep through run.sh, fake finished runs for the
report, and the comparisons of two runs (metrics and weights). cifar_fixture.py makes the data."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import torch

from cifar_fixture import PINNED_HOST
from cifar_resnet import passes, settings
from cifar_resnet.errors import RunInterrupted

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")  # the CSV columns two equal runs share exactly

# The GPUS queue runs its jobs side by side, here on the CPU: one thread each, as on a machine
# whose cores are shared out (two jobs of two spinning threads on two cores run 50x slower).
ONE_THREAD_PER_JOB = {"OMP_NUM_THREADS": "1"}


TINY_SWEEP = {"EPOCHS": "1", "TRAIN_FLAGS": "--batch-size 32 " + shlex.join(PINNED_HOST)}  # one epoch of the tiny data


def run_sweep(data_dir, results_dir, models, seeds, **environment):
    env = {**os.environ, **ONE_THREAD_PER_JOB, **TINY_SWEEP, "MODELS": models, "SEEDS": seeds, "DATA_DIR": str(data_dir),
           "RESULTS_DIR": str(results_dir), "PYTHON": sys.executable, **environment}
    return subprocess.run(["bash", str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=600)


def read_summary(path):
    """The summary's rows by model (a row's name is its model's, then any settings unlike the paper's)."""
    with open(path, newline="") as file:
        return {row["model"].split(" [")[0]: row for row in csv.DictReader(file)}



def write_fake_run(folder, model, seed, error, epochs=2, flags=(), official=None):
    """A finished run's CSV and JSON with a chosen final test error (and train.py ``flags``); with
    ``official`` True or False, a record saying whether it read the official CIFAR files."""
    folder.mkdir(parents=True)
    rows = [{"epoch": e, "train_loss": 1.0, "train_acc": 100 - error - 1, "test_loss": 1.0, "test_acc": 100 - error,
             "lr": 0.1, "epoch_seconds": 1.0, "train_images_per_s": 1.0} for e in range(1, epochs + 1)]
    with open(folder / f"{model}_results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paper = settings.parse_args(["--model", model, "--precision", "fp32", "--seed", str(seed), *flags])
    settings.resolve_model_and_warmup(paper)
    run = {"model": model, "status": "finished", "parameters": 1_727_962, "final_test_error": error, "final_test_acc": 100 - error,
           "epochs": epochs, "steps_per_epoch": 390, "wall_seconds": 60.0 * seed, "settings": settings.recorded(paper),
           "layer_response_std": [1.0, 0.5, 0.25], "device": "cpu (2 threads)", "command": paper.command}
    if official is not None:
        run["provenance"] = {"official_data": official, "device_hours": 0.25, "peak_memory_gib": 1.0, "parts": []}
    (folder / f"{model}_results.json").write_text(json.dumps(run))



def sweep_environment(monkeypatch, data_dir, results):
    """The variables run_sweep gives run.sh, for sweep.py in this process."""
    for name, value in {**TINY_SWEEP, "DATA_DIR": str(data_dir), "RESULTS_DIR": str(results),
                        "MODELS": "ResNet20 Plain20", "SEEDS": "0 1"}.items():
        monkeypatch.setenv(name, value)



def interrupt_second_epoch(monkeypatch):
    """Ctrl-C in the second epoch of the next run (monkeypatch.undo() lets the run after it train)."""
    original, calls = passes.train_one_epoch, []

    def stop_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "train_one_epoch", stop_in_second_epoch)


def stopped_by_sigterm(*_args, **_kwargs):
    """In place of passes.train_one_epoch: SIGTERM arrived before the epoch's first step."""
    raise RunInterrupted(signal.SIGTERM)


def read_rows(folder):
    with open(folder / "ResNet20_results.csv", newline="") as file:
        return list(csv.DictReader(file))



def metrics(folder):
    return [[row[name] for name in METRICS] for row in read_rows(folder)]


def final_weights(folder):
    return torch.load(folder / "ResNet20_last.pth", weights_only=True)["model"]


def assert_same_run(folder, reference):
    assert metrics(folder) == metrics(reference)
    weights, expected = final_weights(folder), final_weights(reference)
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)



def wait_for_epoch_line(process):
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            return
    raise AssertionError("the run ended before its first epoch: " + process.stderr.read())
