"""Recipes: every schedule's learning-rate curve, the optimizers, early stopping, and the presets
(--recipe) with their documented values and the flags that override them."""

import json
from pathlib import Path

import pytest
import torch

import train
from cifar_fixture import run_args
from cifar_resnet import passes, recipe, settings
from cifar_resnet.errors import RunInterrupted

README = Path(__file__).resolve().parent.parent / "README.md"


def rates(args, steps_per_epoch):
    """Every step's rate of the run ``args`` (a command line) describes, as its Schedule gives them."""
    schedule = recipe.make_schedule(settings.parse_args(args), steps_per_epoch)
    curve = []
    for _ in range(schedule.config["total_steps"]):
        curve.append(schedule.lr())
        schedule.step()
    assert recipe.lr_history(schedule.state_dict()) == curve  # the figure draws the same curve
    return curve


def test_the_paper_s_milestones_are_unchanged():
    assert settings.parse_args([]).milestones == [82, 123]
    curve = rates([], 390)
    assert len(curve) == 63_960
    assert curve[31_979] == 0.1 and curve[31_980] == pytest.approx(0.01) and curve[47_970] == pytest.approx(0.001)


def test_step_schedule_drops_every_step_size_epochs():
    curve = rates(["--schedule", "step", "--epochs", "100"], 10)
    assert settings.parse_args(["--schedule", "step"]).step_size == 30  # the course project's StepLR
    for epoch, lr in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 0.001), (90, 1e-4), (99, 1e-4)):
        assert curve[10 * epoch] == pytest.approx(lr) and curve[10 * epoch + 9] == pytest.approx(lr)


def test_multistep_drops_inside_an_epoch_at_fractional_milestones():
    curve = rates(["--epochs", "2", "--milestones", "0.5", "0.75"], 390)
    assert curve[194] == 0.1 and curve[195] == pytest.approx(0.01)
    assert curve[291] == pytest.approx(0.01) and curve[292] == pytest.approx(0.001)


def test_linear_warmup_rises_in_equal_steps_to_the_base_rate():
    curve = rates(["--epochs", "10", "--warmup-epochs", "2", "--milestones", "5"], 10)
    assert curve[:20] == pytest.approx([0.1 * (step + 1) / 20 for step in range(20)])
    assert curve[20:50] == [0.1] * 30 and curve[50] == pytest.approx(0.01)


def test_cosine_falls_from_the_base_rate_after_warmup_to_its_floor_at_the_last_step():
    curve = rates(["--schedule", "cosine", "--epochs", "10", "--warmup-epochs", "1"], 10)
    assert curve[9] == pytest.approx(0.1) and curve[10] == pytest.approx(0.1)
    assert all(later < earlier for earlier, later in zip(curve[10:], curve[11:]))
    assert curve[-1] == recipe.COSINE_FLOOR == 0
    middle = 10 + (99 - 10) / 2  # halfway from the first cosine step to the last: half the rate
    assert recipe.cosine_lr(middle, 0.1, 10, 99) == pytest.approx(0.05)


def test_error_triggered_warmup_runs_at_a_tenth_until_training_error_is_below_80_percent():
    schedule = recipe.Schedule(0.1, 2000, milestone_steps=[1000], gamma=0.1, error_warmup=True)
    assert schedule.lr() == pytest.approx(0.01)
    schedule.observe_train_error(0.85)
    assert schedule.lr() == pytest.approx(0.01)
    schedule.observe_train_error(0.79)
    assert schedule.lr() == pytest.approx(0.1)
    schedule.observe_train_error(0.9)
    assert schedule.lr() == pytest.approx(0.1)
    restored = recipe.Schedule(0.1, 2000, milestone_steps=[1000], gamma=0.1, error_warmup=True)
    restored.load_state_dict(schedule.state_dict())
    assert restored.lr() == pytest.approx(0.1)


