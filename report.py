"""Figures and tables of training runs, drawn from their files alone (no data set, model or GPU needed).

    python report.py results/ResNet56              # redraw results/ResNet56/plots/*.png
    python report.py results/ResNet20 results/ResNet56
    python report.py --summary results             # every finished run under results/ against the paper

Per run, in RUN/plots/: loss_acc_curves.png and lr_curve.png from <Model>_results.csv;
confusion_matrix.png and predictions.png from <Model>_test_predictions.pt (the final model's,
or the last finished epoch's after an interruption). runfiles.py knows these names.

The sweep report (--summary) reads every <Model>_results.json under a folder and writes there
summary.md and summary.csv (Table 6 side by side), depth_vs_error.png, figure6.png (training and
test error against iterations) and figure7.png (3x3 layer response std).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from runfiles import RunFileError, RunFiles, atomic_write, csv_text, is_number, write_text
from sweep import SWEEP_MODELS

PLOT_NAMES = ("confusion_matrix.png", "loss_acc_curves.png", "lr_curve.png", "predictions.png")
PLAIN_NUMBERS = FuncFormatter(lambda value, _position: f"{value:g}")  # 0.01, not 10^-2, on log axes
SPLIT_STYLES = {"train": ("tab:blue", "--"), "val": ("tab:green", "-"), "test": ("tab:red", "-")}


class ReportError(Exception):
    """A results folder that cannot be drawn; the message says why."""


def save_figure(fig: Figure, path: Path) -> None:
    """Save as PNG atomically. Figures are made with matplotlib's Figure class, not pyplot, so no
    global state (and no display) is involved and nothing needs closing."""
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=120, bbox_inches="tight"))


def lr_drop_epochs(history: list[dict]) -> list[int]:
    """Epochs after which the learning rate drops (the next epoch starts lower)."""
    return [previous["epoch"] for previous, row in zip(history, history[1:]) if row["lr"] < previous["lr"]]


def splits_in(history: list[dict]) -> list[str]:
    return [split for split in SPLIT_STYLES if f"{split}_acc" in history[0]]


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss and error (%) per epoch for every split, the lr drops as dotted lines."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 4.5))
    loss_ax, error_ax = fig.subplots(1, 2)
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
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
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


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str], path: Path,
                   title: str) -> None:
    """Counts of true (rows) against predicted (columns) classes, annotated."""
    counts = confusion_counts(labels, predictions, len(classes))
    accuracy = 100 * np.trace(counts) / counts.sum()
    fig = Figure(figsize=(9, 7.5))
    ax = fig.subplots()
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", xticklabels=classes, yticklabels=classes, ax=ax,
                cbar_kws={"label": "images"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: test accuracy {accuracy:.2f}%")
    save_figure(fig, path)


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str],
                     path: Path, title: str, columns: int = 8) -> None:
    """A grid of test images with predicted and true labels; wrong ones in red with a red frame."""
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(1.7 * columns, 1.95 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, label, prediction in zip(np.ravel(axes), images, labels, predictions):
        ax.imshow(image.transpose(1, 2, 0))
        right = label == prediction
        ax.set_title(classes[prediction] if right else f"{classes[prediction]}\n(true: {classes[label]})",
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
    plot_curves(history, drawn[0], files.model)
    plot_lr(history, drawn[1], files.model)
    saved = files.read_predictions()
    if saved is not None:
        labels, predictions = saved["labels"].long().numpy(), saved["predictions"].long().numpy()
        images, classes = saved["sample_images"].numpy(), saved["classes"]
        title = f"{files.model}, epoch {saved['epoch']}"
        drawn += [files.plots / "confusion_matrix.png", files.plots / "predictions.png"]
        plot_confusion(labels, predictions, classes, drawn[2], title)
        plot_predictions(images, labels[: len(images)], predictions[: len(images)], classes, drawn[3], title)
    return drawn


# --------------------------------------------------------------------------------------------
# The sweep: every finished run under a results folder, side by side with the paper

# Table 6 of the paper, test error (%). ResNet-110: best of 5 runs, and their mean and std.
PAPER_ERROR = {"ResNet20": 8.75, "ResNet32": 7.51, "ResNet44": 7.17, "ResNet56": 6.97, "ResNet110": 6.43,
               "ResNet1202": 7.93}
PAPER_MEAN_ERROR = {"ResNet110": (6.61, 0.16)}
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the paper's CIFAR nets; ResNet18-152 are another family
FIGURE6_PANELS = (
    ("plain nets", ("Plain20", "Plain32", "Plain44", "Plain56", "Plain110")),
    ("ResNets", ("ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110")),
    ("ResNet-110 and ResNet-1202", ("ResNet110", "ResNet1202")),
)
FIGURE7_MODELS = ("Plain20", "Plain56", "Plain110", "ResNet20", "ResNet56", "ResNet110")
SUMMARY_COLUMNS = ("model", "depth", "parameters", "runs", "seeds", "paper_error", "paper_mean_error", "best_error",
                   "mean_error", "std_error", "mean_minus_paper", "epochs", "mean_wall_minutes")


@dataclass
class Sweep:
    """The runs under a results folder, by what their files say."""

    finished: dict[str, list[dict]]  # model -> its finished runs' summaries (``files`` added), by seed
    diverged: list[Path]  # folders of runs that stopped on a NaN/inf loss
    unfinished: list[Path]  # folders of runs that started and have no summary yet
    unreadable: list[Path]  # folders whose summary is not what train.py writes


def is_finished_summary(result: dict) -> bool:
    """Whether a finished run's summary has every field the report uses, of the right type."""
    return (isinstance(result.get("model"), str) and is_number(result.get("final_test_error"))
            and all(isinstance(result.get(key), int) for key in ("parameters", "epochs", "steps_per_epoch"))
            and is_number(result.get("wall_seconds")) and isinstance(result.get("settings"), dict)
            and isinstance(result["settings"].get("seed"), int)
            and (isinstance(result.get("layer_response_std"), list)
                 and all(is_number(std) for std in result["layer_response_std"])
                 or "layer_response_std" not in result))


