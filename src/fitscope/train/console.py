"""What a run prints: a line per epoch and a progress bar for a single run, a line per finished
run in a sweep (`trainer.console`: auto, epochs, runs, quiet). Lines go through `logging`, so
Hydra also keeps them in the run folder's `run.log`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("fitscope")


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def epoch_line(row: Mapping[str, float], epochs: int) -> str:
    width = len(str(epochs))
    return (
        f"epoch {row['epoch']:>{width}}/{epochs}  "
        f"train loss {row['train_loss']:.4f} acc {_pct(row['train_acc'])}  "
        f"val loss {row['val_loss']:.4f} acc {_pct(row['val_acc'])}  {row['seconds']:.2f}s"
    )


def run_line(label: str, summary: Mapping[str, Any]) -> str:
    status = summary["status"]
    seconds = summary.get("wall_time_s", 0)
    text = f"{label}: {status} in {seconds:.{1 if seconds >= 1 else 2}f}s"
    best = summary.get("best")
    if best:
        text += (
            f", best epoch {summary['best_epoch']}/{summary['epochs_run']}: "
            f"val loss {best['val_loss']:.4f} acc {_pct(best['val_acc'])}"
        )
    test = summary.get("test_best")
    if test:
        text += f", test acc {_pct(test['acc'])}"
    if summary.get("error"):
        text += f" ({summary['error']})"
    return text


def interrupted_line(label: str, summary: Mapping[str, Any], run_dir: str) -> str:
    """What an interrupted run kept (its finished epochs: metrics.csv is flushed per epoch)."""
    done, epochs = summary.get("epochs_run", 0), summary.get("epochs", "?")
    if not done:
        return f"{label}: interrupted before its first epoch ended ({run_dir})"
    return (
        f"{label}: interrupted at epoch {done}/{epochs}; its {done} finished epochs are kept in "
        f"{run_dir}/metrics.csv (running it again starts it over), its summary.json says "
        "failed (interrupted)"
    )


class Console:
    def __init__(self, mode: str, in_sweep: bool, epochs: int, label: str | None = None) -> None:
        self.epochs = epochs
        self.label = label  # before each epoch line: runs that train together (a pack)
        self.show_epochs = mode == "epochs" or (mode == "auto" and not in_sweep)
        self.show_runs = mode != "quiet"
        self.in_sweep = in_sweep
        self._bar: tqdm | None = None

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Shows the progress bar (on a terminal) while the epochs run."""
        if not self.show_epochs:
            yield
            return
        # disable=None: a bar on a terminal only, never in a log file or a pipe.
        with (
            logging_redirect_tqdm(),
            tqdm(total=self.epochs, unit="epoch", leave=False, disable=None) as self._bar,
        ):
            yield
        self._bar = None

    def epoch(self, row: Mapping[str, float]) -> None:
        if self.show_epochs:
            line = epoch_line(row, self.epochs)
            log.info(f"{self.label}: {line}" if self.label else line)
        if self._bar is not None and row["epoch"] >= 1:  # epoch 0: the untrained network
            self._bar.update(1)

    def finished(self, label: str, summary: Mapping[str, Any], run_dir: str) -> None:
        if str(summary.get("error") or "").startswith("interrupted"):
            log.warning(interrupted_line(label, summary, run_dir))  # even when quiet
            return
        if summary["status"] == "diverged":
            log.warning(run_line(label, summary))
        elif summary["status"] == "failed":
            if self.in_sweep:  # a single run's error is printed by Hydra as the process ends
                log.error(run_line(label, summary))
        elif self.show_runs:
            log.info(run_line(label, summary))
        if self.show_runs and not self.in_sweep and summary["status"] != "failed":
            # best.pt exists when some epoch had a finite validation loss (summary "best")
            files = ["metrics.csv", "summary.json"] + (["best.pt"] if summary.get("best") else [])
            log.info(f"run folder: {run_dir} ({', '.join(files)})")
