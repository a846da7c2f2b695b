"""Shared helpers: compose configs like the command line does, quick runs, MNIST-format files,
the real entry points in a subprocess, and a clean process for every test."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import Phase, settings

from fitscope.train.data import write_idx_dataset
from fitscope.train.runner import clear_caches

# Hypothesis profiles: `default` while developing (random examples, shrinking); `ci` (.ci/run sets
# HYPOTHESIS_PROFILE=ci) draws the same examples every time and reports a failure unshrunk, so
# no rare random example decides a landing and no shrink runs past CI's time
settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
RUN_PY = REPO / "src" / "run.py"
REPORT_PY = REPO / "src" / "report.py"
# The smallest embedded dataset and a small model: the tests check behaviour, not accuracy.
# Later overrides win, so a test can change any of them.
QUICK = ["data=digits", "model.width=16"]


def compose_cfg(*overrides: str):
    """The config `python src/run.py <overrides>` would get."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def quick_cfg(*overrides: str):
    """A quick, quiet run's config: `QUICK`, one epoch, then `overrides`."""
    return compose_cfg(*QUICK, "trainer.epochs=1", "trainer.console=quiet", *overrides)


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python src/run.py ARGS` in `cwd`, as a user types it."""
    return run_script(RUN_PY, *args, cwd=cwd, timeout=timeout, **kwargs)


def run_script(
    script: Path, *args: str, cwd: Path, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` in `cwd`."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        **kwargs,
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


@pytest.fixture(autouse=True)
def fresh_caches():
    """Every test starts without the datasets, splits and graphs an earlier test left in this
    process, as a new process would."""
    clear_caches()
    yield


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("torchvision_data")
    for folder in ("MNIST", "FashionMNIST", "KMNIST"):
        write_idx_dataset(root, folder)
    return root


def needs(module: str):
    """An optional package (an extra): skipped where it is not installed, except in CI, which
    installs every extra and sets FITSCOPE_ALL_EXTRAS=1 so that a missing one fails."""
    if os.environ.get("FITSCOPE_ALL_EXTRAS"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def needs_program(name: str) -> str:
    """The path of a program such as chromium, under the same rule as `needs`."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("FITSCOPE_ALL_EXTRAS"):
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def cli_env() -> dict[str, str]:
    """The environment `run_cli` gives the command line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def hears_ctrl_c() -> None:
    """For a child process: SIGINT raises KeyboardInterrupt, as in a terminal, even when the
    tests run where SIGINT is ignored (a shell's background job), which a child inherits."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """`python src/run.py ARGS` in `cwd`, started and left running (text pipes); as a context
    manager it is killed at the end unless it has ended."""
    return _KilledOnExit(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        preexec_fn=hears_ctrl_c,
    )


class _KilledOnExit(subprocess.Popen):
    def __exit__(self, *exc):
        if self.poll() is None:
            self.kill()
        return super().__exit__(*exc)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (`clusters.SlurmCluster`) for the whole test run;
    commands reach it through `cluster.env` (SLURM_CONF)."""
    from clusters import SlurmCluster, missing_slurm

    why = missing_slurm()
    if why:
        if os.environ.get("FITSCOPE_ALL_EXTRAS"):
            pytest.fail(f"no SLURM test cluster: {why}")
        pytest.skip(f"no SLURM test cluster: {why}")
    needs("hydra_plugins.hydra_submitit_launcher")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (`clusters.RayCluster`) for the whole test run; the sweep
    reaches it through `cluster.env` (RAY_ADDRESS)."""
    from clusters import RayCluster

    needs("ray")
    needs("hydra_plugins.hydra_ray_launcher")
    cluster = RayCluster().start()
    yield cluster
    cluster.stop()
