"""One run from a composed config to a finished run folder: validate, load data, build the
model, train, test once with the best weights, write everything a report needs (through
`fitscope.rundir`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fitscope import FitscopeError
from fitscope.config import config_hash, flatten_config, is_display_key, show_value
from fitscope.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    SPLIT_METRICS,
    SUMMARY_FILE,
    DamagedFileError,
    MetricsWriter,
    RunLocked,
    display_path,
    finite_or_none,
    read_summary,
    rerun_command,
    run_lock,
    write_config,
    write_json_atomic,
)
from fitscope.stopping import early_stopping_epoch
from fitscope.train import data
from fitscope.train.console import Console
from fitscope.train.data import Splits, make_splits
from fitscope.train.environment import (
    cluster_job,
    device_name,
    git_state,
    gpu_record,
    library_versions,
)
from fitscope.train.graph import GRAPH_CACHE
from fitscope.train.loggers import make_loggers, prediction_grid
from fitscope.train.loop import FitResult, evaluate, fit, metric_columns
from fitscope.train.models import build_mlp, count_parameters, mlp_args, save_checkpoint
from fitscope.train.resume import completed_run
from fitscope.train.settings import TrainerSettings, job_device, validate, with_step_budget
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
) -> dict[str, Any]:
    """Train the run `cfg` describes into `out_dir` and return its summary. `gpu_slot`: the
    job's number when its launcher runs jobs side by side (`settings.job_device`).

    Bad config values raise `ConfigError` before anything is written. Divergence is a result
    (status `diverged`), not an error; any other failure is written to `summary.json` as status
    `failed` and raised again. A folder that already holds this run, completed, is kept and its
    summary returned (`fitscope.train.resume`); one that another process is training is left
    to it, with one line saying who holds it (its summary says `running`).
    """
    plain, settings = validate(cfg)
    device = job_device(settings.device, plain["trainer"]["device"], gpu_slot)
    settings = dataclasses.replace(settings, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(out_dir):
            return _run_locked(cfg, plain, settings, out_dir, overrides, choices, in_sweep, label)
    except RunLocked as locked:
        log.warning(f"{label}: skipped, {locked}")
        return {"status": "running", "skipped": True, "error": str(locked)}


def _run_locked(
    cfg: DictConfig,
    plain: dict[str, Any],
    settings: TrainerSettings,
    out_dir: Path,
    overrides: Sequence[str],
    choices: Mapping[str, str] | None,
    in_sweep: bool,
    label: str,
) -> dict[str, Any]:
    console_mode = plain["trainer"]["console"]
    previous = completed_run(cfg, out_dir)
    if previous is not None:
        if console_mode != "quiet":
            log.info(f"{label}: skipped, already completed in {out_dir}")
        return previous
    log_restart(out_dir, label, console_mode)
    start = time.perf_counter()
    summary = start_summary(cfg, settings, overrides, choices)
    console = Console(console_mode, in_sweep, settings.epochs)
    try:
        loggers = open_run_folder(cfg, plain, out_dir, overrides, summary)
        try:
            with math_modes(settings), _current_gpu(settings.device):
                _train(plain, settings, out_dir, summary, console, loggers)
        finally:
            for logger in loggers:
                logger.close(summary)
    except BaseException as error:
        # KeyboardInterrupt included: the rows written so far stay, the summary says why it ended.
        summary.update(status="failed", error=_failure_reason(error))
        raise
    finally:
        summary.update(finished_at=_now(), wall_time_s=time.perf_counter() - start)
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        console.finished(label, summary, display_path(out_dir))
    return summary


def log_restart(out_dir: Path, label: str, console_mode: str) -> None:
    """One line when the folder holds a run that did not complete (a resumed sweep, a
    requeued cluster job): it starts over."""
    earlier = _unfinished_status(out_dir)
    if earlier and console_mode != "quiet":
        log.info(f"{label}: the {earlier} run in {display_path(out_dir)} starts over")


def open_run_folder(
    cfg: DictConfig,
    plain: Mapping[str, Any],
    out_dir: Path,
    overrides: Sequence[str],
    summary: Mapping[str, Any],
) -> list[Any]:
    """Write the starting summary.json and config.yaml; the run's loggers, opened."""
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    write_config(cfg, out_dir)
    env, hparams = _visdom_env(out_dir), _hparams(plain)
    return make_loggers(plain.get("logger"), out_dir, overrides, env, hparams)


