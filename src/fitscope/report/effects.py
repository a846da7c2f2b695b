"""Three published effects of initialization and depth, checked on whichever runs of a report
test them (`experiment=reproduction` runs all three):

- Glorot & Bengio (2010): deep sigmoid nets with small (PyTorch's default) init stall, their
  gradients vanishing toward the input;
- He et al. (2015): a deep ReLU net with PyTorch's default init collapses its forward signal,
  Kaiming init keeps it;
- Klambauer et al. (2017): SELU with LeCun init keeps activations near mean 0 / std 1 across
  depth (checked at epoch 0, the network as initialized).

Each check says in words whether the runs reproduce the effect, with the numbers behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fitscope.config import AUTO_INIT
from fitscope.report.frames import Report

DEEP = 4  # hidden layers from which a net counts as deep for these effects
# Klambauer et al.'s fixed point, as close as a finite batch and width get to it at epoch 0
SELU_MEAN_TOLERANCE = 0.15
SELU_STD_TOLERANCE = 0.15


@dataclass(frozen=True)
class Effect:
    source: str  # who published it
    claim: str  # what they found, in words
    verdict: str  # reproduced (at width W and wider), partly reproduced, not reproduced, ...
    evidence: str  # the numbers from these runs


def _setups(report: Report) -> pd.DataFrame:
    """Per completed run: activation, resolved init, depth, and the run's row of `runs`."""
    runs = report.runs[report.runs["status"] == "completed"].set_index("run")
    configs = report.configs.reindex(runs.index)
    activation = configs.get("activation.name", configs.get("activation"))
    if activation is None or "model.depth" not in configs or "model.init" not in configs:
        return pd.DataFrame()
    frame = runs.assign(
        act=activation.astype(str),
        init=[
            AUTO_INIT.get(str(a), "default") if i == "auto" else str(i)
            for a, i in zip(activation, configs["model.init"], strict=True)
        ],
        depth=pd.to_numeric(configs["model.depth"], errors="coerce"),
        width=pd.to_numeric(configs.get("model.width", np.nan), errors="coerce"),
    )
    return frame[frame["depth"] >= DEEP]


def _span(values: pd.Series, fmt: str = ".2g") -> str:
    values = values.dropna()
    if values.empty:
        return "not measured"
    low, high = values.min(), values.max()
    return f"{low:{fmt}}" if low == high else f"{low:{fmt}} to {high:{fmt}}"


def _stalled(runs: pd.DataFrame) -> pd.Series:
    return runs["flag"].fillna("").str.startswith("stuck") | (runs["diagnosis"] == "underfit")


NOT_MEASURED = (
    "these runs have no diagnostics at epoch 0 (runs recorded with trainer.diagnostics=false, or "
    "by a fitscope older than epoch 0)"
)


def glorot(report: Report, setups: pd.DataFrame) -> Effect | None:
    runs = setups[(setups["act"] == "sigmoid") & (setups["init"] == "default")]
    if runs.empty:
        return None
    claim = (
        "deep sigmoid nets with small initial weights stall: their gradients vanish toward the "
        "input"
    )
    source = "Glorot & Bengio (2010)"
    if runs["grad_ratio_first"].isna().all():
        return Effect(source, claim, "not testable", NOT_MEASURED)
    threshold = report.settings.vanishing_ratio
    ratios = runs["grad_ratio_first"]
    vanishing, stalled = int((ratios < threshold).sum()), int(_stalled(runs).sum())
    n = len(runs)
    evidence = (
        f"{n} sigmoid run(s) of depth {_span(runs['depth'], 'g')} with default init: the first "
        f"layer's gradient RMS at the first epoch recorded is {_span(ratios)} of the output "
        f"layer's (vanishing below {threshold:g}) in {vanishing} of {n}; {stalled} of {n} "
        f"stalled (stuck at chance or underfit; best val acc "
        f"{_span(100 * runs['best_val_acc'], '.1f')}%)"
    )
    xavier = setups[(setups["act"] == "sigmoid") & (setups["init"] == "xavier")]
    if len(xavier):
        evidence += (
            f"; with Xavier init (their normalized init), {_span(xavier['grad_ratio_first'])} and "
            f"{int(_stalled(xavier).sum())} of {len(xavier)} stalled"
        )
    saturated = pd.concat([runs, xavier])["max_saturated"].dropna()
    if len(saturated):
        evidence += (
            f"; saturated outputs (within 0.01 of 0 or 1) in a hidden layer at the last epoch: "
            f"up to {saturated.max():.0%}"
        )
    evidence += "."
    verdict = (
        "reproduced"
        if vanishing == stalled == n
        else "partly reproduced"
        if vanishing or stalled
        else "not reproduced"
    )
    return Effect(source, claim, verdict, evidence)


