"""Seed statistics: intervals, paired and Welch t-tests and Holm's correction against scipy and
published values, and the path from run folders to comparisons.csv, the report and its chart."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fitscope.report.build import build_report, study_views
from fitscope.report.frames import collect
from fitscope.report.stats import (
    COMPARISON_COLUMNS,
    compare_samples,
    compare_setups,
    holm,
    t_interval,
)
from test_report import CHOICES, SETTINGS, in_folder, make_run, with_changes

# Student's sleep data (Cushny & Peebles 1905; R's `sleep`): extra hours of sleep of the same
# ten patients under two drugs. R's published results:
#   t.test(extra[group == 1])                            95% CI -0.5297804 2.0297804
#   t.test(extra ~ group, paired = TRUE)   p 0.002833,   95% CI -2.4598858 -0.7001142
#   t.test(extra ~ group)  (Welch)         p 0.07939,    95% CI -3.3654832 0.2054832
# (R gives group 1 minus group 2; fitscope's diff is b - a, group 2 minus group 1.)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_t_interval_is_the_published_one_and_scipys():
    low, high = t_interval(SLEEP_1)
    assert (low, high) == pytest.approx((-0.5297804, 2.0297804), abs=1e-6)
    expected = sps.ttest_1samp(SLEEP_1, 0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert t_interval([*SLEEP_1, np.nan, None]) == pytest.approx((low, high))  # missing: dropped
    assert t_interval(SLEEP_1, confidence=0.99)[1] > high
    assert all(math.isnan(v) for v in t_interval([0.9]))  # n = 1: no interval, no error
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread: s = 0


def test_paired_test_is_the_published_one_and_scipys():
    result = compare_samples(SLEEP_1, SLEEP_2, paired=True)
    assert result["status"] == "tested"
    assert result["n_pairs"] == 10
    assert result["diff"] == pytest.approx(1.58)
    assert result["p"] == pytest.approx(0.002833, abs=5e-7)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    scipy_result = sps.ttest_1samp(np.subtract(SLEEP_2, SLEEP_1), 0)  # the differences' test
    assert result["p"] == pytest.approx(scipy_result.pvalue, rel=1e-12)
    ci = scipy_result.confidence_interval()
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_welch_test_is_the_published_one_and_scipys():
    result = compare_samples(SLEEP_1, SLEEP_2, paired=False)
    assert result["status"] == "tested"
    assert result["n_pairs"] is None and (result["n_a"], result["n_b"]) == (10, 10)
    assert result["diff"] == pytest.approx(1.58)
    assert result["p"] == pytest.approx(0.07939, abs=5e-6)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((-0.2054832, 3.3654832), abs=1e-6)
    # Welch, not Student's pooled test: with unequal sizes and spreads the two differ
    a, b = SLEEP_1[:4], SLEEP_2
    welch = sps.ttest_ind(b, a, equal_var=False)
    pooled = sps.ttest_ind(b, a, equal_var=True)
    assert compare_samples(a, b, paired=False)["p"] == pytest.approx(welch.pvalue, rel=1e-12)
    assert welch.pvalue != pytest.approx(pooled.pvalue, rel=1e-3)


def test_a_paired_test_drops_the_pairs_with_a_missing_value():
    a, b = [*SLEEP_1, 1.0], [*SLEEP_2, np.nan]
    result = compare_samples(a, b, paired=True)
    assert result["n_pairs"] == 10
    assert result["p"] == pytest.approx(sps.ttest_rel(SLEEP_2, SLEEP_1).pvalue, rel=1e-12)


def test_too_few_runs_or_no_spread_is_untested_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = compare_samples([0.9], [0.91, 0.92], paired=False)
        assert one["status"] == "untested" and math.isnan(one["p"])
        assert one["diff"] == pytest.approx(0.015)
        none = compare_samples([np.nan, np.nan], [0.91, 0.92], paired=False)
        assert none["status"] == "untested" and none["n_a"] == 0 and math.isnan(none["diff"])
        same = compare_samples([0.9, 0.91, 0.95], [0.92, 0.93, 0.97], paired=True)
        assert same["status"] == "no spread" and math.isnan(same["p"])
        assert same["diff"] == pytest.approx(0.02)
        flat = compare_samples([0.3, 0.3], [0.3, 0.3, 0.3], paired=False)
        assert flat["status"] == "no spread"
        # one side flat is still a Welch test
        assert compare_samples([0.3, 0.3, 0.3], [0.4, 0.5], paired=False)["status"] == "tested"


def test_holm_on_textbook_examples():
    # Wikipedia's example (Holm-Bonferroni method): H4 and H1 rejected at 0.05, H3 and H2 not
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted < 0.05) == [True, False, False, True]
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm")
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    # untested (NaN) comparisons stay NaN and are not counted; the adjusted p is at most 1
    assert holm([0.5, np.nan, 0.01]) == pytest.approx([0.5, np.nan, 0.02], nan_ok=True)
    assert holm([0.6, 0.7, 0.9]).tolist() == [1.0, 1.0, 1.0]
    assert holm([]).size == 0


def _runs(tmp_path, values: dict, name: str = "s", test_acc=None) -> None:
    """A run folder per (activation, seed) or (activation, depth, seed): its best validation
    loss is `values`' value; its test accuracy `test_acc[key]` (None: no test score)."""
    for i, (key, loss) in enumerate(values.items()):
        activation, *depth, seed = key
        changes = {"activation__name": activation, "trainer__seed": seed}
        if depth:
            changes["model__depth"] = depth[0]
        curves = ([loss + 0.3, loss, loss + 0.001], [1.0, 0.5, 0.4], [0.95] * 3)
        folder = make_run(
            tmp_path / name / str(i),
            curves,
            config=with_changes(**changes),
            choices={**CHOICES, "activation": activation},
        )
        if test_acc is not None:
            summary = json.loads((folder / "summary.json").read_text())
            acc = test_acc[key]
            summary["test_best"] = {} if acc is None else {"loss": 0.3, "acc": acc}
            (folder / "summary.json").write_text(json.dumps(summary))


