"""What the report concludes from one run's epoch rows: the fit diagnosis, the best and
early-stopping epochs, and the per-layer gradient flags."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fitscope.report.settings import ReportSettings
from fitscope.rundir import LAYER_MEASURES, parse_layer_column
from fitscope.stopping import best_epoch, stop_epoch


def stopping_epochs(metrics: pd.DataFrame, settings: ReportSettings) -> dict[str, int | None]:
    """`best_epoch` (lowest validation loss), `early_stopping_epoch` (where early stopping with
    `report.patience` and `report.min_delta` would stop; None if it never would within the
    epochs run) and `restored_epoch` (the best epoch up to that stop, or of all epochs when it
    never stops), as epoch numbers."""
    losses, epochs = list(metrics["val_loss"]), list(metrics["epoch"])

    def epoch_at(index: int | None) -> int | None:  # 1-based row index -> epoch number
        return None if index is None else int(epochs[index - 1])

    stop_index = stop_epoch(losses, settings.patience, settings.min_delta)
    return {
        "best_epoch": epoch_at(best_epoch(losses)),
        "early_stopping_epoch": epoch_at(stop_index),
        "restored_epoch": epoch_at(best_epoch(losses[:stop_index])),
    }


def _ratio(new: float, old: float) -> float:
    """new / old for losses >= 0, where a loss may be exactly 0 (an easy problem learnt)."""
    if old > 0:
        return new / old
    return 1.0 if new == old else math.inf


def diagnose(metrics: pd.DataFrame, settings: ReportSettings) -> tuple[str, str]:
    """(`underfit` | `overfit` | `good fit`, the reason in words) for a run's epoch rows.

    - underfit: last train accuracy below `underfit_train_acc`; or validation loss still fell
      by more than `converge_tol` over the last `converge_window` of the epochs (not converged);
    - overfit: last validation loss at least `overfit_rise` above its minimum, reached before the
      last epoch, while training loss kept falling after that minimum;
    - good fit: otherwise.
    """
    val = metrics["val_loss"].to_numpy(float)
    train = metrics["train_loss"].to_numpy(float)
    train_acc = metrics["train_acc"].to_numpy(float)
    epochs = len(val)
    best_at = best_epoch(list(val))
    if best_at is None:
        return "no data", "no finite validation loss"
    best = best_at - 1  # index of the best epoch
    if train_acc[-1] < settings.underfit_train_acc:
        return "underfit", (
            f"train acc {train_acc[-1]:.1%} < {settings.underfit_train_acc:.0%} after {epochs} "
            f"epochs (val acc {metrics['val_acc'].iloc[-1]:.1%})"
        )
    rise = _ratio(val[-1], val[best]) - 1
    if best < epochs - 1 and rise >= settings.overfit_rise and train[-1] < train[best]:
        return "overfit", (
            f"val loss +{rise:.0%} after epoch {best + 1} while train loss fell "
            f"{1 - train[-1] / train[best]:.0%}"
        )
    if epochs < 3:
        return "underfit", f"only {epochs} epoch(s): too few to have converged"
    window = max(2, math.ceil(epochs * settings.converge_window))
    start = max(0, epochs - 1 - window)
    fall = 1 - _ratio(val[-1], val[start])
    if fall > settings.converge_tol:
        return "underfit", (
            f"not converged: val loss still fell {fall:.1%} over the last {epochs - 1 - start} "
            "epochs (train longer)"
        )
    return "good fit", (
        f"val loss {rise:+.1%} from its minimum at epoch {best + 1}; "
        f"train acc {train_acc[-1]:.1%}, val acc {metrics['val_acc'].iloc[-1]:.1%}"
    )


def layer_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-layer diagnostics of `metrics.csv` in tidy form: one row per (epoch, layer) with
    `layer` (1, 2, ... then `out`), `depth_index` (1 for the first layer) and one column per
    measure (`grad_norm`, `act_mean`, `act_std`, `dead`, `saturated`, where measured)."""
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


def gradient_flags(
    metrics: pd.DataFrame, layers: pd.DataFrame, best: int | None, settings: ReportSettings
) -> dict[str, Any]:
    """First-to-last layer gradient-norm ratios at the first and best epochs, the largest global
    norm and clip fraction, and a flag: `vanishing gradients`, `exploding gradients` or ``."""
    flags: dict[str, Any] = {
        "grad_ratio_first": np.nan,
        "grad_ratio_best": np.nan,
        "max_grad_norm": np.nan,
        "max_clip_fraction": np.nan,
        "gradient_flag": "",
    }
    if layers.empty or "grad_norm" not in layers.columns:
        return flags

    def ratio(epoch: int | None) -> float:
        at = layers[layers["epoch"] == epoch].set_index("depth_index")["grad_norm"]
        if len(at) < 2:  # a linear classifier has one layer: no flow to measure
            return np.nan
        return float(at.iloc[0] / at.iloc[-1]) if at.iloc[-1] > 0 else np.nan

    flags["grad_ratio_first"] = ratio(int(metrics["epoch"].iloc[0]))
    flags["grad_ratio_best"] = ratio(best)
    if "grad_norm_total" in metrics.columns:
        flags["max_grad_norm"] = float(metrics["grad_norm_total"].max())
        flags["max_clip_fraction"] = float(metrics["clip_fraction"].max())
    smallest = np.nanmin([flags["grad_ratio_first"], flags["grad_ratio_best"], np.inf])
    if smallest < settings.vanishing_ratio:
        flags["gradient_flag"] = "vanishing gradients"
    elif flags["max_grad_norm"] > settings.exploding_norm or flags["max_clip_fraction"] > 0.5:
        flags["gradient_flag"] = "exploding gradients"
    return flags
