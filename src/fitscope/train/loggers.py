"""Live curves: the `logger` group (none, tensorboard, visdom, or both as a list).

`metrics.csv` is always written; these send the same numbers to the tools people watch live.
Both are optional extras: choosing one whose package is missing says which extra to install.
Values come from the epoch's one host transfer, so logging never adds a sync to the batch loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fitscope import FitscopeError
from fitscope.config import is_display_key
from fitscope.rundir import GRADIENT_COLUMNS, parse_layer_column

log = logging.getLogger("fitscope")
logging.getLogger("visdom").setLevel(logging.WARNING)  # not its "Setting up a new session..."
_unreachable_said: set[str] = set()  # visdom servers already reported unreachable


class LoggerError(FitscopeError):
    pass


def _require(package: str, logger: str) -> Any:
    try:
        return __import__(package)
    except ImportError:
        raise LoggerError(
            f'logger={logger} needs the {package} package: python -m pip install -e ".[{logger}]"'
        ) from None


class TensorBoardLogger:
    """Scalars per epoch and per step, and the run's hyperparameters with its final metrics
    (HParams), in `<run folder>/tensorboard/<run name>`: `tensorboard --logdir multirun/<sweep>`
    shows the whole sweep, each run under its overrides."""

    def __init__(self, run_dir: Path, name: str, hparams: Mapping[str, Any]) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.hparams = dict(hparams)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard" / name))

    def steps(self, epoch: int, losses: Sequence[float]) -> None:
        first = (epoch - 1) * len(losses)
        for i, loss in enumerate(losses, start=1):
            self.writer.add_scalar("train_loss_per_step", loss, first + i)

    def epoch(self, row: Mapping[str, float]) -> None:
        epoch = int(row["epoch"])
        for split in ("train", "val"):
            self.writer.add_scalar(f"loss/{split}", row[f"{split}_loss"], epoch)
            self.writer.add_scalar(f"accuracy/{split}", row[f"{split}_acc"], epoch)
        for key, value in row.items():
            if parse_layer_column(key) or key in GRADIENT_COLUMNS:
                self.writer.add_scalar(f"diagnostics/{key}", value, epoch)
        self.writer.flush()

    def predictions(
        self, images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor
    ) -> None:
        self.writer.add_images("validation_images", images)

    def close(self, summary: Mapping[str, Any]) -> None:
        best, test = summary.get("best") or {}, summary.get("test_best") or {}
        metrics = {
            "hparam/best_val_loss": best.get("val_loss"),
            "hparam/best_val_acc": best.get("val_acc"),
            "hparam/test_acc": test.get("acc"),
        }
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if metrics:
            self.writer.add_hparams(self.hparams, metrics, run_name=".")
        self.writer.close()


class VisdomLogger:
    """Live windows on a running visdom server (`python -m visdom.server`), one env per sweep,
    windows named by run: train loss per step, validation loss and accuracy per epoch, and a grid
    of validation images with their predicted labels. If the server cannot be reached the run
    says so once and goes on writing its files."""

    def __init__(self, settings: Mapping[str, Any], env: str, name: str) -> None:
        visdom = _require("visdom", "visdom")
        self.name = name
        self.address = f"{settings['server']}:{settings['port']}"
        self.images = settings.get("images", 32)
        self.viz = None
        try:
            viz = visdom.Visdom(
                server=settings["server"],
                port=settings["port"],
                env=env,
                raise_exceptions=True,
                use_incoming_socket=False,  # fitscope only sends
            )
            if viz.check_connection(timeout_seconds=settings.get("timeout", 3)):
                self.viz = viz
        except Exception:  # visdom raises plain ConnectionError and requests' own errors
            pass
        if self.viz is None:
            self._unreachable()

    def _unreachable(self) -> None:
        self.viz = None
        if self.address not in _unreachable_said:
            _unreachable_said.add(self.address)
            log.warning(
                f"visdom server at {self.address} is not reachable: going on without it "
                "(start one with: python -m visdom.server)"
            )

    def _send(self, method: str, **kwargs: Any) -> None:
        if self.viz is None:
            return
        try:
            getattr(self.viz, method)(**kwargs)
        except Exception:  # the server went away: keep training, say it once
            self._unreachable()

    def _line(self, title: str, x: Sequence[float], y: Sequence[float], ylabel: str) -> None:
        win = f"{self.name}: {title}"
        exists = self.viz is not None and self.viz.win_exists(win)
        self._send(
            "line",
            X=list(x),
            Y=list(y),
            win=win,
            update="append" if exists else None,
            opts={"title": win, "xlabel": "step" if "step" in title else "epoch", "ylabel": ylabel},
        )

    def steps(self, epoch: int, losses: Sequence[float]) -> None:
        first = (epoch - 1) * len(losses)
        self._line(
            "train loss per step",
            range(first + 1, first + len(losses) + 1),
            losses,
            "cross-entropy",
        )

    def epoch(self, row: Mapping[str, float]) -> None:
        self._line("validation loss", [row["epoch"]], [row["val_loss"]], "cross-entropy")
        self._line("validation accuracy", [row["epoch"]], [row["val_acc"]], "accuracy")

    def predictions(
        self, images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor
    ) -> None:
        shown = " ".join(
            f"{p}{'' if p == t else f'(≠{t})'}"
            for p, t in zip(predicted.tolist(), labels.tolist(), strict=True)
        )
        win = f"{self.name}: validation predictions"
        self._send(
            "images",
            tensor=images,
            nrow=8,
            win=win,
            opts={"title": win, "caption": f"predicted (≠true) row by row: {shown}"},
        )

    def close(self, summary: Mapping[str, Any]) -> None:
        pass


def run_name(overrides: Sequence[str]) -> str:
    """A run's name for the loggers: the overrides that set what it computes, as a folder name."""
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    shown = [
        o
        for o, k in zip(overrides, keys, strict=True)
        if not (is_display_key(k) or k.startswith("hydra"))
    ]
    name = ",".join(shown) or "defaults"
    return re.sub(r"[^\w.,=+-]+", "_", name)[:120]


def make_loggers(
    settings: Mapping[str, Any] | None,
    run_dir: Path,
    overrides: Sequence[str],
    env: str,
    hparams: Mapping[str, Any],
) -> list[TensorBoardLogger | VisdomLogger]:
    """The loggers the `logger` config chooses (none, tensorboard, visdom or both)."""
    settings = settings or {}
    name = run_name(overrides)
    loggers: list[TensorBoardLogger | VisdomLogger] = []
    if "tensorboard" in settings:
        loggers.append(TensorBoardLogger(run_dir, name, hparams))
    if "visdom" in settings:
        loggers.append(VisdomLogger(settings["visdom"], env, name))
    return loggers


def prediction_grid(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `count` validation images as (N, 1, H, W) in [0, 1], their labels and the
    model's predictions (square images only; others are shown as one row of pixels)."""
    x, y = x[:count], y[:count]
    with torch.inference_mode():
        model.eval()
        predicted = model(x).argmax(dim=1)
    side = int(round(x.shape[1] ** 0.5))
    shape = (side, side) if side * side == x.shape[1] else (1, x.shape[1])
    images = x.reshape(len(x), 1, *shape).float().cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-12), y.cpu(), predicted.cpu()