def test_a_linear_warmup_replaces_the_paper_s_auto_warmup_and_excludes_warmup_on():
    assert settings.parse_args(["--model", "ResNet110"]).warmup == "auto"
    assert recipe.warms_up(settings.parse_args(["--model", "ResNet110"]))
    assert not recipe.warms_up(settings.parse_args(["--model", "ResNet110", "--warmup-epochs", "1"]))
    with pytest.raises(train.UsageError, match="two warm-ups"):
        settings.parse_args(["--warmup", "on", "--warmup-epochs", "1"])


@pytest.mark.parametrize("name,expected", [
    ("sgd", (torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "weight_decay": 1e-4})),
    ("nesterov", (torch.optim.SGD, {"momentum": 0.9, "nesterov": True})),
    ("adamw", (torch.optim.AdamW, {"weight_decay": 1e-4})),
    ("adagrad", (torch.optim.Adagrad, {"weight_decay": 1e-4})),
])
def test_each_optimizer_is_built_with_the_run_s_settings(name, expected):
    args = settings.parse_args(["--optimizer", name])
    optimizer = recipe.make_optimizer(torch.nn.Linear(3, 2), args, torch.device("cpu"))
    kind, options = expected
    assert type(optimizer) is kind and optimizer.param_groups[0]["fused"]
    assert {key: optimizer.param_groups[0][key] for key in options} == options


def test_a_preset_resolves_to_its_documented_values():
    course = settings.parse_args(["--recipe", "resnet18-course"])
    assert (course.model, course.lr, course.momentum, course.weight_decay, course.batch_size, course.epochs) == \
        ("ResNet18", 0.1, 0.9, 5e-4, 128, 200)
    assert (course.schedule, course.step_size, course.gamma, course.val_size, course.early_stop) == \
        ("step", 30, 0.1, 0.2, 20)
    modern = settings.parse_args(["--recipe", "modern"])
    assert (modern.batch_size, modern.lr, modern.epochs, modern.optimizer, modern.schedule, modern.warmup_epochs) == \
        (256, 0.05, 200, "nesterov", "cosine", 5)
    assert (modern.label_smoothing, modern.mixup, modern.cutmix, modern.color_jitter, modern.random_erasing) == \
        (0.1, 0.8, 1.0, 0.4, 0.25)
    assert (modern.precision, modern.milestones, modern.gamma) == ("auto", None, None)
    paper = settings.parse_args(["--recipe", "paper"])
    assert vars(paper) | {"command": None} == vars(settings.parse_args([])) | {"command": None,
                                                                               "given": paper.given}


def test_a_flag_given_overrides_its_preset():
    args = settings.parse_args(["--recipe", "modern", "--lr", "0.1", "--mixup", "0", "--model", "ResNet20",
                                "--epochs", "20", "--warmup-epochs", "0.5"])
    assert (args.lr, args.mixup, args.model, args.warmup_epochs, args.cutmix) == (0.1, 0.0, "ResNet20", 0.5, 1.0)
    assert settings.parse_args(["--recipe", "modern", "--epochs", "40"]).warmup_epochs == 1  # 5 of 200, scaled


def test_the_readme_and_help_show_the_presets_table(capsys):
    table = settings.presets_table()
    assert table in README.read_text()
    with pytest.raises(SystemExit):
        settings.parse_args(["--help"])
    assert table in capsys.readouterr().out
    header = table.splitlines()[0]
    assert all(name in header for name in recipe.PRESETS)


