"""--benchmark and the speed choices (compilation, fused SGD, evaluation batch)."""

import json
import sys
from pathlib import Path

import pytest
import torch

import train
from cifar_fixture import PINNED_HOST
from cifar_resnet import benchmark, hardware, passes, recipe


@pytest.mark.slow
def test_benchmark_prints_rates_memory_and_projection_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "BENCHMARK_SECONDS", 0.2)
    results = tmp_path / "results"
    argv = ["--model", "ResNet20", "--benchmark", "--batch-size", "16", "--epochs", "3", "--compile", "off", *PINNED_HOST,
            "--results-dir", str(results), "--data-dir", str(tmp_path / "no-data-needed")]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    for text in ("ResNet20 on cpu", "training:", "evaluation:", "images/s", "peak memory:", "CPU RSS",
                 "min for 3 epochs"):
        assert text in out
    assert not results.exists() and not (tmp_path / "no-data-needed").exists()


def test_the_benchmark_says_what_ran_after_a_compilation_that_failed(tmp_path, monkeypatch, capsys):
    """A benchmark is of what really ran: eager, once torch.compile has failed (and sweep.py's
    estimate, which reads the JSON, says so too)."""
    monkeypatch.setattr(benchmark, "BENCHMARK_SECONDS", 0.2)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (str(tmp_path / "no-such-g++"),))
    torch._dynamo.reset()
    numbers = tmp_path / "numbers.json"
    argv = ["--model", "ResNet20", "--benchmark", "--batch-size", "16", "--compile", "on", *PINNED_HOST,
            "--benchmark-json", str(numbers)]
    assert train.main(argv) == 0
    after_the_note = capsys.readouterr().out.split("note: torch.compile failed (InductorError:")[1]
    assert "ResNet20 on cpu (" in after_the_note and ", fp32, eager (torch.compile failed), batch 16" in after_the_note
    result = json.loads(numbers.read_text())
    assert result["compilation"] == "eager (torch.compile failed)" and result["compiled"] is False
    assert result["step_graph"] == "off"


