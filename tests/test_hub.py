"""hubconf.py through torch.hub itself, loading from this repository's folder (source="local")."""

import hashlib
from pathlib import Path

import pytest
import torch

import hubconf
from cifar_resnet import data
from resnet import MODELS, count_parameters

ROOT = Path(__file__).resolve().parent.parent


def hub(name, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", **kwargs)


def test_every_model_is_a_hub_entry_point_with_a_docstring():
    entries = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and name in MODELS]
    assert entries == sorted(MODELS)
    assert "weights" in hubconf.ResNet56.__doc__


def test_an_untrained_model_takes_the_builder_s_options():
    assert count_parameters(hub("ResNet20")) == 269_722
    assert count_parameters(hub("ResNet20", shortcut="B")) == 272_474
    assert hub("ResNet18", num_classes=100).fc.out_features == 100


def test_a_checkpoint_s_weights_load_into_its_model_in_eval_mode(two_epoch_run):
    model = hub("ResNet20", weights=str(two_epoch_run / "ResNet20_last.pth"))
    saved = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)["model"]
    assert not model.training and not model.network.training
    assert all(torch.equal(model.network.state_dict()[key], value) for key, value in saved.items())


def test_a_trained_model_takes_images_as_they_come_and_normalises_them_as_its_run_did(two_epoch_run):
    checkpoint = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    model = hub("ResNet20", weights=str(two_epoch_run / "ResNet20_last.pth"))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = model.network(data.Normalization(**checkpoint["normalization"])(images))  # what training fed it
        assert torch.allclose(model(images), expected, atol=1e-5)
        assert torch.allclose(model(images.float() / 255), expected, atol=1e-5)  # torchvision's ToTensor
        assert torch.allclose(model(images[0]), expected[0], atol=1e-5)  # one image
    assert model.classes == tuple(checkpoint["test_predictions"]["classes"])
    with pytest.raises(TypeError, match="images must be uint8"):
        model(images.long())


def test_a_relative_path_is_found_from_here_or_else_from_the_clone(two_epoch_run, tmp_path, monkeypatch):
    run = tmp_path / "clone" / "results" / "ResNet20"
    run.parent.mkdir(parents=True)
    run.symlink_to(two_epoch_run)
    monkeypatch.setattr(hubconf, "CLONE", tmp_path / "clone")
    monkeypatch.chdir(tmp_path)  # here, results/ResNet20/... is nothing: the clone's is taken
    assert hubconf.ResNet20(weights="results/ResNet20/ResNet20_last.pth").classes is not None
    with pytest.raises(ValueError, match="no checkpoint at results/ResNet32"):
        hubconf.ResNet20(weights="results/ResNet32/ResNet32_last.pth")


@pytest.mark.parametrize("name,options,message", [
    ("ResNet32", {}, "holds a ResNet20, not a ResNet32"),
    ("ResNet20", {"num_classes": 100}, "holds a ResNet20 for 10 classes, not 100"),
])
def test_a_checkpoint_of_another_model_or_class_count_is_refused(two_epoch_run, name, options, message):
    with pytest.raises(ValueError, match=message):
        hub(name, weights=str(two_epoch_run / "ResNet20_last.pth"), **options)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        hub("ResNet20", weights=str(tmp_path / "bad.pth"))


def test_a_url_is_downloaded_once_into_torch_hub_s_cache(two_epoch_run, tmp_path, monkeypatch):
    downloads = []

    def download(url, destination, progress=True):
        downloads.append(url)
        Path(destination).write_bytes((two_epoch_run / "ResNet20_last.pth").read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = "https://example.org/runs/ResNet20_last.pth"
    for _ in range(2):
        assert not hub("ResNet20", weights=url).training
    assert downloads == [url] and len(list((tmp_path / "checkpoints").glob("*-ResNet20_last.pth"))) == 1
    other = "https://example.org/other/ResNet20_last.pth"  # the same file name: never the first URL's file
    hub("ResNet20", weights=other)
    assert downloads == [url, other] and len(list((tmp_path / "checkpoints").glob("*-ResNet20_last.pth"))) == 2


def test_a_failed_download_is_a_value_error(tmp_path, monkeypatch):
    def offline(url, destination, progress=True):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match="could not download https://example.org/a.pth .OSError: Network is"):
        hub("ResNet20", weights="https://example.org/a.pth")


@pytest.mark.parametrize("arguments,message", [
    ({"weights": 123}, "weights must be a checkpoint's path or an http.s. URL, got 123"),
    ({"sha256": "0" * 64}, "has the SHA-256 [0-9a-f]{64}, not the 0000"),
    ({"shortcut": "B"}, "holds a ResNet20 with shortcut='A', not 'B'"),
])
def test_weights_that_contradict_what_was_asked_are_a_value_error(two_epoch_run, arguments, message):
    with pytest.raises(ValueError, match=message):
        hub("ResNet20", **{"weights": str(two_epoch_run / "ResNet20_last.pth"), **arguments})


def test_the_expected_sha256_of_the_right_file_loads(two_epoch_run):
    path = two_epoch_run / "ResNet20_last.pth"
    assert not hub("ResNet20", weights=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest()).training


def test_a_checkpoint_with_non_finite_weights_is_refused(two_epoch_run, tmp_path):
    checkpoint = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    checkpoint["model"]["fc.weight"][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="its 'model' is missing or not what train.py writes"):
        hub("ResNet20", weights=str(tmp_path / "nan.pth"))
