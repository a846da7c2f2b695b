"""One run from a composed config to a finished run folder, stage by stage: validate, start
the folder, build the model, fit, finish with the test and the best weights (the folder is
written by `fitscope.train.record`, through `fitscope.rundir`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fitscope.rundir import RunLocked, check_run_folder, run_lock
from fitscope.rundir.logfile import CONSOLE_ONLY
from fitscope.train import data
from fitscope.train.console import Console
from fitscope.train.data import make_splits
from fitscope.train.graph import GRAPH_CACHE
from fitscope.train.loop import fit
from fitscope.train.record import current_gpu, start_record
from fitscope.train.resume import completed_run, skipped_line
from fitscope.train.settings import TrainerSettings, job_device, validate
from fitscope.train.steps import math_modes

log = logging.getLogger("fitscope")


def run(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    choices: Mapping[str, str] | None = None,
    in_sweep: bool = False,
    label: str = "run",
    gpu_slot: int | None = None,
    prepare: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train the run `cfg` describes into `out_dir` and return its summary. `gpu_slot`: the
    job's number when its launcher runs jobs side by side (`settings.job_device`); `prepare`:
    what the launcher writes into the folder of a run it trains, once the folder is locked
    and the run is not skipped (Hydra's `.hydra/` files).

    Bad config values raise `ConfigError` before anything is written. Divergence is a result
    (status `diverged`), not an error; any other failure is written to `summary.json` as status
    `failed` and raised again. A folder that already holds this run, completed, is kept and its
    summary returned (`fitscope.train.resume`); one that another process is training is left
    to it, with one line saying who holds it (its summary says `running`).
    """
    plain, settings = validate(cfg)
    device = job_device(settings.device, plain["trainer"]["device"], gpu_slot)
    settings = dataclasses.replace(settings, device=device)
    check_run_folder(out_dir)  # before anything is made or written: no link, FIFO or device
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(out_dir):
            previous = completed_run(cfg, out_dir, label)
            if previous is not None:
                if plain["trainer"]["console"] != "quiet":
                    skipped_line(label, out_dir)
                return previous
            if prepare is not None:  # the launcher's files (.hydra/), for a run it trains
                prepare()
            return _train(cfg, plain, settings, out_dir, overrides, choices, in_sweep, label)
    except RunLocked as locked:
        log.warning(f"{label}: skipped, {locked}", extra=CONSOLE_ONLY)
        return {"status": "running", "skipped": True, "error": str(locked)}


def _train(
    cfg: DictConfig,
    plain: dict[str, Any],
    settings: TrainerSettings,
    out_dir: Path,
    overrides: Sequence[str],
    choices: Mapping[str, str] | None,
    in_sweep: bool,
    label: str,
) -> dict[str, Any]:
    """The stages of a run in its locked folder: start, build, fit, finish."""
    console = Console(plain["trainer"]["console"], in_sweep, settings.epochs)
    record = start_record(cfg, plain, settings, out_dir, overrides, choices, console, label)
    try:
        with math_modes(settings), current_gpu(settings.device):
            if settings.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(settings.device)
            splits = make_splits(plain["data"], settings.device, settings.train_eval_samples)
            model = record.build(splits)
            with record.training():
                result = fit(
                    model,
                    splits,
                    plain["optimizer"],
                    record.settings,
                    record.on_epoch,
                    record.steps_callback(),
                )
            record.finish(model, splits, result)
    except BaseException as error:  # KeyboardInterrupt too: summary.json says why it ended
        record.fail(error)
        raise
    finally:
        record.close()
        console.finished(label, record.summary, record.where())
    return record.summary


def clear_caches() -> None:
    """Forget this process's loaded datasets, prepared splits and captured graphs (a sweep in
    one process keeps them from run to run)."""
    data.clear_cache()
    GRAPH_CACHE.clear()
