"""The seed paper's target shortcuts (THEORY.md section 5) as exact tabular operators, and their fixed points.

The neural learners offer ``kind = "paper"`` targets only to reproduce the paper. In expectation over
s' ~ P0(.|s,a), with their auxiliary estimate at its optimum, they are these Bellman-like operators:

- paper contamination: (T Q)(s,a) = R(s,a) + gamma (1-rho) P0(.|s,a).V, i.e. nominal play with the smaller
  discount gamma (1-rho). Its fixed point Q_p relates to the exact contamination fixed point Q*_rob by
  Q*_rob = Q_p + gamma rho min_s V_p(s) / (1 - gamma) (same greedy actions, values shifted by a constant).
- paper tv: (T Q)(s,a) = R(s,a) + gamma [(1-rho) g*(s,a) - E_P0[relu(g*(s,a) - V)]], where g*(s,a) minimises the
  paper's dual loss E_P0[(relu(g - V) - (1-rho) g)^2] (:func:`paper_tv_dual_minimiser`), which is not the TV
  dual optimum.

numpy only, like the rest of :mod:`reference`.
"""

from __future__ import annotations

import numpy as np

from reference.bellman import SolveResult, greedy_joint_actions, tie_tolerance, value_iteration
from reference.game import Game
from reference.sets import check_rho, make_set

__all__ = [
    "PAPER_SHORTCUTS",
    "paper_contamination_backup",
    "paper_fixed_point",
    "paper_tv_backup",
    "paper_tv_dual_loss",
    "paper_tv_dual_minimiser",
    "shortcut_gap",
]

PAPER_SHORTCUTS: tuple[str, ...] = ("contamination", "tv")


def paper_tv_dual_loss(P0: np.ndarray, V: np.ndarray, g: np.ndarray, rho: float) -> np.ndarray:
    """E_P0[(relu(g - V) - (1-rho) g)^2] per row: P0 (..., S), V (S,), g broadcastable to P0.shape[:-1]."""
    g = np.asarray(g, dtype=float)[..., None]
    f = np.maximum(g - V, 0.0) - (1.0 - rho) * g
    return np.sum(P0 * f * f, axis=-1)