def start_summary(
    cfg: DictConfig,
    settings: TrainerSettings,
    overrides: Sequence[str],
    choices: Mapping[str, str] | None,
) -> dict[str, Any]:
    """What summary.json says when a run starts (status `running`)."""
    return {
        "status": "running",
        "error": None,
        "overrides": list(overrides),
        "choices": dict(choices or {}),
        "command": rerun_command(overrides),
        "started_at": _now(),
        "epochs": settings.epochs,
        "epochs_run": 0,
        "seed": settings.seed,
        "config_hash": config_hash(cfg),
        "host": socket.gethostname(),
        "cluster_job": cluster_job(),  # which job to scancel while it runs
    }


def _current_gpu(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` as the current CUDA device while the run trains (streams and captured graphs
    are made on the current device), the previous one again after it."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _unfinished_status(out_dir: Path) -> str | None:
    """The status of the run this folder holds that did not complete (`running` when its
    process was killed, `failed`, `diverged`), or None."""
    try:
        summary = read_summary(out_dir / SUMMARY_FILE)
    except DamagedFileError:
        return "damaged"
    return None if summary is None else str(summary.get("status", "running"))


def clear_caches() -> None:
    """Forget this process's loaded datasets, prepared splits and captured graphs (a sweep in
    one process keeps them from run to run)."""
    data.clear_cache()
    GRAPH_CACHE.clear()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt: Ctrl-C or SIGINT)"
    if isinstance(error, FitscopeError):
        return str(error)
    return f"{type(error).__name__}: {error}".removesuffix(": ")


def _visdom_env(run_dir: Path) -> str:
    """One visdom env per sweep, named after the sweep folder (with its date folder)."""
    return "fitscope_" + "_".join(run_dir.resolve().parts[-3:-1])


def _hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config as flat scalar hyperparameters, for TensorBoard's HParams."""
    flat = flatten_config(config)
    return {
        k: v if isinstance(v, (int, float, str, bool)) else show_value(v)
        for k, v in flat.items()
        if not is_display_key(k)
    }


# ------------------------------------------------------------------------ the stages of a run


def _train(
    config: Mapping[str, Any],
    settings: TrainerSettings,
    out_dir: Path,
    summary: dict[str, Any],
    console: Console,
    loggers: Sequence[Any] = (),
) -> None:
    """Data, model, the epochs, then the test part once with the last and the best weights."""
    device = settings.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    splits = make_splits(config["data"], device, settings.train_eval_samples)
    settings, budget = with_step_budget(settings, len(splits.x_train))
    summary.update(epochs=settings.epochs, budget=budget)
    console.epochs = settings.epochs
    torch.manual_seed(settings.seed)
    model_args = mlp_args(config, splits.n_features, splits.n_classes)
    model = build_mlp(**model_args).to(device)
    summary.update(_environment(model, splits, device))
    result = _fit_recorded(
        model, splits, config["optimizer"], settings, out_dir, summary, console, loggers
    )
    summary.update(_fit_summary(result, settings), test_last=_test(model, splits, settings))
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
        summary.update(
            best=_metrics(result.rows[result.best_epoch - 1]),
            test_best=_test(model, splits, settings),
        )
        save_checkpoint(out_dir / CHECKPOINT_FILE, result.best_state, model_args, result.best_epoch)
        _show_predictions(model, splits, config, loggers)
    if device.type == "cuda":
        summary.update(
            gpu_memory_peak_mib=torch.cuda.max_memory_allocated(device) / 2**20,
            gpu_memory_end_mib=torch.cuda.memory_allocated(device) / 2**20,
        )


def _environment(model: torch.nn.Module, splits: Splits, device: torch.device) -> dict[str, Any]:
    return {
        "params": count_parameters(model),
        "classes": splits.n_classes,
        "device": device_name(device),
        "gpu": gpu_record(device),
        "threads": torch.get_num_threads(),  # CPU threads for this run's arithmetic
        "samples": {
            "train": len(splits.x_train),
            "train_eval": len(splits.train_eval[0]),  # the train curve's samples
            "val": len(splits.x_val),
            "test": len(splits.x_test),
        },
        "versions": library_versions(),
        "git": git_state(),
    }


def _fit_recorded(
    model: torch.nn.Module,
    splits: Splits,
    optimizer_cfg: Mapping[str, Any],
    settings: TrainerSettings,
    out_dir: Path,
    summary: dict[str, Any],
    console: Console,
    loggers: Sequence[Any],
) -> FitResult:
    """`fit`, each epoch's row written to metrics.csv, shown and logged as soon as it exists
    (`summary["epochs_run"]` counts them, for a run that is interrupted)."""
    columns = metric_columns(model, settings.diagnostics)
    with MetricsWriter(out_dir / METRICS_FILE, columns) as writer, console.training():

        def on_epoch(row: dict[str, float]) -> None:
            writer.write(row)
            summary["epochs_run"] = int(row["epoch"])  # never more than metrics.csv holds
            console.epoch(row)
            for logger in loggers:
                logger.epoch(row)

        def on_steps(epoch: int, losses: list[float]) -> None:
            for logger in loggers:
                logger.steps(epoch, losses)

        return fit(model, splits, optimizer_cfg, settings, on_epoch, on_steps if loggers else None)


def _fit_summary(result: FitResult, settings: TrainerSettings) -> dict[str, Any]:
    """What the epochs gave: status, epochs, the best epoch, the trainer's stop, timings."""
    rows, stopping = result.rows, settings.early_stopping
    val_losses = [row["val_loss"] for row in rows]
    summary = {
        "status": result.status,
        "epochs": settings.epochs,
        "epochs_run": len(rows),
        "stopped_early": result.stopped_early,
        "best_epoch": result.best_epoch,
        "trainer_stop_epoch": early_stopping_epoch(
            val_losses, stopping.patience, stopping.min_delta
        ),
        "last": _metrics(rows[-1]),
        "initial": _metrics(result.initial) if result.initial else None,  # epoch 0, untrained
        "samples_per_s": result.samples_per_s,
        "compile": result.compile,
        "setup_s": result.setup_seconds,
        "train_s": sum(result.train_seconds),
    }
    if result.status == "diverged":
        last = rows[-1]
        summary["error"] = (
            f"loss out of bounds at epoch {last['epoch']}: train {last['train_loss']:.4g}, "
            f"val {last['val_loss']:.4g} (allowed: finite and <= trainer.divergence_loss="
            f"{show_value(settings.divergence_loss)})"
        )
    return summary


def _test(model: torch.nn.Module, splits: Splits, settings: TrainerSettings) -> dict[str, Any]:
    """Test loss and accuracy of the model's current weights."""
    loss, acc = evaluate(
        model, splits.x_test, splits.y_test, settings.eval_batch_size, settings.precision
    ).tolist()
    return {"loss": finite_or_none(loss), "acc": finite_or_none(acc)}


def _metrics(row: Mapping[str, float]) -> dict[str, float | None]:
    return {key: finite_or_none(row[key]) for key in SPLIT_METRICS}


def _show_predictions(
    model: torch.nn.Module, splits: Splits, config: Mapping[str, Any], loggers: Sequence[Any]
) -> None:
    """Validation images with the model's predictions, to the loggers that show them."""
    if not loggers:
        return
    count = (config.get("logger") or {}).get("visdom", {}).get("images", 32)
    grid = prediction_grid(model, splits.x_val, splits.y_val, count)
    for logger in loggers:
        logger.predictions(*grid)
