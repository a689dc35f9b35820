"""What run.sh and slurm.sh ask of Python, so that the sweep's model list, the meaning of a run's
files and the command of each run live in one place.

    python sweep.py defaults          # NAME=VALUE for each of the sweep's variables (MODELS: in training order)
    python sweep.py run MODEL SEED    # the run's state (finished, diverged, resumable or new), its folder, and its
                                      # train.py arguments, NUL-separated: one Python start per run
    python sweep.py slurm [--submit] [--gpus N] [--cpus N] [--mem SIZE] [--time H:MM:SS] [--partition NAME]
                                      # the Slurm job arrays of the sweep (printed, or submitted)
    python sweep.py environment       # RESULTS_DIR/environment/<UTC time>-collect_env.txt and -pip-freeze.txt
    python sweep.py estimate          # each model benchmarked briefly (train.py --benchmark): the projected
                                      # time of every run still to train, and of the whole sweep (./run.sh --estimate)

The sweep's variables (EPOCHS, DATASET, DATA_DIR, RESULTS_DIR, TRAIN_FLAGS, MODELS, SEEDS) are
read from the environment, with the defaults below.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from cifar_resnet.errors import OneLineParser, UsageError
from cifar_resnet.paper import RECIPE, SWEEP_MODELS
from cifar_resnet.runfolder import RunFolder, write_text

DEFAULTS = {"EPOCHS": "164", "DATASET": "cifar10", "DATA_DIR": "data", "RESULTS_DIR": "results", "TRAIN_FLAGS": "",
            "MODELS": " ".join(SWEEP_MODELS), "SEEDS": "0"}
# Slurm requests per model (wall time for the paper's 164 epochs, host memory), about twice the
# seed repository's times on one RTX 4090 (26 min for ResNet-20, 73 min for ResNet-110, 15 h for
# ResNet-1202); ResNet-1202 peaked at 5.76 GiB of GPU memory in bf16 at batch 128 on an H200
# (docs/benchmark.md). The time scales with EPOCHS, never below SLURM_MIN_MINUTES (start-up, compilation).
SLURM_TIME = {"ResNet1202": "36:00:00", "ResNet110": "4:00:00", "Plain110": "4:00:00", "ResNet18": "6:00:00",
              "ResNet34": "8:00:00", "ResNet50": "10:00:00"}
SLURM_MEMORY = {"ResNet1202": "64G"}
SLURM_DEFAULT_TIME, SLURM_DEFAULT_MEMORY = "2:00:00", "32G"
SLURM_MIN_MINUTES = 15
# A preempted task saves, stops, and resumes when run again; its log keeps every part (sbatch's
# default truncates it at each start, so the reason for the stop was lost).
SLURM_REQUEUE = ("--requeue", "--signal=B:TERM@120", "--open-mode=append")
SWEEP_FLAGS = ("--model", "--seed", "--epochs", "--dataset", "--data-dir", "--results-dir")  # set per run by the sweep
MODEL_NAME, WHOLE_NUMBER = r"[A-Za-z][A-Za-z0-9_]*", r"[0-9]+"
USAGE = "usage: python sweep.py defaults | run MODEL SEED | slurm [--submit] [--gpus N] ... | environment | estimate"
# What the sweep's environment snapshot holds: PyTorch's own report of the machine and libraries, and every package.
ENVIRONMENT_COMMANDS = {"collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
                        "pip-freeze": [sys.executable, "-m", "pip", "freeze"]}
ENVIRONMENT_TIMEOUT_SECONDS = 120
ESTIMATE_TIMEOUT_SECONDS = 3600  # one model's benchmark, compilation included (ResNet-1202's takes minutes)


def setting(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def check_variables() -> None:
    """Refuse, before anything is made, a variable that is set but empty (it would silently mean
    the default), and models or seeds that are not names or numbers (a path would put a run's
    folder and log outside RESULTS_DIR)."""
    for name, default in DEFAULTS.items():
        if name != "TRAIN_FLAGS" and name in os.environ and not os.environ[name].strip():
            raise UsageError(f"{name} is set but empty: unset it for the default ({default!r}), or give a value")
    for name, pattern, what in (("MODELS", MODEL_NAME, "a model's name (ResNet56, say)"),
                                ("SEEDS", WHOLE_NUMBER, "a whole number"), ("EPOCHS", WHOLE_NUMBER, "a whole number")):
        for word in setting(name).split():
            if not re.fullmatch(pattern, word):
                raise UsageError(f"{name} holds {word!r}, which is not {what}")


def train_flags() -> list[str]:
    """TRAIN_FLAGS, split as the shell splits words. The flags the sweep sets for each run are
    refused: ``--seed 7`` there would turn every seed's run into one run, counted once per seed."""
    try:
        flags = shlex.split(setting("TRAIN_FLAGS"))
    except ValueError as error:  # an unbalanced quote
        raise UsageError(f"TRAIN_FLAGS cannot be split into words ({error}): {setting('TRAIN_FLAGS')}") from None
    owned = [flag.split("=", 1)[0] for flag in flags if flag.split("=", 1)[0] in SWEEP_FLAGS]
    if owned:
        raise UsageError(f"TRAIN_FLAGS may not hold {owned[0]}: the sweep sets it for each run "
                         "(set MODELS, SEEDS, EPOCHS, DATASET, DATA_DIR or RESULTS_DIR instead)")
    return flags


