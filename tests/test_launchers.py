"""Launchers, resume, presets, the Optuna search and the benchmark, through the real command
line."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import QUICK as QUICK_DATA
from conftest import compose_cfg, needs, options, read_summary, run_cli
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


def test_cpu_launcher_is_one_single_threaded_worker_per_core(tmp_path):
    result = run_cli("hydra/launcher=cpu", "--cfg", "hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher._target_ == "hydra_plugins.fitscope_launchers.cpu_launcher.CpuLauncher"
    assert (launcher.n_jobs, str(launcher.batch_size)) == (-1, "1")


def test_cpu_launcher_hands_out_the_longest_runs_first():
    from types import SimpleNamespace

    from hydra_plugins.fitscope_launchers.cpu_launcher import longest_first

    loader = SimpleNamespace(load_sweep_config=lambda config, overrides: compose_cfg(*overrides))
    launcher = SimpleNamespace(hydra_context=SimpleNamespace(config_loader=loader), config=None)
    jobs = [
        ["model.width=100"],
        ["model.width=400", "model.depth=3"],
        ["activation=nope"],  # cannot be composed: it fails at once in its job, handed out last
        ["model.width=400"],
        ["model.width=400", "trainer.epochs=80"],
        ["data=digits", "model.width=400"],
        ["model.width=100", "trainer.steps=100000"],
    ]
    assert longest_first(launcher, jobs) == [6, 4, 1, 3, 0, 5, 2]


def test_cpu_launcher_gives_the_basic_launchers_results_run_by_run(tmp_path):
    # two runs side by side, each on one thread, against one after another on every thread:
    # the same runs, the same curves within float rounding (sums in another order), the same
    # best epochs; each worker trains with one thread
    sweep = [*QUICK, "trainer.epochs=4", "activation=relu,tanh", "model.width=64"]
    for launcher in ("basic", "cpu"):
        result = run_cli(
            "-m", f"hydra/launcher={launcher}", *sweep, f"hydra.sweep.dir={launcher}", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    for job in "01":
        basic, cpu = (read_summary(tmp_path / way / job) for way in ("basic", "cpu"))
        assert basic["overrides"] == cpu["overrides"] and cpu["status"] == "completed"
        assert (basic["threads"], cpu["threads"]) == (torch.get_num_threads(), 1)
        assert basic["best_epoch"] == cpu["best_epoch"]
        a, b = (pd.read_csv(tmp_path / way / job / "metrics.csv") for way in ("basic", "cpu"))
        columns = [c for c in a.columns if c != "seconds"]
        pd.testing.assert_frame_equal(a[columns], b[columns], rtol=1e-4, atol=1e-7)
        assert basic["test_best"] == pytest.approx(cpu["test_best"], rel=1e-4)
    runs = pd.read_csv(tmp_path / "reports" / "cpu" / "runs.csv")
    assert runs["activation"].tolist() == ["relu", "tanh"]  # the end-of-sweep report


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
