"""`python src/report.py` (or `python -m fitscope.report`): build a report from run folders on
disk, or compare two runs' configs.

python src/report.py multirun/2026-11-26/14-03-12.123456 [more sweep or run folders]
python src/report.py diff RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitscope import FitscopeError
from fitscope.report.build import build_report
from fitscope.report.diff import diff_runs
from fitscope.report.settings import ReportSettings, sweep_settings
from fitscope.rundir import os_error_line


def _diff(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="report.py diff", description="The config keys that differ between two runs."
    )
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    print(diff_runs(args.run_a, args.run_b))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="report.py",
        description="Build reports/<name>/ (report.html, report.md, runs.csv, curves.csv, "
        "charts) from sweep or run folders. `report.py diff RUN_A RUN_B` compares two runs.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders")
    parser.add_argument("--dir", default=None, help="folder that holds reports (report.dir)")
    parser.add_argument(
        "--name", default=None, help="report folder name (default: the first folder's name)"
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="report.metric: what ranks the setups (best_val_loss, "
        "best_val_acc, test_acc, test_loss)",
    )
    parser.add_argument(
        "--matrix",
        default=None,
        help="report.matrix: the results matrix's keys, e.g. activation,model.depth",
    )
    parser.add_argument(
        "--group-by", default=None, help="report.group_by: the key that groups the curves"
    )
    parser.add_argument("--patience", type=int, default=None, help="report.patience")
    parser.add_argument("--min-delta", type=float, default=None, help="report.min_delta")
    parser.add_argument(
        "--force", action="store_true", help="replace a report of other runs with the same name"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["diff"]:
            return _diff(argv[1:])
        args = _parser().parse_args(argv)
        # the sweep's own report settings (its multirun.yaml), else the defaults; then the options
        settings = ReportSettings.from_mapping(
            sweep_settings(args.folders),
            dir=args.dir,
            name=args.name,  # checked by the report.name rule (the name itself is passed below)
            patience=args.patience,
            min_delta=args.min_delta,
            metric=args.metric,
            matrix=args.matrix.split(",") if args.matrix else None,
            group_by=args.group_by,
        )
        folder = build_report(args.folders, settings, args.name, args.force)
    except FitscopeError as error:
        print(f"report.py: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the machine says no: a full disk, a read-only folder, ...
        print(f"report.py: {os_error_line(error)}", file=sys.stderr)
        return 2
    print(f"report: {folder / 'report.html'} (and report.md, runs.csv, curves.csv)")
    return 0
