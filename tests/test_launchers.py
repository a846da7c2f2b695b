"""Launchers, resume, presets, the Optuna search and the benchmark, through the real command
line."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import QUICK as QUICK_DATA
from conftest import REPO, compose_cfg, needs, options, read_summary, run_cli
from fitscope.train.runner import run

pytestmark = pytest.mark.slow
QUICK = [*QUICK_DATA, "trainer.epochs=2"]


@pytest.mark.parametrize(
    ("launcher", "package"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher"),
    ],
)
def test_launcher_runs_the_sweep_and_feeds_the_report(launcher, package, tmp_path):
    needs(package)
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    result = run_cli(
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        *QUICK,
        "activation=relu,tanh",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [read_summary(tmp_path / "sweep" / j)["status"] for j in "01"] == ["completed"] * 2
    runs = pd.read_csv(tmp_path / "reports" / "sweep" / "runs.csv")
    assert runs["activation"].tolist() == ["relu", "tanh"]


def test_resume_skips_completed_runs_and_reruns_failed_ones(tmp_path):
    first = run_cli("-m", *QUICK, "model.depth=1,-1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert first.returncode != 0
    done = tmp_path / "sweep" / "0"
    files = ("summary.json", "metrics.csv", "best.pt")
    before = {name: (done / name).read_bytes() for name in files}

    # The user fixes the bad value and runs the sweep again into the same folder.
    second = run_cli("-m", *QUICK, "model.depth=1,2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    output = second.stdout + second.stderr
    assert "skipped, already completed" in output
    assert "resume: 1 of 2 runs were already completed with the same config" in output
    assert {name: (done / name).read_bytes() for name in before} == before  # untouched
    assert read_summary(tmp_path / "sweep" / "1")["status"] == "completed"

    # A different sweep into the same folder never overwrites a completed run.
    third = run_cli("-m", *QUICK, "model.depth=3", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert third.returncode != 0
    assert "holds a completed run of another config" in third.stderr
    assert {name: (done / name).read_bytes() for name in before} == before


def test_optuna_search_returns_the_best_validation_loss(tmp_path):
    needs("hydra_plugins.hydra_optuna_sweeper")
    result = run_cli(
        "-m",
        "hparams_search=lr_optuna",
        "hydra.sweeper.n_trials=3",
        *QUICK,
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    losses = [read_summary(tmp_path / "sweep" / str(j))["best"]["val_loss"] for j in range(3)]
    assert best.best_value == pytest.approx(min(losses))
    assert set(best.best_params) == {"optimizer.lr", "optimizer.weight_decay"}


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_preset_composes_and_its_sweep_is_declared(preset, tmp_path):
    result = run_cli(f"experiment={preset}", "--cfg", "hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    hydra_cfg = OmegaConf.create(result.stdout)
    assert hydra_cfg.hydra.sweeper.params  # every preset is a study: a sweep


def test_tutorial_preset_is_the_classic_setup_and_runs_offline_on_mnist5k(tmp_path):
    cfg = compose_cfg("experiment=tutorial")
    assert cfg.data.name == "mnist5k"  # offline; data=mnist for the lesson's own data
    assert (cfg.model.depth, cfg.model.width, cfg.model.final_activation) == (2, 200, True)
    assert (cfg.activation.name, cfg.optimizer.name, cfg.optimizer.lr) == ("leaky", "sgd", 0.01)
    assert (cfg.trainer.steps, cfg.trainer.batch_size) == (3000, 200)  # 10 epochs of MNIST
    offline = compose_cfg("experiment=tutorial", "trainer.steps=16", "trainer.console=quiet")
    summary = run(offline, tmp_path)
    assert summary["status"] == "completed" and summary["epochs_run"] == 1


def test_benchmark_quick_prints_both_loops_and_the_ratio(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "src" / "bench.py"), "--quick", "--device", "cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: cpu")
    assert any(line.startswith("tutorial loop (DataLoader):") for line in lines)
    fitscope = [line for line in lines if line.startswith("fitscope, compile=none fp32")]
    assert len(fitscope) == 2  # diagnostics off and on
    assert all("x the tutorial's samples/s), of which training" in line for line in fitscope)
    assert any("end to end with the report" in line for line in lines)
    assert "steps: none" in lines[-1]
