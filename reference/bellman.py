"""Robust Bellman operators, value iteration, policy evaluation and worst-case kernels.

All functions are plain functions over a validated :class:`~reference.game.Game` and an
:class:`~reference.sets.UncertaintySet` (docs/theory.md section 3). Joint actions are flattened in C order.

Policies are accepted in three forms (see :func:`joint_policy`):
- deterministic joint: integer-dtype array (S, N), one joint action per state;
- stochastic joint: float array (S, n_1, ..., n_N) or (S, A), a distribution per state;
- decentralised (product): a list of N float arrays (S, n_i), one per agent.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reference.game import Game, GameError, check_stochastic
from reference.sets import SharedKernel, UncertaintySet, make_set

PolicyLike = np.ndarray | Sequence[np.ndarray]

_STALL_FLOOR_ULPS = 4096.0  # a residual within this many ulps of max |Q| (or of 1) is at the floating-point floor
_STALL_MIN_WINDOW = 20  # fewest sweeps without a halving of the residual before a stall is declared


class ConvergenceWarning(RuntimeWarning):
    """An iteration stopped at the floating-point floor of its residual, before reaching its tolerance."""


@dataclass(frozen=True)
class SolveResult:
    """Robust optimal values. ``Q`` has shape (S, n_1..n_N); ``error_bound`` certifies ||Q - Q*_rob||_inf.

    ``converged`` is False when the residual stalled at the rounding floor; error_bound may then exceed tol.
    """

    Q: np.ndarray
    V: np.ndarray
    greedy: np.ndarray
    residual: float
    error_bound: float
    iterations: int
    converged: bool = True


@dataclass(frozen=True)
class PolicyEvaluation:
    """Robust values of a fixed policy: Q^pi_rob (S, n_1..n_N), V^pi_rob (S,), certificate, and whether tol was met."""

    Q: np.ndarray
    V: np.ndarray
    residual: float
    error_bound: float
    iterations: int
    converged: bool = True


class _StallMonitor:
    """Flags a residual that stopped shrinking at the rounding floor of a gamma-contraction.

    In exact arithmetic the residual shrinks by gamma per sweep, so it halves within ``window`` sweeps
    (gamma^window <= 1/100); a residual that does not, and sits within _STALL_FLOOR_ULPS ulps of the values,
    is rounding noise that more sweeps cannot remove.
    """

    def __init__(self, gamma: float) -> None:
        self.window = _STALL_MIN_WINDOW
        if 0.0 < gamma < 1.0:
            self.window = max(_STALL_MIN_WINDOW, math.ceil(math.log(0.01) / math.log(gamma)))
        self._anchor = math.inf  # the residual at the last halving
        self._anchor_it = 0

    def stalled(self, it: int, res: float, values: np.ndarray) -> bool:
        """True once `res` has not halved for `window` sweeps and is at the floor set by max |values|."""
        if res <= 0.5 * self._anchor:
            self._anchor, self._anchor_it = res, it
            return False
        if it - self._anchor_it < self.window:
            return False
        scale = max(1.0, float(np.max(np.abs(values)))) if values.size else 1.0
        return res <= _STALL_FLOOR_ULPS * float(np.finfo(np.float64).eps) * scale


def _warn_stall(what: str, res: float, target: float, tol: float, it: int, bound: float) -> None:
    warnings.warn(
        f"{what} stalled at residual {res:.3g} after {it} sweeps: the floating-point floor is above the "
        f"residual {target:.3g} that tol={tol:g} needs; returning converged=False with the certified "
        f"error_bound {bound:.3g}",
        ConvergenceWarning,
        stacklevel=3,
    )


def nominal_set() -> UncertaintySet:
    """The radius-0 set {P0}: robust tools with it compute ordinary (nominal) values."""
    return make_set("contamination", 0.0)


_KERNELS: weakref.WeakKeyDictionary[Game, SharedKernel] = weakref.WeakKeyDictionary()


def shared_kernel(game: Game) -> SharedKernel:
    """The game's kernel as a (S*A, S) :class:`SharedKernel`, built once per game and kept while the game lives.

    The game's arrays are read-only, so the cached layouts can never go stale.
    """
    kern = _KERNELS.get(game)
    if kern is None:
        kern = SharedKernel(game.P_flat, validate=False)
        _KERNELS[game] = kern
    return kern


def robust_backup(game: Game, uset: UncertaintySet, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma * sigma_{s,a}(V) for all (s, a), V of shape (S,); returns shape (S, A)."""
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (game.n_states,):
        raise GameError(f"V has shape {V.shape}; expected (S,) = {(game.n_states,)}")
    sig = uset.support_shared(shared_kernel(game), V)
    return game.R_flat + game.gamma * sig


