"""The sweep's comparison with the paper: every finished run under a results folder, grouped by
model and settings, against Table 6, and the paper's Figures 6 and 7 redrawn from the runs' files;
and the README's table of the runs whose records are committed under docs/runs.

    python report.py --summary results

writes into results/: summary.md and summary.csv (Table 6 side by side, each row naming its
devices, data and commands, rows not at the paper's recipe marked), depth_vs_error.png,
figure6.png (training and test error against iterations) and figure7.png (3x3 layer response std).
Runs are averaged only with runs of the same settings. CIFAR-100 runs get a report of their own,
the same files named *-cifar100 (summary-cifar100.md, ...), against the published CIFAR-100 errors.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cifar_resnet import figures, settings
from cifar_resnet.data import SOURCES as DATA_SOURCES
from cifar_resnet.errors import ReportError
from cifar_resnet.fields import COMPLETE, describe_part_device, plural
from cifar_resnet.paper import (
    CIFAR100_OTHERS,
    MODERN_PROJECT_CLAIMS,
    PAPER_ERROR,
    PAPER_MEAN_ERROR,
    PUBLICATIONS,
    PUBLISHED_ERROR,
    RECIPE,
    SWEEP_MODELS,
    depth_of,
    model_order,
)
from cifar_resnet.recipe import PRESETS
from cifar_resnet.runfolder import RunFolder, csv_text, remove_leftovers_of, write_text, written_together
from cifar_resnet.verdict import RULE, confidence_interval, verdict

SOURCE_NAMES = {name: source.name for name, source in DATA_SOURCES.items()}  # cifar100 -> CIFAR-100
# The settings of the paper's recipe (Sec. 4.2) that a row must share to be set beside its numbers:
# the model is the row's own, and a validation split or another precision leaves the schedule the
# paper's (the first still blocks the verdict, below).
PAPER_RECIPE = ("shortcut", "subset", "init_from", *(name for name in RECIPE if name not in ("model", "val_size", "precision")))
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
    duplicated: list[Path]  # folders of runs with the settings and seed of another: not independent runs
    without_result: list[str] = field(default_factory=list)  # "MODEL seed S" of the sweep with no finished run


def official_data(result: dict) -> Optional[bool]:
    """Whether the run read the official CIFAR files (its record says); None where it has no record."""
    return result["provenance"]["official_data"] if "provenance" in result else None


def device_hours(result: dict) -> Optional[float]:
    return result["provenance"]["device_hours"] if "provenance" in result else None


def find_runs(root: Path) -> Sweep:
    sweep = Sweep({}, [], [], [], [])
    for files in RunFolder.under(root):
        result = files.read_result()
        if result is None:
            (sweep.unreadable if files.json.exists() else sweep.unfinished).append(files.folder)
        elif result["status"] == "diverged":
            sweep.diverged.append(files.folder)
        elif result["status"] in COMPLETE:
            sweep.finished.setdefault(group_name(result), []).append({**result, "files": files})
        else:  # unfinished or interrupted
            sweep.unfinished.append(files.folder)
    for group, model_runs in list(sweep.finished.items()):
        seeds = Counter(run["settings"]["seed"] for run in model_runs)
        sweep.duplicated += [run["files"].folder for run in model_runs if seeds[run["settings"]["seed"]] > 1]
        independent = sorted((run for run in model_runs if seeds[run["settings"]["seed"]] == 1),
                             key=lambda run: run["settings"]["seed"])
        if independent:
            sweep.finished[group] = independent
        else:
            del sweep.finished[group]
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


def summary_markdown(rows: list[dict], dataset: str, missing: list[str], sweep: Sweep) -> str:
    title = ("# Reproduction of He et al. 2016, Table 6 (CIFAR-10 test error, %)" if dataset == "cifar10" else
             f"# {SOURCE_NAMES[dataset]} test error (%), against the published numbers")
    lines = [
        title,
        "",
        "Errors are of the **final** model of each run (no epoch picked on the test set). Best and",
        "mean are over the n runs (seeds) found; ± is the sample standard deviation over them, and",
        "the 95% confidence interval of the mean is Student's t (from two runs up; cut at 0 and 100, where",
        "an error ends, as t from a few widely spread runs reaches past them). The paper gives best",
        "(mean ± std of 5 runs) for ResNet-110 only. Difference: our mean minus the paper's (its mean",
        "for ResNet-110). Published: Table 6 of He et al. 2016a unless the row names another source: "
        + "; ".join(PUBLICATIONS.values()) + ".",
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
            paper += f" ({PUBLICATIONS[PUBLISHED_ERROR[dataset][model][1]].split(',')[0]})"
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
    lines += ["", *other_numbers(dataset, rows), ""]
    if missing:
        lines.append(f"Not run yet (of run.sh's default list): {', '.join(missing)}.")
    if sweep.without_result:
        lines.append(f"Runs of this sweep without a finished run (not run, failed, unfinished or diverged): "
                     f"{', '.join(sweep.without_result)}.")
    for folder in sweep.unfinished:
        lines.append(f"Unfinished (no summary yet): {folder}.")
    for folder in sweep.diverged:
        lines.append(f"Diverged (left out above): {folder}.")
    for folder in sweep.unreadable:
        lines.append(f"Unreadable summary, not what train.py writes (left out above): {folder}.")
    for folder in sweep.duplicated:
        lines.append(f"The settings and seed of another run, so not an independent one (left out above): {folder}.")
    return "\n".join(lines) + "\n"


def recipe_caveat(runs: dict[str, list[dict]]) -> str:
    """A figure's note (its lines, or "") when it draws runs that are not at the paper's recipe, or
    on other files than the official CIFAR ones."""
    lines = []
    if any(deviations(model_runs[0], PAPER_RECIPE) for model_runs in runs.values()):
        lines.append("† not at the paper's recipe (see summary.md): not comparable with the paper's numbers")
    if any(official_data(run) is False for model_runs in runs.values() for run in model_runs):
        lines.append("some runs read other files than the official CIFAR ones (see summary.md)")
    return "\n".join(lines)


def other_numbers(dataset: str, rows: list[dict]) -> list[str]:
    """What else is known of the sweep's models: CIFAR-100's other ResNets, or on CIFAR-10 the claims
    of the project behind --recipe modern, where its models were run."""
    if dataset != "cifar10":
        return [CIFAR100_OTHERS]
    return [MODERN_PROJECT_CLAIMS] if any(row["model"].startswith(("PreAct", "ResNeXt")) for row in rows) else []


def write_sweep_report(root: Path, models: Sequence[str] = (), seeds: Sequence[str] = ()) -> list[Path]:
    """summary.md, summary.csv, depth_vs_error.png, figure6.png and figure7.png in ``root`` for the
    CIFAR-10 runs; the same names with -cifar100 for the CIFAR-100 runs. They replace the old ones
    as a set: a report that fails or is stopped leaves the old set whole. ``models`` and ``seeds``:
    the sweep's, whose runs without a finished one summary.md names."""
    sweep = find_runs(root)
    done = {(run["model"], str(run["settings"]["seed"])) for runs in sweep.finished.values() for run in runs}
    sweep.without_result = [f"{model} seed {seed}" for model in models for seed in seeds if (model, seed) not in done]
    if not sweep.finished:
        raise ReportError(f"no finished runs (<Model>_results.json) under {root}")
    by_dataset: dict[str, dict[str, list[dict]]] = {}
    for group, runs in sweep.finished.items():
        by_dataset.setdefault(dataset_of(runs[0]), {})[group] = runs
    outputs = []
    with written_together():
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
    for path in outputs:
        remove_leftovers_of(path)
    write_text(outputs[0], summary_markdown(rows, dataset, missing, sweep))
    write_text(outputs[1], csv_text(rows, SUMMARY_COLUMNS))
    caveat = recipe_caveat(runs)
    figures.plot_depth_vs_error(runs, outputs[2], dataset, caveat)
    figures.plot_figure6(runs, outputs[3], dataset, caveat)
    figures.plot_figure7(runs, outputs[4], caveat)
    if missing:
        print(f"{SOURCE_NAMES[dataset]}: not run yet: {', '.join(missing)}")
    return outputs


