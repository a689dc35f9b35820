"""CIFAR-100 (--dataset cifar100) end to end, on tiny data in its standard layout: reading,
training, where runs go, refusing the other data set's checkpoints, figures and the report."""

import json

import numpy as np
import pytest
import torch

import sweep as sweep_module
import train
from cifar_fixture import make_cifar, run_args, write_pickle
from cifar_resnet import data, figures, sweep_report
from helpers import read_summary, run_sweep, sweep_environment, write_fake_run

CIFAR100_RESNET20 = 269_722 + 64 * 90 + 90  # ResNet-20 with a 100-way classifier


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar100"), source=data.CIFAR100)


@pytest.fixture(scope="module")
def cifar100_run(cifar100_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("results100")
    assert train.main(run_args(cifar100_dir, results, "--dataset", "cifar100", "--epochs", "1")) == 0
    return results


def test_cifar100_reads_fine_labels_and_the_fine_names_from_meta(cifar100_dir):
    dataset = data.load_dataset(cifar100_dir / "cifar-100-python", data.CIFAR100)
    assert len(dataset.train.labels) == 320 and len(dataset.test.labels) == 100
    assert dataset.classes == tuple(f"fine{index:02d}" for index in range(100))
    assert sorted(dataset.test.labels.tolist()) == list(range(100))  # fine labels, not the 20 coarse ones


def test_a_broken_meta_file_is_a_clear_error(cifar100_dir, tmp_path):
    folder = make_cifar(tmp_path, source=data.CIFAR100) / "cifar-100-python"
    write_pickle(folder / "meta", {"fine_label_names": ["only", "three", "names"]})
    with pytest.raises(data.DataError, match="'fine_label_names' must be a list of 100 names"):
        data.load_dataset(folder, data.CIFAR100)
    (folder / "meta").unlink()
    with pytest.raises(data.DataError, match="meta: missing; a CIFAR-100 folder holds train, test, meta"):
        data.load_dataset(folder, data.CIFAR100)


def test_without_internet_the_message_names_the_cifar100_archive(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*_args, **_kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(data.DataError) as error:
        data.find_or_download(tmp_path, data.CIFAR100)
    message = str(error.value)
    assert "CIFAR-100 is not in" in message and "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/" in message
    assert data.CIFAR100.md5 == "eb9058c3a382ffc7106e4002c42a8d85"


@pytest.mark.slow
def test_a_cifar100_run_has_100_classes_its_own_mean_and_its_own_folder(cifar100_run, cifar100_dir, data_dir):
    folder = cifar100_run / "cifar100" / "ResNet20"
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["parameters"] == CIFAR100_RESNET20 and result["settings"]["dataset"] == "cifar100"
    checkpoint = torch.load(folder / "ResNet20_last.pth", weights_only=True)
    assert checkpoint["model"]["fc.weight"].shape == (100, 64)
    train_images = data.load_dataset(cifar100_dir / "cifar-100-python", data.CIFAR100).train.images
    assert torch.allclose(checkpoint["normalization"]["mean"], train_images.double().mean(dim=0).div(255).float(),
                          atol=1e-6)
    predictions = torch.load(folder / "ResNet20_test_predictions.pt", weights_only=True)
    assert len(predictions["classes"]) == 100 and predictions["classes"][7] == "fine07"
    # A CIFAR-10 run of the same model in the same results folder goes elsewhere.
    assert train.main(run_args(data_dir, cifar100_run, "--epochs", "1")) == 0
    assert (cifar100_run / "ResNet20" / "ResNet20_last.pth").is_file()
    assert torch.load(folder / "ResNet20_last.pth", weights_only=True)["epoch"] == 1


def test_the_other_data_set_s_checkpoint_is_refused_in_one_line(cifar100_run, cifar100_dir, tmp_path, capsys):
    checkpoint = cifar100_run / "cifar100" / "ResNet20" / "ResNet20_last.pth"
    assert train.main(run_args(cifar100_dir, tmp_path, "--resume", str(checkpoint))) == 2
    error = capsys.readouterr().err
    assert "holds a run on CIFAR-100, not on CIFAR-10; give --dataset cifar100" in error and error.count("\n") == 1
    assert train.main(["--evaluate", str(checkpoint), "--dataset", "cifar10", "--data-dir", str(cifar100_dir)]) == 2
    assert "holds a run on CIFAR-100, not on CIFAR-10" in capsys.readouterr().err


def test_evaluate_uses_the_checkpoint_s_data_set_and_sorts_classes_by_accuracy(cifar100_run, cifar100_dir, capsys):
    checkpoint = cifar100_run / "cifar100" / "ResNet20" / "ResNet20_last.pth"
    assert train.main(["--evaluate", str(checkpoint), "--data-dir", str(cifar100_dir)]) == 0
    out = capsys.readouterr().out
    assert "ResNet20 on CIFAR-100" in out
    table = out.split("per-class accuracy, worst first:\n")[1].split("most confused")[0].splitlines()
    accuracies = [float(line.split()[-1].rstrip("%")) for line in table]
    assert len(table) == 100 and accuracies == sorted(accuracies)


def test_a_100_class_confusion_matrix_has_no_cell_numbers_and_lists_the_most_confused_pairs(tmp_path):
    classes = [f"c{index}" for index in range(100)]
    labels = np.repeat(np.arange(100), 3)
    predictions = labels.copy()
    predictions[:3] = 5  # all of c0 taken for c5
    predictions[3] = 9  # one c1 taken for c9
    fig = figures.plot_confusion(labels, predictions, classes, tmp_path / "confusion.png", "t")
    heatmap, pairs = fig.axes[0], fig.axes[1]
    assert not [text for text in heatmap.texts]  # no per-cell numbers
    listed = pairs.texts[0].get_text()
    assert "c0 -> c5: 3" in listed and "c1 -> c9: 1" in listed and listed.index("c0 -> c5") < listed.index("c1 -> c9")
    assert figures.most_confused(labels, predictions, classes) == [("c0", "c5", 3), ("c1", "c9", 1)]
    small = figures.plot_confusion(labels[:30] % 10, labels[:30] % 10, classes[:10], tmp_path / "small.png", "t")
    assert len(small.axes[0].texts) == 100  # CIFAR-10's matrix keeps its numbers


def test_the_report_compares_cifar100_runs_with_the_published_cifar100_errors(tmp_path):
    write_fake_run(tmp_path / "seed0" / "cifar100" / "PreActResNet164", "PreActResNet164", 0, 25.0,
                   flags=("--dataset", "cifar100"))
    write_fake_run(tmp_path / "seed0" / "ResNet20", "ResNet20", 0, 9.0)
    outputs = sweep_report.write_sweep_report(tmp_path)
    assert {path.name for path in outputs} >= {"summary.md", "summary-cifar100.md", "figure6-cifar100.png"}
    row = read_summary(tmp_path / "summary-cifar100.csv")["PreActResNet164"]
    assert float(row["paper_error"]) == 24.33 and float(row["mean_minus_paper"]) == pytest.approx(0.67)
    assert row["model"] == "PreActResNet164"  # the data set is the report's, not a deviation
    text = (tmp_path / "summary-cifar100.md").read_text()
    assert text.startswith("# CIFAR-100 test error") and "ResNet-1001 27.82%" in text
    assert "PreActResNet164" not in (tmp_path / "summary.md").read_text()
    assert read_summary(tmp_path / "summary.csv")["ResNet20"]["paper_error"] == "8.75"


@pytest.mark.slow
def test_run_sh_sweeps_cifar100_into_its_own_folders_and_reports_it(cifar100_dir, tmp_path, monkeypatch, capsys):
    finished = run_sweep(cifar100_dir, tmp_path, "ResNet20", "0", DATASET="cifar100")
    assert finished.returncode == 0, finished.stderr
    folder = tmp_path / "seed0" / "cifar100" / "ResNet20"
    assert (folder / "ResNet20_results.json").is_file() and (folder / "train.log").is_file()
    assert (tmp_path / "summary-cifar100.md").is_file() and not (tmp_path / "summary.md").exists()
    # Run again, the sweep would skip it: its command resumes the CIFAR-100 run, which has nothing left to do.
    sweep_environment(monkeypatch, cifar100_dir, tmp_path)
    monkeypatch.setenv("DATASET", "cifar100")
    command = sweep_module.train_arguments("ResNet20", "0")
    assert "--resume" in command and "cifar100" in command
    assert train.main(command[1:]) == 0 and "finished its 1 epoch; nothing to do" in capsys.readouterr().out
