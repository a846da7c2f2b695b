"""Report files: runs.csv, curves.csv (and groups.csv), the charts, report.md (renders on
GitHub, images relative) and report.html (one self-contained file: images embedded, tables
sortable with a few lines of inline script, opens from disk with no server)."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from fitscope import charts
from fitscope.report import Report, value_text

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
  restore the best epoch up to then (`restored_epoch` in runs.csv).
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


# A report is a list of blocks, rendered twice: as Markdown and as HTML.
Block = tuple


def _fmt(frame: pd.DataFrame) -> pd.DataFrame:
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


def _blocks(report: Report, name: str, images: dict[str, Path]) -> list[Block]:
    runs = report.runs
    s = report.settings
    n_done = int((runs["status"] == "completed").sum())
    counts = runs["diagnosis"].value_counts()
    blocks: list[Block] = [
        ("h1", f"fitscope report: {name}"),
        (
            "p",
            f"{len(runs)} runs ({n_done} completed): "
            + ", ".join(f"{count} {diagnosis}" for diagnosis, count in counts.items())
            + f". Varying keys: {', '.join(report.varying) or 'none'}. "
            f"Built {datetime.now():%Y-%m-%d %H:%M}.",
        ),
        ("h2", "Summary"),
        ("table", _fmt(runs.set_index("label")[SUMMARY_COLUMNS + ["reason"]]), "runs"),
        ("p", "All columns: runs.csv. Every curve in long format: curves.csv."),
        ("h2", "Definitions"),
        (
            "md",
            DEFINITIONS.format(
                patience=s.patience,
                min_delta=s.min_delta,
                underfit=s.underfit_train_acc,
                tol=s.converge_tol,
                window=s.converge_window,
                rise=s.overfit_rise,
                vanishing=s.vanishing_ratio,
                exploding=s.exploding_norm,
            ),
        ),
    ]
    if "loss" in images:
        blocks += [
            ("h2", "Train and validation loss"),
            (
                "p",
                "One panel per run. Solid vertical line: best epoch; dotted: "
                "early-stopping epoch. Title colour: red overfit, blue underfit, green "
                "good fit.",
            ),
            ("img", images["loss"], "train and validation loss per run"),
        ]
    for key in report.varying:
        if f"by:{key}" in images:
            blocks += [
                ("h2", f"Validation curves by {key}"),
                ("img", images[f"by:{key}"], f"validation loss and accuracy by {key}"),
            ]
    if "capacity" in images:
        blocks += [
            ("h2", "Capacity"),
            (
                "p",
                "Best validation loss (solid) and final training loss (dashed) against "
                "parameter count. Training loss keeps falling with capacity; where "
                "validation loss turns up, larger models overfit.",
            ),
            ("img", images["capacity"], "capacity chart"),
        ]
    if "gradients" in images:
        blocks += [
            ("h2", "Gradient flow"),
            (
                "p",
                "Mean norm of each layer's weight gradient per step, from the first layer "
                "to the output layer. A line falling steeply towards the input means "
                "vanishing gradients: the first layers barely learn. gradient_flag in the "
                "summary marks runs whose first-to-last ratio is below "
                f"{s.vanishing_ratio:g} (report.vanishing_ratio). Per-layer values: "
                "layers.csv.",
            ),
            ("img", images["gradients"], "gradient norm by layer"),
        ]
    if "units" in images:
        blocks += [
            ("h2", "Dead and saturated units"),
            ("p", "At the best epoch, on a fixed validation batch."),
            ("img", images["units"], "dead and saturated units by layer"),
        ]
    if report.groups is not None:
        keys = ", ".join(report.replicate_keys)
        blocks += [
            ("h2", f"Mean ± std over {keys}"),
            (
                "p",
                f"Completed runs grouped by every varying key except {keys}; n is the "
                "number of runs in each group (groups.csv).",
            ),
            ("table", _fmt(report.groups), "groups"),
        ]
        if "replicates" in images:
            blocks.append(("img", images["replicates"], f"mean ± std over {keys}"))
    blocks += [("h2", "Config"), ("h3", "Keys that vary")]
    if report.varying:
        blocks.append(("table", report.configs[report.varying].map(value_text), "varying"))
    else:
        blocks.append(("p", "None: every run has the same config."))
    blocks += [
        ("h3", "Shared config"),
        ("code", OmegaConf.to_yaml(report.shared_config).strip() or "(none)"),
        ("h3", "Re-run commands"),
        ("code", "\n".join(f"# {r.label}\n{r.command}" for r in runs.itertuples())),
    ]
    problems = runs[runs["status"] != "completed"][["label", "status", "reason"]]
    blocks.append(("h2", "Failures, unfinished and skipped runs"))
    if problems.empty and not report.skipped:
        blocks.append(("p", "None: every run completed."))
    if not problems.empty:
        blocks.append(("table", problems.set_index("label"), "problems"))
    if report.skipped:
        blocks.append(
            (
                "p",
                "Left out of the charts: "
                + "; ".join(f"{run} ({why})" for run, why in report.skipped),
            )
        )
    return blocks


def _markdown(blocks: list[Block]) -> str:
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content[0])
        elif kind in ("p", "md"):
            parts.append(content[0])
        elif kind == "table":
            parts.append(content[0].to_markdown())
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0].name})")
        elif kind == "code":
            parts.append(f"```\n{content[0]}\n```")
    return "\n\n".join(parts) + "\n"


def _inline_markdown(text: str) -> str:
    """The little Markdown the definitions use: list items, **bold**, *italic*, `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    items = re.split(r"\n- ", "\n" + text)[1:]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:12px}
.overfit{color:#c0392b}.underfit{color:#2471a3}.good-fit{color:#1e8449}
.diverged,.failed,.running{color:#777}
"""

# Click a column header to sort by it (numbers as numbers); click again to reverse.
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    var value = function (row) {
      var text = row.children[index].textContent.trim(), number = parseFloat(text);
      return isNaN(number) ? text : number;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = value(a), y = value(b);
      var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                          : (typeof x === 'number' ? -1 : 1);
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _html_table(frame: pd.DataFrame) -> str:
    if frame.index.name is not None:
        frame = frame.reset_index()
    table = frame.to_html(classes="sortable", border=0, na_rep="", index=False, escape=True)
    # Colour the diagnosis cells.
    table = re.sub(
        r"<td>(overfit|underfit|good fit|diverged|failed|running)</td>",
        lambda m: f'<td class="{m.group(1).replace(" ", "-")}">{m.group(1)}</td>',
        table,
    )
    return f'<div class="scroll">{table}</div>'


def _html(blocks: list[Block], title: str) -> str:
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content[0])}</p>")
        elif kind == "md":
            parts.append(_inline_markdown(content[0]))
        elif kind == "table":
            parts.append(_html_table(content[0]))
        elif kind == "img":
            data = base64.b64encode(content[0].read_bytes()).decode("ascii")
            parts.append(
                f'<p><img alt="{html.escape(content[1])}" src="data:image/png;base64,{data}"></p>'
            )
        elif kind == "code":
            parts.append(f"<pre>{html.escape(content[0])}</pre>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + f"\n<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def draw_charts(report: Report, folder: Path) -> dict[str, Path]:
    """Every chart the runs allow, as PNG files in `folder`, by role."""
    images: dict[str, Path | None] = {
        "loss": charts.loss_small_multiples(report.runs, report.curves, folder / "loss_curves.png"),
        "capacity": charts.capacity(report.runs, folder / "capacity.png"),
        "gradients": charts.gradient_flow(report.runs, report.layers, folder / "gradient_flow.png"),
        "units": charts.unit_health(report.runs, report.layers, folder / "units.png"),
    }
    for key in report.varying:
        if key not in report.replicate_keys:
            images[f"by:{key}"] = charts.validation_by_key(
                report.runs, report.curves, key, folder / f"val_by_{_slug(key)}.png"
            )
    if report.replicate_keys:
        setup = [k for k in report.varying if k not in report.replicate_keys]
        images["replicates"] = charts.replicate_bands(
            report.runs, report.curves, setup, report.replicate_keys, folder / "replicates.png"
        )
    return {role: path for role, path in images.items() if path is not None}


def write_report(report: Report, folder: Path) -> None:
    """Write every report file into `folder`."""
    for stale in folder.glob("*.png"):  # charts of an earlier build that no longer apply
        stale.unlink()
    report.runs.to_csv(folder / "runs.csv", index=False)
    report.curves.to_csv(folder / "curves.csv", index=False)
    if not report.layers.empty:
        report.layers.to_csv(folder / "layers.csv", index=False)
    if report.groups is not None:
        report.groups.to_csv(folder / "groups.csv", index=False)
    images = draw_charts(report, folder)
    name = folder.name
    blocks = _blocks(report, name, images)
    (folder / "report.md").write_text(_markdown(blocks))
    (folder / "report.html").write_text(_html(blocks, f"fitscope report: {name}"))
