"""`hydra/launcher=ray_cluster`: Hydra's Ray launcher, with the runs where the command was typed.

Ray runs each job in a worker process whose working folder is Ray's own (where `ray start` ran,
or a session folder), not the folder the sweep command was typed in. With Hydra's `ray`
launcher a relative `hydra.sweep.dir` (fitscope's default, `multirun/<date>/<time>`) and
relative data paths then land in that other folder: the runs are trained, but the sweep folder
the command names stays empty and its report finds no run. `RayLauncher` launches exactly as
Hydra's does (`hydra_ray_launcher._core.launch`), with the sweep folder made absolute and each
job started in the command's working folder (which must exist on every node: a shared file
system, as on any cluster).

Hydra imports every module of `hydra_plugins` when it starts: without hydra-ray-launcher this
module imports and defines nothing (the preset, whose defaults name `ray`, then cannot be
composed: Hydra says it cannot load that config).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf, open_dict

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as HydraRayLauncher
except ImportError:  # hydra-ray-launcher is not installed
    HydraRayLauncher = None


def quoted(path: Path) -> str:
    """`path` as a quoted Hydra override value that composes to exactly `path` (paths may hold
    spaces, quotes, `=` or `${`): quotes and the backslashes before a quote or at the end are
    escaped, and `${` so that it is not an interpolation."""
    text = str(path).replace("${", "\\${")
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def in_folder(folder: str, task_function: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run the task in `folder`, the sweep command's working folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"the sweep command's working folder {folder} is not on {socket.gethostname()}: "
            "hydra/launcher=ray_cluster needs it on every node (a shared file system)"
        )
    os.chdir(folder)
    return task_function(cfg)


def with_absolute_sweep_dir(config: DictConfig) -> DictConfig:
    """A copy of the multirun's config whose jobs compose `hydra.sweep.dir` as an absolute
    path (a job's config is composed again from the Hydra overrides recorded here)."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()  # ${now:...} as resolved once
    absolute = copy.deepcopy(config)
    OmegaConf.copy_cache(from_config=config, to_config=absolute)
    with open_dict(absolute):
        absolute.hydra.sweep.dir = str(sweep_dir).replace("${", "\\${")  # not interpolated
        absolute.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(sweep_dir)}")
    return absolute


if HydraRayLauncher is not None:

    class RayLauncher(HydraRayLauncher):
        """Hydra's Ray launcher; the runs land in the sweep folder the command names."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from hydra_plugins.hydra_ray_launcher import _core

            assert self.config is not None and self.task_function is not None
            config, task_function = self.config, self.task_function
            self.config = with_absolute_sweep_dir(config)
            self.task_function = functools.partial(in_folder, os.getcwd(), task_function)
            try:
                return _core.launch(self, job_overrides, initial_job_idx)
            finally:
                self.config, self.task_function = config, task_function
