"""Evaluation statistics after Agarwal et al. (NeurIPS 2021), "Deep RL at the edge of the statistical precipice".

Two families, both our own numpy code:

- **over runs, as rliable defines them** (the reports' defaults; checked against the ``rliable`` package in the
  tests): the score matrix ``(runs, tasks)`` (:func:`run_scores`), the IQM over run scores and its stratified
  bootstrap over runs within each task (:func:`interval_estimate`), and P(X > Y) as the Mann-Whitney statistic
  over runs (:func:`probability_of_improvement_runs`);
- **over seeds, one value per seed** (the reports' mean +- SE [CI] cells, :func:`cell`): the mean of per-seed
  values, its standard error and a percentile bootstrap of seeds (:func:`bootstrap_ci`);
- **over episodes, paired by seed** (the reports' second, named figures, where runs are matched controls):
  interquartile mean, lower-tail CVaR, a bootstrap over seeds and then episodes, probability of improvement paired
  by seed, performance profiles, and a Student-t interval (scipy.stats.t) that checks paired differences over few
  seeds.

Scores of one method are an array ``(envs, seeds, episodes)``: a 2-D ``(seeds, episodes)`` array is one test
environment, and seed index i is the same trained run in every environment. Every bootstrap draws from
``numpy.random.default_rng(seed)``, so equal inputs give equal intervals; intervals are 95% percentile intervals.
Bad input (empty, NaN or inf, ragged or mismatched shapes, alpha outside (0, 1]) raises ValueError naming the
argument; nothing is clipped or renormalised. (:func:`cell` and :func:`bootstrap_ci` take the reports' per-seed
values as they come, as the reports always have: a NaN gives a NaN cell.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import t as student_t
from scipy.stats import trim_mean

DEFAULT_REPS = 10_000
DEFAULT_SEED = 12345
CI_LEVEL = 0.95
_CHUNK = 1000  # resamples drawn per block: bounds memory; the block size is fixed, so results do not depend on it

Aggregate = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""A vectorised aggregate: rows of resampled scores ``(reps, n)`` -> one value per row ``(reps,)``."""

AGGREGATES: dict[str, Aggregate] = {
    "mean": lambda v: v.mean(axis=-1),
    "iqm": lambda v: np.asarray(trim_mean(v, 0.25, axis=-1), dtype=np.float64),
}


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% percentile bootstrap interval (None where fewer than two seeds)."""

    point: float
    ci: tuple[float, float] | None
    n_seeds: int

    def fmt(self, digits: int = 3) -> str:
        """``point [lo, hi]`` (no interval with one seed)."""
        ci = f" [{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]" if self.ci is not None else " [n/a]"
        return f"{self.point:.{digits}f}{ci}"


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) paired by seed and the paired mean difference X - Y, each with a seed-bootstrap interval and the
    Student-t interval over paired seeds (the small-sample check; None with one paired seed)."""

    p: float
    ci: tuple[float, float] | None
    n_pairs: int
    seeds: list[int]
    mean_diff: float
    mean_diff_ci: tuple[float, float] | None
    t_ci: tuple[float, float] | None
    mean_diff_t_ci: tuple[float, float] | None


@dataclass(frozen=True)
class Profile:
    """A performance profile: the fraction of scores > tau for each tau, with a pointwise bootstrap band."""

    taus: list[float]
    fraction: list[float]
    lo: list[float] | None
    hi: list[float] | None


