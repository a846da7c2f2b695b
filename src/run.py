"""fitscope's command line: `python src/run.py [-m] [group=option ...] [key=value ...]`.

One job trains one MLP into its own run folder under multirun/. See README.md.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from fitscope import FitscopeError
from fitscope.train.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one run; returns its best validation loss (inf when it has none), the value that
    hyperparameter sweepers such as hparams_search=lr_optuna minimize."""
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    label = f"#{hydra_cfg.job.num} {' '.join(overrides)}".strip() if in_sweep else "run"
    try:
        summary = run(cfg, Path(hydra_cfg.runtime.output_dir), overrides, choices, in_sweep, label)
    except FitscopeError as error:
        # One line, no traceback (Hydra prints compact errors as they are).
        raise CompactHydraException(str(error)) from None
    best = summary.get("best")
    return best["val_loss"] if best else float("inf")


if __name__ == "__main__":
    main()
