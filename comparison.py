"""The sweep's comparison with the paper: every finished run under a results folder, grouped by
model and settings, against Table 6, and the paper's Figures 6 and 7 redrawn from the runs' files.

    python report.py --summary results

writes into results/: summary.md and summary.csv (Table 6 side by side, each row naming its
devices, data and commands, rows not at the paper's recipe marked), depth_vs_error.png,
figure6.png (training and test error against iterations) and figure7.png (3x3 layer response std).
Runs are averaged only with runs of the same settings. CIFAR-100 runs get a report of their own,
the same files named *-cifar100 (summary-cifar100.md, ...), against the published CIFAR-100 errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

import settings
from errors import ReportError
from report import save_figure
from resnet import MODELS
from data import SOURCES as DATA_SOURCES
from recipe import PRESETS
from runfiles import RunFiles, csv_text, is_number
from runfolder import COMPLETE, write_text
from sweep import SWEEP_MODELS
from verdict import RULE, confidence_interval, verdict

# Table 6 of the paper, test error (%). ResNet-110: best of 5 runs, and their mean and std.
PAPER_ERROR = {"ResNet20": 8.75, "ResNet32": 7.51, "ResNet44": 7.17, "ResNet56": 6.97, "ResNet110": 6.43,
               "ResNet1202": 7.93}
PAPER_MEAN_ERROR = {"ResNet110": (6.61, 0.16)}
# Other published test errors (%) by data set: He et al. 2016b ("Identity Mappings") Table 3,
# median of 5 runs; Xie et al. 2017 (ResNeXt) Table 7, mean of 10 runs.
PUBLISHED_ERROR = {
    "cifar10": {"PreActResNet110": (6.37, "2016b"), "PreActResNet164": (5.46, "2016b"),
                "PreActResNet1001": (4.92, "2016b"), "ResNeXt29_8x64d": (3.65, "Xie"), "ResNeXt29_16x64d": (3.58, "Xie")},
    "cifar100": {"PreActResNet164": (24.33, "2016b"), "PreActResNet1001": (22.71, "2016b"),
                 "ResNeXt29_8x64d": (17.77, "Xie"), "ResNeXt29_16x64d": (17.31, "Xie")},
}
SOURCES = {"2016b": "He et al. 2016b, Table 3 (median of 5)", "Xie": "Xie et al. 2017, Table 7 (mean of 10)"}
# Published CIFAR-100 errors of nets this project does not build (the original, post-activation
# bottleneck ResNets of 2016b's Table 3), for the reader.
CIFAR100_OTHERS = "He et al. 2016b also give the original ResNet-164 25.16% and ResNet-1001 27.82% on CIFAR-100."
# What seed 003 says it reached, not a paper's number and not checked by anyone here.
SEED_CLAIMS = "Seed 003 claims about 95% accuracy for its PreActResNet and about 94% for ResNeXt29_8x64d (claims only)."
SOURCE_NAMES = {name: source.name for name, source in DATA_SOURCES.items()}  # cifar100 -> CIFAR-100
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the paper's CIFAR nets; ResNet18-152 are another family
FIGURE6_PANELS = (
    ("plain nets", ("Plain20", "Plain32", "Plain44", "Plain56", "Plain110")),
    ("ResNets", ("ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110")),
    ("ResNet-110 and ResNet-1202", ("ResNet110", "ResNet1202")),
)
FIGURE7_MODELS = ("Plain20", "Plain56", "Plain110", "ResNet20", "ResNet56", "ResNet110")
# The settings of the paper's recipe (Sec. 4.2) that a row must share to be set beside its numbers.
PAPER_RECIPE = ("shortcut", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                "milestones", "step_size", "gamma", "warmup", "warmup_epochs", "label_smoothing", "mixup", "cutmix",
                "color_jitter", "random_erasing", "normalize", "early_stop")
# Settings in which a run may differ from the paper's and still get a verdict: the seed, and the
# precision (bf16 autocast on fast hardware; the README lists it among the differences).
VERDICT_FREE_SETTINGS = ("model", "seed", "dataset", "precision")
SUMMARY_COLUMNS = ("model", "paper_schedule", "devices", "data", "official_data", "commands", "depth", "parameters",
                   "runs", "seeds", "paper_error", "paper_mean_error", "best_error", "mean_error", "std_error",
                   "ci95_low", "ci95_high", "mean_minus_paper", "verdict", "epochs", "mean_wall_minutes",
                   "device_hours")


@dataclass
class Sweep:
    """The runs under a results folder, by what their files say."""

    finished: dict[str, list[dict]]  # model -> its finished runs' summaries (``files`` added), by seed
    diverged: list[Path]  # folders of runs that stopped on a NaN/inf loss
    unfinished: list[Path]  # folders of runs that started and have no summary yet
    unreadable: list[Path]  # folders whose summary is not what train.py writes


def official_data(result: dict) -> Optional[bool]:
    """Whether the run read the official CIFAR files (its record says); None where it has no record."""
    return result["provenance"]["official_data"] if "provenance" in result else None


def device_hours(result: dict) -> Optional[float]:
    return result["provenance"]["device_hours"] if "provenance" in result else None


def is_record(record) -> bool:
    """The summary's provenance, as far as the report uses it."""
    return (isinstance(record, dict) and isinstance(record.get("official_data"), bool)
            and is_number(record.get("device_hours")))


