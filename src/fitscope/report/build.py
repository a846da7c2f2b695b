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
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from fitscope import FitscopeError
from fitscope.report import charts, layer_charts, stat_charts
from fitscope.report.blocks import report_blocks
from fitscope.report.frames import Report, collect
from fitscope.report.render import html_page, markdown
from fitscope.report.settings import ReportSettings
from fitscope.rundir import read_json

try:
    import fcntl
except ImportError:  # Windows: builds do not take turns
    fcntl = None

SOURCES_FILE = "sources.json"  # the run folders a report was built from
MANIFEST_FILE = "manifest.json"  # the files a report wrote: the only ones a rebuild removes


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
    varying, replicates = report.varying, report.replicate_keys
    images: dict[str, Path | None] = {
        "loss": charts.loss_small_multiples(
            runs,
            curves,
            folder / "loss_curves.png",
            varying,
            report.settings.overfit_rise,
        ),
        "capacity": charts.capacity(runs, folder / "capacity.png", varying, replicates),
        "gradients": layer_charts.gradient_flow(runs, layers, folder / "gradient_flow.png"),
        "signal": layer_charts.forward_signal(runs, layers, folder / "forward_signal.png"),
        "units": layer_charts.unit_health(runs, layers, folder / "units.png"),
    }
    for key in varying:
        if key not in replicates:
            images[f"by:{key}"] = charts.validation_by_key(
                runs, curves, key, folder / f"val_by_{_slug(key)}.png", varying, replicates
            )
    if report.replicate_keys:
        setup = [k for k in report.varying if k not in report.replicate_keys]
        images["replicates"] = charts.replicate_bands(
            runs, curves, setup, report.replicate_keys, folder / "replicates.png"
        )
        images["intervals"] = stat_charts.setup_intervals(
            runs, folder / "seed_intervals.png", setup, report.replicate_keys
        )
    return {role: path for role, path in images.items() if path is not None}


def damaged_lines(report: Report) -> list[str]:
    """One line per damaged run: its folder and what is wrong."""
    paths = dict(zip(report.runs["run"], report.runs["path"], strict=True))
    return [
        f"damaged run {paths[run]}: {why} (listed under Damaged runs, left out of the rest)"
        for run, why in report.damaged
    ]


def write_report(report: Report, folder: Path, name: str | None = None) -> None:
    """Write every report file into `folder` (a new, empty folder), titled `name` (the
    folder's name by default)."""
    name = name or folder.name
    report.runs.to_csv(folder / "runs.csv", index=False)
    report.curves.to_csv(folder / "curves.csv", index=False)
    if not report.layers.empty:
        report.layers.to_csv(folder / "layers.csv", index=False)
    if report.groups is not None:
        report.groups.to_csv(folder / "groups.csv", index=False)
    if report.comparisons is not None:
        report.comparisons.to_csv(folder / "comparisons.csv", index=False)
    images = draw_charts(report, folder)
    blocks = report_blocks(report, name, images)
    (folder / "report.md").write_text(markdown(blocks))
    (folder / "report.html").write_text(html_page(blocks, f"fitscope report: {name}"))


def build_report(
    paths: Sequence[str | Path],
    settings: ReportSettings | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Collect the runs in `paths` and write the report to `<settings.dir>/<name>` (name: the
    first folder's by default); return that folder. See the module docstring for what it
    refuses to overwrite unless `force`. Each damaged run gets one line on stderr."""
    if not paths:
        raise ReportError("no folders given: pass sweep folders or run folders")
    settings = settings or ReportSettings.from_mapping()
    report = collect(paths, settings)
    parent = Path(settings.dir)
    folder = parent / (name or default_report_name(paths))
    parent.mkdir(parents=True, exist_ok=True)
    with _builds_take_turns(parent):
        previous = _previous_files(folder, report.sources, force)
        staging = parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        staging.mkdir()  # mode from the umask, like any folder (tempfile's would be private)
        try:
            write_report(report, staging, folder.name)
            (staging / SOURCES_FILE).write_text(json.dumps({"runs": report.sources}, indent=2))
            files = sorted([*(p.name for p in staging.iterdir()), MANIFEST_FILE])
            (staging / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2) + "\n")
            _move_into_place(staging, folder, previous)
        finally:
            if staging.exists():
                for leftover in staging.iterdir():
                    leftover.unlink()
                staging.rmdir()
    for line in damaged_lines(report):
        print(line, file=sys.stderr)
    return folder


@contextlib.contextmanager
def _builds_take_turns(parent: Path) -> Iterator[None]:
    """An OS lock on the folder that holds the reports, for the check and the move."""
    if fcntl is None:
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: builds do not wait
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a build in progress (seconds)
        yield
    finally:
        os.close(fd)


def _previous_files(folder: Path, sources: Sequence[str], force: bool) -> list[str]:
    """The files an earlier build of `folder` wrote (its manifest): the ones a rebuild may
    remove. `ReportError` when `folder` is not ours to replace, unless `force`."""
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise ReportError(f"{folder} is a file, not a report folder; choose another name")
    if not any(folder.iterdir()):
        return []
    manifest = _listed(folder / MANIFEST_FILE, "files")
    previous_runs = _listed(folder / SOURCES_FILE, "runs")
    choose = "choose another name (--name, or report.name=)"
    if not force:
        if manifest is None and previous_runs is None:
            raise ReportError(f"{folder} holds files that are not a fitscope report; {choose}")
        if previous_runs is None:
            raise ReportError(
                f"{folder} holds a report whose runs are not recorded here (a committed "
                f"example?); {choose} or pass --force to replace it"
            )
        if not set(previous_runs) <= set(sources):
            raise ReportError(
                f"{folder} holds a report of other runs; {choose} or pass --force to replace it"
            )
    if manifest is None:
        return []  # a report of an older fitscope, or not a report: nothing of it is removed
    return [f for f in manifest if f not in ("", ".", "..") and f == Path(f).name]


def _listed(path: Path, key: str) -> list[str] | None:
    """The list of strings under `key` in a JSON file; None when it is missing or unreadable."""
    try:
        value = read_json(path).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _move_into_place(staging: Path, folder: Path, previous: Sequence[str]) -> None:
    """The staged report becomes `folder`: at once when there is none yet; else file by file
    (each replaced atomically), then the previous build's files that this one did not write
    are removed. Nothing else in `folder` is touched."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.rename(staging, folder)
        return
    written = sorted(p.name for p in staging.iterdir())
    for name in sorted(written, key=lambda n: n == MANIFEST_FILE):  # the manifest last
        os.replace(staging / name, folder / name)
    for name in set(previous) - set(written):
        stale = folder / name
        if stale.is_file() or stale.is_symlink():  # a file the previous build wrote, nothing else
            stale.unlink(missing_ok=True)
