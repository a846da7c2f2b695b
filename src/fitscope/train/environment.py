"""What a run records about where it ran: library versions, the git commit, the device."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def _installed_version(distribution: str) -> str | None:
    """A library's version as installed, read without importing it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """The versions a run depends on. torchvision is read, never imported: a torchvision built
    for another torch fails on import (`operator torchvision::nms does not exist`), and only
    the torchvision datasets need it."""
    import hydra
    import numpy
    import omegaconf

    import fitscope

    return {
        "fitscope": fitscope.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _installed_version("torchvision"),
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


def gpu_record(device: torch.device) -> dict[str, Any] | None:
    """The GPU a run trained on, for summary.json: its index among the visible devices, name,
    UUID and `CUDA_VISIBLE_DEVICES` (which a scheduler sets to the GPUs it gave the job)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    uuid = getattr(properties, "uuid", None)
    return {
        "index": index,
        "name": properties.name,
        "uuid": str(uuid) if uuid is not None else None,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def cluster_job() -> dict[str, Any] | None:
    """The cluster job a run trains in, for summary.json: SLURM's job id (`<array job>_<task>`
    for a job array, as `squeue` and `sacct` show it) and how often SLURM restarted it (a
    requeued job starts its run over). None outside SLURM."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {
        "scheduler": "slurm",
        "job_id": f"{array[0]}_{array[1]}" if all(array) else env["SLURM_JOB_ID"],
        "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        "node": env.get("SLURMD_NODENAME"),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
