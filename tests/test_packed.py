"""Packed sweeps: a member of a pack learns what its run alone learns, and writes what it writes.

The members here train on the CPU in float32 with eager steps, the code that the CUDA graph
captures on a GPU (tests/test_cuda.py checks the captured pack)."""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest
import torch

from conftest import REPO, compose_cfg, read_summary, run_cli
from fitscope.train.data import make_splits
from fitscope.train.loop import fit
from fitscope.train.models import build_mlp, mlp_args
from fitscope.train.pack_runner import PackJob, pack_key, plan, splits_packs
from fitscope.train.pack_step import Member
from fitscope.train.packed import fit_pack
from fitscope.train.settings import validate, with_step_budget

BASE = ["data=digits", "model.width=32", "trainer.console=quiet"]


def prepared(*overrides: str):
    """(plain config, settings, splits, model) of a run, its model built as the runner builds
    it (the seed first)."""
    plain, settings = validate(compose_cfg(*BASE, *overrides))
    splits = make_splits(plain["data"], settings.device, settings.train_eval_samples)
    settings, _ = with_step_budget(settings, len(splits.x_train))
    torch.manual_seed(settings.seed)
    model = build_mlp(**mlp_args(plain, splits.n_features, splits.n_classes))
    return plain, settings, splits, model


def alone(*overrides: str):
    plain, settings, splits, model = prepared(*overrides)
    return fit(model, splits, plain["optimizer"], settings)


def member(*overrides: str) -> Member:
    plain, settings, splits, model = prepared(*overrides)
    return Member(
        model, splits, plain["optimizer"], settings, plain["activation"], plain["model"]["dropout"]
    )


def packed(*jobs: list[str]):
    return fit_pack([member(*job) for job in jobs])


def frame(result, epochs: int | None = None) -> pd.DataFrame:
    rows = pd.DataFrame([result.initial, *result.rows]).drop(columns="seconds")
    return rows if epochs is None else rows[rows["epoch"] <= epochs]


def assert_same_run(a, b, epochs: int | None = None) -> None:
    """The same run within float rounding: status, epochs, best epoch, every metrics.csv value
    (rtol 1e-4) of its first `epochs` epochs (all of them by default)."""
    assert (a.status, len(a.rows), a.best_epoch, a.stopped_early) == (
        b.status,
        len(b.rows),
        b.best_epoch,
        b.stopped_early,
    )
    pd.testing.assert_frame_equal(frame(a, epochs), frame(b, epochs), rtol=1e-4, atol=1e-6)


MIXED = [  # activations, seeds, learning rates, clipping and weight decay mixed in one pack
    ["activation=relu", "trainer.seed=0"],
    ["activation=tanh", "trainer.seed=1", "optimizer.weight_decay=0.001"],
    [
        "activation=leaky",
        "activation.negative_slope=0.2",
        "trainer.seed=2",
        "optimizer.grad_clip=0.5",
    ],
    ["activation=elu", "trainer.seed=3"],
]
LEARNING_RATES = {
    "sgd": (0.05, 0.1, 0.02, 0.08),
    "momentum": (0.01, 0.02, 0.005, 0.01),
    "adam": (0.001, 0.003, 0.002, 0.0005),
    "adamw": (0.001, 0.003, 0.002, 0.0005),
}


