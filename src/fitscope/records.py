"""The write stage: what a run leaves in its folder.

- `metrics.csv`: one row per epoch, flushed as soon as the epoch ends (a killed run keeps them);
- `summary.json`: status and results, rewritten atomically (never half-written);
- `config.yaml`: the resolved config;
- `best.pt`: the best-validation weights and what `fitscope.models.load_checkpoint` needs.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "best.pt"


class MetricsWriter:
    """Appends epoch rows to `metrics.csv`, flushing each one to the file system."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self._file = open(path, "w", newline="")  # noqa: SIM115 (closed by close())
        self._writer = csv.DictWriter(self._file, fieldnames=list(columns))
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON so that readers see the old file or the new one, never a part."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False
    ) as tmp:
        json.dump(data, tmp, indent=2, allow_nan=False, default=str)
        tmp.write("\n")
    os.replace(tmp.name, path)


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as file:
        return json.load(file)


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config as dotted keys (`model.depth`); list values become JSON text."""
    flat = pd.json_normalize(config, sep=".").to_dict(orient="records")[0] if config else {}
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in flat.items()}


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def save_checkpoint(
    path: Path, state_dict: Mapping[str, torch.Tensor], model_args: Mapping[str, Any], epoch: int
) -> None:
    cpu_state = {key: tensor.detach().cpu() for key, tensor in state_dict.items()}
    torch.save({"state_dict": cpu_state, "model_args": dict(model_args), "epoch": epoch}, path)


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    import hydra
    import numpy
    import omegaconf
    import torchvision

    import fitscope

    return {
        "fitscope": fitscope.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
    }


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any] | None:
    """The commit (and whether the tree had changes) of the repository fitscope runs from."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