def _sleep_sweep(tmp_path, tanh_seeds) -> pd.DataFrame:
    """relu's test accuracies 0.9 + SLEEP_1 / 100 at seeds 0-9, tanh's 0.9 + SLEEP_2 / 100 at
    `tanh_seeds`; every best validation loss a little different."""
    acc = {("relu", s): 0.9 + v / 100 for s, v in zip(range(10), SLEEP_1, strict=True)}
    acc |= {("tanh", s): 0.9 + v / 100 for s, v in zip(tanh_seeds, SLEEP_2, strict=True)}
    losses = {key: 0.2 + 0.01 * i + 0.003 * (i % 3) for i, key in enumerate(acc)}
    _runs(tmp_path, losses, test_acc=acc)
    report = collect([tmp_path / "s"], SETTINGS)
    assert list(report.comparisons.columns) == COMPARISON_COLUMNS
    return report.comparisons.set_index("metric")


def test_runs_with_the_same_seeds_are_compared_paired(tmp_path):
    row = _sleep_sweep(tmp_path, tanh_seeds=range(10)).loc["test_acc"]
    assert (row["key"], row["a"], row["b"], row["at"]) == ("activation", "relu", "tanh", "")
    assert row["paired"] and row["n_pairs"] == 10
    assert row["diff"] == pytest.approx(0.0158)
    assert row["p"] == pytest.approx(0.002833, abs=5e-7)  # as the sleep data's, shifted
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.007001142, 0.024598858), abs=1e-8)
    assert row["p_holm"] == row["p"]  # the one comparison of test accuracy: nothing to adjust
    assert row["significant"]
    assert row["verdict"] == (
        "relu vs tanh: +1.58 pp test accuracy [+0.70, +2.46], significant over 10 seeds "
        "(paired, Holm p=0.0028)"
    )


def test_runs_with_other_seeds_are_compared_by_welch(tmp_path):
    row = _sleep_sweep(tmp_path, tanh_seeds=range(10, 20)).loc["test_acc"]
    assert not row["paired"] and pd.isna(row["n_pairs"])
    assert (row["n_a"], row["n_b"]) == (10, 10)
    assert row["p"] == pytest.approx(0.07939, abs=5e-6)
    assert row["ci_low"] == pytest.approx(-0.002054832, abs=1e-8)
    assert not row["significant"]
    assert "not significant over 10 and 10 seeds (Welch, Holm p=" in row["verdict"]