# --------------------------------------------------------------------------------------------
# The README's table of committed run records (docs/runs), written between these two lines by
# report.py --records, never by hand: a test holds the README's table to the records.

RECORDS_BEGIN = "<!-- generated from docs/runs by: python report.py --records docs/runs --readme README.md -->"
RECORDS_END = "<!-- end of the generated table -->"
RECORDS_HEADER = ("| record | model | final test accuracy | Table 6 | verdict | epochs | where | wall time |\n"
                  "|---|---|---:|---:|---|---:|---|---:|")


def records_table(root: Path, links_from: Path) -> str:
    """A Markdown table of the finished runs whose records (the summary JSON, its text and the CSV,
    copied from the run's folder) lie under ``root``: one row each, in the order of their folders'
    names, each linked relative to ``links_from``. A record that is not a finished run's is refused."""
    rows = []
    for files in RunFolder.under(root):
        result = files.read_result()
        if result is None or result["status"] not in COMPLETE:
            raise ReportError(f"{files.folder} holds no finished run's record ({files.json.name} missing, "
                              "unreadable or not finished)")
        rows.append(record_row(result, Path(os.path.relpath(files.folder, links_from)).as_posix()))
    if not rows:
        raise ReportError(f"no run records (<Model>_results.json) under {root}")
    return "\n".join([RECORDS_HEADER, *rows]) + "\n"


