"""What a report says, in order, as a list of blocks (heading, paragraph, list, table, chart,
code, folded section) that `fitscope.report.render` writes twice: as Markdown and as HTML.

The order is the study's: what the sweep found, the results matrix, what each key does, the
curves, the runs (flagged ones first), seed statistics, diagnostics, the config, problems, and
the definitions last."""

from __future__ import annotations

import re
from datetime import datetime

import pandas as pd
from omegaconf import OmegaConf

from fitscope.config import show_value
from fitscope.report.curves import flagged_spread
from fitscope.report.definitions import definitions
from fitscope.report.effects import published_effects
from fitscope.report.frames import Report
from fitscope.report.spec import Chart
from fitscope.report.stat_blocks import seed_stats_blocks
from fitscope.report.study import Study, run_verdict

# ("h1" | "h2" | "h3" | "p" | "md" | "code", text), ("list", [texts]), ("table", frame, name),
# ("runs", frame), ("chart", Chart), ("details", summary, markdown)
Block = tuple

# The run table: what a reader looks for first, so that verdict, test accuracy and reason are
# on a laptop's screen without scrolling sideways; every other column is in runs.csv.
RUN_COLUMNS = [
    "diagnosis",
    "test_acc",
    "best_val_loss",
    "best_val_acc",
    "best_epoch",
    "early_stopping_epoch",
    "epochs_run",
    "reason",
]
MARKDOWN_ROWS = 40  # report.md lists this many runs at most: the best and worst, flagged first
COMMANDS = 40  # re-run commands listed in the report; all of them are in runs.csv
PERCENT_COLUMNS = re.compile(r"(acc|acc_mean|acc_std)$")


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers rounded for reading: accuracies as percentages, losses to 4 places."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        if PERCENT_COLUMNS.search(str(column)):
            out[column] = values.map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}%")
        elif (
            str(column).endswith(("epoch", "epochs_run", "params", "_mean", "_std", "n"))
            and (values.dropna() % 1 == 0).all()
        ):
            out[column] = values.map(lambda v: "" if pd.isna(v) else f"{int(v)}")
        else:
            out[column] = values.map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return out


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table: a row per run, labelled, its verdict with its flag (without the cause:
    the flagged runs' table and runs.csv have it); *never* as the early-stopping epoch of a run
    that early stopping would not have stopped (runs.csv keeps the missing value)."""
    table = format_table(runs.set_index("label")[RUN_COLUMNS])
    never = (runs["best_epoch"].notna() & runs["early_stopping_epoch"].isna()).to_numpy()
    table.loc[never, "early_stopping_epoch"] = "never"
    flags = runs["flag"].fillna("").astype(str).str.split(" (", n=1, regex=False).str[0]
    table["diagnosis"] = [
        f"{verdict}; {flag}" if flag else verdict
        for verdict, flag in zip(table["diagnosis"], flags, strict=True)
    ]
    return table.rename(
        columns={
            "diagnosis": "verdict",
            "early_stopping_epoch": "early stop",
            "best_epoch": "best epoch",
            "epochs_run": "epochs",
        }
    )


def _summary_line(report: Report, study: Study) -> str:
    runs = report.runs
    done = int((runs["status"] == "completed").sum())
    # the findings' words: a run stuck at chance counts as stuck, whatever its diagnosis
    counts = run_verdict(runs).replace("stuck", "stuck at chance").value_counts()
    verdicts = ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
    keys = ", ".join(report.varying) or "none"
    return (
        f"{len(runs)} runs ({done} completed): {verdicts}. Varying keys: {keys}. Setups ranked "
        f"by {study.metric_words} (report.metric). Built {datetime.now():%Y-%m-%d %H:%M}."
    )


def _findings(report: Report, study: Study) -> list[Block]:
    blocks: list[Block] = [("h2", "Findings"), ("list", study.findings)]
    for effect in published_effects(report):
        blocks += [
            ("h3", f"Published effect: {effect.source}: {effect.verdict}"),
            ("p", f"Published: {effect.claim}. Here: {effect.evidence}"),
        ]
    return blocks


def _section(heading: str, charts: list[Chart | None], text: str | None = None) -> list[Block]:
    drawn = [c for c in charts if c is not None]
    if not drawn and not text:
        return []
    return [("h2", heading), *([("p", text)] if text else []), *(("chart", c) for c in drawn)]


def _runs(report: Report, charts: dict[str, Chart | None]) -> list[Block]:
    """The flagged runs with their numbers, per-run panels, then the run table."""
    runs = report.runs
    blocks: list[Block] = [("h2", "Runs")]
    flagged = runs.iloc[flagged_spread(report)]
    if len(flagged):
        table = flagged.set_index("label")[["flag", "flag_reason"]].head(MARKDOWN_ROWS)
        more = (
            f" ({MARKDOWN_ROWS} of them: each kind of flag and each setup first; all in runs.csv)"
            if len(flagged) > len(table)
            else ""
        )
        blocks += [
            ("p", f"{len(flagged)} run(s) flagged by the diagnostics{more}:"),
            ("table", table.rename(columns={"flag_reason": "numbers"}), "flags"),
        ]
    for name in ("runs", "flagged_runs"):
        if charts.get(name) is not None:
            blocks.append(("chart", charts[name]))
    table = run_table(runs)
    listed, note = _markdown_rows(runs, table, list(flagged.index))
    blocks += [
        ("p", "Every run: sort by a column, or filter by any text (verdict, a key's value)."),
        ("runs", table, listed, note),
        (
            "p",
            "All columns: runs.csv. Every curve: curves.csv (long format) or index-epochs.parquet.",
        ),
    ]
    return blocks


def _markdown_rows(
    runs: pd.DataFrame, table: pd.DataFrame, flagged: list
) -> tuple[pd.DataFrame, str]:
    """The runs report.md lists (the HTML page has them all): every run of a small sweep; of a
    large one the flagged runs (`flagged`: their index, in the order to list them), then the
    best and the worst by best validation loss."""
    if len(table) <= MARKDOWN_ROWS:
        return table, ""
    flagged = flagged[: MARKDOWN_ROWS // 2]
    order = runs["best_val_loss"].astype(float).sort_values(kind="stable").index
    rest = [i for i in order if i not in flagged]
    half = (MARKDOWN_ROWS - len(flagged)) // 2
    picked = flagged + rest[:half] + rest[len(rest) - half :]
    note = (
        f"report.md lists {len(picked)} of {len(table)} runs: the flagged ones, then the best and "
        f"the worst {half} by best validation loss; report.html and runs.csv have every run."
    )
    return table.iloc[[runs.index.get_loc(i) for i in picked]], note


def _one_line(text: str) -> str:
    """`text` with its line breaks written as \\n: a label in a `# comment` line of a block of
    commands must not start a line of its own (one that a shell would run)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _config(report: Report) -> list[Block]:
    blocks: list[Block] = [("h2", "Config"), ("h3", "Keys that vary")]
    if not report.varying:
        blocks.append(("p", "None: every run has the same config."))
    elif len(report.configs) <= MARKDOWN_ROWS:
        blocks.append(("table", report.configs[report.varying].map(show_value), "varying"))
    else:
        values = ", ".join(
            f"{key} ({report.configs[key].map(show_value).nunique()} values)"
            for key in report.varying
        )
        blocks.append(("p", f"{values}; each run's values: runs.csv."))
    runs = report.runs
    commands = runs.head(COMMANDS)
    more = (
        f"\n# ... and {len(runs) - COMMANDS} more: runs.csv, column command"
        if len(runs) > COMMANDS
        else ""
    )
    return blocks + [
        ("h3", "Shared config"),
        ("code", OmegaConf.to_yaml(report.shared_config).strip() or "(none)"),
        ("h3", "Re-run commands"),
        (
            "code",
            "\n".join(f"# {_one_line(r.label)}\n{r.command}" for r in commands.itertuples()) + more,
        ),
    ]


def _problems(report: Report) -> list[Block]:
    runs = report.runs
    unfinished = ~runs["status"].isin(["completed", "damaged"])
    problems = runs[unfinished][["label", "status", "reason"]]
    blocks: list[Block] = [("h2", "Failures, unfinished and skipped runs")]
    if problems.empty and not report.skipped:
        others = " other" if report.damaged else ""
        blocks.append(("p", f"None: every{others} run completed."))
    if not problems.empty:
        blocks.append(("table", problems.set_index("label"), "problems"))
    if report.skipped:
        left_out = "; ".join(f"{run} ({why})" for run, why in report.skipped)
        blocks.append(("p", f"Left out of the charts: {left_out}"))
    return blocks


def _damaged(report: Report) -> list[Block]:
    """The runs whose files are there but unreadable, each with what is wrong."""
    if not report.damaged:
        return []
    paths = dict(zip(report.runs["run"], report.runs["path"], strict=True))
    table = pd.DataFrame(
        [{"run": run, "path": paths[run], "reason": why} for run, why in report.damaged]
    )
    return [
        ("h2", "Damaged runs"),
        (
            "p",
            f"{len(report.damaged)} run(s) hold a file that is not what fitscope writes. They "
            "are left out of the varying keys, labels, charts and means: the rest of the "
            "report is what it would be without them. Repair or re-run them.",
        ),
        ("table", table.set_index("run"), "damaged"),
    ]


def report_blocks(
    report: Report, study: Study, name: str, charts: dict[str, Chart | None], group_by: str | None
) -> list[Block]:
    """The whole report, in order; `charts`: its views by name (None where the runs give none)."""
    importance_note = None
    if study.importance_note and study.keys:
        importance_note = f"Importance not estimated: {study.importance_note}."
    return [
        ("h1", f"fitscope report: {name}"),
        ("p", _summary_line(report, study)),
        *_findings(report, study),
        *_section("Results matrix", [charts.get("matrix")]),
        *_section(
            "What each key does",
            [charts.get("effects"), charts.get("importance"), charts.get("parallel")],
            importance_note,
        ),
        *_section(
            "Curves", [charts.get("curves"), charts.get("group_curves"), charts.get("capacity")]
        ),
        *_runs(report, charts),
        *seed_stats_blocks(report, charts.get("intervals")),
        *_section(
            "Diagnostics", [charts.get(n) for n in ("gradient_flow", "forward_signal", "units")]
        ),
        *_config(report),
        *_problems(report),
        *_damaged(report),
        ("details", "Definitions", definitions(report.settings, study.metric, group_by)),
    ]
