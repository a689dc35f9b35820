"""Every figure: a run's (drawn from its files alone: no data set, model or GPU needed) and the
sweep's, the paper's Figures 6 and 7 among them. Figures are matplotlib ``Figure`` objects, not
pyplot's, so no global state and no display is involved, and each is saved atomically.

A run's, in RUN/plots/: loss_acc_curves.png and lr_curve.png from <Model>_results.csv;
confusion_matrix.png and predictions.png from <Model>_test_predictions.pt (the final model's, or
the last finished epoch's after an interruption). The sweep's (sweep_report.py chooses the runs
and the caveats): depth_vs_error.png, figure6.png and figure7.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from cifar_resnet.checkpoints import RunFiles
from cifar_resnet.data import SOURCES
from cifar_resnet.errors import ReportError
from cifar_resnet.paper import CIFAR_DEPTHS, FIGURE6_PANELS, FIGURE7_MODELS, PAPER_ERROR, depth_of, model_order
from cifar_resnet.recipe import lr_history
from cifar_resnet.runfolder import atomic_write, own_folder, written_together
from resnet import MODELS

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


def run_schedule(result: Optional[dict]) -> tuple[Optional[dict], Optional[int]]:
    """The schedule state and steps per epoch from a run's checked summary, where it has them."""
    if result is None or "schedule" not in result or "steps_per_epoch" not in result:
        return None, None
    return result["schedule"], result["steps_per_epoch"]


def data_caveat(result: Optional[dict]) -> str:
    """A title's note for a run whose record says it read other files than the official CIFAR ones."""
    unofficial = result is not None and "provenance" in result and result["provenance"]["official_data"] is False
    return " (not the official CIFAR files)" if unofficial else ""


def draw_run(folder: Path) -> list[Path]:
    """Draw every figure of the run in ``folder`` into folder/plots, replacing the old ones as a set;
    returns the paths drawn.

    The curves need the CSV; the confusion matrix and predictions need the test predictions file,
    and are left out where a run has none (only its CSV was copied, say).
    """
    files = RunFiles.in_folder(folder)
    if files is None or not files.csv.is_file():
        raise ReportError(f"{folder} holds no <Model>_results.csv")
    history = files.read_history()
    with written_together():  # the figures of one moment of the run, never some old and some new
        own_folder(files.plots)
        drawn = [files.plots / "loss_acc_curves.png", files.plots / "lr_curve.png"]
        result = files.read_result()
        schedule, steps_per_epoch = run_schedule(result)
        name = files.model + data_caveat(result)
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


# --------------------------------------------------------------------------------------------
# The sweep's figures


def add_caveat(fig: Figure, caveat: str) -> None:
    """The caveat's lines under the panels, where the layout engine keeps room for them (in a title
    they were drawn over the panels' own titles)."""
    if caveat:
        fig.supxlabel(caveat, fontsize=9, color="dimgrey")


def no_runs_note(ax: Axes, models) -> None:
    ax.text(0.5, 0.5, "no runs of\n" + ", ".join(models), ha="center", va="center", transform=ax.transAxes,
            color="grey")


def model_colour(model: str):
    """One colour per model, the same in every sweep figure."""
    palette = colormaps["tab20"].colors
    return palette[list(MODELS).index(model) % len(palette)] if model in MODELS else "grey"


# depth_vs_error.png: one colour and line style per family, told apart at a glance
FAMILY_STYLES = (("Plain", "plain nets", "tab:blue", "--"), ("ResNet", "ResNets", "tab:red", "-"))


