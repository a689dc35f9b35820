"""Figures and tables of training runs, drawn from their files alone (no data set, model or GPU needed).

    python report.py results/ResNet56              # redraw results/ResNet56/plots/*.png
    python report.py results/ResNet20 results/ResNet56
    python report.py --summary results             # every finished run under results/ against the paper

Per run, in RUN/plots/: loss_acc_curves.png and lr_curve.png from <Model>_results.csv;
confusion_matrix.png and predictions.png from <Model>_test_predictions.pt (the final model's,
or the last finished epoch's after an interruption). runfiles.py knows these names.

--summary runs the sweep's comparison with the paper (comparison.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from errors import ReportError
from recipe import lr_history
from runfiles import RunFileError, RunFiles, is_number
from runfolder import atomic_write

PLOT_NAMES = ("confusion_matrix.png", "loss_acc_curves.png", "lr_curve.png", "predictions.png")
PLAIN_NUMBERS = FuncFormatter(lambda value, _position: f"{value:g}")  # 0.01, not 10^-2, on log axes
PREVIEW_CELL_HEIGHT = 1.15  # of a cell of plot_predictions's grid, in image widths: the image and its label
SPLIT_STYLES = {"train": ("tab:blue", "--"), "val": ("tab:green", "-"), "test": ("tab:red", "-")}


def save_figure(fig: Figure, path: Path) -> None:
    """Save as PNG atomically. Figures are made with matplotlib's Figure class, not pyplot, so no
    global state (and no display) is involved and nothing needs closing."""
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=120, bbox_inches="tight"))


FEW_POINTS = 20  # fewer epochs than this: every point gets a marker, or a short run draws nothing


def markers(history: list[dict]) -> Optional[str]:
    return "o" if len(history) < FEW_POINTS else None


def lr_drop_epochs(history: list[dict], schedule: Optional[dict], steps_per_epoch: Optional[int]) -> list[float]:
    """Where the learning rate dropped, in (fractional) epochs: from the schedule's milestone steps
    that were reached, or without a schedule, the epochs after which the next one started lower."""
    if schedule is not None and steps_per_epoch:
        return [step / steps_per_epoch for step in schedule["milestone_steps"] if step < schedule["step_count"]]
    return [previous["epoch"] for previous, row in zip(history, history[1:]) if row["lr"] < previous["lr"]]


def splits_in(history: list[dict]) -> list[str]:
    return [split for split in SPLIT_STYLES if f"{split}_acc" in history[0]]


def readable_log_axis(ax: Axes, values: list[float]) -> None:
    """A log scale labelled at 1, 2 and 5 times each power of ten where the values span a factor
    of 10 or more; a linear scale for a narrower span, where a log axis would have no label."""
    if max(values) >= 10 * min(values) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(PLAIN_NUMBERS)
        ax.yaxis.set_minor_formatter(NullFormatter())


def epoch_axis(ax: Axes, last_epoch: int) -> None:
    """Integer epochs from the start of training (0) to the last, so that drops inside the first
    epoch stay on the axes."""
    ax.set_xlim(0, last_epoch * 1.04)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def plot_curves(history: list[dict], path: Path, title: str, schedule: Optional[dict] = None,
                steps_per_epoch: Optional[int] = None) -> Figure:
    """Loss and error (%) per epoch for every split, the lr drops as dotted lines."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 4.5))
    loss_ax, error_ax = fig.subplots(1, 2)
    for split in splits_in(history):
        colour, style = SPLIT_STYLES[split]
        loss_ax.plot(epochs, [row[f"{split}_loss"] for row in history], style, color=colour, label=split,
                     marker=markers(history))
        error_ax.plot(epochs, [100 - row[f"{split}_acc"] for row in history], style, color=colour, label=split,
                      marker=markers(history))
    for ax, label in ((loss_ax, "cross-entropy loss"), (error_ax, "error (%)")):
        for index, epoch in enumerate(lr_drop_epochs(history, schedule, steps_per_epoch)):
            ax.axvline(epoch, color="grey", linestyle=":", label="lr drop" if index == 0 else None)
        epoch_axis(ax, epochs[-1])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    readable_log_axis(loss_ax, [row[f"{split}_loss"] for row in history for split in splits_in(history)])
    final = history[-1]
    error_ax.set_title(f"test error {100 - final['test_acc']:.2f}% after epoch {final['epoch']}")
    fig.suptitle(title)
    save_figure(fig, path)
    return fig


