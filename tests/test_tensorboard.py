"""--tensorboard: the event files hold the run's curves, read back with TensorBoard's own reader,
and a resumed run continues them without duplicate points."""

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from cifar_fixture import run_args
from cifar_resnet import passes


def scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def csv_rows(folder):
    with open(folder / "ResNet20_results.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_tensorboard_holds_every_epoch_s_metrics_the_step_losses_and_the_hparams(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(passes, "LOSS_LOG_EVERY", 4)
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "2", "--val-size", "64", "--tensorboard")) == 0
    folder = tmp_path / "ResNet20"
    rows = csv_rows(folder)  # 256 training images, batch 32: 8 steps an epoch
    for split in ("train", "val", "test"):
        assert scalars(folder / "tensorboard", f"loss/{split}") == [
            (8 * (index + 1), pytest.approx(float(row[f"{split}_loss"]), rel=1e-5)) for index, row in enumerate(rows)]
        assert [value for _, value in scalars(folder / "tensorboard", f"accuracy/{split}")] == \
            pytest.approx([float(row[f"{split}_acc"]) for row in rows], rel=1e-5)
    assert [value for _, value in scalars(folder / "tensorboard", "lr")] == pytest.approx([0.1, 0.01])
    assert [step for step, _ in scalars(folder / "tensorboard", "loss_per_step/train")] == [4, 8, 12, 16]
    final = float(rows[-1]["test_acc"])
    assert scalars(folder / "tensorboard" / "hparams", "hparam/final_test_acc") == [(16, pytest.approx(final, rel=1e-5))]
    hparams = EventAccumulator(str(folder / "tensorboard" / "hparams"))
    hparams.Reload()
    assert "_hparams_/session_start_info" in hparams.PluginTagToContent("hparams")


@pytest.mark.slow
def test_a_resumed_run_continues_the_curves_without_duplicates(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(passes, "LOSS_LOG_EVERY", 5)
    original = passes.train_one_epoch

    def stop_after_logging_in_epoch_two(*args, **kwargs):
        log_loss = args[-1]

        def log_then_stop(step, loss):
            log_loss(step, loss)
            if step == 15:  # logged past the checkpoint of epoch 1 (step 10), then killed
                raise KeyboardInterrupt

        return original(*args[:-1], log_then_stop)

    monkeypatch.setattr(passes, "train_one_epoch", stop_after_logging_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train.main(run_args(data_dir, tmp_path, "--epochs", "3", "--tensorboard"))
    monkeypatch.setattr(passes, "train_one_epoch", original)
    assert train.main(run_args(data_dir, tmp_path, "--resume", "--tensorboard")) == 0
    board = tmp_path / "ResNet20" / "tensorboard"
    assert [step for step, _ in scalars(board, "loss/test")] == [10, 20, 30]
    assert [step for step, _ in scalars(board, "loss_per_step/train")] == [5, 10, 15, 20, 25, 30]
    assert [value for _, value in scalars(board, "loss/train")] == pytest.approx(
        [float(row["train_loss"]) for row in csv_rows(tmp_path / "ResNet20")], rel=1e-5)
