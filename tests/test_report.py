"""Per-run figures and checkpoint evaluation."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import report
import train
from cifar_fixture import run_args
from cifar_resnet import evaluate, figures, recipe, sweep_report
from cifar_resnet.checkpoints import RunFiles
from cifar_resnet.paper import PAPER_ERROR
from helpers import write_fake_run

ROOT = Path(__file__).resolve().parent.parent


def assert_sensible_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 3000 and 300 <= height <= 3000, f"{path.name} is {width} x {height}"


def test_a_run_draws_the_four_figures(two_epoch_run):
    plots = two_epoch_run / "plots"
    assert sorted(path.name for path in plots.iterdir()) == sorted(figures.PLOT_NAMES)
    for name in figures.PLOT_NAMES:
        assert_sensible_png(plots / name)


def test_curves_are_redrawn_from_the_csv_alone(two_epoch_run, tmp_path):
    folder = tmp_path / "ResNet20"
    folder.mkdir()
    shutil.copy(two_epoch_run / "ResNet20_results.csv", folder)
    drawn = figures.draw_run(folder)
    assert sorted(path.name for path in drawn) == ["loss_acc_curves.png", "lr_curve.png"]
    for path in drawn:
        assert_sensible_png(path)


def test_report_command_redraws_every_figure_of_a_results_folder(two_epoch_run, tmp_path, capsys):
    folder = tmp_path / "ResNet20"
    shutil.copytree(two_epoch_run, folder)
    shutil.rmtree(folder / "plots")
    assert report.main([str(folder)]) == 0
    assert sorted(path.name for path in (folder / "plots").iterdir()) == sorted(figures.PLOT_NAMES)
    assert capsys.readouterr().out.count("wrote ") == 4


def test_report_command_on_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "holds no <Model>_results.csv" in capsys.readouterr().err


def test_lr_drops_are_found_between_epochs():
    history = [{"epoch": e, "lr": lr} for e, lr in enumerate([0.01, 0.1, 0.1, 0.01, 0.01, 0.001], 1)]
    assert figures.lr_drop_epochs(history, schedule=None, steps_per_epoch=None) == [3, 5]


def test_confusion_counts_have_true_labels_on_rows():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    counts = figures.confusion_counts(labels, predictions, classes=3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_evaluation_reproduces_the_final_test_accuracy(two_epoch_run, data_dir, capsys):
    result = evaluate.evaluate_checkpoint(train.parse_args(
        ["--evaluate", str(two_epoch_run / "ResNet20_last.pth"), "--data-dir", str(data_dir)]))
    final = json.loads((two_epoch_run / "ResNet20_results.json").read_text())["final_test_acc"]
    assert result["test_acc"] == pytest.approx(final, abs=1e-9)
    # The tiny test set is balanced (10 images a class), so the class accuracies average to the total.
    assert np.mean(list(result["per_class_acc"].values())) == pytest.approx(result["test_acc"])
    out = capsys.readouterr().out
    assert "precision" in out and "f1-score" in out and "most confused (true -> predicted: images)" in out
    table = out.split("per-class accuracy, worst first:\n")[1].split("most confused")[0].splitlines()
    accuracies = [float(line.split()[-1].rstrip("%")) for line in table]
    assert len(table) == 10 and accuracies == sorted(accuracies) and "airplane" in "".join(table)
    assert_sensible_png(two_epoch_run / "plots" / "ResNet20_last_confusion_matrix.png")
    (two_epoch_run / "plots" / "ResNet20_last_confusion_matrix.png").unlink()  # leave the shared run as it was


@pytest.mark.slow
@pytest.mark.parametrize("model,options", [
    ("ResNet20", ["--shortcut", "B"]),  # projection shortcuts: weights option A does not have
    ("ResNet18", ["--stem", "imagenet"]),  # the 7x7 stem and max-pool
    ("ResNet20", ["--normalize", "channel"]),  # the checkpoint's normalisation, not the paper's
])
def test_evaluation_rebuilds_each_model_option_from_its_checkpoint(data_dir, tmp_path, model, options):
    argv = run_args(data_dir, tmp_path, "--epochs", "1", *options)
    argv[argv.index("--model") + 1] = model
    assert train.main(argv) == 0
    folder = tmp_path / model
    result = evaluate.evaluate_checkpoint(train.parse_args(
        ["--evaluate", str(folder / f"{model}_last.pth"), "--data-dir", str(data_dir), "--device", "cpu",
         "--precision", "fp32"]))
    assert result["test_acc"] == pytest.approx(json.loads((folder / f"{model}_results.json").read_text())["final_test_acc"])


def write_foreign_checkpoint(source, path, model):
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["args"]["model"] = model
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    "make,extra,message",
    [
        (None, [], "no checkpoint at"),
        (lambda src, path: path.write_bytes(b"definitely not a checkpoint"), [], "is not a readable checkpoint"),
        (lambda src, path: path.write_bytes(src.read_bytes()[:20000]), [], "is not a readable checkpoint"),
        (lambda src, path: torch.save({"weights": torch.zeros(3)}, path), [], "is not a checkpoint written by train.py"),
        (lambda src, path: write_foreign_checkpoint(src, path, "ResNet32"), [], "its weights do not fit a ResNet32"),
        (lambda src, path: shutil.copy(src, path), ["--model", "ResNet56"], "holds a ResNet20, not a ResNet56"),
    ],
)
def test_evaluating_a_bad_file_is_one_clear_line(two_epoch_run, data_dir, tmp_path, capsys, make, extra, message):
    path = tmp_path / "model.pth"
    if make is not None:
        make(two_epoch_run / "ResNet20_last.pth", path)
    assert train.main(["--evaluate", str(path), "--data-dir", str(data_dir), *extra]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def history_of(losses, test_accs):
    return [{"epoch": epoch, "train_loss": loss, "train_acc": acc - 5, "test_loss": loss, "test_acc": acc, "lr": 0.1,
             "epoch_seconds": 1.0, "train_images_per_s": 1.0}
            for epoch, (loss, acc) in enumerate(zip(losses, test_accs), 1)]


ONE_EPOCH_SCHEDULE = recipe.Schedule(0.1, 10, milestone_steps=[5, 8], gamma=0.1).state_dict() | {"step_count": 10}


def test_a_one_epoch_run_shows_its_points_and_the_drops_inside_the_epoch(tmp_path):
    fig = figures.plot_curves(history_of([1.7], [45.0]), tmp_path / "curves.png", "t", ONE_EPOCH_SCHEDULE, 10)
    for ax in fig.axes:
        data = [line for line in ax.get_lines() if line.get_label() in ("train", "test")]
        assert len(data) == 2 and all(line.get_marker() == "o" for line in data)
        drops = sorted(float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() == ":")
        assert drops == [0.5, 0.8]
        low, high = ax.get_xlim()
        assert low <= 0 and high >= 1  # the drops and the point are on the axes
        assert all(float(tick).is_integer() for tick in ax.get_xticks())


@pytest.mark.parametrize("warmup_steps,expected", [(0, [0.1] * 5 + [0.01] * 3 + [0.001] * 2),
                                                   (3, [0.01] * 3 + [0.1] * 2 + [0.01] * 3 + [0.001] * 2)])
def test_the_lr_figure_draws_every_step_s_rate(tmp_path, warmup_steps, expected):
    schedule = {**ONE_EPOCH_SCHEDULE, "warmup_steps": warmup_steps}
    fig = figures.plot_lr(history_of([1.7], [45.0]), tmp_path / "lr.png", "t", schedule, 10)
    stairs = fig.axes[0].patches[0].get_data()
    assert list(stairs.values) == pytest.approx(expected)
    assert list(stairs.edges) == pytest.approx([step / 10 for step in range(11)])


def test_loss_axes_are_labelled_whatever_the_range(tmp_path):
    wide = figures.plot_curves(history_of([2.3, 1.2, 0.4, 0.1], [30, 50, 70, 80]), tmp_path / "wide.png", "t")
    loss_ax = wide.axes[0]
    low, high = loss_ax.get_ylim()
    labels = {loss_ax.yaxis.get_major_formatter()(tick) for tick in loss_ax.get_yticks() if low <= tick <= high}
    assert loss_ax.get_yscale() == "log" and {"0.2", "0.5", "1", "2"} <= labels
    narrow = figures.plot_curves(history_of([1.7, 1.4, 1.1], [30, 40, 50]), tmp_path / "narrow.png", "t")
    assert narrow.axes[0].get_yscale() == "linear"  # a log axis over 1.1-1.7 would have no label at all


def test_a_run_s_figures_use_its_schedule(two_epoch_run):
    files = RunFiles.in_folder(two_epoch_run)
    schedule, steps_per_epoch = figures.run_schedule(files.read_result())
    assert steps_per_epoch == 10 and schedule["step_count"] == 20 and schedule["milestone_steps"] == [10, 15]


@pytest.mark.slow
def test_report_py_as_a_script_says_in_one_line_that_nothing_finished(tmp_path):
    """Run as a script, report.py is __main__: an error raised in sweep_report.py must still be its
    one-line error (it was a traceback while ReportError lived in report.py, a second class)."""
    (tmp_path / "seed0" / "ResNet20").mkdir(parents=True)
    done = subprocess.run([sys.executable, str(ROOT / "report.py"), "--summary", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"report.py: error: no finished runs (<Model>_results.json) under {tmp_path}\n"


def test_the_preview_labels_each_image_and_frames_the_wrong_ones_in_red(tmp_path):
    images = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    labels, predictions = np.arange(10) % 3, np.arange(10) % 3
    predictions[[1, 7]] = 0  # two wrong: a 1 and a 1 taken for 0
    fig = figures.plot_predictions(images, labels, predictions, ["a", "b", "c"], tmp_path / "p.png", "t", columns=4)
    [ax] = fig.axes
    assert len(ax.images) == 10 and [text.get_text() for text in ax.texts][:3] == ["a", "a\n(true: b)", "c"]
    assert [text.get_color() for text in ax.texts].count("red") == 2
    frames = [patch.get_xy() for patch in ax.patches]
    assert frames == [(1.1, 0.3), (3.1, 1 * figures.PREVIEW_CELL_HEIGHT + 0.3)]  # image 1 (row 0), image 7 (row 1)
    assert fig.texts[0].get_text() == "t: 2 of 10 shown are wrong (red)"


# --------------------------------------------------------------------------------------------
# report.py --records: the README's table of committed run records


def test_the_readme_s_results_table_is_the_one_generated_from_the_committed_records():
    """Nobody types a result into the README: its table is what the records under docs/runs give."""
    readme = (ROOT / "README.md").read_text()
    table = sweep_report.records_table(ROOT / "docs" / "runs", ROOT)
    assert sweep_report.with_records_table(readme, table) == readme
    assert table.count("\n") == 2 + len(list((ROOT / "docs" / "runs").glob("*/*_results.json")))


def keep_record(run_folder, records, name):
    """What a user does to keep a finished run's record: copy its summary JSON, text and CSV."""
    (records / name).mkdir(parents=True)
    for suffix in ("_results.json", "_results.txt", "_results.csv"):
        shutil.copy(run_folder / f"ResNet20{suffix}", records / name)


