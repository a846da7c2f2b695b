"""What a report says, in order, as a list of blocks (heading, paragraph, table, image, code)
that `fitscope.report.render` writes twice: as Markdown and as HTML."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from fitscope.config import show_value
from fitscope.report.frames import Report
from fitscope.report.settings import ReportSettings
from fitscope.report.stat_blocks import seed_stats_blocks
from fitscope.report.stats import interval_column_names

# ("h1" | "h2" | "h3" | "p" | "md" | "code", text), ("table", frame, name), ("img", path, alt)
Block = tuple

SUMMARY_COLUMNS = [
    "status",
    "diagnosis",
    "gradient_flag",
    "best_epoch",
    "early_stopping_epoch",
    "epochs_run",
    "best_train_loss",
    "best_val_loss",
    "best_val_acc",
    "test_acc",
    "gap_loss",
    "params",
    "wall_time_s",
]
PERCENT_COLUMNS = re.compile(r"(acc|acc_mean|acc_std)$")

DEFINITIONS = """\
- **best epoch**: the epoch with the lowest validation loss; the test columns use its weights.
- **early-stopping epoch**: where early stopping on validation loss would have stopped, with
  patience {patience} and min_delta {min_delta} (`report.patience`, `report.min_delta`); it would
  restore the best epoch up to then (`restored_epoch` in runs.csv). *never* when it would not
  have stopped within the epochs run (runs.csv leaves the value empty, the loss chart draws no
  line; `restored_epoch` is then the best epoch). The report computes it from
  the curves; the trainer's own early stopping (`trainer.early_stopping`, off by default) is
  another setting, and each run's summary.json records where it stopped or would have stopped
  the run (`trainer_stop_epoch`).
- **fit diagnosis**: *underfit* when the last training accuracy is below {underfit:.0%}, or when
  validation loss still fell by more than {tol:.0%} over the last {window:.0%} of the epochs (not
  converged); *overfit* when the last validation loss is at least {rise:.0%} above its minimum,
  reached before the last epoch, while training loss kept falling; *good fit* otherwise;
  *diverged* / *failed* from the run's status. Thresholds: `report.*` in `conf/report/`.
- **gradient flag**: *vanishing gradients* when the first layer's mean gradient norm is below
  {vanishing:g} of the output layer's at the first or the best epoch; *exploding gradients* when
  the global gradient norm exceeds {exploding:g} or clipping fired on most steps of an epoch.
- **gap**: validation minus training loss at the best epoch. Losses are per-sample mean
  cross-entropy in nats; accuracies are percentages."""


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


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The Summary table: a row per run; *never* as the early-stopping epoch of a run that early
    stopping would not have stopped (runs.csv keeps the missing value)."""
    table = format_table(runs.set_index("label")[SUMMARY_COLUMNS + ["reason"]])
    never = (runs["best_epoch"].notna() & runs["early_stopping_epoch"].isna()).to_numpy()
    table.loc[never, "early_stopping_epoch"] = "never"
    return table


def definitions(s: ReportSettings) -> str:
    """The Definitions section, with this report's settings."""
    return DEFINITIONS.format(
        patience=s.patience,
        min_delta=s.min_delta,
        underfit=s.underfit_train_acc,
        tol=s.converge_tol,
        window=s.converge_window,
        rise=s.overfit_rise,
        vanishing=s.vanishing_ratio,
        exploding=s.exploding_norm,
    )


def _summary(report: Report, name: str) -> list[Block]:
    runs = report.runs
    n_done = int((runs["status"] == "completed").sum())
    counts = runs["diagnosis"].value_counts()
    return [
        ("h1", f"fitscope report: {name}"),
        (
            "p",
            f"{len(runs)} runs ({n_done} completed): "
            + ", ".join(f"{count} {diagnosis}" for diagnosis, count in counts.items())
            + f". Varying keys: {', '.join(report.varying) or 'none'}. "
            f"Built {datetime.now():%Y-%m-%d %H:%M}.",
        ),
        ("h2", "Summary"),
        ("table", summary_table(runs), "runs"),
        ("p", "All columns: runs.csv. Every curve in long format: curves.csv."),
        ("h2", "Definitions"),
        ("md", definitions(report.settings)),
    ]


