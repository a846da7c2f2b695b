"""A report folder from run folders: collect the frames, draw the charts, write runs.csv,
curves.csv (layers.csv, groups.csv), report.md and report.html into `<report.dir>/<name>/`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from fitscope import FitscopeError
from fitscope.report import charts, layer_charts
from fitscope.report.blocks import report_blocks
from fitscope.report.frames import Report, collect
from fitscope.report.render import html_page, markdown
from fitscope.report.settings import ReportSettings
from fitscope.rundir import read_json

SOURCES_FILE = "sources.json"  # the run folders a report was built from


class ReportError(FitscopeError):
    pass


def default_report_name(paths: Sequence[str | Path]) -> str:
    """The first folder's name, with its date folder when it sits in one: 2026-11-26_14-03-12.1"""
    first = Path(paths[0]).resolve()
    name = first.name
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", first.parent.name):
        name = f"{first.parent.name}_{name}"
    elif first.name.isdigit() and re.fullmatch(r"[\d.-]+", first.parent.name):  # a run folder
        name = f"{first.parent.parent.name}_{first.parent.name}_{name}"
    return name + (f"_and_{len(paths) - 1}_more" if len(paths) > 1 else "")


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def draw_charts(report: Report, folder: Path) -> dict[str, Path]:
    """Every chart the runs allow, as PNG files in `folder`, by role."""
    runs, curves, layers = report.runs, report.curves, report.layers
    images: dict[str, Path | None] = {
        "loss": charts.loss_small_multiples(runs, curves, folder / "loss_curves.png"),
        "capacity": charts.capacity(runs, folder / "capacity.png"),
        "gradients": layer_charts.gradient_flow(runs, layers, folder / "gradient_flow.png"),
        "units": layer_charts.unit_health(runs, layers, folder / "units.png"),
    }
    for key in report.varying:
        if key not in report.replicate_keys:
            images[f"by:{key}"] = charts.validation_by_key(
                runs, curves, key, folder / f"val_by_{_slug(key)}.png"
            )
    if report.replicate_keys:
        setup = [k for k in report.varying if k not in report.replicate_keys]
        images["replicates"] = charts.replicate_bands(
            runs, curves, setup, report.replicate_keys, folder / "replicates.png"
        )
    return {role: path for role, path in images.items() if path is not None}


def damaged_lines(report: Report) -> list[str]:
    """One line per damaged run: its folder and what is wrong."""
    paths = dict(zip(report.runs["run"], report.runs["path"], strict=True))
    return [
        f"damaged run {paths[run]}: {why} (listed under Damaged runs, left out of the rest)"
        for run, why in report.damaged
    ]


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
    blocks = report_blocks(report, folder.name, images)
    (folder / "report.md").write_text(markdown(blocks))
    (folder / "report.html").write_text(html_page(blocks, f"fitscope report: {folder.name}"))


def build_report(
    paths: Sequence[str | Path],
    settings: ReportSettings | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Collect the runs in `paths` and write the report to `<settings.dir>/<name>` (name: the
    first folder's by default); return that folder. Each damaged run gets one line on stderr.

    Refuses to overwrite a report of other runs unless `force`.
    """
    if not paths:
        raise ReportError("no folders given: pass sweep folders or run folders")
    settings = settings or ReportSettings.from_mapping()
    report = collect(paths, settings)
    folder = Path(settings.dir) / (name or default_report_name(paths))
    sources_file = folder / SOURCES_FILE
    if sources_file.is_file() and not force:
        previous = read_json(sources_file).get("runs", [])
        if previous and not set(previous) <= set(report.sources):
            raise ReportError(
                f"{folder} holds a report of other runs; choose another name (--name, or "
                "report.name=) or pass --force to replace it"
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_report(report, folder)
    sources_file.write_text(json.dumps({"runs": report.sources}, indent=2) + "\n")
    for line in damaged_lines(report):
        print(line, file=sys.stderr)
    return folder
