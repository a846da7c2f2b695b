"""The report's seed-statistics section (`fitscope.report.stats` as blocks): per setup the mean
and 95% interval of the main results, the tested comparisons of test accuracy, what the numbers
mean; for a single-seed sweep, one sentence that its differences are untested."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.frames import Report
from fitscope.report.spec import Chart
from fitscope.report.stats import ALPHA, INTERVAL_METRICS, REPLICATE_WORDS, p_text

Block = tuple  # as `fitscope.report.blocks.Block`
SHOWN_SETUPS = 30  # the report's table of setups: this many, in the sweep's order; all in the csv
SHOWN_COMPARISONS = 20  # the report's table: this many, lowest Holm p first; all in the csv
COLUMN_NAMES = {
    "test_acc": "test accuracy (%)",
    "best_val_loss": "best val loss",
    "best_epoch": "best epoch",
}

MEANING = """\
- **mean [95% CI]**: the mean over the setup's completed runs and the 95% confidence interval of
  that mean, from Student's t with n - 1 degrees of freedom: mean ± t · s / √n, s the standard
  deviation over the {word}s. Intervals made this way hold the true mean (what infinitely many
  {word}s would average) in 95% of sweeps. None for n = 1; wide for n = 2 (t = 12.7).
- **diff**: the mean of b minus the mean of a (a is the value the sweep lists first), in
  percentage points of test accuracy, with its 95% confidence interval.
- **paired** when a and b ran the same {word}s: runs are matched by {word} and the t-test is on
  the per-{word} differences (what a {word} does to both cancels out); otherwise **Welch**'s
  t-test, which assumes neither equal variances nor matched runs.
- **p**: the two-sided p-value, how often a difference at least this large would come from
  {word} noise alone if a and b had the same mean. **Holm p**: p adjusted by Holm's step-down
  correction over all {count} tested comparisons of test accuracy (in comparisons.csv, those of
  best validation loss among themselves), so that the chance of calling any of
  them significant by luck stays below {alpha:.0%}; **significant** means Holm p < {alpha:g}.
  The interval is not adjusted: it can exclude 0 where Holm p is above {alpha:g}.