def plot_depth_vs_error(runs: dict[str, list[dict]], path: Path, dataset: str = "cifar10", caveat: str = "") -> Figure:
    """Final test error against depth: per family (FAMILY_STYLES) each run a dot and the mean a line;
    the paper's ResNets as grey crosses. ``caveat``: lines under the figure (runs not at the paper's
    recipe, say)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for family, label, colour, linestyle in FAMILY_STYLES:
        models = [model for model in model_order(runs) if model.startswith(family) and depth_of(model) in CIFAR_DEPTHS]
        if not models:
            continue
        depths = [depth_of(model) for model in models]
        ax.plot(depths, [np.mean([run["final_test_error"] for run in runs[m]]) for m in models], linestyle,
                color=colour, linewidth=2, label=f"{label}, ours: mean (line), runs (dots)")
        for model in models:
            errors = [run["final_test_error"] for run in runs[model]]
            ax.scatter([depth_of(model)] * len(errors), errors, color=colour, s=24, alpha=0.6, zorder=3)
    if dataset == "cifar10":
        ax.plot([depth_of(m) for m in PAPER_ERROR], list(PAPER_ERROR.values()), "x:", color="grey", markersize=8,
                label="ResNets, the paper")
    ax.set_xscale("log")
    ax.set_xticks(CIFAR_DEPTHS, labels=[str(depth) for depth in CIFAR_DEPTHS])
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final test error (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        no_runs_note(ax, ["the paper's ResNets or plain nets"])
    ax.set_title(f"{SOURCES[dataset].name} test error against depth")
    add_caveat(fig, caveat)
    save_figure(fig, path)
    return fig


def plot_figure6(runs: dict[str, list[dict]], path: Path, dataset: str = "cifar10", caveat: str = "") -> Figure:
    """The paper's Figure 6: training (dashed) and test (bold) error against iterations, first seed of each."""
    fig = Figure(figsize=(16, 4.5), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    final_errors = []
    styles = [Line2D([], [], color="black", linestyle="--", linewidth=1, label="dashed: training error"),
              Line2D([], [], color="black", linewidth=2, label="bold: test error")]
    for ax, (title, models) in zip(axes, FIGURE6_PANELS):
        present = [model for model in models if model in runs]
        for model in present:
            run = runs[model][0]
            history = run["files"].read_history()
            iterations = [row["epoch"] * run["steps_per_epoch"] for row in history]
            test_errors = [100 - row["test_acc"] for row in history]
            marker = "o" if len(history) < 20 else None  # a short run's few points stay visible
            ax.plot(iterations, [100 - row["train_acc"] for row in history], "--", color=model_colour(model),
                    linewidth=1, marker=marker, markersize=3)
            ax.plot(iterations, test_errors, "-", color=model_colour(model), linewidth=2, label=model, marker=marker)
            final_errors.append(test_errors[-1])
        if present:
            ax.legend(handles=ax.get_legend_handles_labels()[0] + styles)
        else:
            no_runs_note(ax, models)
        ax.set_title(title)
        ax.set_xlabel("iterations")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)")
    if final_errors and max(final_errors) < 20:
        axes[0].set_ylim(0, 20)  # the paper's range; the first epochs' high errors run off the top
    fig.suptitle(f"Figure 6: training and test error ({SOURCES[dataset].name})")
    add_caveat(fig, caveat)
    save_figure(fig, path)
    return fig


def plot_figure7(runs: dict[str, list[dict]], path: Path, caveat: str = "") -> Figure:
    """The paper's Figure 7: std of each 3x3 layer's response, in layer order (top) and sorted
    (bottom), on a log scale, which keeps every net readable whatever the spread."""
    fig = Figure(figsize=(9, 7), layout="constrained")
    ordered_ax, sorted_ax = fig.subplots(2, 1)
    present = [model for model in FIGURE7_MODELS if model in runs and "layer_response_std" in runs[model][0]]
    for model in present:
        stds = runs[model][0]["layer_response_std"]
        style = "--" if model.startswith("Plain") else "-"
        layers = range(1, len(stds) + 1)
        ordered_ax.plot(layers, stds, style, color=model_colour(model), label=model)
        sorted_ax.plot(layers, sorted(stds, reverse=True), style, color=model_colour(model), label=model)
    if present:
        ordered_ax.legend()
    else:
        no_runs_note(ordered_ax, FIGURE7_MODELS)
    ordered_ax.set_xlabel("layer index (original)")
    sorted_ax.set_xlabel("layer index (sorted by magnitude)")
    for ax in (ordered_ax, sorted_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if present:
            ax.set_yscale("log")
        ax.set_ylabel("std")
        ax.grid(alpha=0.3, which="both")
    ordered_ax.set_title("standard deviation of 3x3 layer responses (after BN, before ReLU / addition)")
    add_caveat(fig, caveat)
    save_figure(fig, path)
    return fig
