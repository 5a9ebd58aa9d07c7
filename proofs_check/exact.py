"""Certified exact solves for the properties, built on the reference's own operators.

A robust policy-iteration warm start gets close to the fixed point in a few linear solves; the reference's
value iteration (or the reference's backup, for a fixed policy) then finishes and certifies the result, so
every returned error bound comes from the reference formulas. Iteration counts are capped at what the
gamma-contraction of docs/theory.md section 3 guarantees: an operator that is not a contraction (a broken
formula) raises :class:`ContractionError` instead of looping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reference import bellman
from reference.bellman import PolicyEvaluation, PolicyLike, SolveResult
from reference.game import Game
from reference.sets import UncertaintySet

_GUESS_ROUNDS = 60
STALL_TOL = 1e-7  # relative residual accepted once the contraction's sweep budget is spent
_ADVERSARY_ROUNDS = 60


class ContractionError(RuntimeError):
    """An iteration needed more sweeps than the gamma-contraction of the robust operator allows."""


def value_scale(game: Game) -> float:
    """max(1, max|R| / (1 - gamma)): a bound on |Q| for every policy and kernel, used to scale tolerances."""
    return max(1.0, float(np.max(np.abs(game.R))) / (1.0 - game.gamma))


def default_tol(game: Game) -> float:
    """The certified error target of the properties' solves: 1e-10 relative to :func:`value_scale`."""
    return 1e-10 * value_scale(game)


def noise_floor(game: Game) -> float:
    """Slack for rounding in sums, sorts and linear solves, relative to :func:`value_scale`."""
    return 1e-9 * value_scale(game)


def contraction_sweeps(gamma: float, first_residual: float, target: float) -> int:
    """Sweeps after which a gamma-contraction with first residual r0 has residual <= target, plus slack."""
    if gamma == 0.0 or first_residual <= target:
        return 2
    k = math.log(target / first_residual) / math.log(gamma)
    return math.ceil(k) + 25


def _adversary_values(game: Game, uset: UncertaintySet, pi: np.ndarray) -> np.ndarray:
    """V^pi_rob by policy iteration for the adversary: worst-case rows, then an exact linear solve."""
    g, S = game.gamma, game.n_states
    Pf, Rpi = game.P_flat, np.einsum("sa,sa->s", pi, game.R_flat)
    eye = np.eye(S)
    V = np.linalg.solve(eye - g * np.einsum("sa,sat->st", pi, Pf), Rpi)
    for _ in range(_ADVERSARY_ROUNDS):
        Pw = uset.worst_case(Pf, V, validate=False)
        Vn = np.linalg.solve(eye - g * np.einsum("sa,sat->st", pi, Pw), Rpi)
        done = float(np.max(V - Vn)) <= 1e-14 * value_scale(game)
        V = np.minimum(V, Vn)
        if done:
            break
    return V


def _policy_iteration_guess(game: Game, uset: UncertaintySet) -> np.ndarray | None:
    """An approximate Q*_rob (S, A) by robust policy iteration, or None when it breaks down."""
    S, A = game.n_states, game.n_joint
    try:
        with np.errstate(all="ignore"):
            Q = game.R_flat.copy()
            act = np.argmax(Q, axis=1)
            for _ in range(_GUESS_ROUNDS):
                pi = np.zeros((S, A))
                pi[np.arange(S), act] = 1.0
                V = _adversary_values(game, uset, pi)
                Q = bellman.robust_backup(game, uset, V)
                new = np.argmax(Q, axis=1)
                keep = Q[np.arange(S), act] >= Q[np.arange(S), new] - 1e-12 * value_scale(game)
                new = np.where(keep, act, new)
                if np.array_equal(new, act):
                    break
                act = new
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return None
    return Q if np.all(np.isfinite(Q)) else None


def _stalled_ok(residual: float, game: Game) -> bool:
    """A residual this small that stops shrinking is rounding in sigma, not a failure to contract."""
    return residual <= STALL_TOL * value_scale(game) * max(1.0 - game.gamma, 1e-3)


def _iterate(
    apply: Callable[[np.ndarray], np.ndarray], x: np.ndarray, game: Game, tol: float, what: str
) -> tuple[np.ndarray, float, float, int]:
    """Iterate the gamma-contraction `apply` from `x` until gamma res / (1 - gamma) <= tol, within the sweeps
    the contraction allows (a stalled tiny residual is accepted, see :func:`_stalled_ok`; a large one raises
    ContractionError naming `what`). Returns (x, last residual, its certified bound, sweeps)."""
    g = game.gamma
    target = tol * (1.0 - g) / g if g > 0 else math.inf
    nxt = apply(x)
    res = float(np.max(np.abs(nxt - x)))
    sweeps = contraction_sweeps(g, res, target)
    n, best, x = 1, res, nxt
    while g > 0 and res > target:
        if n >= sweeps:
            if _stalled_ok(best, game):
                break
            raise ContractionError(
                f"{what} needed more than the {sweeps} sweeps a {g:g}-contraction allows "
                f"(residual {res:.3g}, target {target:.3g})"
            )
        nxt = apply(x)
        res = float(np.max(np.abs(nxt - x)))
        best = min(best, res)
        x = nxt
        n += 1
    return x, res, (g * res / (1.0 - g) if g > 0 else 0.0), n


