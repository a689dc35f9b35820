"""Reliability: atomic files under SIGKILL, SIGTERM/SIGINT handling, exact resume, divergence, bad input."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from cifar_fixture import run_args
from cifar_resnet import passes, runfolder
from helpers import assert_same_run, read_rows, stopped_by_sigterm, wait_for_epoch_line

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 5


def reference_args(data_dir, results_dir, *extra):
    """train.py arguments of a run like the reference run (EPOCHS epochs, deterministic)."""
    return run_args(data_dir, results_dir, "--epochs", str(EPOCHS), "--deterministic", *extra)


def start_training(data_dir, results_dir, *extra):
    command = [sys.executable, str(ROOT / "train.py"), *reference_args(data_dir, results_dir, *extra)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_only_complete_files(folder):
    """Every artifact present parses, and they agree on how many epochs are done."""
    if not (folder / "ResNet20_last.pth").exists():
        return
    checkpoint = torch.load(folder / "ResNet20_last.pth", weights_only=True)
    assert checkpoint["epoch"] == len(checkpoint["history"]) >= 1
    if (folder / "ResNet20_best.pth").exists():  # linked just after the checkpoint: it may lag, never lead
        assert torch.load(folder / "ResNet20_best.pth", weights_only=True)["epoch"] <= checkpoint["epoch"]
    rows = read_rows(folder)
    # The CSV is written just after the checkpoint: it may lag by the epoch in flight, never lead.
    assert checkpoint["epoch"] - 1 <= len(rows) <= checkpoint["epoch"]
    assert [int(row["epoch"]) for row in rows] == list(range(1, len(rows) + 1))
    assert all(value != "" for row in rows for value in row.values())


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """An uninterrupted deterministic run of EPOCHS epochs."""
    results = tmp_path_factory.mktemp("reference")
    process = start_training(data_dir, results)
    _, error = process.communicate(timeout=300)
    assert process.returncode == 0, error
    return results / "ResNet20"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "result.txt"
    path.write_text("old and complete")

    def crash_halfway(file):
        file.write(b"new but cut sh")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        runfolder.atomic_write(path, crash_halfway)
    assert path.read_text() == "old and complete"
    assert list(tmp_path.iterdir()) == [path]


def crash(data_dir, results_dir, name, count, when, *flags):
    """Run the training under tests/crash_at.py, killed by SIGKILL at the exact point it names."""
    command = [sys.executable, str(ROOT / "tests" / "crash_at.py"), name, str(count), when,
               *reference_args(data_dir, results_dir, *flags)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, (f"no kill at write {count} of *{name} (exit status {done.returncode}): "
                                                + done.stderr[-2000:])


def temporary_files(folder):
    return sorted(path.name for path in folder.rglob("*" + runfolder.TEMPORARY_SUFFIX))


@pytest.mark.slow
def test_sigkill_at_exact_points_of_the_writes_leaves_true_files_and_resume_repeats_the_run(
        data_dir, tmp_path, reference_run):
    folder = tmp_path / "ResNet20"
    # After epoch 1's checkpoint, before best.pth links to it (epoch 1 is always the best so far).
    crash(data_dir, tmp_path, "_last.pth", 1, "after")
    assert torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"] == 1
    assert not (folder / "ResNet20_best.pth").exists() and not (folder / "ResNet20_results.csv").exists()
    assert json.loads((folder / "ResNet20_results.json").read_text())["status"] == "unfinished"
    # Inside epoch 2's CSV write (the resume rewrites the CSV first): the new bytes in a temporary file.
    crash(data_dir, tmp_path, "_results.csv", 2, "during", "--resume")
    leftovers = temporary_files(folder)
    assert len(leftovers) == 1 and leftovers[0].startswith(".ResNet20_results.csv.")
    assert_only_complete_files(folder)
    assert torch.load(folder / "ResNet20_best.pth", weights_only=True)["epoch"] >= 1  # linked by the resume
    assert len(read_rows(folder)) == 1
    # Planted temporary files, one a link to a file outside: the resume deletes them, not what a link points at.
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's")
    (folder / ".ResNet20_last.pth.planted.tmp").write_bytes(b"half a checkpoint")
    (folder / ".ResNet20_results.json.link.tmp").symlink_to(outside)
    # After the last epoch's checkpoint, before its predictions, CSV and summary.
    crash(data_dir, tmp_path, "_last.pth", EPOCHS - 2, "after", "--resume")
    assert outside.read_text() == "not the run's" and temporary_files(folder) == []
    assert torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"] == EPOCHS
    assert_only_complete_files(folder)
    assert len(read_rows(folder)) == EPOCHS - 1
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["status"] == "unfinished" and "final_test_acc" not in result  # the summary lags, never leads
    # The resume trains nothing more: it rebuilds the files from the checkpoint and finishes the run.
    process = start_training(data_dir, tmp_path, "--resume")
    _, error = process.communicate(timeout=300)
    assert process.returncode == 0, error
    assert temporary_files(folder) == []
    assert_same_run(folder, reference_run)
    assert json.loads((folder / "ResNet20_results.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_kill_between_last_and_a_stale_best_is_repaired_by_the_resume(data_dir, tmp_path, monkeypatch):
    """Killed inside the second move of best.pth: last.pth holds a new best epoch, best.pth an older one."""
    crash(data_dir, tmp_path, "_best.pth", 2, "during")
    folder = tmp_path / "ResNet20"
    last = torch.load(folder / "ResNet20_last.pth", weights_only=True)
    assert last["best"]["epoch"] == last["epoch"] > torch.load(folder / "ResNet20_best.pth", weights_only=True)["epoch"]
    monkeypatch.setattr(passes, "train_one_epoch", stopped_by_sigterm)  # the resume's repairs come first
    assert train.main(reference_args(data_dir, tmp_path, "--resume")) == 128 + signal.SIGTERM
    assert torch.load(folder / "ResNet20_best.pth", weights_only=True)["epoch"] == last["epoch"]
    assert temporary_files(folder) == []


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_redraws_and_says_how_to_resume(data_dir, tmp_path, reference_run, signal_number):
    process = start_training(data_dir, tmp_path)
    wait_for_epoch_line(process)
    process.send_signal(signal_number)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 128 + signal_number
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"stopped by {signal.Signals(signal_number).name}" in error
    assert f"--resume --results-dir {tmp_path}" in error
    folder = tmp_path / "ResNet20"
    saved = torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"]
    assert 1 <= saved < EPOCHS and len(read_rows(folder)) == saved
    assert {path.name for path in (folder / "plots").iterdir()} >= {"loss_acc_curves.png", "confusion_matrix.png"}
    if signal_number == signal.SIGTERM:
        resumed = start_training(data_dir, tmp_path, "--resume")
        _, error = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, error
        assert_same_run(folder, reference_run)


@pytest.mark.slow
def test_an_overwrite_stopped_in_its_first_epoch_leaves_nothing_of_the_run_it_replaced(
        data_dir, reference_run, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ResNet20"
    shutil.copytree(reference_run, folder)  # a finished run, with its checkpoints, CSV and figures
    (folder / "notes.txt").write_text("the user's own file")
    monkeypatch.setattr(passes, "train_one_epoch", stopped_by_sigterm)
    assert train.main(run_args(data_dir, tmp_path, "--overwrite", "--epochs", "3", "--lr", "0.05")) == 128 + signal.SIGTERM
    assert sorted(path.name for path in folder.iterdir()) == [".lock", "ResNet20_results.json", "ResNet20_results.txt",
                                                              "notes.txt"]
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert (result["status"], result["epochs_done"], result["settings"]["lr"]) == ("interrupted", 0, 0.05)
    assert "final_test_acc" not in result
    monkeypatch.undo()
    capsys.readouterr()
    assert train.main(run_args(data_dir, tmp_path, "--resume")) == 2  # the old run is gone, not resumed
    assert "holds no checkpoint of ResNet20 to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_keeps_the_last_good_checkpoint_and_says_so(data_dir, tmp_path, monkeypatch, capsys):
    original = passes.train_one_epoch
    calls = []

    def nan_in_second_epoch(*args, **kwargs):
        calls.append(1)
        row = original(*args, **kwargs)
        return {**row, "train_loss": float("nan")} if len(calls) == 2 else row

    monkeypatch.setattr(passes, "train_one_epoch", nan_in_second_epoch)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "3")) == 1
    error = capsys.readouterr().err
    assert "the training loss became nan in epoch 2" in error and "last good epoch (1)" in error
    folder = tmp_path / "ResNet20"
    assert torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"] == 1
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["status"] == "diverged" and result["epochs_done"] == 1
    assert "DIVERGED" in (folder / "ResNet20_results.txt").read_text()


@pytest.mark.slow
def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(data_dir, tmp_path, monkeypatch, capsys):
    """Seen with a run from an H200: a CUDA generator's state (16 bytes: seed and offset) does not
    fit the CPU's generator, and --resume on the CPU refused the checkpoint."""
    save_epoch = train.save_epoch

    def stop_after_the_first_epoch(*args, **kwargs):
        save_epoch(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # StopSignals' handler: the run stops at the next step

    monkeypatch.setattr(train, "save_epoch", stop_after_the_first_epoch)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", "--device", "cpu")) == 128 + signal.SIGTERM
    monkeypatch.undo()
    path = tmp_path / "ResNet20" / "ResNet20_last.pth"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 1
    checkpoint["rng"]["data"] = torch.tensor([7, 390], dtype=torch.int64).view(torch.uint8)  # as CUDA writes it
    checkpoint["args"]["device"] = "cuda:0"
    checkpoint["provenance"][0]["device"] = {"type": "cuda", "name": "NVIDIA H200", "processes": 1}
    torch.save(checkpoint, path)
    capsys.readouterr()
    assert train.main(run_args(data_dir, tmp_path, "--resume", "--device", "cpu")) == 0
    assert "drawn by 1 process(es) on cuda:0, and this run has 1 on cpu" in capsys.readouterr().out
    assert [int(row["epoch"]) for row in read_rows(tmp_path / "ResNet20")] == [1, 2]
    # The record keeps both parts of the run, each with the machine it ran on.
    result = json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())
    first, second = result["provenance"]["parts"]
    assert (first["first_epoch"], first["device"]["name"]) == (1, "NVIDIA H200")
    assert (second["first_epoch"], second["device"]["type"]) == (2, "cpu") and "--resume" in second["command"]
    assert result["provenance"]["device_hours"] == pytest.approx(first["device_hours"] + second["device_hours"])
    assert "parts: epochs 1-1 on NVIDIA H200" in (tmp_path / "ResNet20" / "ResNet20_results.txt").read_text()