def is_finished_summary(result: dict) -> bool:
    """Whether a finished run's summary has every field the report uses, of the right type (older
    summaries have no provenance)."""
    return (isinstance(result.get("model"), str) and is_number(result.get("final_test_error"))
            and ("provenance" not in result or is_record(result["provenance"]))
            and all(isinstance(result.get(key), int) for key in ("parameters", "epochs", "steps_per_epoch"))
            and is_number(result.get("wall_seconds")) and isinstance(result.get("settings"), dict)
            and isinstance(result["settings"].get("seed"), int)
            and result["settings"].get("dataset", "cifar10") in SOURCE_NAMES
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
        elif result.get("status") in ("unfinished", "interrupted"):
            sweep.unfinished.append(files.folder)
        elif result.get("status") in COMPLETE and is_finished_summary(result):
            sweep.finished.setdefault(group_name(result), []).append({**result, "files": files})
        else:
            sweep.unreadable.append(files.folder)
    for model_runs in sweep.finished.values():
        model_runs.sort(key=lambda run: run["settings"]["seed"])
    return sweep


def deviations(result: dict, names, recipe: str = "paper") -> list[str]:
    """The settings among ``names`` in which a run differs from a preset (the paper's recipe unless
    told), as name=value. A setting its summary lacks (an older version's) counts as the preset's."""
    preset = settings.parse_args(["--model", result["model"], "--recipe", recipe, "--precision", "fp32"])
    settings.resolve_model_and_warmup(preset)
    saved = result["settings"]
    return [f"{name}={saved.get(name)}" for name in names if saved.get(name, getattr(preset, name)) != getattr(preset, name)]


def group_name(result: dict) -> str:
    """Runs are averaged only with runs of the same settings (the seed aside): the model's name, its
    recipe where not the paper's, and the settings in which its runs differ from that recipe's."""
    recipe = result["settings"].get("recipe", "paper")
    recipe = recipe if isinstance(recipe, str) and recipe in PRESETS else "paper"  # another shows as a deviation
    names = [name for name in settings.RESULT_SETTINGS if name not in ("model", "seed", "dataset")]  # one report each
    differences = ([f"recipe={recipe}"] if recipe != "paper" else []) + deviations(result, names, recipe)
    if official_data(result) is False:  # never pooled with runs on the official files
        differences.append("data=not official")
    return result["model"] + (f" [{', '.join(differences)}]" if differences else "")


def runs_by_model(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """One group of runs per model for the figures: the one at the paper's recipe where there is one."""
    chosen: dict[str, list[dict]] = {}
    for group, runs in sorted(groups.items(), key=lambda item: " " in item[0]):  # paper's groups first
        chosen.setdefault(runs[0]["model"], runs)
    return chosen


def model_order(models) -> list[str]:
    """Models in the sweep's order, then any others by name."""
    def position(name: str) -> tuple:
        model = name.split(" ")[0]  # a group's name starts with its model's
        return SWEEP_MODELS.index(model) if model in SWEEP_MODELS else len(SWEEP_MODELS), name

    return sorted(models, key=position)


def depth_of(model: str) -> int:
    """The first number in a model's name: 56 for ResNet56, 29 for ResNeXt29_8x64d."""
    return int(re.search(r"\d+", model).group())


def dataset_of(result: dict) -> str:
    return result["settings"].get("dataset", "cifar10")


def published_error(model: str, dataset: str) -> Optional[float]:
    """The published test error of ``model`` on ``dataset``: Table 6 for the paper's nets on
    CIFAR-10, else the other papers' tables; None where none is published."""
    if dataset == "cifar10" and model in PAPER_ERROR:
        return PAPER_ERROR[model]
    return PUBLISHED_ERROR[dataset].get(model, (None,))[0]


def summary_row(group: str, runs: list[dict]) -> dict:
    """One group's line of the comparison: its runs' final test errors against the paper."""
    model, dataset = runs[0]["model"], dataset_of(runs[0])
    errors = np.array([run["final_test_error"] for run in runs])
    paper = published_error(model, dataset)
    paper_mean = PAPER_MEAN_ERROR[model][0] if model in PAPER_MEAN_ERROR and dataset == "cifar10" else None
    reference = paper_mean if paper_mean is not None else paper
    mean = float(errors.mean())
    interval = confidence_interval(errors.tolist())
    hours = [device_hours(run) for run in runs]
    return {
        "model": group,
        "paper_schedule": not deviations(runs[0], PAPER_RECIPE),
        "devices": "; ".join(sorted({run["device"] for run in runs})),
        "data": "; ".join(sorted({run["settings"].get("data_dir", "?") for run in runs})),
        "official_data": describe_official(runs),
        "commands": "; ".join(sorted({run.get("command", "?") for run in runs})),
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
        "ci95_low": interval[0] if interval else None,
        "ci95_high": interval[1] if interval else None,
        "mean_minus_paper": mean - reference if reference is not None else None,
        "verdict": verdict(mean, reference, verdict_blockers(runs)),
        "epochs": " ".join(sorted({str(run["epochs"]) for run in runs})),
        "mean_wall_minutes": float(np.mean([run["wall_seconds"] for run in runs])) / 60,
        "device_hours": sum(hours) if None not in hours else None,
    }


def describe_official(runs: list[dict]) -> str:
    known = {official_data(run) for run in runs}
    return "yes" if known == {True} else "no" if known == {False} else "not recorded" if known == {None} else "mixed"


def verdict_blockers(runs: list[dict]) -> list[str]:
    """Why a group of runs gets no verdict against Table 6; none if it gets one."""
    run = runs[0]
    if dataset_of(run) != "cifar10" or run["model"] not in PAPER_ERROR:
        return ["not a net of the paper's Table 6"]
    blockers = []
    names = [name for name in settings.RESULT_SETTINGS if name not in VERDICT_FREE_SETTINGS]
    differences = deviations(run, names)
    if differences:
        blockers.append("not the paper's settings (" + ", ".join(differences) + ")")
    official = describe_official(runs)
    if official != "yes":
        blockers.append({"no": "not the official data", "mixed": "not all on the official data"}.get(
            official, "data not recorded"))
    return blockers


def number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_markdown(rows: list[dict], dataset: str, missing: list[str], unfinished: list[Path],
                     diverged: list[Path], unreadable: list[Path]) -> str:
    title = ("# Reproduction of He et al. 2016, Table 6 (CIFAR-10 test error, %)" if dataset == "cifar10" else
             f"# {SOURCE_NAMES[dataset]} test error (%), against the published numbers")
    lines = [
        title,
        "",
        "Errors are of the **final** model of each run (no epoch picked on the test set). Best and",
        "mean are over the n runs (seeds) found; ± is the sample standard deviation over them, and",
        "the 95% confidence interval of the mean is Student's t (from two runs up). The paper gives best",
        "(mean ± std of 5 runs) for ResNet-110 only. Difference: our mean minus the paper's (its mean",
        "for ResNet-110). Published: Table 6 of He et al. 2016a unless the row names another source: "
        + "; ".join(SOURCES.values()) + ".",
        "",
        "Verdict, " + RULE,
        "",
        "| model | params | published | ours: best | ours: mean ± std (n) | 95% CI | ours − paper | verdict | epochs | "
        "minutes/run |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        model = row["model"].split()[0]
        paper = number(row["paper_error"]) or "–"
        if model in PUBLISHED_ERROR[dataset] and not (dataset == "cifar10" and model in PAPER_ERROR):
            paper += f" ({SOURCES[PUBLISHED_ERROR[dataset][model][1]].split(',')[0]})"
        if row["paper_mean_error"] is not None:
            paper += f" ({row['paper_mean_error']:.2f}±{PAPER_MEAN_ERROR[row['model'].split()[0]][1]:.2f})"
        spread = f"{row['mean_error']:.2f}" + (f" ± {row['std_error']:.2f}" if row["std_error"] is not None else "")
        difference = f"{row['mean_minus_paper']:+.2f}" if row["mean_minus_paper"] is not None else "–"
        interval = f"{row['ci95_low']:.2f}–{row['ci95_high']:.2f}" if row["ci95_low"] is not None else "–"
        mark = "" if row["paper_schedule"] else " †"
        lines.append(f"| {row['model']}{mark} | {row['parameters']:,} | {paper} | {row['best_error']:.2f} | "
                     f"{spread} ({row['runs']}) | {interval} | {difference} | {row['verdict']} | {row['epochs']} | "
                     f"{row['mean_wall_minutes']:.1f} |")
    lines.append("")
    hours = [row["device_hours"] for row in rows]
    recorded = [value for value in hours if value is not None]
    lines += [f"Total compute of these runs: {sum(recorded):.2f} device-hours"
              + (f" ({len(hours) - len(recorded)} row(s) of runs without a record left out)" if None in hours else "")
              + ".", ""]
    if not all(row["paper_schedule"] for row in rows):
        lines += ["† Not the paper's recipe (the differences are in brackets): not comparable with the paper's "
                  "numbers.", ""]
    lines += [f"- {row['model']}: device {row['devices']}; data {row['data']} (official CIFAR files: "
              f"{row['official_data']}); `{row['commands']}`" for row in rows]
    lines += ["", SEED_CLAIMS if dataset == "cifar10" else CIFAR100_OTHERS, ""]
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


def model_colour(model: str):
    """One colour per model, the same in every sweep figure."""
    palette = colormaps["tab20"].colors
    return palette[list(MODELS).index(model) % len(palette)] if model in MODELS else "grey"


def recipe_caveat(runs: dict[str, list[dict]]) -> str:
    """A title's note when a figure draws runs that are not at the paper's recipe, or on other
    files than the official CIFAR ones."""
    caveat = ""
    if any(deviations(model_runs[0], PAPER_RECIPE) for model_runs in runs.values()):
        caveat += "\n† not at the paper's recipe (see summary.md): not comparable with the paper's numbers"
    if any(official_data(run) is False for model_runs in runs.values() for run in model_runs):
        caveat += "\nsome runs read other files than the official CIFAR ones (see summary.md)"
    return caveat


def plot_depth_vs_error(runs: dict[str, list[dict]], path: Path, dataset: str = "cifar10") -> Figure:
    """Final test error against depth: each run a dot in its model's colour, each family's mean a
    black line (ResNets solid, plain nets dashed); the paper's ResNets as crosses."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for family, label, style in (("Plain", "plain", "--o"), ("ResNet", "ResNet", "-o")):
        models = [model for model in model_order(runs) if model.startswith(family) and depth_of(model) in CIFAR_DEPTHS]
        if not models:
            continue
        depths = [depth_of(model) for model in models]
        ax.plot(depths, [np.mean([run["final_test_error"] for run in runs[m]]) for m in models], style, color="black",
                label=f"{label} (ours, mean)", markersize=3)
        for model in models:
            errors = [run["final_test_error"] for run in runs[model]]
            ax.scatter([depth_of(model)] * len(errors), errors, color=model_colour(model), s=24, label=model, zorder=3)
    if dataset == "cifar10":
        ax.plot([depth_of(m) for m in PAPER_ERROR], list(PAPER_ERROR.values()), "x:", color="grey",
                label="ResNet (paper)")
    ax.set_xscale("log")
    ax.set_xticks(CIFAR_DEPTHS, labels=[str(depth) for depth in CIFAR_DEPTHS])
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final test error (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        no_runs_note(ax, ["the paper's ResNets or plain nets"])
    ax.set_title(f"{SOURCE_NAMES[dataset]} test error against depth" + recipe_caveat(runs))
    save_figure(fig, path)
    return fig


def plot_figure6(runs: dict[str, list[dict]], path: Path, dataset: str = "cifar10") -> Figure:
    """The paper's Figure 6: training (dashed) and test (bold) error against iterations, first seed of each."""
    fig = Figure(figsize=(16, 4.5))
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
    fig.suptitle(f"Figure 6: training and test error ({SOURCE_NAMES[dataset]})" + recipe_caveat(runs))
    save_figure(fig, path)
    return fig


def plot_figure7(runs: dict[str, list[dict]], path: Path) -> Figure:
    """The paper's Figure 7: std of each 3x3 layer's response, in layer order (top) and sorted
    (bottom), on a log scale, which keeps every net readable whatever the spread."""
    fig = Figure(figsize=(9, 7))
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
    ordered_ax.set_title("standard deviation of 3x3 layer responses (after BN, before ReLU / addition)"
                         + recipe_caveat(runs))
    save_figure(fig, path)
    return fig


def write_sweep_report(root: Path) -> list[Path]:
    """summary.md, summary.csv, depth_vs_error.png, figure6.png and figure7.png in ``root`` for the
    CIFAR-10 runs; the same names with -cifar100 for the CIFAR-100 runs."""
    sweep = find_runs(root)
    if not sweep.finished:
        raise ReportError(f"no finished runs (<Model>_results.json) under {root}")
    by_dataset: dict[str, dict[str, list[dict]]] = {}
    for group, runs in sweep.finished.items():
        by_dataset.setdefault(dataset_of(runs[0]), {})[group] = runs
    outputs = []
    for dataset, groups in sorted(by_dataset.items()):
        outputs += write_dataset_report(Path(root), dataset, groups, sweep)
    return outputs


def write_dataset_report(root: Path, dataset: str, groups: dict[str, list[dict]], sweep: Sweep) -> list[Path]:
    rows = [summary_row(group, groups[group]) for group in model_order(groups)]
    runs = runs_by_model(groups)
    missing = [model for model in SWEEP_MODELS if model not in runs]
    suffix = "" if dataset == "cifar10" else f"-{dataset}"
    outputs = [root / f"{name}{suffix}{extension}" for name, extension in
               (("summary", ".md"), ("summary", ".csv"), ("depth_vs_error", ".png"), ("figure6", ".png"),
                ("figure7", ".png"))]
    write_text(outputs[0], summary_markdown(rows, dataset, missing, sweep.unfinished, sweep.diverged, sweep.unreadable))
    write_text(outputs[1], csv_text(rows, SUMMARY_COLUMNS))
    plot_depth_vs_error(runs, outputs[2], dataset)
    plot_figure6(runs, outputs[3], dataset)
    plot_figure7(runs, outputs[4])
    if missing:
        print(f"{SOURCE_NAMES[dataset]}: not run yet: {', '.join(missing)}")
    return outputs
