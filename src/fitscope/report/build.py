"""A report folder from run folders: collect the frames, draw the charts, write runs.csv,
curves.csv (layers.csv, groups.csv, comparisons.csv), report.md and report.html into
`<report.dir>/<name>/`.

A report never loses a file that is not its own. `<name>` is one folder name (the config's
rule refuses `.`, `..` and separators). The report is built in a temporary folder beside its
target and moved into place, with `manifest.json`, the list of files it wrote. Rebuilding
replaces those files and removes only the files the previous manifest lists; a folder that is
not a fitscope report, a report of other runs (`sources.json`), or one whose runs are not
recorded (a committed example on a fresh clone) is refused unless `force`. Builds into one
`report.dir` take turns (an OS lock on that folder), so two sweeps that name the same report
never interleave: the later one finds the earlier's report and is refused like any other.
Staging, the move and what is refused: `fitscope.report.place`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fitscope.report.blocks import report_blocks
from fitscope.report.curve_views import (
    chance_levels,
    group_overlay_chart,
    group_panels_chart,
    run_panels_chart,
)
from fitscope.report.curves import (
    extremes,
    flagged_spread,
    group_curves,
    group_order,
    stopping,
)
from fitscope.report.findings import findings
from fitscope.report.frames import Report, collect
from fitscope.report.images import start_drawing
from fitscope.report.index import write_index
from fitscope.report.layer_views import layer_charts
from fitscope.report.place import (
    MANIFEST_FILE,
    SOURCES_FILE,
    ReportError,
    builds_take_turns,
    check_target,
    move_into_place,
    previous_files,
    staging_folder,
)
from fitscope.report.render import html_page, markdown
from fitscope.report.scales import Colors
from fitscope.report.settings import ReportSettings
from fitscope.report.spec import Chart
from fitscope.report.stats import REPLICATE_WORDS
from fitscope.report.study import Study, study
from fitscope.report.views import (
    capacity_chart,
    effects_chart,
    importance_chart,
    intervals_chart,
    matrix_chart,
    parallel_chart,
)
from fitscope.rundir import os_error_line

LONG_CSV_RUNS = 500  # curves.csv and layers.csv up to this many runs (20 MB each at 1,000)


def default_report_name(paths: Sequence[str | Path]) -> str:
    """The first folder's name, with its date folder when it sits in one: 2026-11-26_14-03-12.1"""
    first = Path(paths[0]).resolve()
    name = first.name
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", first.parent.name):
        name = f"{first.parent.name}_{name}"
    elif first.name.isdigit() and re.fullmatch(r"[\d.-]+", first.parent.name):  # a run folder
        name = f"{first.parent.parent.name}_{first.parent.name}_{name}"
    return name + (f"_and_{len(paths) - 1}_more" if len(paths) > 1 else "")


def check_keys(report: Report, settings: ReportSettings) -> None:
    """`ReportError` for a `report.matrix` or `report.group_by` key that is not a key these
    runs vary (seeds and folds are never an axis)."""
    keys = [k for k in report.varying if k not in report.replicate_keys]
    allowed = ", ".join(keys) or "none: no key varies but seeds or folds"
    chosen = [("report.matrix", k) for k in settings.matrix or ()]
    chosen += [("report.group_by", settings.group_by)] if settings.group_by else []
    for option, key in chosen:
        if key not in keys:
            raise ReportError(
                f"{option}: {key} is not a key these runs vary; the keys that vary: {allowed}"
            )


def draw_views(
    report: Report, found: Study, group_by: str | None, grouped: pd.DataFrame
) -> dict[str, Chart | None]:
    """Every view the runs allow, by name (None where they give it nothing to show);
    `grouped`: the curves grouped by `group_by` (`fitscope.report.curves.group_curves`)."""
    settings = report.settings
    shown = report.runs[report.runs["status"] != "damaged"]
    colors = Colors.of(group_by, shown[group_by] if group_by else None)
    order = group_order(report, group_by)
    picked = extremes(report, group_by, found.metric, found.lower_is_better, settings.extremes)
    stops = stopping(report, group_by)
    charts: dict[str, Chart | None] = {
        "matrix": matrix_chart(found),
        "effects": effects_chart(found, colors),
        "importance": importance_chart(found),
        "parallel": parallel_chart(found),
        "curves": group_overlay_chart(grouped, colors, order, chance_levels(shown)),
        "group_curves": group_panels_chart(report, grouped, picked, stops, colors, order),
        "capacity": capacity_chart(found, colors),
        "intervals": intervals_chart(found, _replicate_word(report)),
    }
    charted = list(report.charted)
    if len(charted) <= settings.run_panels:
        charts["runs"] = run_panels_chart(report, charted, "runs")
    else:
        shown = set(charted)
        flagged = [p for p in flagged_spread(report) if p in shown]
        charts["flagged_runs"] = run_panels_chart(
            report, flagged[: settings.run_panels], "flagged", of=len(flagged)
        )
    for chart in layer_charts(report, colors):
        charts[chart.name] = chart
    return charts


