"""One run over two processes with torchrun (gloo, CPU, tiny data): what each process sees, that
rank 0 alone writes, signals and dead processes, and resuming with the same or another count."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_fixture import run_args
from cifar_resnet import data
from helpers import assert_same_run, read_rows, wait_for_epoch_line
from resnet import build_model, layer_response_std

pytestmark = pytest.mark.slow  # every test here starts processes or compiles

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(data_dir, results_dir, *extra, wait=True):
    command = [*TORCHRUN, "train.py", *run_args(data_dir, results_dir, "--epochs", str(EPOCHS), "--compile", "off",
                                                "--deterministic", *extra)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        process.out, process.err = process.communicate(timeout=300)
    return process


def workers(process):
    """The train.py processes torchrun started, by rank (their command lines are the same; the pids ascend)."""
    found = subprocess.run(["ps", "--ppid", str(process.pid), "-o", "pid="], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in found.split())


def test_the_processes_slices_are_disjoint_and_make_up_the_one_process_batch(data_dir):
    split = data.load_dataset(data_dir / data.CIFAR10.folder).train
    normalization = data.Normalization.fit("pixel", split.images)

    def labels(shard):
        loader = data.DeviceLoader(split, 32, normalization, torch.device("cpu"), train=True,
                                   generator=torch.Generator().manual_seed(7), shard=shard,
                                   augment_generator=torch.Generator().manual_seed(shard[0] + 100))
        return [batch_labels for _, batch_labels in loader]

    whole, first, second = labels((0, 1)), labels((0, 2)), labels((1, 2))
    assert len(whole) == len(first) == len(second) == 10
    for batch, part0, part1 in zip(whole, first, second):
        assert len(part0) == len(part1) == 16 and torch.equal(torch.cat([part0, part1]), batch)
    with pytest.raises(data.DataError, match="--batch-size 33 .* does not divide among 2 processes"):
        data.DeviceLoader(split, 33, normalization, torch.device("cpu"), train=True,
                          generator=torch.Generator(), shard=(0, 2))


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("ddp")
    process = torchrun(data_dir, results)
    assert process.returncode == 0, process.err[-2000:]
    return results / "ResNet20", process


def test_two_processes_train_one_run_and_rank_0_alone_writes_and_prints(two_process_run, two_epoch_run):
    folder, process = two_process_run
    assert {path.name for path in folder.iterdir()} == {path.name for path in two_epoch_run.iterdir()}
    losses = [float(row["train_loss"]) for row in read_rows(folder)]
    assert len(losses) == EPOCHS and losses[-1] < losses[0]
    assert process.out.count("ResNet20: 269,722 parameters") == 1 and process.out.count("epoch 1/3") == 1
    summary = (folder / "ResNet20_results.txt").read_text()
    assert "x 2 processes" in summary and "command: torchrun --nproc_per_node=2 train.py" in summary
    checkpoint = torch.load(folder / "ResNet20_last.pth", weights_only=True)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert len(checkpoint["rng"]["augment"]) == 2 and not torch.equal(*checkpoint["rng"]["augment"])


@pytest.mark.parametrize("extra,message", [
    (["--batch-size", "33"], "--batch-size 33 (the global batch) does not divide among 2 processes"),
    (["--benchmark"], "--benchmark runs in one process: start it with python, not torchrun"),
])
def test_what_cannot_run_over_two_processes_is_one_line(data_dir, tmp_path, extra, message):
    process = torchrun(data_dir, tmp_path, *extra)
    assert f"train.py: error: {message}" in process.err
    assert process.err.count("train.py: error:") == 1  # rank 0 alone says it


def test_sigterm_to_one_process_stops_both_and_the_resume_repeats_the_run(data_dir, tmp_path, two_process_run):
    process = torchrun(data_dir, tmp_path, wait=False)
    wait_for_epoch_line(process)
    rank1 = workers(process)[-1]
    subprocess.run(["kill", "-TERM", str(rank1)], check=True)
    _, error = process.communicate(timeout=120)
    assert "exitcode  : 143" in error  # each process ends with 128 + SIGTERM
    assert error.count("train.py: stopped by SIGTERM") == 1
    assert "continue with: torchrun --nproc_per_node=2 train.py --model ResNet20 --resume" in error
    folder = tmp_path / "ResNet20"
    saved = torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"]
    assert 1 <= saved < EPOCHS and len(read_rows(folder)) == saved
    shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-copy")
    resumed = torchrun(data_dir, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.err[-2000:]
    assert_same_run(folder, two_process_run[0])
    # The same checkpoint resumes in one process, and says that the result is not bit for bit.
    single = subprocess.run([sys.executable, "train.py", *run_args(data_dir, tmp_path.parent / f"{tmp_path.name}-copy",
                                                                  "--resume", "--compile", "off", "--device", "cpu")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    assert "drawn by 2 process(es) on cpu, and this run has 1 on cpu" in single.stdout


def test_a_process_that_dies_takes_the_other_down_without_a_hang(data_dir, tmp_path):
    process = torchrun(data_dir, tmp_path, wait=False)
    wait_for_epoch_line(process)
    subprocess.run(["kill", "-KILL", str(workers(process)[-1])], check=True)
    start = time.monotonic()
    process.communicate(timeout=120)
    assert process.returncode != 0 and time.monotonic() - start < 60
    assert not workers(process)  # no process of the run is left
    assert torch.load(tmp_path / "ResNet20" / "ResNet20_last.pth", weights_only=True)["epoch"] >= 1


def test_sync_bn_is_refused_off_cuda_and_keeps_figure_7_where_it_runs(data_dir, tmp_path):
    process = torchrun(data_dir, tmp_path, "--sync-bn", "--epochs", "1")
    assert "train.py: error: --sync-bn needs CUDA" in process.err and process.err.count("train.py: error:") == 1
    model = build_model("ResNet20").eval()
    images = torch.randn(8, 3, 32, 32)
    expected = layer_response_std(model, images)
    synchronised = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what --sync-bn trains on a GPU
    assert len(expected) == 19 and layer_response_std(synchronised, images) == pytest.approx(expected)
