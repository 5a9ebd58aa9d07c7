"""Robust Bellman tools of `reference.bellman` (docs/theory.md section 3).

1. Value iteration: the certified bound holds against a much tighter solve, the result is a fixed point,
   robust values lie below nominal ones, and kl converges to the default tolerance.
2. Policy evaluation: deterministic, stochastic joint and product policies agree when they describe
   the same policy; V^pi_rob is the value under the worst-case kernel, and no feasible kernel does worse.
3. Greedy policies of Q*_rob attain V*_rob; no policy beats it.
4. Classic games and the robust-vs-nominal game (nominal greedy (1,1) at state 0, robust greedy (0,0)).
5. Validation of policies, kernels and value vectors.
6. A residual stalled at the floating-point floor stops early (converged=False, honest bound, a warning);
   ordinary convergence is unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from reference import bellman
from reference.bellman import (
    ConvergenceWarning,
    bellman_optimality,
    evaluate_under_kernel,
    greedy_joint_actions,
    joint_policy,
    nominal_value_iteration,
    policy_evaluation,
    robust_backup,
    shared_kernel,
    tie_tolerance,
    value_iteration,
    worst_case_kernel,
)
from reference.game import Game, GameError, climbing_game, penalty_game, random_game, robust_vs_nominal_game
from reference.sets import SET_NAMES, make_set

CASES = [
    ("contamination", 0.2),
    ("tv", 0.2),
    ("tv", 0.7),
    ("kl", 0.1),
    ("kl", 1.5),
    ("chi2", 0.5),
    ("kl-penalty", 0.5),
]
BALL_CASES = [c for c in CASES if c[0] != "kl-penalty"]


@pytest.fixture(scope="module")
def game() -> Game:
    return random_game(6, (2, 2), seed=11, sparsity=0.3, gamma=0.85)


def _random_policy(g: Game, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, n, g.n_states) for n in g.n_actions], axis=1).astype(np.int64)


# ----- 1. value iteration ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "rho"), CASES)
def test_certified_bound_holds_against_a_tighter_solve(game: Game, name: str, rho: float) -> None:
    uset = make_set(name, rho)
    loose = value_iteration(game, uset, tol=1e-4)
    tight = value_iteration(game, uset, tol=1e-12)
    assert loose.error_bound <= 1e-4 and tight.error_bound <= 1e-12
    assert loose.error_bound == pytest.approx(game.gamma * loose.residual / (1 - game.gamma))
    gap = np.max(np.abs(loose.Q - tight.Q))
    assert gap <= loose.error_bound + tight.error_bound
    assert gap > 0  # the loose solve really is loose, so the comparison means something


@pytest.mark.parametrize(("name", "rho"), CASES)
def test_result_is_a_fixed_point_and_below_nominal(game: Game, name: str, rho: float) -> None:
    uset = make_set(name, rho)
    res = value_iteration(game, uset)
    TQ = bellman_optimality(game, uset, res.Q)
    assert np.max(np.abs(TQ - res.Q.reshape(TQ.shape))) <= game.gamma * res.residual + 1e-12
    np.testing.assert_allclose(res.V, res.Q.reshape(game.n_states, -1).max(axis=1))
    nominal = nominal_value_iteration(game)
    assert np.all(nominal.Q + res.error_bound + nominal.error_bound >= res.Q)
    assert np.max(nominal.Q - res.Q) > 1e-3  # and strictly below somewhere


def test_kl_value_iteration_converges_at_the_default_tolerance() -> None:
    """A stopping rule that moved t after convergence once left kl's residual stuck near 1e-5."""
    g = robust_vs_nominal_game()
    res = value_iteration(g, make_set("kl", 0.1))
    assert res.residual <= 1e-10 * (1 - g.gamma) / g.gamma
    assert res.error_bound <= 1e-10
    big = random_game(25, (2, 3), seed=2, gamma=0.9)
    for rho in (0.05, 3.0):  # 3.0 is near saturation for some rows: slow passes, then the general solver
        res = value_iteration(big, make_set("kl", rho))
        assert res.error_bound <= 1e-10