@pytest.mark.parametrize("optimizer", list(LEARNING_RATES))
def test_each_member_of_a_mixed_pack_learns_what_its_run_alone_learns(optimizer):
    jobs = [
        [f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.epochs=4", *job]
        for job, lr in zip(MIXED, LEARNING_RATES[optimizer], strict=True)
    ]
    if optimizer == "momentum":
        jobs[1].append("optimizer.momentum=0.5")
    if optimizer in ("adam", "adamw"):
        jobs[3].append("optimizer.betas=[0.8,0.99]")
    results = packed(*jobs)
    for job, result in zip(jobs, results, strict=True):
        assert_same_run(alone(*job), result)
        assert result.compile == "none"  # eager steps on the CPU


def test_a_member_that_diverges_mid_pack_ends_there_and_the_others_go_on():
    deep = ["optimizer=sgd", "model.depth=8", "model.width=16", "trainer.epochs=4"]
    jobs = [
        [*deep, "activation=selu", "optimizer.lr=0.4", "trainer.seed=0"],  # NaN at epoch 2
        [*deep, "activation=selu", "optimizer.lr=0.05", "trainer.seed=1"],
        [*deep, "activation=tanh", "optimizer.lr=0.02", "trainer.seed=2"],
    ]
    results = packed(*jobs)
    assert [r.status for r in results] == ["diverged", "completed", "completed"]
    assert [len(r.rows) for r in results] == [2, 4, 4]
    assert math.isnan(results[0].rows[-1]["train_loss"])
    # a deep net amplifies float rounding (a 1e-7 change of its init moves epoch 3's loss by
    # 1e-3), so the first two epochs are compared; the diverging member, already on its way
    # out at epoch 1 (gradients 1e8 at epoch 2), is the same run up to that rounding
    for job, result in zip(jobs[1:], results[1:], strict=True):
        assert_same_run(alone(*job), result, epochs=2)
    diverging = alone(*jobs[0])
    assert_same_run(diverging, results[0], epochs=0)
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        assert results[0].rows[0][key] == pytest.approx(diverging.rows[0][key], rel=1e-3)


def test_members_end_at_their_own_epochs_and_early_stopping():
    jobs = [
        ["trainer.epochs=2", "trainer.seed=0"],
        ["trainer.epochs=6", "trainer.seed=1"],
        [
            "trainer.epochs=30",
            "optimizer.lr=0.01",
            "trainer.early_stopping.enabled=true",
            "trainer.early_stopping.patience=2",
        ],
    ]
    ended = []
    results = fit_pack([member(*job) for job in jobs], lambda m, result: ended.append(m))
    assert ended == [0, 1, 2]  # told as each ends, while the others go on
    third = alone(*jobs[2])
    assert third.stopped_early and 6 < len(third.rows) < 30
    for job, result in zip(jobs, results, strict=True):
        assert_same_run(alone(*job), result)


def test_members_on_other_folds_train_on_their_own_split():
    jobs = [
        ["data.folds=3", f"data.fold={k}", f"trainer.seed={k}", "trainer.epochs=3"]
        for k in range(3)
    ]
    results = packed(*jobs)
    for job, result in zip(jobs, results, strict=True):
        assert_same_run(alone(*job), result)
    assert len({r.rows[0]["val_loss"] for r in results}) == 3


# Five folds of digits' 1,437 training samples: 1,149 or 1,150 per training part, so with
# batches of 383 some members take 3 steps an epoch and others 4 (padding and step masks).
FOLDS = ["data.folds=5", "trainer.batch_size=383", "trainer.epochs=3"]


def fold_with_steps(steps: int) -> str:
    for fold in range(5):
        plain, settings, splits, _ = prepared(*FOLDS, f"data.fold={fold}")
        if math.ceil(len(splits.x_train) / settings.batch_size) == steps:
            return f"data.fold={fold}"
    raise AssertionError(f"no fold takes {steps} steps")


def test_members_with_fewer_steps_per_epoch_train_as_alone():
    short, long = fold_with_steps(3), fold_with_steps(4)
    jobs = [
        [*FOLDS, short, "optimizer=adam", "optimizer.grad_clip=1.0"],
        [*FOLDS, long, "optimizer=adam", "activation=tanh", "trainer.seed=1"],
    ]
    for job, result in zip(jobs, packed(*jobs), strict=True):
        assert_same_run(alone(*job), result)


def test_a_members_dropout_does_not_depend_on_who_shares_its_pack():
    short, long = fold_with_steps(3), fold_with_steps(4)
    dropped = [*FOLDS, short, "model.dropout=0.3", "trainer.seed=5"]
    first = packed(dropped, [*FOLDS, short, "activation=tanh", "trainer.seed=1"])[0]
    second = packed(  # other mates: more steps per epoch, fewer epochs, other dropout
        [*FOLDS, long, "activation=elu", "trainer.seed=9", "trainer.epochs=2"],
        dropped,
        [*FOLDS, long, "model.dropout=0.5", "trainer.seed=5"],
    )[1]
    pd.testing.assert_frame_equal(frame(first), frame(second), rtol=1e-5, atol=1e-7)
    without = alone(*FOLDS, short, "trainer.seed=5")
    assert first.rows[-1]["train_loss"] != pytest.approx(without.rows[-1]["train_loss"])


def test_runs_a_pack_cannot_train_as_asked_train_alone():
    jobs = jobs_of(
        ["trainer.seed=1"], ["trainer.seed=2"], ["trainer.compile=torch_compile"],
        ["trainer.compile=torch_compile", "trainer.seed=3"],
    )  # fmt: skip
    packs, single = plan(jobs, max_members=None)
    assert packs == [[0, 1]] and single == [2, 3]  # compiled alone, as asked


def test_a_pack_without_diagnostics_keeps_clipping_per_member():
    jobs = [
        ["trainer.diagnostics=false", "optimizer.grad_clip=0.1", "trainer.epochs=2"],
        ["trainer.diagnostics=false", "trainer.seed=1", "trainer.epochs=2"],
    ]
    for job, result in zip(jobs, packed(*jobs), strict=True):
        assert_same_run(alone(*job), result)


def jobs_of(*overrides: list[str]) -> list[PackJob]:
    return [PackJob(compose_cfg(*BASE, *o), out_dir=REPO) for o in overrides]


def test_which_keys_split_packs():
    for key in (
        "trainer.seed",
        "activation.name",
        "optimizer.lr",
        "optimizer.betas",
        "data.fold",
        "model.dropout",
        "trainer.early_stopping.patience",
    ):
        assert not splits_packs(key), key
    for key in (
        "model.width",
        "model.depth",
        "optimizer.name",
        "optimizer.nesterov",
        "trainer.batch_size",
        "data.name",
        "data.val_fraction",
        "trainer.precision",
        "trainer.diagnostics",
        "model.final_activation",
    ):
        assert splits_packs(key), key
    same = [validate(compose_cfg(*BASE, *o))[0] for o in (["activation=tanh"], ["optimizer.lr=1"])]
    assert pack_key(same[0]) == pack_key(same[1])
    other = validate(compose_cfg(*BASE, "model.width=64"))[0]
    assert pack_key(other) != pack_key(same[0])


def test_plan_groups_same_shape_jobs_and_splits_large_groups():
    jobs = jobs_of(
        ["activation=tanh"],  # 0
        ["model.width=64"],  # 1: alone, no other job has its shape
        ["trainer.seed=1"],  # 2
        ["optimizer.lr=-1"],  # 3: refused, fails in its own job
        ["activation=elu"],  # 4
        ["trainer.seed=2"],  # 5
        ["trainer.seed=3"],  # 6
    )
    packs, single = plan(jobs, max_members=3)
    assert single == [1, 3]
    assert sorted(len(p) for p in packs) == [2, 3]  # five jobs: two packs of near-equal size
    assert sorted(i for p in packs for i in p) == [0, 2, 4, 5, 6]
    for pack in packs:  # members ordered by activation: each activation one slice
        names = [jobs[i].cfg.activation.name for i in pack]
        assert names == sorted(names)
    packs, single = plan(jobs, max_members=None, skip={0})
    assert [sorted(p) for p in packs] == [[2, 4, 5, 6]] and single == [1, 3]


# ----------------------------------------------------------------- the launcher, end to end

SWEEP = [
    "data=digits",
    "model.width=32",
    "trainer.epochs=3",
    "activation=relu,tanh",
    "trainer.seed=0,1",
]


@pytest.mark.slow
def test_a_packed_sweep_writes_the_basic_launchers_run_folders(tmp_path):
    for launcher in ("basic", "packed"):
        result = run_cli(
            "-m", f"hydra/launcher={launcher}", *SWEEP, f"hydra.sweep.dir={launcher}", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "pack 1/1: 4 runs, 3 epochs in" in output and "ms per member-epoch" in output
    assert output.count(": completed in") == 4  # a line per run, as it ends
    for job in "0123":
        basic, pack = tmp_path / "basic" / job, tmp_path / "packed" / job
        files = {p.relative_to(basic).as_posix() for p in basic.rglob("*")}
        assert files == {p.relative_to(pack).as_posix() for p in pack.rglob("*")}
        assert ": completed in" in (pack / "run.log").read_text()  # its own line, in its log
        a, b = (pd.read_csv(folder / "metrics.csv") for folder in (basic, pack))
        pd.testing.assert_frame_equal(
            a.drop(columns="seconds"), b.drop(columns="seconds"), rtol=1e-4, atol=1e-6
        )
        summary, expected = read_summary(pack), read_summary(basic)
        assert set(summary) - set(expected) == {"pack"}
        assert summary["pack"] == {"number": 1, "of": 1, "size": 4, "jobs": [0, 1, 2, 3]}
        assert summary["best_epoch"] == expected["best_epoch"]
        assert summary["test_best"] == pytest.approx(expected["test_best"], rel=1e-4)
        assert summary["overrides"] == expected["overrides"]
    runs = pd.read_csv(tmp_path / "reports" / "packed" / "runs.csv")  # the end-of-sweep report
    assert sorted(runs["activation"]) == ["relu", "relu", "tanh", "tanh"]


@pytest.mark.slow
def test_a_packed_sweep_refuses_a_bad_job_in_one_line_and_resumes(tmp_path):
    sweep = [*SWEEP[:2], "trainer.epochs=2", "hydra/launcher=packed", "hydra.sweep.dir=sweep"]
    first = run_cli("-m", *sweep, "optimizer.lr=0.01,-1,0.02", cwd=tmp_path)
    assert first.returncode != 0
    assert "optimizer.lr=-1" in first.stderr + first.stdout
    assert not (tmp_path / "sweep" / "1").exists()  # refused before any work: no folder
    done = {j: read_summary(tmp_path / "sweep" / j) for j in "02"}
    assert all(s["status"] == "completed" and s["pack"]["size"] == 2 for s in done.values())

    # The user fixes the bad value; the completed runs are skipped, the third trains (alone:
    # nothing left to share a pack with)
    second = run_cli("-m", *sweep, "optimizer.lr=0.01,0.03,0.02", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (second.stdout + second.stderr).count("skipped, already completed") == 2
    assert {j: read_summary(tmp_path / "sweep" / j) for j in "02"} == done
    third = read_summary(tmp_path / "sweep" / "1")
    assert third["status"] == "completed" and "pack" not in third


@pytest.mark.slow
def test_a_pack_that_fails_trains_its_runs_one_by_one(tmp_path, monkeypatch, capsys):
    import fitscope.train.pack_runner as pack_runner

    real = pack_runner.fit_pack

    def broken(members, on_end=None, timing=None):
        def first_ends_then_error(m, result):  # one member has ended and returned, then
            on_end(m, result)
            raise RuntimeError("CUDA out of memory (simulated)")

        return real(members, first_ends_then_error, timing)

    monkeypatch.setattr(pack_runner, "fit_pack", broken)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        ["run.py", "-m", *SWEEP, "hydra/launcher=packed", "hydra.sweep.dir=sweep"],
    )
    monkeypatch.syspath_prepend(str(REPO / "src"))  # as `python src/run.py` has it
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    # Hydra finds its plugins once per process: again, now that src/ is on the path
    monkeypatch.delitem(Singleton._instances, Plugins, raising=False)
    import run

    run.main()
    output = capsys.readouterr()
    assert (
        "pack 1/1 failed (RuntimeError: CUDA out of memory (simulated)); its 3 unfinished "
        "runs train one by one" in output.out + output.err
    )
    summaries = [read_summary(tmp_path / "sweep" / job) for job in "0123"]
    assert all(s["status"] == "completed" for s in summaries)
    assert sum("pack" in s for s in summaries) == 1  # the member that ended in the pack is kept


def test_clipping_leaves_a_member_without_grad_clip_alone_whatever_its_norm():
    from fitscope.train.pack_step import PackStep

    members = [member("optimizer.grad_clip=1.0"), member("trainer.seed=1")]
    step = PackStep(members, members[0].settings)
    for p in step.params:  # finite gradients whose norm overflows float32 for the second
        p.grad = torch.full_like(p, 1.0)
        p.grad[1] = 1e30
    step._norms_and_clip()
    assert all(torch.equal(p.grad[1], torch.full_like(p.grad[1], 1e30)) for p in step.params)
    total = math.sqrt(sum(p[0].numel() for p in step.params))
    assert step.params[0].grad[0, 0, 0].item() == pytest.approx(1 / total, rel=1e-5)  # clipped


def test_a_run_completed_meanwhile_by_another_process_is_handed_back_untouched(tmp_path):
    from fitscope.train.pack_runner import run_pack
    from fitscope.train.runner import run

    done = compose_cfg(*BASE, "trainer.epochs=1")
    run(done, tmp_path / "0")  # another process completed it after this sweep was planned
    files = [f for f in (tmp_path / "0").iterdir() if f.is_file() and f.name != ".lock"]
    before = {f.name: f.read_bytes() for f in files}
    other = compose_cfg(*BASE, "trainer.epochs=1", "trainer.seed=1")
    jobs = [PackJob(done, tmp_path / "0", number=0), PackJob(other, tmp_path / "1", number=1)]
    refused, timing = run_pack(jobs, {"number": 1, "of": 1})
    assert [job.number for job in refused] == [0] and timing.members == 1
    assert {f.name: f.read_bytes() for f in files} == before
    assert jobs[1].summary["status"] == "completed"


@pytest.mark.slow
def test_a_bad_max_members_is_refused_in_one_line_before_any_run(tmp_path):
    result = run_cli(
        "-m", *SWEEP, "hydra/launcher=packed", "hydra.launcher.max_members=0",
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "hydra.launcher.max_members=0 is invalid: expected an integer >= 1" in result.stderr
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # no run folder
