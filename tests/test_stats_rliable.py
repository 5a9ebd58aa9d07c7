"""drigm.stats's statistics over runs against the rliable package, which defines them (Agarwal et al., 2021).

Point estimates must be equal; interval endpoints must agree within the Monte-Carlo error of two independent
bootstraps (different random streams), which is a small fraction of the interval's width at these resample counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from drigm import stats

rliable = pytest.importorskip("rliable", reason="rliable is a test-only dependency ([dev] extra)")
from rliable import library, metrics  # noqa: E402

REPS = 20_000
REPS_P = 4_000  # rliable's interval of P runs scipy's Mann-Whitney per task and resample: slow


def _close(ours: tuple[float, float] | None, theirs: np.ndarray, width: float, quantum: float = 0.0) -> None:
    """Endpoints equal within 6% of the interval's width (plus one step of a discrete statistic)."""
    assert ours is not None
    np.testing.assert_allclose(ours, np.asarray(theirs).ravel(), atol=0.06 * width + quantum)


@pytest.mark.parametrize(("runs", "tasks"), [(5, 1), (5, 3), (10, 4)])
def test_iqm_and_mean_over_runs_match_rliable(runs: int, tasks: int) -> None:
    scores = np.random.default_rng(runs * 10 + tasks).normal(size=(runs, tasks)) + np.arange(tasks)
    for name, func in (("iqm", metrics.aggregate_iqm), ("mean", metrics.aggregate_mean)):
        point, interval = library.get_interval_estimates(
            {"m": scores}, lambda x, f=func: np.array([f(x)]), reps=REPS, random_state=np.random.RandomState(1)
        )
        ours = stats.interval_estimate(scores, name, reps=REPS, seed=2)
        assert ours.point == pytest.approx(float(point["m"][0]), abs=1e-12)
        lo, hi = np.asarray(interval["m"]).ravel()
        _close(ours.ci, interval["m"], hi - lo)


@pytest.mark.parametrize(("nx", "ny", "tasks", "shift"), [(5, 5, 1, 0.5), (4, 3, 2, 0.0)])
def test_probability_of_improvement_over_runs_matches_rliable(nx: int, ny: int, tasks: int, shift: float) -> None:
    rng = np.random.default_rng(nx + ny + tasks)
    x, y = rng.normal(size=(nx, tasks)) + shift, rng.normal(size=(ny, tasks))
    x[0, 0] = y[0, 0]  # a tie counts one half in both
    point, interval = library.get_interval_estimates(
        {"x,y": [x, y]}, metrics.probability_of_improvement, reps=REPS_P, random_state=np.random.RandomState(3)
    )
    ours = stats.probability_of_improvement_runs(x, y, reps=REPS_P, seed=4)
    assert ours.p == pytest.approx(float(point["x,y"]), abs=1e-12)
    assert (ours.n_x, ours.n_y, ours.tasks) == (nx, ny, tasks)
    lo, hi = np.asarray(interval["x,y"]).ravel()
    assert hi - lo > 0.05
    _close(ours.ci, interval["x,y"], hi - lo, quantum=1.0 / (nx * ny))


def test_the_intervals_are_95_percent_and_not_a_point() -> None:
    """Two mutations that once passed every test: the interval at 90% instead of 95%, and P's interval shrunk to
    its point estimate."""
    boot = np.arange(1001, dtype=float)
    assert stats._interval(boot).tolist() == pytest.approx([25.0, 975.0])  # the 2.5% and 97.5% quantiles
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 2)) + 0.3, rng.normal(size=(5, 2))
    imp = stats.probability_of_improvement_runs(x, y, reps=5000)
    assert imp.ci is not None and imp.ci[0] < imp.p < imp.ci[1] and imp.ci[1] - imp.ci[0] > 0.2
    paired = stats.probability_of_improvement({s: x[s] for s in range(5)}, {s: y[s] for s in range(5)}, reps=5000)
    assert paired.ci is not None and paired.ci[0] < paired.p < paired.ci[1] and paired.ci[1] - paired.ci[0] > 0.1


def test_run_scores_are_each_runs_mean_per_task_and_inputs_are_checked() -> None:
    scores = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # (envs, seeds, episodes)
    assert stats.run_scores(scores).tolist() == scores.mean(axis=2).T.tolist()
    assert stats.interval_estimate([[1.0, 2.0]]).ci is None  # one run: no interval
    with pytest.raises(ValueError, match="x has 2 task"):
        stats.probability_of_improvement_runs(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        stats.interval_estimate([[1.0, np.nan], [0.0, 1.0]])
