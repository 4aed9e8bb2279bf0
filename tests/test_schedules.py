"""Schedules over the run's length: a recipe's epoch numbers (the paper's, at the paper's length)
scale with --epochs to the same fractions of the run, the command says so once, and what --set
gives for this run is kept."""

import dataclasses

import pytest
import yaml

from convzoo.cli import main
from convzoo.errors import UserError
from convzoo.recipes import resolve
from convzoo.training.optim import LRSchedule, fit_to_run


def test_paper_milestones_at_the_paper_length_are_kept():
    s = resolve("resnet20_cifar").schedule
    fitted, note = fit_to_run(s, 164, 164)
    assert fitted.milestones == (82, 123) and fitted.epochs == 164 and note is None


def test_milestones_scale_to_the_same_fractions_of_a_short_run():
    fitted, note = fit_to_run(resolve("resnet20_cifar").schedule, 5, 164)
    assert fitted.milestones == (2.5, 3.75) and fitted.epochs == 5
    assert note is not None and "milestones [82, 123] -> [2.5, 3.75]" in note and "164 epochs" in note
    lrs = [LRSchedule(None, fitted, 0.1, 5).lr_at(e) for e in (0, 2.4, 2.5, 3.8)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_a_setting_given_for_this_run_is_kept():
    s = dataclasses.replace(resolve("resnet20_cifar").schedule, milestones=[2])
    fitted, note = fit_to_run(s, 5, 164, fixed=frozenset({"milestones"}))
    assert fitted.milestones == (2,) and note is None


def test_exponential_decay_over_a_short_run_decays_as_much_as_the_paper_run():
    """Inception-v3: x0.94 every 2 of 100 epochs; over 10 epochs every 0.2: the same 50 decays."""
    s = resolve("inception_v3").schedule
    fitted, _ = fit_to_run(s, 10, 100)
    assert fitted.every == pytest.approx(0.2)  # a fraction of an epoch is a valid setting
    assert LRSchedule(None, fitted, 0.045, 10).lr_at(10) == pytest.approx(
        LRSchedule(None, s, 0.045, 100).lr_at(100)
    )


def test_plateau_patience_and_warmup_scale():
    fitted, _ = fit_to_run(resolve("alexnet").schedule, 9, 90)
    assert fitted.patience == 1  # 5 x 9/90 = 0.5 epochs: at least one
    fitted, note = fit_to_run(resolve("resnet20_cifar", "demo").schedule, 24, 12)
    assert fitted.warmup_epochs == 2 and note is not None and "warmup_epochs 1 -> 2" in note


def test_a_changed_schedule_is_checked_like_a_resolved_one():
    """A setting changed after resolve (dataclasses.replace) meets the same rules."""
    with pytest.raises(UserError, match=r"^schedule.every must be a number of epochs > 0, got 0$"):
        dataclasses.replace(resolve("inception_v3").schedule, every=0)


@pytest.mark.usefixtures("tiny_models_one_thread")
def test_train_scales_the_recipe_and_records_it(tmp_path, capsys):
    """`train --epochs 3` on a 90-epoch recipe (step at 30, 60): lr drops after epochs 1 and 2,
    config.yaml holds the scaled milestones, the command says it once."""
    out = tmp_path / "run"
    argv = ["train", "tiny_test", "--data", "synthetic", "--out", str(out), "--recipe", "resnet"]
    few = ["--epochs", "3", "--batch-size", "16", "--workers", "0", "--limit-train", "32"]
    few += ["--limit-val", "16"]
    assert main(argv + few) == 0
    err = capsys.readouterr().err
    assert err.count("schedule: step milestones [30, 60] -> [1, 2]") == 1, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["schedule"]["milestones"] == [1, 2] and cfg["schedule"]["epochs"] == 3
    lrs = [float(line.split(",")[1]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.1, 0.01, 0.001])
    # --set gives this run's own milestones: kept as they are, nothing to say
    assert main([*argv[:5], str(tmp_path / "r2"), *argv[6:], *few, "--set", "schedule.milestones=[2]"]) == 0
    err = capsys.readouterr().err
    assert "schedule:" not in err
    assert yaml.safe_load((tmp_path / "r2" / "config.yaml").read_text())["schedule"]["milestones"] == [2]
