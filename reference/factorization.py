"""Value factorisation on tabular games: IGM/DrIGM checks, max-marginals, worst-case-kernel utilities,
the naive per-agent worst case, and projected robust value iteration for VDN and monotone mixing.

docs/theory.md section 4. Arrays: a joint action-value table ``Q`` has shape (S, n_1, ..., n_N); utilities are
a list of N arrays, agent i's of shape (S, n_i). Greedy sets are taken with an absolute tolerance ``atol``
(values within ``atol`` of the maximum count as maximal), so callers can pass
:func:`reference.bellman.tie_tolerance` of a certified solve. Plain numpy/scipy; never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import nnls

from reference import bellman
from reference.game import Game, GameError
from reference.sets import UncertaintySet

Utilities = list[np.ndarray]


# ===== shapes and greedy sets =====================================================================
def _table(Q: np.ndarray) -> np.ndarray:
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim < 2:
        raise GameError(f"a joint table has shape (S, n_1, ..., n_N) with N >= 1; got shape {Q.shape}")
    return Q


def _check_utilities(utilities: Sequence[np.ndarray], shape: tuple[int, ...] | None = None) -> Utilities:
    us = [np.asarray(u, dtype=np.float64) for u in utilities]
    if not us or any(u.ndim != 2 for u in us):
        raise GameError("utilities must be a non-empty list of (S, n_i) arrays")
    S = us[0].shape[0]
    if any(u.shape[0] != S for u in us):
        raise GameError(f"utilities disagree on S: shapes {[u.shape for u in us]}")
    if shape is not None and (shape[0], *(u.shape[1] for u in us)) != tuple(shape):
        raise GameError(f"utilities of shapes {[u.shape for u in us]} do not match a joint table of shape {shape}")
    return us


def near_argmax(Q: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Boolean table of the joint actions within `atol` of the per-state maximum; same shape as Q."""
    Q = _table(Q)
    threshold = Q.reshape(Q.shape[0], -1).max(axis=1) - atol
    return np.greater_equal(Q, threshold.reshape((-1,) + (1,) * (Q.ndim - 1)))


def greedy_masks(utilities: Sequence[np.ndarray], atol: float = 0.0) -> list[np.ndarray]:
    """Per agent, the (S, n_i) boolean mask of its actions within `atol` of its own maximum."""
    return [u >= u.max(axis=1, keepdims=True) - atol for u in _check_utilities(utilities)]


def product_mask(masks: Sequence[np.ndarray]) -> np.ndarray:
    """The joint actions whose every component is marked: boolean (S, n_1, ..., n_N)."""
    N = len(masks)
    out = np.ones((masks[0].shape[0],) + (1,) * N, dtype=bool)
    for i, m in enumerate(masks):
        shape = [m.shape[0]] + [1] * N
        shape[1 + i] = m.shape[1]
        out = out & m.reshape(shape)
    return out


def decentralised_greedy_set(utilities: Sequence[np.ndarray], atol: float = 0.0) -> np.ndarray:
    """x_i argmax_{a_i} Q_i(s, a_i) (each within `atol`), as a boolean (S, n_1, ..., n_N) table."""
    return product_mask(greedy_masks(utilities, atol))


def decentralised_greedy_actions(utilities: Sequence[np.ndarray]) -> np.ndarray:
    """Per state, each agent's smallest-index greedy action: the int64 (S, N) joint policy."""
    return np.stack([np.argmax(u, axis=1) for u in _check_utilities(utilities)], axis=1).astype(np.int64)


