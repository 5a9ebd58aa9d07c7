"""Each method against its matched controls: which controls have results, paired differences per seed, the
probability of improvement (over runs, and paired by seed), and the verdict on a paired difference.
"""

from __future__ import annotations

from drigm import stats
from drigm.collect import Collected, compatible_tests, episode_scores, seed_average
from drigm.protocol import Protocol, ProtocolError, matched_controls, parse_method
from drigm.rho_curves import RhoOf
from drigm.stats import Cell, cell


def rho_of(proto: Protocol) -> RhoOf:
    """(set, algo) -> the protocol's rho, or None where it defines none."""
    return lambda set_name, algo: proto.rho.get(set_name, {}).get(algo)


def controls(col: Collected, method: str) -> list[str]:
    """The matched controls of `method` that have results in `col` (closest first; none for a foreign label)."""
    try:
        algo, _, set_name, _ = parse_method(method)
    except ProtocolError:
        return []
    rho_default = None if set_name is None else rho_of(col.proto)(set_name, algo)
    return [c for c in matched_controls(method, rho_default) if c in col.results and c != method]


def paired_average_diffs(col: Collected, method: str, control: str, key: str) -> tuple[list[float], list[int]]:
    """Per paired seed: `method`'s average over the test environments minus `control`'s; and the seeds."""
    a, b = col.results.get(method, {}), col.results.get(control, {})
    diffs, common = [], []
    for s in sorted(set(a) & set(b)):
        ra, rb = seed_average(a[s], key), seed_average(b[s], key)
        if ra is not None and rb is not None:
            diffs.append(ra - rb)
            common.append(s)
    return diffs, common


def average_improvement(col: Collected, method: str, control: str, key: str) -> stats.Improvement | None:
    """P(improvement) of `method` over `control` on all compatible test environments, paired by seed (None without
    paired seeds)."""
    return improvement(col, method, control, key, compatible_tests(col, method))


def run_improvement(
    col: Collected, method: str, control: str, key: str, tests: list[str]
) -> stats.RunImprovement | None:
    """rliable's P(X > Y) over runs of `method` over `control` on the test environments `tests` (the tasks); None
    when either has no run with the metric on all of them."""
    _, ax = episode_scores(col, method, key, tests)
    _, ay = episode_scores(col, control, key, tests)
    if ax is None or ay is None:
        return None
    return stats.probability_of_improvement_runs(
        stats.run_scores(ax), stats.run_scores(ay), stats.DEFAULT_REPS, stats.DEFAULT_SEED
    )


def improvement(col: Collected, method: str, control: str, key: str, tests: list[str]) -> stats.Improvement | None:
    """P(improvement) of `method` over `control` on the test environments `tests`, paired by seed (None when no
    seed has both runs' metric on all of them)."""
    sx, ax = episode_scores(col, method, key, tests)
    sy, ay = episode_scores(col, control, key, tests)
    if ax is None or ay is None or not set(sx) & set(sy):
        return None
    x = {s: ax[:, i, :] for i, s in enumerate(sx)}
    y = {s: ay[:, i, :] for i, s in enumerate(sy)}
    return stats.probability_of_improvement(x, y, stats.DEFAULT_REPS, stats.DEFAULT_SEED)


def excludes_zero(ci: tuple[float, float] | None) -> bool:
    """Whether an interval exists and lies wholly above or wholly below 0."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def versus(diffs: list[float]) -> tuple[Cell, tuple[float, float] | None, str]:
    """The paired differences' cell, their Student-t 95% interval, and a verdict that says plainly whether the
    bootstrap CI excludes 0 and whether the t interval (the small-sample check) agrees."""
    c, t_ci = cell(diffs), stats.t_interval(diffs)
    if c.ci is None or t_ci is None:
        return c, t_ci, "n/a (needs 2+ paired seeds)"
    if excludes_zero(c.ci):
        word = "higher" if c.mean > 0 else "LOWER"
        if excludes_zero(t_ci):
            return c, t_ci, f"robust {word} (both CIs exclude 0)"
        return c, t_ci, f"robust {word} by the bootstrap CI only (the t CI includes 0: too few seeds to tell)"
    return c, t_ci, "no clear difference (the bootstrap CI includes 0)"
