"""End-to-end tests of train.py on tiny generated data (CPU)."""

import csv
import json
import re

import pytest
import torch

import train
from cifar_fixture import make_cifar, run_args
from cifar_resnet import passes, recipe
from cifar_resnet.data import CIFAR10
from helpers import interrupt_second_epoch, read_rows
from resnet import MODELS, build_model

COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "train_images_per_s"]


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_run_writes_every_artifact(two_epoch_run):
    names = {path.name for path in two_epoch_run.iterdir()}
    assert names == {"ResNet20_last.pth", "ResNet20_best.pth", "ResNet20_test_predictions.pt", "ResNet20_results.csv",
                     "ResNet20_results.txt", "ResNet20_results.json", "plots", ".lock"}
    rows = read_csv(two_epoch_run / "ResNet20_results.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == COLUMNS
    result = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    assert result["final_test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))
    assert result["parameters"] == 269_722 and result["steps"] == 2 * (320 // 32)
    assert result["best"]["selected_on"] == "test"
    summary = (two_epoch_run / "ResNet20_results.txt").read_text()
    assert f"final test accuracy: {result['final_test_acc']:.2f}%" in summary
    assert "chosen on the test set" in summary


def test_checkpoints_load_with_weights_only_and_hold_the_full_state(two_epoch_run):
    for name in ("ResNet20_last.pth", "ResNet20_best.pth"):
        checkpoint = torch.load(two_epoch_run / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "args", "metrics", "history", "best", "rng"} <= checkpoint.keys()
        assert checkpoint["args"]["model"] == "ResNet20"  # prefixes: test_compiled.py and test_distributed.py
    last = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    assert last["epoch"] == 2 and last["scheduler"]["step_count"] == 20
    model = build_model("ResNet20")
    model.load_state_dict(last["model"])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16 autocast runs on any CPU, fast bf16 or not
def test_training_loss_falls_on_learnable_data(data_dir, tmp_path, precision):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "4", "--milestones", "3", "--precision", precision)) == 0
    losses = [float(row["train_loss"]) for row in read_csv(tmp_path / "ResNet20" / "ResNet20_results.csv")]
    assert losses[-1] < 0.6 * losses[0]
    assert read_json(tmp_path / "ResNet20")["precision"] == precision


@pytest.mark.slow
def test_validation_picks_the_best_checkpoint_and_the_result_stays_the_final_model_s(data_dir, tmp_path, monkeypatch):
    evaluate, val_accuracies = passes.evaluate, iter([90.0, 50.0, 40.0])  # the best on validation: epoch 1

    def validation_best_first(model, loader, runtime):
        loss, accuracy, predictions = evaluate(model, loader, runtime)
        return loss, next(val_accuracies) if len(loader.labels) == 64 else accuracy, predictions

    monkeypatch.setattr(passes, "evaluate", validation_best_first)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "3", "--val-size", "64")) == 0
    folder = tmp_path / "ResNet20"
    rows = read_csv(folder / "ResNet20_results.csv")
    assert list(rows[0]) == COLUMNS[:3] + ["val_loss", "val_acc"] + COLUMNS[3:]
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["best"] == {"epoch": 1, "selected_on": "val", "selected_acc": 90.0}
    assert result["steps"] == 3 * ((320 - 64) // 32)
    assert torch.load(folder / "ResNet20_best.pth", weights_only=True)["epoch"] == 1
    assert torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"] == 3
    # The headline and the stored predictions are the final model's, not the best checkpoint's.
    assert result["final_test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))
    saved = torch.load(folder / "ResNet20_test_predictions.pt", weights_only=True)
    assert saved["epoch"] == 3
    assert 100 * (saved["predictions"] == saved["labels"]).double().mean().item() == pytest.approx(result["final_test_acc"])


@pytest.mark.slow
def test_resume_continues_where_the_run_stopped(data_dir, tmp_path, monkeypatch, two_epoch_run):
    interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.main(run_args(data_dir, tmp_path, "--epochs", "2"))
    monkeypatch.undo()
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", "--resume")) == 0

    resumed = read_csv(tmp_path / "ResNet20" / "ResNet20_results.csv")
    uninterrupted = read_csv(two_epoch_run / "ResNet20_results.csv")
    metrics = ["train_loss", "train_acc", "test_loss", "test_acc", "lr"]
    assert [[row[m] for m in metrics] for row in resumed] == [[row[m] for m in metrics] for row in uninterrupted]
    weights = torch.load(tmp_path / "ResNet20" / "ResNet20_last.pth", weights_only=True)["model"]
    reference = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)["model"]
    assert all(torch.equal(weights[key], reference[key]) for key in reference)


def test_existing_results_are_not_overwritten_silently(data_dir, two_epoch_run, capsys):
    before = (two_epoch_run / "ResNet20_results.csv").read_text()
    assert train.main(run_args(data_dir, two_epoch_run.parent, "--epochs", "1")) == 2
    error = capsys.readouterr().err
    assert "--resume" in error and "--overwrite" in error
    assert (two_epoch_run / "ResNet20_results.csv").read_text() == before


def test_a_log_gets_progress_lines_with_the_time_left(data_dir, tmp_path, monkeypatch, capsys):
    from cifar_resnet import console

    monkeypatch.setattr(console, "LINE_SECONDS", 0.0)  # a line at every step but an epoch's last
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2")) == 0  # stderr is not a terminal here
    pattern = re.compile(r"  epoch (\d)/2, step (\d+)/10: loss \d+\.\d{4}  train \d+\.\d\d%  \d+ img/s  "
                         r"training time left: (\d+:\d\d) of the epoch, (\d+:\d\d) of the run$")
    lines = [pattern.match(line) for line in capsys.readouterr().out.splitlines() if ", step " in line]
    assert [(int(line[1]), int(line[2])) for line in lines] == [(epoch, step) for epoch in (1, 2) for step in range(1, 10)]
    def seconds(clock):
        minutes, seconds = clock.split(":")
        return 60 * int(minutes) + int(seconds)

    assert all(seconds(line[4]) >= seconds(line[3]) for line in lines)  # the run holds the epoch
    assert all(line[3] == line[4] for line in lines if line[1] == "2")  # the last epoch's time left is the run's


@pytest.mark.slow
@pytest.mark.parametrize("redraw_seconds,epochs_drawn", [(train.REDRAW_SECONDS, [2]), (0.0, [1, 2, 2])])
def test_a_long_run_redraws_its_figures_while_it_runs(data_dir, tmp_path, monkeypatch, redraw_seconds, epochs_drawn):
    from cifar_resnet import figures

    drawn, draw_run = [], figures.draw_run
    monkeypatch.setattr(train, "REDRAW_SECONDS", redraw_seconds)
    monkeypatch.setattr(figures, "draw_run", lambda folder: drawn.append(len(read_rows(folder))) or draw_run(folder))
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2")) == 0
    assert drawn == epochs_drawn  # the epochs each drawing showed: the last is the finished run's


def test_a_warm_up_that_scales_to_no_step_says_no_warm_up(data_dir, tmp_path, capsys):
    assert train.main(run_args(data_dir, tmp_path, "--recipe", "modern", "--model", "ResNet20", "--epochs", "1")) == 0
    start = capsys.readouterr().out.splitlines()[0]  # modern's 2.5% of one epoch of 10 steps: no step
    assert "no warm-up" in start and "warm-up 0" not in start and "10 steps an epoch" in start


def test_milestones_default_to_half_and_three_quarters_of_the_epochs():
    assert train.parse_args(["--epochs", "164"]).milestones == [82, 123]
    assert train.parse_args(["--epochs", "10"]).milestones == [5, 7.5]
    assert train.parse_args(["--epochs", "10", "--milestones", "4", "8"]).milestones == [4, 8]


@pytest.mark.slow
def test_warmup_in_a_real_run_ends_and_the_learning_rate_returns(data_dir, tmp_path):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "3", "--milestones", "2.9", "--warmup", "on")) == 0
    rates = [float(row["lr"]) for row in read_csv(tmp_path / "ResNet20" / "ResNet20_results.csv")]
    assert rates[0] == pytest.approx(0.01)
    assert rates[1] == pytest.approx(0.1)