def test_a_record_s_row_gives_the_final_accuracy_where_it_ran_and_why_it_has_no_verdict(two_epoch_run, tmp_path):
    keep_record(two_epoch_run, tmp_path / "runs", "tiny")
    write_fake_run(tmp_path / "runs" / "paper" / "ResNet20", "ResNet20", 0, PAPER_ERROR["ResNet20"] + 0.3, epochs=164,
                   official=True)
    final = json.loads((two_epoch_run / "ResNet20_results.json").read_text())["final_test_acc"]
    header, rule, paper, tiny = sweep_report.records_table(tmp_path / "runs", tmp_path).splitlines()
    assert header.startswith("| record | model | final test accuracy | Table 6 | verdict |")
    assert tiny.startswith(f"| [tiny](runs/tiny/) | ResNet20 | **{final:.2f}%** | 91.25% | no verdict: not the paper's "
                           "settings (epochs=2, batch_size=32, milestones=[1.0, 1.5]); not the official data | 2 | ")
    assert re.search(r" \(\d+ threads?\), fp32, eager \| \d+\.\d min \|$", tiny)
    assert paper == (f"| [ResNet20](runs/paper/ResNet20/) | ResNet20 | **{100 - PAPER_ERROR['ResNet20'] - 0.3:.2f}%** | "
                     "91.25% | reproduced | 164 | cpu (2 threads), fp32 | 0.0 min |")