def solve(game: Game, uset: UncertaintySet, tol: float | None = None) -> SolveResult:
    """Q*_rob with ||Q - Q*_rob||_inf <= error_bound, by warm-started value iteration with the reference T.

    error_bound = gamma res / (1 - gamma) from the last sweep's residual res. It is <= tol unless sigma's own
    rounding keeps res from reaching tol (1 - gamma) / gamma; then the sweep count allowed by the
    contraction is used up and the (small) residual reached is certified instead. A residual that stays
    large raises ContractionError.
    """
    tol = default_tol(game) if tol is None else tol
    g = game.gamma
    Q = _policy_iteration_guess(game, uset) if g > 0 else None
    if Q is None:
        Q = np.zeros((game.n_states, game.n_joint))
    Q, res, bound, n = _iterate(lambda Q: bellman.bellman_optimality(game, uset, Q), Q, game, tol, "value iteration")
    return SolveResult(
        Q=Q.reshape(game.n_states, *game.n_actions),
        V=Q.max(axis=1),
        greedy=bellman.greedy_joint_actions(game, Q, atol=bellman.tie_tolerance(bound, Q)),
        residual=res,
        error_bound=bound,
        iterations=n,
    )


def solve_nominal(game: Game, tol: float | None = None) -> SolveResult:
    """Q* under the nominal kernel (the radius-0 set), certified like :func:`solve`."""
    return solve(game, bellman.nominal_set(), tol)


@dataclass(frozen=True)
class Evaluation:
    """V^pi_rob with a certified bound, the reference's Q^pi_rob table, and the sweeps used."""

    V: np.ndarray
    Q: np.ndarray
    error_bound: float
    sweeps: int


def evaluate(game: Game, uset: UncertaintySet, policy: PolicyLike, tol: float | None = None) -> Evaluation:
    """V^pi_rob with ||V - V^pi_rob||_inf <= error_bound <= tol, certified with the reference backup."""
    tol = default_tol(game) if tol is None else tol
    pi = bellman.joint_policy(game, policy)
    g = game.gamma

    def apply(V: np.ndarray) -> np.ndarray:
        return np.einsum("sa,sa->s", pi, bellman.robust_backup(game, uset, V))

    V = None
    if g > 0:
        try:
            with np.errstate(all="ignore"):
                V = _adversary_values(game, uset, pi)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            V = None
        if V is not None and not np.all(np.isfinite(V)):
            V = None
    if V is None:
        V = np.zeros(game.n_states)
    V, _, bound, n = _iterate(apply, V, game, tol, "policy evaluation")
    Q = bellman.robust_backup(game, uset, V).reshape(game.R.shape)
    return Evaluation(V=V, Q=Q, error_bound=bound, sweeps=n)


def reference_policy_evaluation(game: Game, uset: UncertaintySet, policy: PolicyLike) -> PolicyEvaluation:
    """The reference's own policy_evaluation, with its sweeps capped by the contraction bound."""
    pi = bellman.joint_policy(game, policy)
    g = game.gamma
    r0 = float(np.max(np.abs(np.einsum("sa,sa->s", pi, bellman.robust_backup(game, uset, np.zeros(game.n_states))))))
    tol = 1e-8 * value_scale(game)  # above the rounding of every closed form (chi2 loses digits near p0 ~ 0)
    target = tol * (1.0 - g) / g if g > 0 else math.inf
    sweeps = contraction_sweeps(g, max(r0, 1e-300), target)
    try:
        return bellman.policy_evaluation(game, uset, policy, tol=tol, max_iter=sweeps)
    except RuntimeError as exc:
        raise ContractionError(f"policy_evaluation needed more than the {sweeps} sweeps a contraction allows") from exc


def bellman_residual(game: Game, uset: UncertaintySet, Q: np.ndarray) -> float:
    """||T Q - Q||_inf with the reference operator; then ||Q - Q*_rob|| <= residual / (1 - gamma)."""
    Qf = np.asarray(Q, dtype=np.float64).reshape(game.n_states, game.n_joint)
    return float(np.max(np.abs(bellman.bellman_optimality(game, uset, Qf) - Qf)))


def policy_residual(game: Game, uset: UncertaintySet, policy: PolicyLike, V: np.ndarray) -> float:
    """||T^pi V - V||_inf with the reference backup; then ||V - V^pi_rob|| <= residual / (1 - gamma)."""
    pi = bellman.joint_policy(game, policy)
    return float(np.max(np.abs(np.einsum("sa,sa->s", pi, bellman.robust_backup(game, uset, V)) - V)))
