"""scripts/gpu-check.sh, the GPU check in one call, run where no GPU is (`--cpu`): every step
runs, writes its log and its line in the results file, the CUDA tests skip saying why, and the
benchmark (`src/bench.py --quick`) prints every figure and ratio it promises."""

from __future__ import annotations

import subprocess

import pytest

from conftest import REPO, cli_env

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    env = {**cli_env(), "OUT": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), "--cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = (tmp_path / "gpu-check.md").read_text()
    assert "- device: cpu" in results
    for step in ("environment", "cuda-tests", "bench"):
        assert f"- {step}: exit 0 in " in results, results
        assert (tmp_path / f"{step}.log").stat().st_size > 0
    assert "cuda False" in (tmp_path / "environment.log").read_text()
    assert "skipped" in results  # the CUDA tests say why they did not run
    assert "## Benchmark" in results and "packed" in results  # the packed section ran
    check_benchmark((tmp_path / "bench.log").read_text().splitlines())


def check_benchmark(lines: list[str]) -> None:
    """What `src/bench.py --quick --device cpu` prints: both loops and their ratio, the sweep
    three ways, basic against packed."""
    assert lines[0].startswith("device: cpu")
    assert any(line.startswith("tutorial loop (DataLoader):") for line in lines)
    fitscope = [line for line in lines if line.startswith("fitscope, compile=none fp32")]
    assert len(fitscope) == 3  # diagnostics off and on, and on with the whole train curve
    assert all("x the tutorial's samples/s), of which training" in line for line in fitscope)
    headline = next(line for line in lines if line.startswith("HEADLINE whole epoch"))
    assert "x the tutorial loop" in headline and "training phase alone" in headline
    assert any("diagnostics cost" in line for line in lines)
    assert any("end to end with the report" in line for line in lines)
    # the sweep three ways, each with its time, its ratio to the first and where time went
    for way in ("before", "basic", "cpu"):
        line = next(line for line in lines if line.startswith(f"  {way}: "))
        assert " s (" in line and "x before;" in line
    assert any("steps: none" in line for line in lines if line.startswith("    runs "))
    # the same-shape sweep, basic then packed: time, training per member-epoch, memory, ratios
    packed = lines[lines.index(next(line for line in lines if line.startswith("packed sweep"))) :]
    assert "(4 runs of 784-200-200-10 x 1 epoch)" in packed[0]
    assert packed[1].startswith("  basic: ") and "(1.00x basic)" in packed[1]
    assert packed[2].startswith("  packed: ") and packed[2].endswith("packs of 4")
    assert "ms per member-epoch" in packed[2] and "peak process RSS memory" in packed[2]