def test_warmup_auto_is_on_for_the_paper_s_deepest_nets_only():
    warming = {name for name in MODELS if recipe.warms_up(train.parse_args(["--model", name]))}
    assert warming == {"ResNet110", "ResNet1202"}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--epochs", "0"], "--epochs must be positive"),
        (["--batch-size", "-1"], "--batch-size must be positive"),
        (["--lr", "0"], "--lr must be positive"),
        (["--lr", "nan"], "--lr must be positive and finite, got nan"),
        (["--lr", "inf"], "--lr must be positive and finite, got inf"),
        (["--gamma", "-1"], "--gamma must be positive and finite, got -1.0"),
        (["--momentum", "-0.9"], "--momentum must be 0 or more and finite, got -0.9"),
        (["--weight-decay=-1e-4"], "--weight-decay must be 0 or more and finite, got -0.0001"),
        (["--seed", str(2**64)], "--seed must lie in 0..18446744073709551615"),
        (["--seed", "-1"], "--seed must lie in 0.."),
        (["--device", "gpu"], "unknown --device 'gpu'"),
        (["--subset", "-5"], "--subset must be 0 (all images) or a number of training images, got -5"),
        (["--subset", "1000"], "--subset asks for 1,000 images of a split that has 320"),
        (["--threads", "0"], "--threads: expected auto or a whole number of threads from 1, got '0'"),
        (["--epochs", "10", "--milestones", "12"], "--milestones must increase and lie strictly between 0 and --epochs"),
        (["--milestones", "100", "50"], "--milestones must increase"),
        (["--milestones", "82", "82"], "--milestones must increase"),
        (["--resume", ""], "--resume takes a checkpoint's path"),
        (["--val-size", "100000"], "--val-size must lie in 0..319, or be a fraction"),
        (["--batch-size", "1000"], "--batch-size 1000 is larger than the training set"),
        (["--model", "Plain20", "--shortcut", "B"], "Plain20 takes no --shortcut option"),
        (["--stem", "imagenet"], "ResNet20 takes no --stem option"),
        (["--resume", "/nonexistent/ResNet20_last.pth"], "no checkpoint at /nonexistent/ResNet20_last.pth"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_status_2(data_dir, tmp_path, capsys, extra, message):
    assert train.main(run_args(data_dir, tmp_path, *extra)) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_corrupted_batch_file_is_named_in_the_error(tmp_path, capsys):
    root = make_cifar(tmp_path / "data")
    (root / CIFAR10.folder / "data_batch_4").write_bytes(b"\x80\x02garbage")
    assert train.main(run_args(root, tmp_path / "results", "--epochs", "1")) == 2
    assert "data_batch_4: not a readable CIFAR-10 file" in capsys.readouterr().err


def test_missing_data_folder_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.utils

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("no internet")))
    assert train.main(run_args(tmp_path / "empty", tmp_path / "results", "--epochs", "1")) == 2
    error = capsys.readouterr().err
    assert "could not" in error or "download failed" in error
    assert "--data-dir" in error


