"""What a run's records hold, without PyTorch: the CSV's columns, one table of the summary's
fields (SUMMARY_FIELDS, with the checks that the checkpoint's table shares), and the summary and
its provenance as text for people. runfolder.py reads and writes the files; checkpoints.py adds
the fields that are tensors.
"""

from __future__ import annotations

import math
import os
from typing import Optional

MAX_SCHEDULE_STEPS = 10**7  # 150 times the paper's 64k; the lr figure draws each step
STATUSES = ("unfinished", "interrupted", "finished", "early-stopped", "diverged")
COMPLETE = ("finished", "early-stopped")  # the statuses of a run that ended as planned: its result is final
DATASETS = ("cifar10", "cifar100")  # data.SOURCES's names (a test checks), known here without PyTorch
CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
               "epoch_seconds", "train_images_per_s")
REQUIRED_CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")  # what the figures read


# --------------------------------------------------------------------------------------------
# What each field must be (checkpoints.py uses these too)


def plural(count: int, noun: str) -> str:
    """"1 epoch", "2 epochs"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def printable(text: str) -> str:
    """``text`` as a record may hold it: itself where every character prints; else each character
    that does not (a tab, an escape code, a byte of a file name that is not UTF-8) and each backslash
    written as \\xNN and \\\\, as bash's $'...' reads them back."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() and char != "\\" else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(char))  # a name's odd byte: the byte it was


def is_number(value) -> bool:
    """An int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_percent(value) -> bool:
    return is_number(value) and 0 <= value <= 100  # NaN fails the comparison


def _is_amount(value) -> bool:
    """Seconds, device-hours or GiB: finite and not negative."""
    return is_number(value) and 0 <= value < math.inf


def _fits_column(column: str, value) -> bool:
    """Accuracies in 0..100; losses not negative (an evaluation loss may truly be infinite while the
    weights are finite); every other number finite and not negative."""
    if column.endswith("_acc"):
        return is_percent(value)
    if column.endswith("_loss"):
        return is_number(value) and value >= 0  # NaN fails the comparison
    return _is_amount(value)


def is_row(value) -> bool:
    """One epoch's row (csv_row): known columns, an epoch from 1, every number in its column's range."""
    return (isinstance(value, dict) and {"epoch", "test_acc"} <= value.keys() and is_count(value["epoch"])
            and value["epoch"] >= 1
            and all(column in CSV_COLUMNS and _fits_column(column, number) for column, number in value.items()))


def is_history(value) -> bool:
    """Rows of epochs 1, 2, 3, ... in order."""
    return (isinstance(value, list) and all(map(is_row, value))
            and [row["epoch"] for row in value] == list(range(1, len(value) + 1)))


def is_best(value) -> bool:
    return value is None or (isinstance(value, dict) and is_count(value.get("epoch")) and value["epoch"] >= 1
                             and value.get("selected_on") in ("val", "test") and is_percent(value.get("selected_acc")))


def is_plain_data(value, depth: int = 0) -> bool:
    """Whether ``value`` is what JSON holds (printable strings, finite numbers, booleans, None, lists
    and dicts of them), nested no deeper than a run's record."""
    if isinstance(value, str):
        return value.isprintable()  # no newline or escape code to forge a line of the text summary
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, (bool, int)):
        return True
    if depth >= 4:
        return False
    if isinstance(value, list):
        return all(is_plain_data(item, depth + 1) for item in value)
    return isinstance(value, dict) and all(isinstance(key, str) and is_plain_data(item, depth + 1)
                                           for key, item in value.items())


def is_part(value) -> bool:
    """One part of a run's provenance with every field its summary uses (provenance.finish_part)."""
    return (isinstance(value, dict) and is_plain_data(value) and is_count(value.get("first_epoch"))
            and all(isinstance(value.get(key), dict) for key in ("code", "versions", "device", "data"))
            and isinstance(value["data"].get("official"), bool) and isinstance(value["data"].get("name"), str)
            and isinstance(value["code"].get("commit"), str) and isinstance(value["device"].get("type"), str)
            and is_count(value["device"].get("processes"))
            and all(_is_amount(value.get(key)) for key in ("wall_seconds", "device_hours", "peak_memory_gib"))
            and ("compile_failed" not in value or _is_compile_failure(value["compile_failed"]))
            and ("step_graph" not in value or is_text(value["step_graph"])))


def _is_compile_failure(value) -> bool:
    """Where torch.compile failed in a part, which ran eager from then on (provenance.Record.compile_failed)."""
    return isinstance(value, dict) and is_count(value.get("epoch")) and is_text(value.get("reason"))


def is_text(value) -> bool:
    return isinstance(value, str) and value.isprintable()  # no newline or escape code to forge a line with


def _is_counts(value) -> bool:
    return isinstance(value, dict) and all(is_text(key) and is_count(count) for key, count in value.items())


def _is_numbers(value) -> bool:
    return isinstance(value, list) and all(map(is_number, value))


