"""How fast is the report at any size? Builds reports of synthetic sweeps (run folders that
follow the run-folder contract, written by `fitscope.synthetic`, nothing trained) of 100, 1,000
and 10,000 runs, and prints for each size:

- the cold build: `python -m fitscope.report SWEEP` with no earlier report, wall seconds;
- the rebuild after a few more runs finish (`--changed` runs get one more epoch): the same
  command again, which reads only the runs whose files changed;
- the peak memory of the build process (its maximum resident set), beside the size of the
  runs' curves (every metrics.csv value, as float64);
- the size of report.html;

and the growth of each from one size to the next. Nothing is asserted; the docs' Speed page
holds a measured table. No torch: it runs where reports are built.

    python src/bench_report.py [--sizes 100,1000,10000] [--epochs 50] [--changed 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from fitscope.synthetic import grid_of_size, write_sweep


def _build(sweep: Path, reports: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one build of `sweep`'s report in a new process."""
    command = [sys.executable, "-m", "fitscope.report", str(sweep), "--dir", str(reports)]
    command += ["--name", "bench"]
    script = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
        "seconds = time.perf_counter() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(seconds, peak)\n"
    )  # a process of its own per build: the peak is that build's alone
    out = subprocess.run([sys.executable, "-c", script, *command], check=True, text=True,
                         capture_output=True).stdout  # fmt: skip
    seconds, peak = map(float, out.split())
    return seconds, peak


def _finish_more_epochs(sweep: Path, count: int) -> None:
    """`count` runs get one more epoch: a row appended to metrics.csv, summary.json rewritten."""
    for run in sorted(sweep.iterdir(), key=lambda p: p.name)[:count]:
        if not run.is_dir():
            continue
        metrics = run / "metrics.csv"
        lines = metrics.read_text().splitlines()
        last = lines[-1].split(",")
        last[0] = str(int(float(last[0])) + 1)
        metrics.write_text("\n".join([*lines, ",".join(last)]) + "\n")
        summary = json.loads((run / "summary.json").read_text())
        summary["epochs_run"] = summary.get("epochs_run", 0) + 1
        (run / "summary.json").write_text(json.dumps(summary))


def _ratio(new: float, old: float | None) -> str:
    return "" if not old else f" ({new / old:.1f}x)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="runs per sweep, comma-separated")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--changed", type=int, default=5, help="runs that finish more epochs")
    parser.add_argument("--quick", action="store_true", help="one sweep of 100 runs (CI)")
    args = parser.parse_args(argv)
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(f"report benchmark: synthetic sweeps of {args.epochs} epochs, {sys.platform}, "
          f"python {sys.version.split()[0]}")  # fmt: skip
    header = "| runs | cold build | rebuild, {} runs changed | peak memory | curves | report.html |"
    print(header.format(args.changed))
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    before: dict[str, float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            sweep, reports = Path(tmp) / "sweep", Path(tmp) / "reports"
            runs = len(write_sweep(sweep, grid_of_size(size), args.epochs))
            cold, peak = _build(sweep, reports)
            _finish_more_epochs(sweep, args.changed)
            warm, _ = _build(sweep, reports)
            html = (reports / "bench" / "report.html").stat().st_size / 2**20
            first = next(sweep.glob("*/metrics.csv")).read_text().splitlines()[0]
            curves = runs * (args.epochs + 1) * len(first.split(",")) * 8 / 2**20
        print(
            f"| {runs:,} | {cold:.1f} s{_ratio(cold, before.get('cold'))} "
            f"| {warm:.1f} s{_ratio(warm, before.get('warm'))} "
            f"| {peak:,.0f} MiB{_ratio(peak, before.get('peak'))} "
            f"| {curves:,.0f} MiB{_ratio(curves, before.get('curves'))} "
            f"| {html:.1f} MB{_ratio(html, before.get('html'))} |",
            flush=True,
        )
        before = {"cold": cold, "warm": warm, "peak": peak, "curves": curves, "html": html}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"(the benchmark itself: {usage.ru_utime + usage.ru_stime:.0f} CPU-s writing sweeps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