def _replicate_word(report: Report) -> str:
    keys = report.replicate_keys
    return REPLICATE_WORDS.get(keys[0], "run") if len(keys) == 1 else "run"


def damaged_lines(report: Report) -> list[str]:
    """One line per damaged run: its folder and what is wrong."""
    paths = dict(zip(report.runs["run"], report.runs["path"], strict=True))
    return [
        f"damaged run {paths[run]}: {why} (listed under Damaged runs, left out of the rest)"
        for run, why in report.damaged
    ]


def write_frames(report: Report, found: Study, grouped: pd.DataFrame, folder: Path) -> None:
    """The numbers behind every view, as files that pandas reads; curves.csv and layers.csv
    (long format) only up to `LONG_CSV_RUNS` runs: index-epochs.parquet holds every value."""
    report.runs.to_csv(folder / "runs.csv", index=False)
    if len(report.runs) <= LONG_CSV_RUNS:
        write_csv(report.curves, folder / "curves.csv")
        if not report.layers.empty:
            write_csv(report.layers, folder / "layers.csv")
    if report.groups is not None:
        report.groups.to_csv(folder / "groups.csv", index=False)
    if report.comparisons is not None:
        report.comparisons.to_csv(folder / "comparisons.csv", index=False)
    found.setups.to_csv(folder / "setups.csv", index=False)
    found.effects.to_csv(folder / "effects.csv", index=False)
    if found.matrix is not None:
        found.matrix.to_csv(folder / "matrix.csv", index=False)
    if found.importance is not None:
        found.importance.to_csv(folder / "importance.csv", index=False)
    grouped.to_csv(folder / "group_curves.csv", index=False)
    if report.sweep is not None:
        write_index(report.sweep, folder)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A large frame as CSV: pyarrow's writer where its columns allow (10x pandas'), else
    pandas' (a column that mixes numbers and text)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        frame.to_csv(path, index=False)
        return
    pacsv.write_csv(table, path)


@dataclass
class Views:
    """A report's study and its views: what report.md and report.html show."""

    study: Study
    group_by: str | None  # the key that groups the curves and colours every chart
    grouped: pd.DataFrame  # the grouped curves (group_curves.csv)
    charts: dict[str, Chart | None]  # by name; None where the runs give a view nothing


def study_views(report: Report) -> Views:
    """The study of `report` with its settings (`report.metric`, `report.matrix`,
    `report.group_by`, checked against the keys that vary) and every view of it."""
    settings = report.settings
    check_keys(report, settings)
    found = study(report, settings.metric, settings.matrix)
    group_by = settings.group_by or (found.ranked[0] if found.ranked else None)
    found.findings = findings(report, found)
    grouped = group_curves(report, group_by)
    return Views(found, group_by, grouped, draw_views(report, found, group_by, grouped))


def write_report(
    report: Report, folder: Path, name: str | None = None, previous: Path | None = None
) -> None:
    """Write every report file into `folder` (a new, empty folder), titled `name` (the
    folder's name by default); `previous`: the folder of the report's previous build, whose
    unchanged charts are copied rather than drawn again."""
    name = name or folder.name
    views = study_views(report)
    write_frames(report, views.study, views.grouped, folder)
    charts = [chart for chart in views.charts.values() if chart is not None]
    drawing = start_drawing(charts, folder, previous)
    try:
        blocks = report_blocks(report, views.study, name, views.charts, views.group_by)
        (folder / "report.md").write_text(markdown(blocks))
        (folder / "report.html").write_text(html_page(blocks, f"fitscope report: {name}"))
    finally:
        drawing.wait()


def build_report(
    paths: Sequence[str | Path],
    settings: ReportSettings | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Collect the runs in `paths` and write the report to `<settings.dir>/<name>` (name: the
    first folder's by default); return that folder. Runs whose files did not change since the
    previous build of that report are taken from its index. See the module docstring for what
    it refuses to overwrite unless `force`. Each damaged run gets one line on stderr."""
    if not paths:
        raise ReportError("no folders given: pass sweep folders or run folders")
    settings = settings or ReportSettings.from_mapping()
    parent = Path(settings.dir)
    folder = parent / (name or default_report_name(paths))
    check_target(folder)
    previous = folder if folder.is_dir() else None
    report = collect(paths, settings, index_folder=previous)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        previous_files(folder, report.sources, force)  # refused before anything is drawn
        with staging_folder(parent) as staging:
            write_report(report, staging, folder.name, previous)
            (staging / SOURCES_FILE).write_text(json.dumps({"runs": report.sources}, indent=2))
            files = sorted([*(p.name for p in staging.iterdir()), MANIFEST_FILE])
            (staging / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2) + "\n")
            with builds_take_turns(parent):  # only for the check and the move
                move_into_place(staging, folder, previous_files(folder, report.sources, force))
    except OSError as error:  # the machine says no: a full disk, a read-only folder, ...
        raise ReportError(f"report not written: {os_error_line(error)}") from None
    for line in damaged_lines(report):
        print(line, file=sys.stderr)
    return folder
