"""The compiled path that every run of 10 or more epochs takes, traced by torch.compile's cheap
aot_eager backend (the same graphs and autograd, no generated code) instead of inductor."""

import functools
import json

import pytest
import torch
from torch._dynamo.utils import counters

import train
from cifar_fixture import run_args

pytestmark = pytest.mark.slow  # every test here starts processes or compiles

EPOCHS = 3
PINNED = ("--device", "cpu", "--precision", "fp32", "--deterministic", "--compile", "on")


def use_aot_eager(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()  # no graph of an earlier test is reused, and the counters start afresh
    counters.clear()


def watch_epochs(monkeypatch, stop_after=None):
    """The number of graphs compiled so far, read after each epoch's files are written; with
    ``stop_after``, the run stops there as if by SIGTERM."""
    graphs, save_epoch = [], train.save_epoch

    def watching(training, *args, **kwargs):
        save_epoch(training, *args, **kwargs)
        graphs.append(counters["stats"]["unique_graphs"])
        if training.epochs_done == stop_after:
            raise train.RunInterrupted(15)

    monkeypatch.setattr(train, "save_epoch", watching)
    return graphs


@pytest.fixture(scope="module")
def compiled_run(data_dir, tmp_path_factory):
    """A compiled run of EPOCHS epochs, and the graphs compiled by the end of each."""
    results = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_aot_eager(monkeypatch)
        graphs = watch_epochs(monkeypatch)
        assert train.main(run_args(data_dir, results, "--epochs", str(EPOCHS), *PINNED)) == 0
    return results / "ResNet20", graphs


def test_a_compiled_run_compiles_in_its_first_epoch_only(compiled_run):
    folder, graphs = compiled_run
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["compiled"] is True and result["compile_mode"] == result["eval_compile_mode"] == "default"
    assert graphs[0] >= 2 and graphs == [graphs[0]] * EPOCHS  # training and evaluation, then never again


def test_a_compiled_run_s_checkpoint_is_the_plain_model_s(compiled_run, data_dir):
    folder, _ = compiled_run
    checkpoint = torch.load(folder / "ResNet20_last.pth", weights_only=True)
    assert not any(key.startswith("_orig_mod.") for key in checkpoint["model"])
    # The plain model, evaluated from the checkpoint, is the model the compiled run evaluated.
    final = json.loads((folder / "ResNet20_results.json").read_text())["final_test_acc"]
    evaluation = train.evaluate.evaluate_checkpoint(train.parse_args(
        ["--evaluate", str(folder / "ResNet20_last.pth"), "--data-dir", str(data_dir), "--device", "cpu",
         "--precision", "fp32", "--compile", "off"]))
    assert evaluation["test_acc"] == final


def test_a_compiled_run_resumes_exactly(compiled_run, data_dir, tmp_path, monkeypatch):
    folder, _ = compiled_run
    use_aot_eager(monkeypatch)
    save_epoch = train.save_epoch
    watch_epochs(monkeypatch, stop_after=1)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", str(EPOCHS), *PINNED)) == 128 + 15
    monkeypatch.setattr(train, "save_epoch", save_epoch)
    assert train.main(run_args(data_dir, tmp_path, "--resume", *PINNED)) == 0
    resumed, uninterrupted = (torch.load(path / "ResNet20_last.pth", weights_only=True)
                              for path in (tmp_path / "ResNet20", folder))
    assert metrics(resumed["history"]) == metrics(uninterrupted["history"])
    assert all(torch.equal(resumed["model"][key], value) for key, value in uninterrupted["model"].items())


def metrics(history):
    return [{key: value for key, value in row.items() if key not in ("epoch_seconds", "train_images_per_s")}
            for row in history]


def test_a_machine_whose_compiler_fails_runs_eager_and_its_record_says_so(data_dir, tmp_path, monkeypatch, capsys):
    """Inductor's real failure where it finds no working C++ compiler: the run goes on eager."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (str(tmp_path / "no-such-g++"),))
    torch._dynamo.reset()
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", *PINNED)) == 0
    out = capsys.readouterr().out
    assert out.count("note: torch.compile failed (InductorError:") == 1 and "the run goes on eager" in out
    folder = tmp_path / "ResNet20"
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["status"] == "finished" and result["compiled"] is False
    failed = result["provenance"]["parts"][-1]["compile_failed"]
    assert failed["epoch"] == 1 and "No working C++ compiler" in failed["reason"]
    assert "compile: torch.compile failed in epoch 1 (InductorError:" in (folder / "ResNet20_results.txt").read_text()


def test_compilation_failing_mid_run_leaves_the_epochs_before_compiled(data_dir, tmp_path, monkeypatch):
    """Evaluation's graph is compiled at the end of epoch 1, after the training step's: where that
    compilation fails, epoch 1 trained compiled and the run goes on eager from there."""
    compiled_graphs = []

    def fails_after_the_first_graph(graph, example_inputs):
        compiled_graphs.append(graph)
        if len(compiled_graphs) > 1:
            raise RuntimeError("out of registers")
        return torch._dynamo.backends.debugging.aot_eager(graph, example_inputs)

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=fails_after_the_first_graph))
    torch._dynamo.reset()
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "3", *PINNED)) == 0
    result = json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())
    failed = result["provenance"]["parts"][-1]["compile_failed"]
    assert result["status"] == "finished" and failed["epoch"] == 1 and "RuntimeError: out of registers" in failed["reason"]
    assert len(compiled_graphs) == 2  # the training step's, and the failed one: epochs 2 and 3 compiled nothing