def _is_schedule(value) -> bool:
    """A schedule's state_dict (recipe.Schedule), complete enough to redraw every step's rate, and
    no longer than a figure can draw (one Python call per step)."""
    return (isinstance(value, dict)
            and all(is_count(value.get(key)) for key in ("step_count", "warmup_steps", "total_steps",
                                                         "linear_warmup_steps"))
            and value["warmup_steps"] <= value["step_count"] <= value["total_steps"] <= MAX_SCHEDULE_STEPS
            and is_number(value.get("base_lr")) and isinstance(value.get("cosine"), bool)
            and (value["cosine"] or is_number(value.get("gamma")))
            and isinstance(value.get("milestone_steps"), list) and all(map(is_count, value["milestone_steps"])))


def _is_record(value) -> bool:
    """The summary's provenance (provenance.summary) as far as readers use it: whether every part
    read the official data, and its compute. Its parts are for people (older runs' have fewer fields)."""
    return (isinstance(value, dict) and isinstance(value.get("official_data"), bool)
            and _is_amount(value.get("device_hours"))
            and (value.get("peak_memory_gib") is None or _is_amount(value["peak_memory_gib"]))
            and isinstance(value.get("parts", []), list))


def _is_run_settings(value) -> bool:
    """A run's recorded settings: plain data, with the seed and data set the readers use (the sweep
    compares the rest by value, and shows those that differ)."""
    return (isinstance(value, dict) and is_plain_data(value) and is_count(value.get("seed")) and value["seed"] < 2**64
            and value.get("dataset", "cifar10") in DATASETS)


def is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(char in "0123456789abcdef" for char in value)


def is_start_record(value) -> bool:
    """Where a run's weights started (--init-from): None from scratch, else the checkpoint, its
    SHA-256, its model, whose weights they were (a train.py run, or a publisher's) and the epochs
    they had been trained there."""
    return value is None or (isinstance(value, dict) and all(is_text(value.get(key)) for key in
                                                             ("checkpoint", "model", "source"))
                             and is_sha256(value.get("sha256")) and is_count(value.get("epochs")))


def _is_early_stop(value) -> bool:
    return isinstance(value, dict) and is_count(value.get("epoch")) and is_text(value.get("reason"))


# Every field of a run's summary (<Model>_results.json) and what it must be: train.py writes only
# these (write_result checks), and every reader takes a summary only where each field it holds fits.
SUMMARY_FIELDS = {
    "model": is_text,
    "status": lambda value: value in STATUSES,
    "parameters": is_count,
    # "final_*" for a run that ended as planned (the result), "latest_*" for one that may go on
    **{f"{when}_{name}": is_percent for when in ("final", "latest") for name in ("test_acc", "test_error", "val_acc")},
    "best": is_best,
    "epochs": is_count,
    "epochs_done": is_count,
    "steps": is_count,
    "steps_per_epoch": is_count,
    "images": _is_counts,
    "schedule": _is_schedule,
    "wall_seconds": _is_amount,
    "provenance": _is_record,  # older summaries have none
    "device": is_text,
    "precision": is_text,
    "compiled": lambda value: isinstance(value, bool),
    "compile_mode": lambda value: value is None or is_text(value),
    "eval_compile_mode": lambda value: value is None or is_text(value),  # evaluation's (older summaries have none)
    "step_graph": is_text,  # "on", or "off" and why (older summaries have none)
    "settings": _is_run_settings,
    "command": is_text,
    "layer_response_std": _is_numbers,  # Figure 7's, for a run that ended as planned
    "stopped_by": is_text,  # the status's reasons
    "diverged": is_text,
    "early_stopped": _is_early_stop,
    "started_from": is_start_record,  # older summaries have none
}
# What a summary that says the run ended as planned always holds: the report's numbers.
COMPLETE_FIELDS = ("model", "parameters", "final_test_error", "epochs", "steps_per_epoch", "wall_seconds", "settings")


def summary_problem(result, every_field_listed: bool = False) -> Optional[str]:
    """Why ``result`` is not a summary that train.py writes, or None where it is one: a status, each
    field of SUMMARY_FIELDS it holds as the table says, and COMPLETE_FIELDS once complete. Fields
    the table does not list are left alone (another version's), unless ``every_field_listed``."""
    if not isinstance(result, dict) or "status" not in result:
        return "not a summary with a status"
    for field, value in result.items():
        if field in SUMMARY_FIELDS and not SUMMARY_FIELDS[field](value):
            return f"its {field!r} is not what train.py writes"
        if field not in SUMMARY_FIELDS and every_field_listed:
            return f"its {field!r} is not a field of a summary"
    missing = [field for field in COMPLETE_FIELDS if field not in result]
    if result["status"] in COMPLETE and missing:
        return f"a complete run's summary without {missing[0]!r}"
    return None


# --------------------------------------------------------------------------------------------
# The CSV's rows and the summary as text


def csv_row(metrics: dict) -> dict:
    """An epoch's metrics in CSV order, floats rounded to keep the CSV readable."""
    return {column: round(metrics[column], 6) for column in CSV_COLUMNS if column in metrics}


