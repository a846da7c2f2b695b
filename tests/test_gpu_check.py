"""scripts/gpu-check.sh, the GPU check in one call, run where no GPU is (`--cpu`): every step
runs, writes its log and its line in the results file, and the CUDA tests skip saying why."""

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
