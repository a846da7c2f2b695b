"""What a run writes into its folder while it trains, the same for a run alone
(`fitscope.train.runner`) and for a member of a pack (`fitscope.train.pack_runner`):

- `start_record`: summary.json saying `running`, config.yaml, the loggers opened;
- `Record.build`: the run's model, built from its seed, with what summary.json says of the
  data, the model and the machine, and metrics.csv opened;
- `Record.on_epoch`, `Record.on_steps`: each epoch's row written, shown and logged as it comes;
- `Record.finish`: the fit summary, the test with the last and with the best weights, best.pt,
  the predictions shown to the loggers;
- `Record.fail`, `Record.close`: a failure's reason; summary.json written, files closed.

Every file goes through `fitscope.rundir`, the run folder's contract.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from fitscope import FitscopeError
from fitscope.config import config_hash, flatten_config, is_display_key, show_value
from fitscope.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    SPLIT_METRICS,
    SUMMARY_FILE,
    DamagedFileError,
    MetricsWriter,
    display_path,
    finite_or_none,
    os_error_line,
    read_summary,
    rerun_command,
    write_config,
    write_json_atomic,
)
from fitscope.signals import interrupt_reason
from fitscope.stopping import early_stopping_epoch
from fitscope.train.console import Console
from fitscope.train.data import Splits
from fitscope.train.environment import (
    cluster_job,
    device_name,
    git_state,
    gpu_record,
    library_versions,
)
from fitscope.train.loggers import make_loggers, prediction_grid
from fitscope.train.loop import FitResult, evaluate, metric_columns
from fitscope.train.models import build_mlp, count_parameters, mlp_args, save_checkpoint
from fitscope.train.settings import TrainerSettings, with_step_budget

log = logging.getLogger("fitscope")


class Record:
    """A run's folder while the run trains: its summary (`summary`, what summary.json will
    say), its settings (the epochs resolved once `build` knows the data), its console, loggers
    and metrics.csv."""

    def __init__(
        self,
        cfg: DictConfig,
        plain: Mapping[str, Any],
        settings: TrainerSettings,
        out_dir: Path,
        summary: dict[str, Any],
        console: Console,
    ) -> None:
        self.cfg, self.plain, self.settings, self.out_dir = cfg, plain, settings, out_dir
        self.summary, self.console = summary, console
        self.loggers: list[Any] = []
        self.writer: MetricsWriter | None = None
        self.model_args: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.closed = False

    def build(self, splits: Splits) -> nn.Module:
        """The run's model on its device, built as every run builds it (`trainer.seed` first),
        its epoch budget resolved for `splits`, summary.json told of the data, the model and the
        machine, and metrics.csv opened with the model's columns."""
        settings, budget = with_step_budget(self.settings, len(splits.x_train))
        self.settings = settings
        self.console.epochs = settings.epochs
        self.summary.update(epochs=settings.epochs, budget=budget)
        torch.manual_seed(settings.seed)
        self.model_args = mlp_args(self.plain, splits.n_features, splits.n_classes)
        model = build_mlp(**self.model_args).to(settings.device)
        self.summary.update(_environment(model, splits, settings.device))
        columns = metric_columns(model, settings.diagnostics)
        self.writer = MetricsWriter(self.out_dir / METRICS_FILE, columns)
        return model

    def on_epoch(self, row: dict[str, float]) -> None:
        """An epoch's row, as soon as it exists: written, counted, shown and logged."""
        assert self.writer is not None, "build() opens metrics.csv"
        self.writer.write(row)
        self.summary["epochs_run"] = int(row["epoch"])  # never more than metrics.csv holds
        self.console.epoch(row)
        for logger in self.loggers:
            logger.epoch(row)

    def on_steps(self, epoch: int, losses: list[float]) -> None:
        """The training loss of each step of an epoch, to the loggers that plot them."""
        for logger in self.loggers:
            logger.steps(epoch, losses)

    def steps_callback(self) -> Callable[[int, list[float]], None] | None:
        """`on_steps` where a logger plots each step's loss; None spares the loop reading them."""
        return self.on_steps if self.loggers else None

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """While the epochs run: the console's progress bar, where it shows one."""
        with self.console.training():
            yield

    def finish(self, model: nn.Module, splits: Splits, result: FitResult) -> None:
        """What the epochs gave, into the summary: the fit, the test of the last weights (what
        `model` holds), then of the best ones, saved as best.pt and shown to the loggers."""
        settings = self.settings
        self.summary.update(
            _fit_summary(result, settings), test_last=_test(model, splits, settings)
        )
        if result.best_state is not None:
            model.load_state_dict(result.best_state)
            self.summary.update(
                best=_metrics(result.rows[result.best_epoch - 1]),
                test_best=_test(model, splits, settings),
            )
            path = self.out_dir / CHECKPOINT_FILE
            digest = save_checkpoint(path, result.best_state, self.model_args, result.best_epoch)
            self.summary["checkpoint_sha256"] = digest  # what resume checks best.pt against
            _show_predictions(model, splits, self.plain, self.loggers)
        if settings.device.type == "cuda":  # for a pack member, the pack's, all members'
            self.summary.update(
                gpu_memory_peak_mib=torch.cuda.max_memory_allocated(settings.device) / 2**20,
                gpu_memory_end_mib=torch.cuda.memory_allocated(settings.device) / 2**20,
            )

    def fail(self, error: BaseException) -> None:
        """The run ends with `error`: summary.json will say `failed` and why (an interrupt
        too: the rows written so far stay)."""
        self.summary.update(status="failed", error=failure_reason(error))

    def close(self) -> None:
        """summary.json written with the run's end, metrics.csv and the loggers closed."""
        self.closed = True
        self.summary.update(finished_at=_now(), wall_time_s=time.perf_counter() - self.started)
        try:
            write_json_atomic(self.out_dir / SUMMARY_FILE, self.summary)
        finally:
            if self.writer is not None:
                self.writer.close()
            for logger in self.loggers:
                logger.close(self.summary)

    def where(self) -> str:
        return display_path(self.out_dir)