def _array(x: ArrayLike, name: str, ndims: tuple[int, ...] | None = None) -> NDArray[np.float64]:
    """`x` as a float array; ValueError naming `name` when ragged, non-numeric, of another ndim, empty or not
    finite."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from None
    if ndims is not None and a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be a {want} array; got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} has a non-finite value {a[where]} at index {where}")
    return a


def _reps(reps: int) -> int:
    if isinstance(reps, bool) or not isinstance(reps, int | np.integer) or reps < 1:
        raise ValueError(f"reps={reps!r} must be an integer >= 1")
    return int(reps)


def _interval(boot: NDArray[np.float64], axis: int = 0) -> NDArray[np.float64]:
    """The 95% percentile interval of bootstrap values along `axis`: array ``(2, ...)``."""
    tail = (1.0 - CI_LEVEL) / 2.0
    return np.quantile(boot, [tail, 1.0 - tail], axis=axis)


def _as_scores(scores: ArrayLike, name: str) -> NDArray[np.float64]:
    """Scores as ``(envs, seeds, episodes)`` (a 2-D array is one environment)."""
    a = _array(scores, name, (2, 3))
    return a[None] if a.ndim == 2 else a


def iqm(x: ArrayLike) -> float:
    """The interquartile mean of all values of `x` (flattened): ``scipy.stats.trim_mean(x, 0.25)``, i.e. the mean
    after cutting int(0.25 n) values from each end of the sorted values."""
    return float(trim_mean(_array(x, "x").ravel(), 0.25))


def cvar(x: ArrayLike, alpha: float = 0.1) -> float:
    """The lower-tail CVaR at level `alpha` of the empirical distribution of `x` (flattened): the mean of its worst
    alpha fraction, (1/alpha) * integral_0^alpha F^-1(u) du. With sorted values x_(1) <= ... <= x_(n) and
    k = alpha * n, it is (x_(1) + ... + x_(floor k) + (k - floor k) * x_(floor k + 1)) / k; alpha = 1 is the mean.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating) or not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1]")
    a = np.sort(_array(x, "x").ravel())
    k = float(alpha) * a.size
    weights = np.clip(k - np.arange(a.size), 0.0, 1.0)  # the i-th smallest value's share of the tail (definition)
    return float(weights @ a / k)


