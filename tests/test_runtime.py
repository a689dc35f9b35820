"""The shared set-up (hardware.setup): device choice, fast-bf16 detection, the seeded model."""

import argparse
import functools
import json
import os

import pytest
import torch

from cifar_resnet import hardware
from cifar_resnet.errors import UsageError


@pytest.mark.parametrize("name,message", [
    ("gpu", "unknown --device 'gpu'"),
    ("cuda:abc", "unknown --device 'cuda:abc'"),
])
def test_an_unknown_device_name_is_a_usage_error(name, message):
    with pytest.raises(UsageError, match=message):
        hardware.pick_device(name)


def test_auto_takes_the_accelerator_pytorch_reports_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    assert hardware.pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("mps"))
    assert hardware.pick_device("auto") == torch.device("mps")


def test_an_accelerator_that_is_not_there_is_refused(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    with pytest.raises(UsageError, match="PyTorch sees no CUDA device here; use --device cpu"):
        hardware.pick_device("cuda")
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)
    assert hardware.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match="sees only 2 CUDA device"):
        hardware.pick_device("cuda:2")


@pytest.mark.parametrize("flags,expected", [({"avx2", "avx512f"}, False), ({"avx2", "avx512_bf16"}, True),
                                            ({"amx_bf16"}, True), (set(), False)])
def test_fast_bf16_falls_back_to_the_cpu_flags_without_pytorch_s_private_probes(monkeypatch, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.cpu_has_fast_bf16() is expected
    assert hardware.pick_precision("auto", torch.device("cpu")) == ("bf16" if expected else "fp32")


@pytest.mark.parametrize("amx,avx512_bf16,expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_fast_bf16_asks_pytorch_s_probes_where_it_has_them(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: pytest.fail("the probes answer first"))
    assert hardware.cpu_has_fast_bf16() is expected


@pytest.mark.parametrize("capability,expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_a_gpu_is_bf16_from_ampere_on(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert hardware.pick_precision("auto", torch.device("cuda")) == expected
    assert hardware.pick_precision("fp32", torch.device("cuda")) == "fp32"


@pytest.mark.parametrize("deterministic,device,autotune,workspace", [
    (True, "cuda", False, ":4096:8"),  # cuBLAS is deterministic only with its workspace fixed
    (False, "cuda", True, None),  # cuDNN's autotuner
    (False, "cpu", False, None),
])
@pytest.mark.parametrize("earlier", [True, False])  # the setting an earlier run in this process left
def test_the_kernel_settings_follow_determinism_and_device(monkeypatch, deterministic, device, autotune, workspace,
                                                           earlier):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    calls = []
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: earlier)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", calls.append)
    hardware.choose_kernels(deterministic=deterministic, device=torch.device(device))
    # Changed either way (the setting is global: a run must not inherit it), and left alone when
    # it already holds (changing it imports inductor, 1.5 s at every start).
    assert calls == ([] if earlier == deterministic else [deterministic])
    assert torch.backends.cudnn.benchmark is autotune
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == workspace


def test_setup_builds_the_seeded_model_on_the_device():
    args = runtime_args()
    _, first = hardware.setup(args, model="ResNet20", settings={"seed": 1}, epochs=1)
    _, again = hardware.setup(args, model="ResNet20", settings={"seed": 1}, epochs=1)
    setup, other = hardware.setup(args, model="ResNet20", settings={"seed": 2}, epochs=1)
    assert setup.device == torch.device("cpu") and setup.precision == "fp32" and not setup.compiled
    assert torch.equal(first.fc.weight, again.fc.weight) and not torch.equal(first.fc.weight, other.fc.weight)
    assert first.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_setup_refuses_an_option_the_model_does_not_take():
    with pytest.raises(UsageError, match="Plain20 takes no --shortcut option"):
        hardware.setup(runtime_args(), model="Plain20", settings={"shortcut": "B"}, epochs=1)


def runtime_args():
    """The choices setup reads, as train.py's parser gives them, pinned to the CPU in fp32."""
    return argparse.Namespace(device="cpu", threads="auto", precision="fp32", compile="auto", deterministic=False,
                              step_graph="off")


def test_one_cpu_thread_is_one_thread():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert hardware.describe_device(torch.device("cpu")) == "cpu (1 thread)"
    finally:
        torch.set_num_threads(threads)


def test_auto_threads_are_the_cpus_this_process_may_use_not_the_machine_s(monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(hardware, "CGROUP_ROOT", tmp_path)
    assert hardware.pick_threads("auto") == 6  # the affinity mask (taskset, a job's CPU set)
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # a container's --cpus 2.5
    assert hardware.pick_threads("auto") == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert hardware.pick_threads("auto") == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's per-process setting, or the user's
    assert hardware.pick_threads("auto") == 1
    assert hardware.pick_threads("4") == 4


def test_threads_are_set_recorded_and_shown(data_dir, tmp_path):
    import train
    from cifar_fixture import run_args

    before = torch.get_num_threads()
    try:
        assert train.main(run_args(data_dir, tmp_path, "--epochs", "1", "--threads", "1")) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    result = json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())
    assert result["settings"]["threads"] == 1 and result["device"] == "cpu (1 thread)"
    assert result["provenance"]["parts"][0]["device"]["threads"] == 1


def test_a_compiled_model_whose_compilation_fails_runs_eager_and_so_does_every_other(monkeypatch, capsys):
    attempts = []

    def failing_backend(graph, example_inputs):
        attempts.append(graph)
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=failing_backend))
    torch._dynamo.reset()
    runtime = hardware.Runtime(torch.device("cpu"), "fp32", "default")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    first, second = runtime.compile(model), runtime.compile(model)
    images = torch.randn(4, 3)
    assert torch.equal(first(images), model(images))  # the failed call made again, eager
    assert torch.equal(second.eval()(images), model(images)) and not model.training
    assert len(attempts) == 1 and not runtime.compiled and runtime.compile_mode == "default"
    assert runtime.compile_failure.startswith("BackendCompilerFailed: ") and "no compiler" in runtime.compile_failure
    assert runtime.describe_compile() == "eager (torch.compile failed)"
    assert capsys.readouterr().out.count("note: torch.compile failed (BackendCompilerFailed:") == 1
