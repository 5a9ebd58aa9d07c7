"""Break one formula of reference/ at a time (monkeypatch) and check that a named property catches it.

Each mutation lists the properties expected to notice it, cheapest first; the test runs them under the ci
profile's fixed seeds with a small example budget and no shrinking, and passes as soon as one fails. A
control test runs the same properties on the unbroken reference: all of them must hold there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from proofs_check import PropertyResult, get_property, run_property
from reference import bellman, sets
from reference import factorization as fz
from reference.sets import UncertaintySet

EXAMPLES = 100  # at most this many examples per property (fewer where the ci profile runs fewer)


def _run(name: str) -> PropertyResult:
    prop = get_property(name)
    return run_property(prop, "ci", max_examples=min(EXAMPLES, prop.ci_examples), database=False, shrink=False)


Formula = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _patch_support(mp: pytest.MonkeyPatch, set_name: str, formula: Formula, fast_path_only: bool = False) -> None:
    """Replace sigma of one set by `formula(P0 (..., S), V (S,), rho)` in every entry point of the set object
    (or only in the value-iteration fast path ``support_shared``, where the reference has one)."""
    original = UncertaintySet.support

    def support(self: UncertaintySet, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        if self.name != set_name:
            return original(self, P0, V, validate)
        return formula(np.asarray(P0, dtype=float), np.asarray(V, dtype=float), self.rho)

    if not fast_path_only:
        mp.setattr(UncertaintySet, "support", support)
    if hasattr(UncertaintySet, "support_shared"):  # the value-iteration fast path, where it exists
        original_shared = UncertaintySet.support_shared

        def support_shared(self: UncertaintySet, kernel, V: np.ndarray) -> np.ndarray:
            if self.name != set_name:
                return original_shared(self, kernel, V)
            out = formula(np.asarray(kernel.P, dtype=float), np.asarray(V, dtype=float), self.rho)
            return out.reshape(kernel.out_shape)

        mp.setattr(UncertaintySet, "support_shared", support_shared)


def _contamination_sign_flipped(mp: pytest.MonkeyPatch) -> None:
    _patch_support(mp, "contamination", lambda P, V, rho: (1 - rho) * (P @ V) - rho * V.min())


def _contamination_sign_flipped_fast_path(mp: pytest.MonkeyPatch) -> None:
    if not hasattr(UncertaintySet, "support_shared"):
        pytest.skip("the reference has no separate value-iteration fast path")
    _patch_support(mp, "contamination", lambda P, V, rho: (1 - rho) * (P @ V) - rho * V.min(), fast_path_only=True)


def _contamination_max_for_min(mp: pytest.MonkeyPatch) -> None:
    _patch_support(mp, "contamination", lambda P, V, rho: (1 - rho) * (P @ V) + rho * V.max())


def _tv_rho_dropped(mp: pytest.MonkeyPatch) -> None:
    _patch_support(mp, "tv", lambda P, V, rho: P @ V)


def _kl_rho_dropped(mp: pytest.MonkeyPatch) -> None:
    # sup_beta -beta log E exp(-V/beta) without the -beta rho term: its sup is the minimum over supp(p0)
    _patch_support(mp, "kl", lambda P, V, rho: np.where(P > 0, V, np.inf).min(axis=-1))


def _chi2_wrong_radius(mp: pytest.MonkeyPatch) -> None:
    _patch_support(mp, "chi2", lambda P, V, rho: sets.chi2_support(P, V, rho / 4.0, validate=False))


def _kl_penalty_sign_flipped(mp: pytest.MonkeyPatch) -> None:
    def flipped(P: np.ndarray, V: np.ndarray, beta: float) -> np.ndarray:  # -beta log E exp(+V / beta)
        top = V.max()
        with np.errstate(divide="ignore"):
            return -top - beta * np.log(np.sum(P * np.exp((V - top) / beta), axis=-1))

    _patch_support(mp, "kl-penalty", flipped)


def _worst_case_is_nominal(mp: pytest.MonkeyPatch) -> None:
    def worst_case(self: UncertaintySet, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        P0, V = np.asarray(P0, dtype=float), np.asarray(V, dtype=float)
        return np.broadcast_to(P0, np.broadcast_shapes(P0.shape, V.shape)).copy()

    mp.setattr(UncertaintySet, "worst_case", worst_case)


def _worst_case_is_best_case(mp: pytest.MonkeyPatch) -> None:
    original = UncertaintySet.worst_case

    def worst_case(self: UncertaintySet, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        return original(self, P0, -np.asarray(V, dtype=float), validate)

    mp.setattr(UncertaintySet, "worst_case", worst_case)


def _gamma_dropped(mp: pytest.MonkeyPatch) -> None:
    def robust_backup(game, uset, V):
        return game.R_flat + uset.support(game.P_flat, np.asarray(V, dtype=float), validate=False)

    mp.setattr(bellman, "robust_backup", robust_backup)


def _min_for_max_in_optimality(mp: pytest.MonkeyPatch) -> None:
    def bellman_optimality(game, uset, Q):
        Qf = np.asarray(Q, dtype=float).reshape(game.n_states, game.n_joint)
        return bellman.robust_backup(game, uset, Qf.min(axis=1))

    mp.setattr(bellman, "bellman_optimality", bellman_optimality)


def _kernel_ignored_in_evaluation(mp: pytest.MonkeyPatch) -> None:
    original = bellman.evaluate_under_kernel
    mp.setattr(bellman, "evaluate_under_kernel", lambda game, policy, P=None: original(game, policy, None))


def _vi_bound_without_horizon(mp: pytest.MonkeyPatch) -> None:
    original = bellman.value_iteration

    def value_iteration(game, uset, *args, **kwargs):
        res = original(game, uset, *args, **kwargs)
        return replace(res, error_bound=game.gamma * res.residual)  # drops the 1 / (1 - gamma)

    mp.setattr(bellman, "value_iteration", value_iteration)


def _max_marginals_take_min(mp: pytest.MonkeyPatch) -> None:
    def max_marginals(Q: np.ndarray) -> list[np.ndarray]:
        Q = np.asarray(Q, dtype=float)
        N = Q.ndim - 1
        return [Q.min(axis=tuple(1 + j for j in range(N) if j != i)) for i in range(N)]

    mp.setattr(fz, "max_marginals", max_marginals)


def _additive_fit_loses_the_mean(mp: pytest.MonkeyPatch) -> None:
    def additive_fit(Q: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        Q = np.asarray(Q, dtype=float)
        mu = Q.reshape(Q.shape[0], -1).mean(axis=1, keepdims=True)
        us = [m - mu for m in fz.marginal_means(Q)]  # should subtract (N-1)/N of the mean, not all of it
        return us, fz.additive_table(us)

    mp.setattr(fz, "additive_fit", additive_fit)


MUTATIONS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], list[str]]] = {
    "contamination: sign of the rho term flipped": (
        _contamination_sign_flipped,
        ["sigma_translation_equivariant", "sigma_below_nominal", "q_rob_below_q_nominal"],
    ),
    "contamination: sign of the rho term flipped in the fast path only": (
        _contamination_sign_flipped_fast_path,
        ["sigma_translation_equivariant", "q_rob_below_q_nominal"],
    ),
    "contamination: max instead of min": (
        _contamination_max_for_min,
        ["sigma_below_nominal", "sigma_worst_case_attains", "q_rob_below_q_nominal"],
    ),
    "tv: rho term dropped": (_tv_rho_dropped, ["sigma_worst_case_attains", "v_pi_rob_is_min_over_kernels"]),
    "kl: rho term dropped": (_kl_rho_dropped, ["sigma_below_nominal", "sigma_worst_case_attains"]),
    "chi2: wrong radius": (_chi2_wrong_radius, ["sigma_worst_case_attains", "sigma_matches_primal"]),
    "kl-penalty: sign flipped": (_kl_penalty_sign_flipped, ["sigma_monotone", "sigma_below_nominal"]),
    "worst case returns the nominal kernel": (
        _worst_case_is_nominal,
        ["sigma_worst_case_attains", "v_pi_rob_is_min_over_kernels", "theorem_1_worst_case_kernel_utilities"],
    ),
    "worst case returns the best case": (
        _worst_case_is_best_case,
        ["sigma_worst_case_attains", "v_pi_rob_is_min_over_kernels", "theorem_1_worst_case_kernel_utilities"],
    ),
    "Bellman backup: gamma dropped": (
        _gamma_dropped,
        ["bellman_contraction", "vi_certified_bound", "q_rob_below_q_nominal"],
    ),
    "Bellman optimality: min instead of max": (
        _min_for_max_in_optimality,
        ["greedy_policy_attains_v_star", "q_rob_below_q_nominal", "theorem_a_decentralised_guarantee"],
    ),
    "evaluation under a kernel ignores the kernel": (_kernel_ignored_in_evaluation, ["v_pi_rob_is_min_over_kernels"]),
    "value iteration: error bound without 1/(1-gamma)": (_vi_bound_without_horizon, ["vi_certified_bound"]),
    "max-marginals take the min": (
        _max_marginals_take_min,
        ["proposition_c_max_marginals_unique", "theorem_1_worst_case_kernel_utilities"],
    ),
    "additive fit loses the grand mean": (
        _additive_fit_loses_the_mean,
        ["robust_vdn_projected_iteration", "theorem_b_approximate_bound"],
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_mutation_is_caught(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At least one named property fails once the formula is broken."""
    apply, names = MUTATIONS[mutation]
    apply(monkeypatch)
    outcomes = []
    for name in names:
        res = _run(name)
        outcomes.append(f"{name}: {'holds' if res.passed else 'FAILS'} ({res.examples} examples) {res.detail[:120]}")
        if not res.passed:
            return
    pytest.fail(f"mutation {mutation!r} was not caught:\n" + "\n".join(outcomes))