@pytest.mark.parametrize("extra,message", [
    (["--early-stop", "3"], "--early-stop watches the validation loss: hold images out with --val-size"),
    (["--optimizer", "adamw", "--momentum", "0.9"], "--momentum applies to sgd and nesterov, not to --optimizer adamw"),
    (["--optimizer", "nesterov", "--momentum", "0"], "--optimizer nesterov needs a --momentum above 0"),
    (["--schedule", "cosine", "--milestones", "5"], "--milestones applies to --schedule multistep, not cosine"),
    (["--step-size", "5"], "--step-size applies to --schedule step, not multistep"),
    (["--warmup-epochs", "2", "--epochs", "2"], "--warmup-epochs must be below --epochs (2)"),
    (["--label-smoothing", "1"], "--label-smoothing must be at least 0 and below 1"),
    (["--mixup", "-1"], "--mixup must be between 0 and 100, got -1.0"),
    (["--mixup", "1e308"], "--mixup must be between 0 and 100"),  # Python's betavariate would never return
    (["--cutmix", "nan"], "--cutmix must be between 0 and 100"),
    (["--color-jitter", "1.5"], "--color-jitter must be between 0 and 1"),
    (["--random-erasing", "-0.1"], "--random-erasing must be between 0 and 1"),
    (["--val-size", "1.5"], "1.5 is neither a count of images nor a fraction between 0 and 1"),
    (["--early-stop", "0", "--val-size", "10"], "--early-stop must be a positive number of epochs"),
    (["--recipe", "fast"], "invalid choice: 'fast'"),
    (["--evaluate", "x.pth", "--recipe", "modern"], "--evaluate and --recipe exclude each other"),
])
def test_bad_recipe_flags_are_one_clear_line_and_exit_status_2(data_dir, tmp_path, capsys, extra, message):
    assert train.main(run_args(data_dir, tmp_path, *extra)) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "ResNet20").exists()


def test_a_validation_fraction_holds_out_that_share_of_the_training_set(data_dir, tmp_path):
    assert train.main(run_args(data_dir, tmp_path, "--epochs", "1", "--val-size", "0.2", "--compile", "off")) == 0
    result = json.loads((tmp_path / "ResNet20" / "ResNet20_results.json").read_text())
    assert result["images"] == {"train": 256, "test": 100, "val": 64} and result["settings"]["val_size"] == 0.2


def csv_metrics(folder):
    rows = json.loads((folder / "ResNet20_results.json").read_text())
    lines = (folder / "ResNet20_results.csv").read_text().splitlines()
    keep = [index for index, name in enumerate(lines[0].split(",")) if "seconds" not in name and "per_s" not in name]
    return rows["settings"], [[line.split(",")[index] for index in keep] for line in lines]


@pytest.mark.slow
def test_recipe_paper_computes_exactly_what_no_recipe_does(data_dir, tmp_path):
    common = ("--epochs", "1", "--deterministic", "--compile", "off")
    assert train.main(run_args(data_dir, tmp_path / "plain", *common)) == 0
    assert train.main(run_args(data_dir, tmp_path / "paper", *common, "--recipe", "paper")) == 0
    plain_settings, plain = csv_metrics(tmp_path / "plain" / "ResNet20")
    paper_settings, paper = csv_metrics(tmp_path / "paper" / "ResNet20")
    assert plain == paper
    assert {k: v for k, v in plain_settings.items() if k != "results_dir"} == \
        {k: v for k, v in paper_settings.items() if k != "results_dir"}


def test_epochs_without_improvement_counts_from_the_lowest_validation_loss():
    assert recipe.epochs_without_improvement([1.0]) == 0
    assert recipe.epochs_without_improvement([1.0, 0.9, 0.95, 0.9]) == 2  # equal is no improvement
    assert recipe.early_stop_reason([{"val_loss": 1.0}, {"val_loss": 1.1}], None) is None
    assert recipe.early_stop_reason([{"val_loss": 1.0}, {"val_loss": 1.1}], 2) is None
    assert "not improved for 2 epochs" in recipe.early_stop_reason([{"val_loss": v} for v in (1.0, 1.1, 1.2)], 2)


VAL_LOSSES = [2.0, 1.5, 1.6, 1.4, 1.45, 1.5, 1.7, 1.0]  # with patience 3 the run stops after epoch 7
VAL_IMAGES = 64  # the test split has 100