def paper_tv_dual_minimiser(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    """The smallest global minimiser g* of :func:`paper_tv_dual_loss` for each row of P0 (..., S); shape P0.shape[:-1].

    The loss is a piecewise quadratic in g with breaks at the values V(s'); on the segment where exactly the
    states J (V < g) are active it is sum_J p (rho g - V)^2 + sum_notJ p (1-rho)^2 g^2. Every segment's stationary
    point (clipped to the segment) and every break is a candidate; the loss is not convex (it has concave kinks),
    so all candidates are compared and the smallest minimiser is returned. Exact up to rounding.
    """
    P0 = np.asarray(P0, dtype=float)
    V = np.asarray(V, dtype=float)
    check_rho("tv", rho)
    order = np.argsort(V, kind="stable")
    Vs = V[order]
    Ps = P0[..., order]
    cum_p = np.concatenate([np.zeros((*Ps.shape[:-1], 1)), np.cumsum(Ps, axis=-1)], axis=-1)  # P_J, segment k
    cum_pv = np.concatenate([np.zeros((*Ps.shape[:-1], 1)), np.cumsum(Ps * Vs, axis=-1)], axis=-1)
    lo = np.concatenate([[-np.inf], Vs])  # segment k: lo[k] <= g <= hi[k], J = the k smallest values
    hi = np.concatenate([Vs, [np.inf]])
    denom = rho**2 * cum_p + (1.0 - rho) ** 2 * (1.0 - cum_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(denom > 0, rho * cum_pv / np.where(denom > 0, denom, 1.0), 0.0)
    stat = np.clip(stat, lo, hi)
    stat = np.where(np.isfinite(stat), stat, 0.0)
    cands = np.concatenate([np.broadcast_to(Vs, (*Ps.shape[:-1], Vs.size)), stat], axis=-1)
    cands = np.sort(cands, axis=-1)
    losses = paper_tv_dual_loss(P0[..., None, :], V, cands, rho)
    best = losses.min(axis=-1, keepdims=True)
    scale = max(1.0, float(np.max(np.abs(V)))) ** 2 if V.size else 1.0
    first = np.argmax(losses <= best + 1e-12 * scale, axis=-1)
    return np.take_along_axis(cands, first[..., None], axis=-1)[..., 0]


def paper_contamination_backup(game: Game, rho: float, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma (1-rho) P0(.|s,a).V for all (s, a); shape (S, A)."""
    check_rho("contamination", rho)
    return game.R_flat + game.gamma * (1.0 - rho) * (game.P_flat @ np.asarray(V, dtype=float))


def paper_tv_backup(game: Game, rho: float, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma [(1-rho) g* - E_P0 relu(g* - V)] with g* = :func:`paper_tv_dual_minimiser`; shape (S, A)."""
    V = np.asarray(V, dtype=float)
    P = game.P_flat
    g = paper_tv_dual_minimiser(P, V, rho)
    cont = (1.0 - rho) * g - np.sum(P * np.maximum(g[..., None] - V, 0.0), axis=-1)
    return game.R_flat + game.gamma * cont


def paper_fixed_point(
    game: Game, set_name: str, rho: float, tol: float = 1e-10, max_iter: int = 100_000
) -> SolveResult:
    """The fixed point Q = T Q of the paper shortcut for `set_name` ("contamination" or "tv"), by iteration.

    Stops once ||T Q - Q||_inf <= tol (1 - gamma) / gamma and returns the last iterate. For contamination T is a
    gamma (1-rho)-contraction and ``error_bound`` certifies ||Q - fixed point||_inf. The tv shortcut is not known to
    be a contraction: ``error_bound`` is then gamma res / (1 - gamma), the bound a gamma-contraction would give,
    and a RuntimeError is raised if the residual is still above the target after `max_iter` sweeps.
    """
    if set_name not in PAPER_SHORTCUTS:
        raise ValueError(f"no paper shortcut for set {set_name!r}; allowed one of {', '.join(PAPER_SHORTCUTS)}")
    backup = paper_contamination_backup if set_name == "contamination" else paper_tv_backup
    g = game.gamma
    Q = np.zeros((game.n_states, game.n_joint))
    target = tol * (1.0 - g) / g if g > 0 else np.inf
    res = np.inf
    it = 0
    while True:
        TQ = backup(game, rho, Q.max(axis=1))
        res = float(np.max(np.abs(TQ - Q)))
        Q = TQ
        it += 1
        if g == 0.0 or res <= target:
            break
        if it >= max_iter:
            raise RuntimeError(
                f"paper {set_name} iteration did not reach tol={tol:g} in {max_iter} sweeps (res {res:g})"
            )
    rate = g * (1.0 - rho) if set_name == "contamination" else g
    bound = rate * res / (1.0 - rate) if rate < 1.0 else np.inf
    return SolveResult(
        Q=Q.reshape(game.n_states, *game.n_actions),
        V=Q.max(axis=1),
        greedy=greedy_joint_actions(game, Q, atol=tie_tolerance(bound, Q)),
        residual=res,
        error_bound=bound,
        iterations=it,
    )


def shortcut_gap(game: Game, set_name: str, rho: float) -> dict[str, float]:
    """How far the paper shortcut's fixed point Q_p lies from Q*_rob of the exact set at the same rho.

    Returns ``max_abs`` = ||Q_p - Q*_rob||_inf, ``relative`` = that over max(1, ||Q*_rob||_inf), and
    ``greedy_differs`` (1.0 if some state's greedy joint action differs, else 0.0).
    """
    q_p = paper_fixed_point(game, set_name, rho).Q.reshape(game.n_states, -1)
    q_r = value_iteration(game, make_set(set_name, rho)).Q.reshape(game.n_states, -1)
    gap = float(np.max(np.abs(q_p - q_r)))
    return {
        "max_abs": gap,
        "relative": gap / max(1.0, float(np.max(np.abs(q_r)))),
        "greedy_differs": float(np.any(q_p.argmax(axis=1) != q_r.argmax(axis=1))),
    }
