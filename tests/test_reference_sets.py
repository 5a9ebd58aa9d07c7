"""Uncertainty sets of `reference.sets` (docs/theory.md section 2).

1. Closed forms against the cvxpy primal on random (p0, V, rho) drawn by Hypothesis, for every set, with
   sparse and deterministic p0, S = 1, ties in V and rho at the ends of its range.
2. Worst-case distributions: stochastic, in the set, attaining sigma, absolutely continuous for kl/chi2.
3. The edge cases of the issue: rho = 0, contamination/tv at rho = 1, kl/chi2 at large rho, S = 1.
4. Properties of sigma: monotone, translation-equivariant, superadditive (concave for kl-penalty),
   below p0.V, monotone in rho (and in the temperature beta for kl-penalty).
5. The shared-V fast path (value iteration's) equals the general functions, including its fallbacks.
6. Validation: every bad rho, set name, V and P0 is refused with a message naming the problem.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference import sets
from reference.sets import (
    RHO_RANGES,
    SET_NAMES,
    SharedKernel,
    UncertaintySetError,
    check_rho,
    chi2_support,
    divergence,
    make_set,
    primal_support,
    support_shared,
)

BALLS = ("contamination", "tv", "kl", "chi2")  # the sets with a radius (kl-penalty is a penalty)
CVX_TOL = 1e-6
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----- strategies --------------------------------------------------------------------------------
@st.composite
def distributions(draw: st.DrawFn, max_states: int = 7, n_states: int | None = None) -> np.ndarray:
    """A probability vector: dense, sparse (zeros) or deterministic; entries >= 0.01 / S where positive."""
    S = n_states if n_states is not None else draw(st.integers(1, max_states))
    kind = draw(st.sampled_from(["dense", "sparse", "deterministic"]))
    if kind == "deterministic":
        p = np.zeros(S)
        p[draw(st.integers(0, S - 1))] = 1.0
        return p
    w = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=S, max_size=S)))
    if kind == "sparse" and S > 1:
        mask = np.array(draw(st.lists(st.booleans(), min_size=S, max_size=S)))
        if not mask.any():
            mask[draw(st.integers(0, S - 1))] = True
        w = np.where(mask, w, 0.0)
    return w / w.sum()


@st.composite
def values(draw: st.DrawFn, S: int) -> np.ndarray:
    """V with |V| <= 10; sometimes drawn from a few integers so that ties are common."""
    if draw(st.booleans()):
        return np.array(draw(st.lists(st.integers(-3, 3), min_size=S, max_size=S)), dtype=float) * 2.5
    return np.array(draw(st.lists(st.floats(-10.0, 10.0), min_size=S, max_size=S)))


def radii(name: str, smallest: float = 0.0) -> st.SearchStrategy[float]:
    """rho for the named set, with the ends of its range drawn often; positive kl/chi2 radii >= `smallest`."""
    if name in ("contamination", "tv"):
        return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
    if name in ("kl", "chi2"):
        return st.one_of(st.sampled_from([0.0, 100.0, 1e4]), st.floats(smallest, 5.0), st.floats(5.0, 1000.0))
    return st.one_of(st.sampled_from([0.05, 1.0, 50.0]), st.floats(0.05, 50.0))  # kl-penalty: beta


@st.composite
def problems(draw: st.DrawFn, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Cases for cvxpy. Its conic solver meets constraints to ~1e-11, which moves p by ~sqrt(1e-11) when a
    kl/chi2 radius is tiny, so positive radii start at 1e-6 here; rho = 0 is drawn exactly, and tiny radii
    are checked against series in test_tiny_radii_follow_their_series."""
    p0 = draw(distributions())
    return p0, draw(values(p0.size)), draw(radii(name, smallest=1e-6))


# ----- 1. closed forms against cvxpy -------------------------------------------------------------
def _closed_form_vs_cvxpy(name: str, problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    p0, V, rho = problem
    uset = make_set(name, rho)
    closed = float(uset.support(p0, V))
    primal, _ = primal_support(name, p0, V, rho)
    assert closed == pytest.approx(primal, abs=CVX_TOL), (name, p0, V, rho)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems("contamination"))
def test_contamination_matches_cvxpy(problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    _closed_form_vs_cvxpy("contamination", problem)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems("tv"))
def test_tv_matches_cvxpy(problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    _closed_form_vs_cvxpy("tv", problem)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems("kl"))
def test_kl_matches_cvxpy(problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    _closed_form_vs_cvxpy("kl", problem)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems("chi2"))
def test_chi2_matches_cvxpy(problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    _closed_form_vs_cvxpy("chi2", problem)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems("kl-penalty"))
def test_kl_penalty_matches_cvxpy(problem: tuple[np.ndarray, np.ndarray, float]) -> None:
    _closed_form_vs_cvxpy("kl-penalty", problem)