def run_folder(model: str, seed: str) -> RunFolder:
    return RunFolder.of(Path(setting("RESULTS_DIR")) / f"seed{seed}", model, setting("DATASET"))


def train_arguments(model: str, seed: str) -> list[str]:
    """The train.py arguments of one run of the sweep, as run.sh and slurm.sh run it: a run that
    has started is resumed (--resume also checks that a finished run has the sweep's settings)."""
    command = ["train.py", "--model", model, "--seed", seed, "--epochs", setting("EPOCHS"), "--dataset",
               setting("DATASET"), "--data-dir", setting("DATA_DIR"), "--results-dir",
               str(Path(setting("RESULTS_DIR")) / f"seed{seed}")]
    if run_folder(model, seed).state() != "new":
        command.append("--resume")
    return command + train_flags()


def slurm_options(argv: list[str]) -> argparse.Namespace:
    """What ``sweep.py slurm`` asks of the cluster: resources that fit it, the model's own where not given."""
    parser = OneLineParser(prog="sweep.py slurm", description="The sweep as Slurm job arrays.")
    parser.add_argument("--submit", action="store_true", help="submit the jobs (without it: a dry run)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per task; 0 on a cluster without GPUs (default: 1)")
    parser.add_argument("--cpus", type=int, default=4, help="CPUs per task (default: 4)")
    parser.add_argument("--mem", help=f"memory per task, as sbatch's --mem (default: the model's, {SLURM_DEFAULT_MEMORY} "
                                      "or more)")
    parser.add_argument("--time", help="wall time per task, as sbatch's --time (default: the model's, scaled to EPOCHS)")
    parser.add_argument("--partition", help="the partition to queue in (default: the cluster's)")
    options = parser.parse_args(argv)
    if options.gpus < 0 or options.cpus < 1:
        raise UsageError("sweep.py slurm: --gpus must be 0 or more and --cpus 1 or more")
    return options


def slurm_jobs(options: argparse.Namespace) -> list[list[str]]:
    """One sbatch array per model (one task per seed, its own time and memory), then the report
    once they have all ended."""
    seeds = setting("SEEDS").split()
    log = Path(setting("RESULTS_DIR")) / "slurm"
    partition = [f"--partition={options.partition}"] if options.partition else []
    jobs = [["sbatch", "--parsable", f"--job-name=sweep-{model}", f"--array=0-{len(seeds) - 1}",
             f"--time={options.time or slurm_time(model)}",
             f"--mem={options.mem or SLURM_MEMORY.get(model, SLURM_DEFAULT_MEMORY)}",
             *([f"--gres=gpu:{options.gpus}"] if options.gpus else []), f"--cpus-per-task={options.cpus}", *partition,
             *SLURM_REQUEUE, f"--output={log}/%x-%a.out", "slurm.sh", model] for model in setting("MODELS").split()]
    report = ["sbatch", "--parsable", "--job-name=sweep-report", "--dependency=afterany:{jobs}", *partition,
              f"--output={log}/%x.out", "--wrap",
              f"{os.environ.get('PYTHON', 'python')} report.py --summary {shlex.quote(setting('RESULTS_DIR'))} "
              f"--models {shlex.quote(setting('MODELS'))} --seeds {shlex.quote(setting('SEEDS'))}"]
    return jobs + [report]