GRID_ACC = {  # (activation, depth, seed): test accuracy; relu at depth 2, seed 2: no test score
    ("relu", 1, 0): 0.90,
    ("relu", 1, 1): 0.92,
    ("relu", 1, 2): 0.91,
    ("relu", 2, 0): 0.93,
    ("relu", 2, 1): 0.96,
    ("relu", 2, 2): None,
    ("tanh", 1, 0): 0.88,
    ("tanh", 1, 1): 0.89,
    ("tanh", 1, 2): 0.885,
    ("tanh", 2, 0): 0.87,  # one seed only
}


def _grid(tmp_path):
    losses = {key: 0.3 + 0.01 * i + 0.004 * (i % 2) for i, key in enumerate(GRID_ACC)}
    _runs(tmp_path, losses, test_acc=GRID_ACC)
    return collect([tmp_path / "s"], SETTINGS)


def test_each_key_is_compared_at_equal_values_of_the_others(tmp_path):
    report = _grid(tmp_path)
    assert report.replicate_keys == ["trainer.seed"]
    table = report.comparisons
    acc = table[table["metric"] == "test_acc"].set_index(["key", "at"])
    assert list(acc.index) == [
        ("activation", "model.depth=1"),
        ("activation", "model.depth=2"),
        ("model.depth", "activation=relu"),
        ("model.depth", "activation=tanh"),
    ]
    assert (table["metric"] == "best_val_loss").sum() == 4
    # same seeds: paired, and the seed without a test score drops out of the pairs
    depth = acc.loc[("model.depth", "activation=relu")]
    assert (depth["a"], depth["b"]) == ("1", "2")
    assert depth["paired"] and depth["n_pairs"] == 2 and (depth["n_a"], depth["n_b"]) == (2, 2)
    paired = sps.ttest_rel([0.93, 0.96], [0.90, 0.92])
    assert depth["p"] == pytest.approx(paired.pvalue, rel=1e-9)
    assert depth["diff"] == pytest.approx(0.035)
    # tanh ran one seed at depth 2: untested, with the difference of the means still given
    for at in ("model.depth=2", "activation=tanh"):
        row = acc.loc[("activation" if "depth" in at else "model.depth", at)]
        assert not row["paired"] and pd.isna(row["p"]) and pd.isna(row["significant"])
        assert row["verdict"].endswith("untested (n=1)"), row["verdict"]
    one = acc.loc[("activation", "model.depth=2")]
    assert one["verdict"] == "relu vs tanh at model.depth=2: -7.50 pp test accuracy, untested (n=1)"
    # Holm over the tested comparisons of one metric: here 2
    tested = acc[acc["p"].notna()]
    assert tested["p_holm"].tolist() == pytest.approx(holm(tested["p"]).tolist())
    smaller = tested["p"].min()
    assert tested["p_holm"].min() == pytest.approx(min(1.0, 2 * smaller))
    assert (tested["significant"] == (tested["p_holm"] < 0.05)).all()


def test_per_setup_intervals_in_groups(tmp_path):
    groups = _grid(tmp_path).groups.set_index(["activation", "model.depth"])
    relu1, relu2, tanh2 = groups.loc[("relu", 1)], groups.loc[("relu", 2)], groups.loc[("tanh", 2)]
    ci = sps.t.interval(0.95, 2, loc=0.91, scale=sps.sem([0.90, 0.92, 0.91]))
    assert (relu1["test_acc_ci_low"], relu1["test_acc_ci_high"]) == pytest.approx(ci)
    assert relu1["test_acc_n"] == 3 and relu1["test_acc_mean"] == pytest.approx(0.91)
    assert relu1["test_acc_std"] == pytest.approx(0.01)  # the mean/std columns stay
    # a run without a test score: the interval of the two that have one
    assert relu2["n"] == 3 and relu2["test_acc_n"] == 2 and relu2["best_val_loss_n"] == 3
    ci = sps.ttest_1samp([0.93, 0.96], 0).confidence_interval()
    assert relu2["test_acc_ci_low"] == pytest.approx(ci.low)
    # one run: no interval
    assert tanh2["n"] == 1 and pd.isna(tanh2["test_acc_ci_low"]) and pd.isna(tanh2["test_acc_std"])
    # identical best epochs: an interval of width 0, not an error
    assert relu1["best_epoch_ci_low"] == relu1["best_epoch_ci_high"] == relu1["best_epoch_mean"]


