"""Every option of every config group composes and trains for one epoch."""

from __future__ import annotations

import math

import pytest

from conftest import needs, options, quick_cfg, read_metrics, read_summary
from fitscope.config import ACTIVATIONS
from fitscope.train.runner import run

GROUPS = ["data", "model", "activation", "optimizer", "trainer", "logger", "report"]
CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options():
    assert set(options("activation")) == set(ACTIVATIONS)
    assert {"mnist5k", "digits", "mnist", "fashion_mnist", "kmnist"} <= set(options("data"))
    assert {"sgd", "momentum", "adam", "adamw"} <= set(options("optimizer"))


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_trains_one_epoch(group, option, idx_root, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "logger" and option != "none":
        needs(option)
        if option == "visdom":  # no server here: it says so and the run goes on
            overrides.append("logger.visdom.timeout=0.5")
    if group == "data" and option in ("mnist", "fashion_mnist", "kmnist"):
        overrides += [f"data.root={idx_root}", "data.download=false"]
    cfg = quick_cfg(*overrides)  # digits, unless the data group is the one tested

    summary = run(cfg, tmp_path)

    assert summary["status"] == "completed"
    assert summary["epochs_run"] == 1
    assert read_summary(tmp_path)["status"] == "completed"
    metrics = read_metrics(tmp_path)
    assert list(metrics["epoch"]) == [1]
    assert math.isfinite(metrics["val_loss"][0])
    assert (tmp_path / "best.pt").is_file()
    assert (tmp_path / "config.yaml").is_file()