def bellman_optimality(game: Game, uset: UncertaintySet, Q: np.ndarray) -> np.ndarray:
    """(T Q)(s,a) = R(s,a) + gamma sigma_{s,a}(max_a' Q(., a')); Q and the result have shape (S, A)."""
    Q = _flat_q(game, Q)
    return robust_backup(game, uset, Q.max(axis=1))


def greedy_joint_actions(game: Game, Q: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Per state, the smallest C-order joint action whose value is within `atol` of the max; (S, N)."""
    Qf = _flat_q(game, Q)
    best = Qf.max(axis=1, keepdims=True)
    flat = np.argmax(Qf >= best - atol, axis=1)
    return np.stack(np.unravel_index(flat, game.n_actions), axis=1).astype(np.int64)


def tie_tolerance(error_bound: float, Q: np.ndarray) -> float:
    """Values closer than this cannot be told apart given a certified error bound on Q."""
    scale = max(1.0, float(np.max(np.abs(Q)))) if Q.size else 1.0
    return 2.0 * error_bound + 64 * np.finfo(np.float64).eps * scale


def value_iteration(
    game: Game,
    uset: UncertaintySet,
    tol: float = 1e-10,
    max_iter: int = 1_000_000,
    Q0: np.ndarray | None = None,
) -> SolveResult:
    """Robust value iteration until ||T Q - Q||_inf <= tol (1 - gamma) / gamma.

    Guarantees ``||Q - Q*_rob||_inf <= error_bound`` with error_bound = gamma res / (1 - gamma), where res is the
    last residual ||T Q_prev - Q_prev||_inf and Q = T Q_prev; error_bound <= tol when ``converged``. A residual
    stalled at the floating-point floor stops early with converged=False and a :class:`ConvergenceWarning`.
    """
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be > 0")
    g = game.gamma
    Q = np.zeros((game.n_states, game.n_joint)) if Q0 is None else _flat_q(game, Q0).copy()
    res = np.inf
    it = 0
    target = tol * (1.0 - g) / g if g > 0 else np.inf
    monitor = _StallMonitor(g)
    converged = True
    while it < max_iter:
        TQ = bellman_optimality(game, uset, Q)
        res = float(np.max(np.abs(TQ - Q)))
        Q = TQ
        it += 1
        if g == 0.0 or res <= target:
            break
        if monitor.stalled(it, res, Q):
            converged = False
            _warn_stall("value iteration", res, target, tol, it, g * res / (1.0 - g))
            break
    else:
        raise RuntimeError(f"value iteration did not reach tol={tol:g} in {max_iter} iterations (residual {res:g})")
    bound = g * res / (1.0 - g)
    Qn = Q.reshape(game.n_states, *game.n_actions)
    return SolveResult(
        Q=Qn,
        V=Q.max(axis=1),
        greedy=greedy_joint_actions(game, Q, atol=tie_tolerance(bound, Q)),
        residual=res,
        error_bound=bound,
        iterations=it,
        converged=converged,
    )


def joint_policy(game: Game, policy: PolicyLike) -> np.ndarray:
    """Normalise any accepted policy form to a joint distribution of shape (S, A); validated, never renormalised."""
    S, acts = game.n_states, game.n_actions
    if isinstance(policy, (list, tuple)) and policy and np.ndim(policy[0]) == 2:
        if len(policy) != game.n_agents:
            raise GameError(f"a product policy needs {game.n_agents} per-agent arrays; got {len(policy)}")
        joint = np.ones((S,) + (1,) * game.n_agents)
        for i, (pi_i, n) in enumerate(zip(policy, acts, strict=True)):
            pi_i = np.asarray(pi_i, dtype=np.float64)
            if pi_i.shape != (S, n):
                raise GameError(f"policy of agent {i} has shape {pi_i.shape}; expected (S, n_{i}) = {(S, n)}")
            check_stochastic(f"policy[{i}]", pi_i)
            shape = [S] + [1] * game.n_agents
            shape[1 + i] = n
            joint = joint * pi_i.reshape(shape)
        return joint.reshape(S, game.n_joint)
    arr = np.asarray(policy)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.shape != (S, game.n_agents):
            raise GameError(f"a deterministic policy has shape (S, N) = {(S, game.n_agents)}; got {arr.shape}")
        for i, n in enumerate(acts):
            bad = (arr[:, i] < 0) | (arr[:, i] >= n)
            if bad.any():
                s = int(np.argmax(bad))
                raise GameError(f"policy action {int(arr[s, i])} of agent {i} in state {s} is outside [0, {n})")
        flat = np.ravel_multi_index(tuple(arr.T), acts)
        out = np.zeros((S, game.n_joint))
        out[np.arange(S), flat] = 1.0
        return out
    arr = arr.astype(np.float64)
    if arr.shape == (S, *acts):
        arr = arr.reshape(S, game.n_joint)
    if arr.shape != (S, game.n_joint):
        raise GameError(
            f"a stochastic joint policy has shape (S, n_1..n_N) = {(S, *acts)} or (S, A) = {(S, game.n_joint)}; "
            f"got {arr.shape}"
        )
    check_stochastic("policy", arr)
    return arr


def _flat_q(game: Game, Q: np.ndarray) -> np.ndarray:
    Q = np.asarray(Q, dtype=np.float64)
    if Q.shape == (game.n_states, *game.n_actions):
        return Q.reshape(game.n_states, game.n_joint)
    if Q.shape != (game.n_states, game.n_joint):
        raise GameError(f"Q has shape {Q.shape}; expected {(game.n_states, *game.n_actions)} or (S, A)")
    return Q


def policy_evaluation(
    game: Game,
    uset: UncertaintySet,
    policy: PolicyLike,
    tol: float = 1e-11,
    max_iter: int = 1_000_000,
    polish: bool = True,
) -> PolicyEvaluation:
    """Robust evaluation: the fixed point of V(s) = sum_a pi(a|s) [R(s,a) + gamma sigma_{s,a}(V)].

    Runs value iteration to the certified tolerance, then (``polish``) alternates exact linear
    solves under the current worst-case kernel with worst-case updates while that lowers the
    certified residual. Guarantees ||V - V^pi_rob||_inf <= error_bound, and error_bound <= tol when ``converged``;
    a residual stalled at the floating-point floor ends the sweeps early (converged=False, ConvergenceWarning).
    """
    pi = joint_policy(game, policy)
    g = game.gamma
    Rpi = np.einsum("sa,sa->s", pi, game.R_flat)
    V = np.zeros(game.n_states)

    def apply(Vx: np.ndarray) -> np.ndarray:
        return np.einsum("sa,sa->s", pi, robust_backup(game, uset, Vx))

    target = tol * (1.0 - g) / g if g > 0 else np.inf
    res = np.inf
    it = 0
    monitor = _StallMonitor(g)
    stalled = False
    while it < max_iter:
        TV = apply(V)
        res = float(np.max(np.abs(TV - V)))
        V = TV
        it += 1
        if g == 0.0 or res <= target:
            break
        if monitor.stalled(it, res, V):
            stalled = True
            break
    else:
        raise RuntimeError(f"policy evaluation did not reach tol={tol:g} in {max_iter} iterations")
    if polish and g > 0:
        for _ in range(50):
            Pw = uset.worst_case(game.P_flat, V, validate=False)
            Ppi = np.einsum("sa,sat->st", pi, Pw)
            Vn = np.linalg.solve(np.eye(game.n_states) - g * Ppi, Rpi)
            TVn = apply(Vn)
            rn = float(np.max(np.abs(TVn - Vn)))
            if not rn < res:
                break
            V, res = TVn, rn
            if res == 0.0:
                break
    bound = g * res / (1.0 - g) if g > 0 else 0.0
    converged = g == 0.0 or res <= target  # the polish may have brought a stalled residual below the target
    if stalled and not converged:
        _warn_stall("policy evaluation", res, target, tol, it, bound)
    Q = robust_backup(game, uset, V)
    return PolicyEvaluation(
        Q=Q.reshape(game.n_states, *game.n_actions),
        V=V,
        residual=res,
        error_bound=bound,
        iterations=it,
        converged=converged,
    )


def worst_case_kernel(game: Game, uset: UncertaintySet, V: np.ndarray) -> np.ndarray:
    """The rectangular kernel whose (s,a) row minimises p.V over U_{s,a}; shape (S, n_1..n_N, S)."""
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (game.n_states,):
        raise GameError(f"V has shape {V.shape}; expected (S,) = {(game.n_states,)}")
    return uset.worst_case(game.P, V, validate=False)


def evaluate_under_kernel(game: Game, policy: PolicyLike, P: np.ndarray | None = None) -> np.ndarray:
    """V^{pi,P} by an exact linear solve; P defaults to the nominal kernel and is validated otherwise."""
    pi = joint_policy(game, policy)
    if P is None:
        Pf = game.P_flat
    else:
        P = np.asarray(P, dtype=np.float64)
        if P.shape != game.P.shape and P.shape != game.P_flat.shape:
            raise GameError(f"kernel has shape {P.shape}; expected {game.P.shape}")
        check_stochastic("kernel", P)
        Pf = P.reshape(game.P_flat.shape)
    Ppi = np.einsum("sa,sat->st", pi, Pf)
    Rpi = np.einsum("sa,sa->s", pi, game.R_flat)
    return np.linalg.solve(np.eye(game.n_states) - game.gamma * Ppi, Rpi)


def nominal_value_iteration(game: Game, tol: float = 1e-10) -> SolveResult:
    """Ordinary (non-robust) optimal values: robust VI with the radius-0 set."""
    return value_iteration(game, nominal_set(), tol=tol)
