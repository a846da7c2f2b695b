"""Sweeps on real clusters started on this machine (tests/clusters.py), through the real
command line: SLURM through `hydra/launcher=slurm` (sbatch job arrays, scancel, requeue), and a
local Ray cluster through `hydra/launcher=ray_cluster`; and how a job picks its GPU."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from conftest import QUICK, REPORT_PY, read_metrics, read_summary, run_cli, run_script, start_cli
from fitscope.rundir import mark_ended, run_lock, write_json_atomic
from fitscope.train.environment import cluster_job
from fitscope.train.settings import gpu_slot, job_device

# Jobs on the test node: one CPU each, no GPU, no memory request.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
]
LONG = 1500  # epochs of digits: a run of about 10 s, longer than the 4 s SLURM gives a cancelled
# or requeued job before it kills it (KillWait=2, plus 2 s; submitit ignores the SIGTERM that
# comes first, so a job signalled in its last seconds completes)


def slurm(cluster, *args: str) -> str:
    result = subprocess.run(
        args, env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def wait_for(what: str, condition, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_written(run_dir: Path) -> int:
    """Trained epochs in the run's metrics.csv so far (the rows after epoch 0)."""
    try:
        return max(0, len((run_dir / "metrics.csv").read_text().splitlines()) - 2)
    except FileNotFoundError:
        return 0


def slurm_job(run_dir: Path) -> str:
    """The SLURM job that trains the run (its summary.json says from the start)."""
    return read_summary(run_dir)["cluster_job"]["job_id"]


def sacct(cluster, job: str) -> pd.DataFrame:
    """Every allocation of `job` SLURM accounted for, requeued attempts included."""
    out = slurm(
        cluster,
        "sacct",
        "-j",
        job,
        "-X",
        "--duplicates",
        "-n",
        "-P",
        "-o",
        "JobID,State,Start,End",
    )
    rows = [line.split("|") for line in out.strip().splitlines()]
    return pd.DataFrame(rows, columns=["job", "state", "start", "end"])


def release(cluster, job: str) -> None:
    """Start a requeued job now: SLURM holds a requeued job back for a while (its BeginTime)."""
    wait_for(
        f"{job} requeued",
        lambda: "PENDING" in slurm(cluster, "squeue", "-h", "-j", job, "-o", "%T"),
    )
    slurm(cluster, "scontrol", "update", f"jobid={job}", "StartTime=now")


def restarted(run_dir: Path) -> bool:
    """The run started over in a new process, which has trained three epochs."""
    summary, metrics = run_dir / "summary.json", run_dir / "metrics.csv"
    return (
        read_summary(run_dir)["status"] == "running"
        and metrics.stat().st_mtime > summary.stat().st_mtime
        and epochs_written(run_dir) >= 3
    )


