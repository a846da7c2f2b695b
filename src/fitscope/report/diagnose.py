"""What the report concludes from one run's epoch rows: the fit diagnosis, the best and
early-stopping epochs, and the per-layer gradient flags."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fitscope.report.settings import ReportSettings
from fitscope.rundir import LAYER_MEASURES, parse_layer_column
from fitscope.stopping import best_epoch, stop_epoch

# The class count of every dataset fitscope has, for runs whose summary.json does not record it.
DEFAULT_CLASSES = 10


def trained(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of trained epochs (epoch >= 1): epoch 0, the network as initialized, is no
    candidate for the best epoch, early stopping or the fit verdict."""
    return metrics[metrics["epoch"] >= 1] if len(metrics) else metrics


def stopping_epochs(metrics: pd.DataFrame, settings: ReportSettings) -> dict[str, int | None]:
    """`best_epoch` (lowest validation loss), `early_stopping_epoch` (where early stopping with
    `report.patience` and `report.min_delta` would stop; None if it never would within the
    epochs run) and `restored_epoch` (the lowest-loss epoch up to that stop, or of all epochs
    when it never stops), as epoch numbers, among the trained epochs."""
    metrics = trained(metrics)
    losses, epochs = list(metrics["val_loss"]), list(metrics["epoch"])

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


def diagnose(metrics: pd.DataFrame, settings: ReportSettings) -> Verdict:
    """The fit verdict of a run's epoch rows (trained epochs; see the README's Definitions),
    judged in this order:

    - overfit: the mean validation loss of the last `smoothing_window` epochs lies at least
      `overfit_rise` above the minimum of the smoothed curve (`smooth`), reached before the last
      epoch, and more than `noise_tolerance` times the curve's noise (`curve_noise`) above it,
      while the training loss fell after that minimum;
    - not converged: the smoothed validation loss still fell over the last `trend_length`
      epochs, by more than `converge_tol` of its value and more than `noise_tolerance` times the
      noise (train longer); also a run of fewer than 3 epochs;
    - underfit: last train accuracy below `underfit_train_acc` (and no longer improving);
    - good fit: otherwise.
    """
    metrics = trained(metrics)
    val = metrics["val_loss"].to_numpy(float)
    train = metrics["train_loss"].to_numpy(float)
    train_acc = metrics["train_acc"].to_numpy(float)
    epochs = len(val)
    best = best_epoch(list(val))
    if best is None:
        return Verdict("no data", "no finite validation loss")
    epoch_of = metrics["epoch"].to_numpy(int)
    kept = f"; best weights kept, test uses epoch {epoch_of[best - 1]}"
    window = smoothing_window(epochs, settings)
    smoothed = smooth(val, window)
    low = int(np.nanargmin(smoothed))
    tail = trend_length(epochs, window, settings)
    noise = curve_noise(val)
    last_epochs = "last epoch" if window == 1 else f"last {window} epochs"
    tolerance = settings.noise_tolerance * noise
    last_mean = _mean(val[-window:])
    rise = _ratio(last_mean, smoothed[low]) - 1
    numbers = {
        "val_noise": noise,
        "val_rise": rise,
        "val_window": window,
        "smoothed_min_epoch": int(epoch_of[low]),
    }
    train_last = _mean(train[-window:])
    train_fell = train_last < train[low]
    if (
        low < epochs - 1
        and rise >= settings.overfit_rise
        and last_mean - smoothed[low] > tolerance
        and train_fell
    ):
        return Verdict(
            "overfit",
            f"overfit after epoch {epoch_of[best - 1]}: val loss of the {last_epochs} "
            f"{rise:+.0%} over its smoothed minimum (epoch {epoch_of[low]}, noise ±{noise:.2g}) "
            f"while train loss fell {1 - _ratio(train_last, train[low]):.0%}" + kept,
            **numbers,
        )
    if epochs < 3:
        return Verdict("not converged", f"only {epochs} epoch(s): too few to judge", **numbers)
    start = epochs - 1 - tail
    fall = smoothed[start] - smoothed[-1]
    if _ratio(smoothed[-1], smoothed[start]) < 1 - settings.converge_tol and fall > tolerance:
        return Verdict(
            "not converged",
            f"smoothed val loss still fell {1 - _ratio(smoothed[-1], smoothed[start]):.1%} over "
            f"the last {tail} epochs (noise ±{noise:.2g}; train acc {train_acc[-1]:.1%}): train "
            "longer" + (kept if best < epochs else ""),
            **numbers,
        )
    if train_acc[-1] < settings.underfit_train_acc:
        return Verdict(
            "underfit",
            f"train acc {train_acc[-1]:.1%} < {settings.underfit_train_acc:.0%} after {epochs} "
            f"epochs, no longer improving (val acc {metrics['val_acc'].iloc[-1]:.1%})",
            **numbers,
        )
    return Verdict(
        "good fit",
        f"val loss of the {last_epochs} {rise:+.1%} over its smoothed minimum at epoch "
        f"{epoch_of[low]} (noise ±{noise:.2g}); train acc {train_acc[-1]:.1%}, val acc "
        f"{metrics['val_acc'].iloc[-1]:.1%}" + (kept if best < epochs else ""),
        **numbers,
    )


