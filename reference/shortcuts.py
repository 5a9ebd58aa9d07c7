"""The seed paper's target shortcuts (docs/theory.md section 5) as exact tabular operators, and their fixed points.

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
from reference.sets import make_set, sample_rule, sets_with_rule
from reference.sets.contamination import RADIUS as _CONTAMINATION
from reference.sets.tv import RADIUS as _TV
from reference.sets.tv import paper_tv_dual_loss, paper_tv_dual_minimiser, paper_tv_operator

__all__ = [
    "PAPER_SHORTCUTS",
    "paper_backup",
    "paper_contamination_backup",
    "paper_fixed_point",
    "paper_tv_backup",
    "paper_tv_dual_loss",
    "paper_tv_dual_minimiser",
    "shortcut_gap",
]

#: the sets whose module registers a "paper" sample rule
PAPER_SHORTCUTS: tuple[str, ...] = sets_with_rule("paper")


def paper_backup(game: Game, set_name: str, rho: float, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma * (the paper rule's operator)(P0(.|s,a), V) for all (s, a); shape (S, A)."""
    rule = sample_rule("paper", set_name)
    rho = make_set(set_name, rho).rho
    return game.R_flat + game.gamma * rule.operator(game.P_flat, np.asarray(V, dtype=float), rho)


def paper_contamination_backup(game: Game, rho: float, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma (1-rho) P0(.|s,a).V for all (s, a); shape (S, A)."""
    _CONTAMINATION.check(rho)
    return paper_backup(game, "contamination", rho, V)


def paper_tv_backup(game: Game, rho: float, V: np.ndarray) -> np.ndarray:
    """R(s,a) + gamma [(1-rho) g* - E_P0 relu(g* - V)] with g* = :func:`paper_tv_dual_minimiser`; shape (S, A)."""
    _TV.check(rho)
    return game.R_flat + game.gamma * paper_tv_operator(game.P_flat, np.asarray(V, dtype=float), rho)


def paper_fixed_point(
    game: Game, set_name: str, rho: float, tol: float = 1e-10, max_iter: int = 100_000
) -> SolveResult:
    """The fixed point Q = T Q of the paper shortcut for `set_name` (one of PAPER_SHORTCUTS), by iteration.

    Stops once ||T Q - Q||_inf <= tol (1 - gamma) / gamma and returns the last iterate. For an affine rule
    (contamination) T is a gamma |slope|-contraction and ``error_bound`` certifies ||Q - fixed point||_inf. The
    tv shortcut is not known to be a contraction: ``error_bound`` is then gamma res / (1 - gamma), the bound a
    gamma-contraction would give, and a RuntimeError is raised if the residual is still above the target after
    `max_iter` sweeps.
    """
    if set_name not in PAPER_SHORTCUTS:
        raise ValueError(f"no paper shortcut for set {set_name!r}; allowed one of {', '.join(PAPER_SHORTCUTS)}")
    rule = sample_rule("paper", set_name)
    g = game.gamma
    Q = np.zeros((game.n_states, game.n_joint))
    target = tol * (1.0 - g) / g if g > 0 else np.inf
    res = np.inf
    it = 0
    while True:
        TQ = paper_backup(game, set_name, rho, Q.max(axis=1))
        res = float(np.max(np.abs(TQ - Q)))
        Q = TQ
        it += 1
        if g == 0.0 or res <= target:
            break
        if it >= max_iter:
            raise RuntimeError(
                f"paper {set_name} iteration did not reach tol={tol:g} in {max_iter} sweeps (res {res:g})"
            )
    # an affine rule (slope, offset) contracts at gamma |slope|; otherwise the gamma-contraction bound is assumed
    rate = g * abs(float(rule.affine(rho, 0.0)[0])) if rule.affine is not None else g
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