def test_a_huge_learning_rate_really_diverges_with_a_clear_message(data_dir, tmp_path, capsys):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", "--lr", "1e12")) == 1
    error = capsys.readouterr().err
    assert "stopped: the training loss became nan in epoch 1; no epoch had finished" in error
    assert json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())["status"] == "diverged"


class RunsCode:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').write('x')",))


def write_malicious_checkpoint(path):
    torch.save({"model": RunsCode(), "args": {"model": "ResNet20"}, "epoch": 1}, path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,make,message",
    [
        (["--model", "ResNet21"], None, "unknown model 'ResNet21'; choose from: ResNet20, ResNet32"),
        (["--epochs", "ten"], None, "argument --epochs: invalid int value: 'ten'"),
        (["--resume", "{tmp}/cut.pth"], lambda tmp, src: (tmp / "cut.pth").write_bytes(src.read_bytes()[:4000]),
         "is not a readable checkpoint"),
        (["--resume", "{tmp}/foreign.pth"], lambda tmp, src: (tmp / "foreign.pth").write_bytes(b"PK\x03\x04 not ours"),
         "is not a readable checkpoint"),
        (["--resume", "{tmp}/evil.pth"], lambda tmp, src: write_malicious_checkpoint(tmp / "evil.pth"),
         "is not a readable checkpoint (UnpicklingError)"),
        (["--evaluate", "{tmp}/evil.pth"], lambda tmp, src: write_malicious_checkpoint(tmp / "evil.pth"),
         "is not a readable checkpoint (UnpicklingError)"),
        (["--results-dir", "{tmp}/a_file/results"], lambda tmp, src: (tmp / "a_file").write_text("x"),
         "cannot write results to"),
        # Found only once the data are read: the results folder must still be untouched.
        (["--val-size", "100000"], None, "--val-size must lie in 0..319"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(data_dir, reference_run, tmp_path, capsys, monkeypatch,
                                                         extra, make, message):
    monkeypatch.chdir(tmp_path)  # where a successful exploit would write 'pwned'
    results = tmp_path / "results"
    shutil.copytree(reference_run, results / "Plain20")  # another model's run in the same results folder
    before = folder_contents(results)
    if make is not None:
        make(tmp_path, reference_run / "ResNet20_last.pth")
    argv = run_args(data_dir, results, "--epochs", "1") + [part.format(tmp=tmp_path) for part in extra]
    assert train.main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert folder_contents(results) == before  # no folder, lock or summary for the failed run
    assert not (tmp_path / "pwned").exists()


def folder_contents(folder):
    return {path.relative_to(folder): path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def test_out_of_gpu_memory_suggests_a_smaller_batch(data_dir, tmp_path, monkeypatch, capsys):
    def no_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(passes, "train_one_epoch", no_memory)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1")) == 2
    error = capsys.readouterr().err
    assert "out of GPU memory with --batch-size 32; try a smaller batch" in error and error.count("\n") == 1