def t_interval(diffs: ArrayLike) -> tuple[float, float] | None:
    """The 95% Student-t interval of the mean of `diffs` (1-D, e.g. per-seed paired differences): mean +-
    t(0.975, n - 1) * std(ddof=1) / sqrt(n); None with fewer than two values.

    With few seeds the percentile bootstrap of a mean is too narrow (3 seeds give 10 distinct resamples, and its
    interval ignores that the spread itself is estimated); this interval is the small-sample check beside it."""
    a = _array(diffs, "diffs", (1,))
    if a.size < 2:
        return None
    half = float(student_t.ppf(0.5 + CI_LEVEL / 2.0, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    m = float(a.mean())
    return m - half, m + half


def _resample(shape: tuple[int, ...], reps: int, rng: np.random.Generator) -> Iterator[NDArray[np.intp]]:
    """Blocks of flat indices ``(r, envs * seeds * episodes)`` into scores of `shape` ``(envs, seeds, episodes)``:
    seeds drawn with replacement (one draw shared by all environments), then, within each environment and drawn
    seed, episodes drawn with replacement from that seed's episodes on that environment."""
    E, S, K = shape
    env_base = np.arange(E)[None, :, None, None] * S
    for start in range(0, reps, _CHUNK):
        r = min(_CHUNK, reps - start)
        s = rng.integers(0, S, size=(r, 1, S, 1))
        k = rng.integers(0, K, size=(r, E, S, K))
        yield ((env_base + s) * K + k).reshape(r, E * S * K)


def _resample_seeds(n: int, reps: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Indices ``(reps, n)``: `reps` resamples of n seeds drawn with replacement (one block, so the draws, and the
    reports' intervals, do not depend on a block size)."""
    return rng.integers(0, n, size=(reps, n))


def bootstrap_ci(values: ArrayLike, rng: np.random.Generator, samples: int = DEFAULT_REPS) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of `values` (1-D, one value per seed): the 2.5% and 97.5% quantiles
    of the means of `samples` resamples of the values drawn with replacement."""
    x = np.asarray(values, dtype=np.float64)
    means = x[_resample_seeds(x.size, _reps(samples), rng)].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@dataclass
class Cell:
    """One statistic over seeds: per-seed values, mean, standard error and bootstrap CI (None where undefined)."""

    values: list[float]
    mean: float
    se: float | None
    ci: tuple[float, float] | None

    def fmt(self, digits: int = 3) -> str:
        """``mean +- se [lo, hi]`` (with n/a where a statistic needs two seeds)."""
        se = f" +- {self.se:.{digits}f}" if self.se is not None else " +- n/a"
        ci = f" [{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]" if self.ci is not None else ""
        return f"{self.mean:.{digits}f}{se}{ci}"


def cell(values: ArrayLike, seed: int = DEFAULT_SEED, ddof: int = 1) -> Cell:
    """Mean, standard error (std with `ddof` / sqrt(n)) and the seeded :func:`bootstrap_ci` over `values` (one per
    seed; SE and CI need at least two values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return Cell(list(map(float, x)), float(x.mean()), None, None)
    se = float(x.std(ddof=ddof) / math.sqrt(x.size))
    return Cell(list(map(float, x)), float(x.mean()), se, bootstrap_ci(values, np.random.default_rng(seed)))


def stratified_bootstrap(
    scores: ArrayLike,
    aggregate: str | Aggregate = "iqm",
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """`aggregate` of all scores ``(envs, seeds, episodes)`` pooled, and its 95% percentile interval over `reps`
    stratified resamples: seeds resampled with replacement (jointly over the environments: a seed is one trained
    run tested on all of them), then each drawn seed's episodes resampled with replacement within each environment
    (strata never mix). The interval is None with fewer than 2 seeds.

    `aggregate`: "mean", "iqm", or a callable mapping rows ``(r, envs * seeds * episodes)`` of resampled scores,
    each the flattened ``(envs, seeds, episodes)`` array (environment-major), to ``(r,)`` values."""
    a = _as_scores(scores, "scores")
    if isinstance(aggregate, str):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r} must be one of {sorted(AGGREGATES)} or a callable")
        agg = AGGREGATES[aggregate]
    else:
        agg = aggregate
    reps = _reps(reps)
    flat = a.ravel()
    point = float(agg(flat[None])[0])
    if a.shape[1] < 2:
        return Estimate(point, None, a.shape[1])
    rng = np.random.default_rng(seed)
    boot = np.concatenate([agg(flat[idx]) for idx in _resample(a.shape, reps, rng)])
    lo, hi = _interval(boot)
    return Estimate(point, (float(lo), float(hi)), a.shape[1])


def worst_mean(scores: ArrayLike, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED) -> Estimate:
    """The minimum over environments of each environment's mean of `scores` ``(envs, seeds, episodes)``, with the
    95% percentile interval of the same statistic over the resamples of :func:`stratified_bootstrap`."""
    a = _as_scores(scores, "scores")
    E = a.shape[0]
    return stratified_bootstrap(a, lambda v: v.reshape(v.shape[0], E, -1).mean(axis=-1).min(axis=-1), reps, seed)


def _seed_episodes(v: ArrayLike, name: str) -> NDArray[np.float64]:
    a = _array(v, name, (1, 2))
    return a[None] if a.ndim == 1 else a


def probability_of_improvement(
    x: Mapping[int, ArrayLike],
    y: Mapping[int, ArrayLike],
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
) -> Improvement:
    """P(X > Y) of method X over control Y, paired by seed.

    `x` and `y` map a training seed to its test-episode scores, 1-D (episodes) or 2-D (envs, episodes; the same
    environments in the same order on both sides). Seeds present in only one mapping are dropped. For each paired
    seed s and environment e, with x_i (n episodes) and y_j (m episodes) the two seeds' scores there,
        p_se = (1 / (n m)) * sum_i sum_j [1(x_i > y_j) + 0.5 * 1(x_i = y_j)]     (Mann-Whitney),
    p_s = the mean of p_se over e, and P(X > Y) = the mean of p_s over paired seeds (Agarwal et al.'s average of
    per-task statistics, with runs paired by seed). The paired mean difference is the mean over paired seeds of
    the mean over e of (mean_i x_i - mean_j y_j). Both bootstrap intervals (`ci`, `mean_diff_ci`): 95% percentiles
    over paired seeds resampled with replacement (one draw for both). Both Student-t intervals (`t_ci`,
    `mean_diff_t_ci`): :func:`t_interval` of the per-seed p_s and differences; the t interval of P is not clipped
    to [0, 1], so a bound outside it shows how few seeds there are. All None with one paired seed.
    """
    if not isinstance(x, Mapping) or not x:
        raise ValueError(f"x must be a non-empty mapping seed -> scores; got {x!r}")
    if not isinstance(y, Mapping) or not y:
        raise ValueError(f"y must be a non-empty mapping seed -> scores; got {y!r}")
    reps = _reps(reps)
    seeds = sorted(set(x) & set(y))
    if not seeds:
        raise ValueError(f"x and y share no seed (x has {sorted(x)}, y has {sorted(y)}): nothing to pair")
    p_s, d_s = [], []
    for s in seeds:
        xs, ys = _seed_episodes(x[s], f"x[{s!r}]"), _seed_episodes(y[s], f"y[{s!r}]")
        if xs.shape[0] != ys.shape[0]:
            raise ValueError(
                f"x[{s!r}] has {xs.shape[0]} environment(s) (shape {xs.shape}) but y[{s!r}] has {ys.shape[0]} "
                f"(shape {ys.shape})"
            )
        gt = (xs[:, :, None] > ys[:, None, :]).mean(axis=(1, 2))
        eq = (xs[:, :, None] == ys[:, None, :]).mean(axis=(1, 2))
        p_s.append(float(np.mean(gt + 0.5 * eq)))
        d_s.append(float(np.mean(xs.mean(axis=1) - ys.mean(axis=1))))
    p, d = np.asarray(p_s), np.asarray(d_s)
    ci: tuple[float, float] | None = None
    dci: tuple[float, float] | None = None
    if len(seeds) >= 2:
        idx = _resample_seeds(len(seeds), reps, np.random.default_rng(seed))
        (plo, phi), (dlo, dhi) = _interval(p[idx].mean(axis=1)), _interval(d[idx].mean(axis=1))
        ci, dci = (float(plo), float(phi)), (float(dlo), float(dhi))
    return Improvement(float(p.mean()), ci, len(seeds), seeds, float(d.mean()), dci, t_interval(p), t_interval(d))


def performance_profile(
    scores_by_method: Mapping[str, ArrayLike],
    taus: ArrayLike,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Profile]:
    """Per method: the fraction of its scores ``(envs, seeds, episodes)`` (every seed x episode run, pooled over
    environments) that are > tau, for each tau in `taus`, with a pointwise 95% band from the stratified bootstrap
    of :func:`stratified_bootstrap` (None with fewer than 2 seeds)."""
    if not isinstance(scores_by_method, Mapping) or not scores_by_method:
        raise ValueError(f"scores_by_method must be a non-empty mapping method -> scores; got {scores_by_method!r}")
    t = _array(taus, "taus", (1,))
    reps = _reps(reps)
    out: dict[str, Profile] = {}
    for method, scores in scores_by_method.items():
        a = _as_scores(scores, f"scores_by_method[{method!r}]")
        flat = a.ravel()
        above = (flat[:, None] > t[None, :]).astype(np.float64)  # (n, taus)
        fraction = above.mean(axis=0)
        if a.shape[1] < 2:
            out[method] = Profile(t.tolist(), fraction.tolist(), None, None)
            continue
        rng = np.random.default_rng(seed)
        blocks = []
        for idx in _resample(a.shape, reps, rng):
            r, n = idx.shape
            counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
            blocks.append(counts @ above / n)  # each resample's fraction above tau, from how often it drew each run
        lo, hi = _interval(np.concatenate(blocks))
        out[method] = Profile(t.tolist(), fraction.tolist(), lo.tolist(), hi.tolist())
    return out


def as_dict(obj: Estimate | Improvement | Profile | RunImprovement) -> dict[str, Any]:
    """A JSON-ready dict of a result (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in obj.__dict__.items()}


# ===== statistics over runs, as rliable defines them ===============================================
# Agarwal et al. (NeurIPS 2021) and their `rliable` package work on a score matrix (runs, tasks): one score per
# trained run on each task (here: a run's mean over its test episodes on each test environment). The IQM is the
# 25% trimmed mean of all its entries; the stratified bootstrap resamples runs with replacement within each task,
# independently across tasks; P(X > Y) is, per task, the Mann-Whitney statistic of X's runs against Y's runs,
# averaged over tasks, and its interval resamples X's and Y's runs independently within each task. A test checks
# these against the rliable package itself (tests/test_stats_rliable.py).


@dataclass(frozen=True)
class RunImprovement:
    """P(X > Y) over runs (rliable's definition) with its 95% stratified-bootstrap interval (None when either side has
    one run)."""

    p: float
    ci: tuple[float, float] | None
    n_x: int
    n_y: int
    tasks: int


def run_scores(scores: ArrayLike) -> NDArray[np.float64]:
    """The score matrix ``(runs, tasks)`` of scores ``(envs, seeds, episodes)``: each run's (seed's) mean over its
    test episodes on each test environment (a 2-D array is one environment)."""
    return _as_scores(scores, "scores").mean(axis=2).T.copy()


def _run_matrix(x: ArrayLike, name: str) -> NDArray[np.float64]:
    return _array(x, name, (2,))


def _aggregate_of(aggregate: str | Aggregate) -> Aggregate:
    if isinstance(aggregate, str):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r} must be one of {sorted(AGGREGATES)} or a callable")
        return AGGREGATES[aggregate]
    return aggregate


def _strata(n_runs: int, n_tasks: int, reps: int, rng: np.random.Generator) -> Iterator[NDArray[np.intp]]:
    """Blocks of flat indices ``(r, runs * tasks)`` into a ``(runs, tasks)`` matrix: in each task, `runs` run
    indices drawn with replacement, independently per task (rliable's ``StratifiedBootstrap``)."""
    task = np.arange(n_tasks)[None, None, :]
    for start in range(0, reps, _CHUNK):
        r = min(_CHUNK, reps - start)
        runs = rng.integers(0, n_runs, size=(r, n_runs, n_tasks))
        yield (runs * n_tasks + task).reshape(r, n_runs * n_tasks)


def interval_estimate(
    run_matrix: ArrayLike, aggregate: str | Aggregate = "iqm", reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED
) -> Estimate:
    """`aggregate` ("iqm": the 25% trimmed mean, "mean", or a callable on rows ``(r, runs * tasks)``) of all entries
    of the score matrix ``(runs, tasks)``, with the 95% percentile interval over `reps` stratified bootstrap
    resamples (runs drawn with replacement within each task). The interval is None with one run."""
    a = _run_matrix(run_matrix, "run_matrix")
    agg, reps = _aggregate_of(aggregate), _reps(reps)
    flat = a.ravel()
    point = float(agg(flat[None])[0])
    if a.shape[0] < 2:
        return Estimate(point, None, a.shape[0])
    rng = np.random.default_rng(seed)
    boot = np.concatenate([agg(flat[idx]) for idx in _strata(a.shape[0], a.shape[1], reps, rng)])
    lo, hi = _interval(boot)
    return Estimate(point, (float(lo), float(hi)), a.shape[0])


def _mann_whitney(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per task, P(X > Y) + 0.5 P(X = Y) over all pairs of runs: x ``(..., n, tasks)``, y ``(..., m, tasks)``."""
    gt = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))
    eq = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return gt + 0.5 * eq


def probability_of_improvement_runs(
    x: ArrayLike, y: ArrayLike, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED
) -> RunImprovement:
    """P(X > Y) of score matrices x ``(n runs, tasks)`` and y ``(m runs, same tasks)``: per task the Mann-Whitney
    statistic U / (n m) (ties count one half), averaged over tasks; runs are not paired. The 95% percentile interval
    resamples x's and y's runs independently within each task (rliable's ``StratifiedIndependentBootstrap``); None
    when either side has one run."""
    a, b = _run_matrix(x, "x"), _run_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} task(s) (shape {a.shape}) but y has {b.shape[1]} (shape {b.shape})")
    reps = _reps(reps)
    n, m, T = a.shape[0], b.shape[0], a.shape[1]
    p = float(_mann_whitney(a, b).mean())
    if n < 2 or m < 2:
        return RunImprovement(p, None, n, m, T)
    rng = np.random.default_rng(seed)
    col = np.arange(T)[None, None, :]
    boot = []
    for start in range(0, reps, _CHUNK // 10):
        r = min(_CHUNK // 10, reps - start)
        xa = a[rng.integers(0, n, size=(r, n, T)), col]
        yb = b[rng.integers(0, m, size=(r, m, T)), col]
        boot.append(_mann_whitney(xa, yb).mean(axis=-1))
    lo, hi = _interval(np.concatenate(boot))
    return RunImprovement(p, (float(lo), float(hi)), n, m, T)
