"""Every option of every config group composes and trains for one epoch."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode

from conftest import CONF, QUICK, needs, options, quick_cfg, read_metrics, read_summary, run_cli
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
    assert list(metrics["epoch"]) == [0, 1]  # epoch 0: the network as initialized
    assert math.isfinite(metrics["val_loss"][0])
    assert (tmp_path / "best.pt").is_file()
    assert (tmp_path / "config.yaml").is_file()


SWEEP_PRESETS = [
    "activation_study",
    "capacity_study",
    "depth_vanishing",
    "reproduction",
    "tutorial",
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_a_sweep_preset_sweeps_without_dash_m(preset, tmp_path):
    # its sweep cut to one job on the command line, which wins over the preset's list
    one_job = ["activation=relu", "model.depth=1", "model.width=16", "trainer.seed=0"]
    one_job.append("trainer.steps=null")  # the tutorial's budget: trainer.epochs=1 decides
    result = run_cli(f"experiment={preset}", *QUICK, "trainer.epochs=1", *one_job, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [sweep] = [p.parent for p in tmp_path.glob("multirun/*/*/multirun.yaml")]
    assert read_summary(sweep / "0")["status"] == "completed"
    assert "report: reports/" in result.stdout  # the end-of-sweep report was built


def test_every_sweep_preset_is_a_sweep():
    presets = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    sweeps = {p for p in presets if "sweeper" in (CONF / "experiment" / f"{p}.yaml").read_text()}
    assert sweeps == set(SWEEP_PRESETS)
    for preset in sweeps:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", [f"experiment={preset}"], return_hydra_config=True)
        assert cfg.hydra.mode == RunMode.MULTIRUN, preset
