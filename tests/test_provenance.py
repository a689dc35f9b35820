"""What a run records of where its numbers come from: code, libraries, machine, data, compute."""

import dataclasses
import hashlib
import importlib.metadata
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torchvision

from cifar_resnet import data, figures, hardware, provenance, settings

ROOT = Path(__file__).resolve().parent.parent


def git(*arguments):
    return subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=True).stdout.strip()


def test_a_run_s_summary_records_code_libraries_device_data_and_compute(two_epoch_run, data_dir):
    result = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    record = result["provenance"]
    [part] = record["parts"]
    assert part["first_epoch"] == 1 and part["command"] == result["command"]
    assert part["code"] == {"commit": git("rev-parse", "HEAD"),
                            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
    assert part["versions"] == {"python": part["versions"]["python"], "torch": torch.__version__,
                                "torchvision": importlib.metadata.version("torchvision"), "cuda": torch.version.cuda,
                                "cudnn": torch.backends.cudnn.version()}
    assert part["device"] == {"type": "cpu", "name": hardware.cpuinfo_field("model name") or part["device"]["name"],
                              "threads": torch.get_num_threads(), "fast_bf16": hardware.cpu_has_fast_bf16(),
                              "processes": 1}
    assert (part["precision"], part["compile_mode"], part["deterministic"]) == (result["precision"], None, False)
    folder = Path(data_dir) / data.CIFAR10.folder
    assert part["data"]["md5"] == {name: hashlib.md5((folder / name).read_bytes()).hexdigest()
                                   for name in (*data.CIFAR10.train_files, *data.CIFAR10.test_files)}
    assert part["data"]["official"] is False and record["official_data"] is False  # the tiny test data
    assert part["data"]["val_split_sha256"] is None
    assert part["wall_seconds"] == pytest.approx(result["wall_seconds"])
    assert record["device_hours"] == pytest.approx(result["wall_seconds"] / 3600)
    assert 0.1 < record["peak_memory_gib"] < 64
    text = (two_epoch_run / "ResNet20_results.txt").read_text()
    assert "NOT the official release" in text and f"code: {part['code']['commit']}" in text
    assert f"torch {torch.__version__}" in text and "device-hours" in text


def test_the_recorded_command_replays_to_the_recorded_settings(two_epoch_run):
    result = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    replayed = settings.parse_args(shlex.split(result["command"])[2:])  # after "python train.py"
    settings.resolve_model_and_warmup(replayed)
    for name in settings.RESULT_SETTINGS:
        assert getattr(replayed, name) == result["settings"][name], name


def test_official_files_are_told_apart_from_a_copy_in_the_same_format(data_dir, monkeypatch):
    folder = Path(data_dir) / data.CIFAR10.folder
    ours = tuple(data.fingerprint(folder)["md5"].values())
    as_if_released = dataclasses.replace(data.CIFAR10, official_md5=ours)
    assert data.fingerprint(folder, as_if_released)["official"] is True
    one_file_differs = dataclasses.replace(data.CIFAR10, official_md5=(*ours[:-1], "0" * 32))
    assert data.fingerprint(folder, one_file_differs)["official"] is False


@pytest.mark.parametrize("source,release", [(data.CIFAR10, torchvision.datasets.CIFAR10),
                                            (data.CIFAR100, torchvision.datasets.CIFAR100)])
def test_the_official_checksums_are_torchvision_s(source, release):
    assert dict(zip((*source.train_files, *source.test_files), source.official_md5)) == dict(release.train_list
                                                                                           + release.test_list)


def test_the_validation_split_s_hash_names_its_images(data_dir):
    folder = Path(data_dir) / data.CIFAR10.folder
    first, again, other = (data.load_dataset(folder, val_size=32, seed=seed) for seed in (0, 0, 1))
    assert first.val_sha256 == again.val_sha256 != other.val_sha256
    assert len(first.val_sha256) == 64 and data.load_dataset(folder).val_sha256 is None
    assert first.record == {**data.fingerprint(folder), "val_split_sha256": first.val_sha256}


def test_outside_a_git_checkout_the_commit_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "PROJECT", tmp_path)  # no .git here or above (a temporary folder)
    assert provenance.code_state() == {"commit": "unknown", "uncommitted_changes": "unknown"}


def test_a_run_on_other_files_says_so_on_its_figures(two_epoch_run, tmp_path, monkeypatch):
    folder = shutil.copytree(two_epoch_run, tmp_path / "ResNet20")
    titles = []
    monkeypatch.setattr(figures, "plot_curves", lambda history, path, title, *rest: titles.append(title))
    figures.draw_run(folder)
    assert titles == ["ResNet20 (not the official CIFAR files)"]
