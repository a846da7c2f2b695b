"""What the per-layer diagnostics say of a run: `stuck at chance` with its likeliest cause,
exploding or vanishing gradients, dead output units, and the ratios behind them (see the
README's Diagnostics)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fitscope.report.diagnose import RunCurves
from fitscope.report.settings import ReportSettings

FLAG_COLUMNS = (
    "grad_ratio_first",
    "grad_ratio_best",
    "signal_ratio",
    "max_dead",
    "dead_outputs",
    "max_saturated",
    "max_grad_norm",
    "max_clip_fraction",
)


def gradient_measure(run: RunCurves) -> str | None:
    """`grad_rms` (per weight), or `grad_norm` for run folders written before it; None."""
    for measure in ("grad_rms", "grad_norm"):
        if run.layer_columns(measure):
            return measure
    return None


def _row(run: RunCurves, epoch: Any) -> int | None:
    where = np.flatnonzero(run.epoch == epoch) if epoch is not None else []
    return int(where[0]) if len(where) else None


def layer_values(run: RunCurves, epoch: Any, measure: str, hidden: bool = False) -> np.ndarray:
    """`measure` at `epoch` by layer, from the input to the output (hidden layers only with
    `hidden`), the layers without a value left out."""
    row = _row(run, epoch)
    if row is None:
        return np.zeros(0)
    values = np.array([run.columns[c][row] for c in run.layer_columns(measure, hidden)], float)
    return values[~np.isnan(values)]


def _gradient_ratio(run: RunCurves, epoch: Any, measure: str) -> float:
    """First-to-output layer ratio of `measure` at `epoch`; NaN for a linear classifier."""
    at = layer_values(run, epoch, measure)
    if len(at) < 2:  # a linear classifier has one layer: no flow to measure
        return math.nan
    return float(at[0] / at[-1]) if at[-1] > 0 else math.nan


def _column_max(run: RunCurves, name: str) -> float:
    values = run.columns.get(name)
    if values is None or np.isnan(values).all():
        return math.nan
    return float(np.nanmax(values))


def layer_numbers(run: RunCurves, best: int | None, classes: int) -> dict[str, float]:
    """The ratios and shares the flags are judged on (`FLAG_COLUMNS`)."""
    numbers = dict.fromkeys(FLAG_COLUMNS, math.nan)
    first, last = run.epoch[0], run.epoch[-1]
    measure = gradient_measure(run)
    if measure:
        numbers["grad_ratio_first"] = _gradient_ratio(run, first, measure)
        numbers["grad_ratio_best"] = _gradient_ratio(run, best, measure)
    signal = layer_values(run, first, "signal", hidden=True)
    if len(signal) >= 2 and signal[0] > 0:
        numbers["signal_ratio"] = float(signal[-1] / signal[0])
    for unit in ("dead", "saturated"):
        shares = layer_values(run, last, unit, hidden=True)
        numbers[f"max_{unit}"] = float(shares.max()) if len(shares) else math.nan
    dead_out = run.columns.get("dead_out")
    if dead_out is not None and not math.isnan(dead_out[-1]):  # logits constant for every sample
        numbers["dead_outputs"] = round(float(dead_out[-1]) * classes)
    trained = run.trained()
    if len(trained):
        numbers["max_grad_norm"] = _column_max(trained, "grad_norm_total")
        numbers["max_clip_fraction"] = _column_max(trained, "clip_fraction")
    return numbers


def stuck_at_chance(run: RunCurves, classes: int, margin: float) -> str | None:
    """Why a run counts as stuck at chance level, or None: over every trained epoch,
    validation accuracy stayed within `margin` of chance (1 / classes), or validation loss
    within `margin` (relative) of ln(classes), the loss of a net that has learnt nothing, while
    accuracy stayed within twice `margin` of chance (a run whose loss is still near ln(classes)
    but whose accuracy has clearly left chance is learning, if slowly)."""
    rows = run.trained()
    if not len(rows) or classes < 2:
        return None
    chance, level = 1 / classes, math.log(classes)
    acc, loss = rows.val_acc, rows.val_loss
    if np.isfinite(acc).any() and np.nanmax(acc) <= chance + margin:
        return f"val acc never above {np.nanmax(acc):.1%} (chance {chance:.0%})"
    near = not np.isfinite(acc).any() or np.nanmax(acc) <= chance + 2 * margin
    if near and np.isfinite(loss).all() and (np.abs(loss / level - 1) <= margin).all():
        return f"val loss stayed within {margin:.0%} of ln {classes} = {level:.2f}"
    return None


def _causes(numbers: dict, first: Any, classes: int, settings: ReportSettings) -> list:
    """(holds, cause, its numbers in words) in the order a stuck run's cause is named."""
    smallest = np.nanmin([numbers["grad_ratio_first"], numbers["grad_ratio_best"], np.inf])
    vanishing = smallest < settings.vanishing_ratio
    causes = [
        (
            numbers["max_grad_norm"] > settings.exploding_norm,
            "exploding gradients",
            f"global gradient norm up to {numbers['max_grad_norm']:.3g}",
        ),
        (
            numbers["dead_outputs"] > 0,
            "dead output units",
            f"{numbers['dead_outputs']:.0f} of {classes} output units dead at the last epoch "
            "(constant for every sample: the activation after the output layer)",
        ),
        (
            vanishing,
            "vanishing gradients toward the input",
            f"first-to-output layer gradient RMS ratio {smallest:.2g}",
        ),
        (
            numbers["signal_ratio"] < settings.collapse_ratio,
            "collapsed forward signal",
            f"signal (std across samples) of the last hidden layer {numbers['signal_ratio']:.2g} "
            f"of the first's at epoch {first}",
        ),
        (
            numbers["max_dead"] >= settings.unit_share,
            "dead units",
            f"up to {numbers['max_dead']:.0%} of a layer's units dead",
        ),
        (
            numbers["max_saturated"] >= settings.unit_share,
            "saturated units",
            f"up to {numbers['max_saturated']:.0%} of a layer's outputs saturated",
        ),
        (
            numbers["max_clip_fraction"] > 0.5,
            "clipped gradients",
            f"clipping on up to {numbers['max_clip_fraction']:.0%} of an epoch's steps",
        ),
    ]
    if vanishing and numbers["signal_ratio"] < min(settings.collapse_ratio, smallest):
        causes[2:4] = causes[3:1:-1]  # both: the more extreme ratio is the likelier cause
    return causes