def plot_lr(history: list[dict], path: Path, title: str, schedule: Optional[dict] = None,
            steps_per_epoch: Optional[int] = None) -> Figure:
    """The learning rate of every step, from the run's schedule (so drops inside an epoch and the
    warm-up show); without one, the rate each epoch started with, drawn over that epoch."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if schedule is not None and steps_per_epoch:
        rates = lr_history(schedule)
        ax.stairs(rates, [step / steps_per_epoch for step in range(len(rates) + 1)], baseline=None, linewidth=2)
        ax.set_ylabel("learning rate")
    else:
        rates = [row["lr"] for row in history]
        ax.stairs(rates, [history[0]["epoch"] - 1] + [row["epoch"] for row in history], baseline=None, linewidth=2)
        ax.set_ylabel("learning rate at the start of the epoch")
    readable_log_axis(ax, rates)  # linear where cosine annealing reaches 0
    epoch_axis(ax, history[-1]["epoch"])
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    save_figure(fig, path)
    return fig


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


ANNOTATED_CLASSES = 20  # with more classes the cells are too small for numbers (CIFAR-100)
CONFUSED_PAIRS = 10  # the pairs listed beside a confusion matrix too large to annotate


def most_confused(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str],
                  top: int = CONFUSED_PAIRS) -> list[tuple[str, str, int]]:
    """The ``top`` (true, predicted) pairs of different classes with the most images, most first."""
    counts = confusion_counts(labels, predictions, len(classes))
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:top]  # ties in class order
    pairs = zip(*np.unravel_index(order, counts.shape))
    return [(classes[true], classes[predicted], int(counts[true, predicted])) for true, predicted in pairs
            if counts[true, predicted] > 0]


def draw_heatmap(ax: Axes, counts: np.ndarray, classes: Sequence[str], numbers: bool) -> None:
    """A count matrix in shades of blue with a colour bar, a class name at every row and column,
    and, with ``numbers``, each cell's count in a colour readable on its shade."""
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    ax.figure.colorbar(image, ax=ax, label="images")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    if numbers:
        dark = counts.max() / 2
        for (true, predicted), count in np.ndenumerate(counts):
            ax.text(predicted, true, str(count), ha="center", va="center", color="white" if count > dark else "black")


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str], path: Path,
                   title: str) -> Figure:
    """Counts of true (rows) against predicted (columns) classes: annotated for CIFAR-10; for more
    classes than fit, no numbers in the cells and the most confused pairs listed beside them."""
    counts = confusion_counts(labels, predictions, len(classes))
    accuracy = 100 * np.trace(counts) / counts.sum()
    many = len(classes) > ANNOTATED_CLASSES
    fig = Figure(figsize=(17, 12) if many else (9, 7.5))
    ax, pairs_ax = fig.subplots(1, 2, width_ratios=(4, 1)) if many else (fig.subplots(), None)
    draw_heatmap(ax, counts, classes, numbers=not many)
    if many:
        ax.tick_params(labelsize=5)
        pairs_ax.axis("off")
        listed = [f"{true} -> {predicted}: {count}" for true, predicted, count in most_confused(labels, predictions, classes)]
        pairs_ax.text(0, 1, "most confused (true -> predicted: images)\n\n" + "\n".join(listed), va="top", fontsize=10,
                      transform=pairs_ax.transAxes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: test accuracy {accuracy:.2f}%")
    save_figure(fig, path)
    return fig


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str],
                     path: Path, title: str, columns: int = 8) -> Figure:
    """A grid of test images with predicted and true labels; wrong ones in red with a red frame.
    One axes holds them all, each image in a cell of its own (a grid of 32 axes took 4x as long
    to draw, at the end of every run)."""
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(1.7 * columns, 1.95 * rows))
    ax = fig.add_axes((0, 0, 1, 0.93))
    ax.set_xlim(0, columns)
    ax.set_ylim(rows * PREVIEW_CELL_HEIGHT, 0)  # row 0 at the top
    ax.axis("off")
    for index, (image, label, prediction) in enumerate(zip(images, labels, predictions)):
        row, column = divmod(index, columns)
        left, top = column + 0.1, row * PREVIEW_CELL_HEIGHT + 0.3  # room above for the label
        ax.imshow(image.transpose(1, 2, 0), extent=(left, left + 0.8, top + 0.8, top))
        right = label == prediction
        ax.text(left + 0.4, top - 0.04, classes[prediction] if right else f"{classes[prediction]}\n(true: {classes[label]})",
                ha="center", va="bottom", color="black" if right else "red", fontsize=8)
        if not right:
            ax.add_patch(Rectangle((left, top), 0.8, 0.8, fill=False, edgecolor="red", linewidth=3))
    wrong = int((labels != predictions).sum())
    fig.suptitle(f"{title}: {wrong} of {len(labels)} shown are wrong (red)")
    save_figure(fig, path)
    return fig