def start_record(
    cfg: DictConfig,
    plain: Mapping[str, Any],
    settings: TrainerSettings,
    out_dir: Path,
    overrides: Sequence[str],
    choices: Mapping[str, str] | None,
    console: Console,
    label: str,
) -> Record:
    """A run starts in `out_dir` (locked by the caller): one line if it holds a run that did
    not complete (it starts over), summary.json saying `running`, config.yaml, the loggers."""
    earlier = _unfinished_status(out_dir)
    if earlier and console.show_runs:
        log.info(f"{label}: the {earlier} run in {display_path(out_dir)} starts over")
    record = Record(
        cfg, plain, settings, out_dir, start_summary(cfg, settings, overrides, choices), console
    )
    try:
        write_json_atomic(out_dir / SUMMARY_FILE, record.summary)
        write_config(cfg, out_dir)
        env, hparams = _visdom_env(out_dir), _hparams(plain)
        record.loggers = make_loggers(plain.get("logger"), out_dir, overrides, env, hparams)
    except BaseException as error:
        record.fail(error)
        record.close()
        console.finished(label, record.summary, record.where())
        raise
    return record


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


def current_gpu(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` as the current CUDA device while the run trains (streams and captured graphs
    are made on the current device), the previous one again after it."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def failure_reason(error: BaseException) -> str:
    """A failure in summary.json's words: one line."""
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (`Terminated`)
        return interrupt_reason(error)
    if isinstance(error, FitscopeError):
        return str(error)
    if isinstance(error, OSError) and error.errno is not None:  # the machine said no
        return os_error_line(error)
    return f"{type(error).__name__}: {error}".removesuffix(": ")


def _unfinished_status(out_dir: Path) -> str | None:
    """The status of the run this folder holds that did not complete (`running` when its
    process was killed, `failed`, `diverged`), or None."""
    try:
        summary = read_summary(out_dir / SUMMARY_FILE)
    except DamagedFileError:
        return "damaged"
    return None if summary is None else str(summary.get("status", "running"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def _environment(model: nn.Module, splits: Splits, device: torch.device) -> dict[str, Any]:
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


def _test(model: nn.Module, splits: Splits, settings: TrainerSettings) -> dict[str, Any]:
    """Test loss and accuracy of the model's current weights."""
    loss, acc = evaluate(
        model, splits.x_test, splits.y_test, settings.eval_batch_size, settings.precision
    ).tolist()
    return {"loss": finite_or_none(loss), "acc": finite_or_none(acc)}


def _metrics(row: Mapping[str, float]) -> dict[str, float | None]:
    return {key: finite_or_none(row[key]) for key in SPLIT_METRICS}


def _show_predictions(
    model: nn.Module, splits: Splits, config: Mapping[str, Any], loggers: Sequence[Any]
) -> None:
    """Validation images with the model's predictions, to the loggers that show them."""
    if not loggers:
        return
    count = (config.get("logger") or {}).get("visdom", {}).get("images", 32)
    grid = prediction_grid(model, splits.x_val, splits.y_val, count)
    for logger in loggers:
        logger.predictions(*grid)
