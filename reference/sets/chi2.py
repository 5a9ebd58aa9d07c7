"""chi2: U(p0) = {p << p0 : sum (p - p0)^2 / p0 <= rho}, rho >= 0 (docs/theory.md section 2).

sigma(V) = sup_eta eta - sqrt(1 + rho) sqrt(E_p0[(eta - V)_+^2]), exact by a search over the segments of the
sorted values. The sample rule writes sqrt(w) = min_{s > 0} (w + s^2) / (2 s), so that
sigma = sup_{eta, s > 0} E_p0[eta - sqrt(1 + rho) ((eta - V)_+^2 + s^2) / (2 s)]: an expectation of a per-sample
function, jointly concave in (eta, s). Its two auxiliary outputs eta(s, a) and s(s, a) maximise it; at the
optimum s = sqrt(E[(eta - V)_+^2]) and the expected continuation is exactly sigma.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reference.sets._base import (
    Array,
    Ops,
    Radius,
    SampleRule,
    SetSpec,
    SharedKernel,
    _kl_shifted,
    _prepare,
    _rows,
    _sorted_rows,
    _unit_range,
    chi2_step,
    restricted_to_support,
    support_direction,
)

RADIUS = Radius("chi2", 0.0, math.inf, meaning="the chi-square radius")
_CHUNK_ROWS = 1024  # rows per block in the general chi2 solver


def _chi2_solve(P: np.ndarray, V: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximise g(eta) = eta - sqrt(1+rho) sqrt(E_p0[(eta - V)_+^2]) exactly, row by row, with no cancellation.

    Returns (sigma, anchor, offset): eta* = anchor + offset, anchor a value of V on the row and offset >= 0 (inf
    when eta* = inf), so eta* - V_j = (anchor - V_j) + offset keeps full relative accuracy near a value of V.
    """
    # On the segment [V_j, V_{j+1}] of the sorted values, g has a closed-form stationary point; clamping it into
    # its segment and taking the best segment gives the exact maximum. Every segment quantity is a sum of
    # non-negative terms, so no digits cancel. With A_j the p0-mass of the first j+1 sorted states, L_j =
    # sum_{i<=j} p_i (V_j - V_i) = A_j (V_j - mean_j) and M_j = sum_{i<=j} p_i (V_i - mean_j)^2:
    #   L_j = L_{j-1} + A_{j-1} (V_j - V_{j-1}),
    #   M_j = M_{j-1} + A_{j-1} p_j / A_j (V_j - mean_{j-1})^2, V_j - mean_{j-1} = (V_j - V_{j-1}) + L_{j-1} / A_{j-1}
    # (the pairwise update of Chan, Golub and LeVeque). E_p0[(eta - V)_+^2] = A_j (eta - mean_j)^2 + M_j there.
    # The raw-moment form A_j C_j - B_j^2 of A_j M_j lost about half the digits when p0 had masses near 1e-12.
    K = P.shape[0]
    if K > _CHUNK_ROWS:  # blocks of rows keep the many temporaries below in cache
        parts = [
            _chi2_solve(P[i : i + _CHUNK_ROWS], V if V.ndim == 1 else V[i : i + _CHUNK_ROWS], rho)
            for i in range(0, K, _CHUNK_ROWS)
        ]
        sigma, anchor, offset = (np.concatenate([p[k] for p in parts]) for k in range(3))
        return sigma, anchor, offset
    c2 = 1.0 + rho
    Ps, Vs, order = _sorted_rows(P, V, descending=False)
    if V.ndim == 1:  # one sorted V for every row: its gaps are a broadcast row
        Vs = V[order]
    S = Ps.shape[-1]
    A = np.cumsum(Ps, axis=-1)
    Ap = A[:, :-1]  # mass strictly below each state j >= 1
    dx = np.diff(Vs, axis=-1)  # >= 0: V_j - V_{j-1}
    L = np.zeros((K, S))
    np.cumsum(Ap * dx, axis=-1, out=L[:, 1:])
    Aq = np.where(A > 0, A, 1.0)  # A, or 1 before the first state of the support (where L = M = 0)
    ell = L / Aq  # V_j - mean_j >= 0
    r = dx + ell[:, :-1]  # V_j - mean_{j-1}
    inc = Ap * Ps[:, 1:]
    inc /= Aq[:, 1:]
    inc *= r * r
    M = np.zeros((K, S))
    np.cumsum(inc, axis=-1, out=M[:, 1:])
    gap = np.concatenate([dx, np.full((*dx.shape[:-1], 1), np.inf)], axis=-1)  # room above V_j in segment j
    denom = c2 * A - 1.0  # > 0 only where A > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.sqrt(M / (Aq * denom))
    u -= ell  # eta - V_j at the stationary point
    u = np.where(denom > 0, u, gap)  # no stationary point: g is increasing on the segment
    np.clip(u, 0.0, gap, out=u)
    unbounded = np.isinf(u[:, -1])  # only the last segment is unbounded above: there g = -inf
    u[unbounded, -1] = 0.0
    g = u + ell
    g *= g
    g *= A
    g += M
    g *= c2
    np.sqrt(g, out=g)
    np.subtract(Vs + u, g, out=g)
    g[unbounded, -1] = -np.inf
    best = np.argmax(g, axis=-1)
    rows = np.arange(K)
    Vs = np.broadcast_to(Vs, Ps.shape)
    sigma, anchor, offset = g[rows, best], Vs[rows, best], u[rows, best]
    # Where the optimal eta lies above every value on the support (always so for small rho), the maximum
    # is sigma = E V - sqrt(rho Var V) at eta = E V + sqrt(Var V / rho). Written directly, it keeps its
    # accuracy when rho is tiny, where c2 A - 1 in the last segment is swamped by rounding in A.
    last = S - 1 - np.argmax(Ps[:, ::-1] > 0, axis=-1)  # the highest state on the support
    a = A[:, -1]
    vmax, below_max = Vs[rows, last], L[rows, last] / a  # below_max = max_supp V - E V >= 0
    var = M[rows, last] / a
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        above = np.sqrt(var / rho)  # eta_top - E V
    top = (above >= below_max) | (var == 0.0)
    sigma[top] = vmax[top] - below_max[top] - np.sqrt(rho * var[top])
    anchor[top] = vmax[top]
    offset[top] = np.where(var[top] == 0.0, 0.0, above[top] - below_max[top])
    return sigma, anchor, offset