# ----- 2. worst-case distributions ---------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SET_NAMES).flatmap(lambda n: st.tuples(st.just(n), problems(n))))
def test_worst_case_is_a_feasible_minimiser(case: tuple[str, tuple[np.ndarray, np.ndarray, float]]) -> None:
    name, (p0, V, rho) = case
    uset = make_set(name, rho)
    sigma = float(uset.support(p0, V))
    p = uset.worst_case(p0, V)
    assert p.shape == p0.shape
    assert np.all(p >= 0)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    if name == "kl-penalty":  # the penalised objective is attained instead of a radius
        kl = divergence("kl", p, p0)
        assert p @ V + rho * kl == pytest.approx(sigma, abs=1e-8)
        assert np.all(p[p0 == 0] == 0)
        return
    assert p @ V == pytest.approx(sigma, abs=1e-8)
    assert divergence(name, p, p0) <= rho + 1e-7
    if name in ("kl", "chi2"):
        assert np.all(p[p0 == 0] == 0), "kl and chi2 worst cases must stay absolutely continuous w.r.t. p0"


def test_worst_case_rows_of_a_kernel() -> None:
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(6), size=(5, 4))
    P[0, 0] = [0, 0.5, 0, 0.5, 0, 0]
    V = rng.normal(size=6)
    for name, rho in (("contamination", 0.3), ("tv", 0.3), ("kl", 0.3), ("chi2", 0.3), ("kl-penalty", 0.7)):
        uset = make_set(name, rho)
        W = uset.worst_case(P, V)
        assert W.shape == P.shape
        assert np.all(W >= 0)
        np.testing.assert_allclose(W.sum(axis=-1), 1.0, atol=1e-12)
        attained = W @ V
        if name == "kl-penalty":
            with np.errstate(divide="ignore", invalid="ignore"):
                attained = attained + rho * np.where(W > 0, W * np.log(W / P), 0.0).sum(axis=-1)
        np.testing.assert_allclose(attained, uset.support(P, V), atol=1e-10)
    assert np.all(make_set("kl", 0.3).worst_case(P, V)[0, 0][[0, 2, 4, 5]] == 0)


# ----- 3. edge cases of the issue -----------------------------------------------------------------
@given(distributions(), st.data())
@FAST
def test_rho_zero_gives_the_nominal_mean(p0: np.ndarray, data: st.DataObject) -> None:
    V = data.draw(values(p0.size))
    for name in BALLS:
        assert float(make_set(name, 0.0).support(p0, V)) == pytest.approx(float(p0 @ V), abs=1e-12)
        np.testing.assert_allclose(make_set(name, 0.0).worst_case(p0, V), p0, atol=1e-12)


@pytest.mark.parametrize("rho", [5e-324, 1e-300, 1e-40, 1e-20, 1e-14, 1e-10, 1e-8])
def test_tiny_radii_follow_their_series(rho: float) -> None:
    """chi2: E V - sqrt(rho Var) exactly (the optimal eta is above max V); kl: E V - sqrt(2 rho k2) + rho k3 / (3 k2)
    up to O(rho^1.5)."""
    p0 = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    V = np.array([3.0, -1.0, 0.5, 2.0, -7.0])
    mean = p0 @ V
    k2, k3 = p0 @ (V - mean) ** 2, p0 @ (V - mean) ** 3
    chi2 = float(make_set("chi2", rho).support(p0, V))
    assert chi2 == pytest.approx(mean - math.sqrt(rho * k2), rel=0, abs=1e-15)
    kl = float(make_set("kl", rho).support(p0, V))
    series = mean - math.sqrt(2 * rho * k2) + rho * k3 / (3 * k2)
    assert kl == pytest.approx(series, rel=0, abs=1e-14 + 10 * rho**1.5)
    for name in ("kl", "chi2"):
        p = make_set(name, rho).worst_case(p0, V)
        assert np.all(np.isfinite(p)) and p[4] == 0.0 and p.sum() == pytest.approx(1.0)


def test_rho_one_gives_the_minimum_over_all_states_even_outside_the_support() -> None:
    p0 = np.array([0.0, 0.7, 0.3, 0.0])
    V = np.array([-5.0, 1.0, 2.0, -1.0])  # the minimum (state 0) is outside supp(p0)
    for name in ("contamination", "tv"):
        uset = make_set(name, 1.0)
        assert float(uset.support(p0, V)) == -5.0
        np.testing.assert_allclose(uset.worst_case(p0, V), [1.0, 0.0, 0.0, 0.0], atol=1e-15)
    # and an intermediate radius still uses that outside state
    assert float(make_set("contamination", 0.5).support(p0, V)) == pytest.approx(0.5 * 1.3 + 0.5 * -5.0)
    assert float(make_set("tv", 0.5).support(p0, V)) == pytest.approx(0.5 * 1.0 + 0.5 * -5.0)