def reached(cluster, monkeypatch):
    """`cluster`, with its environment set for this test's commands."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    return cluster


@pytest.fixture
def on_slurm(slurm_cluster, monkeypatch):
    return reached(slurm_cluster, monkeypatch)


@pytest.mark.slow
def test_slurm_sweep_is_a_job_array_and_the_report_waits_for_every_job(on_slurm, tmp_path):
    result = run_cli(
        "-m",
        *SLURM,
        "hydra.launcher.array_parallelism=2",
        *QUICK,
        "trainer.epochs=3",
        "activation=relu,selu,tanh",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    summaries = [read_summary(sweep / str(i)) for i in range(3)]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    # one job array through sbatch, at most two of its three tasks at a time
    array = summaries[0]["cluster_job"]["job_id"].split("_")[0]
    assert [s["cluster_job"]["job_id"] for s in summaries] == [f"{array}_{i}" for i in range(3)]
    assert (
        "#SBATCH --array=0-2%2"
        in (sweep / ".submitit" / array / f"{array}_submission.sh").read_text()
    )
    jobs = sacct(on_slurm, array)
    assert sorted(jobs["job"]) == [f"{array}_{i}" for i in range(3)]
    assert set(jobs["state"]) == {"COMPLETED"}
    starts, ends = pd.to_datetime(jobs["start"]), pd.to_datetime(jobs["end"])
    assert max(((starts <= t) & (ends > t)).sum() for t in starts) <= 2
    # the report, built by the command once every job had ended, has the three runs
    runs = pd.read_csv(tmp_path / "reports" / "sweep" / "runs.csv")
    assert runs["activation"].tolist() == ["relu", "selu", "tanh"]
    last_end = max(datetime.fromisoformat(s["finished_at"]) for s in summaries)
    report = tmp_path / "reports" / "sweep" / "report.html"
    assert report.stat().st_mtime >= last_end.timestamp()


@pytest.mark.slow
def test_slurm_job_cancelled_mid_run_is_failed_and_only_it_runs_again(on_slurm, tmp_path):
    # job 0 trains for a while, job 1 ends at once
    args = ["-m", *SLURM, *QUICK, f"trainer.epochs={LONG},2", "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"
    with start_cli(*args, cwd=tmp_path) as process:  # killed if the test fails on the way
        wait_for("job 0's third epoch", lambda: epochs_written(sweep / "0") >= 3)
        job = slurm_job(sweep / "0")
        slurm(on_slurm, "scancel", job)
        out, err = process.communicate(timeout=300)
    # the command waited for job 1, then ended as for a failed run, saying which job and how
    assert process.returncode != 0
    assert f"SLURM job {job} ended CANCELLED" in err
    assert "run the same command with hydra.sweep.dir=sweep" in out
    assert "Build it with: python src/report.py" in err
    cancelled, other = read_summary(sweep / "0"), read_summary(sweep / "1")
    assert cancelled["status"] == "failed" and "CANCELLED" in cancelled["error"]
    assert other["status"] == "completed"
    kept = epochs_written(sweep / "0")
    assert 3 <= kept < LONG
    # the report shows the cancelled run as failed, with its finished epochs
    assert run_script(REPORT_PY, "sweep", cwd=tmp_path).returncode == 0
    runs = pd.read_csv(tmp_path / "reports" / "sweep" / "runs.csv")
    assert runs["status"].tolist() == ["failed", "completed"]
    curves = pd.read_csv(tmp_path / "reports" / "sweep" / "curves.csv")
    assert curves.loc[curves["run"] == 0, "epoch"].max() == kept

    # the same command into the same folder runs job 0 again and keeps job 1
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resume: 1 of 2 runs were already completed" in again.stdout
    assert read_summary(sweep / "1") == other
    rerun = read_summary(sweep / "0")
    assert rerun["status"] == "completed" and rerun["cluster_job"]["job_id"] != job
    assert read_metrics(sweep / "0")["epoch"].tolist() == list(range(LONG + 1))


@pytest.mark.slow
def test_slurm_requeued_job_starts_its_run_over_without_duplicate_epochs(on_slurm, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SLURM, *QUICK, f"trainer.epochs={LONG}", "hydra.sweep.dir=sweep"]
    with start_cli(*args, cwd=tmp_path) as process:  # killed if the test fails on the way
        wait_for("the third epoch", lambda: epochs_written(sweep / "0") >= 3)
        job = slurm_job(sweep / "0")
        # SLURM's preemption signal: submitit requeues the job
        slurm(on_slurm, "scancel", "--signal=USR2", job)
        release(on_slurm, job)
        wait_for("the restarted run's third epoch", lambda: restarted(sweep / "0"), 240)
        # the scheduler requeues it (an administrator, or a preemption with PreemptMode=REQUEUE)
        slurm(on_slurm, "scontrol", "requeue", job)
        release(on_slurm, job)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    summary = read_summary(sweep / "0")
    assert summary["status"] == "completed"
    assert summary["cluster_job"] == {**summary["cluster_job"], "job_id": job, "restarts": 2}
    assert read_metrics(sweep / "0")["epoch"].tolist() == list(range(LONG + 1))
    assert (sweep / "0" / "run.log").read_text().count("starts over") == 2
    assert sacct(on_slurm, job)["state"].tolist() == ["REQUEUED", "REQUEUED", "COMPLETED"]
    assert (tmp_path / "reports" / "sweep" / "report.html").is_file()


@pytest.mark.slow
def test_ctrl_c_leaves_the_slurm_jobs_running_and_says_how_to_cancel_them(on_slurm, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SLURM, *QUICK, f"trainer.epochs={LONG}", "hydra.sweep.dir=sweep"]
    with start_cli(*args, cwd=tmp_path) as process:
        wait_for("the third epoch", lambda: epochs_written(sweep / "0") >= 3)
        job = slurm_job(sweep / "0")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"to cancel them: scancel {job} ;" in err
    assert "Traceback" not in err
    assert slurm(on_slurm, "squeue", "-h", "-j", job, "-o", "%T").strip() == "RUNNING"
    slurm(on_slurm, "scancel", job)


@pytest.fixture
def on_ray(ray_cluster, monkeypatch):
    return reached(ray_cluster, monkeypatch)


@pytest.mark.slow
def test_ray_sweep_lands_in_the_sweep_folder_and_resume_reruns_only_what_is_missing(
    on_ray, tmp_path
):
    args = ["-m", "hydra/launcher=ray_cluster", *QUICK, "trainer.epochs=3"]
    args += ["activation=relu,selu,tanh", "hydra.sweep.dir=sweep"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(_run_job pid=" in result.stdout + result.stderr  # trained in Ray's workers
    sweep = tmp_path / "sweep"
    summaries = [read_summary(sweep / str(i)) for i in range(3)]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    runs = pd.read_csv(tmp_path / "reports" / "sweep" / "runs.csv")
    assert runs["activation"].tolist() == ["relu", "selu", "tanh"]

    # run 1 stopped before it ended (its process killed): only it runs again
    write_json_atomic(sweep / "1" / "summary.json", {**summaries[1], "status": "running"})
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resume: 2 of 3 runs were already completed" in again.stdout
    assert read_summary(sweep / "0") == summaries[0]
    assert read_summary(sweep / "2") == summaries[2]
    rerun = read_summary(sweep / "1")
    assert rerun["status"] == "completed" and rerun["started_at"] != summaries[1]["started_at"]


def test_a_run_whose_job_ended_without_a_result_is_marked_failed_unless_it_trains(tmp_path):
    running = {"status": "running", "error": None, "epochs": 9}
    for name, status in (("killed", "running"), ("done", "completed"), ("held", "running")):
        (tmp_path / name).mkdir()
        write_json_atomic(tmp_path / name / "summary.json", {**running, "status": status})
    reason = "SLURM job 7_1 ended CANCELLED by 0 without a result"
    assert mark_ended(tmp_path / "killed", reason) == "failed"
    assert read_summary(tmp_path / "killed") == {**running, "status": "failed", "error": reason}
    assert mark_ended(tmp_path / "done", "x") == "completed"
    assert read_summary(tmp_path / "done")["status"] == "completed"
    with run_lock(tmp_path / "held"):  # a requeued attempt trains it again by now
        assert mark_ended(tmp_path / "held", "x") == "running"
    assert read_summary(tmp_path / "held")["status"] == "running"
    assert mark_ended(tmp_path / "never_started", "x") is None  # cancelled while pending
    assert not (tmp_path / "never_started").exists()


def test_summary_names_the_slurm_job_and_its_restarts(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert cluster_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu07")
    assert cluster_job() == {"scheduler": "slurm", "job_id": "41", "restarts": 0, "node": "gpu07"}
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert cluster_job()["job_id"] == "40_1" and cluster_job()["restarts"] == 2


@pytest.mark.parametrize(
    ("setting", "slot", "count", "expected"),
    [
        ("auto", 5, 4, "cuda:1"),  # job 5 of a parallel sweep on 4 GPUs
        ("auto", 0, 4, "cuda:0"),
        ("auto", 3, 1, "cuda"),  # the scheduler gave the job one GPU: the only visible one
        ("auto", None, 4, "cuda"),  # the basic launcher: one run after another on one GPU
        ("cuda:2", 5, 4, "cuda:2"),  # an explicit device is kept
    ],
)
def test_parallel_jobs_spread_over_the_visible_gpus(setting, slot, count, expected, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert job_device(torch.device("cuda" if setting == "auto" else setting), setting, slot) == (
        torch.device(expected)
    )
    assert job_device(torch.device("cpu"), "auto", slot) == torch.device("cpu")


def test_only_launchers_that_run_jobs_side_by_side_spread_them():
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    packed = "hydra_plugins.fitscope_launchers.packed_launcher.PackedLauncher"
    assert gpu_slot(basic, 3) is None
    assert gpu_slot(packed, 3) is None  # its packs and runs alone share its process and device
    assert gpu_slot(joblib, 3) == 3


@pytest.mark.parametrize(
    "folder", ["/data/my sweeps/a", "/data/it's", "/data/x=y", "/data/${x}", "/d/back\\s", "/d/e\\"]
)
def test_ray_jobs_compose_the_absolute_sweep_folder_whatever_its_name(folder):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from hydra_plugins.fitscope_launchers.ray_launcher import quoted

    override = OverridesParser.create().parse_overrides([f"hydra.sweep.dir={quoted(folder)}"])[0]
    assert OmegaConf.create({"dir": override.value()}).dir == folder