def argmax_is_product(Q: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """(S,) bool: the `atol`-argmax set of Q(s, .) is a Cartesian product (so IGM utilities exist)."""
    A = near_argmax(Q, atol)
    proj = [A.any(axis=tuple(j for j in range(1, A.ndim) if j != 1 + i)) for i in range(A.ndim - 1)]
    return np.all((product_mask(proj) == A).reshape(A.shape[0], -1), axis=1)


def is_igm(Q: np.ndarray, utilities: Sequence[np.ndarray], atol_q: float = 0.0, atol_u: float = 0.0) -> np.ndarray:
    """(S,) bool: the decentralised greedy set of the utilities equals the near-argmax set of Q (IGM)."""
    Q = _table(Q)
    us = _check_utilities(utilities, Q.shape)
    dec = decentralised_greedy_set(us, atol_u)
    return np.all(np.equal(dec, near_argmax(Q, atol_q)).reshape(Q.shape[0], -1), axis=1)


def drigm(
    Q_rob: np.ndarray,
    utilities: Sequence[np.ndarray],
    atol_q: float = 0.0,
    atol_u: float = 0.0,
    strict: bool = False,
) -> np.ndarray:
    """(S,) bool: every decentralised greedy joint action is robust-optimal (DrIGM); equality if `strict`."""
    Q_rob = _table(Q_rob)
    us = _check_utilities(utilities, Q_rob.shape)
    dec = decentralised_greedy_set(us, atol_u).reshape(Q_rob.shape[0], -1)
    opt = near_argmax(Q_rob, atol_q).reshape(Q_rob.shape[0], -1)
    if strict:
        return np.all(np.equal(dec, opt), axis=1)
    return np.all(~dec | opt, axis=1)


# ===== utilities from a joint table ===============================================================
def random_igm_utilities(Q: np.ndarray, atol: float, rng: np.random.Generator, scale: float = 1.0) -> Utilities:
    """Random utilities that are IGM for Q wherever its `atol`-argmax set is a product (:func:`argmax_is_product`).

    Agent i's utility at s is a random level c on the actions that appear in some near-optimal joint action and
    c minus a random gap in [0.05, 1] * scale on the others, so its greedy set is the projection of the argmax
    set, and the product of the greedy sets is the argmax set itself. Unlike :func:`max_marginals` they carry no
    other information about Q: any IGM utilities have these greedy sets.
    """
    A = near_argmax(Q, atol)
    S, N = A.shape[0], A.ndim - 1
    out: Utilities = []
    for i in range(N):
        top = A.any(axis=tuple(1 + j for j in range(N) if j != i))  # (S, n_i)
        level = rng.normal(size=(S, 1)) * scale
        gap = rng.uniform(0.05, 1.0, size=top.shape) * scale
        out.append(np.where(top, level, level - gap))
    return out


def max_marginals(Q: np.ndarray) -> Utilities:
    """Q_i^mm(s, a_i) = max_{a_-i} Q(s, a_i, a_-i) (Proposition C)."""
    Q = _table(Q)
    N = Q.ndim - 1
    return [Q.max(axis=tuple(1 + j for j in range(N) if j != i)) for i in range(N)]


def marginal_means(Q: np.ndarray) -> Utilities:
    """M_i(s, a_i) = mean_{a_-i} Q(s, a_i, a_-i)."""
    Q = _table(Q)
    N = Q.ndim - 1
    return [Q.mean(axis=tuple(1 + j for j in range(N) if j != i)) for i in range(N)]


def additive_fit(Q: np.ndarray) -> tuple[Utilities, np.ndarray]:
    """Least-squares fit of Q(s, .) by sum_i Q_i(s, a_i), per state; returns (utilities, Q_tot).

    The fit is the ANOVA main-effects model: Q_i = M_i - (N-1)/N mean_a Q (so every utility carries an
    equal share of the state's mean). It reproduces Q exactly when Q is additive.
    """
    Q = _table(Q)
    N = Q.ndim - 1
    mu = Q.reshape(Q.shape[0], -1).mean(axis=1, keepdims=True)
    us = [m - (N - 1) / N * mu for m in marginal_means(Q)]
    return us, additive_table(us)


def additive_table(utilities: Sequence[np.ndarray]) -> np.ndarray:
    """Q_tot(s, a) = sum_i Q_i(s, a_i) as an (S, n_1, ..., n_N) table."""
    us = _check_utilities(utilities)
    N = len(us)
    out = np.zeros((us[0].shape[0],) + (1,) * N)
    for i, u in enumerate(us):
        shape = [u.shape[0]] + [1] * N
        shape[1 + i] = u.shape[1]
        out = out + u.reshape(shape)
    return out


# ===== monotone mixing (tabular QMIX) =============================================================
def _chain_constraints(lengths: tuple[int, ...]) -> np.ndarray:
    """Rows d of D with (D f)_k >= 0 meaning f (flattened in C order) is non-decreasing along every axis."""
    idx = np.arange(int(np.prod(lengths))).reshape(lengths)
    rows = []
    for i in range(len(lengths)):
        lo = np.moveaxis(idx, i, 0)[:-1].ravel()
        hi = np.moveaxis(idx, i, 0)[1:].ravel()
        d = np.zeros((lo.size, idx.size))
        d[np.arange(lo.size), hi] = 1.0
        d[np.arange(lo.size), lo] = -1.0
        rows.append(d)
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, idx.size))


