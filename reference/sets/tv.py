"""Total variation: U(p0) = {p : (1/2) ||p - p0||_1 <= rho}, rho in [0, 1] (docs/theory.md section 2).

sigma(V) moves rho of mass from the highest-valued states onto argmin_S V: one sort of V per row (CRAAM
style), and a short loop over the kernel's columns when V is shared by every row (value iteration). The exact
sample rule takes eta(s, a), the (1 - rho)-quantile of V_hat(s'), learned by a pinball loss, and m_hat; the
paper's shortcut learns a different g(s, a) by a squared loss whose minimiser is not the TV dual optimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference.sets._base import (
    Array,
    Ops,
    Radius,
    SampleRule,
    SetSpec,
    SharedKernel,
    _prepare,
    _rows,
    _sorted_rows,
    _unsort,
)

RADIUS = Radius("tv", 0.0, 1.0, meaning="the total-variation radius")
_TV_CHECK_EVERY = 8  # steps between checks for rows that are still active
_TV_FINISH_FRACTION = 1 / 32  # finish row by row once this few rows are still active


def _tv_removed(Ps: np.ndarray, rho: float) -> np.ndarray:
    """Mass removed from each state, rows sorted by decreasing V: rho taken greedily from the top.

    The last (lowest-valued) state never loses mass; it receives everything removed.
    """
    C = np.cumsum(Ps[:, :-1], axis=-1)
    capped = np.minimum(C, rho)
    removed = np.empty_like(capped)
    removed[:, 0] = capped[:, 0]
    removed[:, 1:] = capped[:, 1:] - capped[:, :-1]
    return removed


def tv_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """Exact TV support: sigma = p0.V - sum_i min(C_i, rho) (v_i - v_{i+1}) over V sorted decreasingly.

    C_i is the p0-mass of the i highest-valued states. This equals the dual
    max_eta E[min(V, eta)] - rho (eta - min V) and costs one sort of V plus O(S) per row.
    """
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    if P.shape[-1] == 1 or rho == 0.0:
        return np.einsum("ks,...ks->k", P, Vr if Vr.ndim == 2 else Vr[None]).reshape(shape)
    Ps, Vs, _ = _sorted_rows(P, Vr, descending=True)
    gaps = Vs[:, :-1] - Vs[:, 1:]
    C = np.cumsum(Ps[:, :-1], axis=-1)
    nominal = np.einsum("ks,ks->k", Ps, Vs)
    return (nominal - np.einsum("ks,ks->k", np.minimum(C, rho), gaps)).reshape(shape)


def tv_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """The TV worst case: rho of mass moved from the highest-valued states onto argmin_S V."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    S = P.shape[-1]
    if S == 1 or rho == 0.0:
        return P.copy().reshape(*shape, S)
    Ps, _, order = _sorted_rows(P, Vr, descending=True)
    removed = _tv_removed(Ps, rho)
    out = Ps.copy()
    out[:, :-1] -= removed
    out[:, -1] += removed.sum(axis=-1)
    np.maximum(out, 0.0, out=out)  # rounding only: removed <= Ps holds exactly in exact arithmetic
    return _unsort(out, order).reshape(*shape, S)


def tv_divergence(p: np.ndarray, p0: np.ndarray) -> float:
    """(1/2) ||p - p0||_1."""
    return float(0.5 * np.abs(p - p0).sum())


def tv_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[Any, list[Any]]:
    """min p.V subject to (1/2) ||p - p0||_1 <= rho."""
    return V @ p, [0.5 * cp.norm1(p - p0) <= rho]