- **untested**: fewer than 2 runs (or matched pairs) with a value on a side; **no spread**:
  every {word} gives the same difference (or the same values), so t is undefined."""


def _with_interval(mean: float, low: float, high: float, metric: str) -> str:
    if not np.isfinite(mean):
        return ""
    factor, digits = (100, 2) if metric.endswith("acc") else (1, 1 if "epoch" in metric else 4)
    text = f"{factor * mean:.{digits}f}"
    if np.isfinite(low):
        text += f" [{factor * low:.{digits}f}, {factor * high:.{digits}f}]"
    return text


def setup_table(groups: pd.DataFrame, setup: list[str]) -> pd.DataFrame:
    """groups.csv for reading: per setup, n and `mean [low, high]` of each interval metric (the
    count in brackets where fewer runs than n have the value)."""
    names = [
        " ".join(f"{k}={show_value(row[k])}" for k in setup) or "all runs"
        for row in groups.to_dict("records")
    ]
    table = pd.DataFrame({"n": groups["n"].astype(int).to_numpy()}, index=pd.Index(names))
    table.index.name = "setup"
    for metric in INTERVAL_METRICS:
        cells = []
        for row in groups.to_dict("records"):
            number = {p: row.get(f"{metric}_{p}", np.nan) for p in ("mean", "ci_low", "ci_high")}
            text = _with_interval(*(float(v) for v in number.values()), metric)
            count = int(row.get(f"{metric}_n", row["n"]))
            if text and count < row["n"]:
                text += f" (n={count})"
            cells.append(text)
        table[f"{COLUMN_NAMES[metric]}, mean [95% CI]"] = cells
    return table


def comparison_table(comparisons: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """The comparisons of one metric for reading, lowest Holm p first (untested ones last)."""
    rows = comparisons[comparisons["metric"] == metric]
    rows = rows.assign(_order=rows["p_holm"].fillna(np.inf)).sort_values(["_order", "p"])
    factor, digits = (100, 2) if metric.endswith("acc") else (1, 4)
    unit = " (pp)" if metric.endswith("acc") else ""
    out = []
    for row in rows.to_dict("records"):
        tested = np.isfinite(row["ci_low"])
        if row["paired"]:
            test = f"paired, {row['n_pairs']}"
        else:
            test = f"Welch, {row['n_a']} + {row['n_b']}"
        if pd.isna(row["significant"]):
            result = "no spread" if "no spread" in row["verdict"] else "untested"
        else:
            result = "significant" if row["significant"] else "not significant"
        out.append(
            {
                "comparison": f"{row['key']}: {row['a']} vs {row['b']}",
                "at": row["at"],
                "test, n": test,
                f"diff b - a{unit}": round(factor * row["diff"], digits),
                f"95% CI{unit}": (
                    f"[{factor * row['ci_low']:+.{digits}f}, {factor * row['ci_high']:+.{digits}f}]"
                    if tested
                    else ""
                ),
                "p": p_text(row["p"]),
                "Holm p": p_text(row["p_holm"]),
                "result": result,
            }
        )
    table = pd.DataFrame(out, columns=list(out[0]) if out else ["comparison"])
    if not table.empty and not table["at"].astype(bool).any():
        table = table.drop(columns="at")
    return table.set_index("comparison")


def _word(report: Report) -> str:
    keys = report.replicate_keys
    return REPLICATE_WORDS.get(keys[0], "replicate") if len(keys) == 1 else "run"


def seed_stats_blocks(report: Report, chart: Chart | None) -> list[Block]:
    """The seed-statistics section: when a replicate key varies, the setups' intervals, their
    chart and the comparisons of test accuracy; when only other keys vary, one sentence."""
    if not report.replicate_keys:
        if not report.varying:
            return []
        return [
            ("h2", "Seed statistics"),
            (
                "p",
                "Every setup ran with one seed, so the differences between runs are untested: "
                "a difference between two runs may be seed noise. Add seeds to the sweep "
                "(trainer.seed=0,1,2 on the command line) and the report gives each setup's "
                "95% confidence interval and tests every difference.",
            ),
        ]
    word = _word(report)
    setup = [k for k in report.varying if k not in report.replicate_keys]
    table = setup_table(report.groups, setup)
    shown = (
        f" The first {SHOWN_SETUPS} of {len(table)} setups." if len(table) > SHOWN_SETUPS else ""
    )
    blocks: list[Block] = [
        ("h2", f"Seed statistics: confidence intervals and tests over {word}s"),
        (
            "p",
            f"Per setup (completed runs with the same values of every varying key but the "
            f"{word}), the mean and its 95% confidence interval (groups.csv: "
            "<metric>_ci_low, <metric>_ci_high, and <metric>_n, the runs with a value)." + shown,
        ),
        ("table", table.head(SHOWN_SETUPS), "setup-intervals"),
    ]
    if chart is not None:
        blocks.append(("chart", chart))
    comparisons = report.comparisons
    if comparisons is None or comparisons.empty:
        blocks.append(("p", f"Only the {word} varies: one setup, nothing to compare."))
        return blocks
    acc = comparisons[comparisons["metric"] == "test_acc"]
    tested = acc["significant"].notna()
    significant = int(acc["significant"].fillna(False).sum())
    summary = (
        f"{significant} of {int(tested.sum())} tested comparisons of test accuracy are "
        f"significant (Holm p < {ALPHA:g})"
    )
    spreadless = acc["verdict"].str.contains("no spread", regex=False) & ~tested
    for count, words in (
        (int((~tested & ~spreadless).sum()), "untested"),
        (int(spreadless.sum()), "with no spread"),
    ):
        if count:
            summary += f"; {count} {words}"
    shown = comparison_table(comparisons)
    if len(shown) > SHOWN_COMPARISONS:
        summary += f". Below, the {SHOWN_COMPARISONS} of {len(shown)} with the lowest Holm p"
        shown = shown.iloc[:SHOWN_COMPARISONS]
    blocks += [
        ("h3", "Comparisons of test accuracy"),
        (
            "p",
            f"For each varying key, every two of its values a and b at equal values of the other "
            f"keys (at). {summary}. Every comparison, with its verdict in words, and those of "
            "best validation loss: comparisons.csv.",
        ),
        ("table", shown, "comparisons"),
        ("md", MEANING.format(word=word, count=int(tested.sum()), alpha=ALPHA)),
    ]
    return blocks
