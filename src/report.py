"""Build a fitscope report from run folders on disk, or compare two runs' configs.

python src/report.py multirun/2026-11-26/14-03-12.123456 [more sweep or run folders]
python src/report.py diff RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitscope import FitscopeError
from fitscope.report import ReportSettings, build_report, default_settings, diff_runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["diff"]:
            parser = argparse.ArgumentParser(
                prog="report.py diff", description="The config keys that differ between two runs."
            )
            parser.add_argument("run_a", type=Path)
            parser.add_argument("run_b", type=Path)
            args = parser.parse_args(argv[1:])
            print(diff_runs(args.run_a, args.run_b))
            return 0
        parser = argparse.ArgumentParser(
            prog="report.py",
            description="Build reports/<name>/ (report.html, report.md, runs.csv, curves.csv, "
            "charts) from sweep or run folders. `report.py diff RUN_A RUN_B` compares two runs.",
        )
        parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders")
        parser.add_argument("--dir", default=None, help="folder that holds reports (reports)")
        parser.add_argument(
            "--name", default=None, help="report folder name (default: the first folder's name)"
        )
        parser.add_argument("--patience", type=int, default=None)
        parser.add_argument("--min-delta", type=float, default=None)
        parser.add_argument(
            "--force", action="store_true", help="replace a report of other runs with the same name"
        )
        args = parser.parse_args(argv)
        settings = default_settings(args.folders)  # the sweep's own report settings, if any
        for key in ("patience", "min_delta"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)
        folder = build_report(
            args.folders,
            args.dir or settings.get("dir") or "reports",
            args.name,
            ReportSettings.from_mapping(settings),
            args.force,
        )
    except FitscopeError as error:
        print(f"report.py: {error}", file=sys.stderr)
        return 2
    print(f"report: {folder / 'report.html'} (and report.md, runs.csv, curves.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
