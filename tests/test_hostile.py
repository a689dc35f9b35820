"""Hostile and broken files, concurrent runs and unlucky kills: never a crash, never an overwrite,
one line and exit status 2 for every bad input (issue 11)."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import report
import sweep
import train
from cifar_fixture import make_cifar, run_args, write_pickle
from cifar_resnet import data, fields, settings
from cifar_resnet.checkpoints import RunFiles
from helpers import ONE_THREAD_PER_JOB, TINY_SWEEP, stopped_by_sigterm

ROOT = Path(__file__).resolve().parent.parent


def assert_one_line(capsys, message):
    error = capsys.readouterr().err
    assert message in error, error
    assert error.count("\n") == 1 and "Traceback" not in error


def forged_checkpoint(source, path, change):
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def momentum_of_the_wrong_shape(checkpoint):
    checkpoint["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3)


@pytest.mark.parametrize("change,message", [
    (momentum_of_the_wrong_shape, "the optimizer's state for parameter 0 does not fit it"),
    (lambda c: c["optimizer"]["param_groups"][0].update(momentum="fast"), "the optimizer's momentum is 'fast'"),
    (lambda c: c.update(args=["ResNet20"]), "its 'args' is missing"),
    (lambda c: c.update(history={"epoch": 1}), "its 'history' is missing or not what train.py writes"),
    (lambda c: c["history"][0].update(test_acc="high"), "its 'history' is missing"),
    (lambda c: c.update(normalization={"mean": torch.zeros(3, 32, 32), "std": torch.zeros(1)}),
     "its 'normalization' is missing"),
    (lambda c: c.update(scheduler={"step_count": "ten", "warming_up": False}), "its 'scheduler' is missing"),
    (lambda c: c["rng"].update(data=[1, 2, 3]), "its 'rng' is missing"),
    (lambda c: c["rng"]["mix"].update(internal=[7] * 3), "its 'rng' is missing"),
    (lambda c: c["args"].update(lr="fast"), "the checkpoint's settings are not valid (argument --lr: invalid float"),
    (lambda c: c["args"].update(schedule="evil"), "the checkpoint's settings are not valid (argument --schedule"),
    (lambda c: c["args"].update(mixup=-1.0), "the checkpoint's settings are not valid (--mixup must be between 0 and 100"),
    (lambda c: c["args"].update(cutmix=1e308), "the checkpoint's settings are not valid (--cutmix must be between 0 and 100"),
    (lambda c: c["args"].update(epochs="2"), "the checkpoint's epochs is '2', not what train.py writes"),
    (lambda c: c.update(best={"epoch": -1}), "its 'best' is missing"),
    (lambda c: c.update(epoch=7), "it says 7 epochs are done of 2"),  # "finished, 7 of 2 epochs" otherwise
    (lambda c: c["args"].update(epochs=3) or c.update(epoch=3), "its history has 2 epochs, its epoch says 3"),
    (lambda c: c.update(best={**c["best"], "epoch": 999}), "its best epoch 999 lies beyond its epoch 2"),
    (lambda c: c["history"].reverse(), "its 'history' is missing or not what train.py writes"),  # epochs 2, 1
    (lambda c: c["history"][0].update(test_acc=float("nan")), "its 'history' is missing or not"),
    (lambda c: c.update(wall_seconds=-1.0), "its 'wall_seconds' is missing or not"),
    (lambda c: c["model"]["stem.0.weight"].fill_(float("nan")), "its 'model' is missing or not"),
    (lambda c: c["model"].update({"fc.weight": torch.zeros(3, 3)}), "cannot resume from the checkpoint: RuntimeError"),
    (lambda c: c["test_predictions"]["classes"].__setitem__(0, "cat\x1b[2J"), "its 'test_predictions' is missing"),
    (lambda c: c["provenance"][0]["code"].update(commit="abc\nfinal test accuracy: 99%"),
     "its 'provenance' is not what train.py writes"),
    (lambda c: c["provenance"][0].update(device_hours=float("nan")), "its 'provenance' is not what train.py writes"),
    (lambda c: c["scheduler"].update(step_count=10**12), "its schedule has taken 1000000000000 steps"),
    (lambda c: c["scheduler"].update(step_count=0), "its schedule has taken 0 steps (0 of them warming up), not the 20"),
    (lambda c: c["scheduler"].update(warmup_steps=21), "(21 of them warming up)"),
    (lambda c: c["args"].update(val_size=64, early_stop=1), "its history's validation columns do not match"),
    (lambda c: c.pop("test_predictions"), "its 'test_predictions' is missing"),
    (lambda c: c["provenance"][0].update(first_epoch="one"), "its 'provenance' is not what train.py writes"),
    (lambda c: c["provenance"][0]["data"].update(official="yes"), "its 'provenance' is not what train.py writes"),
    (lambda c: c["provenance"][0].update(code=[[[[["deep"]]]]]), "its 'provenance' is not what train.py writes"),
])
def test_a_forged_checkpoint_is_refused_before_anything_uses_it(two_epoch_run, data_dir, tmp_path, capsys,
                                                               change, message):
    path = forged_checkpoint(two_epoch_run / "ResNet20_last.pth", tmp_path / "forged.pth", change)
    argv = run_args(data_dir, tmp_path / "results", "--resume", str(path))
    assert train.main(argv) == 2
    assert_one_line(capsys, message)


@pytest.mark.parametrize("change,field", [
    (lambda c: c.update(normalization={"mean": "zero"}), "normalization"),
    (lambda c: c["args"].update(shortcut="C"), "args"),
    (lambda c: c["args"].update(seed="zero"), "args"),
    (lambda c: c["model"]["stem.0.weight"].fill_(float("inf")), "model"),
])
def test_evaluate_checks_what_it_uses(two_epoch_run, data_dir, tmp_path, capsys, change, field):
    path = forged_checkpoint(two_epoch_run / "ResNet20_last.pth", tmp_path / "forged.pth", change)
    assert train.main(["--evaluate", str(path), "--data-dir", str(data_dir)]) == 2
    assert_one_line(capsys, f"its {field!r} is missing")


def test_resuming_a_checkpoint_into_another_run_s_folder_is_refused(two_epoch_run, data_dir, tmp_path, capsys):
    target = tmp_path / "results"
    shutil.copytree(two_epoch_run, target / "ResNet20")
    before = {path.name: path.read_bytes() for path in (target / "ResNet20").iterdir() if path.is_file()}
    other = shutil.copy(two_epoch_run / "ResNet20_last.pth", tmp_path / "other.pth")
    argv = run_args(data_dir, target, "--epochs", "3", "--resume", str(other))
    assert train.main(argv) == 2
    assert_one_line(capsys, "already holds a run of ResNet20")
    assert {path.name: path.read_bytes() for path in (target / "ResNet20").iterdir() if path.is_file()} == before


def test_planted_symlinks_are_never_followed(data_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "results" / "ResNet20"
    folder.mkdir(parents=True)
    for name in (".write-test", "ResNet20_results.csv.tmp", "ResNet20_last.pth.tmp", "ResNet20_results.json"):
        (folder / name).symlink_to(victim)
    assert train.main(run_args(data_dir, tmp_path / "results", "--epochs", "1")) == 0
    assert victim.read_text() == "precious"
    assert not (folder / "ResNet20_results.json").is_symlink()  # replaced by the run's own summary
    assert (folder / "ResNet20_results.csv").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_second_run_in_the_same_folder_refuses_naming_the_first(data_dir, tmp_path, capsys):
    files = RunFiles.of(tmp_path, "ResNet20")
    files.make_writable()
    with files.locked():
        assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 2
    assert_one_line(capsys, f"is in use by another run (process {os.getpid()})")
    assert not files.csv.exists()
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 0  # free again once the holder is gone


def test_leftovers_that_are_not_files_are_left_alone(two_epoch_run, data_dir, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(two_epoch_run, results / "ResNet20")
    (results / "ResNet20" / "ResNet20_results.json").unlink()  # as if killed before the summary was written
    (results / "ResNet20" / ".stray.tmp").mkdir()
    (results / "ResNet20" / ".ResNet20_last.pth.a1b2.tmp").write_bytes(b"half a checkpoint")
    assert train.main(run_args(data_dir, results, "--resume")) == 0
    assert (results / "ResNet20" / ".stray.tmp").is_dir()
    assert not (results / "ResNet20" / ".ResNet20_last.pth.a1b2.tmp").exists()


def test_evaluate_where_plots_is_a_file_is_one_line(two_epoch_run, data_dir, tmp_path, capsys):
    checkpoint = shutil.copy(two_epoch_run / "ResNet20_last.pth", tmp_path / "model.pth")
    (tmp_path / "plots").write_text("not a folder")
    assert train.main(["--evaluate", str(checkpoint), "--data-dir", str(data_dir)]) == 2
    assert_one_line(capsys, "cannot write the confusion matrix to")


@pytest.mark.slow
def test_a_closed_standard_output_is_one_line(data_dir, tmp_path):
    command = (f"{sys.executable} train.py {' '.join(run_args(data_dir, tmp_path, '--epochs', '2'))} | head -c 1;"
               " echo \" ${PIPESTATUS[0]}\"")
    finished = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.stdout.endswith(" 2\n"), finished.stdout
    assert "standard output was closed" in finished.stderr and "Traceback" not in finished.stderr


def test_report_leaves_out_a_summary_of_the_wrong_shape(two_epoch_run, tmp_path):
    shutil.copytree(two_epoch_run, tmp_path / "seed0" / "ResNet20")
    shutil.copytree(two_epoch_run, tmp_path / "seed1" / "ResNet20")
    broken = tmp_path / "seed1" / "ResNet20" / "ResNet20_results.json"
    broken.write_text(json.dumps({**json.loads(broken.read_text()), "final_test_error": "low"}))
    assert report.main(["--summary", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "(1) |" in text and f"Unreadable summary, not what train.py writes (left out above): {broken.parent}" in text


def test_a_stop_before_the_first_epoch_does_not_advise_resuming(data_dir, tmp_path, monkeypatch, capsys):
    from cifar_resnet import passes

    monkeypatch.setattr(passes, "train_one_epoch", stopped_by_sigterm)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 128 + signal.SIGTERM
    assert_one_line(capsys, "stopped by SIGTERM before its first epoch finished, so there is nothing to resume: "
                            "run the same command to start it again")
    summary = (tmp_path / "ResNet20" / "ResNet20_results.txt").read_text()
    assert "run the same command to start it again" in summary and "--resume" not in summary


def test_ctrl_c_while_the_data_is_read_is_one_line_and_leaves_no_folder(data_dir, tmp_path, monkeypatch, capsys):
    def interrupted(*_args):
        signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, handled by whatever handler is installed

    monkeypatch.setattr(data, "load_dataset", interrupted)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 128 + signal.SIGINT
    assert_one_line(capsys, "stopped by SIGINT before its first epoch finished")
    assert not (tmp_path / "ResNet20").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


def test_ctrl_c_while_pytorch_loads_is_one_line():
    process = subprocess.Popen([sys.executable, "train.py", "--model", "ResNet20"], cwd=ROOT, stderr=subprocess.PIPE,
                               text=True)
    subprocess.run(["sleep", "0.5"])  # PyTorch's import takes seconds
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert error.count("\n") == 1 and "stopped by SIGINT" in error and "Traceback" not in error


def signal_while_the_figures_are_drawn(monkeypatch, signals):
    from cifar_resnet import figures

    draw_run = figures.draw_run

    def interrupted(folder):
        for _ in range(signals):
            signal.raise_signal(signal.SIGTERM)
        draw_run(folder)

    monkeypatch.setattr(figures, "draw_run", interrupted)


def test_sigterm_while_the_final_figures_are_drawn_says_the_run_finished(data_dir, tmp_path, monkeypatch, capsys):
    signal_while_the_figures_are_drawn(monkeypatch, signals=1)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 0
    assert_one_line(capsys, "SIGTERM came as the run was finishing; it finished")
    assert RunFiles.of(tmp_path, "ResNet20").state() == "finished"


def test_a_second_sigterm_while_the_final_figures_are_drawn_keeps_the_run_resumable(data_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    signal_while_the_figures_are_drawn(monkeypatch, signals=2)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 128 + signal.SIGTERM
    assert_one_line(capsys, "stopped by SIGTERM with 1 finished epoch saved; continue with:")
    monkeypatch.undo()
    assert train.main(run_args(data_dir, tmp_path, "--resume")) == 0
    assert RunFiles.of(tmp_path, "ResNet20").state() == "finished"


def test_non_finite_batchnorm_statistics_are_a_divergence_not_a_good_epoch(data_dir, tmp_path, monkeypatch, capsys):
    from cifar_resnet import passes

    original = passes.train_one_epoch

    def poisoned(train_step, *args, **kwargs):
        row = original(train_step, *args, **kwargs)
        train_step.model.stages[0][0].bn1.running_var.fill_(float("inf"))  # the loss stayed finite
        return row

    monkeypatch.setattr(passes, "train_one_epoch", poisoned)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2")) == 1
    assert_one_line(capsys, "BatchNorm statistics became non-finite in epoch 1; no epoch had finished")
    assert not (tmp_path / "ResNet20" / "ResNet20_last.pth").exists()


def test_gpus_that_pytorch_cannot_see_are_refused(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1", "--device", "auto")) == 2
    assert_one_line(capsys, "CUDA_VISIBLE_DEVICES=7 names GPUs, but PyTorch sees none of them here")
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1", "--device", "cpu")) == 0  # the CPU is meant


def start_training(data_dir, results, *extra):
    command = [sys.executable, "train.py", *run_args(data_dir, results, "--epochs", "20", "--compile", "off", *extra)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, start):
    for line in stream:
        if line.startswith(start):
            return
    raise AssertionError(f"no line starting {start!r}")


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once_with_the_sigterm_status(data_dir, tmp_path):
    process = start_training(data_dir, tmp_path)
    wait_for_line(process.stdout, "epoch 1/")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, error
    assert "stopped by SIGTERM" in error and "Traceback" not in error


@pytest.mark.slow
def test_sigterm_after_resuming_into_a_new_folder_is_clean(data_dir, tmp_path):
    first = start_training(data_dir, tmp_path / "first")
    wait_for_line(first.stdout, "epoch 2/")
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    process = start_training(data_dir, tmp_path / "new", "--resume",
                             str(tmp_path / "first" / "ResNet20" / "ResNet20_last.pth"))
    wait_for_line(process.stdout, "ResNet20:")
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, error
    assert error.count("\n") == 1 and "Traceback" not in error and "2 finished epochs saved" in error
    assert (tmp_path / "new" / "ResNet20" / "plots" / "loss_acc_curves.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("gpus", ["", "0,1"])
def test_a_signal_to_run_sh_stops_its_runs_cleanly_and_nothing_else(data_dir, tmp_path, gpus):
    environment = {**os.environ, **ONE_THREAD_PER_JOB, "MODELS": "ResNet20 Plain20", "SEEDS": "0", "EPOCHS": "20",
                   "DATA_DIR": str(data_dir), "RESULTS_DIR": str(tmp_path), "GPUS": gpus,
                   "TRAIN_FLAGS": TINY_SWEEP["TRAIN_FLAGS"] + " --compile off", "PYTHON": sys.executable}
    sweep = subprocess.Popen(["bash", "run.sh"], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # in this process group: a `kill 0` would hit pytest
    log = tmp_path / "seed0" / "ResNet20" / "train.log"
    deadline = 120
    while not (log.exists() and "epoch 1/" in log.read_text()):
        assert deadline > 0 and sweep.poll() is None, "the sweep never finished an epoch"
        deadline -= 0.2
        subprocess.run(["sleep", "0.2"])
    sweep.send_signal(signal.SIGTERM)
    _, error = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, error
    assert "stopped ResNet20 seed 0" in error and "run.sh: stopped by a signal" in error
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == "", "a train.py outlived run.sh"
    assert "stopped by SIGTERM with" in log.read_text()
    assert RunFiles.of(tmp_path / "seed0", "ResNet20").state() == "resumable"


def test_a_pipe_in_place_of_a_batch_file_is_one_line_not_a_hang(data_dir, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    batch = copy / "cifar-10-batches-py" / "data_batch_3"
    batch.unlink()
    os.mkfifo(batch)  # no writer: reading it would wait for ever
    assert train.main(run_args(copy, tmp_path / "results")) == 2
    assert_one_line(capsys, "data_batch_3: not a regular file")


@pytest.mark.parametrize("name,problem", [("x" * 2_000_000, "over-long"), ("cat\x1b[2J", "an escape code"),
                                          ("bird\nfish", "a newline"), ("", "empty")])
def test_class_names_that_no_figure_or_log_can_show_are_refused(tmp_path, name, problem):
    folder = make_cifar(tmp_path, source=data.CIFAR100) / "cifar-100-python"
    write_pickle(folder / "meta", {"fine_label_names": [name] + [f"class{index}" for index in range(99)]})
    with pytest.raises(data.DataError, match="each 1 to 64 printable characters"):
        data.read_class_names(folder, data.CIFAR100)


def nested_json(path):
    path.write_text("[" * 200_000 + "]" * 200_000)


def link_to_dev_zero(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def link_to_a_summary_elsewhere(path):
    elsewhere = path.parent.parent / "elsewhere.json"
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere)


def impossible_numbers(path):
    path.write_text(json.dumps({**json.loads(path.read_text()), "final_test_error": float("nan")}))


def negative_error(path):
    path.write_text(json.dumps({**json.loads(path.read_text()), "final_test_error": -3.0}))


def escape_code_in_a_setting(path):
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "settings": {**result["settings"], "optimizer": "sgd\x1b[2J"}}))


@pytest.mark.parametrize("break_summary", [nested_json, link_to_dev_zero, link_to_a_summary_elsewhere,
                                           impossible_numbers, negative_error, escape_code_in_a_setting])
def test_a_summary_that_cannot_be_read_safely_is_unreadable_everywhere_and_never_averaged(
        two_epoch_run, tmp_path, capsys, monkeypatch, break_summary):
    for seed in (0, 1):
        shutil.copytree(two_epoch_run, tmp_path / f"seed{seed}" / "ResNet20")
    summary = tmp_path / "seed1" / "ResNet20" / "ResNet20_results.json"
    break_summary(summary)
    assert report.main(["--summary", str(tmp_path)]) == 0  # no hang, no RecursionError
    text = (tmp_path / "summary.md").read_text()
    assert "(1) |" in text and f"Unreadable summary, not what train.py writes (left out above): {summary.parent}" in text
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    capsys.readouterr()
    assert sweep.main(["run", "ResNet20", "1"]) == 0
    assert capsys.readouterr().out.split("\0")[0] == "resumable"  # train.py --resume rewrites it


def test_copies_of_one_run_are_not_averaged_as_independent_seeds(two_epoch_run, tmp_path):
    for copy in ("a", "b", "c", "seed1"):  # the same run, seed 0, three times; and one said to be seed 1
        shutil.copytree(two_epoch_run, tmp_path / copy / "ResNet20")
    summary = tmp_path / "seed1" / "ResNet20" / "ResNet20_results.json"
    result = json.loads(summary.read_text())
    summary.write_text(json.dumps({**result, "settings": {**result["settings"], "seed": 1}}))
    assert report.main(["--summary", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    left_out = [line for line in text.splitlines() if line.startswith("The settings and seed of another run")]
    assert len(left_out) == 3 and "| ResNet20 [" in text and " (1) |" in text  # the seed-1 run alone


def test_a_csv_without_the_columns_the_figures_read_is_one_line(two_epoch_run, tmp_path, capsys):
    folder = tmp_path / "ResNet20"
    shutil.copytree(two_epoch_run, folder)
    (folder / "ResNet20_results.csv").write_text("epoch,train_loss\n1,2.3\n")
    assert report.main([str(folder)]) == 2
    assert_one_line(capsys, "is not a results CSV written by train.py (no 'train_acc' column)")


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["plots", "tensorboard"])
def test_a_run_s_folder_linked_elsewhere_is_replaced_not_followed(data_dir, tmp_path, folder):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loss_acc_curves.png").write_text("the user's own file")
    run = tmp_path / "results" / "ResNet20"
    run.mkdir(parents=True)
    (run / folder).symlink_to(outside)
    assert train.main(run_args(data_dir, tmp_path / "results", "--epochs", "1", "--tensorboard")) == 0
    assert not (run / folder).is_symlink() and any((run / folder).iterdir())
    assert [path.name for path in outside.iterdir()] == ["loss_acc_curves.png"]
    assert (outside / "loss_acc_curves.png").read_text() == "the user's own file"
    (run / "plots").rename(tmp_path / "drawn")
    (run / "plots").symlink_to(outside)
    assert report.main([str(run)]) == 0  # report.py replaces the link the same way
    assert (outside / "loss_acc_curves.png").read_text() == "the user's own file"
    (run / "plots").rename(tmp_path / "redrawn")
    (run / "plots").symlink_to(outside)
    assert train.main(["--evaluate", str(run / "ResNet20_last.pth"), "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    assert (run / "plots" / "ResNet20_last_confusion_matrix.png").is_file()  # and so does --evaluate
    assert [path.name for path in outside.iterdir()] == ["loss_acc_curves.png"]


def test_a_file_where_tensorboard_s_folder_belongs_is_one_line(data_dir, tmp_path, capsys):
    run = tmp_path / "results" / "ResNet20"
    run.mkdir(parents=True)
    (run / "tensorboard").write_text("not a folder")
    assert train.main(run_args(data_dir, tmp_path / "results", "--epochs", "1", "--tensorboard")) == 2
    assert_one_line(capsys, "tensorboard is a file where the run keeps a folder")


def test_cpu_memory_running_out_in_a_benchmark_is_one_line(monkeypatch, capsys):
    from cifar_resnet import benchmark

    monkeypatch.setattr(benchmark.passes, "train_one_epoch", lambda *_args, **_kwargs: torch.empty(1 << 50, dtype=torch.uint8))
    assert train.main(["--model", "ResNet20", "--benchmark", "--compile", "off", "--device", "cpu"]) == 2
    assert_one_line(capsys, "out of CPU memory with --batch-size 128; try a smaller batch")


def test_a_write_that_the_disk_refuses_is_one_line_and_leaves_no_half_file(data_dir, tmp_path, capsys):
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's signal ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, limit[1]))  # as a full disk: a write past 200 KB fails
    try:
        status = train.main(run_args(data_dir, tmp_path, "--epochs", "1"))  # the checkpoint has 1.1 MB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    folder = tmp_path / "ResNet20"
    assert status == 2
    assert_one_line(capsys, f"cannot write {folder / 'ResNet20_last.pth'} (File too large)")
    assert sorted(path.name for path in folder.iterdir()) == [".lock", "ResNet20_results.json", "ResNet20_results.txt"]


@pytest.mark.slow
def test_a_folder_name_that_is_not_utf8_is_reported_as_the_bytes_it_is(two_epoch_run, tmp_path):
    shutil.copytree(two_epoch_run, tmp_path / "seed0" / "ResNet20")
    odd = tmp_path / os.fsdecode(b"seed1\xff") / "ResNet20"
    shutil.copytree(two_epoch_run, odd)
    (odd / "ResNet20_results.json").write_text("{}")  # listed as unreadable, by its name
    assert report.main(["--summary", str(tmp_path)]) == 0
    assert os.fsencode(odd) in (tmp_path / "summary.md").read_bytes()
    strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as standard output is under a UTF-8 locale
    done = subprocess.run([sys.executable, "report.py", odd], cwd=ROOT, env=strict, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"wrote " + os.fsencode(odd) in done.stdout


def test_sync_bn_in_one_process_is_refused_for_a_new_run_only(two_epoch_run, data_dir, tmp_path, capsys):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", "--sync-bn")) == 2
    assert_one_line(capsys, "--sync-bn synchronises BatchNorm over torchrun's processes")
    assert not tmp_path.joinpath("ResNet20").exists()
    started_with_torchrun = forged_checkpoint(two_epoch_run / "ResNet20_last.pth", tmp_path / "sync.pth",
                                              lambda checkpoint: checkpoint["args"].update(sync_bn=True))
    assert train.main(run_args(data_dir, tmp_path, "--resume", str(started_with_torchrun))) == 0
    assert RunFiles.of(tmp_path, "ResNet20").state() == "finished"


@pytest.mark.parametrize("word", ["results\udcff", "two\twords", "it's\nhere", "back\\slash\x1b[2J", "plain name"])
def test_a_recorded_command_reads_back_as_the_same_bytes_in_bash(word):
    assert fields.printable(word).isprintable()
    echoed = subprocess.run(["bash", "-c", f"printf %s {settings.shell_word(word)}"], capture_output=True, check=True)
    assert echoed.stdout == os.fsencode(word)


def test_a_run_in_a_folder_whose_name_does_not_print_records_it_printably(data_dir, tmp_path):
    results = tmp_path / "tab\there\udcff"
    assert train.main(run_args(data_dir, results, "--epochs", "1")) == 0
    result = RunFiles.of(results, "ResNet20").read_result()
    assert result["status"] == "finished"
    assert result["settings"]["results_dir"] == str(tmp_path / "tab\\x09here\\xff")
    assert result["command"].endswith(f"--results-dir $'{tmp_path}/tab\\x09here\\xff' --epochs 1")


def test_a_report_stopped_part_way_leaves_the_old_set_whole_and_no_leftovers(two_epoch_run, tmp_path, monkeypatch,
                                                                           capsys):
    from cifar_resnet import figures

    shutil.copytree(two_epoch_run, tmp_path / "a" / "ResNet20")
    assert report.main(["--summary", str(tmp_path)]) == 0
    names = ("summary.md", "summary.csv", "depth_vs_error.png", "figure6.png", "figure7.png")
    old_set = {name: (tmp_path / name).read_bytes() for name in names}
    summary = shutil.copytree(two_epoch_run, tmp_path / "b" / "ResNet20") / "ResNet20_results.json"
    result = json.loads(summary.read_text())
    summary.write_text(json.dumps({**result, "settings": {**result["settings"], "seed": 1}}))  # a second seed
    (tmp_path / ".summary.md.f00d.tmp").write_text("left by a report killed while it renamed its files")
    monkeypatch.setattr(figures, "plot_figure7", lambda *_args: signal.raise_signal(signal.SIGINT))  # Ctrl-C
    assert report.main(["--summary", str(tmp_path)]) == 128 + signal.SIGINT
    assert_one_line(capsys, "report.py: stopped; every file it was writing is as it was")
    assert {name: (tmp_path / name).read_bytes() for name in names} == old_set
    assert list(tmp_path.glob(".*")) == []
