"""The training step as one function of device tensors (passes.TrainStep, issue 30): it equals the
step as it was written before (a float rate set on the optimizer, batches from the loader's
iterator) bit for bit in fp32; its rate is a tensor that a checkpoint stores as a float; and
graphs.py's capture falls back, in one line, to the same step where CUDA refuses it."""

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F

import train
from cifar_fixture import run_args
from cifar_resnet import data, graphs, hardware, passes, settings
from cifar_resnet.augment import Augmentation, Mixing
from cifar_resnet.errors import UsageError
from cifar_resnet.hardware import StopSignals
from cifar_resnet.recipe import make_optimizer, make_schedule
from resnet import build_model

CPU_FP32 = hardware.Runtime(torch.device("cpu"), "fp32", None)
STEPS = 10  # a pass over 320 images at batch 32; the paper's drops fall at steps 5 and 8


def a_run(jitter: float = 0.0):
    """Model, optimizer, schedule and loader of a one-epoch ResNet-20 run on random images; each call
    the same (seeded), so two runs can be compared."""
    args = settings.parse_args(["--model", "ResNet20", "--epochs", "1", "--batch-size", "32"])
    torch.manual_seed(0)
    model = build_model("ResNet20")
    split = data.random_split(STEPS * 32, 10, torch.Generator().manual_seed(1))
    normalization = data.Normalization.fit("pixel", split.images)
    loader = passes.train_loader(split, 32, normalization, torch.Generator().manual_seed(2),
                                 Augmentation(color_jitter=jitter))
    return model, make_optimizer(model, args, torch.device("cpu")), make_schedule(args, STEPS), loader


def steps_as_written_before(model, optimizer, schedule, loader) -> None:
    """The training step as train_one_epoch took it before TrainStep: the float rate on the
    optimizer's groups, each batch from the loader's iterator."""
    model.train()
    for images, labels in loader:
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        schedule.step()


def assert_same_state(model, reference) -> None:
    state, expected = model.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)


@pytest.mark.parametrize("jitter", [0.0, 0.4])  # the paper's crop and flip; with ColorJitter as well
def test_the_step_equals_the_step_as_written_before_bit_for_bit_in_fp32(jitter):
    reference, *rest = a_run(jitter)
    steps_as_written_before(reference, *rest)
    model, optimizer, schedule, loader = a_run(jitter)
    step = passes.TrainStep(model, optimizer, loader, CPU_FP32)
    result = passes.train_one_epoch(step, schedule, CPU_FP32, StopSignals(), None)
    assert_same_state(model, reference)  # the rate's drops at steps 5 and 8 included
    assert optimizer.param_groups[0]["lr"] is step.lr and step.lr.item() == pytest.approx(0.001)
    assert result["train_acc"] == pytest.approx(100 * step.correct.item() / (STEPS * 32))


def test_a_checkpoint_stores_the_rate_as_a_float_and_a_loaded_one_is_held_on_the_device():
    model, optimizer, schedule, loader = a_run()
    step = passes.TrainStep(model, optimizer, loader, CPU_FP32)
    passes.train_one_epoch(step, schedule, CPU_FP32, StopSignals(), None)
    saved = step.optimizer_state()
    assert all(type(group["lr"]) is float for group in saved["param_groups"])  # the file's format, as before
    other_model, other_optimizer, _, other_loader = a_run()
    other = passes.TrainStep(other_model, other_optimizer, other_loader, CPU_FP32)
    other.load_optimizer_state(saved)
    assert other_optimizer.param_groups[0]["lr"] is other.lr
    other.set_rate(0.5)
    assert other_optimizer.param_groups[0]["lr"].item() == 0.5


def refusing_graphs(monkeypatch) -> None:
    """In place of torch.cuda: a side stream that is the same stream, and a graph capture that
    CUDA refuses, as it refuses a step that reads a value back to the host."""

    class Stream:
        def __init__(self, *args):
            pass

        def wait_stream(self, other):
            pass

    class Graph:
        def register_generator_state(self, generator):
            self.generator = generator

    def graph(_graph):
        raise RuntimeError("CUDA error: operation not permitted when stream is\ncapturing")

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)


