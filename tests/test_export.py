"""Weights out (issue 29): `weights.py export` writes a finished run's final model as
<name>-<sha256[:8]>.pth and a manifest line, and torch.hub loads them by name, checking the hash."""

import contextlib
import hashlib
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

import hubconf
import train
import weights
from cifar_resnet import export

ROOT = Path(__file__).resolve().parent.parent


def hub(name, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", **kwargs)


def exported(run: Path, to: Path, *extra: str) -> dict:
    """The manifest line `weights.py export` printed."""
    assert weights.main(["export", str(run), "--to", str(to), *extra]) == 0
    return json.loads((to / export.MANIFEST).read_text().splitlines()[-1])


def test_the_final_model_is_exported_under_its_hash_with_what_inference_needs(two_epoch_run, tmp_path):
    entry = exported(two_epoch_run, tmp_path)
    path = tmp_path / entry["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["sha256"] == digest and path.name == f"ResNet20-{digest[:8]}.pth"
    summary = json.loads((two_epoch_run / "ResNet20_results.json").read_text())
    assert (entry["name"], entry["model"], entry["dataset"], entry["final_test_acc"], entry["epochs"]) == \
        ("ResNet20", "ResNet20", "cifar10", summary["final_test_acc"], 2)
    assert (entry["started_from"], entry["subset"]) == (None, 0)  # from scratch, on all the data
    saved = torch.load(path, weights_only=True)
    last = torch.load(two_epoch_run / "ResNet20_last.pth", weights_only=True)
    assert saved.keys() == {"model", "args", "epoch", "normalization", "classes", "exported"}  # no optimizer, no history
    assert all(torch.equal(saved["model"][key], value) for key, value in last["model"].items())  # last.pth, not best
    assert saved["exported"]["final_test_acc"] == summary["final_test_acc"]
    assert any(line.startswith("data: ") for line in saved["exported"]["provenance"])
    assert saved["classes"] == last["test_predictions"]["classes"]


def test_torch_hub_loads_exported_weights_by_name_from_the_manifest(two_epoch_run, tmp_path):
    exported(two_epoch_run, tmp_path)
    entry = exported(two_epoch_run, tmp_path, "--name", "ResNet20_again")
    by_default = hub("ResNet20", manifest=str(tmp_path / export.MANIFEST))  # the entry point's name
    by_name = hub("ResNet20", manifest=str(tmp_path / export.MANIFEST), weights="ResNet20_again")
    direct = hub("ResNet20", weights=str(two_epoch_run / "ResNet20_last.pth"))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(by_default(images), direct(images)) and torch.equal(by_name(images), direct(images))
    assert by_name.classes == direct.classes
    assert entry["file"].startswith("ResNet20_again-")
    with pytest.raises(ValueError, match="names no weights 'ResNet32' .it names: ResNet20, ResNet20_again."):
        hub("ResNet20", manifest=str(tmp_path / export.MANIFEST), weights="ResNet32")


@contextlib.contextmanager
def web_site(folder: Path):
    """``folder`` served over HTTP on this machine's loopback, at the URL yielded; the paths asked for are listed."""
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/", asked
        finally:
            server.shutdown()


def test_a_manifest_at_a_url_names_weights_beside_it_and_their_hash_is_checked(two_epoch_run, tmp_path, monkeypatch):
    site = tmp_path / "site"
    entry = exported(two_epoch_run, site)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with web_site(site) as (url, asked):
        assert not hub("ResNet20", manifest=f"{url}manifest.jsonl").training
        assert asked == ["/manifest.jsonl", f"/{entry['file']}"]
        cached = next((tmp_path / "hub" / "checkpoints").glob(f"*-{entry['file']}"))
        cached.write_bytes(cached.read_bytes() + b"tampered")  # what a server or a cache might hand out instead
        with pytest.raises(ValueError, match=f"has the SHA-256 [0-9a-f]{{64}}, not the {entry['sha256']}"):
            hub("ResNet20", manifest=f"{url}manifest.jsonl")


@pytest.mark.parametrize("content, message", [
    (b"x" * (export.MAX_MANIFEST_BYTES + 1), "is larger than a manifest may be (1,048,576 bytes)"),
    (b"\xff\xfe", "is not a manifest (not UTF-8 text)"),
    (None, "could not download http://127.0.0.1:"),  # nothing there: a 404
])
def test_a_manifest_url_that_serves_no_manifest_is_one_sentence(tmp_path, content, message):
    if content is not None:
        (tmp_path / export.MANIFEST).write_bytes(content)
    with web_site(tmp_path) as (url, _), pytest.raises(ValueError, match=re.escape(message)):
        hub("ResNet20", manifest=f"{url}{export.MANIFEST}")


@pytest.mark.parametrize("line,message", [
    ("not json", "line 1: not a manifest entry"),
    ('{"name": "ResNet20", "file": "../ResNet20.pth", "sha256": "' + "0" * 64 + '", "model": "ResNet20"}',
     "line 1: not a manifest entry"),  # a path, not a name: nothing outside the manifest's folder
    ('{"name": "ResNet20", "file": "ResNet20.pth", "sha256": "abc", "model": "ResNet20"}', "not a manifest entry"),
])
def test_a_manifest_that_is_not_one_is_refused(tmp_path, line, message):
    (tmp_path / export.MANIFEST).write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        hub("ResNet20", manifest=str(tmp_path / export.MANIFEST))
    with pytest.raises(Exception, match=message):  # and export never appends to it
        export.read_manifest_file(tmp_path / export.MANIFEST)


def test_a_name_already_in_the_manifest_or_an_unfinished_run_is_refused(two_epoch_run, data_dir, tmp_path, capsys):
    exported(two_epoch_run, tmp_path / "out")
    manifest = (tmp_path / "out" / export.MANIFEST).read_text()
    assert weights.main(["export", str(two_epoch_run), "--to", str(tmp_path / "out")]) == 2
    assert "already names weights 'ResNet20': give another --name" in capsys.readouterr().err
    assert weights.main(["export", str(two_epoch_run), "--to", str(tmp_path / "out"), "--name", "../x"]) == 2
    assert "--name '../x': letters, digits" in capsys.readouterr().err
    assert (tmp_path / "out" / export.MANIFEST).read_text() == manifest
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_epoch_run, unfinished)
    summary = json.loads((unfinished / "ResNet20_results.json").read_text())
    summary.update(status="interrupted", epochs=3)
    (unfinished / "ResNet20_results.json").write_text(json.dumps(summary))
    assert weights.main(["export", str(unfinished), "--to", str(tmp_path / "out2")]) == 2
    assert "its run is interrupted, with 2 of 3 epochs done; export a finished run" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_exported_weights_evaluate_as_the_run_s_final_model(two_epoch_run, data_dir, tmp_path, capsys):
    entry = exported(two_epoch_run, tmp_path)
    assert train.main(["--evaluate", str(tmp_path / entry["file"]), "--data-dir", str(data_dir), "--device", "cpu",
                       "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy: {entry['final_test_acc']:.2f}%" in out
    assert f"exported from the run {two_epoch_run}" in out


def test_a_checkpoint_that_names_more_classes_than_its_data_set_has_is_refused(two_epoch_run, tmp_path):
    entry = exported(two_epoch_run, tmp_path)
    saved = torch.load(tmp_path / entry["file"], weights_only=True)
    saved["classes"] = saved["classes"][:9]
    torch.save(saved, tmp_path / "forged.pth")
    with pytest.raises(ValueError, match="it names 9 classes, CIFAR-10 has 10"):
        hubconf.ResNet20(weights=str(tmp_path / "forged.pth"))


@pytest.mark.parametrize("change,message", [
    (lambda summary: summary.pop("command"), "a finished run's summary without 'command'"),
    (lambda summary: summary["provenance"].update(parts=[{"first_epoch": 1}], peak_memory_gib=None),
     "its provenance is not what train.py writes"),
])
def test_a_summary_that_lacks_what_an_export_records_is_refused_in_one_line(two_epoch_run, tmp_path, capsys,
                                                                            change, message):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run, run)
    summary = json.loads((run / "ResNet20_results.json").read_text())
    change(summary)
    (run / "ResNet20_results.json").write_text(json.dumps(summary))
    assert weights.main(["export", str(run), "--to", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