def test_robust_backup_uses_the_exact_support(game: Game) -> None:
    V = np.random.default_rng(0).normal(size=game.n_states)
    for name, rho in CASES:
        uset = make_set(name, rho)
        expected = game.R_flat + game.gamma * uset.support(game.P_flat, V)
        np.testing.assert_allclose(robust_backup(game, uset, V), expected, rtol=0, atol=1e-12)
    assert shared_kernel(game) is shared_kernel(game)  # built once per game


def test_gamma_zero_is_one_step(game: Game) -> None:
    g0 = Game(P=game.P, R=game.R, gamma=0.0)
    res = value_iteration(g0, make_set("tv", 0.3))
    assert res.iterations == 1 and res.error_bound == 0.0
    np.testing.assert_allclose(res.Q, game.R)


def test_deterministic_kernel() -> None:
    """Point-mass rows: the kl and chi2 balls hold only P0, so those values are nominal; tv/contamination are not."""
    rng = np.random.default_rng(8)
    S = 5
    P = np.eye(S)[rng.integers(0, S, size=(S, 2, 2))]
    g = Game(P=P, R=rng.normal(size=(S, 2, 2)), gamma=0.8)
    nominal = nominal_value_iteration(g)
    for name in ("kl", "chi2"):
        res = value_iteration(g, make_set(name, 2.0))
        np.testing.assert_allclose(res.Q, nominal.Q, rtol=0, atol=1e-9)
    for name in ("tv", "contamination"):
        res = value_iteration(g, make_set(name, 0.3))
        assert np.max(nominal.Q - res.Q) > 0.01
        assert np.all(res.Q <= nominal.Q + 1e-9)