def chi2_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sup_eta eta - sqrt(1 + rho) sqrt(E_p0[(eta - V)_+^2]), exact via sorted segments."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    if rho == 0.0:
        return np.einsum("ks,...ks->k", P, Vr if Vr.ndim == 2 else Vr[None]).reshape(shape)
    return _chi2_solve(P, Vr, rho)[0].reshape(shape)


def chi2_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p*_j = p0_j (eta* - V_j)_+ / E_p0[(eta* - V)_+]; p0 restricted to argmin_{supp} V if eta* = min."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    if rho == 0.0:
        return P.copy().reshape(*shape, P.shape[-1])
    # On a unit range, with values within _MIN_TIE of a row's min merged into its argmin (see _kl_shifted): a
    # gap of 1e-228 above the min makes E_p0[(eta - V)_+^2] underflow on its segment, which put eta* on that
    # value, all its mass out of p*, and p* outside the ball. The worst case is invariant under V -> (V - c) / s.
    _, _, Vn = _unit_range(Vr)
    Vb = np.broadcast_to(Vn, P.shape)
    supp, vmin, Vp = _kl_shifted(P, Vb)
    near = supp & (Vp == 0.0) & (Vb != vmin[:, None])
    if near.any():
        Vn = Vb = np.where(near, vmin[:, None], Vb)
    _, anchor, offset = _chi2_solve(P, Vn, rho)
    # p0 (eta - V)_+ / (eta - vmin) with eta - V = (anchor - V) + offset: every weight is in [0, p0] and keeps
    # its relative accuracy; eta = inf (tiny rho) gives p* = p0, and eta = vmin the mass on argmin_supp V
    span = (anchor - vmin) + offset
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        W = P * np.maximum((anchor[:, None] - Vb) + offset[:, None], 0.0) / span[:, None]
    W = np.where(np.isinf(offset)[:, None], P, W)
    at_min = np.where(supp & (Vb == vmin[:, None]), P, 0.0)
    degenerate = ~(span > 0) | ~np.isfinite(W).all(axis=-1) | (W.sum(axis=-1) <= 0.0)
    W = np.where(degenerate[:, None], at_min, W)
    return (W / W.sum(axis=-1, keepdims=True)).reshape(*shape, P.shape[-1])


def chi2_divergence(p: np.ndarray, p0: np.ndarray) -> float:
    """sum (p - p0)^2 / p0 over supp(p0), inf where p puts mass off it."""
    on = restricted_to_support(p, p0)
    if on is None:
        return math.inf
    ps, qs = on
    return float(np.sum((ps - qs) ** 2 / qs))


def chi2_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[Any, list[Any]]:
    """min p.V subject to p << p0 and chi2(p, p0) <= rho (p = p0 at rho = 0, where conic solvers degenerate)."""
    if rho == 0.0:
        return V @ p, [p == p0]
    supp, off = np.flatnonzero(p0 > 0), np.flatnonzero(p0 <= 0)
    cons = [p[off] == 0] if off.size else []
    return V @ p, [*cons, cp.sum_squares(cp.multiply(1.0 / np.sqrt(p0[supp]), p[supp] - p0[supp])) <= rho]


