"""Shared helpers: compose configs like the command line does, write MNIST-format files, run
the real entry point in a subprocess."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
RUN_PY = REPO / "src" / "run.py"
# Small and fast: the tests check behaviour, not accuracy.
FAST = ["trainer.epochs=1", "model.width=16", "trainer.console=quiet"]


def compose_cfg(*overrides: str):
    """The config `python src/run.py <overrides>` would get."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def write_idx_dataset(root: Path, folder: str, n_train: int = 120, n_test: int = 40) -> Path:
    """MNIST-format (IDX) files as torchvision expects them under root/<folder>/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        # Each class gets a bright bar in its own rows, so the data is learnable.
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 3, :] = 250
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes()
        )
    return root


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python src/run.py ARGS` in `cwd`, as a user types it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


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