def find_runs(root: Path) -> Sweep:
    sweep = Sweep({}, [], [], [])
    for files in RunFiles.under(root):
        result = files.read_result()
        if result is None:
            (sweep.unreadable if files.json.exists() else sweep.unfinished).append(files.folder)
        elif result.get("status") == "diverged":
            sweep.diverged.append(files.folder)
        elif result.get("status") == "finished" and is_finished_summary(result):
            sweep.finished.setdefault(result["model"], []).append({**result, "files": files})
        else:
            sweep.unreadable.append(files.folder)
    for model_runs in sweep.finished.values():
        model_runs.sort(key=lambda run: run["settings"]["seed"])
    return sweep


def model_order(models) -> list[str]:
    """Models in the sweep's order, then any others by name."""
    return sorted(models, key=lambda name: (SWEEP_MODELS.index(name) if name in SWEEP_MODELS else len(SWEEP_MODELS), name))


def depth_of(model: str) -> int:
    return int("".join(character for character in model if character.isdigit()))


def summary_row(model: str, runs: list[dict]) -> dict:
    """One model's line of the comparison: its runs' final test errors against the paper."""
    errors = np.array([run["final_test_error"] for run in runs])
    paper = PAPER_ERROR.get(model)
    paper_mean = PAPER_MEAN_ERROR[model][0] if model in PAPER_MEAN_ERROR else None
    reference = paper_mean if paper_mean is not None else paper
    mean = float(errors.mean())
    return {
        "model": model,
        "depth": depth_of(model),
        "parameters": runs[0]["parameters"],
        "runs": len(runs),
        "seeds": " ".join(str(run["settings"]["seed"]) for run in runs),
        "paper_error": paper,
        "paper_mean_error": paper_mean,
        "best_error": float(errors.min()),
        "mean_error": mean,
        # The sample standard deviation over seeds; none from a single run.
        "std_error": float(errors.std(ddof=1)) if len(errors) > 1 else None,
        "mean_minus_paper": mean - reference if reference is not None else None,
        "epochs": " ".join(sorted({str(run["epochs"]) for run in runs})),
        "mean_wall_minutes": float(np.mean([run["wall_seconds"] for run in runs])) / 60,
    }