def run_schedule(files: RunFiles) -> tuple[Optional[dict], Optional[int]]:
    """The run's schedule state and steps per epoch from its summary, where it has a usable one."""
    result = files.read_result() or {}
    schedule, steps_per_epoch = result.get("schedule"), result.get("steps_per_epoch")
    usable = (isinstance(schedule, dict) and isinstance(steps_per_epoch, int) and steps_per_epoch > 0
              and all(isinstance(schedule.get(key), int)
                      for key in ("step_count", "warmup_steps", "total_steps", "linear_warmup_steps"))
              and is_number(schedule.get("base_lr")) and isinstance(schedule.get("cosine"), bool)
              and (schedule["cosine"] or is_number(schedule.get("gamma")))
              and isinstance(schedule.get("milestone_steps"), list)
              and all(isinstance(step, int) for step in schedule["milestone_steps"]))
    return (schedule, steps_per_epoch) if usable else (None, None)


def data_caveat(result: dict) -> str:
    """A title's note for a run whose record says it read other files than the official CIFAR ones."""
    record = result.get("provenance")
    return " (not the official CIFAR files)" if isinstance(record, dict) and record.get("official_data") is False else ""


def draw_run(folder: Path) -> list[Path]:
    """Draw every figure of the run in ``folder`` into folder/plots; returns the paths drawn.

    The curves need the CSV; the confusion matrix and predictions need the test predictions file,
    and are left out where a run has none (only its CSV was copied, say).
    """
    files = RunFiles.in_folder(folder)
    if files is None or not files.csv.is_file():
        raise ReportError(f"{folder} holds no <Model>_results.csv")
    history = files.read_history()
    files.plots.mkdir(exist_ok=True)
    drawn = [files.plots / "loss_acc_curves.png", files.plots / "lr_curve.png"]
    schedule, steps_per_epoch = run_schedule(files)
    name = files.model + data_caveat(files.read_result() or {})
    plot_curves(history, drawn[0], name, schedule, steps_per_epoch)
    plot_lr(history, drawn[1], name, schedule, steps_per_epoch)
    saved = files.read_predictions()
    if saved is not None:
        labels, predictions = saved["labels"].long().numpy(), saved["predictions"].long().numpy()
        images, classes = saved["sample_images"].numpy(), saved["classes"]
        title = f"{name}, epoch {saved['epoch']}"
        drawn += [files.plots / "confusion_matrix.png", files.plots / "predictions.png"]
        plot_confusion(labels, predictions, classes, drawn[2], title)
        plot_predictions(images, labels[: len(images)], predictions[: len(images)], classes, drawn[3], title)
    return drawn


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the figures of training runs, or compare a sweep with the paper.")
    parser.add_argument("runs", nargs="*", type=Path, help="results folders of single runs, e.g. results/ResNet56")
    parser.add_argument("--summary", type=Path, metavar="RESULTS_DIR",
                        help="compare every finished run under RESULTS_DIR with the paper (summary.md/csv, figures)")
    args = parser.parse_args(argv)
    if not args.runs and args.summary is None:
        parser.error("name run folders, or --summary RESULTS_DIR")
    try:
        for folder in args.runs:
            for path in draw_run(folder):
                print(f"wrote {path}")
        if args.summary is not None:
            import comparison  # here, not above: comparison draws with this module's helpers

            for path in comparison.write_sweep_report(args.summary):
                print(f"wrote {path}")
    except (ReportError, RunFileError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