def test_unbroken_reference_passes_the_same_properties() -> None:
    """Control: the properties used above hold on the reference as it is, with the same budget."""
    names = sorted({n for _, props in MUTATIONS.values() for n in props})
    failed = []
    for name in names:
        res = _run(name)
        if not res.passed:
            failed.append(f"{name}: {res.detail}")
    assert not failed, "\n".join(failed)


# ===== the neural learner: break the robust target and check that the exact-expectation harness fails ==========
def _drop_m_hat(mp: pytest.MonkeyPatch) -> None:
    from reference.sets import contamination

    def continuation(ops, v, aux, m_hat, rho, shift):  # (1-rho) V only: no rho m_hat
        return (1.0 - rho) * v

    rule = replace(contamination.EXACT, continuation=continuation)
    mp.setitem(contamination.SPEC.rules, "exact", rule)  # type: ignore[index]


def _double_rho(mp: pytest.MonkeyPatch) -> None:
    from drigm import learner, targets

    mp.setattr(learner, "build_target", lambda cfg, *args: targets.RobustTarget(replace(cfg, rho=2 * cfg.rho), *args))


def _quantile_level_rho(mp: pytest.MonkeyPatch) -> None:
    from reference.sets import tv

    def pinball_loss(ops, v, eta, rho, shift):  # the rho-quantile instead of the (1-rho)-quantile
        u = v - eta
        return u * (rho - ops.indicator(u < 0, u))

    mp.setitem(tv.SPEC.rules, "exact", replace(tv.EXACT, aux_loss=pinball_loss))  # type: ignore[index]