def test_a_checkpoint_of_another_model_is_refused(data_dir, two_epoch_run, tmp_path, capsys):
    foreign = two_epoch_run / "ResNet20_last.pth"
    args = ["--model", "ResNet32", "--batch-size", "32", "--data-dir", str(data_dir), "--results-dir", str(tmp_path),
            "--epochs", "2", "--resume", str(foreign)]
    assert train.main(args) == 2
    assert "holds a ResNet20, not a ResNet32" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(data_dir, tmp_path, capsys):
    assert train.main(run_args(data_dir, tmp_path, "--device", "cuda", "--epochs", "1")) == 2
    assert "no CUDA device" in capsys.readouterr().err


def read_json(folder):
    return json.loads((folder / "ResNet20_results.json").read_text())


@pytest.mark.slow
def test_resume_without_flags_continues_the_run_as_it_was_started(data_dir, tmp_path, monkeypatch):
    from cifar_resnet.errors import RunInterrupted

    original, calls = passes.train_one_epoch, []

    def stop_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RunInterrupted(15)
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "train_one_epoch", stop_in_second_epoch)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "3", "--milestones", "2")) == 143
    folder = tmp_path / "ResNet20"
    interrupted = read_json(folder)
    assert interrupted["status"] == "interrupted" and interrupted["epochs_done"] == 1
    assert "final_test_acc" not in interrupted and "latest_test_acc" in interrupted
    assert "INTERRUPTED: 1 of 3 epochs done, stopped by SIGTERM" in (folder / "ResNet20_results.txt").read_text()
    monkeypatch.setattr(passes, "train_one_epoch", original)
    assert train.main(["--resume", "--results-dir", str(tmp_path), "--data-dir", str(data_dir)]) == 0
    finished = read_json(folder)
    assert finished["status"] == "finished" and finished["epochs_done"] == 3
    assert finished["settings"]["epochs"] == 3 and finished["settings"]["milestones"] == [2.0]
    assert [float(row["lr"]) for row in read_csv(folder / "ResNet20_results.csv")] == [0.1, 0.1, 0.01]


