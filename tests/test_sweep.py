"""run.sh and the sweep report (report.py --summary)."""

import csv
import itertools
import json
import os
import shlex
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.text import Text

import report
import sweep as sweep_module
import train
from cifar_resnet import figures, sweep_report, verdict
from cifar_resnet.paper import PAPER_ERROR
from helpers import TINY_SWEEP, read_summary, run_sweep, sweep_environment, write_fake_run

ROOT = Path(__file__).resolve().parent.parent
SWEEP_FILES = ("summary.md", "summary.csv", "depth_vs_error.png", "figure6.png", "figure7.png")
RUN_FILES = ("{m}_last.pth", "{m}_best.pth", "{m}_test_predictions.pt", "{m}_results.csv", "{m}_results.json", "{m}_results.txt", "train.log",
             "plots/confusion_matrix.png", "plots/loss_acc_curves.png", "plots/lr_curve.png", "plots/predictions.png")


@pytest.fixture(scope="module")
def sweep(data_dir, tmp_path_factory):
    """Two models, two seeds, one epoch each, two jobs at a time through the GPUS queue
    (there is no GPU: each job sees CUDA_VISIBLE_DEVICES and runs on the CPU)."""
    results = tmp_path_factory.mktemp("sweep")
    finished = run_sweep(data_dir, results, "ResNet20 Plain20", "0 1", GPUS="0,1")
    assert finished.returncode == 0, finished.stderr
    return results, finished


@pytest.mark.slow
def test_a_tiny_sweep_writes_every_run_and_report_file(sweep):
    results, finished = sweep
    for name in SWEEP_FILES:
        assert (results / name).is_file(), name
    for model in ("ResNet20", "Plain20"):
        for seed in (0, 1):
            for pattern in RUN_FILES:
                assert (results / f"seed{seed}" / model / pattern.format(m=model)).is_file()
    assert "ResNet32" in (results / "summary.md").read_text()  # named as not run yet
    assert finished.stdout.count("train  ") == 4
    # One snapshot of the environment for the sweep, beside the runs.
    [collect_env] = (results / "environment").glob("*-collect_env.txt")
    [freeze] = (results / "environment").glob("*-pip-freeze.txt")
    assert f"PyTorch version: {torch.__version__}" in collect_env.read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in freeze.read_text()  # pip drops the local +cu130


@pytest.mark.slow
def test_summary_numbers_are_those_of_the_runs(sweep, data_dir):
    results, _ = sweep
    summary = read_summary(results / "summary.csv")
    assert list(summary) == ["ResNet20", "Plain20"]
    for row in summary.values():  # 1-epoch runs at batch 32: named, marked, and kept apart from the paper's
        assert "epochs=1" in row["model"] and "batch_size=32" in row["model"] and row["paper_schedule"] == "False"
    text = (results / "summary.md").read_text()
    assert "† Not the paper's recipe" in text
    assert "device cpu (" in text and f"data {data_dir}" in text and "`python train.py --model Plain20 --seed 0" in text
    for model, row in summary.items():
        errors = [json.loads((results / f"seed{s}" / model / f"{model}_results.json").read_text())["final_test_error"]
                  for s in (0, 1)]
        assert float(row["best_error"]) == pytest.approx(min(errors))
        assert float(row["mean_error"]) == pytest.approx(statistics.mean(errors))
        assert float(row["std_error"]) == pytest.approx(statistics.stdev(errors))
        assert row["runs"] == "2" and row["seeds"] == "0 1" and row["parameters"] == "269722"
        # The seeds really differ: each run starts from its own weights and draws its own data order.
        losses = [[line.split(",")[1] for line in (results / f"seed{s}" / model / f"{model}_results.csv").read_text()
                   .splitlines()[1:]] for s in (0, 1)]
        assert losses[0] != losses[1]
    assert float(summary["ResNet20"]["mean_minus_paper"]) == pytest.approx(float(summary["ResNet20"]["mean_error"]) - 8.75)
    assert summary["Plain20"]["paper_error"] == ""


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_resumes_unfinished_ones(sweep, data_dir):
    results, _ = sweep
    finished_json = results / "seed0" / "Plain20" / "Plain20_results.json"
    stamp = finished_json.stat().st_mtime_ns
    interrupted = results / "seed1" / "Plain20" / "Plain20_results.json"
    interrupted.unlink()  # as if the run had been stopped after its last checkpoint
    again = run_sweep(data_dir, results, "Plain20", "0 1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skip   ") == 1 and "skip   Plain20 seed 0: finished" in again.stdout
    assert "resume Plain20 seed 1" in again.stdout
    assert finished_json.stat().st_mtime_ns == stamp
    assert interrupted.is_file()