def number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_markdown(rows: list[dict], missing: list[str], unfinished: list[Path], diverged: list[Path],
                     unreadable: list[Path]) -> str:
    lines = [
        "# Reproduction of He et al. 2016, Table 6 (CIFAR-10 test error, %)",
        "",
        "Errors are of the **final** model of each run (no epoch picked on the test set). Best and",
        "mean ± sample std are over the runs (seeds) found; the paper gives best (mean ± std of 5 runs)",
        "for ResNet-110 only. Difference: our mean minus the paper's (its mean for ResNet-110).",
        "",
        "| model | params | paper | ours: best | ours: mean ± std (runs) | ours − paper | epochs | minutes/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = number(row["paper_error"]) or "–"
        if row["paper_mean_error"] is not None:
            paper += f" ({row['paper_mean_error']:.2f}±{PAPER_MEAN_ERROR[row['model']][1]:.2f})"
        spread = f"{row['mean_error']:.2f}" + (f" ± {row['std_error']:.2f}" if row["std_error"] is not None else "")
        difference = f"{row['mean_minus_paper']:+.2f}" if row["mean_minus_paper"] is not None else "–"
        lines.append(f"| {row['model']} | {row['parameters']:,} | {paper} | {row['best_error']:.2f} | "
                     f"{spread} ({row['runs']}) | {difference} | {row['epochs']} | {row['mean_wall_minutes']:.1f} |")
    lines.append("")
    if missing:
        lines.append(f"Not run yet (of run.sh's default list): {', '.join(missing)}.")
    for folder in unfinished:
        lines.append(f"Unfinished (no summary yet): {folder}.")
    for folder in diverged:
        lines.append(f"Diverged (left out above): {folder}.")
    for folder in unreadable:
        lines.append(f"Unreadable summary, not what train.py writes (left out above): {folder}.")
    return "\n".join(lines) + "\n"


def no_runs_note(ax: Axes, models) -> None:
    ax.text(0.5, 0.5, "no runs of\n" + ", ".join(models), ha="center", va="center", transform=ax.transAxes,
            color="grey")


def plot_depth_vs_error(runs: dict[str, list[dict]], path: Path) -> None:
    """Final test error against depth: each run a dot, the mean a line; the paper's ResNets as crosses."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for family, label, colour in (("Plain", "plain", "tab:orange"), ("ResNet", "ResNet", "tab:blue")):
        models = [model for model in model_order(runs) if model.startswith(family) and depth_of(model) in CIFAR_DEPTHS]
        if not models:
            continue
        depths = [depth_of(model) for model in models]
        ax.plot(depths, [np.mean([run["final_test_error"] for run in runs[m]]) for m in models], "-o", color=colour,
                label=f"{label} (ours, mean)")
        for model in models:
            errors = [run["final_test_error"] for run in runs[model]]
            ax.scatter([depth_of(model)] * len(errors), errors, color=colour, alpha=0.4, s=14)
    ax.plot([depth_of(m) for m in PAPER_ERROR], list(PAPER_ERROR.values()), "x--", color="black", label="ResNet (paper)")
    ax.set_xscale("log")
    ax.set_xticks(CIFAR_DEPTHS, labels=[str(depth) for depth in CIFAR_DEPTHS])
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final test error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("CIFAR-10 test error against depth")
    save_figure(fig, path)


def plot_figure6(runs: dict[str, list[dict]], path: Path) -> None:
    """The paper's Figure 6: training (dashed) and test (bold) error against iterations, first seed of each."""
    fig = Figure(figsize=(16, 4.5))
    axes = fig.subplots(1, 3, sharey=True)
    final_errors = []
    for ax, (title, models) in zip(axes, FIGURE6_PANELS):
        present = [model for model in models if model in runs]
        for index, model in enumerate(present):
            run = runs[model][0]
            history = run["files"].read_history()
            iterations = [row["epoch"] * run["steps_per_epoch"] for row in history]
            test_errors = [100 - row["test_acc"] for row in history]
            marker = "." if len(history) < 20 else None  # a short run's few points stay visible
            ax.plot(iterations, [100 - row["train_acc"] for row in history], "--", color=f"C{index}", linewidth=1,
                    marker=marker)
            ax.plot(iterations, test_errors, "-", color=f"C{index}", linewidth=2, label=model, marker=marker)
            final_errors.append(test_errors[-1])
        if present:
            ax.legend()
        else:
            no_runs_note(ax, models)
        ax.set_title(title)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)  (dashed: training, bold: test)")
    if final_errors and max(final_errors) < 20:
        axes[0].set_ylim(0, 20)  # the paper's range; the first epochs' high errors run off the top
    save_figure(fig, path)


def plot_figure7(runs: dict[str, list[dict]], path: Path) -> None:
    """The paper's Figure 7: std of each 3x3 layer's response, in layer order (top) and sorted (bottom)."""
    fig = Figure(figsize=(9, 7))
    ordered_ax, sorted_ax = fig.subplots(2, 1)
    present = [model for model in FIGURE7_MODELS if model in runs and "layer_response_std" in runs[model][0]]
    for index, model in enumerate(present):
        stds = runs[model][0]["layer_response_std"]
        style = "--" if model.startswith("Plain") else "-"
        layers = range(1, len(stds) + 1)
        ordered_ax.plot(layers, stds, style, color=f"C{index}", label=model)
        sorted_ax.plot(layers, sorted(stds, reverse=True), style, color=f"C{index}", label=model)
    if present:
        ordered_ax.legend()
    else:
        no_runs_note(ordered_ax, FIGURE7_MODELS)
    ordered_ax.set_xlabel("layer index (original)")
    sorted_ax.set_xlabel("layer index (sorted by magnitude)")
    for ax in (ordered_ax, sorted_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
    ordered_ax.set_title("standard deviation of 3x3 layer responses (after BN, before ReLU / addition)")
    save_figure(fig, path)


def write_sweep_report(root: Path) -> list[Path]:
    """summary.md, summary.csv, depth_vs_error.png, figure6.png and figure7.png in ``root``."""
    sweep = find_runs(root)
    runs = sweep.finished
    if not runs:
        raise ReportError(f"no finished runs (<Model>_results.json) under {root}")
    rows = [summary_row(model, runs[model]) for model in model_order(runs)]
    missing = [model for model in SWEEP_MODELS if model not in runs]
    root = Path(root)
    outputs = [root / name for name in ("summary.md", "summary.csv", "depth_vs_error.png", "figure6.png", "figure7.png")]
    write_text(outputs[0], summary_markdown(rows, missing, sweep.unfinished, sweep.diverged, sweep.unreadable))
    write_text(outputs[1], csv_text(rows, SUMMARY_COLUMNS))
    plot_depth_vs_error(runs, outputs[2])
    plot_figure6(runs, outputs[3])
    plot_figure7(runs, outputs[4])
    if missing:
        print(f"not run yet: {', '.join(missing)}")
    return outputs


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
            for path in write_sweep_report(args.summary):
                print(f"wrote {path}")
    except (ReportError, RunFileError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