def _learner_wired_to_none(mp: pytest.MonkeyPatch) -> None:
    from drigm import learner, targets

    mp.setattr(learner, "build_target", lambda cfg, *args: targets.RobustTarget(replace(cfg, kind="none"), *args))


LEARNER_MUTATIONS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], list[str]]] = {
    "contamination without rho * m_hat": (_drop_m_hat, ["exact-contamination"]),
    "rho doubled": (_double_rho, ["exact-contamination", "exact-tv"]),
    "tv quantile level rho instead of 1 - rho": (_quantile_level_rho, ["exact-tv"]),
    "learner wired to kind none": (_learner_wired_to_none, ["exact-contamination", "exact-tv", "exact-kl-penalty"]),
}


@pytest.mark.parametrize("mutation", sorted(LEARNER_MUTATIONS))
def test_learner_mutation_fails_the_exact_harness(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/test_exact_harness.py's check (VDN, the cheapest mixer) fails for every target the mutation touches."""
    from test_exact_harness import REL_TOL, TARGETS, run_harness

    apply, names = LEARNER_MUTATIONS[mutation]
    apply(monkeypatch)
    for name in names:
        rel = run_harness("vdn", TARGETS[name])
        assert rel > REL_TOL, f"mutation {mutation!r}: the harness still matches the reference for {name} ({rel:.2e})"