def layer_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-layer diagnostics of `metrics.csv` in tidy form: one row per (epoch, layer) with
    `layer` (1, 2, ... then `out`), `depth_index` (1 for the first layer) and one column per
    measure (`grad_rms`, `act_mean`, `act_std`, `signal`, `dead`, `saturated`, where measured;
    `grad_norm` in run folders written before `grad_rms`)."""
    parsed = [(c, parse_layer_column(c)) for c in metrics.columns]
    columns = [(c, *found) for c, found in parsed if found]
    if not columns:
        return pd.DataFrame(columns=["epoch", "layer", "depth_index", *LAYER_MEASURES])
    long = metrics.melt(id_vars="epoch", value_vars=[c for c, _, _ in columns])
    lookup = {c: (measure, layer) for c, measure, layer in columns}
    long["measure"] = long["variable"].map(lambda c: lookup[c][0])
    long["layer"] = long["variable"].map(lambda c: lookup[c][1])
    tidy = long.pivot_table(
        index=["epoch", "layer"], columns="measure", values="value", dropna=False
    ).reset_index()
    hidden = sorted({int(layer) for layer in tidy["layer"] if layer != "out"})
    order = {str(i): i for i in hidden} | {"out": len(hidden) + 1}
    tidy["depth_index"] = tidy["layer"].map(order)
    tidy.columns.name = None
    measures = [m for m in LAYER_MEASURES if m in tidy.columns]
    return tidy.sort_values(["epoch", "depth_index"])[["epoch", "layer", "depth_index", *measures]]


def gradient_measure(layers: pd.DataFrame) -> str | None:
    """`grad_rms` (per weight), or `grad_norm` for run folders written before it; None."""
    for measure in ("grad_rms", "grad_norm"):
        if measure in layers.columns and layers[measure].notna().any():
            return measure
    return None


def _at(layers: pd.DataFrame, epoch: Any, measure: str, hidden: bool = False) -> pd.Series:
    """`measure` by depth index at `epoch` (hidden layers only with `hidden`)."""
    at = layers[layers["epoch"] == epoch]
    if hidden:
        at = at[at["layer"] != "out"]
    return at.set_index("depth_index")[measure].dropna().sort_index()


def stuck_at_chance(metrics: pd.DataFrame, classes: int, margin: float) -> str | None:
    """Why a run counts as stuck at chance level, or None: over every trained epoch,
    validation accuracy stayed within `margin` of chance (1 / classes), or validation loss
    within `margin` (relative) of ln(classes), the loss of a net that has learnt nothing, while
    accuracy stayed within twice `margin` of chance (a run whose loss is still near ln(classes)
    but whose accuracy has clearly left chance is learning, if slowly)."""
    rows = trained(metrics)
    if rows.empty or classes < 2:
        return None
    chance, level = 1 / classes, math.log(classes)
    acc, loss = rows["val_acc"].to_numpy(float), rows["val_loss"].to_numpy(float)
    if np.isfinite(acc).any() and np.nanmax(acc) <= chance + margin:
        return f"val acc never above {np.nanmax(acc):.1%} (chance {chance:.0%})"
    near = not np.isfinite(acc).any() or np.nanmax(acc) <= chance + 2 * margin
    if near and np.isfinite(loss).all() and (np.abs(loss / level - 1) <= margin).all():
        return f"val loss stayed within {margin:.0%} of ln {classes} = {level:.2f}"
    return None


def run_flags(
    metrics: pd.DataFrame,
    layers: pd.DataFrame,
    best: int | None,
    classes: int,
    settings: ReportSettings,
    status: str = "completed",
) -> dict[str, Any]:
    """What the diagnostics say of a run: `flag` (`stuck at chance (<cause>)`, `exploding
    gradients`, `dead output units`, `vanishing gradients` or ``; none for a run that diverged
    or failed, whose status says what happened), `flag_reason` (the numbers behind it), and
    - `grad_ratio_first`, `grad_ratio_best`: first-to-output layer ratio of gradient RMS at the
      first epoch recorded (0, the untrained net) and the best one;
    - `signal_ratio`: last-to-first hidden layer ratio of the activations' signal (per-unit std
      across samples, RMS over units) at the first epoch: a forward signal that shrinks layer
      by layer leaves the deep layers the same output for every input;
    - `max_dead`, `max_saturated`: the largest dead or saturated share of a hidden layer at the
      last epoch;
    - `dead_outputs`: with an activation after the output layer, how many of the `classes`
      output units are dead (constant for every sample) at the last epoch;
    - `max_grad_norm`, `max_clip_fraction`: over the trained epochs.

    A stuck run's cause is the first that holds of: exploding gradients (global norm above
    `exploding_norm`: what follows from them, dead units among others, is not the cause),
    dead output units, vanishing gradients toward the input (`grad_ratio` below
    `vanishing_ratio`), collapsed forward signal (`signal_ratio` below `collapse_ratio`), dead
    units, saturated units (a hidden layer's share at least `unit_share`), clipped gradients
    (clipping on most steps of an epoch: each step is cut to `optimizer.grad_clip`); where both
    gradient and signal rules hold, the one with the smaller ratio comes first."""
    flags: dict[str, Any] = {
        "flag": "",
        "flag_reason": "",
        "grad_ratio_first": np.nan,
        "grad_ratio_best": np.nan,
        "signal_ratio": np.nan,
        "max_dead": np.nan,
        "dead_outputs": np.nan,
        "max_saturated": np.nan,
        "max_grad_norm": np.nan,
        "max_clip_fraction": np.nan,
    }
    if metrics.empty:
        return flags
    first, last = metrics["epoch"].iloc[0], metrics["epoch"].iloc[-1]
    measure = gradient_measure(layers) if not layers.empty else None

    def ratio(epoch: Any) -> float:
        at = _at(layers, epoch, measure)
        if len(at) < 2:  # a linear classifier has one layer: no flow to measure
            return np.nan
        return float(at.iloc[0] / at.iloc[-1]) if at.iloc[-1] > 0 else np.nan

    if measure:
        flags["grad_ratio_first"] = ratio(first)
        flags["grad_ratio_best"] = ratio(best)
    if "signal" in layers.columns:
        std = _at(layers, first, "signal", hidden=True)
        if len(std) >= 2 and std.iloc[0] > 0:
            flags["signal_ratio"] = float(std.iloc[-1] / std.iloc[0])
    for unit in ("dead", "saturated"):
        if unit in layers.columns:
            shares = _at(layers, last, unit, hidden=True)
            flags[f"max_{unit}"] = float(shares.max()) if len(shares) else np.nan
    if "dead" in layers.columns:  # logits constant for every sample: an activation after them
        at = layers[(layers["epoch"] == last) & (layers["layer"].astype(str) == "out")]["dead"]
        if at.notna().any():
            flags["dead_outputs"] = round(float(at.dropna().iloc[0]) * classes)
    rows = trained(metrics)
    if "grad_norm_total" in rows.columns and len(rows):
        flags["max_grad_norm"] = float(rows["grad_norm_total"].max())
        flags["max_clip_fraction"] = float(rows["clip_fraction"].max())

    smallest = np.nanmin([flags["grad_ratio_first"], flags["grad_ratio_best"], np.inf])
    vanishing = smallest < settings.vanishing_ratio
    exploding = flags["max_grad_norm"] > settings.exploding_norm
    dead_outputs = flags["dead_outputs"] > 0
    causes = [
        (
            exploding,
            "exploding gradients",
            f"global gradient norm up to {flags['max_grad_norm']:.3g}",
        ),
        (
            dead_outputs,
            "dead output units",
            f"{flags['dead_outputs']:.0f} of {classes} output units dead at the last epoch "
            "(constant for every sample: the activation after the output layer)",
        ),
        (
            vanishing,
            "vanishing gradients toward the input",
            f"first-to-output layer gradient RMS ratio {smallest:.2g}",
        ),
        (
            flags["signal_ratio"] < settings.collapse_ratio,
            "collapsed forward signal",
            f"signal (std across samples) of the last hidden layer {flags['signal_ratio']:.2g} "
            f"of the first's at epoch {first}",
        ),
        (
            flags["max_dead"] >= settings.unit_share,
            "dead units",
            f"up to {flags['max_dead']:.0%} of a layer's units dead",
        ),
        (
            flags["max_saturated"] >= settings.unit_share,
            "saturated units",
            f"up to {flags['max_saturated']:.0%} of a layer's outputs saturated",
        ),
        (
            flags["max_clip_fraction"] > 0.5,
            "clipped gradients",
            f"clipping on up to {flags['max_clip_fraction']:.0%} of an epoch's steps",
        ),
    ]
    if vanishing and flags["signal_ratio"] < min(settings.collapse_ratio, smallest):
        causes[2:4] = causes[3:1:-1]  # both: the more extreme ratio is the likelier cause
    if status in ("diverged", "failed"):
        return flags
    stuck = stuck_at_chance(metrics, classes, settings.chance_margin)
    if stuck:
        found = [(cause, numbers) for holds, cause, numbers in causes if holds]
        if found:
            flags["flag"] = f"stuck at chance ({found[0][0]})"
            flags["flag_reason"] = "; ".join([stuck, *(numbers for _, numbers in found)])
        else:
            flags["flag"] = "stuck at chance"
            flags["flag_reason"] = stuck + (
                "; no cause in the diagnostics (learning rate? an activation after the output?)"
                if measure
                else "; no diagnostics recorded (trainer.diagnostics=false)"
            )
    elif exploding:
        flags["flag"] = "exploding gradients"
        flags["flag_reason"] = causes[0][2]
    elif dead_outputs:
        flags["flag"] = "dead output units"
        flags["flag_reason"] = causes[1][2]
    elif vanishing:
        flags["flag"] = "vanishing gradients"
        flags["flag_reason"] = next(n for _, c, n in causes if c.startswith("vanishing"))
    return flags