def slurm_time(model: str) -> str:
    """The wall time a task of ``model`` asks for: its time for the paper's epochs, scaled to EPOCHS."""
    hours, minutes, _ = map(int, SLURM_TIME.get(model, SLURM_DEFAULT_TIME).split(":"))
    needed = max(SLURM_MIN_MINUTES, math.ceil((60 * hours + minutes) * int(setting("EPOCHS")) / RECIPE["epochs"]))
    return f"{needed // 60}:{needed % 60:02d}:00"


def slurm(options: argparse.Namespace) -> None:
    """Print the sweep's sbatch commands and each task's train.py command; submit them with --submit."""
    *arrays, report = slurm_jobs(options)
    ids = []
    for job in arrays:
        print(shlex.join(job))
        for index, seed in enumerate(setting("SEEDS").split()):
            print(f"  task {index}: python {shlex.join(train_arguments(job[-1], seed))}")
        if options.submit:
            Path(setting("RESULTS_DIR"), "slurm").mkdir(parents=True, exist_ok=True)
            ids.append(submitted(job))
    report = [part.replace("{jobs}", ":".join(ids) or "<the arrays' job ids>") for part in report]
    print(shlex.join(report))
    if options.submit:
        submitted(report)
    else:
        print("(a dry run: nothing was submitted; python sweep.py slurm --submit submits these jobs)")


def submitted(job: list[str]) -> str:
    """Submit ``job``; its id. sbatch's refusal (a resource the cluster does not have) is one line."""
    name = job[2].removeprefix("--job-name=")
    done = subprocess.run(job, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"sbatch refused {name}: {' '.join(done.stderr.split())}")
    job_id = done.stdout.strip().split(";")[0]
    print(f"submitted {name}: job {job_id}")
    return job_id


def snapshot_environment() -> list[Path]:
    """The environment of this sweep, once per sweep (run.sh asks before its first run): files
    named by the UTC time under RESULTS_DIR/environment/, so a later sweep into the same folder
    adds its own and no snapshot claims runs it did not see. Each run's summary also records its
    own versions and device."""
    folder = Path(setting("RESULTS_DIR")) / "environment"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    paths = []
    for name, command in ENVIRONMENT_COMMANDS.items():
        paths.append(folder / f"{stamp}-{name}.txt")
        write_text(paths[-1], f"$ {shlex.join(command)}\n{command_output(command)}")
    return paths