@pytest.mark.parametrize("val_size,subset,train_images,test_images", [
    (0, 0, 49_920, 10_000), (5000, 0, 44_928, 10_000),  # full batches of 128
    (0, 2000, 1920, 400),  # a smoke run's subset: N training images, N/5 test images
])
def test_the_projection_is_the_full_run_at_the_measured_rates(monkeypatch, val_size, subset, train_images, test_images):
    """Training at 1,000 images/s and evaluation at 10,000 (a clock that only evaluation moves):
    an epoch is the training images at the first rate plus the test and validation images at
    the second, and the run is the warm-up (one evaluation, 0.1 s) plus 164 epochs."""
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(passes, "train_one_epoch", lambda *args, **kwargs: {"train_images_per_s": 1000.0,
                                                                           "epoch_seconds": 0.5})

    def evaluate(model, loader, runtime):
        clock[0] += len(loader.labels) / 10_000
        return 0.0, 0.0, None

    monkeypatch.setattr(passes, "evaluate", evaluate)
    result = benchmark.run(train.parse_args(["--model", "ResNet20", "--benchmark", "--compile", "off", *PINNED_HOST,
                                               "--val-size", str(val_size), "--subset", str(subset)]))
    assert (result["train_images_per_s"], result["eval_images_per_s"]) == (1000.0, pytest.approx(10_000))
    epoch = train_images / 1000 + (test_images + val_size) / 10_000
    assert result["epoch_seconds"] == pytest.approx(epoch)
    assert result["projected_run_seconds"] == pytest.approx(0.1 + 164 * epoch)
    # 3 x 2 FLOPs per MAC at 1,000 images/s; no peak is known for a CPU
    assert result["train_tflops"] == pytest.approx(6 * 40_551_040 * 1000 / 1e12) and result["bf16_peak_share"] is None


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 4090", None),
])
def test_the_share_of_the_peak_is_given_for_the_gpus_whose_bf16_peak_is_known(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert benchmark.bf16_peak_tflops(torch.device("cuda")) == (None if peak is None else (name, peak))
    result = {"train_tflops": 98.9, "macs_per_image": 40_551_040,
              "bf16_peak_share": None if peak is None else 98.9 / peak}
    line = benchmark.compute_line(result, benchmark.bf16_peak_tflops(torch.device("cuda")))
    assert ("98.90 TFLOP/s" in line and "40.6M MACs" in line
            and (f"{98.9 / peak:.1%} of the {name}'s dense bf16 peak" in line if peak else "not known here" in line))


@pytest.mark.parametrize(
    "choice,epochs,device,expected",
    [
        ("on", 1, "cpu", True),
        ("off", 164, "cpu", False),
        ("auto", 9, "cpu", False),
        ("auto", 9, "cuda", False),  # a run too short to repay compiling
        ("auto", 10, "cuda", True),
        ("auto", 164, "meta", False),
    ],
)
def test_compilation_choice(choice, epochs, device, expected):
    assert hardware.use_compile(choice, epochs, torch.device(device)) is expected


@pytest.mark.skipif(sys.platform != "linux", reason="auto compiles on Linux CPUs only")
def test_auto_compiles_a_full_run_on_a_linux_cpu_with_a_compiler(monkeypatch):
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/" + name)
    assert hardware.use_compile("auto", 164, torch.device("cpu")) is True
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert hardware.use_compile("auto", 164, torch.device("cpu")) is False


@pytest.mark.parametrize(
    "device,processes,expected",
    [
        ("cuda", 1, "reduce-overhead"),  # CUDA graphs: 3x the training images/s of "default" (docs/benchmark.md)
        ("cuda", 2, "default"),  # DDP's all-reduce hooks would split the graphs
        ("cpu", 1, "default"),
    ],
)
def test_auto_compile_mode_uses_cuda_graphs_for_one_gpu_process(device, processes, expected):
    group = hardware.Processes(rank=0, local_rank=0, count=processes)
    assert hardware.pick_compile_mode("auto", torch.device(device), group) == expected
    assert hardware.pick_compile_mode("max-autotune", torch.device(device), group) == "max-autotune"


def test_the_compile_mode_is_recorded_and_reaches_torch_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(hardware.torch, "compile", lambda model, mode: calls.append(mode) or model)
    args = train.parse_args(["--device", "cpu", "--compile", "on", "--compile-mode", "reduce-overhead"])
    setup, model = hardware.setup(args, model="ResNet20", settings=vars(args), epochs=1)
    compiled = setup.compile(model)
    assert compiled.compiled is model and compiled.model is model and calls == ["reduce-overhead"]
    assert setup.describe_compile() == "compiled (reduce-overhead)"
    eager = hardware.Runtime(torch.device("cpu"), "fp32", None)
    assert eager.compile(model) is model and calls == ["reduce-overhead"] and eager.describe_compile() == "eager"


def test_sgd_is_fused_on_the_cpu_with_the_paper_s_hyperparameters():
    args = train.parse_args([])
    optimizer = recipe.make_optimizer(torch.nn.Linear(3, 2), args, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert optimizer.defaults["nesterov"] is False and optimizer.defaults["dampening"] == 0


def test_evaluation_batches_divide_the_test_and_validation_sets():
    for device in ("cpu", "cuda"):
        size = passes.eval_batch_size(torch.device(device))
        assert 10_000 % size == 0 and 5_000 % size == 0


def test_the_step_graph_equivalence_check_runs_and_finds_two_uncaptured_runs_equal(monkeypatch, capsys):
    """benchmarks/step_graph_equivalence.py compares a captured run with an uncaptured one on a GPU;
    here, without CUDA, both runs are uncaptured: the script itself is what is checked."""
    monkeypatch.syspath_prepend(Path(__file__).resolve().parent.parent / "benchmarks")
    import step_graph_equivalence

    assert step_graph_equivalence.main(["--steps", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "second run's step graph: off (no CUDA)" in out
    differences = [line for line in out.splitlines() if "largest difference" in line]
    assert [line.split(":")[0].strip() for line in differences] == [
        "largest difference, weights", "largest difference, BatchNorm statistics", "largest difference, momentum",
        "largest difference, running sums"]
    assert all(line.endswith(": 0") for line in differences)


@pytest.mark.slow
def test_the_classic_pipeline_comparison_runs_every_pipeline_it_names(data_dir, monkeypatch, capsys):
    """benchmarks/classic_vs_ours.py on tiny data: a line per pipeline, ours set against classic."""
    monkeypatch.syspath_prepend(Path(__file__).resolve().parent.parent / "benchmarks")
    import classic_vs_ours

    classic_vs_ours.main(["--data-dir", str(data_dir), "--models", "ResNet20", "--epochs", "2",
                          "--pipelines", "classic", "ours-eager"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ResNet20 ")]
    assert [line.split()[1] for line in lines] == ["classic", "ours-eager"]
    assert "epochs (s): " in lines[0] and lines[1].endswith(" x classic")
