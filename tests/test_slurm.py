"""The sweep on a real Slurm (issue 28): a private one-node cluster (tests/slurm_cluster.py) runs
`python sweep.py slurm --submit` on tiny data with a failing model among the good ones, requeues a
running task, and trains one run over two tasks of one allocation (srun + torchrun). Skipped, with
the reason, where Slurm's programs are absent; .ci/run installs them."""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_fixture import run_args
from helpers import ONE_THREAD_PER_JOB, TINY_SWEEP, assert_same_run, read_summary
from slurm_cluster import free_port, slurm_cluster, why_not_here

ROOT = Path(__file__).resolve().parent.parent
QUEUE_SECONDS = 300  # for a job to end on the test cluster
pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))]
# What a task asks of the test cluster: no GPU, one of its CPUs, little memory (sweep.py's options).
RESOURCES = ["--gpus", "0", "--cpus", "1", "--mem", "1G", "--time", "0:10:00"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm") / "cluster") as environment:
        yield environment


def sweep_environment(cluster, data_dir, results, models, seeds, **variables):
    return {**os.environ, **cluster, **ONE_THREAD_PER_JOB, **TINY_SWEEP, "DATA_DIR": str(data_dir),
            "RESULTS_DIR": str(results), "MODELS": models, "SEEDS": seeds, "PYTHON": sys.executable, **variables}


def submit(environment) -> dict[str, str]:
    """``python sweep.py slurm --submit``; the job id of each job it submitted, by name."""
    done = subprocess.run([sys.executable, "sweep.py", "slurm", "--submit", *RESOURCES], cwd=ROOT, env=environment,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"^submitted (\S+): job (\d+)$", done.stdout, re.MULTILINE))


def job_fields(environment, job: str) -> list[dict]:
    """scontrol's record of each task of ``job`` (there is no accounting database here)."""
    shown = subprocess.run(["scontrol", "--oneliner", "show", "job", job], env=environment, capture_output=True,
                           text=True, check=True).stdout
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in shown.splitlines()]