def run_flags(
    run: RunCurves,
    best: int | None,
    classes: int,
    settings: ReportSettings,
    status: str = "completed",
) -> dict[str, Any]:
    """What the diagnostics say of a run: `flag` (`stuck at chance (<cause>)`, `exploding
    gradients`, `dead output units`, `vanishing gradients` or ``; none for a run that diverged
    or failed, whose status says what happened), `flag_reason` (the numbers behind it), and
    `FLAG_COLUMNS`:

    - `grad_ratio_first`, `grad_ratio_best`: first-to-output layer ratio of gradient RMS at the
      first epoch recorded (0, the untrained net) and the best one;
    - `signal_ratio`: last-to-first hidden layer ratio of the activations' signal at the first
      epoch: a forward signal that shrinks layer by layer;
    - `max_dead`, `max_saturated`: the largest dead or saturated share of a hidden layer at the
      last epoch; `dead_outputs`: output units dead (constant) at the last epoch;
    - `max_grad_norm`, `max_clip_fraction`: over the trained epochs.

    A stuck run's cause is the first that holds of `_causes`: exploding gradients (what
    follows from them, dead units among others, is not the cause), dead output units, vanishing
    gradients toward the input, collapsed forward signal, dead units, saturated units, clipped
    gradients; where both gradient and signal rules hold, the one with the smaller ratio comes
    first."""
    flags: dict[str, Any] = {"flag": "", "flag_reason": "", **dict.fromkeys(FLAG_COLUMNS, np.nan)}
    if not len(run):
        return flags
    flags.update(layer_numbers(run, best, classes))
    if status in ("diverged", "failed"):
        return flags
    causes = _causes(flags, run.epoch[0], classes, settings)
    stuck = stuck_at_chance(run, classes, settings.chance_margin)
    if stuck:
        found = [(cause, numbers) for holds, cause, numbers in causes if holds]
        if found:
            flags["flag"] = f"stuck at chance ({found[0][0]})"
            flags["flag_reason"] = "; ".join([stuck, *(numbers for _, numbers in found)])
        else:
            flags["flag"] = "stuck at chance"
            flags["flag_reason"] = stuck + (
                "; no cause in the diagnostics (learning rate? an activation after the output?)"
                if gradient_measure(run)
                else "; no diagnostics recorded (trainer.diagnostics=false)"
            )
        return flags
    for holds, cause, numbers in causes:
        if holds and cause in ("exploding gradients", "dead output units"):
            flags["flag"], flags["flag_reason"] = cause, numbers
            return flags
    for holds, cause, numbers in causes:
        if holds and cause == "vanishing gradients toward the input":
            flags["flag"], flags["flag_reason"] = "vanishing gradients", numbers
    return flags