def _tv_vertex(p0: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """A vertex of the TV ball in the simplex: mass taken greedily in a random order, given to one state."""
    S = p0.size
    j = int(rng.integers(S))
    budget = min(rho, 1.0 - p0[j])
    p = p0.copy()
    for k in rng.permutation(S):
        if k == j or budget <= 0:
            continue
        take = min(budget, p[k])
        p[k] -= take
        p[j] += take
        budget -= take
    return p


def tv_member(p0: np.ndarray, rho: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """A vertex of the ball (boundary), or a random point on the segment between two vertices."""
    p = _tv_vertex(p0, rho, rng)
    if not boundary:
        t = rng.random()
        p = t * p + (1.0 - t) * _tv_vertex(p0, rho, rng)
    return p


# ===== shared-V fast path (kept: the 5x-nominal target of benchmarks/README.md needs it) ============
def _deplete(kernel: SharedKernel, budget: np.ndarray, states: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Return sum_j gaps[j] * max(budget - sum_{i <= j} P[:, states[i]], 0) for every row, exactly.

    `budget` (K,) >= 0 is consumed in place. Loops over `states` with contiguous rows of the transposed
    kernel and stops once every budget is spent; the last few active rows are finished row by row.
    """
    K = kernel.n_rows
    PT = kernel.transposed
    acc = np.zeros(K)
    zero = np.zeros(K)
    m = len(states)
    for j in range(m):
        np.subtract(budget, PT[states[j]], out=budget)
        np.maximum(budget, zero, out=budget)
        if gaps[j] != 0.0:
            acc += gaps[j] * budget
        if (j + 1) % _TV_CHECK_EVERY == 0 and j + 1 < m:
            n_active = int(np.count_nonzero(budget))
            if n_active == 0:
                break
            if n_active <= K * _TV_FINISH_FRACTION:
                rows = np.flatnonzero(budget)
                sub = kernel.P[rows][:, states[j + 1 :]]
                np.cumsum(sub, axis=1, out=sub)
                np.subtract(budget[rows, None], sub, out=sub)
                np.maximum(sub, 0.0, out=sub)
                acc[rows] += sub @ gaps[j + 1 :]
                break
    return acc


def _tv_shared(kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """TV support for a shared V: the same formula as :func:`tv_support`, looping over the fewer end of V.

    With V sorted decreasingly, sigma = p0.V - sum_j min(C_j, rho) g_j (C_j the top mass, g_j the gaps).
    For rho <= 1/2 the loop runs over the top states until rho is spent; otherwise over the bottom
    states until 1 - rho is spent, using min(C_j, rho) = C_j - (a - rho - D_{j+1})_+ with a the row sum.
    """
    S = kernel.n_states
    if S == 1 or rho == 0.0:
        return kernel.nominal(V)
    order = np.argsort(-V, kind="stable")
    vs = V[order]
    gaps = vs[:-1] - vs[1:]
    if rho <= 0.5:
        budget = np.full(kernel.n_rows, rho)
        base = kernel.nominal(V) - rho * (vs[0] - vs[-1])
        return base + _deplete(kernel, budget, order[:-1], gaps)
    budget = np.maximum(kernel.row_sums - rho, 0.0)
    base = kernel.row_sums * vs[-1]
    return base + _deplete(kernel, budget, order[:0:-1], gaps[::-1].copy())


# ===== sample rules ===============================================================================
def tv_quantile(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    """eta* per row: the smallest value v of V with P0(V > v) <= rho, a (1 - rho)-quantile of V under p0."""
    P0 = np.asarray(P0, dtype=float)
    V = np.asarray(V, dtype=float)
    order = np.argsort(V, kind="stable")
    Vs = V[order]
    above = 1.0 - np.cumsum(P0[..., order], axis=-1)  # P(V > Vs[j]), overstated inside a run of ties
    first = np.argmax(above <= rho + 1e-12, axis=-1)
    return Vs[first]


def _exact(ops: Ops, v: Array, eta: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    return ops.minimum(v, eta) - rho * (eta - m_hat)


def _pinball(ops: Ops, v: Array, eta: Any, rho: float, shift: Any) -> Array:
    u = v - eta  # l(u) = u ((1 - rho) - 1[u < 0]): its conditional minimiser is the (1 - rho)-quantile
    return u * ((1.0 - rho) - ops.indicator(u < 0, u))


def _paper(ops: Ops, v: Array, g: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    return (1.0 - rho) * g - ops.relu(g - v)


def _paper_loss(ops: Ops, v: Array, g: Any, rho: float, shift: Any) -> Array:
    f = ops.relu(g - v) - (1.0 - rho) * g
    return f * f


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
    RADIUS.check(rho)
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


def paper_tv_operator(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    """(1 - rho) g* - E_P0 relu(g* - V) per row, g* = :func:`paper_tv_dual_minimiser`: the shortcut in expectation."""
    P0 = np.asarray(P0, dtype=float)
    V = np.asarray(V, dtype=float)
    g = paper_tv_dual_minimiser(P0, V, rho)
    return (1.0 - rho) * g - np.sum(P0 * np.maximum(g[..., None] - V, 0.0), axis=-1)


EXACT = SampleRule(
    formula="min(V_hat(s'), eta) - rho (eta - m_hat)",
    continuation=_exact,
    operator=lambda P0, V, rho: tv_support(P0, V, rho, validate=False),
    aux_outputs=("value",),
    aux_loss=_pinball,
    aux_meaning="eta(s, a), the (1 - rho)-quantile of V_hat(s'), by a pinball loss",
    exact_aux=lambda P0, V, rho, shift: tv_quantile(P0, V, rho),
    needs_m_hat=True,
)
PAPER = SampleRule(
    formula="(1 - rho) g - relu(g - V_hat(s'))  (paper shortcut)",
    continuation=_paper,
    operator=paper_tv_operator,
    aux_outputs=("value",),
    aux_loss=_paper_loss,
    aux_meaning="the paper's g(s, a), by (relu(g - V_hat) - (1 - rho) g)^2 (not the TV dual optimum)",
    exact_aux=lambda P0, V, rho, shift: paper_tv_dual_minimiser(P0, V, rho),
)

SPEC = SetSpec(
    name="tv",
    summary="total variation ball (1/2) ||p - p0||_1 <= rho",
    radius=RADIUS,
    support=tv_support,
    worst_case=tv_worst_case,
    primal=tv_primal,
    divergence=tv_divergence,
    member=tv_member,
    test_top=1.0,
    support_shared=_tv_shared,
    rules={"exact": EXACT, "paper": PAPER},
)
