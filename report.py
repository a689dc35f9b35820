"""Figures of a training run, drawn from its files alone (no data set, no model, no GPU needed).

    python report.py results/ResNet56              # redraw results/ResNet56/plots/*.png
    python report.py results/ResNet20 results/ResNet56

Per run, in RUN/plots/: loss_acc_curves.png and lr_curve.png from <Model>_results.csv;
confusion_matrix.png and predictions.png from the test predictions that <Model>_last.pth
carries (the final model's, or the last finished epoch's after an interruption).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
import torch  # noqa: E402

from data import CLASSES  # noqa: E402

PLOT_NAMES = ("confusion_matrix.png", "loss_acc_curves.png", "lr_curve.png", "predictions.png")
PLAIN_NUMBERS = FuncFormatter(lambda value, _position: f"{value:g}")  # 0.01, not 10^-2, on log axes
SPLIT_STYLES = {"train": ("tab:blue", "--"), "val": ("tab:green", "-"), "test": ("tab:red", "-")}


class ReportError(Exception):
    """A results folder that cannot be drawn; the message says why."""


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save atomically (a temporary file, then a rename) and free the figure."""
    temporary = path.with_name(path.stem + ".tmp" + path.suffix)  # keep .png so matplotlib knows the format
    fig.savefig(temporary, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(temporary, path)


def read_history(path: Path) -> list[dict]:
    """The per-epoch rows of a results CSV, numbers as floats (epoch as int)."""
    with open(path, newline="") as file:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
    if not rows:
        raise ReportError(f"{path} has no epochs yet")
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def lr_drop_epochs(history: list[dict]) -> list[int]:
    """Epochs after which the learning rate drops (the next epoch starts lower)."""
    return [previous["epoch"] for previous, row in zip(history, history[1:]) if row["lr"] < previous["lr"]]


def splits_in(history: list[dict]) -> list[str]:
    return [split for split in SPLIT_STYLES if f"{split}_acc" in history[0]]


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss and error (%) per epoch for every split, the lr drops as dotted lines."""
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for split in splits_in(history):
        colour, style = SPLIT_STYLES[split]
        loss_ax.plot(epochs, [row[f"{split}_loss"] for row in history], style, color=colour, label=split)
        error_ax.plot(epochs, [100 - row[f"{split}_acc"] for row in history], style, color=colour, label=split)
    for ax, label in ((loss_ax, "cross-entropy loss"), (error_ax, "error (%)")):
        for index, epoch in enumerate(lr_drop_epochs(history)):
            ax.axvline(epoch, color="grey", linestyle=":", label="lr drop" if index == 0 else None)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_yscale("log")
    loss_ax.yaxis.set_major_formatter(PLAIN_NUMBERS)
    loss_ax.yaxis.set_minor_formatter(PLAIN_NUMBERS)
    final = history[-1]
    error_ax.set_title(f"final test error {100 - final['test_acc']:.2f}% (epoch {final['epoch']})")
    fig.suptitle(title)
    save_figure(fig, path)


def plot_lr(history: list[dict], path: Path, title: str) -> None:
    """The learning rate each epoch starts with, drawn over that epoch, on a log scale
    (a warm-up shows as a low first epoch)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.stairs([row["lr"] for row in history], [history[0]["epoch"] - 1] + [row["epoch"] for row in history],
              baseline=None, linewidth=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN_NUMBERS)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate at the start of the epoch")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    save_figure(fig, path)


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, classes: int = len(CLASSES)) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, path: Path, title: str) -> None:
    """Counts of true (rows) against predicted (columns) classes, annotated."""
    counts = confusion_counts(labels, predictions)
    accuracy = 100 * np.trace(counts) / counts.sum()
    fig, ax = plt.subplots(figsize=(9, 7.5))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", xticklabels=CLASSES, yticklabels=CLASSES, ax=ax,
                cbar_kws={"label": "images"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: test accuracy {accuracy:.2f}%")
    save_figure(fig, path)


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: Path, title: str,
                     columns: int = 8) -> None:
    """A grid of test images with predicted and true labels; wrong ones in red with a red frame."""
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, label, prediction in zip(np.ravel(axes), images, labels, predictions):
        ax.imshow(image.transpose(1, 2, 0))
        right = label == prediction
        ax.set_title(f"{CLASSES[prediction]}" if right else f"{CLASSES[prediction]}\n(true: {CLASSES[label]})",
                     color="black" if right else "red", fontsize=8)
        if not right:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("red")
                spine.set_linewidth(3)
    wrong = int((labels != predictions).sum())
    fig.suptitle(f"{title}: {wrong} of {len(labels)} shown are wrong (red)")
    save_figure(fig, path)


def run_files(folder: Path) -> tuple[str, Path, Path]:
    """The model name, CSV and last checkpoint of a results folder."""
    folder = Path(folder)
    csvs = sorted(folder.glob("*_results.csv"))
    if not csvs:
        raise ReportError(f"{folder} holds no <Model>_results.csv")
    model = csvs[0].name[: -len("_results.csv")]
    return model, csvs[0], folder / f"{model}_last.pth"


def draw_run(folder: Path, evaluation: Optional[dict] = None) -> list[Path]:
    """Draw every figure of the run in ``folder`` into folder/plots; returns the paths drawn.

    ``evaluation`` holds the final model's test ``labels``, ``predictions`` and ``sample_images``
    (uint8 arrays); without it they are read from the last checkpoint.
    """
    model, csv_path, last = run_files(folder)
    plots = Path(folder) / "plots"
    plots.mkdir(exist_ok=True)
    history = read_history(csv_path)
    plot_curves(history, plots / "loss_acc_curves.png", model)
    plot_lr(history, plots / "lr_curve.png", model)
    drawn = [plots / "loss_acc_curves.png", plots / "lr_curve.png"]
    if evaluation is None and last.is_file():
        evaluation = {key: value.numpy() for key, value in torch.load(last, weights_only=True)["evaluation"].items()}
    if evaluation is not None:
        labels, predictions = evaluation["labels"].astype(np.int64), evaluation["predictions"].astype(np.int64)
        plot_confusion(labels, predictions, plots / "confusion_matrix.png", model)
        shown = len(evaluation["sample_images"])
        plot_predictions(evaluation["sample_images"], labels[:shown], predictions[:shown], plots / "predictions.png", model)
        drawn += [plots / "confusion_matrix.png", plots / "predictions.png"]
    return drawn


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the figures of training runs from their results folders.")
    parser.add_argument("runs", nargs="+", type=Path, help="results folders, e.g. results/ResNet56")
    args = parser.parse_args(argv)
    try:
        for folder in args.runs:
            for path in draw_run(folder):
                print(f"wrote {path}")
    except (ReportError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
