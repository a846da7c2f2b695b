"""Conclusions a study stands on: epoch 0, the noise-robust fit verdict, the stuck-at-chance flag
with its cause, and the published effects, each on runs built for it (written by hand where
the point is one number, trained where the point is what training gives)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import quick_cfg, read_metrics
from fitscope.report.diagnose import curve_noise, diagnose
from fitscope.report.effects import published_effects
from fitscope.report.frames import collect
from fitscope.report.settings import ReportSettings
from fitscope.train.data import make_splits
from fitscope.train.diagnostics import SATURATION_MARGIN, activation_statistics
from fitscope.train.loop import evaluate
from fitscope.train.models import build_mlp, mlp_args
from fitscope.train.runner import run
from test_report import BASE_CONFIG, CHOICES, make_run, with_changes

SETTINGS = ReportSettings.from_mapping()
RNG = np.random.default_rng(0)


def curve_run(folder, val, train=None, train_acc=None, val_acc=None, extra=None, summary=None):
    """A run folder whose metrics.csv holds exactly these curves (epochs from 1, or from 0 when
    `extra` says so) and `extra` columns."""
    n = len(val)
    make_run(folder, ([1.0] * n, [1.0] * n, [1.0] * n), summary=True)
    frame = pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "train_loss": train if train is not None else np.linspace(1.0, 0.01, n),
            "train_acc": train_acc if train_acc is not None else [0.999] * n,
            "val_loss": val,
            "val_acc": val_acc if val_acc is not None else [0.95] * n,
            "lr": 0.01,
            "seconds": 0.1,
            **(extra or {}),
        }
    )
    frame.to_csv(folder / "metrics.csv", index=False)
    if summary:
        path = folder / "summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **summary}))
    return folder


def verdict_of(folder, settings=SETTINGS):
    return collect([folder], settings).runs.iloc[0]


# ------------------------------------------------------------------------ the fit verdict


def falling_then(plateau: np.ndarray, start: float = 1.0) -> np.ndarray:
    """A validation curve that falls from `start` to the plateau's first value over 26 epochs,
    then follows `plateau`."""
    fall = start * (plateau[0] / start) ** (np.arange(26) / 25)
    return np.concatenate([fall, plateau[1:]])


def test_a_noisy_plateau_is_not_overfit(tmp_path):
    # a dropout-0.5 run: validation loss wanders 0.160-0.184 over epochs 27-40, its lowest
    # point late in the plateau; the last epoch 11% above that point
    plateau = np.array(
        [0.172, 0.181, 0.165, 0.176, 0.184, 0.168, 0.174, 0.160, 0.179, 0.170, 0.183, 0.166, 0.178]
    )
    plateau = np.concatenate([[0.175], plateau])
    val = falling_then(plateau)
    assert val.min() == 0.160 and val[-1] / val.min() - 1 > 0.1  # the old rule: overfit
    row = verdict_of(curve_run(tmp_path / "run", val))
    assert row["diagnosis"] == "good fit", row["reason"]
    assert row["val_window"] == 5
    assert 0.004 < row["val_noise"] < 0.02  # the plateau's spread, not the fall before it
    assert row["val_rise"] < 0.05


def test_a_steady_rise_after_the_minimum_is_overfit(tmp_path):
    noise = RNG.normal(0, 0.004, 40)
    val = np.concatenate([np.linspace(1.0, 0.2, 12), 0.2 + 0.006 * np.arange(1, 29)]) + noise
    train = np.geomspace(1.0, 0.005, 40)
    row = verdict_of(curve_run(tmp_path / "run", val, train=train))
    assert row["diagnosis"] == "overfit"
    best = int(row["best_epoch"])
    assert row["reason"].startswith(f"overfit after epoch {best}:")
    assert row["reason"].endswith(f"best weights kept, test uses epoch {best}")
    assert row["val_rise"] > 0.5


def test_overfit_needs_the_rise_to_stand_above_the_noise(tmp_path):
    # the same +8% rise, once smooth and once inside noise twice as large as the rise per epoch
    rise = np.concatenate([np.linspace(1.0, 0.2, 20), np.linspace(0.2, 0.216, 20)])
    noisy = rise + np.tile([0.03, -0.03], 20)
    assert verdict_of(curve_run(tmp_path / "smooth", rise))["diagnosis"] == "overfit"
    assert verdict_of(curve_run(tmp_path / "noisy", noisy))["diagnosis"] == "good fit"
    tolerant = ReportSettings.from_mapping(noise_tolerance=0)  # no tolerance: the rise counts
    assert verdict_of(tmp_path / "noisy", tolerant)["diagnosis"] == "overfit"


def test_a_run_still_improving_is_not_converged_not_underfit(tmp_path):
    # a sigmoid run at 99.97% train accuracy whose validation loss still falls
    val = 0.3 + 0.7 * np.exp(-np.arange(40) / 25)
    row = verdict_of(curve_run(tmp_path / "run", val, train_acc=[0.9997] * 40))
    assert row["diagnosis"] == "not converged"
    assert "smoothed val loss still fell" in row["reason"] and "train longer" in row["reason"]
    # at 60% train accuracy too: training longer is the advice while the loss falls ...
    low_acc = verdict_of(curve_run(tmp_path / "low", val, train_acc=[0.6] * 40))
    assert low_acc["diagnosis"] == "not converged" and "train acc 60.0%" in low_acc["reason"]
    # ... and underfit once it no longer does
    flat = np.concatenate([val[:20], [val[19]] * 20])
    assert verdict_of(curve_run(tmp_path / "flat", flat, train_acc=[0.6] * 40))["diagnosis"] == (
        "underfit"
    )


def test_a_run_whose_best_epoch_is_its_last_and_still_falling_has_not_converged(tmp_path):
    # validation loss still falls at the end, by less than converge_tol over the last epochs:
    # its best epoch is its last, so its training has not finished (it was "good fit")
    epochs = np.arange(1, 41)
    val = 0.29 + 0.2 * np.exp(-epochs / 4) - 0.0002 * epochs
    row = verdict_of(curve_run(tmp_path / "slow", val))
    assert row["best_epoch"] == 40
    assert row["diagnosis"] == "not converged"
    assert row["reason"].startswith("best epoch is the last (40) and smoothed val loss still")
    # a noisy plateau whose lowest epoch happens to be its last is not that: a good fit
    plateau = 0.25 + 0.004 * np.tile([1.0, -0.5, 0.5, -1.0], 10)
    plateau[-1] = 0.24
    noisy = verdict_of(curve_run(tmp_path / "noisy", falling_then(plateau)))
    assert noisy["best_epoch"] == noisy["epochs_run"]
    assert noisy["diagnosis"] == "good fit"


def test_the_reason_says_which_weights_the_test_used(tmp_path):
    val = np.concatenate([np.linspace(1.0, 0.2, 7), 0.2 + 0.05 * np.arange(1, 6)])
    folder = curve_run(
        tmp_path / "run", val, summary={"stopped_early": True, "epochs_run": 12, "best_epoch": 7}
    )
    row = verdict_of(folder)
    assert row["best_epoch"] == 7
    assert "best weights kept, test uses epoch 7" in row["reason"]
    assert row["reason"].endswith("the trainer stopped early at epoch 12")


def test_curve_noise_is_the_noise_not_the_trend():
    sigma = 0.01
    noise = RNG.normal(0, sigma, 4000)
    assert curve_noise(noise) == pytest.approx(sigma, rel=0.1)
    trend = np.linspace(0, 1, 4000)
    assert curve_noise(trend) == pytest.approx(0, abs=1e-12)
    assert curve_noise(trend + noise) == pytest.approx(sigma, rel=0.1)
    assert curve_noise([0.5, 0.4]) == 0.0


def test_short_runs_are_judged_unsmoothed():
    metrics = pd.DataFrame(
        {
            "epoch": range(1, 11),
            "train_loss": np.linspace(1, 0.1, 10),
            "train_acc": 0.99,
            "val_loss": [1.0, 0.6, 0.45, 0.4, 0.42, 0.46, 0.5, 0.55, 0.6, 0.65],
            "val_acc": 0.9,
        }
    )
    verdict = diagnose(metrics, SETTINGS)
    assert verdict.val_window == 1 and verdict.smoothed_min_epoch == 4
    long = pd.concat([metrics] * 3, ignore_index=True).assign(epoch=range(1, 31))
    assert diagnose(long, SETTINGS).val_window == 5


# ------------------------------------------------------------------------ epoch 0


def test_epoch_0_is_the_untrained_network(tmp_path):
    cfg = quick_cfg("trainer.epochs=2", "model.dropout=0.5")
    run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["epoch"].tolist() == [0, 1, 2]
    # the same model, built as the run builds it, evaluated by hand
    torch.manual_seed(0)
    splits = make_splits(cfg.data, torch.device("cpu"))
    model = build_mlp(**mlp_args(cfg, splits.n_features, splits.n_classes))
    loss, acc = evaluate(model, splits.x_val, splits.y_val, 10000).tolist()
    first = metrics.iloc[0]
    assert first["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert first["val_acc"] == pytest.approx(acc)
    assert first["grad_rms_1"] > 0 and first["clip_fraction"] == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["initial"]["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert summary["epochs_run"] == 2 and summary["best_epoch"] in (1, 2)


def test_epoch_0_is_never_the_best_or_an_early_stop(tmp_path):
    # a run that only got worse: its untrained network had the lowest validation loss
    folder = make_run(tmp_path / "run", ([1.0] * 4, [1.0] * 4, [1.0] * 4))
    frame = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3, 4],
            "train_loss": [2.3, 2.0, 1.9, 1.8, 1.7],
            "train_acc": [0.1, 0.95, 0.96, 0.97, 0.98],
            "val_loss": [0.1, 0.5, 0.6, 0.7, 0.8],
            "val_acc": [0.1, 0.9, 0.9, 0.9, 0.9],
            "lr": 0.01,
            "seconds": 0.1,
        }
    )
    frame.to_csv(folder / "metrics.csv", index=False)
    row = collect([folder], ReportSettings.from_mapping(patience=2)).runs.iloc[0]
    assert row["best_epoch"] == 1 and row["early_stopping_epoch"] == 3
    assert row["epochs_run"] == 4
    assert row["initial_val_loss"] == 0.1


def test_restored_epoch_is_the_lowest_loss_not_keras_last_improvement(tmp_path):
    # min_delta 0.05: epoch 3 lowers the loss by 0.01 only. Keras' restore_best_weights keeps
    # epoch 2 (the last improvement by more than min_delta); the report restores epoch 3.
    folder = curve_run(tmp_path / "run", [1.0, 0.5, 0.49, 0.6, 0.7])
    settings = ReportSettings.from_mapping(patience=2, min_delta=0.05)
    row = collect([folder], settings).runs.iloc[0]
    assert row["early_stopping_epoch"] == 4 and row["restored_epoch"] == 3


@pytest.mark.slow
def test_selu_with_lecun_init_keeps_mean_0_std_1_at_epoch_0(tmp_path):
    for init in ("lecun", "default"):
        cfg = quick_cfg("activation=selu", f"model.init={init}", "model.depth=6", "model.width=256")
        run(cfg, tmp_path / init)
    lecun, default = read_metrics(tmp_path / "lecun"), read_metrics(tmp_path / "default")
    means = lecun.loc[0, [f"act_mean_{i}" for i in range(1, 7)]].to_numpy(float)
    stds = lecun.loc[0, [f"act_std_{i}" for i in range(1, 7)]].to_numpy(float)
    assert np.abs(means).max() < 0.15 and np.abs(stds - 1).max() < 0.15
    # PyTorch's default init shrinks the std layer by layer instead
    shrunk = default.loc[0, [f"act_std_{i}" for i in range(1, 7)]].to_numpy(float)
    assert (np.diff(shrunk) < 0).all() and shrunk[-1] < 0.5


# ------------------------------------------------------------------------ saturation


def test_saturation_counts_outputs_within_0_01_of_the_bounds():
    # one hidden sigmoid unit whose pre-activation is the input itself
    model = build_mlp(1, 2, depth=1, width=1, activation={"name": "sigmoid"}, init="xavier")
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    edge = math.log((1 - SATURATION_MARGIN) / SATURATION_MARGIN)  # sigmoid(edge) = 0.99
    x = torch.tensor([[-edge - 0.1], [-edge + 0.1], [0.0], [edge - 0.1], [edge + 0.1]])
    stats = activation_statistics(model, x, "sigmoid")
    assert stats[-1].item() == pytest.approx(2 / 5)  # the two beyond 0.01 of 0 or 1
    tanh = build_mlp(1, 2, depth=1, width=1, activation={"name": "tanh"}, init="xavier")
    with torch.no_grad():
        tanh[0].weight.fill_(1.0)
        tanh[0].bias.zero_()
    edge = math.atanh(1 - SATURATION_MARGIN)
    x = torch.tensor([[-edge - 0.1], [0.5], [edge - 0.1], [edge + 0.1]])
    assert activation_statistics(tanh, x, "tanh")[-1].item() == pytest.approx(2 / 4)


# ------------------------------------------------------------------------ stuck at chance


def _stuck_metrics(n_layers=4, **columns) -> dict:
    """Layer columns for a run at chance: healthy gradients and signal unless `columns` say."""
    layers = [*map(str, range(1, n_layers)), "out"]
    extra = {f"grad_rms_{layer}": [0.01] * 5 for layer in layers}
    extra |= {f"signal_{layer}": [0.5] * 5 for layer in layers[:-1]}
    extra |= {"grad_norm_total": [1.0] * 5, "clip_fraction": [0.0] * 5}
    extra.update(columns)
    return extra


CHANCE = {"val": [2.302, 2.303, 2.302, 2.301, 2.302], "val_acc": [0.1, 0.11, 0.1, 0.12, 0.1]}


@pytest.mark.parametrize(
    ("columns", "flag", "numbers"),
    [
        (
            {"grad_rms_1": [1e-6] * 5},
            "stuck at chance (vanishing gradients toward the input)",
            "ratio 0.0001",
        ),
        (
            {"signal_3": [0.001] * 5},
            "stuck at chance (collapsed forward signal)",
            "0.002 of the first's",
        ),
        ({"dead_2": [0.0, 0.2, 0.5, 0.8, 0.9]}, "stuck at chance (dead units)", "up to 90%"),
        ({"saturated_1": [0.7] * 5}, "stuck at chance (saturated units)", "up to 70%"),
        (
            {"clip_fraction": [1.0] * 5},
            "stuck at chance (clipped gradients)",
            "clipping on up to 100%",
        ),
        ({}, "stuck at chance", "no cause in the diagnostics"),
    ],
    ids=["vanishing", "collapse", "dead", "saturated", "clipping", "unknown"],
)
def test_a_run_at_chance_is_flagged_with_its_cause(tmp_path, columns, flag, numbers):
    folder = curve_run(
        tmp_path / "run",
        CHANCE["val"],
        train_acc=[0.1] * 5,
        val_acc=CHANCE["val_acc"],
        extra=_stuck_metrics(**columns),
    )
    row = verdict_of(folder)
    assert row["flag"] == flag
    assert numbers in row["flag_reason"]
    assert row["flag_reason"].startswith("val acc never above 12.0% (chance 10%)")


def test_when_gradients_vanish_and_the_signal_collapses_the_smaller_ratio_is_named(tmp_path):
    both = _stuck_metrics(grad_rms_1=[0.00004] * 5, signal_3=[0.0005] * 5)  # 0.004 and 0.001
    row = verdict_of(
        curve_run(tmp_path / "a", CHANCE["val"], val_acc=CHANCE["val_acc"], extra=both)
    )
    assert row["flag"] == "stuck at chance (collapsed forward signal)"
    both = _stuck_metrics(grad_rms_1=[1e-8] * 5, signal_3=[0.0005] * 5)  # 1e-6 and 0.001
    row = verdict_of(
        curve_run(tmp_path / "b", CHANCE["val"], val_acc=CHANCE["val_acc"], extra=both)
    )
    assert row["flag"] == "stuck at chance (vanishing gradients toward the input)"


def test_chance_is_judged_on_the_class_count_and_the_loss(tmp_path):
    # 100 classes: 8% accuracy is not chance (1% + 5 points) ... but a loss at ln 100 is
    acc = [0.08] * 5
    folder = curve_run(
        tmp_path / "a", [2.0, 1.9, 1.8, 1.7, 1.6], val_acc=acc, summary={"classes": 100}
    )
    assert verdict_of(folder)["flag"] == ""
    level = math.log(100)
    folder = curve_run(tmp_path / "b", [level * 1.01] * 5, val_acc=acc, summary={"classes": 100})
    assert verdict_of(folder)["flag"].startswith("stuck at chance")
    assert "val loss stayed within 5% of ln 100" in verdict_of(folder)["flag_reason"]


def test_a_run_whose_accuracy_left_chance_is_not_stuck_by_its_loss(tmp_path):
    # loss still within 5% of ln 10 (2.19-2.42) while accuracy climbs to 33%: learning, slowly
    val_acc = [0.11, 0.15, 0.2, 0.26, 0.33]
    folder = curve_run(tmp_path / "run", [2.4, 2.35, 2.3, 2.26, 2.24], val_acc=val_acc)
    assert verdict_of(folder)["flag"] == ""


def test_a_diverged_run_is_not_flagged_stuck(tmp_path):
    folder = curve_run(
        tmp_path / "run",
        [2.4, float("nan")],
        val_acc=[0.1, 0.1],
        extra={"grad_norm_total": [1e12, float("nan")], "clip_fraction": [0.0, 0.0]},
        summary={"status": "diverged", "error": "loss out of bounds at epoch 2"},
    )
    row = verdict_of(folder)
    assert row["diagnosis"] == "diverged" and row["flag"] == ""


def test_exploding_gradients_come_before_the_dead_units_they_leave(tmp_path):
    extra = _stuck_metrics(dead_1=[0.9] * 5, grad_norm_total=[1.0, 5e6, 1e3, 10.0, 1.0])
    folder = curve_run(tmp_path / "run", CHANCE["val"], val_acc=CHANCE["val_acc"], extra=extra)
    row = verdict_of(folder)
    assert row["flag"] == "stuck at chance (exploding gradients)"
    assert "up to 90% of a layer's units dead" in row["flag_reason"]


def test_a_report_builds_when_the_first_epoch_has_no_finite_loss(tmp_path):
    from fitscope.report.build import build_report

    curve_run(tmp_path / "s" / "0", [float("nan")] * 3, summary={"status": "diverged"})
    curve_run(tmp_path / "s" / "1", [1.0, 0.5, 0.4])
    folder = build_report([tmp_path / "s"], ReportSettings.from_mapping(dir=str(tmp_path / "r")))
    assert (folder / "runs.png").is_file()


def test_a_healthy_run_learning_slowly_is_not_stuck(tmp_path):
    val_acc = [0.12, 0.14, 0.16, 0.2, 0.3]  # leaves chance by more than 5 points
    folder = curve_run(tmp_path / "run", [2.3, 2.25, 2.2, 2.1, 1.9], val_acc=val_acc)
    assert verdict_of(folder)["flag"] == ""


@pytest.mark.slow
def test_a_sweep_of_healthy_and_stuck_nets_labels_each(tmp_path):
    runs = {
        "healthy-relu": ("activation=relu", "model.depth=2", "optimizer=adam"),
        "healthy-selu": ("activation=selu", "model.depth=8", "optimizer=adam"),
        "healthy-tanh": ("activation=tanh", "model.depth=4", "optimizer=adam"),
        "collapsed": ("activation=relu", "model.depth=8", "model.init=default", "optimizer=sgd"),
        "vanishing": ("activation=sigmoid", "model.depth=8", "model.init=default", "optimizer=sgd"),
    }
    for name, overrides in runs.items():
        cfg = quick_cfg("data=mnist5k", "model.width=128", "trainer.epochs=4", *overrides)
        run(cfg, tmp_path / "sweep" / name)
    flags = collect([tmp_path / "sweep"]).runs.set_index("run")["flag"]
    assert flags.to_dict() == {
        "collapsed": "stuck at chance (collapsed forward signal)",
        "healthy-relu": "",
        "healthy-selu": "",
        "healthy-tanh": "",
        "vanishing": "stuck at chance (vanishing gradients toward the input)",
    }


# ------------------------------------------------------------------------ published effects


@pytest.mark.slow
def test_the_reproduction_preset_reproduces_the_three_effects(tmp_path):
    from conftest import compose_cfg

    for activation in ("sigmoid", "relu", "selu"):
        for init in ("default", "auto"):
            cfg = compose_cfg(
                "experiment=reproduction",
                f"activation={activation}",
                f"model.init={init}",
                "trainer.epochs=4",
                "trainer.console=quiet",
            )
            run(cfg, tmp_path / "sweep" / f"{activation}-{init}")
    effects = published_effects(collect([tmp_path / "sweep"]))
    assert [(e.source, e.verdict) for e in effects] == [
        ("Glorot & Bengio (2010)", "reproduced"),
        ("He et al. (2015)", "reproduced"),
        ("Klambauer et al. (2017)", "reproduced"),
    ]


def _selu_run(folder, act_std: float, width: int = 2048):
    """A SELU/LeCun depth-4 run whose epoch-0 activation std is `act_std` in every layer."""
    config = with_changes(
        activation__name="selu", model__init="lecun", model__depth=4, model__width=width
    )
    folder = curve_run(
        folder,
        np.linspace(1, 0.2, 5),
        extra={f"act_std_{i}": [act_std] * 5 for i in range(1, 5)}
        | {f"act_mean_{i}": [0.0] * 5 for i in range(1, 5)},
    )
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    frame = pd.read_csv(folder / "metrics.csv")
    frame["epoch"] -= 1  # the first row is epoch 0
    frame.to_csv(folder / "metrics.csv", index=False)
    return folder


def _effect_runs(tmp_path, act_std: float) -> list:
    return published_effects(collect([_selu_run(tmp_path / f"std{act_std}", act_std)]))


def test_the_selu_check_fails_when_the_std_drifts(tmp_path):
    [kept] = _effect_runs(tmp_path, 1.05)
    assert kept.verdict == "reproduced"
    [drifted] = _effect_runs(tmp_path, 0.6)
    assert drifted.verdict == "not reproduced" and "std 0.6" in drifted.evidence


def test_the_selu_fixed_point_is_judged_where_layers_are_wide(tmp_path):
    """A 16-unit layer's mean wanders over its few units: a sweep of widths reproduces the
    effect in its wide layers and says which widths missed, rather than calling it false."""
    _selu_run(tmp_path / "sweep" / "0", 0.8, width=16)
    _selu_run(tmp_path / "sweep" / "1", 0.98, width=256)
    _selu_run(tmp_path / "sweep" / "2", 1.01, width=1024)
    [effect] = published_effects(collect([tmp_path / "sweep"]))
    assert effect.verdict == "reproduced at width 256 and wider"
    assert "not at 16" in effect.evidence
    shutil.rmtree(tmp_path / "sweep" / "2")
    _selu_run(tmp_path / "sweep" / "2", 0.7, width=1024)  # the widest drifts: not reproduced
    [effect] = published_effects(collect([tmp_path / "sweep"]))
    assert effect.verdict == "not reproduced"


def test_effects_without_diagnostics_are_not_testable(tmp_path):
    for name, activation in (("s", "sigmoid"), ("r", "relu")):
        config = with_changes(activation__name=activation, model__init="default", model__depth=4)
        make_run(tmp_path / name, config=config, choices={**CHOICES, "activation": activation})
    effects = published_effects(collect([tmp_path]))
    assert [(e.source, e.verdict) for e in effects] == [
        ("Glorot & Bengio (2010)", "not testable"),
        ("He et al. (2015)", "not testable"),
    ]


def test_shallow_runs_test_no_published_effect(tmp_path):
    config = with_changes(activation__name="sigmoid", model__init="default")  # depth 2
    make_run(tmp_path / "run", config=config, choices={**CHOICES, "activation": "sigmoid"})
    assert published_effects(collect([tmp_path / "run"])) == []
    assert BASE_CONFIG["model"]["depth"] == 2