def _isotonic_grid(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmin_f sum w (f - y)^2 over tables non-decreasing along every axis, exactly (dual nnls)."""
    D = _chain_constraints(y.shape)
    ys, ws = y.ravel(), w.ravel()
    scale = max(1.0, float(np.max(np.abs(ys))))
    if D.shape[0] == 0 or np.all(D @ ys >= -1e-13 * scale):
        return y.copy()
    # with g = sqrt(w) f, project h = sqrt(w) y onto {g : D' g >= 0}, D' = D / sqrt(w): g = h + D'^T lam
    sw = np.sqrt(ws)
    Dp = D / sw[None, :]
    h = sw * ys
    lam, _ = nnls(Dp.T, -h, maxiter=100 * D.shape[0])
    f = (h + Dp.T @ lam) / sw
    if np.any(D @ f < -1e-9 * scale):
        raise RuntimeError("monotone projection: the non-negative least squares solve did not converge")
    return f.reshape(y.shape)


def monotone_projection(y: np.ndarray, utilities: Sequence[np.ndarray], rel_tie: float = 1e-12) -> np.ndarray:
    """Per state, the least-squares projection of y(s, .) onto tables that are monotone mixes of the utilities.

    A table qualifies when it is non-decreasing in each agent's action ordered by Q_i(s, .), and equal
    across actions with tied utilities (within `rel_tie` relative), so it equals f_s(Q_1, ..., Q_N) for a
    monotone f_s. Tied actions are merged (averaged), then the isotonic problem on the grid of distinct
    utility values is solved exactly through its dual non-negative least squares problem (scipy nnls).
    """
    y = _table(y)
    us = _check_utilities(utilities, y.shape)
    out = np.empty_like(y)
    for s in range(y.shape[0]):
        groups = []  # per agent: group index of each action, groups sorted by utility
        for u in us:
            order = np.argsort(u[s], kind="stable")
            scale = max(1.0, float(np.max(np.abs(u[s]))))
            new_group = np.concatenate([[True], np.diff(u[s][order]) > rel_tie * scale])
            gid = np.empty(len(order), dtype=np.int64)
            gid[order] = np.cumsum(new_group) - 1
            groups.append(gid)
        lengths = tuple(int(gid.max()) + 1 for gid in groups)
        cell = np.ravel_multi_index(np.ix_(*groups), lengths)  # the grid cell of every joint action
        w = np.bincount(cell.ravel(), minlength=int(np.prod(lengths))).astype(np.float64)
        ybar = np.bincount(cell.ravel(), weights=y[s].ravel(), minlength=w.size) / w
        f = _isotonic_grid(ybar.reshape(lengths), w.reshape(lengths))
        out[s] = f.ravel()[cell]
    return out


def monotone_fit(y: np.ndarray) -> tuple[Utilities, np.ndarray]:
    """Fit y by a monotone mix: utilities are the marginal means of y, Q_tot its monotone projection on them.

    When y(s, .) already is a monotone mix of some utilities, it is returned unchanged (up to rounding):
    marginal means order the actions as any such utilities do.
    """
    us = marginal_means(y)
    return us, monotone_projection(y, us)


# ===== Theorem 1 and the naive definition =========================================================
@dataclass(frozen=True)
class WorstCaseUtilities:
    """Theorem 1's utilities: max-marginal IGM utilities of Q* under the fixed kernel P_w (worst case at V)."""

    utilities: Utilities
    Q_kernel: np.ndarray
    kernel: np.ndarray
    error_bound: float


def worst_case_kernel_utilities(
    game: Game,
    uset: UncertaintySet,
    V_rob: np.ndarray,
    tol: float = 1e-10,
    Q0: np.ndarray | None = None,
    max_iter: int = 1_000_000,
) -> WorstCaseUtilities:
    """Q_i^rob := IGM utilities of the optimal joint Q under P_w, the worst-case kernel at V_rob.

    P_w's rows minimise p.V_rob over U, so Q*_{P_w} = Q*_rob when V_rob = V*_rob. The utilities are the
    max-marginals of Q*_{P_w}, which are IGM exactly when its argmax sets are products
    (see :func:`argmax_is_product`). ``error_bound`` certifies ||Q_kernel - Q*_{P_w}||_inf.
    """
    Pw = bellman.worst_case_kernel(game, uset, V_rob)
    gw = Game(P=Pw, R=game.R, gamma=game.gamma, name=f"{game.name}_worst_kernel")
    sol = bellman.value_iteration(gw, bellman.nominal_set(), tol=tol, max_iter=max_iter, Q0=Q0)
    return WorstCaseUtilities(
        utilities=max_marginals(sol.Q), Q_kernel=sol.Q, kernel=Pw, error_bound=float(sol.error_bound)
    )


def sup_support(uset: UncertaintySet, P0: np.ndarray, V: np.ndarray) -> np.ndarray:
    """The best case sup_{p in U} p.V = -sigma(-V), for every row of P0 (ball sets only)."""
    if not uset.spec.is_ball:
        raise GameError(f"{uset.name} is a penalty, not a ball: it has no best case over a set")
    return -uset.support(P0, -np.asarray(V, dtype=np.float64), validate=False)


def naive_worst_case_utilities(game: Game, uset: UncertaintySet, V: np.ndarray) -> Utilities:
    """The naive Q_i^naive(s, a_i) = inf_{P in U} Q_i^P(s, a_i) of docs/theory.md section 4, exactly.

    Here Q^P(s, a) = R(s, a) + gamma P(s, a).V is the joint value under kernel P one step ahead of the
    continuation V (with V = V*_rob, Q^{P_w} = Q*_rob), and {Q_i^P} = additive_fit(Q^P), the VDN utilities.
    Q_i^P(s, b) = sum_a c_a Q^P(s, a) with c_a > 0 where a_i = b and c_a = -(N-1)/(N |A|) elsewhere. By
    rectangularity each row of P is chosen on its own, so the infimum takes the worst case (sigma) on the
    rows with a_i = b and the best case (sup) on the others: agents take their worst cases under
    different kernels.
    """
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (game.n_states,):
        raise GameError(f"V has shape {V.shape}; expected (S,) = {(game.n_states,)}")
    g = game.gamma
    lo = game.R + g * uset.support(game.P, V, validate=False)
    hi = game.R + g * sup_support(uset, game.P, V)
    N, A = game.n_agents, game.n_joint
    out: Utilities = []
    for i in range(N):
        axes = tuple(1 + j for j in range(N) if j != i)
        n_i = game.n_actions[i]
        lo_i = lo.sum(axis=axes)  # (S, n_i): sum over the rows with a_i = b
        hi_i = hi.sum(axis=axes)
        hi_other = hi_i.sum(axis=1, keepdims=True) - hi_i  # sum over the rows with a_i != b
        out.append(n_i / A * lo_i - (N - 1) / (N * A) * (lo_i + hi_other))
    return out


def vdn_weights(n_actions: tuple[int, ...], i: int) -> np.ndarray:
    """C (n_i, A): additive_fit's utility of agent i is Q_i(s, b) = sum_a C[b, a] Q(s, a) + const(s) for flat a.

    C[b, a] = n_i / A - (N-1)/(N A) where a_i = b, and -(N-1)/(N A) elsewhere (see :func:`naive_worst_case_utilities`).
    """
    N, A = len(n_actions), int(np.prod(n_actions))
    a_i = np.unravel_index(np.arange(A), n_actions)[i]
    own = (a_i[None, :] == np.arange(n_actions[i])[:, None]).astype(float)
    return own * n_actions[i] / A - (N - 1) / (N * A)


def optimal_q_fixed_kernel(game: Game, P: np.ndarray) -> np.ndarray:
    """Q^P (S, A): the optimal joint Q of the game under the fixed kernel P (shape of game.P or (S, A, S)).

    Policy iteration with exact linear solves: it stops when no state's greedy action improves by more than
    1e-12 max(1, max|Q|), which for finite games is the exact fixed point up to rounding.
    """
    S, A = game.n_states, game.n_joint
    Pf, R = np.asarray(P, dtype=np.float64).reshape(S, A, S), game.R_flat
    pi = np.argmax(R, axis=1)
    rows = np.arange(S)
    for _ in range(100 * S * A + 100):
        V = np.linalg.solve(np.eye(S) - game.gamma * Pf[rows, pi], R[rows, pi])
        Q = R + game.gamma * (Pf @ V)
        better = Q.max(axis=1) > Q[rows, pi] + 1e-12 * max(1.0, float(np.max(np.abs(Q))))
        if not better.any():
            return Q
        pi = np.where(better, Q.argmax(axis=1), pi)
    raise RuntimeError("policy iteration under a fixed kernel did not settle")


@dataclass(frozen=True)
class NaiveBounds:
    """Bounds on the naive utilities Q_i^naive(s, b) = inf_{P in U} Q_i^P(s, b) of docs/theory.md section 4.

    Utilities are the VDN weights applied to Q^P without additive_fit's per-state constant, which cancels in every
    argmax. ``lower[i] <= Q_i^naive <= upper[i]`` (S, n_i) each; ``upper`` is +inf at states it was not computed
    for. ``certain`` (S, N) bool marks the agents whose naive greedy action ``greedy`` (S, N) is determined: its lower
    bound beats every other action's upper bound, so the exact infimum (not computed) has that unique argmax.
    """

    lower: Utilities
    upper: Utilities
    greedy: np.ndarray
    certain: np.ndarray


def optimistic_q(game: Game, uset: UncertaintySet, tol: float = 1e-10, max_iter: int = 1_000_000) -> np.ndarray:
    """sup_{P in U} Q^P(s, a) for every (s, a), (S, A): the fixed point of R + gamma sup_{p in U} p.max Q (ball sets).

    By rectangularity one best-case kernel attains the supremum at every (s, a) at once.
    """
    Q = np.zeros((game.n_states, game.n_joint))
    target = tol * (1.0 - game.gamma) / max(game.gamma, 1e-300)
    for _ in range(max_iter):
        TQ = game.R_flat + game.gamma * sup_support(uset, game.P_flat, Q.max(axis=1))
        res = float(np.max(np.abs(TQ - Q)))
        Q = TQ
        if game.gamma == 0.0 or res <= target:
            return Q
    raise RuntimeError(f"optimistic value iteration did not reach tol={tol:g} in {max_iter} sweeps")


def naive_fixed_point_bounds(
    game: Game,
    uset: UncertaintySet,
    tol: float = 1e-10,
    states: Sequence[int] | None = None,
    q_rob: np.ndarray | None = None,
) -> NaiveBounds:
    """Certified bounds on the naive utilities inf_{P in U} Q_i^P(s, b) of docs/theory.md section 4 (Q^P: fixed point).

    Q_i^P(s, b) = sum_a C[b, a] Q^P(s, a) (:func:`vdn_weights`). Lower bound: every Q^P lies between
    Q*_rob = inf_P Q^P and :func:`optimistic_q` = sup_P Q^P, so the positive terms are bounded by Q*_rob and the
    negative ones by the optimistic Q. Upper bound (only at `states`, default all): the least Q_i^P(s, b) over a
    family of kernels in U, with Q^P by :func:`optimal_q_fixed_kernel`: the nominal, worst-case (at V*_rob) and
    best-case (at the optimistic V) kernels, and for each (s, i, b) the kernel that is worst-case on the rows
    (s, a) with a_i = b, best-case on the other rows of s, and worst-case, best-case or nominal on the other states.
    Ball sets only. `q_rob` (S, A) may pass a solved Q*_rob (within `tol`).
    """
    S, A, N = game.n_states, game.n_joint, game.n_agents
    if q_rob is None:
        q_rob = bellman.value_iteration(game, uset, tol=tol).Q
    q_rob = np.asarray(q_rob, dtype=np.float64).reshape(S, A)
    q_opt = optimistic_q(game, uset, tol)
    Pf = game.P_flat
    worst = uset.worst_case(Pf, q_rob.max(axis=1), validate=False)
    best = uset.worst_case(Pf, -q_opt.max(axis=1), validate=False)
    Ws = [vdn_weights(game.n_actions, i) for i in range(N)]
    lower = [(q_rob @ np.where(W > 0, W, 0.0).T + q_opt @ np.where(W < 0, W, 0.0).T) for W in Ws]  # (S, n_i)
    upper = [np.full((S, game.n_actions[i]), np.inf) for i in range(N)]
    todo = list(range(S)) if states is None else [int(s) for s in states]
    if todo:
        for P in (Pf, worst, best):
            q = optimal_q_fixed_kernel(game, P)
            for i, W in enumerate(Ws):
                upper[i][todo] = np.minimum(upper[i][todo], q[todo] @ W.T)
    for s in todo:
        for i, W in enumerate(Ws):
            for b in range(game.n_actions[i]):
                own = W[b] > 0
                for rest in (Pf, worst, best):
                    P = rest.copy()
                    P[s] = np.where(own[:, None], worst[s], best[s])
                    upper[i][s, b] = min(upper[i][s, b], float(optimal_q_fixed_kernel(game, P)[s] @ W[b]))
    greedy = np.stack([np.argmax(lo, axis=1) for lo in lower], axis=1)
    certain = np.zeros((S, N), dtype=bool)
    for i in range(N):
        lo_star = lower[i][np.arange(S), greedy[:, i]]
        others = np.where(np.arange(game.n_actions[i])[None, :] == greedy[:, i : i + 1], -np.inf, upper[i])
        certain[:, i] = lo_star > others.max(axis=1) + tol
    return NaiveBounds(lower=lower, upper=upper, greedy=greedy.astype(np.int64), certain=certain)


# ===== projected robust value iteration ===========================================================
@dataclass(frozen=True)
class FactoredSolution:
    """Result of projected robust VI: utilities, the fitted Q_tot (S, n_1..n_N), and the last change."""

    utilities: Utilities
    Q_tot: np.ndarray
    residual: float
    iterations: int
    converged: bool


def _projected_iteration(
    game: Game,
    uset: UncertaintySet,
    fit: str,
    robustify: str,
    tol: float,
    max_iter: int,
) -> FactoredSolution:
    if robustify not in ("joint", "per_agent"):
        raise ValueError(f"robustify={robustify!r}; choose 'joint' or 'per_agent'")
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be > 0")
    S = game.n_states
    g = game.gamma
    Q_tot = np.zeros(game.R.shape)
    us: Utilities = [np.zeros((S, n)) for n in game.n_actions]
    res, it, converged = np.inf, 0, False
    while it < max_iter:
        greedy = decentralised_greedy_actions(us)
        flat = np.ravel_multi_index(tuple(greedy.T), game.n_actions)
        V_tot = Q_tot.reshape(S, -1)[np.arange(S), flat]  # Q_tot(s', a_bar')
        if robustify == "joint":
            y = bellman.robust_backup(game, uset, V_tot)
        else:  # per-agent robustification: R + gamma sum_i sigma(V_i), with V_i(s') = Q_i(s', a_bar'_i)
            y = game.R_flat.copy()
            for i, u in enumerate(us):
                y += bellman.robust_backup(game, uset, u[np.arange(S), greedy[:, i]]) - game.R_flat
        y = y.reshape(game.R.shape)
        us, Q_new = additive_fit(y) if fit == "vdn" else monotone_fit(y)
        res = float(np.max(np.abs(Q_new - Q_tot)))
        Q_tot = Q_new
        it += 1
        if g == 0.0 or res <= tol * (1.0 - g) / g:
            converged = True
            break
    return FactoredSolution(utilities=us, Q_tot=Q_tot, residual=res, iterations=it, converged=converged)


def robust_vdn_iteration(
    game: Game,
    uset: UncertaintySet,
    robustify: Literal["joint", "per_agent"] = "joint",
    tol: float = 1e-10,
    max_iter: int = 100_000,
) -> FactoredSolution:
    """Tabular robust VDN: Q_tot <- additive_fit(R + gamma sigma(V_tot')), V_tot'(s') = Q_tot(s', a_bar').

    a_bar'_i is agent i's greedy action. ``robustify="per_agent"`` uses sum_i sigma(V_i) instead (the
    wrong placement of docs/theory.md section 4). Stops when successive Q_tot differ by <= tol (1-gamma)/gamma
    (``converged``) or after `max_iter` sweeps; convergence is not guaranteed in general, since a
    projection need not be a sup-norm contraction.
    """
    return _projected_iteration(game, uset, "vdn", robustify, tol, max_iter)


def robust_monotone_mix_iteration(
    game: Game,
    uset: UncertaintySet,
    robustify: Literal["joint", "per_agent"] = "joint",
    tol: float = 1e-10,
    max_iter: int = 100_000,
) -> FactoredSolution:
    """Tabular monotone mixing (QMIX-like): Q_tot <- monotone_fit(R + gamma sigma(V_tot')).

    Same loop and stopping rule as :func:`robust_vdn_iteration`, with the projection onto monotone
    mixes of the utilities (:func:`monotone_fit`) instead of onto sums.
    """
    return _projected_iteration(game, uset, "monotone", robustify, tol, max_iter)
