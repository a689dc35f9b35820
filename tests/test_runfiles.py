"""A run's files: one owner of their names, one table of fields for each format, best.pth as a
second name of a checkpoint, figures drawn without model weights, and run.sh's questions
answered by sweep.py."""

import json
import os
import shutil

import pytest
import torch

import report
import sweep
from cifar_resnet import figures
from cifar_resnet.checkpoints import CHECKPOINT_FIELDS, RunFileError, RunFiles, checked_for_saving, checkpoint_problem
from cifar_resnet.fields import COMPLETE_FIELDS, SUMMARY_FIELDS, summary_problem
from cifar_resnet.runfolder import RunFolder


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
    drawn = figures.draw_run(folder)
    assert sorted(path.name for path in drawn) == sorted(figures.PLOT_NAMES)
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


def test_a_real_run_s_files_hold_exactly_the_fields_of_their_tables(two_epoch_run):
    summary = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    assert summary_problem(summary, every_field_listed=True) is None
    assert set(COMPLETE_FIELDS) <= summary.keys() <= SUMMARY_FIELDS.keys()
    checkpoint = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    assert checkpoint.keys() == CHECKPOINT_FIELDS.keys()
    assert checkpoint_problem(checkpoint, CHECKPOINT_FIELDS) is None
    assert checked_for_saving(checkpoint) is checkpoint


@pytest.mark.parametrize("change,problem", [
    (lambda s: s.update(schedule={"step_count": "all"}), "its 'schedule' is not what train.py writes"),
    (lambda s: s["schedule"].update(step_count=10**12), "its 'schedule' is not what train.py writes"),  # drawn for ever
    (lambda s: s.update(final_test_error=float("nan")), "its 'final_test_error' is not what train.py writes"),
    (lambda s: s.update(status="done"), "its 'status' is not what train.py writes"),
    (lambda s: s["provenance"].update(official_data="yes"), "its 'provenance' is not what train.py writes"),
    (lambda s: s.pop("final_test_error"), "a complete run's summary without 'final_test_error'"),
    (lambda s: s.pop("status"), "not a summary with a status"),
])
def test_every_reader_of_a_summary_refuses_a_field_that_does_not_fit_the_table(two_epoch_run, tmp_path, change,
                                                                             problem):
    folder = tmp_path / "ResNet20"
    shutil.copytree(two_epoch_run, folder)
    summary = json.loads((folder / "ResNet20_results.json").read_text())
    change(summary)
    assert summary_problem(summary) == problem
    (folder / "ResNet20_results.json").write_text(json.dumps(summary))
    assert RunFolder.in_folder(folder).read_result() is None  # the state, the figures and the report all read it so
    assert RunFolder.in_folder(folder).state() == "resumable"  # train.py --resume rewrites it from the checkpoint
    assert summary_problem({**summary, "note": "another version's"}) == problem  # unlisted fields are left alone


def test_the_writers_refuse_what_their_readers_would(two_epoch_run, tmp_path):
    files = RunFolder.of(tmp_path, "ResNet20")
    files.make_writable()
    summary = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    with pytest.raises(ValueError, match="its 'note' is not a field of a summary"):
        files.write_result({**summary, "note": "unlisted"})
    with pytest.raises(ValueError, match="its 'epochs' is not what train.py writes"):
        files.write_result({**summary, "epochs": -1})
    assert not files.json.exists()
    checkpoint = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    with pytest.raises(ValueError, match="unlisted fields"):
        checked_for_saving({**checkpoint, "note": "unlisted"})
    with pytest.raises(ValueError, match="its 'best' is missing or not"):
        checked_for_saving({**checkpoint, "best": {"epoch": "one"}})