def test_report_py_writes_the_table_between_the_readme_s_markers_and_nowhere_else(two_epoch_run, tmp_path, capsys):
    keep_record(two_epoch_run, tmp_path / "runs", "tiny")
    readme = tmp_path / "README.md"
    around = ("# Title\n\n", f"{sweep_report.RECORDS_END}\n\nAfter.\n")
    readme.write_text(around[0] + sweep_report.RECORDS_BEGIN + "\n| a typed row |\n" + around[1])
    assert report.main(["--records", str(tmp_path / "runs"), "--readme", str(readme)]) == 0
    written = readme.read_text()
    table = sweep_report.records_table(tmp_path / "runs", tmp_path)
    assert written == around[0] + sweep_report.RECORDS_BEGIN + "\n" + table + around[1]
    assert "typed" not in written and capsys.readouterr().out == f"wrote {readme}\n"
    assert report.main(["--records", str(tmp_path / "runs")]) == 0  # printed: links from where it runs
    assert "| [tiny](" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("no markers", "no generated table to replace: the README needs the lines"),
    ("unfinished record", "holds no finished run's record"),
    ("no records", "no run records (<Model>_results.json) under"),
    ("not text", "cannot read"),
])
def test_a_records_table_that_cannot_be_made_is_one_line(two_epoch_run, tmp_path, capsys, case, message):
    runs, readme = tmp_path / "runs", tmp_path / "README.md"
    runs.mkdir()
    readme.write_text(f"{sweep_report.RECORDS_BEGIN}\n{sweep_report.RECORDS_END}\n")
    if case != "no records":
        keep_record(two_epoch_run, runs, "tiny")
    if case == "no markers":
        readme.write_text("# A README without the generated table\n")
    if case == "unfinished record":
        summary = json.loads((runs / "tiny" / "ResNet20_results.json").read_text())
        summary.update(status="unfinished", latest_test_acc=summary.pop("final_test_acc"),
                       latest_test_error=summary.pop("final_test_error"))
        (runs / "tiny" / "ResNet20_results.json").write_text(json.dumps(summary))
    if case == "not text":
        readme.write_bytes(b"\xff\xfe" + sweep_report.RECORDS_BEGIN.encode())
    before = readme.read_bytes()
    assert report.main(["--records", str(runs), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report.py: error: ") and message in err and err.count("\n") == 1
    assert readme.read_bytes() == before


def test_where_a_run_ran_names_each_part_s_device_precision_compilation_and_step_graph():
    gpu = {"type": "cuda", "name": "NVIDIA H200", "processes": 1}
    cpu = {"type": "cpu", "name": "Intel(R) Xeon(R) Processor", "threads": 1, "processes": 1}
    parts = [{"device": gpu, "precision": "bf16", "compile_mode": "default", "step_graph": "on"},
             {"device": cpu, "precision": "bf16", "compile_mode": "default", "step_graph": "off (not on CUDA)",
              "compile_failed": {"epoch": 116, "reason": "InductorError: ..."}}]
    assert sweep_report.where_it_ran({"provenance": {"parts": parts}}) == (
        "NVIDIA H200, bf16, compiled (default), one CUDA graph a step; "
        "then Intel(R) Xeon(R) Processor (1 thread), bf16, compiled (default), eager from epoch 116")
