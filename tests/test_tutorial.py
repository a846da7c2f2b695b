"""The classic tutorial's experiment reproduced honestly: a budget in SGD steps that holds on any
data size, the preset's seeds, and dead output units (an activation after the output layer) named
in the report."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st

from conftest import CONF, compose_cfg, quick_cfg, read_metrics, read_summary
from fitscope.report.frames import collect
from fitscope.train.diagnostics import activation_statistics, diagnostic_columns
from fitscope.train.models import build_mlp
from fitscope.train.runner import run
from fitscope.train.settings import epochs_for_steps, steps_per_epoch
from test_verdicts import CHANCE, _stuck_metrics, curve_run, verdict_of

# ------------------------------------------------------------------------ the step budget


def test_the_tutorials_budget_in_epochs_on_each_data_size():
    assert epochs_for_steps(3000, 60_000, 200) == 10  # the lesson: full MNIST, 300 steps/epoch
    assert epochs_for_steps(3000, 3_200, 200) == 188  # the embedded digits' training part
    assert steps_per_epoch(3_201, 200) == 17  # the last, smaller batch is a step too
    assert epochs_for_steps(1, 10, 200) == 1


@given(steps=st.integers(1, 10**6), samples=st.integers(1, 10**6), batch=st.integers(1, 10**4))
def test_a_step_budget_is_the_fewest_whole_epochs_that_reach_it(steps, samples, batch):
    epochs, per_epoch = epochs_for_steps(steps, samples, batch), steps_per_epoch(samples, batch)
    assert epochs * per_epoch >= steps > (epochs - 1) * per_epoch
    assert per_epoch == math.ceil(samples / batch)


def test_a_run_with_a_step_budget_trains_the_epochs_it_gives(tmp_path):
    cfg = quick_cfg("trainer.steps=20", "trainer.batch_size=100", "trainer.epochs=500")
    summary = run(cfg, tmp_path)
    train = summary["samples"]["train"]
    per_epoch = math.ceil(train / 100)
    epochs = math.ceil(20 / per_epoch)
    assert summary["budget"] == {
        "kind": "steps",
        "steps": 20,
        "steps_per_epoch": per_epoch,
        "epochs": epochs,
        "steps_planned": epochs * per_epoch,
    }
    assert summary["epochs"] == summary["epochs_run"] == epochs  # not trainer.epochs' 500
    assert read_metrics(tmp_path)["epoch"].tolist() == list(range(epochs + 1))  # and epoch 0


def test_without_a_step_budget_the_epochs_are_the_budget(tmp_path):
    summary = run(quick_cfg("trainer.epochs=2"), tmp_path)
    assert summary["budget"]["kind"] == "epochs" and summary["budget"]["steps"] is None
    assert summary["budget"]["steps_planned"] == 2 * summary["budget"]["steps_per_epoch"]


def test_a_resumed_run_keeps_its_step_budget(tmp_path):
    cfg = quick_cfg("trainer.steps=20", "trainer.batch_size=100")
    first = run(cfg, tmp_path)
    again = run(cfg, tmp_path)  # a sweep run again into its folder: the run is kept
    assert again["skipped"] and again["budget"] == first["budget"]
    # an unfinished run starts over with the same budget
    summary = read_summary(tmp_path)
    (tmp_path / "summary.json").write_text(
        (tmp_path / "summary.json").read_text().replace('"completed"', '"failed"')
    )
    rerun = run(cfg, tmp_path)
    assert not rerun.get("skipped") and rerun["budget"] == summary["budget"]
    assert rerun["epochs_run"] == summary["epochs_run"]


def test_a_bad_step_budget_is_refused_in_one_line(tmp_path):
    from fitscope.config import ConfigError

    with pytest.raises(ConfigError, match=r"trainer\.steps=0 .*null or an integer >= 1"):
        run(quick_cfg("trainer.steps=0"), tmp_path)


# ------------------------------------------------------------------------ the preset


def test_the_tutorial_preset_sweeps_both_activations_over_five_seeds():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", ["experiment=tutorial"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params["activation"].split(",")) == {"leaky", "relu"}
    assert len(params["trainer.seed"].split(",")) >= 5
    assert cfg.trainer.steps == 3000 and cfg.data.name == "mnist5k"  # offline by default


# ------------------------------------------------------------------------ dead output units


def test_dead_output_units_are_measured_after_a_final_activation():
    torch.manual_seed(0)
    model = build_mlp(20, 10, depth=2, width=16, activation={"name": "relu"}, final_activation=True)
    with torch.no_grad():
        model[4].bias[:3] = -100.0  # three logits below zero for every input: ReLU zeroes them
    x = torch.randn(256, 20)
    columns = [c for c in diagnostic_columns(model, "relu") if not c.startswith(("grad", "clip"))]
    values = dict(zip(columns, activation_statistics(model, x, "relu").tolist(), strict=True))
    assert values["dead_out"] == pytest.approx(0.3)
    leaky = build_mlp(
        20, 10, depth=2, width=16, activation={"name": "leaky"}, final_activation=True
    )
    with torch.no_grad():
        leaky[4].bias[:3] = -100.0  # LeakyReLU keeps them alive: they still vary with the input
    stats = activation_statistics(leaky, x, "leaky")
    assert stats[-1].item() == 0.0
    plain = build_mlp(20, 10, depth=2, width=16, activation={"name": "relu"})
    assert "dead_out" not in diagnostic_columns(plain, "relu")  # no activation after the output


def test_a_run_whose_output_units_died_is_named(tmp_path):
    learning = {"val_acc": [0.5, 0.6, 0.65, 0.7, 0.7]}
    extra = _stuck_metrics(dead_out=[0.0, 0.1, 0.2, 0.3, 0.3])
    folder = curve_run(tmp_path / "dead", [1.5, 1.2, 1.1, 1.0, 1.0], extra=extra, **learning)
    row = verdict_of(folder)
    assert row["flag"] == "dead output units" and row["dead_outputs"] == 3
    assert row["flag_reason"].startswith("3 of 10 output units dead at the last epoch")
    healthy = curve_run(
        tmp_path / "alive", [1.5, 1.2, 1.1, 1.0, 1.0], extra=_stuck_metrics(dead_out=[0.0] * 5)
    )
    assert verdict_of(healthy)["flag"] == ""
    every = _stuck_metrics(dead_out=[1.0] * 5)
    stuck = curve_run(tmp_path / "all", CHANCE["val"], val_acc=CHANCE["val_acc"], extra=every)
    assert verdict_of(stuck)["flag"] == "stuck at chance (dead output units)"


@pytest.mark.slow
def test_the_tutorial_setup_records_dead_outputs_per_epoch(tmp_path):
    cfg = compose_cfg(
        "experiment=tutorial",
        "activation=relu",
        "trainer.steps=64",
        "trainer.console=quiet",
    )
    run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert "dead_out" in metrics.columns and metrics["dead_out"].between(0, 1).all()
    row = collect([tmp_path]).runs.iloc[0]
    assert pd.notna(row["dead_outputs"])
    assert row["dead_outputs"] == round(metrics["dead_out"].iloc[-1] * 10)
