"""What a report says, in order, as a list of blocks (heading, paragraph, table, image, code)
that `fitscope.report.render` writes twice: as Markdown and as HTML."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from fitscope.config import show_value
from fitscope.report.effects import published_effects
from fitscope.report.frames import Report
from fitscope.report.settings import ReportSettings
from fitscope.report.stat_blocks import seed_stats_blocks
from fitscope.report.stats import interval_column_names

# ("h1" | "h2" | "h3" | "p" | "md" | "code", text), ("table", frame, name), ("img", path, alt)
Block = tuple

SUMMARY_COLUMNS = [
    "status",
    "diagnosis",
    "flag",
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
- **epoch 0**: the network as initialized, before any step: its losses, accuracies and
  diagnostics (gradients from one pass over a fixed training batch). Charts start there; the
  best epoch, early stopping and the fit verdict look at trained epochs (1 on) only.
- **train and validation curves**: each epoch's loss and accuracy of its final weights, in eval
  mode (dropout off). The validation curve covers the whole validation part; the train curve a
  fixed, stratified subset of the training part (`trainer.train_eval_samples`: as many samples
  as the validation part, at least 10,000, so smaller training parts are measured whole), the
  same samples at every epoch and in every run on that split (summary.json's
  `samples.train_eval` says how many).
- **best epoch**: the trained epoch with the lowest validation loss. Every run keeps its weights
  (`best.pt`), and the test columns use them: "best weights kept, test uses epoch 7" in a reason
  says so where the best epoch is not the last.
- **early-stopping epoch**: where early stopping on validation loss would have stopped, with
  patience {patience} and min_delta {min_delta} (`report.patience`, `report.min_delta`): after
  `patience` epochs in a row without a decrease larger than min_delta. *never* when it would
  not have stopped within the epochs run (runs.csv leaves the value empty, the loss chart draws
  no line). `restored_epoch` (runs.csv) is the lowest-loss epoch up to that stop (all epochs
  when it never stops). With min_delta > 0 this can differ from Keras'
  `restore_best_weights`, which restores the last epoch that improved by more than min_delta: an
  epoch that lowered the loss by less than min_delta is restored here and not by Keras. The
  report computes these from the curves; the trainer's own early stopping
  (`trainer.early_stopping`, off by default) is another setting, and each run's summary.json
  records where it stopped or would have stopped the run (`trainer_stop_epoch`).
- **smoothed curve and noise**: validation loss smoothed by a centred moving mean over
  {window} epochs (`report.smooth_window`; at most a fifth of the epochs run, an odd number, so
  a run of fewer than 15 epochs is judged unsmoothed; `val_window` in runs.csv; the loss chart
  draws it). Its noise (`val_noise`) is the standard deviation of independent epoch-to-epoch
  noise around a locally straight trend, estimated from the second half of the curve as
  1.4826 × the median absolute second difference / √6 (the DER_SNR estimator: a steady rise or
  fall adds nothing, a few jumps do not dominate). A rise or fall counts only when larger than
  {k:g} × the noise (`report.noise_tolerance`), so a noisy plateau does not flip a verdict.
- **fit verdict** (diagnosis), judged in this order: *overfit* when the mean validation loss
  of the last `val_window` epochs is at least {rise:.0%} (`report.overfit_rise`) and more than
  the noise tolerance above the smoothed curve's minimum, reached before the last epoch, while
  training loss fell (`val_rise` in runs.csv); *not converged* when the smoothed validation
  loss still fell by more than {tol:.0%} (`report.converge_tol`) and more than the noise
  tolerance over the last {tail:.0%} of the epochs (`report.converge_window`, at least
  `val_window` epochs), or the run has fewer than 3 epochs: train longer; *underfit* when the
  last training accuracy is below {underfit:.0%} (`report.underfit_train_acc`) and the run no
  longer improves; *good fit* otherwise; *diverged* / *failed* from the run's status.
- **flag**: *stuck at chance* when, over every trained epoch, validation accuracy stayed within
  {margin_pp:g} percentage points of chance (1 / the class count), or validation loss within
  {margin:.0%} of ln(class count) while accuracy stayed within {margin_pp2:g} points
  (`report.chance_margin`), with its most likely cause, the first of: *exploding gradients*
  (the global gradient norm above {exploding:g}, `report.exploding_norm`), *vanishing
  gradients toward the input* (the first layer's gradient RMS below {vanishing:g} of the output
  layer's at epoch 0 or the best epoch, `report.vanishing_ratio`), *collapsed forward signal*
  (at epoch 0 the last hidden layer's signal below {collapse:g} of the first's,
  `report.collapse_ratio`), *dead units*, *saturated units* (a hidden layer with at least
  {share:.0%} of them at the last epoch, `report.unit_share`), *clipped gradients* (clipping
  fired on most steps of an epoch); where both the gradient and the signal rule hold, the one
  with the smaller ratio is named. A run that learns is flagged *exploding gradients* or
  *vanishing gradients* on the same rules; a run that diverged or failed gets no flag (its
  status says what happened). runs.csv's `flag_reason` has the numbers.
- **gradient RMS**: a layer's weight-gradient norm over the square root of its element count
  (per weight), so that layers of different sizes compare, averaged over an epoch's steps
  (eager steps, anything but a CUDA graph: over every k-th step from the first, at most 32 of
  an epoch).
- **signal** of a hidden layer: each unit's std across the samples of a fixed validation batch,
  root-mean-square over the layer's units: how much its output still depends on the input.
  `act_mean`, `act_std`: mean and std over units and samples together.
- **dead unit** (ReLU family): pre-activation ≤ 0 on every sample of a fixed validation batch;
  **saturated output** (sigmoid, tanh): within 0.01 of the activation's bounds (0 or 1; -1 or
  1), as Glorot & Bengio (2010) count saturation.
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
        window=s.smooth_window,
        tail=s.converge_window,
        k=s.noise_tolerance,
        underfit=s.underfit_train_acc,
        tol=s.converge_tol,
        rise=s.overfit_rise,
        margin=s.chance_margin,
        margin_pp=100 * s.chance_margin,
        margin_pp2=200 * s.chance_margin,
        vanishing=s.vanishing_ratio,
        collapse=s.collapse_ratio,
        share=s.unit_share,
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
        *_flagged(runs),
        ("table", summary_table(runs), "runs"),
        ("p", "All columns: runs.csv. Every curve in long format: curves.csv."),
    ]


def _flagged(runs: pd.DataFrame) -> list[Block]:
    """The runs that the diagnostics flag (stuck at chance, vanishing or exploding gradients),
    each with its flag and the numbers behind it."""
    flagged = runs[runs["flag"].fillna("") != ""] if "flag" in runs.columns else runs.iloc[0:0]
    if flagged.empty:
        return []
    table = flagged.set_index("label")[["flag", "flag_reason"]]
    return [
        ("p", f"{len(flagged)} run(s) flagged by the diagnostics (see Definitions: flag):"),
        ("table", table.rename(columns={"flag_reason": "numbers"}), "flags"),
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
            "Thick pale orange line: validation loss smoothed over report.smooth_window epochs, "
            "what the verdict judges; the rise panel's box gives the last epochs' mean over "
            "the smoothed minimum. Title colour: red overfit, blue underfit, purple not "
            "converged, green good fit.",
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
            "RMS of each layer's weight gradient (its norm per weight, so that layers of "
            "different sizes compare), mean per step, from the first layer to the output layer, "
            "at epoch 0 (the untrained network, one pass over a fixed batch) and at the best "
            "epoch. A line falling steeply towards the input means vanishing gradients: the "
            "first layers barely learn; every layer low at once goes with a collapsed forward "
            "signal. The flag marks runs whose first-to-output ratio is below "
            f"{report.settings.vanishing_ratio:g} (report.vanishing_ratio). Per-layer values: "
            "layers.csv.",
            "gradient RMS by layer",
        ),
        (
            "signal",
            "Forward signal at epoch 0",
            "Mean and standard deviation of each hidden layer's outputs for the network as "
            "initialized, on a fixed validation batch, and its signal: each unit's std across "
            "the samples, root-mean-square over the layer's units. A signal that shrinks layer "
            "by layer is a collapsing forward signal: the deep layers give nearly the same "
            "output for every input (the flag's collapsed forward signal, "
            "report.collapse_ratio). Grey lines: mean 0 and std 1, what SELU with LeCun init "
            "keeps across depth.",
            "activation mean and std by layer at epoch 0",
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


def _effects(report: Report) -> list[Block]:
    """What the runs say of the published effects they test (`fitscope.report.effects`)."""
    effects = published_effects(report)
    if not effects:
        return []
    blocks: list[Block] = [
        ("h2", "Published effects"),
        (
            "p",
            "Runs of depth 4 or more that test a published effect of initialization and depth "
            "(experiment=reproduction runs all three); each check reads the epoch-0 "
            "diagnostics and the fit of the runs that match it.",
        ),
    ]
    for effect in effects:
        blocks += [
            ("h3", f"{effect.source}: {effect.verdict}"),
            ("p", f"Published: {effect.claim}. Here: {effect.evidence}"),
        ]
    return blocks


def report_blocks(report: Report, name: str, images: dict[str, Path]) -> list[Block]:
    """The whole report, in order; `images` are the charts drawn for it, by role."""
    return [
        *_summary(report, name),
        *_effects(report),
        ("h2", "Definitions"),
        ("md", definitions(report.settings)),
        *_charts(report, images),
        *_groups(report, images),
        *seed_stats_blocks(report, images),
        *_config(report),
        *_problems(report),
        *_damaged(report),
    ]