def summary_text(result: dict) -> str:
    """The summary JSON as a few lines for people; the final model's test accuracy first."""
    lines = [f"model: {result['model']} ({result['parameters']:,} parameters)"]
    if result["status"] == "diverged":
        lines.append(f"DIVERGED: {result['diverged']}")
    elif result["status"] == "early-stopped":
        lines.append(f"EARLY-STOPPED after epoch {result['early_stopped']['epoch']} of {result['epochs']}: "
                     f"{result['early_stopped']['reason']}")
    elif result["status"] != "finished":
        stopped = f", stopped by {result['stopped_by']}" if "stopped_by" in result else ""
        advice = ("continue it with --resume" if result["epochs_done"] else
                  "nothing to resume: if it is not running, run the same command to start it again")
        lines.append(f"{result['status'].upper()}: {result['epochs_done']} of {result['epochs']} epochs done{stopped}; "
                     + advice)
    subset = result["settings"].get("subset")
    if subset:
        lines.append(f"SMOKE RUN (--subset {subset}): {subset:,} training images and a fifth as many test images, "
                     "to see the pipeline work; its accuracy is not a result")
    start = result.get("started_from")
    if start is not None:
        whose = (f"trained {plural(start['epochs'], 'epoch')} by train.py" if start["source"] == "train.py"
                 else f"published by {start['source']}")
        lines.append(f"STARTED FROM WEIGHTS (--init-from): {start['checkpoint']}, a {start['model']} {whose} "
                     f"(sha256 {start['sha256'][:16]}...): fine-tuned, not trained from scratch")
    if "final_test_acc" in result:
        lines.append(f"final test accuracy: {result['final_test_acc']:.2f}%  "
                     f"(test error {100 - result['final_test_acc']:.2f}%)" + ("" if subset else "  <- the result"))
    if "latest_test_acc" in result:
        lines.append(f"test accuracy after epoch {result['epochs_done']}: {result['latest_test_acc']:.2f}%  "
                     "(not a result: the run did not finish)")
    for when in ("final", "latest"):
        if f"{when}_val_acc" in result:
            lines.append(f"{when} validation accuracy: {result[f'{when}_val_acc']:.2f}%")
    best = result["best"]
    if best is not None:
        lines.append(f"best checkpoint: epoch {best['epoch']}, chosen on {best['selected_on']} accuracy "
                     f"{best['selected_acc']:.2f}%"
                     + ("  (chosen on the test set: not an unbiased result)" if best["selected_on"] == "test" else ""))
    lines += [
        f"epochs: {result['epochs_done']} of {result['epochs']} ({plural(result['steps'], 'step')}), "
        f"wall time {result['wall_seconds'] / 60:.1f} min",
        f"device: {result['device']}, precision {result['precision']}",
        *record_lines(result.get("provenance"), result["epochs_done"]),
        f"command: {result['command']}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
    ]
    return "\n".join(lines) + "\n"


def describe_data(data: Optional[dict]) -> str:
    if data is None:
        return "unknown"
    return (f"{data['name']}, the official release (every file's MD5 matches torchvision's)" if data["official"]
            else f"{data['name']} format, NOT the official release (checksums differ from torchvision's): "
                 "not comparable with published numbers")


def describe_code(code: dict) -> str:
    changes = code.get("uncommitted_changes")
    return code["commit"] + (" with uncommitted changes" if changes is True else
                             "" if changes is False else " (uncommitted changes unknown)")


def describe_part_device(device: dict) -> str:
    name = device.get("name", device["type"])
    processes = device["processes"]
    return f"{name}{f' x {processes} processes' if processes > 1 else ''}"


def record_lines(record: Optional[dict], epochs_done: int) -> list[str]:
    """The record of a run (``summary``) as lines of its text summary."""
    parts = record["parts"] if record else []
    if not parts:
        return []
    latest = parts[-1]
    versions = latest["versions"]
    officials = {part["data"]["official"] for part in parts}
    lines = [
        "data: " + (describe_data(latest["data"]) if len(officials) == 1 else
                    "NOT the official release in every part of the run: not comparable with published numbers"),
        "code: " + "; ".join(dict.fromkeys(describe_code(part["code"]) for part in parts)),
        f"versions: python {versions['python']}, torch {versions['torch']}, torchvision {versions['torchvision']}, "
        f"CUDA {versions['cuda'] or '-'}, cuDNN {versions['cudnn'] or '-'}",
        f"compute: {record['device_hours']:.3f} device-hours, peak memory {record['peak_memory_gib']:.2f} GiB",
    ]
    lines += [f"compile: torch.compile failed in epoch {part['compile_failed']['epoch']} "
              f"({part['compile_failed']['reason']}); eager from there" for part in parts if "compile_failed" in part]
    if latest["data"].get("val_split_sha256"):
        lines.append(f"validation split: sha256 {latest['data']['val_split_sha256']}")
    if len(parts) > 1:
        spans = [f"epochs {part['first_epoch']}-{following['first_epoch'] - 1}" for part, following in
                 zip(parts, parts[1:])] + [f"epochs {latest['first_epoch']}-{epochs_done}"]
        lines.append("parts: " + "; ".join(f"{span} on {describe_part_device(part['device'])}, {part.get('precision')}"
                                            for span, part in zip(spans, parts)))
    return lines
