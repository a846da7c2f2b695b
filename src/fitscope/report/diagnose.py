"""What the report concludes from one run's epoch rows: the fit verdict, with the best and
early-stopping epochs. A run's rows come as `RunCurves`, numpy arrays sliced from the sweep's
epoch table, so that a sweep of 10,000 runs is judged run by run without a data frame each."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitscope.report.settings import ReportSettings
from fitscope.rundir import SPLIT_METRICS, parse_layer_column
from fitscope.stopping import best_epoch, stop_epoch

# The class count of every dataset fitscope has, for runs whose summary.json does not record it.
DEFAULT_CLASSES = 10


@dataclass(frozen=True)
class RunCurves:
    """One run's epoch rows: `epoch` and the split metrics as arrays (epoch 0, the untrained
    network, first where recorded), and `columns`, every other metrics.csv column by name (the
    per-layer diagnostics, `grad_norm_total`, ...), NaN where the run has no value."""

    epoch: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    val_loss: np.ndarray
    val_acc: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, metrics: pd.DataFrame) -> RunCurves:
        """A run's metrics.csv rows (`fitscope.rundir.read_metrics`) as arrays."""
        arrays = {c: pd.to_numeric(metrics[c], errors="coerce").to_numpy(float) for c in metrics}
        split = {m: arrays.pop(m, np.zeros(0)) for m in SPLIT_METRICS}
        epoch = arrays.pop("epoch", np.zeros(0)).astype(np.int64)
        return cls(epoch, **split, columns=arrays)

    def __len__(self) -> int:
        return len(self.epoch)

    def rows(self, keep: np.ndarray) -> RunCurves:
        """The rows where the boolean array `keep` holds."""
        return RunCurves(
            self.epoch[keep],
            self.train_loss[keep],
            self.train_acc[keep],
            self.val_loss[keep],
            self.val_acc[keep],
            {name: values[keep] for name, values in self.columns.items()},
        )

    def trained(self) -> RunCurves:
        """The rows of trained epochs (epoch >= 1): epoch 0, the network as initialized, is no
        candidate for the best epoch, early stopping or the fit verdict."""
        return self if not len(self) or self.epoch[0] >= 1 else self.rows(self.epoch >= 1)

    def at(self, epoch: int | None, metric: str) -> float:
        """`metric` (e.g. `val_loss`) at `epoch`; NaN where the run has no such epoch."""
        if epoch is None:
            return math.nan
        where = np.flatnonzero(self.epoch == epoch)
        return float(getattr(self, metric)[where[0]]) if len(where) else math.nan

    def layer_columns(self, measure: str, hidden: bool = False) -> list[str]:
        """The columns of a per-layer measure (`grad_rms_1`, ... `grad_rms_out`) that hold a
        value in this run, from the input to the output (`out` last; none with `hidden`)."""
        found = []
        for name, values in self.columns.items():
            parsed = parse_layer_column(name)
            if parsed and parsed[0] == measure and not np.isnan(values).all():
                if not (hidden and parsed[1] == "out"):
                    found.append((math.inf if parsed[1] == "out" else int(parsed[1]), name))
        return [name for _, name in sorted(found)]


def as_curves(metrics: pd.DataFrame | RunCurves) -> RunCurves:
    return metrics if isinstance(metrics, RunCurves) else RunCurves.from_frame(metrics)