@pytest.mark.parametrize("name", ["kl", "chi2"])
def test_kl_and_chi2_never_leave_the_support(name: str) -> None:
    p0 = np.array([0.0, 0.25, 0.75, 0.0])
    V = np.array([-5.0, 1.0, 2.0, -1.0])
    for rho in (0.1, 1.0, 50.0, 1e6):
        uset = make_set(name, rho)
        sigma = float(uset.support(p0, V))
        p = uset.worst_case(p0, V)
        assert sigma >= 1.0 - 1e-12, "mass moved outside supp(p0)"
        assert np.all(p[[0, 3]] == 0)
    for rho in (50.0, 1e6):  # large radius: the minimum over the support, all mass on it
        assert float(make_set(name, rho).support(p0, V)) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(make_set(name, rho).worst_case(p0, V), [0, 1, 0, 0], atol=1e-9)


@pytest.mark.parametrize("name", SET_NAMES)
def test_single_state(name: str) -> None:
    for rho in (RHO_RANGES[name][0] if name != "kl-penalty" else 0.1, 0.5, 1.0):
        uset = make_set(name, rho)
        assert float(uset.support(np.array([1.0]), np.array([3.25]))) == pytest.approx(3.25, abs=1e-12)
        np.testing.assert_array_equal(uset.worst_case(np.array([1.0]), np.array([3.25])), [1.0])


def test_deterministic_p0() -> None:
    p0 = np.array([0.0, 1.0, 0.0])
    V = np.array([4.0, 2.0, -1.0])
    for rho in (0.0, 0.4, 1.0):
        assert float(make_set("contamination", rho).support(p0, V)) == pytest.approx(2.0 - 3.0 * rho)
        assert float(make_set("tv", rho).support(p0, V)) == pytest.approx(2.0 - 3.0 * rho)
    for rho in (0.0, 0.4, 30.0):  # the kl and chi2 balls around a point mass hold only that point mass
        assert float(make_set("kl", rho).support(p0, V)) == pytest.approx(2.0)
        assert float(make_set("chi2", rho).support(p0, V)) == pytest.approx(2.0)
    assert float(make_set("kl-penalty", 0.3).support(p0, V)) == pytest.approx(2.0)


# ----- 4. properties of sigma ---------------------------------------------------------------------
@st.composite
def property_cases(draw: st.DrawFn) -> tuple[str, float, np.ndarray, np.ndarray, np.ndarray]:
    name = draw(st.sampled_from(SET_NAMES))
    S = draw(st.integers(1, 6))
    P0 = np.stack([draw(distributions(n_states=S)) for _ in range(draw(st.integers(1, 4)))])
    return name, draw(radii(name)), P0, draw(values(S)), draw(values(S))


@settings(max_examples=300, deadline=None)
@given(property_cases(), st.floats(-20.0, 20.0), st.floats(0.0, 5.0))
def test_sigma_properties(
    case: tuple[str, float, np.ndarray, np.ndarray, np.ndarray], shift: float, bump: float
) -> None:
    name, rho, P0, V, W = case
    uset = make_set(name, rho)
    sig = uset.support(P0, V)
    tol = 1e-9 * (1.0 + np.abs(V).max() + np.abs(W).max() + abs(shift))
    # monotone: V <= V + bump * |W|
    assert np.all(uset.support(P0, V + bump * np.abs(W)) >= sig - tol)
    # translation-equivariant
    np.testing.assert_allclose(uset.support(P0, V + shift), sig + shift, atol=tol)
    # below the nominal mean
    assert np.all(sig <= P0 @ V + tol)
    if name == "kl-penalty":
        # concave (it is not positively homogeneous, so not superadditive): midpoint concavity
        assert np.all(uset.support(P0, 0.5 * (V + W)) >= 0.5 * (sig + uset.support(P0, W)) - tol)
    else:
        # concave and positively homogeneous, hence superadditive
        assert np.all(uset.support(P0, V + W) >= sig + uset.support(P0, W) - tol)
        np.testing.assert_allclose(uset.support(P0, 2.5 * V), 2.5 * sig, atol=2.5 * tol)


def test_kl_penalty_is_not_superadditive() -> None:
    """Why the property test checks only concavity for kl-penalty: comonotone V and W break superadditivity."""
    p0 = np.array([0.5, 0.5])
    V = np.array([0.0, 2.0])
    uset = make_set("kl-penalty", 1.0)
    assert float(uset.support(p0, V + V)) < 2 * float(uset.support(p0, V)) - 0.1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SET_NAMES), distributions(), st.data())
