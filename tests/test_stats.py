"""drigm.stats: IQM, CVaR, stratified bootstrap, probability of improvement, performance profiles."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import trim_mean

from drigm import stats
from drigm.stats import cell


def test_iqm_known_values_and_scipy_semantics() -> None:
    assert stats.iqm(np.arange(10)) == pytest.approx(4.5)  # int(2.5) = 2 cut from each end: mean of 2..7
    x = [1, 2, 3, 4, 100, -100, 5, 6]  # sorted -100 1 2 3 4 5 6 100: the middle four
    assert stats.iqm(x) == pytest.approx(3.5)
    m = np.random.default_rng(1).normal(size=(3, 7, 11))
    assert stats.iqm(m) == pytest.approx(trim_mean(m.ravel(), 0.25))


def test_cvar_known_values_with_fractional_tail() -> None:
    x = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.cvar(x, 0.4) == pytest.approx(1.5)  # k = 2: (1 + 2) / 2
    assert stats.cvar(x, 0.5) == pytest.approx((1 + 2 + 0.5 * 3) / 2.5)  # k = 2.5: half of the third
    assert stats.cvar(x, 0.1) == pytest.approx(1.0)  # k = 0.5: inside the smallest value's mass
    assert stats.cvar(x, 1.0) == pytest.approx(3.0)  # the mean
    assert stats.cvar(x, 0.3) == pytest.approx((1 + 0.5 * 2) / 1.5)
    assert stats.cvar(np.arange(20.0), 0.1) == pytest.approx(0.5)  # the default: worst 2 of 20


def test_probability_of_improvement_known_values() -> None:
    rng = np.random.default_rng(0)
    y = {s: rng.normal(size=30) for s in range(4)}
    dom = stats.probability_of_improvement({s: v + 100 for s, v in y.items()}, y)
    assert dom.p == 1.0 and dom.ci == (1.0, 1.0) and dom.n_pairs == 4 and dom.mean_diff == pytest.approx(100)
    same = stats.probability_of_improvement(y, y)
    assert same.p == 0.5 and same.mean_diff == 0.0
    # ties count half: pairs (1,2) (1,3) (2,2) (2,3) -> 0.5 / 4
    tie = stats.probability_of_improvement({0: [1.0, 2.0]}, {0: [2.0, 3.0]})
    assert tie.p == pytest.approx(0.125) and tie.ci is None and tie.mean_diff == pytest.approx(-1.0)
    # 2-D values are (envs, episodes): better on one environment, worse on the other -> 0.5
    envs = stats.probability_of_improvement({0: [[5.0, 6.0], [0.0, 1.0]]}, {0: [[1.0, 2.0], [3.0, 4.0]]})
    assert envs.p == pytest.approx(0.5)


def test_probability_of_improvement_is_paired_by_seed() -> None:
    x = {0: [10.0], 1: [0.0], 7: [1000.0]}
    y = {0: [5.0], 1: [20.0], 9: [-1000.0]}
    imp = stats.probability_of_improvement(x, y)
    # paired: seed 0 wins, seed 1 loses -> 0.5 (all pairs of runs would give 0.25); seeds 7 and 9 are dropped
    assert imp.p == pytest.approx(0.5) and imp.n_pairs == 2 and imp.seeds == [0, 1]
    assert imp.mean_diff == pytest.approx((5.0 - 20.0) / 2)
    assert imp.ci is not None and imp.ci[0] <= imp.p <= imp.ci[1]
    # Student-t intervals over the per-seed values: P per seed (1, 0), differences per seed (5, -20)
    assert imp.t_ci == pytest.approx(stats.t_interval([1.0, 0.0]))
    assert imp.mean_diff_t_ci == pytest.approx(stats.t_interval([5.0, -20.0]))
    assert imp.t_ci is not None and imp.t_ci[0] < 0.0 < 1.0 < imp.t_ci[1]  # not clipped: two seeds say little
    assert stats.probability_of_improvement({0: [1.0]}, {0: [0.0]}).t_ci is None


def test_t_interval_known_values_and_wider_than_the_bootstrap_with_few_seeds() -> None:
    # mean 2, std(ddof=1) 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert stats.t_interval([0.5]) is None
    # n = 30: the half-width uses t(0.975, 29) = 2.04523, not the normal 1.96
    x = np.random.default_rng(4).normal(size=30)
    lo, hi = stats.t_interval(x)  # type: ignore[misc]
    se = x.std(ddof=1) / np.sqrt(30)
    assert hi - lo == pytest.approx(2 * 2.04523 * se, rel=1e-4)
    # 3 seeds, all positive: the percentile bootstrap of the mean stays above 0, the t interval does not
    diffs = [0.01, 0.02, 0.03]
    assert cell(diffs).ci is not None and cell(diffs).ci[0] > 0  # type: ignore[index]
    assert stats.t_interval(diffs)[0] < 0  # type: ignore[index]


def test_the_seed_cell_is_drigm_stats_one_bootstrap_and_draws_as_the_run_bootstrap_does() -> None:
    import drigm.report

    assert drigm.report.cell is stats.cell and drigm.report.Cell is stats.Cell
    assert drigm.report.bootstrap_ci is stats.bootstrap_ci
    x = np.random.default_rng(9).normal(size=7)
    c = stats.cell(x, ddof=0)
    assert c.mean == pytest.approx(x.mean()) and c.se == pytest.approx(x.std() / np.sqrt(7))
    assert stats.cell(x).se == pytest.approx(x.std(ddof=1) / np.sqrt(7))
    # the same resamples as rliable's bootstrap over runs of one task (its quantiles use the 0.95 level's tails)
    runs = stats.interval_estimate(x[:, None], "mean")
    assert c.ci == pytest.approx(runs.ci, abs=1e-12)
    # by hand: 10,000 resamples of the 7 values from seed 12345, 2.5% and 97.5% quantiles of their means
    idx = np.random.default_rng(12345).integers(0, 7, size=(10_000, 7))
    means = x[idx].mean(axis=1)
    assert c.ci == (np.quantile(means, 0.025), np.quantile(means, 0.975))
    assert stats.cell(x, seed=1).ci != c.ci and stats.cell([2.0]).ci is None and stats.cell([2.0]).se is None


def test_no_report_module_draws_its_own_bootstrap() -> None:
    from pathlib import Path

    drigm_dir = Path(stats.__file__).parent
    for name in ("report", "collect", "comparisons", "report_stats", "report_plots", "rho_selection", "markdown"):
        src = (drigm_dir / f"{name}.py").read_text()
        assert "integers(" not in src and "quantile(" not in src, f"drigm/{name}.py resamples by itself"


def test_bootstrap_contains_the_point_shrinks_with_data_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    small, large = rng.normal(size=(2, 5, 20)), rng.normal(size=(2, 40, 80))
    for agg in ("mean", "iqm"):
        a, b = stats.stratified_bootstrap(small, agg), stats.stratified_bootstrap(large, agg)
        assert a.ci is not None and b.ci is not None
        assert a.ci[0] <= a.point <= a.ci[1] and b.ci[0] <= b.point <= b.ci[1]
        assert b.ci[1] - b.ci[0] < 0.5 * (a.ci[1] - a.ci[0])
        assert stats.stratified_bootstrap(small, agg) == a  # fixed seed: the same interval
        assert stats.stratified_bootstrap(small, agg, seed=7).ci != a.ci
    assert stats.stratified_bootstrap(small, "mean").point == pytest.approx(small.mean())
    assert stats.stratified_bootstrap(small[:, :1], "mean").ci is None  # one seed: no interval
    # worst environment: env 1 (seed means 1, 3, 2; one episode each) is below env 0 (5, 7, 6) in every resample
    w = stats.worst_mean(np.array([[[5.0], [7.0], [6.0]], [[1.0], [3.0], [2.0]]]))
    assert w.point == pytest.approx(2.0) and w.ci is not None and 1.0 <= w.ci[0] < 2.0 < w.ci[1] <= 3.0
    assert w.ci == stats.stratified_bootstrap([[[1.0], [3.0], [2.0]]], "mean").ci


def test_bootstrap_is_stratified_by_environment_and_draws_seeds_jointly() -> None:
    # episodes never move between environments: env 0 is all 0, env 1 all 1, so every resample's mean is 0.5
    strata = np.stack([np.zeros((4, 10)), np.ones((4, 10))])
    assert stats.stratified_bootstrap(strata, "mean").ci == (0.5, 0.5)
    # a seed is one run on every environment: seed s scores s on env 0 and -s on env 1, so the mean is always 0
    s = np.arange(5.0)[:, None] * np.ones((5, 3))
    joint = stats.stratified_bootstrap(np.stack([s, -s]), "mean")
    assert joint.ci == pytest.approx((0.0, 0.0), abs=1e-12)
    # on one environment the same seeds' spread gives a wide interval (the joint draw cancelled it above)
    one_env = stats.stratified_bootstrap(s, "mean")
    assert one_env.ci is not None and one_env.ci[1] - one_env.ci[0] > 1.0


def test_bootstrap_is_vectorised() -> None:
    x = np.random.default_rng(0).normal(size=(5, 5, 50))  # envs x seeds x episodes
    t = time.perf_counter()
    stats.stratified_bootstrap(x, "iqm", reps=10_000)
    stats.stratified_bootstrap(x, "mean", reps=10_000)
    assert time.perf_counter() - t < 3.0  # about 0.5 s on a loaded 2-core machine; a Python loop takes far longer


def test_performance_profile_known_values_and_band() -> None:
    (p,) = stats.performance_profile({"a": [[0.0, 1.0, 2.0, 3.0]]}, [-1.0, 0.0, 1.5, 3.0]).values()
    assert p.fraction == [1.0, 0.75, 0.5, 0.0] and p.lo is None  # one seed: no band
    x = np.random.default_rng(2).normal(size=(2, 5, 30))
    taus = [-0.5, 0.0, 0.7]
    prof = stats.performance_profile({"m": x}, taus, reps=2000)["m"]
    assert prof.fraction == pytest.approx([(x > t).mean() for t in taus])
    assert prof.lo is not None and prof.hi is not None
    for i, tau in enumerate(taus):  # the band is the stratified bootstrap of "fraction > tau" (same draws)
        ci = stats.stratified_bootstrap(x, lambda v, tau=tau: (v > tau).mean(axis=-1), reps=2000).ci
        assert ci == pytest.approx((prof.lo[i], prof.hi[i]))
        assert prof.lo[i] <= prof.fraction[i] <= prof.hi[i]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.iqm([]), r"x is empty"),
        (lambda: stats.iqm([1.0, np.nan]), r"x has a non-finite value nan at index \(1,\)"),
        (lambda: stats.cvar([1.0, 2.0], 0.0), r"alpha=0.0 must be in \(0, 1\]"),
        (lambda: stats.cvar([1.0, 2.0], 1.5), r"alpha=1.5 must be in \(0, 1\]"),
        (lambda: stats.cvar([1.0, 2.0], float("nan")), r"alpha=nan must be in \(0, 1\]"),
        (lambda: stats.cvar([np.inf], 0.5), r"x has a non-finite value inf"),
        (lambda: stats.stratified_bootstrap([[1.0, 2.0], [3.0]]), r"scores must be a rectangular array"),
        (lambda: stats.stratified_bootstrap([1.0, 2.0]), r"scores must be a 2-D or 3-D array; got shape \(2,\)"),
        (lambda: stats.stratified_bootstrap(np.zeros((2, 0))), r"scores is empty"),
        (lambda: stats.stratified_bootstrap([[1.0]], "median"), r"aggregate='median' must be one of"),
        (lambda: stats.stratified_bootstrap([[1.0]], reps=0), r"reps=0 must be an integer >= 1"),
        (lambda: stats.worst_mean([1.0, 2.0]), r"scores must be a 2-D or 3-D array"),
        (lambda: stats.probability_of_improvement({}, {0: [1.0]}), r"x must be a non-empty mapping"),
        (lambda: stats.probability_of_improvement({0: [1.0]}, {1: [1.0]}), r"x and y share no seed"),
        (lambda: stats.probability_of_improvement({0: [1.0]}, {0: [np.nan]}), r"y\[0\] has a non-finite"),
        (
            lambda: stats.probability_of_improvement({0: [[1.0], [2.0]]}, {0: [1.0]}),
            r"x\[0\] has 2 environment\(s\) \(shape \(2, 1\)\) but y\[0\] has 1",
        ),
        (lambda: stats.t_interval([[1.0, 2.0]]), r"diffs must be a 1-D array; got shape \(1, 2\)"),
        (lambda: stats.t_interval([1.0, np.nan]), r"diffs has a non-finite value nan at index \(1,\)"),
        (lambda: stats.t_interval([]), r"diffs is empty"),
        (lambda: stats.performance_profile({"a": [[1.0]]}, []), r"taus is empty"),
        (lambda: stats.performance_profile({}, [0.0]), r"scores_by_method must be a non-empty mapping"),
        (lambda: stats.performance_profile({"a": [[np.nan]]}, [0.0]), r"scores_by_method\['a'\] has a non-finite"),
    ],
)
def test_bad_input_is_rejected_naming_the_argument(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