def chi2_member(p0: np.ndarray, rho: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """(1 - t) p0 + t q, q on supp(p0), t at (a hair inside) the ball's boundary along that segment."""
    q = support_direction(p0, rng, boundary)
    t = chi2_step(rho, p0, q)
    return (1.0 - t) * p0 + t * q


# ===== shared-V fast path (kept: a value-iteration sweep is ~10x slower without it, bench_set_registry.py) ====
def _chi2_shared(kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """chi2 support for a shared V: E V - sqrt(rho Var V) from two matrix-vector products on the rows whose
    optimal eta lies above every value on their support (the case of :func:`_chi2_solve`'s last segment);
    the other rows go through the general segment search.
    """
    if rho == 0.0:
        return kernel.nominal(V)
    Y = V - V.mean()
    a = kernel.row_sums
    m1 = kernel.nominal(Y) / a
    m2 = kernel.nominal(Y * Y) / a
    var = np.maximum(m2 - m1 * m1, 0.0)
    vmax = -kernel.support_min(-V)[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = m1 + np.sqrt(var / rho) >= vmax - V.mean()
    # var from raw moments has an absolute error of a few eps * m2, so rows where var is tiny against m2 (a row
    # mean far from V.mean() in units of its spread) take the general, cancellation-free path: here var keeps
    # a relative error below ~1e4 eps, which moves sigma by less than ~1e-12 * sqrt(rho var)
    top &= var >= 1e-4 * m2
    sigma = np.empty(kernel.n_rows)
    sigma[top] = V.mean() + m1[top] - np.sqrt(rho * var[top])
    rest = np.flatnonzero(~top)
    if rest.size:
        sigma[rest] = _chi2_solve(kernel.P[rest], V, rho)[0]
    return sigma


# ===== sample rule ================================================================================
_S_FLOOR = 1e-150  # s* = 0 (eta* = min V on the support) is a limit: the rule's exact aux uses this instead


def _identity(ops: Ops, raw: Array, rho: float, shift: Any) -> Array:
    return raw


def _exact(ops: Ops, v: Array, aux: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    if rho == 0.0:
        return v
    eta, s = aux[..., 0], aux[..., 1]
    x = ops.relu(eta - v)
    return eta - math.sqrt(1.0 + rho) * (x * x + s * s) / (2.0 * s)


def _loss(ops: Ops, v: Array, aux: Any, rho: float, shift: Any) -> Array:
    if rho == 0.0:  # the continuation is V_hat itself: nothing to learn
        return 0.0 * aux[..., 0]
    return -_exact(ops, v, aux, None, rho, shift)


def chi2_dual_optimum(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    """(eta*, s*) per row, shape P0.shape[:-1] + (2,): the dual maximiser and s* = sqrt(E_p0[(eta* - V)_+^2])."""
    P0 = np.asarray(P0, dtype=float)
    V = np.asarray(V, dtype=float)
    P = P0.reshape(-1, P0.shape[-1])
    if rho == 0.0:
        eta = np.full(P.shape[0], np.inf)
        s = np.full(P.shape[0], np.inf)
    else:
        _, anchor, offset = _chi2_solve(P, V, RADIUS.check(rho))
        eta = anchor + offset
        s = np.sqrt(np.sum(P * np.maximum(eta[:, None] - V, 0.0) ** 2, axis=-1))
        s = np.maximum(s, _S_FLOOR)
    return np.stack([eta, s], axis=-1).reshape(*P0.shape[:-1], 2)


EXACT = SampleRule(
    formula="eta - sqrt(1 + rho) ((eta - V_hat(s'))_+^2 + s^2) / (2 s)",
    continuation=_exact,
    operator=lambda P0, V, rho: chi2_support(P0, V, rho, validate=False),
    aux_outputs=("value", "spread"),
    aux_loss=_loss,
    aux_view=_identity,
    aux_meaning="(eta, s)(s, a) maximising the expected continuation (s -> sqrt(E[(eta - V_hat)_+^2]))",
    exact_aux=lambda P0, V, rho, shift: chi2_dual_optimum(P0, V, rho),
)

SPEC = SetSpec(
    name="chi2",
    summary="chi-square ball sum (p - p0)^2 / p0 <= rho",
    radius=RADIUS,
    support=chi2_support,
    worst_case=chi2_worst_case,
    primal=chi2_primal,
    divergence=chi2_divergence,
    member=chi2_member,
    support_shared=_chi2_shared,
    test_top=50.0,
    rules={"exact": EXACT},
)