def test_sigma_is_monotone_in_the_radius(name: str, p0: np.ndarray, data: st.DataObject) -> None:
    """Non-increasing in rho for the balls; for kl-penalty non-decreasing in beta (beta -> inf gives p0.V)."""
    V = data.draw(values(p0.size))
    lo, hi = sorted(data.draw(st.lists(radii(name), min_size=2, max_size=2)))
    s_lo, s_hi = float(make_set(name, lo).support(p0, V)), float(make_set(name, hi).support(p0, V))
    tol = 1e-9 * (1 + np.abs(V).max())
    if name == "kl-penalty":
        assert s_hi >= s_lo - tol
    else:
        assert s_hi <= s_lo + tol


def test_kl_penalty_direction_in_beta_numerically() -> None:
    """The direction asserted above, checked on a grid: from min_supp V (beta -> 0) up to p0.V (beta -> inf)."""
    p0 = np.array([0.2, 0.3, 0.5])
    V = np.array([-1.0, 0.5, 3.0])
    betas = np.geomspace(1e-3, 1e4, 40)
    vals = np.array([float(make_set("kl-penalty", b).support(p0, V)) for b in betas])
    assert np.all(np.diff(vals) > 0)
    assert vals[0] == pytest.approx(-1.0, abs=1e-2)
    assert vals[-1] == pytest.approx(float(p0 @ V), abs=1e-3)


# ----- 5. the shared-V fast path -------------------------------------------------------------------
@st.composite
def kernels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    S = draw(st.integers(1, 12))
    K = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, draw(st.sampled_from([0.2, 1.0, 5.0]))), size=K)
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.9]))
    if sparsity and S > 1:
        keep = rng.random(P.shape) >= sparsity
        keep[np.arange(K), rng.integers(0, S, K)] = True
        P = np.where(keep, P, 0.0)
        P /= P.sum(axis=1, keepdims=True)
    return P, draw(values(S))


@settings(max_examples=250, deadline=None)
@given(kernels(), st.sampled_from(SET_NAMES), st.data())
def test_shared_path_equals_general_functions(kv: tuple[np.ndarray, np.ndarray], name: str, data: st.DataObject):
    P, V = kv
    rho = data.draw(radii(name))
    kernel = SharedKernel(P)
    fast = support_shared(name, kernel, V, rho)
    general = make_set(name, rho).support(P, V)
    np.testing.assert_allclose(fast, general, rtol=0, atol=1e-10 * (1 + np.abs(V).max()))


