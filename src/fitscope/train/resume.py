"""Resume: running a sweep again into its folder skips the runs it already completed.

A run folder that holds a completed run of the same resolved config (same `config_hash`) is
skipped; a completed run of another config is never overwritten (`ResumeError`); failed and
unfinished runs run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fitscope import FitscopeError
from fitscope.config import config_hash
from fitscope.rundir import completed_summary
from fitscope.train.settings import validate


class ResumeError(FitscopeError):
    pass


def completed_run(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The summary of the completed run of this config in `run_dir`, marked `skipped: True`;
    None when there is none to keep. `ResumeError` when it completed another config."""
    previous = completed_summary(run_dir)
    if previous is None:
        return None
    validate(cfg)  # a bad value is refused as in any run, before the hashes are compared
    if previous.get("config_hash") != config_hash(cfg):
        raise ResumeError(
            f"{run_dir} holds a completed run of another config (config hash "
            f"{previous.get('config_hash')}, this one {config_hash(cfg)}); it is kept: "
            "run the sweep into a new hydra.sweep.dir"
        )
    return {**previous, "skipped": True}