def record_row(result: dict, link: str) -> str:
    """A record's row: the final model's test accuracy beside the published one, the verdict by the
    sweep's rule, and what the run cost where."""
    model, error = result["model"], result["final_test_error"]
    paper = published_error(model, dataset_of(result))
    start = result.get("started_from")
    name = model if start is None else f"{model}, fine-tuned from {start['source']}'s weights"
    return (f"| [{link.rsplit('/', 1)[-1]}]({link}/) | {name} | **{100 - error:.2f}%** | "
            f"{'–' if paper is None else f'{100 - paper:.2f}%'} | {verdict(error, paper, verdict_blockers([result]))} | "
            f"{result['epochs_done'] if 'epochs_done' in result else result['epochs']} | {where_it_ran(result)} | "
            f"{result['wall_seconds'] / 60:.1f} min |")


def where_it_ran(result: dict) -> str:
    """Each part's device, precision and whether it ran compiled (and where that stopped), or the
    summary's device where the run has no record of its parts."""
    parts = result.get("provenance", {}).get("parts", [])
    if not parts:
        return f"{result['device']}, {result['settings'].get('precision', '?')}"
    described = []
    for part in parts:
        device = describe_part_device(part["device"])
        if part["device"]["type"] == "cpu":
            device += f" ({plural(part['device']['threads'], 'thread')})" if "threads" in part["device"] else ""
        compiled = "eager" if part.get("compile_mode") is None else f"compiled ({part['compile_mode']})"
        if "compile_failed" in part:
            compiled += f", eager from epoch {part['compile_failed']['epoch']}"
        graph = ", one CUDA graph a step" if part.get("step_graph") == "on" else ""
        described.append(f"{device}, {part['precision']}, {compiled}{graph}")
    return "; then ".join(described)


def with_records_table(text: str, table: str) -> str:
    """``text`` (the README) with its generated table replaced by ``table``."""
    begin, end = text.find(RECORDS_BEGIN), text.find(RECORDS_END)
    if begin < 0 or end < begin:
        raise ReportError(f"no generated table to replace: the README needs the lines {RECORDS_BEGIN!r} and "
                          f"{RECORDS_END!r}, in that order")
    return text[:begin + len(RECORDS_BEGIN)] + "\n" + table + text[end:]