@pytest.mark.parametrize("rho", [0.01, 0.2, 0.5, 0.6, 0.95, 1.0])
def test_tv_shared_on_a_large_sparse_kernel_exercises_the_row_by_row_finish(rho: float) -> None:
    """Many rows with mass only on low values keep a budget for long, so the loop finishes them row by row."""
    rng = np.random.default_rng(3)
    S, K = 80, 3000
    P = rng.dirichlet(np.ones(S), size=K)
    V = rng.normal(size=S)
    low = np.argsort(V)[:3]
    P[: K // 50] = 0.0
    P[: K // 50, low] = 1.0 / 3.0  # these rows only reach the bottom three states
    P[K // 50 : K // 25] = np.eye(S)[rng.integers(0, S, K // 50)]  # deterministic rows
    fast = support_shared("tv", SharedKernel(P), V, rho)
    np.testing.assert_allclose(fast, make_set("tv", rho).support(P, V), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [1e-4, 0.1, 0.7, 3.0])
def test_kl_shared_on_a_large_kernel_and_its_general_fallback(rho: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    S, K = 60, 1500
    P = rng.dirichlet(np.ones(S), size=K)
    P[:100] = np.where(rng.random((100, S)) < 0.7, 0.0, P[:100])
    P[:100, 0] += 1e-3  # keep every row non-empty
    P /= P.sum(axis=1, keepdims=True)
    V = rng.normal(size=S) * 3
    general = make_set("kl", rho).support(P, V)
    kernel = SharedKernel(P)
    np.testing.assert_allclose(support_shared("kl", kernel, V, rho), general, rtol=0, atol=1e-11)
    monkeypatch.setattr(sets.kl, "_KL_MAX_PASSES", 0)  # every active row through the general solver
    np.testing.assert_allclose(support_shared("kl", kernel, V, rho), general, rtol=0, atol=1e-13)


def test_shared_kernel_keeps_a_private_read_only_copy() -> None:
    P = np.array([[0.5, 0.5], [1.0, 0.0]])
    kernel = SharedKernel(P)
    before = support_shared("tv", kernel, np.array([1.0, 0.0]), 0.2)
    P[0] = [0.0, 1.0]  # the caller's array changes; the prepared kernel does not
    np.testing.assert_array_equal(support_shared("tv", kernel, np.array([1.0, 0.0]), 0.2), before)
    assert not kernel.P.flags.writeable
    assert kernel.transposed.shape == (2, 2) and not kernel.transposed.flags.writeable


# ----- 6. validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["contamination", "tv"])
@pytest.mark.parametrize("rho", [-0.1, 1.0000001, 2.0, math.nan, math.inf, -math.inf])
def test_rho_out_of_range_for_unit_interval_sets(name: str, rho: float) -> None:
    with pytest.raises(UncertaintySetError, match=r"allowed rho \[0, 1\]"):
        check_rho(name, rho)
    with pytest.raises(UncertaintySetError, match=name):
        make_set(name, rho)


@pytest.mark.parametrize("name", ["kl", "chi2"])
@pytest.mark.parametrize("rho", [-1e-9, -3.0, math.nan, math.inf])
def test_rho_out_of_range_for_divergence_balls(name: str, rho: float) -> None:
    with pytest.raises(UncertaintySetError, match=r"allowed rho >= 0"):
        make_set(name, rho)


@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan, math.inf])
def test_kl_penalty_needs_a_positive_finite_temperature(beta: float) -> None:
    with pytest.raises(UncertaintySetError, match=r"beta > 0"):
        make_set("kl-penalty", beta)


def test_rho_must_be_a_number_and_the_set_must_exist() -> None:
    with pytest.raises(UncertaintySetError, match="not a number"):
        check_rho("tv", "abc")
    with pytest.raises(UncertaintySetError, match=r"unknown uncertainty set 'wasserstein'.*contamination, tv, kl"):
        make_set("wasserstein", 0.1)
    with pytest.raises(UncertaintySetError, match="unknown uncertainty set"):
        divergence("wasserstein", np.ones(2) / 2, np.ones(2) / 2)
    assert check_rho("kl", 0) == 0.0 and isinstance(check_rho("tv", 1), float)


@pytest.mark.parametrize("name", SET_NAMES)
def test_support_refuses_bad_v(name: str) -> None:
    uset = make_set(name, 0.5)
    p0 = np.array([0.5, 0.5, 0.0])
    with pytest.raises(UncertaintySetError, match=r"V has shape \(2,\).*S=3"):
        uset.support(p0, np.zeros(2))
    with pytest.raises(UncertaintySetError, match=r"V has a non-finite value .*nan.* at index \(1,\)"):
        uset.support(p0, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(UncertaintySetError, match=r"non-finite value .*inf"):
        uset.worst_case(p0, np.array([0.0, np.inf, 1.0]))
    with pytest.raises(UncertaintySetError, match="does not broadcast"):
        uset.support(np.full((2, 3), 1 / 3), np.zeros((3, 3)))
    kernel = SharedKernel(np.full((4, 3), 1 / 3))
    with pytest.raises(UncertaintySetError, match=r"shared V has shape \(S,\) = \(3,\)"):
        uset.support_shared(kernel, np.zeros((4, 3)))
    with pytest.raises(UncertaintySetError, match="non-finite value nan at index"):
        uset.support_shared(kernel, np.array([0.0, 1.0, np.nan]))


def test_support_refuses_a_bad_p0() -> None:
    uset = make_set("tv", 0.2)
    with pytest.raises(UncertaintySetError, match=r"P0 has a negative entry"):
        uset.support(np.array([1.2, -0.2]), np.zeros(2))
    with pytest.raises(UncertaintySetError, match=r"P0 row at index \(\) sums to"):
        uset.support(np.array([0.5, 0.4]), np.zeros(2))
    with pytest.raises(UncertaintySetError, match="P0 must have shape"):
        uset.support(np.array(1.0), np.zeros(1))
    with pytest.raises(UncertaintySetError, match="P0 row at index"):
        SharedKernel(np.array([[0.5, 0.6]]))
    with pytest.raises(UncertaintySetError, match=r"shape \(S,\)"):
        primal_support("tv", np.array([0.5, 0.5]), np.zeros(3), 0.1)


def test_divergence_of_kl_penalty_is_refused_and_outside_mass_is_infinite() -> None:
    with pytest.raises(UncertaintySetError, match="penalty, not a ball"):
        divergence("kl-penalty", np.ones(2) / 2, np.ones(2) / 2)
    assert divergence("kl", np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    assert divergence("chi2", np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    assert divergence("tv", np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert divergence("contamination", np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(0.5)


def test_set_objects() -> None:
    uset = make_set("kl", 2)
    assert uset.rho == 2.0 and str(uset) == "kl(rho=2)"
    with pytest.raises(UncertaintySetError):
        sets.UncertaintySet("tv", 3.0)
    value, p = uset.primal(np.array([0.5, 0.5]), np.array([0.0, 1.0]))
    assert value == pytest.approx(float(uset.support(np.array([0.5, 0.5]), np.array([0.0, 1.0]))), abs=1e-7)
    assert uset.distance(p, np.array([0.5, 0.5])) <= 2.0 + 1e-7


@pytest.mark.parametrize("rho", [0.5, 20.0])
def test_kl_tiny_spread_value_is_finite_and_consistent(rho: float) -> None:
    """Regression: V constant up to ~1e-177 once made the KL warm start divide by zero and return NaN."""
    from reference.sets import SharedKernel

    P0 = np.array([[1.0, 1e-12, 1e-12, 1e-12]])
    P0 = P0 / P0.sum()
    V = np.array([0.0, 0.0, -5.44648814e-177, 0.0])
    u = make_set("kl", rho)
    general = float(u.support(P0, V)[0])
    shared = float(u.support_shared(SharedKernel(P0), V)[0])
    assert np.isfinite(general) and np.isfinite(shared)
    assert V.min() - 1e-190 <= general <= float(P0[0] @ V) + 1e-190
    assert abs(general - shared) <= 1e-190
    assert np.all(np.isfinite(u.worst_case(P0, V)))


# ----- 7. chi2 precision with tiny masses in p0 ----------------------------------------------------
def _chi2_sigma_decimal(p0: np.ndarray, V: np.ndarray, rho: float) -> Decimal:
    """sup_eta eta - sqrt(1+rho) sqrt(E_p0[(eta - V)_+^2]) in 60-digit decimal arithmetic, by ternary search on
    the concave dual: independent of the segment formulas, exact to far below float64 rounding."""
    p = [Decimal(float(x)) for x in p0]
    v = [Decimal(float(x)) for x in V]
    with localcontext() as ctx:
        ctx.prec = 60
        c = (1 + Decimal(float(rho))).sqrt()
        on_supp = [vi for pi, vi in zip(p, v, strict=True) if pi > 0]
        lo, spread = min(on_supp), max(on_supp) - min(on_supp)
        hi = max(on_supp) + (spread + 1) * (1 + (1 / Decimal(float(rho))).sqrt())  # eta* <= E V + sqrt(Var / rho)

        def g(eta: Decimal) -> Decimal:
            return eta - c * sum((pi * max(eta - vi, Decimal(0)) ** 2 for pi, vi in zip(p, v, strict=True))).sqrt()

        for _ in range(300):  # (2/3)^300 ~ 1e-53 of the bracket
            a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            if g(a) < g(b):
                lo = a
            else:
                hi = b
        return g((lo + hi) / 2)


def test_chi2_worst_case_with_masses_near_1e12_stays_in_the_ball() -> None:
    """Regression: the raw-moment variance A C - B^2 lost half the digits here, so the worst case had D = 50.0011."""
    p0 = np.array([1 - 2e-12, 1e-12, 1e-12])
    V = np.array([0.25, 0.0, 0.5])
    rho = 50.0
    uset = make_set("chi2", rho)
    p = uset.worst_case(p0, V)
    assert np.all(p >= 0) and abs(p.sum() - 1.0) <= 1e-12
    assert divergence("chi2", p, p0) <= rho * (1 + 1e-9)
    exact = _chi2_sigma_decimal(p0, V, rho)
    sigma = float(uset.support(p0, V))
    shared = float(uset.support_shared(SharedKernel(p0[None]), V)[0])
    # sigma ~ 0.25, whose float64 spacing is 5.6e-17: 1e-15 allows a few roundings and no lost digits (the
    # old formula was off by 2e-11 here)
    for value in (sigma, shared, float(p @ V)):
        assert abs(Decimal(value) - exact) <= Decimal("1e-15"), (value, exact)


@pytest.mark.parametrize("seed", range(4))
def test_chi2_matches_a_60_digit_dual_with_tiny_masses(seed: int) -> None:
    """Masses from 1e-13 to 1e-8 next to a heavy state: the support function keeps every digit it can."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        S = int(rng.integers(2, 7))
        p0 = 10.0 ** rng.uniform(-13, -8, S) * rng.integers(0, 3, S)
        heavy = int(rng.integers(S))
        p0[heavy] = 0.0
        p0[heavy] = 1.0 - p0.sum()
        V = rng.choice([0.0, 0.25, 0.5, 1.0, -3.0, float(rng.normal() * 5)], S)
        rho = float(rng.choice([1e-3, 0.1, 1.0, 50.0, 1e3, 1e6]))
        exact = _chi2_sigma_decimal(p0, V, rho)
        uset = make_set("chi2", rho)
        p = uset.worst_case(p0, V)
        tol = Decimal(1e-14 * (1 + np.abs(V).max()))  # ~50 roundings of the largest value; the old form was 1e-8 off
        for value in (float(uset.support(p0, V)), float(uset.support_shared(SharedKernel(p0[None]), V)[0])):
            assert abs(Decimal(value) - exact) <= tol, (p0, V, rho, value, exact)
        assert divergence("chi2", p, p0) <= rho * (1 + 1e-9), (p0, V, rho)
        assert abs(p.sum() - 1.0) <= 1e-12 and float(p @ V) == pytest.approx(float(exact), rel=0, abs=float(tol))


@pytest.mark.parametrize("rho", [1e-3, 1.0, 50.0, 1e3, 1e6])
def test_chi2_is_one_lipschitz_at_rounding_level_with_masses_near_1e9(rho: float) -> None:
    """sigma is monotone and translation-equivariant, so |sigma(V + d) - sigma(V)| <= max |d|; a 1e-12 move of one
    value may move sigma by 1e-12 plus a few roundings of O(1) numbers (the old form jumped by ~4e-9)."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        S = int(rng.integers(2, 6))
        p0 = 1e-9 * rng.integers(1, 3, S).astype(float)
        heavy = int(rng.integers(S))
        p0[heavy] = 0.0
        p0[heavy] = 1.0 - p0.sum()
        V = rng.choice([0.0, 0.25, 0.5, 1.0, float(rng.random())], S)
        kernel = SharedKernel(p0[None])
        base = (float(chi2_support(p0, V, rho)), float(support_shared("chi2", kernel, V, rho)[0]))
        for k in range(S):
            W = V.copy()
            W[k] += 1e-12
            moved = (float(chi2_support(p0, W, rho)), float(support_shared("chi2", kernel, W, rho)[0]))
            for before, after in zip(base, moved, strict=True):
                assert -1e-15 <= after - before <= 1e-12 + 1e-14, (p0, V, rho, k)


# ----- 8. kl worst case with values within rounding of the minimum ---------------------------------
def _check_kl_worst_case(p0: np.ndarray, V: np.ndarray, rho: float, p: np.ndarray, sigma: float) -> None:
    """p is a probability vector, p << p0, KL(p || p0) <= rho and p.V = sigma.

    KL slack: 1e-9 relative, plus 1e-15 absolute because KL of a rounded p cannot be evaluated more finely (each
    p_i carries a relative rounding of eps, which moves sum p log(p / p0) by ~eps; p = p0 gives KL ~ 2e-16).
    p.V: 1e-12 (1 + max |V|), a few hundred roundings of O(max |V|) numbers; merging values within 4 ulps of the
    unit range into the argmin moves sigma by <= 1e-15 (max V - min V).
    """
    assert np.all(p >= 0) and abs(p.sum() - 1.0) <= 1e-12, (p0, V, rho, p)
    assert np.all(p[p0 == 0] == 0), (p0, V, rho, p)
    kl = divergence("kl", p, p0)
    assert kl <= rho * (1 + 1e-9) + 1e-15, (p0, V, rho, p, kl)
    assert abs(float(p @ V) - sigma) <= 1e-12 * (1 + np.abs(V).max()), (p0, V, rho, float(p @ V), sigma)


def test_kl_worst_case_with_a_1e_228_gap_above_the_min_stays_in_the_ball() -> None:
    """Regression (Hypothesis): the mass at V = 8.08e-228 is a tie with the min up to rounding, but the dual
    solver chased t ~ 1e227 to separate it (t^2 Var = inf * 0), stopped short, and the worst case had KL = 0.345."""
    p0 = np.array([0.2, 0.2, 0.4, 0.2])
    V = np.array([0.0, 0.0, 8.08e-228, 1.0])
    rho = 0.3
    uset = make_set("kl", rho)
    sigma = float(uset.support(p0, V))
    p = uset.worst_case(p0, V)
    _check_kl_worst_case(p0, V, rho, p, sigma)
    assert abs(sigma) <= 1e-227  # the true value is ~2.4e-228
    assert abs(float(support_shared("kl", SharedKernel(p0[None]), V, rho)[0]) - sigma) <= 1e-227
    # the same on a translated and scaled V, and as rows of a kernel
    P = np.stack([p0, p0[::-1], np.array([0.5, 0.0, 0.5, 0.0])])
    W = 3.0 - 7.0 * V
    ps = uset.worst_case(P, W)
    sig = uset.support(P, W)
    for k in range(P.shape[0]):
        _check_kl_worst_case(P[k], W, rho, ps[k], float(sig[k]))


_TINY_GAPS = (1e-300, 1e-228, 1e-100, 1e-17, 3e-16, 1e-15, 1e-13, 1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_kl_worst_case_with_tiny_gaps_above_exact_minima(seed: int) -> None:
    """Tiny positive values next to exact minima, with rho below, near and above -log p0(argmin) (of the exact min
    and of the min with its tiny neighbours); each case alone and all of them as rows of one batched call."""
    rng = np.random.default_rng(100 + seed)
    S = 4 + seed  # one S per seed, so that the cases stack into one batched call
    cases = []
    for _ in range(40):
        p0 = rng.dirichlet(np.ones(S)) * (rng.random(S) < 0.8)
        p0[int(rng.integers(S))] += 0.05
        p0 = p0 / p0.sum()
        V = rng.choice([0.0, 0.0, 1.0, float(rng.random())], S)
        tiny = rng.random(S) < 0.4
        V[tiny] = rng.choice(_TINY_GAPS, int(tiny.sum()))
        if rng.random() < 0.5:
            V = float(rng.normal() * 5) + float(10.0 ** rng.uniform(-2, 2)) * V
        supp = p0 > 0
        vmin = V[supp].min()
        near = V - vmin <= 1e-9 * np.ptp(V)  # the min with its tiny neighbours
        caps = [-math.log(p0[supp & (vmin >= V)].sum()), -math.log(p0[supp & near].sum())]
        cap = max(float(rng.choice(caps)), 0.0)  # -log(sum) rounds to -1e-16 when all mass is at the min
        for rho in (0.3 * cap, cap * (1 - 1e-7), cap, cap * (1 + 1e-7), 2.0 * cap + 0.1, float(rng.uniform(0.01, 3))):
            cases.append((p0, V, rho))
    for p0, V, rho in cases:
        uset = make_set("kl", rho)
        _check_kl_worst_case(p0, V, rho, uset.worst_case(p0, V), float(uset.support(p0, V)))
    rho = 0.3
    P = np.stack([c[0] for c in cases])
    Vs = np.stack([c[1] for c in cases])
    ps, sig = sets.kl_worst_case(P, Vs, rho), sets.kl_support(P, Vs, rho)
    for k in range(P.shape[0]):
        _check_kl_worst_case(P[k], Vs[k], rho, ps[k], float(sig[k]))


@pytest.mark.parametrize("gap", [1e-300, 1e-228, 1e-17, 1e-14])
def test_kl_with_tiny_gaps_matches_cvxpy(gap: float) -> None:
    """sigma and the worst case's p.V against the cvxpy primal, with rho on both sides of -log p0(argmin)."""
    p0 = np.array([0.2, 0.2, 0.4, 0.2])
    V = np.array([0.0, 0.0, gap, 1.0])
    for rho in (0.1, 0.3, 1.0):
        uset = make_set("kl", rho)
        value, _ = primal_support("kl", p0, V, rho)
        sigma = float(uset.support(p0, V))
        p = uset.worst_case(p0, V)
        _check_kl_worst_case(p0, V, rho, p, sigma)
        assert sigma == pytest.approx(value, abs=CVX_TOL)
        assert float(p @ V) == pytest.approx(value, abs=CVX_TOL)


def test_chi2_worst_case_with_a_1e_228_gap_above_the_min_stays_in_the_ball() -> None:
    """Regression (proofs_check, shrunk): E_p0[(eta - V)_+^2] underflowed on the segment above V = 8.08e-228, so
    eta* sat on that value, its mass left p*, and p* = (.5, .5, 0, 0) had D = 1.5 > rho = 0.3."""
    p0 = np.array([0.2, 0.2, 0.2, 0.4])
    V = np.array([0.0, 0.0, 1.0, 8.077490469644974e-228])
    rho = 0.3
    uset = make_set("chi2", rho)
    p = uset.worst_case(p0, V)
    assert np.all(p >= 0) and abs(p.sum() - 1.0) <= 1e-12
    assert divergence("chi2", p, p0) <= rho * (1 + 1e-9)
    assert abs(float(p @ V) - float(uset.support(p0, V))) <= 1e-227


def test_kl_worst_case_attains_sigma_at_radii_near_the_rounding_floor() -> None:
    """Found by proofs_check (sigma_worst_case_attains, kl rho = 1e-15): a p0 row summing to 1 - 3e-16 added
    3e-16 to the KL that the worst case's rounding guard measured, which pulled p* a third of the way back to p0
    (|p*.V - sigma| = 1.5e-9 of the values' scale). The guard now measures KL against the normalised row."""
    from reference.sets import divergence, kl_support, kl_worst_case

    p0 = np.array([[0.5320940614114715, 0.33874520527898244, 0.12916073330954572]])
    assert p0.sum() != 1.0  # the rounding that mattered
    V = np.array([25.0867228481043, 92.30211621954273, -75.57318734886323])
    rng = np.random.default_rng(0)
    cases = [(p0, V)] + [(rng.dirichlet(np.ones(3))[None], rng.normal(size=3) * 100) for _ in range(200)]
    for P0, W in cases:
        for rho in (1e-15, 1e-13, 1e-11):
            p = kl_worst_case(P0, W, rho)
            scale = float(np.abs(W).max())
            assert abs(float((p @ W)[0] - kl_support(P0, W, rho)[0])) <= 1e-9 * scale
            assert divergence("kl", p[0], P0[0]) <= rho + 1e-9