def trained(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of a metrics frame's trained epochs (epoch >= 1)."""
    return metrics[metrics["epoch"] >= 1] if len(metrics) else metrics


def stopping_epochs(
    metrics: pd.DataFrame | RunCurves, settings: ReportSettings
) -> dict[str, int | None]:
    """`best_epoch` (lowest validation loss), `early_stopping_epoch` (where early stopping with
    `report.patience` and `report.min_delta` would stop; None if it never would within the
    epochs run) and `restored_epoch` (the lowest-loss epoch up to that stop, or of all epochs
    when it never stops), as epoch numbers, among the trained epochs."""
    run = as_curves(metrics).trained()
    losses, epochs = run.val_loss.tolist(), run.epoch.tolist()

    def epoch_at(index: int | None) -> int | None:  # 1-based row index -> epoch number
        return None if index is None else int(epochs[index - 1])

    stop_index = stop_epoch(losses, settings.patience, settings.min_delta)
    return {
        "best_epoch": epoch_at(best_epoch(losses)),
        "early_stopping_epoch": epoch_at(stop_index),
        "restored_epoch": epoch_at(best_epoch(losses[:stop_index])),
    }


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """`values` smoothed: the centred moving mean over `window` epochs (fewer at the ends; NaN
    values left out)."""
    series = pd.Series(np.asarray(values, float))
    return series.rolling(window, center=True, min_periods=1).mean().to_numpy()


def smoothing_window(epochs: int, settings: ReportSettings) -> int:
    """The moving mean's width for a run of `epochs` trained epochs: `smooth_window`, at most a
    fifth of the epochs, made odd (so that it is centred on an epoch); 1 leaves a short curve as
    it is."""
    window = max(1, min(settings.smooth_window, epochs // 5))
    return window if window % 2 else window - 1


def trend_length(epochs: int, window: int, settings: ReportSettings) -> int:
    """Over how many of the last epochs `not converged` looks for a fall: the last
    `converge_window` of the epochs, at least the smoothing window, at most all but one."""
    return max(1, min(epochs - 1, max(window, math.ceil(settings.converge_window * epochs))))


def curve_noise(values: Sequence[float]) -> float:
    """The epoch-to-epoch noise of a curve, from its second half: 1.4826 x the median absolute
    second difference / sqrt(6), the standard deviation of independent noise around a locally
    straight trend (the DER_SNR estimator; a steady rise or fall adds nothing to it, and a few
    jumps do not dominate it). 0 for fewer than 3 values."""
    values = np.asarray(values, float)
    half = values[len(values) // 2 :] if len(values) >= 6 else values
    second = np.diff(half, n=2)
    second = second[np.isfinite(second)]
    if second.size == 0:
        return 0.0
    return float(1.482602 * np.median(np.abs(second)) / math.sqrt(6))


@dataclass(frozen=True)
class Verdict:
    """A run's fit verdict, the reason in words and the numbers it was judged on."""

    diagnosis: str
    reason: str
    val_noise: float = math.nan  # epoch-to-epoch noise of validation loss (`curve_noise`)
    val_rise: float = math.nan  # mean of the last `val_window` epochs over the smoothed minimum
    val_window: int | None = None  # epochs of the moving mean (`smoothing_window`)
    smoothed_min_epoch: int | None = None


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values; NaN (and no warning) when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio(new: float, old: float) -> float:
    """new / old for losses >= 0, where a loss may be exactly 0 (an easy problem learnt)."""
    if old > 0:
        return new / old
    return 1.0 if new == old else math.inf


@dataclass(frozen=True)
class _Judged:
    """What the verdict rules read of a run's trained epochs."""

    run: RunCurves
    best: int  # 1-based row of the lowest validation loss
    window: int
    smoothed: np.ndarray
    low: int  # row of the smoothed curve's minimum
    noise: float
    tolerance: float
    last_mean: float
    rise: float

    @property
    def epochs(self) -> int:
        return len(self.run)

    def numbers(self) -> dict:
        return {
            "val_noise": self.noise,
            "val_rise": self.rise,
            "val_window": self.window,
            "smoothed_min_epoch": int(self.run.epoch[self.low]),
        }

    def kept(self, always: bool = False) -> str:
        """The reason's tail that says which weights the test used."""
        if always or self.best < self.epochs:
            return f"; best weights kept, test uses epoch {self.run.epoch[self.best - 1]}"
        return ""

    def last_epochs(self) -> str:
        return "last epoch" if self.window == 1 else f"last {self.window} epochs"


def _judge(run: RunCurves, best: int, settings: ReportSettings) -> _Judged:
    val = run.val_loss
    window = smoothing_window(len(run), settings)
    smoothed = smooth(val, window)
    low = int(np.nanargmin(smoothed))
    noise = curve_noise(val)
    last_mean = _mean(val[-window:])
    return _Judged(
        run,
        best,
        window,
        smoothed,
        low,
        noise,
        settings.noise_tolerance * noise,
        last_mean,
        _ratio(last_mean, smoothed[low]) - 1,
    )


def diagnose(metrics: pd.DataFrame | RunCurves, settings: ReportSettings) -> Verdict:
    """The fit verdict of a run's epoch rows (trained epochs; see the README's Definitions),
    judged in this order:

    - overfit: the mean validation loss of the last `smoothing_window` epochs lies at least
      `overfit_rise` above the minimum of the smoothed curve (`smooth`), reached before the last
      epoch, and more than `noise_tolerance` times the curve's noise (`curve_noise`) above it,
      while the training loss fell after that minimum;
    - not converged: the smoothed validation loss still fell over the last `trend_length`
      epochs, by more than `converge_tol` of its value and more than `noise_tolerance` times the
      noise (train longer); or the best epoch is the last, the smoothed curve is lowest there
      and it fell by more than the noise tolerance (still improving when training stopped);
      also a run of fewer than 3 epochs;
    - underfit: last train accuracy below `underfit_train_acc` (and no longer improving);
    - good fit: otherwise.
    """
    run = as_curves(metrics).trained()
    best = best_epoch(run.val_loss.tolist())
    if best is None:
        return Verdict("no data", "no finite validation loss")
    judged = _judge(run, best, settings)
    return (
        _overfit(judged, settings)
        or _still_improving(judged, settings)
        or _underfit(judged, settings)
        or _good_fit(judged)
    )


def _overfit(j: _Judged, settings: ReportSettings) -> Verdict | None:
    train = j.run.train_loss
    train_last = _mean(train[-j.window :])
    if not (
        j.low < j.epochs - 1
        and j.rise >= settings.overfit_rise
        and j.last_mean - j.smoothed[j.low] > j.tolerance
        and train_last < train[j.low]
    ):
        return None
    return Verdict(
        "overfit",
        f"overfit after epoch {j.run.epoch[j.best - 1]}: val loss of the {j.last_epochs()} "
        f"{j.rise:+.0%} over its smoothed minimum (epoch {j.run.epoch[j.low]}, noise "
        f"±{j.noise:.2g}) while train loss fell {1 - _ratio(train_last, train[j.low]):.0%}"
        + j.kept(always=True),
        **j.numbers(),
    )


def _still_improving(j: _Judged, settings: ReportSettings) -> Verdict | None:
    if j.epochs < 3:
        return Verdict(
            "not converged", f"only {j.epochs} epoch(s): too few to judge", **j.numbers()
        )
    tail = trend_length(j.epochs, j.window, settings)
    start = j.epochs - 1 - tail
    fall = j.smoothed[start] - j.smoothed[-1]
    relative = 1 - _ratio(j.smoothed[-1], j.smoothed[start])
    acc = f"train acc {j.run.train_acc[-1]:.1%}"
    if relative > settings.converge_tol and fall > j.tolerance:
        return Verdict(
            "not converged",
            f"smoothed val loss still fell {relative:.1%} over the last {tail} epochs (noise "
            f"±{j.noise:.2g}; {acc}): train longer" + j.kept(),
            **j.numbers(),
        )
    if j.best == j.epochs and j.low == j.epochs - 1 and fall > j.tolerance:
        return Verdict(
            "not converged",
            f"best epoch is the last ({j.run.epoch[-1]}) and smoothed val loss still falls "
            f"({relative:.1%} over the last {tail} epochs, noise ±{j.noise:.2g}; {acc}): "
            "train longer",
            **j.numbers(),
        )
    return None


def _underfit(j: _Judged, settings: ReportSettings) -> Verdict | None:
    train_acc = j.run.train_acc[-1]
    if train_acc >= settings.underfit_train_acc:
        return None
    return Verdict(
        "underfit",
        f"train acc {train_acc:.1%} < {settings.underfit_train_acc:.0%} after {j.epochs} "
        f"epochs, no longer improving (val acc {j.run.val_acc[-1]:.1%})",
        **j.numbers(),
    )


def _good_fit(j: _Judged) -> Verdict:
    return Verdict(
        "good fit",
        f"val loss of the {j.last_epochs()} {j.rise:+.1%} over its smoothed minimum at epoch "
        f"{j.run.epoch[j.low]} (noise ±{j.noise:.2g}); train acc {j.run.train_acc[-1]:.1%}, "
        f"val acc {j.run.val_acc[-1]:.1%}" + j.kept(),
        **j.numbers(),
    )