def test_a_finished_run_resumed_changes_nothing_and_other_settings_are_refused(data_dir, two_epoch_run, capsys):
    before = {path.name: path.stat().st_mtime_ns for path in two_epoch_run.iterdir()}
    assert train.main(run_args(data_dir, two_epoch_run.parent, "--resume")) == 0
    assert "this run finished its 2 epochs; nothing to do" in capsys.readouterr().out
    assert train.main(run_args(data_dir, two_epoch_run.parent, "--resume", "--epochs", "4")) == 2
    error = capsys.readouterr().err
    assert "--epochs 4 differs from the run being resumed (2)" in error and error.count("\n") == 1
    assert "a longer run is another run): start a new one (another --results-dir, or --overwrite)" in error
    assert {path.name: path.stat().st_mtime_ns for path in two_epoch_run.iterdir()} == before


def test_the_record_holds_the_values_used_not_auto(two_epoch_run):
    settings = read_json(two_epoch_run)["settings"]
    assert settings["shortcut"] == "A" and settings["warmup"] == "off" and settings["compile"] == "off"
    assert settings["precision"] == "fp32" and settings["device"] == "cpu"
    assert "given" not in settings and "resume" not in settings
    assert read_json(two_epoch_run)["command"].startswith("python train.py --model ResNet20")


def test_help_gives_one_default_per_flag(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    assert "(default: None)" not in capsys.readouterr().out


def test_a_failed_start_leaves_no_results_folder(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("no internet")))
    assert train.main(run_args(tmp_path / "no-such-data", tmp_path / "results", "--epochs", "1")) == 2
    assert not (tmp_path / "results").exists()


def test_data_dir_may_name_the_batches_folder_itself(data_dir, tmp_path):
    assert train.main(run_args(data_dir / CIFAR10.folder, tmp_path, "--epochs", "1")) == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["PreActResNet164", "ResNeXt29_32x4d"])
def test_a_preact_and_a_resnext_net_train_through_train_py(data_dir, tmp_path, model):
    argv = ["--model", model, "--batch-size", "64", "--epochs", "1", "--data-dir", str(data_dir),
            "--results-dir", str(tmp_path)]
    assert train.main(argv) == 0
    result = json.loads((tmp_path / model / f"{model}_results.json").read_text())
    assert result["status"] == "finished" and result["settings"]["shortcut"] is None
