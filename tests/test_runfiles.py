"""A run's files: one owner of their names, best.pth as a second name of a checkpoint, figures
drawn without model weights, and run.sh's questions answered by sweep.py."""

import json
import os
import shutil

import pytest
import torch

import report
import sweep
from runfiles import RunFileError, RunFiles


def test_best_is_the_checkpoint_of_its_epoch_not_a_second_serialisation(tmp_path):
    files = RunFiles.of(tmp_path, "ResNet20")
    files.make_writable()
    files.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, is_best=True)
    assert os.path.samefile(files.best, files.last) or files.best.read_bytes() == files.last.read_bytes()
    files.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, is_best=False)
    assert torch.load(files.best, weights_only=True)["epoch"] == 1
    assert torch.load(files.last, weights_only=True)["epoch"] == 2
    assert sorted(path.name for path in tmp_path.joinpath("ResNet20").iterdir()) == ["ResNet20_best.pth",
                                                                                      "ResNet20_last.pth"]


def test_figures_are_drawn_without_the_checkpoints(two_epoch_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(two_epoch_run, folder)
    shutil.rmtree(folder / "plots")
    for checkpoint in folder.glob("*.pth"):
        checkpoint.unlink()
    drawn = report.draw_run(folder)
    assert sorted(path.name for path in drawn) == sorted(report.PLOT_NAMES)
    saved = RunFiles.in_folder(folder).read_predictions()
    assert saved["epoch"] == 2 and len(saved["labels"]) == 100 and saved["sample_images"].shape == (32, 3, 32, 32)
    assert os.path.getsize(folder / "ResNet20_test_predictions.pt") < 200_000  # not the test set's whole storage


@pytest.mark.parametrize("content", [
    b"not a torch file",
    {"epoch": 1, "classes": ["a", "b"], "labels": torch.tensor([0, 5], dtype=torch.uint8),
     "predictions": torch.tensor([0, 1], dtype=torch.uint8), "sample_images": torch.zeros(1, 3, 32, 32, dtype=torch.uint8)},
    {"epoch": 1, "classes": ["a", "b"], "labels": torch.tensor([0, 1]),
     "predictions": torch.tensor([0, 1]), "sample_images": torch.zeros(1, 3, 32, 32)},
])
def test_a_broken_predictions_file_is_one_clear_line_from_report(two_epoch_run, tmp_path, capsys, content):
    folder = tmp_path / "copy"
    shutil.copytree(two_epoch_run, folder)
    target = folder / "ResNet20_test_predictions.pt"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        torch.save(content, target)
    with pytest.raises(RunFileError, match="ResNet20_test_predictions.pt"):
        RunFiles.in_folder(folder).read_predictions()
    assert report.main([str(folder)]) == 2
    error = capsys.readouterr().err
    assert "ResNet20_test_predictions.pt" in error and error.count("\n") == 1


def run_state(model, capsys):
    """What `python sweep.py run MODEL 0` tells run.sh: the state, the folder, the command."""
    assert sweep.main(["run", model, "0"]) == 0
    state, folder, *command = capsys.readouterr().out.split("\0")[:-1]
    assert command[:2] == ["train.py", "--model"] and ("--resume" in command) == (state != "new")
    return state


def test_sweep_run_says_what_run_sh_should_do(two_epoch_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    assert run_state("ResNet20", capsys) == "new"
    folder = tmp_path / "seed0" / "ResNet20"
    shutil.copytree(two_epoch_run, folder)
    assert run_state("ResNet20", capsys) == "finished"
    monkeypatch.setenv("DATASET", "cifar100")
    assert run_state("ResNet20", capsys) == "new"  # a CIFAR-100 run would live elsewhere
    monkeypatch.delenv("DATASET")
    (folder / "ResNet20_results.json").unlink()
    assert run_state("ResNet20", capsys) == "resumable"
    (folder / "ResNet20_results.json").write_text(json.dumps({"status": "diverged"}))
    assert run_state("ResNet20", capsys) == "diverged"  # a result: run.sh skips it
    (folder / "ResNet20_results.json").write_text('{"status": "finis')  # cut short
    assert run_state("ResNet20", capsys) == "resumable"


def test_sweep_prints_run_sh_s_defaults_and_refuses_other_questions(capsys):
    assert sweep.main(["defaults"]) == 0
    defaults = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert tuple(defaults["MODELS"].split()) == sweep.SWEEP_MODELS and defaults["EPOCHS"] == "164"
    assert sweep.main(["status"]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["epoch,train_loss\n1,not-a-number\n", "epoch,train_loss\n"])
def test_a_broken_csv_is_one_clear_line_from_report(tmp_path, capsys, text):
    folder = tmp_path / "ResNet20"
    folder.mkdir()
    (folder / "ResNet20_results.csv").write_text(text)
    assert report.main([str(folder)]) == 2
    error = capsys.readouterr().err
    assert "ResNet20_results.csv" in error and error.count("\n") == 1 and "Traceback" not in error