@pytest.mark.slow
def test_a_finished_run_of_other_settings_stops_the_sweep_instead_of_joining_it(sweep, data_dir, monkeypatch, capsys):
    """The command run.sh would run for it fails (run.sh stops at a failing run: the next test)."""
    results, _ = sweep
    sweep_environment(monkeypatch, data_dir, results)
    monkeypatch.setenv("EPOCHS", "2")
    assert train.main(sweep_module.train_arguments("ResNet20", "0")[1:]) == 2
    assert "--epochs 2 differs from the run being resumed (1)" in capsys.readouterr().err
    assert json.loads((results / "seed0" / "ResNet20" / "ResNet20_results.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_a_diverged_run_is_recorded_and_the_sweep_goes_on_to_the_first_failing_run(data_dir, tmp_path):
    """A divergence is a result, not a failure: run.sh records it, goes on, skips it when run
    again, and the report lists it. Any other failure stops the sweep."""
    failed = run_sweep(data_dir, tmp_path, "ResNet20 NoSuchNet Plain20", "0", TRAIN_FLAGS=TINY_SWEEP["TRAIN_FLAGS"] + " --lr 1e12")
    assert failed.returncode == 1
    assert "DIVERGED ResNet20 seed 0" in failed.stderr and "FAILED ResNet20" not in failed.stderr
    assert "FAILED NoSuchNet seed 0" in failed.stderr and "stopped at the first failing run" in failed.stderr
    assert "unknown model 'NoSuchNet'" in failed.stderr  # the end of its log
    diverged = tmp_path / "seed0" / "ResNet20" / "ResNet20_results.json"
    assert json.loads(diverged.read_text())["status"] == "diverged"
    assert not (tmp_path / "seed0" / "Plain20").exists()
    stamp = diverged.stat().st_mtime_ns
    again = run_sweep(data_dir, tmp_path, "ResNet20 Plain20", "0")  # without the huge rate: still skipped
    assert again.returncode == 0, again.stderr
    assert "skip   ResNet20 seed 0: diverged" in again.stdout and diverged.stat().st_mtime_ns == stamp
    assert "train  Plain20 seed 0" in again.stdout
    assert f"Diverged (left out above): {tmp_path / 'seed0' / 'ResNet20'}." in (tmp_path / "summary.md").read_text()


def test_resnet110_is_compared_with_the_paper_s_mean_of_five_runs(tmp_path):
    for seed, error in enumerate([6.5, 6.7, 6.9, 7.1, 6.3]):
        write_fake_run(tmp_path / f"seed{seed}" / "ResNet110", "ResNet110", seed, error)
    (tmp_path / "stray" / "ResNet56").mkdir(parents=True)
    (tmp_path / "stray" / "ResNet56" / "ResNet56_results.csv").write_text("epoch\n")
    sweep_report.write_sweep_report(tmp_path)
    row = read_summary(tmp_path / "summary.csv")["ResNet110"]
    assert float(row["best_error"]) == pytest.approx(6.3)
    assert float(row["mean_error"]) == pytest.approx(6.7)
    assert float(row["std_error"]) == pytest.approx(statistics.stdev([6.5, 6.7, 6.9, 7.1, 6.3]))
    assert float(row["mean_minus_paper"]) == pytest.approx(6.7 - 6.61)
    assert float(row["mean_wall_minutes"]) == pytest.approx(2.0)
    text = (tmp_path / "summary.md").read_text()
    assert "| ResNet110 | 1,727,962 | 6.43 (6.61±0.16) | 6.30 | 6.70 ± 0.32 (5) | 6.31–7.09 | +0.09 |" in text
    # Student's t for 4 degrees of freedom, from a table: 2.776; these runs have no data record.
    half = 2.776 * statistics.stdev([6.5, 6.7, 6.9, 7.1, 6.3]) / 5 ** 0.5
    assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx((6.7 - half, 6.7 + half), abs=1e-3)
    assert row["verdict"] == "no verdict: data not recorded"
    assert "Unfinished (no summary yet):" in text and "ResNet56" in text
    assert "--recipe modern" not in text  # that project's claims are for its models, not run here


def test_an_interval_never_leaves_the_range_of_an_error():
    assert verdict.confidence_interval([40.0, 99.0]) == (0.0, 100.0)  # t with 1 degree of freedom: 12.7 x the spread
    low, high = verdict.confidence_interval([88.0, 90.0, 99.0])
    assert 0 < low < 88 and high == 100.0


def test_the_verdict_follows_the_rule_fixed_in_advance(tmp_path):
    paper = PAPER_ERROR
    runs = {  # folder: model, seed, final test error, train.py flags, official data
        "seed0/ResNet20": ("ResNet20", 0, paper["ResNet20"] + 0.40, (), True),
        "seed1/ResNet20": ("ResNet20", 1, paper["ResNet20"] + 0.50, (), True),  # mean: 0.45 above
        "seed0/ResNet56": ("ResNet56", 0, paper["ResNet56"] + 0.60, (), True),
        "seed0/ResNet32": ("ResNet32", 0, paper["ResNet32"] - 0.70, (), True),
        "seed0/ResNet44": ("ResNet44", 0, paper["ResNet44"], (), False),
        "lr/ResNet20": ("ResNet20", 0, paper["ResNet20"], ("--lr", "0.05"), True),
        "bf16/ResNet20": ("ResNet20", 2, paper["ResNet20"] + 0.45, ("--precision", "bf16"), True),
        "fine-tuned/ResNet20": ("ResNet20", 3, paper["ResNet20"] - 1.0, ("--init-from", "imported/R20.pth"), True),
    }
    for folder, (model, seed, error, flags, official) in runs.items():
        write_fake_run(tmp_path / folder, model, seed, error, flags=flags, official=official)
    sweep_report.write_sweep_report(tmp_path)
    with open(tmp_path / "summary.csv", newline="") as file:
        verdicts = {row["model"]: row for row in csv.DictReader(file)}
    assert verdicts["ResNet20"]["verdict"] == "reproduced" and verdicts["ResNet20"]["runs"] == "2"
    # Two runs: Student's t for 1 degree of freedom, from a table: 12.706.
    half = 12.706 * statistics.stdev([0.40, 0.50]) / 2 ** 0.5
    low, high = float(verdicts["ResNet20"]["ci95_low"]), float(verdicts["ResNet20"]["ci95_high"])
    assert (low, high) == pytest.approx((paper["ResNet20"] + 0.45 - half, paper["ResNet20"] + 0.45 + half), abs=1e-3)
    assert verdicts["ResNet56"]["verdict"] == "worse than the paper"
    assert verdicts["ResNet32"]["verdict"] == "better than the paper"
    assert verdicts["ResNet44 [data=not official]"]["verdict"] == "no verdict: not the official data"
    assert verdicts["ResNet20 [lr=0.05]"]["verdict"].startswith("no verdict: not the paper's settings (lr=0.05")
    assert verdicts["ResNet20 [precision=bf16]"]["verdict"] == "reproduced"  # precision: a listed difference
    fine_tuned = verdicts["ResNet20 [init_from=imported/R20.pth]"]  # not trained from scratch: never set beside the paper
    assert fine_tuned["verdict"].startswith("no verdict: not the paper's settings (init_from=imported/R20.pth")
    assert fine_tuned["paper_schedule"] == "False"
    text = (tmp_path / "summary.md").read_text()
    assert verdict.RULE in text and "± is the sample standard deviation" in text
    assert "Total compute of these runs: 2.00 device-hours." in text  # 0.25 for each of the eight runs


def test_summary_of_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    assert report.main(["--summary", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_sweep_figures_give_each_model_one_colour_and_explain_their_line_styles(tmp_path):
    write_fake_run(tmp_path / "seed0" / "ResNet20", "ResNet20", 0, 8.0)
    write_fake_run(tmp_path / "seed0" / "Plain20", "Plain20", 0, 9.0)
    runs = sweep_report.runs_by_model(sweep_report.find_runs(tmp_path).finished)
    figure6 = figures.plot_figure6(runs, tmp_path / "figure6.png")
    figure7 = figures.plot_figure7(runs, tmp_path / "figure7.png")
    depth = figures.plot_depth_vs_error(runs, tmp_path / "depth.png")

    def colours(fig):
        return {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()
                if line.get_label() in ("ResNet20", "Plain20")}

    assert colours(figure6) == colours(figure7) and colours(figure6)["ResNet20"] != colours(figure6)["Plain20"]
    means = {line.get_label().split(",")[0]: (line.get_color(), line.get_linestyle()) for line in depth.axes[0].get_lines()
             if "ours" in line.get_label()}
    assert means["ResNets"][0] != means["plain nets"][0] and means["ResNets"][1] != means["plain nets"][1]
    dots = [to_hex(collection.get_facecolor()[0]) for collection in depth.axes[0].collections]
    assert sorted(dots) == sorted(to_hex(colour) for colour, _ in (means["ResNets"], means["plain nets"]))
    assert all(text.get_fontsize() >= 9 for text in depth.axes[0].get_legend().get_texts())
    legend = [text.get_text() for text in figure6.axes[1].get_legend().get_texts()]
    assert "dashed: training error" in legend and "bold: test error" in legend
    assert all(ax.get_yscale() == "log" for ax in figure7.axes)
    assert all(line.get_marker() == "o" for ax in figure6.axes for line in ax.get_lines())  # 2 epochs: few points


def test_a_smoke_run_on_a_subset_is_marked_and_never_gets_a_verdict(data_dir, tmp_path):
    assert train.main(["--subset", "100", "--batch-size", "25", "--epochs", "1", "--model", "ResNet20", "--precision",
                       "fp32", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "seed0")]) == 0
    run = json.loads((tmp_path / "seed0" / "ResNet20" / "ResNet20_results.json").read_text())
    assert run["settings"]["subset"] == 100 and (run["images"]["train"], run["images"]["test"]) == (100, 20)
    text = (tmp_path / "seed0" / "ResNet20" / "ResNet20_results.txt").read_text()
    assert "SMOKE RUN (--subset 100)" in text and "<- the result" not in text
    sweep_report.write_sweep_report(tmp_path)
    row = read_summary(tmp_path / "summary.csv")["ResNet20"]
    assert row["verdict"].startswith("no verdict: not the paper's settings") and "subset=100" in row["verdict"]


def test_a_caveat_collides_with_no_title_label_legend_or_panel(tmp_path):
    write_fake_run(tmp_path / "seed0" / "ResNet20", "ResNet20", 0, 8.0)
    write_fake_run(tmp_path / "seed0" / "Plain20", "Plain20", 0, 9.0)
    runs = sweep_report.runs_by_model(sweep_report.find_runs(tmp_path).finished)
    caveat = "\n".join(["† not at the paper's recipe (see summary.md): not comparable with the paper's numbers",
                        "some runs read other files than the official CIFAR ones (see summary.md)", "a third line"])
    for plot in (figures.plot_figure6, figures.plot_depth_vs_error, figures.plot_figure7):
        fig = plot(runs, tmp_path / "figure.png", caveat=caveat)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ticks = {id(label) for ax in fig.axes for label in ax.get_xticklabels(which="both") + ax.get_yticklabels(which="both")}
        texts = [text for text in fig.findobj(Text) if text.get_visible() and text.get_text() and id(text) not in ticks]
        boxes = {text.get_text(): text.get_window_extent(renderer) for text in texts}
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if boxes[a].overlaps(boxes[b])], plot.__name__
        panels = [ax.get_window_extent(renderer) for ax in fig.axes]
        assert not any(text.get_window_extent(renderer).overlaps(panel) for text in fig.texts for panel in panels)
        assert caveat in [text.get_text() for text in fig.texts]  # the figure's own line, under the panels


def test_other_papers_numbers_are_named_with_their_source(tmp_path):
    write_fake_run(tmp_path / "seed0" / "PreActResNet164", "PreActResNet164", 0, 5.5)
    sweep_report.write_sweep_report(tmp_path)
    row = read_summary(tmp_path / "summary.csv")["PreActResNet164"]
    assert float(row["paper_error"]) == 5.46 and float(row["mean_minus_paper"]) == pytest.approx(0.04)
    text = (tmp_path / "summary.md").read_text()
    assert "| PreActResNet164 | 1,727,962 | 5.46 (He et al. 2016b) |" in text
    assert "The PreActResNet project behind `--recipe modern` claims about 95% accuracy" in text and "(claims only)" in text


@pytest.mark.slow
def test_run_sh_runs_exactly_the_commands_sweep_py_builds(sweep, data_dir, monkeypatch):
    results, _ = sweep
    sweep_environment(monkeypatch, data_dir, results)
    for model in ("ResNet20", "Plain20"):
        for seed in ("0", "1"):
            recorded = json.loads((results / f"seed{seed}" / model / f"{model}_results.json").read_text())["command"]
            built = sweep_module.train_arguments(model, seed)
            assert "--resume" in built  # the run exists now: the sweep would resume (and check) it
            # (an earlier test resumes some of these runs: their record then has --resume too)
            assert recorded.replace(" --resume", "") == "python " + " ".join(part for part in built if part != "--resume")


@pytest.mark.slow
def test_the_slurm_dry_run_gives_each_model_an_array_and_each_task_run_sh_s_command(sweep, data_dir, monkeypatch,
                                                                                      capsys):
    results, _ = sweep
    sweep_environment(monkeypatch, data_dir, results)
    monkeypatch.setenv("MODELS", "ResNet20 ResNet1202")
    assert sweep_module.main(["slurm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    arrays = [line for line in lines if line.startswith("sbatch") and "slurm.sh" in line]
    assert [line.split()[-1] for line in arrays] == ["ResNet20", "ResNet1202"]
    assert all("--array=0-1" in line and "--requeue" in line and "--signal=B:TERM@120" in line for line in arrays)
    assert "--time=0:15:00 --mem=64G" in arrays[1] and "--time=0:15:00" in arrays[0]  # one epoch: the minimum
    tasks = [line.strip() for line in lines if line.startswith("  task")]
    assert tasks[0] == "task 0: python " + shlex.join(sweep_module.train_arguments("ResNet20", "0"))
    assert tasks[3] == "task 1: python " + shlex.join(sweep_module.train_arguments("ResNet1202", "1"))
    assert "--resume" not in tasks[3] and "--resume" in tasks[0]  # ResNet1202 has not run here
    assert lines[-2].startswith("sbatch --parsable --job-name=sweep-report") and "report.py --summary" in lines[-2]
    assert lines[-1] == "(a dry run: nothing was submitted; python sweep.py slurm --submit submits these jobs)"


def test_slurm_resources_fit_the_cluster_and_a_cpu_only_one_gets_no_gpu_request():
    options = sweep_module.slurm_options(["--gpus", "0", "--cpus", "2", "--mem", "8G", "--time", "1:00:00",
                                          "--partition", "cpu"])
    *arrays, report = sweep_module.slurm_jobs(options)
    assert not any(part.startswith("--gres") for job in arrays for part in job)
    assert all({"--cpus-per-task=2", "--mem=8G", "--time=1:00:00", "--partition=cpu", "--open-mode=append"} <= set(job)
               for job in arrays)
    assert "--partition=cpu" in report and "--gres=gpu:1" in sweep_module.slurm_jobs(sweep_module.slurm_options([]))[0]
    with pytest.raises(sweep_module.UsageError, match="--gpus must be 0 or more"):
        sweep_module.slurm_options(["--gpus", "-1"])


def test_the_report_names_each_run_of_the_sweep_that_did_not_finish(tmp_path):
    write_fake_run(tmp_path / "seed0" / "ResNet20", "ResNet20", 0, 8.0)
    sweep_report.write_sweep_report(tmp_path, ["ResNet20", "ResNet21"], ["0", "1"])
    assert ("Runs of this sweep without a finished run (not run, failed, unfinished or diverged): ResNet20 seed 1, "
            "ResNet21 seed 0, ResNet21 seed 1.") in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("epochs,times", [("164", ("2:00:00", "36:00:00")), ("82", ("1:00:00", "18:00:00")),
                                          ("1", ("0:15:00", "0:15:00")), ("400", ("4:53:00", "87:49:00"))])
def test_a_slurm_task_asks_for_time_in_proportion_to_its_epochs(monkeypatch, epochs, times):
    monkeypatch.setenv("EPOCHS", epochs)
    assert (sweep_module.slurm_time("ResNet20"), sweep_module.slurm_time("ResNet1202")) == times


def test_run_sh_explains_itself_and_refuses_arguments_it_does_not_take(tmp_path):
    environment = {**os.environ, "RESULTS_DIR": str(tmp_path / "results")}
    shown = subprocess.run(["bash", "run.sh", "--help"], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert shown.returncode == 0 and "MODELS" in shown.stdout and "TRAIN_FLAGS" in shown.stdout
    refused = subprocess.run(["bash", "run.sh", "--dry-run"], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr == ("run.sh: takes no arguments but --estimate, only the "
                                                          "variables that ./run.sh --help lists; got: --dry-run\n")
    assert not (tmp_path / "results").exists()  # nothing started


@pytest.mark.parametrize("flags,message", [
    ("--seed 7", "TRAIN_FLAGS may not hold --seed: the sweep sets it for each run"),
    ("--results-dir=elsewhere", "TRAIN_FLAGS may not hold --results-dir"),
    ("--recipe 'modern", "TRAIN_FLAGS cannot be split into words (No closing quotation)"),
])
def test_train_flags_that_the_sweep_sets_itself_or_cannot_split_are_one_line(monkeypatch, capsys, flags, message):
    monkeypatch.setenv("TRAIN_FLAGS", flags)
    assert sweep_module.main(["run", "ResNet20", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sweep.py: error: {message}") and error.count("\n") == 1


@pytest.mark.parametrize("variables,message", [
    ({"MODELS": "ResNet20 /abs/path"}, "MODELS holds '/abs/path', which is not a model's name"),
    ({"SEEDS": "0/../../x"}, "SEEDS holds '0/../../x', which is not a whole number"),
    ({"EPOCHS": ""}, "EPOCHS is set but empty: unset it for the default ('164')"),
    ({"MODELS": " "}, "MODELS is set but empty"),
])
def test_run_sh_refuses_bad_models_seeds_and_empty_variables_before_making_anything(data_dir, tmp_path, variables,
                                                                                   message):
    results = tmp_path / "results"
    done = run_sweep(data_dir, results, variables.get("MODELS", "ResNet20"), variables.get("SEEDS", "0"),
                     **{name: value for name, value in variables.items() if name not in ("MODELS", "SEEDS")})
    assert done.returncode == 2
    assert done.stderr == f"sweep.py: error: {message}" + done.stderr.split(message, 1)[1]
    assert done.stderr.count("\n") == 1 and not results.exists()


def test_the_estimate_prices_every_run_left_to_train_and_the_whole_sweep(tmp_path, monkeypatch, capsys):
    """A finished run costs nothing, a resumable one its epochs left, a new one all of them; each
    run pays its warm-up; two GPUs share the queue."""
    for name, value in {"MODELS": "ResNet20 ResNet56", "SEEDS": "0 1", "EPOCHS": "10", "GPUS": "0,1",
                        "RESULTS_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    write_fake_run(tmp_path / "seed0" / "ResNet20", "ResNet20", 0, 8.0, epochs=10)
    write_fake_run(tmp_path / "seed1" / "ResNet56", "ResNet56", 1, 8.0, epochs=4)
    summary = json.loads((tmp_path / "seed1" / "ResNet56" / "ResNet56_results.json").read_text())
    summary.update(status="interrupted", epochs=10, epochs_done=4)
    (tmp_path / "seed1" / "ResNet56" / "ResNet56_results.json").write_text(json.dumps(summary))
    (tmp_path / "seed1" / "ResNet56" / "ResNet56_last.pth").write_bytes(b"a checkpoint")
    benchmarked = []

    def benchmark(model):
        benchmarked.append(model)
        return {"warmup_seconds": 10.0, "epoch_seconds": {"ResNet20": 2.0, "ResNet56": 5.0}[model],
                "train_images_per_s": 1000.0, "train_tflops": 0.25, "device": "cuda (NVIDIA H200)",
                "precision": "bf16", "compilation": "compiled (default; evaluation: reduce-overhead)",
                "step_graph": "on"}

    monkeypatch.setattr(sweep_module, "benchmark_model", benchmark)
    assert sweep_module.main(["estimate"]) == 0
    out = capsys.readouterr().out
    assert benchmarked == ["ResNet20", "ResNet56"]
    assert "| ResNet20 | 1,000 | 2.0 | 10 | 0.25 | 1 | 30 s | 30 s |" in out  # seed 1 only: 10 + 10 x 2
    assert "| ResNet56 | 1,000 | 5.0 | 10 | 0.25 | 2 | 60 s | 100 s |" in out  # 10 + 10 x 5, and 10 + 6 x 5
    assert "whole sweep: 2.2 min one run at a time; on 2 GPUs at a time, about 65 s" in out  # 130 s
    assert "measured on cuda (NVIDIA H200), bf16, compiled (default; evaluation: reduce-overhead), step graph on" in out


def test_a_benchmark_that_fails_stops_the_estimate_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("MODELS", "ResNet20")
    monkeypatch.setenv("TRAIN_FLAGS", "--lr -1")
    assert sweep_module.main(["estimate"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sweep.py: error: the benchmark of ResNet20 failed (exit status 2): train.py: error: --lr must be positive "
        "and finite, got -1.0")


@pytest.mark.slow
def test_run_sh_estimate_benchmarks_the_sweep_and_trains_nothing(tmp_path):
    environment = {**os.environ, "RESULTS_DIR": str(tmp_path / "results"), "MODELS": "ResNet20", "EPOCHS": "3",
                   "TRAIN_FLAGS": TINY_SWEEP["TRAIN_FLAGS"] + " --compile off --subset 2000"}
    estimated = subprocess.run(["bash", "run.sh", "--estimate"], cwd=ROOT, env=environment, capture_output=True,
                               text=True, timeout=300)
    assert estimated.returncode == 0, estimated.stderr
    row = next(line for line in estimated.stdout.splitlines() if line.startswith("| ResNet20 |"))
    images_per_s, epoch_seconds, warmup, _, runs, longest, _ = [cell.strip() for cell in row.split("|")[2:-1]]
    assert float(images_per_s.replace(",", "")) > 0 and runs == "1"
    assert float(longest.removesuffix(" s")) == pytest.approx(float(warmup) + 3 * float(epoch_seconds), abs=1.5)
    assert "whole sweep:" in estimated.stdout and not (tmp_path / "results").exists()