def wait_until_ended(environment, *jobs: str) -> None:
    deadline = time.monotonic() + QUEUE_SECONDS
    while any(task["JobState"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")
              for job in jobs for task in job_fields(environment, job)):
        assert time.monotonic() < deadline, f"jobs {jobs} did not end within {QUEUE_SECONDS} s"
        time.sleep(1)


def sweep_command(environment, model: str, seed: str) -> list[str]:
    """The train.py arguments ``sweep.py run`` builds for a run: what run.sh runs, and slurm.sh."""
    answer = subprocess.run([sys.executable, "sweep.py", "run", model, seed], cwd=ROOT, env=environment,
                            capture_output=True, text=True, check=True).stdout
    return [part for part in answer.split("\0")[2:-1] if part != "--resume"]


def test_the_sweep_submitted_to_slurm_finishes_every_run_marks_a_failing_one_and_reports_after_all(
        cluster, data_dir, tmp_path):
    environment = sweep_environment(cluster, data_dir, tmp_path, "ResNet20 Plain20 ResNet21", "0 1")  # no ResNet-21
    jobs = submit(environment)
    assert set(jobs) == {"sweep-ResNet20", "sweep-Plain20", "sweep-ResNet21", "sweep-report"}
    wait_until_ended(environment, *jobs.values())
    tasks = {name: job_fields(environment, jobs[name]) for name in jobs}
    assert [task["JobState"] for name in ("sweep-ResNet20", "sweep-Plain20") for task in tasks[name]] == ["COMPLETED"] * 4
    assert [task["JobState"] for task in tasks["sweep-ResNet21"]] == ["FAILED"] * 2
    assert "unknown model 'ResNet21'" in (tmp_path / "slurm" / "sweep-ResNet21-0.out").read_text()
    report = tasks["sweep-report"][0]  # afterany: it runs once every task has ended, failed ones too
    assert report["JobState"] == "COMPLETED"
    assert report["StartTime"] >= max(task["EndTime"] for name in jobs if name != "sweep-report" for task in tasks[name])
    for model in ("ResNet20", "Plain20"):
        for seed in ("0", "1"):
            summary = json.loads((tmp_path / f"seed{seed}" / model / f"{model}_results.json").read_text())
            assert summary["status"] == "finished"
            assert summary["command"] == "python " + shlex.join(sweep_command(environment, model, seed))  # run.sh's
        assert read_summary(tmp_path / "summary.csv")[model]["runs"] == "2"
    assert "without a finished run (not run, failed, unfinished or diverged): ResNet21 seed 0, ResNet21 seed 1." in (
        tmp_path / "summary.md").read_text()


def test_a_requeued_task_stops_at_a_step_resumes_and_equals_an_uninterrupted_run(cluster, data_dir, tmp_path):
    flags = TINY_SWEEP["TRAIN_FLAGS"] + " --deterministic --compile off"
    environment = sweep_environment(cluster, data_dir, tmp_path / "sweep", "ResNet20", "0", EPOCHS="4",
                                    TRAIN_FLAGS=flags)
    job = submit(environment)["sweep-ResNet20"]
    log = tmp_path / "sweep" / "slurm" / "sweep-ResNet20-0.out"
    deadline = time.monotonic() + QUEUE_SECONDS
    while not (log.exists() and "epoch 1/4" in log.read_text()):
        assert time.monotonic() < deadline, "the task never finished an epoch"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], env=environment, check=True)
    while job_fields(environment, job)[0]["JobState"] != "PENDING":  # stopped, and queued again
        assert time.monotonic() < deadline, "the task was not queued again"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=environment, check=True)  # not in 2 min
    wait_until_ended(environment, job)
    task = job_fields(environment, job)[0]
    assert (task["JobState"], task["Restarts"]) == ("COMPLETED", "1")
    text = log.read_text()  # both parts: sbatch --open-mode=append keeps the first
    assert "stopped by SIGTERM with" in text and "task 0 (ResNet20 seed 0, resumable)" in text
    command = sweep_command(environment, "ResNet20", "0")  # the task's, in another folder, never stopped
    command[command.index("--results-dir") + 1] = str(tmp_path / "uninterrupted")
    subprocess.run([sys.executable, *command], cwd=ROOT, env=environment, capture_output=True, check=True)
    assert_same_run(tmp_path / "sweep" / "seed0" / "ResNet20", tmp_path / "uninterrupted" / "ResNet20")


def test_two_nodes_in_one_allocation_train_as_torchrun_standalone_does(cluster, data_dir, tmp_path):
    """docs/distributed.md's two-node form: srun starts one torchrun per task, which meet by c10d."""
    arguments = run_args(data_dir, tmp_path / "srun", "--epochs", "1", "--compile", "off", "--deterministic")
    rendezvous = f"--rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:{free_port()}"
    command = f"srun {sys.executable} -m torch.distributed.run --nnodes=2 --nproc_per_node=1 {rendezvous} " + shlex.join(
        ["train.py", *arguments])
    environment = {**os.environ, **cluster, **ONE_THREAD_PER_JOB}
    job = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--time=0:10:00",
                          f"--output={tmp_path}/job.out", "--wrap", command], cwd=ROOT, env=environment,
                         capture_output=True, text=True, check=True).stdout.strip()
    standalone = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "train.py", *run_args(data_dir, tmp_path / "standalone", *arguments[-5:])],
                                cwd=ROOT, env=environment, capture_output=True, text=True)
    assert standalone.returncode == 0, standalone.stderr[-2000:]
    wait_until_ended(environment, job)
    assert job_fields(environment, job)[0]["JobState"] == "COMPLETED", (tmp_path / "job.out").read_text()[-2000:]
    assert_same_run(tmp_path / "srun" / "ResNet20", tmp_path / "standalone" / "ResNet20")
    summary = json.loads((tmp_path / "srun" / "ResNet20" / "ResNet20_results.json").read_text())
    assert summary["command"].startswith("torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d")