def test_identical_results_say_no_spread(tmp_path):
    losses = {(a, s): 0.25 for a in ("relu", "tanh") for s in range(3)}
    acc = {(a, s): 0.9 + 0.01 * s for a in ("relu", "tanh") for s in range(3)}
    _runs(tmp_path, losses, test_acc=acc)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        table = collect([tmp_path / "s"], SETTINGS).comparisons.set_index("metric")
    for metric, words in (("best_val_loss", "best validation loss"), ("test_acc", "test accuracy")):
        row = table.loc[metric]
        assert pd.isna(row["p"]) and pd.isna(row["p_holm"]) and pd.isna(row["significant"])
        assert f"+0.0{'000' if metric == 'best_val_loss' else '0 pp'} {words}" in row["verdict"]
        assert "no spread" in row["verdict"]


def test_compare_setups_without_a_setup_key_compares_nothing():
    runs = pd.DataFrame({"status": "completed", "trainer.seed": [0, 1], "test_acc": [0.9, 0.8]})
    runs["best_val_loss"] = [0.3, 0.4]
    table = compare_setups(runs, [], ["trainer.seed"])
    assert table.empty and list(table.columns) == COMPARISON_COLUMNS


def test_a_report_with_seeds_has_intervals_tests_and_their_chart(tmp_path):
    losses = {key: 0.3 + 0.01 * i for i, key in enumerate(GRID_ACC)}
    _runs(tmp_path, losses, test_acc=GRID_ACC)
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    assert (folder / "intervals.png").stat().st_size > 10_000
    table = pd.read_csv(folder / "comparisons.csv")
    assert list(table.columns) == COMPARISON_COLUMNS and len(table) == 8
    groups = pd.read_csv(folder / "groups.csv")
    assert {"test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high"} <= set(
        groups.columns
    )
    text = (folder / "report.md").read_text()
    assert "Seed statistics" in text and "Comparisons of test accuracy" in text
    assert "(intervals.png)" in text
    # what each number means, in the words of the replicate key
    assert "**paired** when a and b ran the same seeds" in text
    assert "91.00 \\[88.52, 93.48\\]" in text  # relu at depth 1, test accuracy and its interval
    assert "Holm" in text and "untested" in text
    assert "intervals.png" in json.loads((folder / "manifest.json").read_text())["files"]
    assert "Seed statistics" in (folder / "report.html").read_text()


def test_a_single_seed_sweep_says_its_differences_are_untested(tmp_path):
    _runs(tmp_path, {("relu", 0): 0.3, ("tanh", 0): 0.4})
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    text = (folder / "report.md").read_text()
    assert "differences between runs are untested" in text and "trainer.seed=0,1,2" in text
    assert not (folder / "comparisons.csv").exists()
    assert not (folder / "intervals.png").exists()
    assert collect([tmp_path / "s"], SETTINGS).comparisons is None


def test_the_chart_draws_an_interval_per_setup_with_two_runs_or_more(tmp_path):
    losses = {("relu", 0): 0.30, ("relu", 1): 0.29, ("relu", 2): 0.28, ("tanh", 0): 0.40}
    losses |= {("selu", 0): 0.35, ("selu", 1): 0.36}
    _runs(tmp_path, losses)
    views = study_views(collect([tmp_path / "s"], SETTINGS))
    (panel,) = views.charts["intervals"].panels
    (means,) = panel.items
    # best first: relu, selu, tanh; intervals for the setups with two runs or more
    assert [label for _, label in panel.y.ticks] == [
        "activation=relu",
        "activation=selu",
        "activation=tanh",
    ]
    low, high = means.xerror
    assert np.isfinite(low[:2]).all() and np.isnan([low[2], high[2]]).all()
    assert low[0] < means.x[0] < high[0]
