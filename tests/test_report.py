"""Per-run figures and checkpoint evaluation."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import report
import train


def assert_sensible_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 3000 and 300 <= height <= 3000, f"{path.name} is {width} x {height}"


def test_a_run_draws_the_four_figures(two_epoch_run):
    plots = two_epoch_run / "plots"
    assert sorted(path.name for path in plots.iterdir()) == sorted(report.PLOT_NAMES)
    for name in report.PLOT_NAMES:
        assert_sensible_png(plots / name)


def test_curves_are_redrawn_from_the_csv_alone(two_epoch_run, tmp_path):
    folder = tmp_path / "ResNet20"
    folder.mkdir()
    shutil.copy(two_epoch_run / "ResNet20_results.csv", folder)
    drawn = report.draw_run(folder)
    assert sorted(path.name for path in drawn) == ["loss_acc_curves.png", "lr_curve.png"]
    for path in drawn:
        assert_sensible_png(path)


def test_report_command_redraws_every_figure_of_a_results_folder(two_epoch_run, tmp_path, capsys):
    folder = tmp_path / "ResNet20"
    shutil.copytree(two_epoch_run, folder)
    shutil.rmtree(folder / "plots")
    assert report.main([str(folder)]) == 0
    assert sorted(path.name for path in (folder / "plots").iterdir()) == sorted(report.PLOT_NAMES)
    assert capsys.readouterr().out.count("wrote ") == 4


def test_report_command_on_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "holds no <Model>_results.csv" in capsys.readouterr().err


def test_lr_drops_are_found_between_epochs():
    history = [{"epoch": e, "lr": lr} for e, lr in enumerate([0.01, 0.1, 0.1, 0.01, 0.01, 0.001], 1)]
    assert report.lr_drop_epochs(history) == [3, 5]


def test_confusion_counts_have_true_labels_on_rows():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    counts = report.confusion_counts(labels, predictions, classes=3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_evaluation_reproduces_the_final_test_accuracy(two_epoch_run, data_dir, capsys):
    result = evaluate.evaluate_checkpoint(train.parse_args(
        ["--evaluate", str(two_epoch_run / "ResNet20_last.pth"), "--data-dir", str(data_dir)]))
    final = json.loads((two_epoch_run / "ResNet20_results.json").read_text())["final_test_acc"]
    assert result["test_acc"] == pytest.approx(final, abs=1e-9)
    # The tiny test set is balanced (10 images a class), so the class accuracies average to the total.
    assert np.mean(list(result["per_class_acc"].values())) == pytest.approx(result["test_acc"])
    out = capsys.readouterr().out
    assert "per-class accuracy: airplane" in out and "precision" in out and "f1-score" in out
    assert_sensible_png(two_epoch_run / "plots" / "ResNet20_last_confusion_matrix.png")
    (two_epoch_run / "plots" / "ResNet20_last_confusion_matrix.png").unlink()  # leave the shared run as it was


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
