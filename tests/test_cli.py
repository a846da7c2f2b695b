"""The real command line: sweeps in subprocesses, run folders, divergence and interruptions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import (
    QUICK,
    REPORT_PY,
    RUN_PY,
    hears_ctrl_c,
    read_metrics,
    read_summary,
    run_cli,
    run_script,
)

pytestmark = pytest.mark.slow


def _sweep_dirs(cwd):
    return sorted(p for p in cwd.glob("multirun/*/*") if p.is_dir())


def test_multirun_sweep_writes_one_folder_per_run_and_survives_divergence(tmp_path):
    result = run_cli(
        "-m",
        *QUICK,
        "optimizer=sgd",
        "optimizer.lr=0.05,1e4",
        "activation=relu,tanh",
        "trainer.epochs=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [sweep] = _sweep_dirs(tmp_path)
    assert (sweep / "multirun.yaml").is_file()
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1", "2", "3"]
    statuses = {}
    for run_dir in runs:
        summary = read_summary(run_dir)
        swept = [o for o in summary["overrides"] if o.startswith(("optimizer.lr", "activation"))]
        statuses[" ".join(swept)] = summary["status"]
        assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra").is_dir()
        assert len(read_metrics(run_dir)) == summary["epochs_run"] + 1  # and epoch 0
        assert summary["command"].startswith("python src/run.py ")
        assert summary["choices"]["activation"] in ("relu", "tanh")
    assert statuses["optimizer.lr=0.05 activation=relu"] == "completed"
    assert statuses["optimizer.lr=0.05 activation=tanh"] == "completed"
    assert statuses["optimizer.lr=10000.0 activation=relu"] == "diverged"
    assert statuses["optimizer.lr=10000.0 activation=tanh"] == "diverged"
    # One line per finished run.
    assert result.stderr.count(": completed in ") + result.stdout.count(": completed in ") == 2
    # The sweep ends with its report, named after the sweep folder.
    report = tmp_path / "reports" / f"{sweep.parent.name}_{sweep.name}"
    assert f"report: {(report / 'report.html').relative_to(tmp_path)}" in result.stdout
    runs = pd.read_csv(report / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "completed", "diverged", "diverged"]
    assert list(runs.columns[2:4]) == ["activation", "optimizer.lr"]


def test_sweep_with_a_failed_run_prints_the_report_command_that_works(tmp_path):
    result = run_cli("-m", *QUICK, "trainer.epochs=2", "model.depth=-1,1", cwd=tmp_path)
    assert result.returncode != 0
    assert "model.depth=-1 is invalid: expected an integer >= 0" in result.stderr
    [sweep] = _sweep_dirs(tmp_path)
    # the refused run left no folder; the good one still ran
    assert [p.name for p in sweep.iterdir() if p.is_dir()] == ["1"]
    assert read_summary(sweep / "1")["status"] == "completed"
    command = f"python src/report.py {sweep.relative_to(tmp_path)}"
    assert f"Build it with: {command}" in result.stderr
    assert not (tmp_path / "reports").exists()

    built = run_script(REPORT_PY, str(sweep.relative_to(tmp_path)), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    runs = pd.read_csv(next((tmp_path / "reports").iterdir()) / "runs.csv")
    assert list(runs["status"]) == ["completed"]


def test_report_command_line_errors_and_diff(tmp_path):
    def report(*args):
        return run_script(REPORT_PY, *args, cwd=tmp_path)

    empty = report(str(tmp_path))
    assert empty.returncode == 2
    assert (
        empty.stderr.strip() == f"report.py: {tmp_path}: no run folders in it "
        "(a run folder holds summary.json, metrics.csv, .hydra)"
    )
    assert (
        run_cli(
            "-m",
            *QUICK,
            "trainer.epochs=1",
            "activation=relu,selu",
            "report.enabled=false",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    [sweep] = _sweep_dirs(tmp_path)
    diff = report("diff", str(sweep / "0"), str(sweep / "1"))
    assert diff.returncode == 0
    assert diff.stdout.startswith("activation: relu → selu\n  activation.name: relu → selu\n")
    assert (
        "python src/run.py data=digits model.width=16 trainer.epochs=1 activation=selu"
        in diff.stdout
    )


def test_single_run_prints_epoch_lines_and_lands_under_multirun(tmp_path):
    result = run_cli(*QUICK, "trainer.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "epoch 1/2  train loss" in output and "epoch 2/2" in output
    [run_dir] = tmp_path.glob("multirun/*/*/0")
    assert read_summary(run_dir)["status"] == "completed"
    assert (run_dir / "best.pt").is_file()
    assert "epoch 2/2" in (run_dir / "run.log").read_text()


def test_quiet_mode_prints_nothing_for_a_good_run(tmp_path):
    result = run_cli(*QUICK, "trainer.epochs=1", "trainer.console=quiet", cwd=tmp_path)
    assert result.returncode == 0
    assert "epoch" not in result.stdout + result.stderr


def test_two_sweeps_started_together_get_their_own_folders(tmp_path):
    args = [sys.executable, str(RUN_PY), "-m", *QUICK, "trainer.epochs=1", "trainer.console=quiet"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    sweeps = _sweep_dirs(tmp_path)
    assert len(sweeps) == 2
    assert all(read_summary(s / "0")["status"] == "completed" for s in sweeps)


def _start_long_run(tmp_path, *args):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(RUN_PY),
            *args,
            "data=mnist5k",
            "trainer.epochs=10000",
            "trainer.console=quiet",
            "model.width=64",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hears_ctrl_c,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = list(tmp_path.glob("multirun/*/*/0/metrics.csv"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 4:  # header, epochs 0 to 2
            return proc, metrics[0].parent
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run wrote no epochs in time")


def test_killed_run_leaves_written_epochs_readable(tmp_path):
    proc, run_dir = _start_long_run(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    metrics = read_metrics(run_dir)
    assert len(metrics) >= 2 and list(metrics["epoch"][:2]) == [0, 1]
    assert metrics.notna().all().all()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"


# Ctrl-C, and SIGTERM (what SLURM, Kubernetes and `timeout` send): the same ending, the exit
# status a shell gives each
SIGNALS = pytest.mark.parametrize(
    "sig, code, words",
    [(signal.SIGINT, 130, "Ctrl-C or SIGINT"), (signal.SIGTERM, 143, "SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)


@SIGNALS
def test_interrupted_run_says_so_and_keeps_its_epochs(tmp_path, sig, code, words):
    proc, run_dir = _start_long_run(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    summary = read_summary(run_dir)
    assert summary["status"] == "failed"
    assert summary["error"].startswith("interrupted") and words in summary["error"]
    kept = summary["epochs_run"]  # a Ctrl-C just after a row was written may miss that row
    assert kept >= 2 and len(read_metrics(run_dir)) in (kept + 1, kept + 2)  # and epoch 0
    # one line for the run (what was kept), one for what to do: no traceback
    assert "Traceback" not in out + err
    [line] = out.splitlines()
    folder = run_dir.relative_to(tmp_path)
    assert line.endswith(
        f"run: interrupted at epoch {kept}/10000; its {kept} finished epochs are kept in "
        f"{folder}/metrics.csv (running it again starts it over), its summary.json says failed "
        "(interrupted)"
    )
    assert err.strip().endswith(f" hydra.run.dir={folder}")
    assert err.count("\n") == 1


@SIGNALS
def test_interrupted_sweep_says_how_to_finish_it_and_build_its_report(tmp_path, sig, code, words):
    proc, run_dir = _start_long_run(tmp_path, "-m", "activation=relu,tanh")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert words in read_summary(run_dir)["error"]
    assert "Traceback" not in out + err
    assert "#0 activation=relu data=mnist5k" in out and ": interrupted at epoch " in out
    sweep = run_dir.parent.relative_to(tmp_path)
    assert err.strip() == (
        "sweep interrupted; to finish it (completed runs are skipped): python src/run.py -m "
        "activation=relu,tanh data=mnist5k trainer.epochs=10000 trainer.console=quiet "
        f"model.width=64 hydra.sweep.dir={sweep} ; its report so far: python src/report.py {sweep}"
    )


def test_sigterm_to_a_parallel_sweep_ends_every_workers_run(tmp_path):
    """SIGTERM reaches the launcher's process alone (as `timeout` or `kill` sends it): its
    workers end their runs as Ctrl-C would, and none is left saying running."""
    proc, run_dir = _start_long_run(tmp_path, "-m", "hydra/launcher=cpu", "activation=relu,tanh")
    deadline = time.time() + 120
    while len(list(run_dir.parent.glob("*/metrics.csv"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 143
    for job in "01":
        summary = read_summary(run_dir.parent / job)
        assert summary["status"] == "failed" and summary["error"].startswith("interrupted")
    assert "sweep interrupted; to finish it" in err


@SIGNALS
def test_interrupted_packed_sweep_marks_every_member_and_says_how_to_finish_it(
    tmp_path, sig, code, words
):
    proc, run_dir = _start_long_run(tmp_path, "-m", "hydra/launcher=packed", "activation=relu,tanh")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert "Traceback" not in out + err
    for job in "01":  # both members of the pack: failed (interrupted), their epochs kept
        summary = read_summary(run_dir.parent / job)
        assert summary["status"] == "failed" and summary["error"].startswith("interrupted")
        assert words in summary["error"]
        assert summary["pack"]["size"] == 2 and summary["epochs_run"] >= 2
        assert f"#{job} activation=" in out
        folder = run_dir.parent / job  # Hydra's files are there from the start, as for any run
        assert {p.name for p in (folder / ".hydra").iterdir()} >= {"config.yaml", "overrides.yaml"}
        assert ": interrupted at epoch " in (folder / "run.log").read_text()
    assert out.count(": interrupted at epoch ") == 2
    sweep = run_dir.parent.relative_to(tmp_path)
    assert err.strip() == (
        "sweep interrupted; to finish it (completed runs are skipped): python src/run.py -m "
        "hydra/launcher=packed activation=relu,tanh data=mnist5k trainer.epochs=10000 "
        f"trainer.console=quiet model.width=64 hydra.sweep.dir={sweep} ; its report so far: "
        f"python src/report.py {sweep}"
    )


@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_the_same_sweep_started_twice_at_once_trains_each_run_once(launcher, tmp_path):
    # as when the README's resume command is started while the first is still running
    args = [
        sys.executable,
        str(RUN_PY),
        "-m",
        f"hydra/launcher={launcher}",
        *QUICK,
        "trainer.epochs=30",
        "activation=relu,tanh,selu",
        "hydra.sweep.dir=sweep",
        "report.enabled=false",
    ]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for run_dir in sorted((tmp_path / "sweep").glob("[0-9]")):
        summary, metrics = read_summary(run_dir), read_metrics(run_dir)
        assert summary["status"] == "completed" and summary["epochs_run"] == 30
        assert metrics["epoch"].tolist() == list(range(31))  # one writer: no row twice
        assert metrics.notna().all().all()
    # each run was trained by one process; the other skipped it, saying so or finding it done
    trained = sum(o.count(": completed in ") for o in outputs)
    skipped = sum(o.count(": skipped, ") for o in outputs)
    assert trained == 3 and trained + skipped == 6, outputs
