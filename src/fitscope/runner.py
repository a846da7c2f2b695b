"""One run from a composed config to a finished run folder: validate, load data, build the
model, train, test once with the best weights, write everything a report needs."""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fitscope import FitscopeError
from fitscope.config import config_hash, is_display_key, resolve_device, validate
from fitscope.console import Console
from fitscope.data import make_splits
from fitscope.loggers import make_loggers, prediction_grid
from fitscope.models import build_mlp, count_parameters
from fitscope.records import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    MetricsWriter,
    device_name,
    finite_or_none,
    flatten_config,
    git_state,
    library_versions,
    read_json,
    save_checkpoint,
    write_json_atomic,
)
from fitscope.steps import set_tf32
from fitscope.training import early_stopping_epoch, evaluate, fit, metric_columns

ENTRY_POINT = "python src/run.py"
log = logging.getLogger("fitscope")


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def rerun_command(overrides: Sequence[str]) -> str:
    """The command line that repeats a run with these overrides."""
    return " ".join([ENTRY_POINT, *(shlex.quote(o) for o in overrides)])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    choices: Mapping[str, str] | None = None,
    in_sweep: bool = False,
    label: str = "run",
) -> dict[str, Any]:
    """Train the run `cfg` describes into `out_dir` and return its summary.

    Divergence is a result (status `diverged`), not an error. Bad config values raise
    `ConfigError` before any work; any other failure is written to `summary.json` as status
    `failed` and raised again.

    Resume: when `out_dir` already holds a completed run of the same config (same
    `config_hash`), nothing runs and its summary is returned with `skipped: True`; a completed
    run of another config is never overwritten (`ResumeError`). Failed and unfinished runs run
    again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = completed_summary(out_dir)
    if previous is not None:
        validate(cfg)
        if previous.get("config_hash") != config_hash(cfg):
            raise ResumeError(
                f"{out_dir} holds a completed run of another config (config hash "
                f"{previous.get('config_hash')}, this one {config_hash(cfg)}); it is kept: "
                "run the sweep into a new hydra.sweep.dir"
            )
        if OmegaConf.select(cfg, "trainer.console", default="auto") != "quiet":
            log.info(f"{label}: skipped, already completed in {out_dir}")
        return {**previous, "skipped": True}
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "status": "running",
        "error": None,
        "overrides": list(overrides),
        "choices": dict(choices or {}),
        "command": rerun_command(overrides),
        "started_at": _now(),
    }
    console = Console(
        OmegaConf.select(cfg, "trainer.console", default="auto"),
        in_sweep,
        OmegaConf.select(cfg, "trainer.epochs", default=0),
    )
    try:
        validate(cfg)
        summary.update(seed=cfg.trainer.seed, config_hash=config_hash(cfg))
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        OmegaConf.save(cfg, out_dir / CONFIG_FILE, resolve=True)
        container = OmegaConf.to_container(cfg, resolve=True)
        loggers = make_loggers(
            container.get("logger"), out_dir, overrides, _visdom_env(out_dir), _hparams(container)
        )
        try:
            _train(container, out_dir, summary, console, loggers)
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


class ResumeError(FitscopeError):
    pass


def completed_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's summary if it records a completed run, else None."""
    try:
        summary = read_json(run_dir / SUMMARY_FILE)
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt: Ctrl-C or SIGINT)"
    if isinstance(error, FitscopeError):
        return str(error)
    return f"{type(error).__name__}: {error}".removesuffix(": ")


def _visdom_env(run_dir: Path) -> str:
    """One visdom env per sweep, named after the sweep folder (with its date folder)."""
    return "fitscope_" + "_".join(run_dir.resolve().parts[-3:-1])