def _charts(report: Report, images: dict[str, Path]) -> list[Block]:
    """A section per chart that the runs gave (`images`, by role), each with what it shows."""
    sections: list[tuple[str, str, str | None, str]] = [  # role, heading, text, alt
        (
            "loss",
            "Train and validation loss",
            "One panel per run, titled with its values of the varying keys (in the order "
            "the figure's title names them), all on one y scale, with the chance level "
            "(ln of the class count: the loss of a net that has learnt nothing). Under each, "
            "validation loss in percent above its own minimum, all on one scale, with the "
            "overfit threshold (report.overfit_rise): the overfitting rise after the best epoch, "
            "readable whatever the training loss does. Dashed violet line and diamond: best "
            "epoch; dotted teal line: early-stopping epoch (none where it is never). "
            "Title colour: red overfit, blue underfit, green good fit.",
            "train and validation loss per run",
        ),
        *(
            (
                f"by:{key}",
                f"Validation curves by {key}",
                f"One colour per value of {key}; one pair of panels per combination of the "
                "other varying keys, all on one y scale, so that each line is one run (the mean "
                "and a ± std band where only seeds or folds differ).",
                f"validation loss and accuracy by {key}",
            )
            for key in report.varying
        ),
        (
            "capacity",
            "Capacity",
            "Best validation loss (left) and final training loss (right) against parameter "
            "count, on one scale: one line per setup (activation and the other varying keys), "
            "joining the runs that differ only in model.width (model.depth when the width does "
            "not vary), the mean over seeds or folds. Training loss keeps falling with "
            "capacity; where validation loss turns up, larger models overfit.",
            "capacity chart",
        ),
        (
            "gradients",
            "Gradient flow",
            "Mean norm of each layer's weight gradient per step, from the first layer to the "
            "output layer. A line falling steeply towards the input means vanishing gradients: "
            "the first layers barely learn. gradient_flag in the summary marks runs whose "
            f"first-to-last ratio is below {report.settings.vanishing_ratio:g} "
            "(report.vanishing_ratio). Per-layer values: layers.csv.",
            "gradient norm by layer",
        ),
        (
            "units",
            "Dead and saturated units",
            "At the best epoch, on a fixed validation batch.",
            "dead and saturated units by layer",
        ),
    ]
    blocks: list[Block] = []
    for role, heading, text, alt in sections:
        if role in images:
            blocks.append(("h2", heading))
            blocks += [("p", text)] if text else []
            blocks.append(("img", images[role], alt))
    return blocks


def _groups(report: Report, images: dict[str, Path]) -> list[Block]:
    if report.groups is None:
        return []
    keys = ", ".join(report.replicate_keys)
    blocks: list[Block] = [
        ("h2", f"Mean ± std over {keys}"),
        (
            "p",
            f"Completed runs grouped by every varying key except {keys}; n is the number of "
            "runs in each group (groups.csv).",
        ),
        (
            "table",
            format_table(report.groups.drop(columns=interval_column_names(), errors="ignore")),
            "groups",
        ),
    ]
    if "replicates" in images:
        blocks.append(("img", images["replicates"], f"mean ± std over {keys}"))
    return blocks


def _one_line(text: str) -> str:
    """`text` with its line breaks written as \\n: a label in a `# comment` line of a block of
    commands must not start a line of its own (one that a shell would run)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _config(report: Report) -> list[Block]:
    blocks: list[Block] = [("h2", "Config"), ("h3", "Keys that vary")]
    if report.varying:
        blocks.append(("table", report.configs[report.varying].map(show_value), "varying"))
    else:
        blocks.append(("p", "None: every run has the same config."))
    runs = report.runs
    return blocks + [
        ("h3", "Shared config"),
        ("code", OmegaConf.to_yaml(report.shared_config).strip() or "(none)"),
        ("h3", "Re-run commands"),
        ("code", "\n".join(f"# {_one_line(r.label)}\n{r.command}" for r in runs.itertuples())),
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


def report_blocks(report: Report, name: str, images: dict[str, Path]) -> list[Block]:
    """The whole report, in order; `images` are the charts drawn for it, by role."""
    return [
        *_summary(report, name),
        *_charts(report, images),
        *_groups(report, images),
        *seed_stats_blocks(report, images),
        *_config(report),
        *_problems(report),
        *_damaged(report),
    ]