def he(report: Report, setups: pd.DataFrame) -> Effect | None:
    relu = setups[setups["act"] == "relu"]
    default, kaiming = relu[relu["init"] == "default"], relu[relu["init"] == "kaiming"]
    if default.empty and kaiming.empty:
        return None
    claim = (
        "a deep ReLU net with PyTorch's default init collapses its forward signal; Kaiming init "
        "keeps it"
    )
    if relu["signal_ratio"].isna().all():
        return Effect("He et al. (2015)", claim, "not testable", NOT_MEASURED)
    threshold = report.settings.collapse_ratio
    collapsed = int((default["signal_ratio"] < threshold).sum())
    kept = int((kaiming["signal_ratio"] >= threshold).sum())
    parts = []
    if len(default):
        parts.append(
            f"default init ({len(default)} run(s)): the last hidden layer's signal at the first "
            f"epoch recorded is {_span(default['signal_ratio'])} of the first's (collapsed below "
            f"{threshold:g} in {collapsed} of {len(default)}), best val acc "
            f"{_span(100 * default['best_val_acc'], '.1f')}%"
        )
    if len(kaiming):
        parts.append(
            f"Kaiming init ({len(kaiming)} run(s)): {_span(kaiming['signal_ratio'])} (kept in "
            f"{kept} of {len(kaiming)}), best val acc "
            f"{_span(100 * kaiming['best_val_acc'], '.1f')}%"
        )
    both = len(default) and len(kaiming)
    if both and collapsed == len(default) and kept == len(kaiming):
        verdict = "reproduced"
    elif collapsed or kept:
        verdict = "partly reproduced" if both else "half tested (add the other init)"
    else:
        verdict = "not reproduced"
    return Effect(
        "He et al. (2015)",
        claim,
        verdict,
        f"ReLU runs of depth {_span(relu['depth'], 'g')}: " + "; ".join(parts) + ".",
    )


def _selu_holds(layers: pd.DataFrame) -> bool:
    """Every hidden layer's epoch-0 activation mean and std within the tolerances."""
    worst_mean = float(np.nanmax(np.abs(layers["act_mean"])))
    worst_std = float(np.nanmax(np.abs(layers["act_std"] - 1)))
    return worst_mean <= SELU_MEAN_TOLERANCE and worst_std <= SELU_STD_TOLERANCE


def klambauer(report: Report, setups: pd.DataFrame) -> Effect | None:
    runs = setups[(setups["act"] == "selu") & (setups["init"] == "lecun")]
    if runs.empty:
        return None
    layers = report.layers
    claim = "SELU with LeCun init keeps activations near mean 0 and std 1 across depth"
    at = layers[layers["run"].isin(runs.index) & (layers["layer"].astype(str) != "out")]
    at = at[at["epoch"] == 0]
    if at.empty or "act_std" not in at or at["act_std"].isna().all():
        return Effect("Klambauer et al. (2017)", claim, "not testable", NOT_MEASURED)
    evidence = (
        f"{len(runs)} SELU run(s) with LeCun init, depth {_span(runs['depth'], 'g')}, at epoch "
        f"0: every hidden layer's activation mean is {_span(at['act_mean'])} and std "
        f"{_span(at['act_std'])} (allowed: |mean| <= {SELU_MEAN_TOLERANCE:g}, |std - 1| <= "
        f"{SELU_STD_TOLERANCE:g})"
    )
    # the fixed point is a wide-layer limit: a narrow layer's mean over its few units wanders,
    # so where widths vary each is judged alone, and the widest decide
    at = at.assign(width=runs["width"].reindex(at["run"]).to_numpy())
    widths = sorted(at["width"].dropna().unique())
    holds_at = {w: _selu_holds(at[at["width"] == w]) for w in widths}
    if len(widths) > 1:
        held = [w for w in widths if holds_at[w]]
        missed = [w for w in widths if not holds_at[w]]
        if held and missed and max(missed) < min(held):
            narrow = ", ".join(f"{w:g}" for w in missed)
            evidence += (
                f"; by width: held at width {min(held):g} and wider, not at {narrow}, whose "
                "few units per layer make the mean wander"
            )
            verdict = f"reproduced at width {min(held):g} and wider"
            return Effect("Klambauer et al. (2017)", claim, verdict, evidence + ".")
        if held and missed:
            evidence += "; by width: held at " + ", ".join(f"{w:g}" for w in held)
            evidence += ", not at " + ", ".join(f"{w:g}" for w in missed)
    holds = _selu_holds(at)
    others = report.layers[
        report.layers["run"].isin(
            setups[(setups["act"] == "selu") & (setups["init"] != "lecun")].index
        )
        & (report.layers["epoch"] == 0)
        & (report.layers["layer"].astype(str) != "out")
    ]
    if not others.empty:
        evidence += f"; SELU with other inits: std {_span(others['act_std'])}"
    return Effect(
        "Klambauer et al. (2017)",
        claim,
        "reproduced" if holds else "not reproduced",
        evidence + ".",
    )


def published_effects(report: Report) -> list[Effect]:
    """The effects that some of the report's runs test, each with its verdict and numbers."""
    setups = _setups(report)
    if setups.empty:
        return []
    found = [check(report, setups) for check in (glorot, he, klambauer)]
    return [effect for effect in found if effect is not None]
