"""What a run records about where it ran: library versions, the git commit, the device."""

from __future__ import annotations

import functools
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