def _hparams(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config as flat scalar hyperparameters, for TensorBoard's HParams."""
    flat = flatten_config(cfg)
    return {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in flat.items()
        if not is_display_key(k)
    }


def _train(
    cfg: dict[str, Any],
    out_dir: Path,
    summary: dict[str, Any],
    console: Console,
    loggers: Sequence[Any] = (),
) -> None:
    trainer = cfg["trainer"]
    device = resolve_device(trainer["device"])
    if trainer["deterministic"] and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(trainer["deterministic"])
    set_tf32(device, trainer["tf32"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    splits = make_splits(cfg["data"], device)
    torch.manual_seed(trainer["seed"])
    model_args = {
        "in_features": splits.n_features,
        "n_classes": splits.n_classes,
        **{
            key: cfg["model"][key]
            for key in ("depth", "width", "dropout", "init", "final_activation")
        },
        "activation": cfg["activation"],
    }
    model = build_mlp(**model_args).to(device)
    summary.update(
        params=count_parameters(model),
        device=device_name(device),
        samples={
            "train": len(splits.x_train),
            "val": len(splits.x_val),
            "test": len(splits.x_test),
        },
        versions=library_versions(),
        git=git_state(),
    )

    columns = metric_columns(model, trainer)
    with MetricsWriter(out_dir / METRICS_FILE, columns) as writer, console.training():

        def on_epoch(row: dict[str, float]) -> None:
            writer.write(row)
            console.epoch(row)
            for logger in loggers:
                logger.epoch(row)

        def on_steps(epoch: int, losses: list[float]) -> None:
            for logger in loggers:
                logger.steps(epoch, losses)

        result = fit(
            model, splits, cfg["optimizer"], trainer, on_epoch, on_steps if loggers else None
        )

    eval_batch, precision = trainer["eval_batch_size"], trainer["precision"]
    test_last = evaluate(model, splits.x_test, splits.y_test, eval_batch, precision).tolist()
    val_losses = [row["val_loss"] for row in result.rows]
    stopping = trainer["early_stopping"]
    summary.update(
        status=result.status,
        epochs=trainer["epochs"],
        epochs_run=len(result.rows),
        stopped_early=result.stopped_early,
        best_epoch=result.best_epoch,
        early_stopping_epoch=early_stopping_epoch(
            val_losses, stopping["patience"], stopping["min_delta"]
        ),
        last=_metrics(result.rows[-1]),
        test_last=_test_metrics(test_last),
        samples_per_s=result.samples_per_s,
        compile=result.compile,
        setup_s=result.setup_seconds,
        train_s=sum(result.train_seconds),
    )
    if result.status == "diverged":
        last = result.rows[-1]
        summary["error"] = (
            f"loss out of bounds at epoch {last['epoch']}: train {last['train_loss']:.4g}, "
            f"val {last['val_loss']:.4g} (allowed: finite and <= trainer.divergence_loss="
            f"{trainer['divergence_loss']})"
        )
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
        test_best = evaluate(model, splits.x_test, splits.y_test, eval_batch, precision).tolist()
        save_checkpoint(out_dir / CHECKPOINT_FILE, result.best_state, model_args, result.best_epoch)
        if loggers:
            count = (cfg.get("logger") or {}).get("visdom", {}).get("images", 32)
            grid = prediction_grid(model, splits.x_val, splits.y_val, count)
            for logger in loggers:
                logger.predictions(*grid)
        summary.update(
            best=_metrics(result.rows[result.best_epoch - 1]), test_best=_test_metrics(test_best)
        )
    if device.type == "cuda":
        summary.update(
            gpu_memory_peak_mib=torch.cuda.max_memory_allocated(device) / 2**20,
            gpu_memory_end_mib=torch.cuda.memory_allocated(device) / 2**20,
        )


def _metrics(row: Mapping[str, float]) -> dict[str, float | None]:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    return {key: finite_or_none(row[key]) for key in keys}


def _test_metrics(values: Sequence[float]) -> dict[str, float | None]:
    return {"loss": finite_or_none(values[0]), "acc": finite_or_none(values[1])}