def scripted_validation(monkeypatch, first_epoch=1, interrupt_at=None):
    """Replace epoch e's validation loss by VAL_LOSSES[e - 1] (the test split is evaluated for
    real); optionally stop the run as SIGTERM would, at the start of epoch ``interrupt_at``."""
    monkeypatch.undo()  # a second call replaces the first one's scripts
    evaluate, train_one_epoch = passes.evaluate, passes.train_one_epoch
    epoch = [first_epoch]

    def scripted(model, loader, runtime):
        loss, accuracy, predictions = evaluate(model, loader, runtime)
        if len(loader.labels) != VAL_IMAGES:
            return loss, accuracy, predictions
        epoch[0] += 1
        return VAL_LOSSES[epoch[0] - 2], accuracy, predictions

    def interruptible(*args, **kwargs):
        if epoch[0] == interrupt_at:
            raise RunInterrupted(15)
        return train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(passes, "evaluate", scripted)
    monkeypatch.setattr(passes, "train_one_epoch", interruptible)


EARLY_STOP_RUN = ("--epochs", "10", "--val-size", str(VAL_IMAGES), "--early-stop", "3", "--compile", "off")


@pytest.mark.slow
def test_early_stopping_stops_after_exactly_patience_epochs_without_improvement(data_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    scripted_validation(monkeypatch)
    assert train.main(run_args(data_dir, tmp_path, *EARLY_STOP_RUN)) == 0
    folder = tmp_path / "ResNet20"
    result = json.loads((folder / "ResNet20_results.json").read_text())
    assert result["status"] == "early-stopped" and result["epochs_done"] == 7
    assert result["early_stopped"]["epoch"] == 7
    assert "not improved for 3 epochs" in result["early_stopped"]["reason"]
    assert "lowest was 1.4000 after epoch 4" in result["early_stopped"]["reason"]
    last_row = dict(zip(*(line.split(",") for line in (folder / "ResNet20_results.csv").read_text().splitlines()[::7])))
    assert result["final_test_acc"] == pytest.approx(float(last_row["test_acc"]))  # the last epoch's: the headline
    summary = (folder / "ResNet20_results.txt").read_text()
    assert "EARLY-STOPPED after epoch 7 of 10" in summary and "<- the result" in summary
    assert {path.name for path in (folder / "plots").iterdir()} >= {"loss_acc_curves.png", "lr_curve.png"}
    capsys.readouterr()
    assert train.main(run_args(data_dir, tmp_path, "--resume")) == 0
    assert "this run stopped early" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_modern_run_resumes_into_the_uninterrupted_one(data_dir, tmp_path, monkeypatch):
    """Mixing, jitter, erasing, Nesterov and the cosine schedule all resume where they stopped,
    and early stopping counts the epochs before the interruption."""
    extra = (*EARLY_STOP_RUN, "--deterministic", "--recipe", "modern", "--batch-size", "32", "--model", "ResNet20")
    scripted_validation(monkeypatch)
    assert train.main(run_args(data_dir, tmp_path / "whole", *extra)) == 0
    scripted_validation(monkeypatch, interrupt_at=5)
    assert train.main(run_args(data_dir, tmp_path / "parts", *extra)) == 128 + 15
    scripted_validation(monkeypatch, first_epoch=5)
    # compile and determinism are not settings of the run (they may differ between its parts): repeat them
    assert train.main(run_args(data_dir, tmp_path / "parts", "--resume", "--compile", "off", "--deterministic")) == 0
    whole, parts = (torch.load(tmp_path / run / "ResNet20" / "ResNet20_last.pth", weights_only=True)
                    for run in ("whole", "parts"))
    assert len(parts["history"]) == len(whole["history"]) == 7
    assert [row["train_loss"] for row in parts["history"]] == [row["train_loss"] for row in whole["history"]]
    assert all(torch.equal(parts["model"][key], whole["model"][key]) for key in whole["model"])
    assert json.loads((tmp_path / "parts" / "ResNet20" / "ResNet20_results.json").read_text())["status"] == "early-stopped"