def command_output(command: list[str]) -> str:
    """What ``command`` printed, or why it could not run: a snapshot never stops the sweep."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=ENVIRONMENT_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as error:
        return f"could not run: {error}\n"
    return done.stdout + done.stderr + ("" if done.returncode == 0 else f"(exit status {done.returncode})\n")


def epochs_to_train(model: str, seed: str) -> int:
    """What the sweep's run of ``model`` and ``seed`` has left: none when finished or diverged (the
    sweep skips it), the epochs its summary has not done yet when resumable, else all of them."""
    files = run_folder(model, seed)
    state = files.state()
    if state in ("finished", "diverged"):
        return 0
    result = files.read_result() if state == "resumable" else None
    return max(0, int(setting("EPOCHS")) - (result["epochs_done"] if result else 0))


def benchmark_model(model: str) -> dict:
    """``train.py --benchmark`` of ``model`` at the sweep's settings, in a process of its own (as the
    sweep runs each model; on the first of GPUS), and its numbers; UsageError where it fails."""
    environment = dict(os.environ)
    if os.environ.get("GPUS"):
        environment["CUDA_VISIBLE_DEVICES"] = os.environ["GPUS"].split(",")[0]
    with tempfile.TemporaryDirectory() as folder:
        numbers = Path(folder) / "benchmark.json"
        command = [sys.executable, "train.py", "--model", model, "--benchmark", "--benchmark-json", str(numbers),
                   "--epochs", setting("EPOCHS"), "--dataset", setting("DATASET"), *train_flags()]
        try:
            finished = subprocess.run(command, cwd=Path(__file__).resolve().parent, env=environment, text=True,
                                      capture_output=True, timeout=ESTIMATE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise UsageError(f"the benchmark of {model} took over {ESTIMATE_TIMEOUT_SECONDS} s") from None
        if finished.returncode != 0 or not numbers.is_file():
            reason = (finished.stderr.strip().splitlines() or ["no message"])[-1]
            raise UsageError(f"the benchmark of {model} failed (exit status {finished.returncode}): {reason}")
        return json.loads(numbers.read_text())


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def estimate() -> None:
    """Benchmark each model that has runs left to train, and print what each run and the whole sweep
    will take here: a run is its warm-up (compilation) and its epochs at the measured rates. Each
    model's row is printed as soon as it is measured, so an estimate stopped early keeps them."""
    models = setting("MODELS").split()
    left = {model: [epochs for seed in setting("SEEDS").split() if (epochs := epochs_to_train(model, seed))]
            for model in models}
    to_benchmark = [model for model in models if left[model]]
    print(f"sweep estimate: EPOCHS={setting('EPOCHS')}, DATASET={setting('DATASET')}, SEEDS={setting('SEEDS')!r}, "
          f"TRAIN_FLAGS={setting('TRAIN_FLAGS')!r}")
    if len(to_benchmark) < len(models):
        print(f"nothing left to train of: {' '.join(m for m in models if m not in to_benchmark)} (finished or diverged)")
    if not to_benchmark:
        return
    print("\n| model | train images/s | s per epoch | warm-up s (compilation) | TFLOP/s | runs left | longest run | its runs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    total, longest = 0.0, 0.0
    for number, model in enumerate(to_benchmark, 1):
        print(f"benchmarking {model} ({number} of {len(to_benchmark)}) ...", file=sys.stderr, flush=True)
        numbers = benchmark_model(model)
        runs = [numbers["warmup_seconds"] + epochs * numbers["epoch_seconds"] for epochs in left[model]]
        total, longest = total + sum(runs), max(longest, *runs)
        print(f"| {model} | {numbers['train_images_per_s']:,.0f} | {numbers['epoch_seconds']:.1f} | "
              f"{numbers['warmup_seconds']:.0f} | {numbers['train_tflops']:.2f} | {len(runs)} | "
              f"{duration(max(runs))} | {duration(sum(runs))} |", flush=True)
    graph = "" if numbers["step_graph"] == "off" else f", step graph {numbers['step_graph']}"
    device = f"{numbers['device']}, {numbers['precision']}, {numbers['compilation']}{graph}"
    gpus = len(os.environ["GPUS"].split(",")) if os.environ.get("GPUS") else 1
    print(f"\nmeasured on {device}\nwhole sweep: {duration(total)} one run at a time" + (
        f"; on {gpus} GPUs at a time, about {duration(max(total / gpus, longest))}" if gpus > 1 else ""))


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status 0, or 2 with one line on stderr for a bad question or a bad variable."""
    try:
        return answer(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"sweep.py: error: {error}", file=sys.stderr)
        return 2


def answer(argv: list[str]) -> int:
    check_variables()
    if argv == ["defaults"]:
        print("\n".join(f"{name}={value}" for name, value in DEFAULTS.items()))
    elif len(argv) == 3 and argv[0] == "run" and re.fullmatch(MODEL_NAME, argv[1]) and re.fullmatch(WHOLE_NUMBER, argv[2]):
        files = run_folder(argv[1], argv[2])
        sys.stdout.write("\0".join([files.state(), str(files.folder), *train_arguments(argv[1], argv[2])]) + "\0")
    elif argv[:1] == ["slurm"]:
        slurm(slurm_options(argv[1:]))
    elif argv == ["environment"]:
        print("\n".join(map(str, snapshot_environment())))
    elif argv == ["estimate"]:
        estimate()
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