# ----- 2. policy evaluation ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "rho"), CASES)
def test_policy_forms_agree(game: Game, name: str, rho: float) -> None:
    uset = make_set(name, rho)
    rng = np.random.default_rng(5)
    det = _random_policy(game, rng)
    flat = np.ravel_multi_index(tuple(det.T), game.n_actions)
    onehot = np.zeros((game.n_states, game.n_joint))
    onehot[np.arange(game.n_states), flat] = 1.0
    per_agent = [np.eye(n)[det[:, i]] for i, n in enumerate(game.n_actions)]
    values = [
        policy_evaluation(game, uset, det).V,
        policy_evaluation(game, uset, onehot).V,
        policy_evaluation(game, uset, onehot.reshape(game.n_states, *game.n_actions)).V,
        policy_evaluation(game, uset, per_agent).V,
    ]
    for v in values[1:]:
        np.testing.assert_allclose(v, values[0], rtol=0, atol=1e-9)
    # a genuinely stochastic product policy and its joint distribution
    mixed = [rng.dirichlet(np.ones(n), size=game.n_states) for n in game.n_actions]
    joint = np.einsum("sa,sb->sab", *mixed)
    np.testing.assert_allclose(
        policy_evaluation(game, uset, mixed).V, policy_evaluation(game, uset, joint).V, rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(("name", "rho"), BALL_CASES)
def test_robust_value_is_the_value_under_the_worst_case_kernel(game: Game, name: str, rho: float) -> None:
    uset = make_set(name, rho)
    rng = np.random.default_rng(9)
    for policy in (_random_policy(game, rng), [rng.dirichlet(np.ones(n), size=game.n_states) for n in game.n_actions]):
        ev = policy_evaluation(game, uset, policy)
        Pw = worst_case_kernel(game, uset, ev.V)
        assert Pw.shape == game.P.shape
        np.testing.assert_allclose(Pw.sum(axis=-1), 1.0, atol=1e-12)
        np.testing.assert_allclose(evaluate_under_kernel(game, policy, Pw), ev.V, rtol=0, atol=ev.error_bound + 1e-9)
        assert np.all(evaluate_under_kernel(game, policy) + ev.error_bound >= ev.V)


@pytest.mark.parametrize(("name", "rho"), BALL_CASES)
def test_no_feasible_kernel_gives_a_lower_value(game: Game, name: str, rho: float) -> None:
    """Kernels in U: mixtures of P0 with the worst case, and worst cases of other value vectors (boundary points)."""
    uset = make_set(name, rho)
    rng = np.random.default_rng(13)
    policy = _random_policy(game, rng)
    ev = policy_evaluation(game, uset, policy)
    Pw = worst_case_kernel(game, uset, ev.V)
    candidates = [(1 - lam) * game.P + lam * Pw for lam in (0.0, 0.3, 0.9)]
    candidates += [worst_case_kernel(game, uset, rng.normal(size=game.n_states) * 3) for _ in range(4)]
    if name == "contamination":
        Q = rng.dirichlet(np.ones(game.n_states), size=game.P.shape[:-1])
        candidates.append((1 - rho) * game.P + rho * Q)
    for P in candidates:
        for s in np.ndindex(P.shape[:-1]):  # every row really lies in the set
            assert uset.distance(P[s], game.P[s]) <= rho + 1e-7
        v = evaluate_under_kernel(game, policy, P)
        assert np.all(v >= ev.V - ev.error_bound - 1e-9)


# ----- 3. greedy policies -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "rho"), CASES)
def test_greedy_policy_attains_the_robust_optimum(game: Game, name: str, rho: float) -> None:
    uset = make_set(name, rho)
    res = value_iteration(game, uset)
    ev = policy_evaluation(game, uset, res.greedy)
    tol = (res.error_bound + ev.error_bound) * 2 / (1 - game.gamma) + 1e-9
    np.testing.assert_allclose(ev.V, res.V, rtol=0, atol=tol)
    rng = np.random.default_rng(3)
    for _ in range(5):
        other = policy_evaluation(game, uset, _random_policy(game, rng))
        assert np.all(res.V + tol >= other.V)


def test_greedy_picks_the_smallest_flat_index_among_ties() -> None:
    g = penalty_game()
    Q = np.zeros((1, 3, 3))
    Q[0, 2, 2] = Q[0, 0, 2] = 5.0
    np.testing.assert_array_equal(greedy_joint_actions(g, Q), [[0, 2]])
    Q[0, 0, 2] = 5.0 - 1e-9
    np.testing.assert_array_equal(greedy_joint_actions(g, Q), [[2, 2]])
    np.testing.assert_array_equal(greedy_joint_actions(g, Q, atol=1e-6), [[0, 2]])
    assert tie_tolerance(1e-10, Q) == pytest.approx(2e-10 + 64 * np.finfo(float).eps * 5.0)


# ----- 4. classic games ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SET_NAMES)
def test_climbing_game(name: str) -> None:
    g = climbing_game()
    res = value_iteration(g, make_set(name, 0.5))  # one state: every set gives the reward itself
    np.testing.assert_array_equal(res.greedy, [[0, 0]])
    assert res.V[0] == 11.0
    np.testing.assert_array_equal(res.Q[0], g.R[0])


def test_penalty_game_has_two_optima() -> None:
    g = penalty_game(-100.0)
    res = value_iteration(g, make_set("tv", 0.3))
    Q = res.Q[0]
    assert Q[0, 0] == Q[2, 2] == 10.0 == Q.max()
    assert np.count_nonzero(Q.max() == Q) == 2
    np.testing.assert_array_equal(res.greedy, [[0, 0]])  # the smaller flat index of the two
    discounted = value_iteration(penalty_game(-100.0, gamma=0.5), make_set("kl", 0.2))
    assert discounted.V[0] == pytest.approx(20.0, abs=1e-9)


ROBUST_CASES = [("contamination", 0.2), ("tv", 0.2), ("kl", 0.5), ("chi2", 0.5), ("kl-penalty", 1.0)]


def test_robust_vs_nominal_nominal_greedy() -> None:
    g = robust_vs_nominal_game()
    nominal = nominal_value_iteration(g)
    np.testing.assert_array_equal(nominal.greedy[0], [1, 1])


@pytest.mark.parametrize(("name", "rho"), ROBUST_CASES)
def test_robust_vs_nominal_robust_greedy_and_the_loss_of_the_nominal_policy(name: str, rho: float) -> None:
    g = robust_vs_nominal_game()
    uset = make_set(name, rho)
    robust = value_iteration(g, uset)
    np.testing.assert_array_equal(robust.greedy[0], [0, 0])
    q0 = robust.Q[0]
    assert q0[0, 0] - q0[1, 1] > 10 * robust.error_bound  # a clear decision, not a tie
    nominal_policy = nominal_value_iteration(g).greedy
    ev = policy_evaluation(g, uset, nominal_policy)
    loss = robust.V[0] - ev.V[0]
    assert loss > 0.01 * abs(robust.V[0]), f"nominal greedy loses only {loss:.4g} of {robust.V[0]:.4g}"


def test_kl_penalty_differs_from_nominal_only_for_small_enough_beta() -> None:
    """As beta grows the penalised operator tends to the nominal one, so the robust choice flips back."""
    g = robust_vs_nominal_game()
    greedy = {beta: value_iteration(g, make_set("kl-penalty", beta)).greedy[0].tolist() for beta in (1.0, 1e3)}
    assert greedy == {1.0: [0, 0], 1e3: [1, 1]}


# ----- 5. validation -------------------------------------------------------------------------------------
def test_policy_validation(game: Game) -> None:
    S = game.n_states
    with pytest.raises(GameError, match=r"deterministic policy has shape \(S, N\) = \(6, 2\); got \(6, 3\)"):
        joint_policy(game, np.zeros((S, 3), dtype=np.int64))
    bad = np.zeros((S, 2), dtype=np.int64)
    bad[4, 1] = 2
    with pytest.raises(GameError, match=r"policy action 2 of agent 1 in state 4 is outside \[0, 2\)"):
        joint_policy(game, bad)
    bad[4, 1] = -1
    with pytest.raises(GameError, match=r"action -1 of agent 1 in state 4"):
        joint_policy(game, bad)
    with pytest.raises(GameError, match=r"stochastic joint policy has shape .*got \(6, 5\)"):
        joint_policy(game, np.full((S, 5), 0.2))
    with pytest.raises(GameError, match=r"policy row at index \(1,\) sums to"):
        pol = np.full((S, 4), 0.25)
        pol[1, 0] = 0.5
        joint_policy(game, pol)
    with pytest.raises(GameError, match="policy has a negative entry"):
        pol = np.full((S, 4), 0.25)
        pol[0] = [0.75, 0.5, -0.25, 0.0]
        joint_policy(game, pol)
    with pytest.raises(GameError, match="needs 2 per-agent arrays; got 1"):
        joint_policy(game, [np.full((S, 2), 0.5)])
    with pytest.raises(GameError, match=r"policy of agent 1 has shape \(6, 3\); expected \(S, n_1\) = \(6, 2\)"):
        joint_policy(game, [np.full((S, 2), 0.5), np.full((S, 3), 1 / 3)])
    with pytest.raises(GameError, match=r"policy\[0\] row at index \(2,\) sums to"):
        p0 = np.full((S, 2), 0.5)
        p0[2] = [0.9, 0.2]
        joint_policy(game, [p0, np.full((S, 2), 0.5)])


def test_kernel_and_value_validation(game: Game) -> None:
    policy = np.zeros((game.n_states, 2), dtype=np.int64)
    with pytest.raises(GameError, match=r"kernel has shape \(6, 6\)"):
        evaluate_under_kernel(game, policy, np.eye(6))
    P = np.array(game.P)
    P[0, 0, 0] = 0.5 + P[0, 0, 0]
    with pytest.raises(GameError, match=r"kernel row at index \(0, 0, 0\) sums to"):
        evaluate_under_kernel(game, policy, P)
    with pytest.raises(GameError, match=r"V has shape \(5,\); expected \(S,\) = \(6,\)"):
        worst_case_kernel(game, make_set("tv", 0.1), np.zeros(5))
    with pytest.raises(GameError, match=r"V has shape \(6, 1\)"):
        robust_backup(game, make_set("tv", 0.1), np.zeros((6, 1)))
    with pytest.raises(GameError, match=r"Q has shape \(6, 3\)"):
        bellman_optimality(game, make_set("tv", 0.1), np.zeros((6, 3)))
    with pytest.raises(ValueError, match="tol=0 must be > 0"):
        value_iteration(game, make_set("tv", 0.1), tol=0)
    with pytest.raises(RuntimeError, match="did not reach"):
        value_iteration(game, make_set("tv", 0.1), max_iter=3)


# ----- 6. a residual stalled at the floating-point floor ---------------------------------------------
@pytest.fixture(scope="module")
def stall_game() -> Game:
    """gamma = 0.99 and values ~9e4: chi2's rounding keeps ||T Q - Q|| near 1.5e-11 to 3e-11 (about one ulp of
    max |Q|), above the 1.01e-12 that tol = 1e-10 needs."""
    return random_game(6, (2, 2), seed=1, gamma=0.99, reward_range=(0.0, 1e3))


def test_value_iteration_stops_at_a_stalled_residual_with_an_honest_bound(
    stall_game: Game, monkeypatch: pytest.MonkeyPatch
) -> None:
    uset, tol, g = make_set("chi2", 0.3), 1e-10, stall_game.gamma
    with pytest.warns(ConvergenceWarning, match=r"stalled at residual \S+ after \d+ sweeps.*tol=1e-10"):
        res = value_iteration(stall_game, uset, tol=tol)
    target = tol * (1 - g) / g
    assert not res.converged and res.residual > target  # the old loop could only have ended at max_iter (1e6)
    assert res.iterations < 6000  # ~3200 sweeps to the floor plus one stall window (459 sweeps at gamma 0.99)
    assert res.error_bound == g * res.residual / (1 - g) and res.error_bound > tol
    assert res.residual <= 4096 * np.finfo(float).eps * np.abs(res.Q).max()
    # the bound is honest: a looser, converged solve is within both certified bounds of it
    loose = value_iteration(stall_game, uset, tol=1e-6)
    assert loose.converged and np.abs(loose.Q - res.Q).max() <= loose.error_bound + res.error_bound
    # without the stall detection the same start runs to max_iter, as every robust solve here did before
    monkeypatch.setattr(bellman._StallMonitor, "stalled", lambda self, it, r, values: False)
    with pytest.raises(RuntimeError, match="did not reach tol=1e-10 in 2000 iterations"):
        value_iteration(stall_game, uset, tol=tol, max_iter=2000, Q0=res.Q)


@pytest.mark.parametrize(("name", "rho"), [("tv", 0.2), ("kl", 0.1), ("chi2", 0.5)])
def test_ordinary_convergence_is_unchanged(game: Game, name: str, rho: float) -> None:
    """Same sweeps and the same Q as the plain loop 'stop once ||T Q - Q|| <= tol (1 - gamma) / gamma'; no warning."""
    uset, tol, g = make_set(name, rho), 1e-12, game.gamma
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = value_iteration(game, uset, tol=tol)
    Q, sweeps = np.zeros((game.n_states, game.n_joint)), 0
    while True:
        TQ = bellman_optimality(game, uset, Q)
        r = float(np.max(np.abs(TQ - Q)))
        Q, sweeps = TQ, sweeps + 1
        if r <= tol * (1 - g) / g:
            break
    assert res.converged and res.iterations == sweeps and res.residual == r
    np.testing.assert_array_equal(res.Q.reshape(Q.shape), Q)


def test_stall_monitor_needs_a_full_window_at_the_floor() -> None:
    """It never fires while the residual halves, nor on a flat residual above the floor (a real failure)."""
    mon = bellman._StallMonitor(0.99)
    assert mon.window == 459  # 0.99^459 <= 1/100
    values = np.full(3, 100.0)
    assert not any(mon.stalled(it, 0.5 ** (it // 60), values) for it in range(1, 5000))  # halves every 60
    flat_high = bellman._StallMonitor(0.99)
    assert not any(flat_high.stalled(it, 1e-6, values) for it in range(1, 2000))
    flat_low = bellman._StallMonitor(0.99)
    hits = [it for it in range(1, 2000) if flat_low.stalled(it, 1e-12, values)]
    assert hits and hits[0] == 1 + 459
    assert bellman._StallMonitor(0.5).window == 20 and bellman._StallMonitor(0.0).window == 20