def test_a_capture_that_cuda_refuses_falls_back_to_the_same_step_in_one_line(monkeypatch, capsys):
    refusing_graphs(monkeypatch)
    reference, *rest = a_run()
    steps_as_written_before(reference, *rest)
    model, optimizer, schedule, loader = a_run()
    step = passes.TrainStep(model, optimizer, loader, CPU_FP32)
    graphs.capture_steps(step)
    assert step.graph_mode == "on"
    passes.train_one_epoch(step, schedule, CPU_FP32, StopSignals(), None)
    assert_same_state(model, reference)  # three warm-up steps, the refused capture's step, six more: none lost
    assert step.graph is None and step.graph_mode.startswith("off (the capture failed: RuntimeError: CUDA error")
    assert capsys.readouterr().out.count("note: the training step could not be captured") == 1


def test_steps_a_graph_would_freeze_stay_uncaptured_and_say_why(capsys):
    model, optimizer, _, loader = a_run()
    step = passes.TrainStep(model, optimizer, loader, CPU_FP32, Mixing(0.8, 0.0, 10, seed=0))
    graphs.capture_steps(step)
    assert step.graph is None
    assert step.graph_mode == "off (MixUp/CutMix draw their lambda and box on the host each batch)"
    assert capsys.readouterr().out.count("so the training step runs uncaptured") == 1
    adamw = torch.optim.AdamW(model.parameters(), fused=True)
    step = passes.TrainStep(model, adamw, loader, CPU_FP32)
    graphs.capture_steps(step)
    assert step.graph is None and step.graph_mode == "off (only fused SGD's update is captured, not AdamW's)"


@pytest.mark.parametrize("flags,message", [
    (("--step-graph", "on"), "--step-graph on records the training step as a CUDA graph: it needs one process "
                             "on a CUDA device, not cpu"),
])
def test_step_graph_off_cuda_is_refused_in_one_line(data_dir, tmp_path, capsys, flags, message):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1", *flags)) == 2
    assert capsys.readouterr().err == f"train.py: error: {message}\n"
    assert not (tmp_path / "ResNet20").exists()


def test_the_step_graph_takes_the_compiled_kernels_not_reduce_overhead_s_own_graphs():
    cuda = torch.device("cuda")
    assert hardware.pick_compile_mode("auto", cuda) == "reduce-overhead"
    assert hardware.pick_compile_mode("auto", cuda, step_graph=True) == "default"
    for mode, instead in (("reduce-overhead", "default"), ("max-autotune", "max-autotune-no-cudagraphs")):
        with pytest.raises(UsageError, match=f"--compile-mode {mode} records CUDA graphs of its own, which "
                                             f"--step-graph on cannot hold in its graph: use --compile-mode {instead}"):
            hardware.pick_compile_mode(mode, cuda, step_graph=True)
    assert hardware.pick_compile_mode("max-autotune-no-cudagraphs", cuda, step_graph=True) == "max-autotune-no-cudagraphs"


def test_under_the_step_graph_evaluation_replays_graphs_of_its_own(monkeypatch):
    """The training step's graph holds default-mode kernels; evaluation, outside it, is compiled apart
    with reduce-overhead's graphs. Without the step graph one compiled model serves both."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode: modes.append(mode) or model)
    model = torch.nn.Linear(3, 2)
    graphed = hardware.Runtime(torch.device("cuda"), "bf16", "default", step_graph=True)
    step_model = graphed.compile(model)
    eval_model = graphed.evaluation_model(model, step_model)
    assert eval_model is not step_model and eval_model.model is model and modes == ["default", "reduce-overhead"]
    assert graphed.describe_compile() == "compiled (default; evaluation: reduce-overhead)"
    for runtime in (hardware.Runtime(torch.device("cuda"), "bf16", "reduce-overhead"),
                    hardware.Runtime(torch.device("cuda"), "bf16", "max-autotune-no-cudagraphs", step_graph=True)):
        step_model = runtime.compile(model)
        assert runtime.evaluation_model(model, step_model) is step_model and runtime.describe_compile() == (
            f"compiled ({runtime.compile_mode})")


def test_a_run_records_whether_its_step_was_captured(two_epoch_run):
    summary = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    assert summary["step_graph"] == "off" and summary["settings"]["step_graph"] == "off"
    assert summary["compile_mode"] is None and summary["eval_compile_mode"] is None
    assert summary["provenance"]["parts"][-1]["step_graph"] == "off"
