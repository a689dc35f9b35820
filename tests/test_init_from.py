"""--init-from (issue 29): a new run starts from a checkpoint's weights and normalisation (a run's,
or imported), records where it started, resumes as itself, and refuses settings its weights do not fit."""

import hashlib
import json
import re

import pytest
import torch

import train
import weights
from cifar_fixture import run_args
from cifar_resnet.peer_weights import PUBLISHERS
from helpers import assert_same_run, interrupt_second_epoch
from test_peer_weights import published, published_by_chenyaofo

# A learning rate so small that an epoch leaves the weights where they started (BatchNorm's
# statistics aside), so that a test can see where they started.
STANDING_STILL = ("--lr", "1e-9", "--momentum", "0", "--weight-decay", "0")


def learned(state: dict) -> dict:
    """The parameters of a state dict: what SGD changes (BatchNorm's running statistics are not)."""
    return {key: value for key, value in state.items() if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_a_run_starts_from_a_checkpoint_s_weights_and_normalisation(data_dir, tmp_path, two_epoch_run, capsys):
    start = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    arguments = run_args(data_dir, tmp_path, "--epochs", "1", "--init-from", str(two_epoch_run / "ResNet20_last.pth"))
    assert train.main([*arguments, *STANDING_STILL]) == 0
    saved = torch.load(tmp_path / "ResNet20" / "ResNet20_last.pth", weights_only=True)
    assert all(torch.allclose(saved["model"][key], value, atol=1e-6) for key, value in learned(start["model"]).items())
    assert not all(torch.allclose(saved["model"][key], value, atol=1e-6) for key, value in start["model"].items())
    assert all(torch.equal(saved["normalization"][key], start["normalization"][key]) for key in ("mean", "std"))
    summary = json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())
    digest = hashlib.sha256((two_epoch_run / "ResNet20_last.pth").read_bytes()).hexdigest()
    assert summary["started_from"] == {"checkpoint": str(two_epoch_run / "ResNet20_last.pth"), "sha256": digest,
                                       "model": "ResNet20", "source": "train.py", "epochs": 2}
    assert summary["settings"]["init_from"] == str(two_epoch_run / "ResNet20_last.pth")
    assert saved["started_from"] == summary["started_from"]
    assert "STARTED FROM WEIGHTS (--init-from)" in capsys.readouterr().out
    assert "STARTED FROM WEIGHTS" in (tmp_path / "ResNet20" / "ResNet20_results.txt").read_text()
    assert weights.main(["export", str(tmp_path / "ResNet20"), "--to", str(tmp_path / "exported")]) == 0
    assert json.loads((tmp_path / "exported" / "manifest.jsonl").read_text())["started_from"] == "train.py"


def test_imported_weights_bring_their_network_and_normalisation(data_dir, tmp_path):
    published(3, tmp_path / "resnet20.th")
    assert weights.main(["import", "akamaster", str(tmp_path / "resnet20.th"), str(tmp_path / "start.pth")]) == 0
    arguments = run_args(data_dir, tmp_path / "results", "--epochs", "1", "--init-from", str(tmp_path / "start.pth"))
    arguments.remove("--model")  # run_args names ResNet20; the checkpoint says so too
    arguments.remove("ResNet20")
    assert train.main([*arguments, "--recipe", "resnet18-course", *STANDING_STILL]) == 0  # its model: ResNet18
    saved = torch.load(tmp_path / "results" / "ResNet20" / "ResNet20_last.pth", weights_only=True)
    mean, std = PUBLISHERS["akamaster"].normalization["cifar10"]
    assert torch.allclose(saved["normalization"]["mean"].flatten(), torch.tensor(mean))
    assert torch.allclose(saved["normalization"]["std"].flatten(), torch.tensor(std))
    assert (saved["args"]["shortcut"], saved["args"]["normalize"]) == ("A", "channel")
    assert saved["started_from"]["source"] == "akamaster/pytorch_resnet_cifar10"


@pytest.mark.parametrize("flags,message", [
    (("--model", "ResNet32"), "--model ResNet32 does not fit the weights of .*, whose model is ResNet20"),
    (("--dataset", "cifar10"), "--dataset cifar10 does not fit the weights of .*, whose dataset is cifar100"),
    (("--normalize", "pixel"), "--normalize pixel does not fit the weights of .*, whose normalize is channel"),
    (("--resume",), "--init-from starts a new run: --resume takes its weights from its own checkpoint"),
])
def test_settings_that_the_weights_do_not_fit_are_refused(data_dir, tmp_path, capsys, flags, message):
    published_by_chenyaofo(3, 100, tmp_path / "cifar100_resnet20.pt")
    assert weights.main(["import", "chenyaofo", str(tmp_path / "cifar100_resnet20.pt"), str(tmp_path / "start.pth")]) == 0
    arguments = [arg for arg in run_args(data_dir, tmp_path / "results", "--epochs", "1") if arg not in ("--model", "ResNet20")]
    assert train.main([*arguments, "--init-from", str(tmp_path / "start.pth"), *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_run_started_from_weights_resumes_as_the_uninterrupted_one(data_dir, tmp_path, monkeypatch, two_epoch_run):
    start = ("--init-from", str(two_epoch_run / "ResNet20_last.pth"), "--lr", "0.01")
    assert train.main(run_args(data_dir, tmp_path / "whole", "--epochs", "2", *start)) == 0
    interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.main(run_args(data_dir, tmp_path / "parts", "--epochs", "2", *start))
    monkeypatch.undo()
    assert train.main(run_args(data_dir, tmp_path / "parts", "--epochs", "2", "--resume")) == 0
    assert_same_run(tmp_path / "parts" / "ResNet20", tmp_path / "whole" / "ResNet20")
    summary = json.loads((tmp_path / "parts" / "ResNet20" / "ResNet20_results.json").read_text())
    assert summary["started_from"]["sha256"] and summary["settings"]["init_from"] == start[1]


@pytest.mark.parametrize("forge,message", [
    (lambda saved: saved["args"].update(normalize="evil"),
     "the checkpoint's settings are not valid (argument --normalize: invalid choice: 'evil'"),
    (lambda saved: saved["model"].update({"fc.weight": torch.zeros(10, 3)}), "its weights do not fit a ResNet20"),
])
def test_a_starting_checkpoint_train_py_never_writes_is_refused(data_dir, tmp_path, two_epoch_run, capsys, forge,
                                                                 message):
    forged = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    forge(forged)
    torch.save(forged, tmp_path / "forged.pth")
    assert train.main(run_args(data_dir, tmp_path / "results", "--epochs", "1", "--init-from",
                               str(tmp_path / "forged.pth"))) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1 and not (tmp_path / "results").exists()
