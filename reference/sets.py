"""Uncertainty sets: exact support functions, worst-case distributions and cvxpy primal checks.

For a nominal distribution p0 over S next states and a value vector V, the support function is
``sigma(V) = inf_{p in U(p0)} p . V`` (THEORY.md section 2). Every closed form here is vectorised:
``P0`` has shape ``(..., S)`` and ``V`` has shape ``(S,)`` (shared by every row, the Bellman case)
or a shape that broadcasts against ``P0``. The result has shape ``P0.shape[:-1]``.

The sets, and where to find each formula:
- contamination: :func:`contamination_support`, :func:`contamination_worst_case`
- tv (total variation): :func:`tv_support`, :func:`tv_worst_case` (one sort per V, CRAAM style)
- kl: :func:`kl_support`, :func:`kl_worst_case` (1-D dual in the inverse temperature)
- chi2: :func:`chi2_support`, :func:`chi2_worst_case` (piecewise closed form over sorted V)
- kl-penalty (penalised, temperature beta held in ``rho``): :func:`kl_penalty_support`
- :func:`primal_support` solves the defining convex program with cvxpy, for verification only.

Value iteration applies sigma to one V shared by every (s, a) row. :class:`SharedKernel` prepares a kernel
once (transposed and logarithmic layouts) and :func:`support_shared` is the fast path for that case: a
short loop over the top (or bottom) states for tv, one exact exponential pass per row after a shared
warm start for kl, two matrix-vector products for most chi2 rows. It equals the general functions up to
rounding; tests compare the two, and both with cvxpy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SET_NAMES: tuple[str, ...] = ("contamination", "tv", "kl", "chi2", "kl-penalty")
RHO_RANGES: dict[str, tuple[float, float]] = {
    "contamination": (0.0, 1.0),
    "tv": (0.0, 1.0),
    "kl": (0.0, math.inf),
    "chi2": (0.0, math.inf),
    "kl-penalty": (0.0, math.inf),  # rho is the temperature beta here, and must be > 0
}
_KL_TOL = 1e-13  # relative accuracy of KL(q_t || p0) = rho in the general solver
_KL_MAX_ITER = 200
_CHUNK_ROWS = 1024  # rows per block in the general chi2 solver
_KL_TINY_RHO = 1e-12  # below this radius KL's rounding floor matters; a small-rho expansion is exact to O(rho^1.5)


class UncertaintySetError(ValueError):
    """An uncertainty set name, radius or argument is invalid."""


def check_rho(set_name: str, rho: float) -> float:
    """Return `rho` as a float if it lies in the set's allowed range, else raise naming that range."""
    if set_name not in RHO_RANGES:
        raise UncertaintySetError(f"unknown uncertainty set {set_name!r}; choose one of {', '.join(SET_NAMES)}")
    try:
        r = float(rho)
    except (TypeError, ValueError) as exc:
        raise UncertaintySetError(f"rho={rho!r} is not a number") from exc
    lo, hi = RHO_RANGES[set_name]
    if set_name == "kl-penalty":
        if math.isnan(r) or r <= 0 or math.isinf(r):
            raise UncertaintySetError(
                f"rho={r!r} is out of range for set 'kl-penalty': "
                "rho is the temperature beta, allowed beta > 0 (finite)"
            )
        return r
    if math.isnan(r) or r < lo or r > hi or math.isinf(r):
        allowed = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g} (finite)"
        raise UncertaintySetError(f"rho={r!r} is out of range for set {set_name!r}: allowed rho {allowed}")
    return r


def _prepare(P0: np.ndarray, V: np.ndarray, validate: bool) -> tuple[np.ndarray, np.ndarray]:
    P0 = np.asarray(P0, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if P0.ndim < 1 or P0.shape[-1] < 1:
        raise UncertaintySetError(f"P0 must have shape (..., S) with S >= 1; got {P0.shape}")
    if V.ndim < 1 or V.shape[-1] != P0.shape[-1]:
        raise UncertaintySetError(f"V has shape {V.shape}; its last axis must be S={P0.shape[-1]} like P0 {P0.shape}")
    if validate:
        from reference.game import GameError, check_finite, check_stochastic

        try:
            check_stochastic("P0", P0)
            check_finite("V", V)
        except GameError as exc:
            raise UncertaintySetError(str(exc)) from exc
        try:
            np.broadcast_shapes(P0.shape, V.shape)
        except ValueError as exc:
            raise UncertaintySetError(f"V shape {V.shape} does not broadcast against P0 shape {P0.shape}") from exc
    return P0, V


def _rows(P0: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Flatten to (K, S) rows; V stays (S,) when it is shared by all rows."""
    out_shape = np.broadcast_shapes(P0.shape, V.shape)[:-1]
    S = P0.shape[-1]
    P = np.broadcast_to(P0, (*out_shape, S)).reshape(-1, S)
    Vr = V if V.ndim == 1 else np.broadcast_to(V, (*out_shape, S)).reshape(-1, S)
    return P, Vr, out_shape


def _sorted_rows(P: np.ndarray, V: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row's (p, V) by V. One argsort when V is shared. Returns (Ps, Vs, order)."""
    key = -V if descending else V
    if V.ndim == 1:
        order = np.argsort(key, kind="stable")
        return P[:, order], np.broadcast_to(V[order], P.shape), order
    order = np.argsort(key, axis=-1, kind="stable")
    return np.take_along_axis(P, order, axis=-1), np.take_along_axis(V, order, axis=-1), order


def _unsort(Ps: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(Ps)
    if order.ndim == 1:
        out[:, order] = Ps
    else:
        np.put_along_axis(out, order, Ps, axis=-1)
    return out


# ===== contamination ==============================================================================
def contamination_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sigma(V) = (1 - rho) p0.V + rho min_S V, exactly (min over all states, not only supp p0)."""
    rho = check_rho("contamination", rho)
    P0, V = _prepare(P0, V, validate)
    return (1.0 - rho) * np.einsum("...s,...s->...", P0, V) + rho * V.min(axis=-1)


def contamination_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p* = (1 - rho) p0 + rho delta_{argmin V} (the first argmin on ties)."""
    rho = check_rho("contamination", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    out = (1.0 - rho) * P
    idx = np.argmin(Vr, axis=-1)
    if Vr.ndim == 1:
        out[:, idx] += rho
    else:
        out[np.arange(out.shape[0]), idx] += rho
    return out.reshape(*shape, P.shape[-1])


# ===== total variation ============================================================================
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
    rho = check_rho("tv", rho)
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
    rho = check_rho("tv", rho)
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


# ===== KL =========================================================================================
_MIN_TIE = 4.0 * float(np.finfo(np.float64).eps)  # unit-range gaps above a row's min below this are ties (kl, chi2)


def _kl_shifted(P: np.ndarray, Vb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(supp, vmin, Vp): the support, min of V over it, and Vp = V - vmin there (0 off it), for unit-range V.

    Values within _MIN_TIE (4 ulps of the unit range) of the row's min are merged into its argmin class
    (Vp = 0). They are ties up to the rounding of V -> (V - c) / s, and telling them apart would need inverse
    temperatures t ~ 1 / gap that overflow (a gap of 1e-228 needs t ~ 1e228, and t^2 Var is then inf * 0).
    Every quantity (sigma, t, the worst case) is then exact for the merged V, which is within _MIN_TIE of V
    in the sup norm; sigma is 1-Lipschitz in that norm, so sigma moves by at most _MIN_TIE * (max V - min V).
    """
    supp = P > 0
    vmin = np.where(supp, Vb, np.inf).min(axis=-1)
    Vp = np.where(supp, Vb - vmin[:, None], 0.0)  # >= 0 on the support
    Vp[Vp <= _MIN_TIE] = 0.0
    return supp, vmin, Vp


def _kl_eval(P: np.ndarray, Vp: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For q_t proportional to p0 exp(-t Vp), Vp >= 0 on the support: (log M, E_q[Vp], Var_q[Vp], KL(q_t || p0)).

    M = sum p0 exp(-t Vp). Where M is close to sum p0 (small t), log M is formed as
    log(sum p0) + log1p(sum p0 expm1(-t Vp) / sum p0), so that log M, and hence KL ~ t^2 Var / 2, keep their
    relative accuracy instead of drowning in rounding.
    """
    X = -t[:, None] * Vp
    W = P * np.exp(X)
    M = W.sum(axis=-1)
    a = P.sum(axis=-1)
    D = np.einsum("ks,ks->k", P, np.expm1(X))  # M - a, accurate when small
    near = -0.5 * a < D
    logM = np.log(M)
    logM[near] = np.log(a[near]) + np.log1p(D[near] / a[near])
    mean = np.einsum("ks,ks->k", W, Vp) / M
    var = np.maximum(np.einsum("ks,ks->k", W, (Vp - mean[:, None]) ** 2) / M, 0.0)
    return logM, mean, var, -t * mean - logM


def _kl_solve(P: np.ndarray, V: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve the KL dual row by row. Returns (sigma, t, vmin_supp, saturated) with t = 1/beta*.

    saturated rows have rho >= -log p0(argmin over supp), where sigma = min_{supp p0} V (beta -> 0).
    Other rows solve KL(q_t || p0) = rho for t, q_t proportional to p0 exp(-t (V - vmin)), by Newton on
    log KL against log t (exact for the small-t law KL ~ t^2 Var / 2) inside a bracket that bisection
    keeps, to relative accuracy 1e-13 or until the bracket cannot shrink. sigma is the dual objective at
    that t, a valid lower bound at any t and second-order accurate in the error of t.
    """
    K = P.shape[0]
    Vb = np.broadcast_to(V, P.shape)
    supp, vmin, Vp = _kl_shifted(P, Vb)
    at_min = supp & (Vp == 0.0)
    p_min = np.where(at_min, P, 0.0).sum(axis=-1)
    nominal = np.einsum("ks,ks->k", P, Vb)
    spread = Vp.max(axis=-1)
    sigma = nominal.copy()
    t = np.zeros(K)
    saturated = np.zeros(K, dtype=bool)
    if rho == 0.0:
        return sigma, t, vmin, saturated
    with np.errstate(divide="ignore"):
        cap = -np.log(p_min)
    saturated = (rho >= cap) | (spread == 0.0)
    sigma[saturated] = vmin[saturated]
    active = np.flatnonzero(~saturated)
    if active.size == 0:
        return sigma, t, vmin, saturated
    Pa, Va = P[active], Vp[active]
    n = active.size
    _, mean0, var0, _ = _kl_eval(Pa, Va, np.zeros(n))
    if rho <= _KL_TINY_RHO:
        # below the rounding floor of KL: sigma = E V - sqrt(2 rho k2) + rho k3 / (3 k2) + O(rho^1.5), where
        # k2, k3 are the central moments of V under p0 (valid while t = sqrt(2 rho / k2) is << 1 / spread)
        k3 = np.einsum("ks,ks->k", Pa, (Va - mean0[:, None]) ** 3) / Pa.sum(axis=-1)
        ok = np.sqrt(2.0 * rho / var0) * spread[active] <= 1e-2
        rows = active[ok]
        sigma[rows] = vmin[rows] + mean0[ok] - np.sqrt(2.0 * rho * var0[ok]) + rho * k3[ok] / (3.0 * var0[ok])
        t[rows] = np.sqrt(2.0 * rho / var0[ok])
        if ok.all():
            return sigma, t, vmin, saturated
        active, Pa, Va, mean0, var0 = active[~ok], Pa[~ok], Va[~ok], mean0[~ok], var0[~ok]
        n = active.size
    # start from the small-rho law t = sqrt(2 rho / Var_p0), capped where that law cannot hold
    with np.errstate(divide="ignore", over="ignore"):
        tt = np.minimum(np.sqrt(2.0 * rho / var0), 1e3 / spread[active])
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    lr = math.log(rho)
    todo = np.arange(n)
    for _ in range(_KL_MAX_ITER):
        _, mean, var, kl = _kl_eval(Pa[todo], Va[todo], tt[todo])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            g = np.log(kl) - lr  # monotone increasing in t
            below = g < 0
            lo[todo[below]] = tt[todo[below]]
            hi[todo[~below]] = tt[todo[~below]]
            step = g * kl / (tt[todo] ** 2 * var)  # Newton step in log t: g / (d log KL / d log t)
            nxt = tt[todo] * np.exp(-np.clip(step, -5.0, 5.0))
        l_, h_ = lo[todo], hi[todo]
        inside = np.isfinite(nxt) & (nxt > l_) & (nxt < h_)
        bisect = np.where(np.isfinite(h_), np.where(l_ > 0, np.sqrt(l_ * h_), 0.25 * h_), 4.0 * l_)
        nxt = np.where(inside, nxt, bisect)
        done = (np.abs(g) <= _KL_TOL) | (np.isfinite(h_) & (h_ - l_ <= 4 * np.finfo(np.float64).eps * h_))
        done |= inside & (np.abs(nxt - tt[todo]) <= 4 * np.finfo(np.float64).eps * tt[todo])
        tt[todo[~done]] = nxt[~done]
        todo = todo[~done]
        if todo.size == 0:
            break
    _, mean, _, kl = _kl_eval(Pa, Va, tt)
    # vmin - (log M + rho) / t, written so that rounding in log M is not divided by a small t
    sigma[active] = vmin[active] + mean + (kl - rho) / tt
    t[active] = tt
    return sigma, t, vmin, saturated


def _unit_range(V: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(c, s, (V - c) / s) with c = min V and s = max V - min V (1 if V is constant).

    The KL ball's support is translation-equivariant and positively homogeneous, and its worst case is
    invariant under V -> (V - c) / s, so solving on a unit range avoids inverse temperatures that
    overflow when V's spread is tiny (or underflow when it is huge).
    """
    c = float(V.min())
    s = float(V.max()) - c
    if not (s > 0.0 and math.isfinite(s) and math.isfinite(1.0 / s)):
        s = 1.0
    return c, s, (V - c) / s


def kl_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sup_{beta > 0} -beta log E_p0[exp(-V / beta)] - beta rho; min over supp(p0) when beta* -> 0."""
    rho = check_rho("kl", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    c, s, Vn = _unit_range(Vr)
    return (c + s * _kl_solve(P, Vn, rho)[0]).reshape(shape)


def kl_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p* proportional to p0 exp(-V / beta*); p0 restricted to argmin_{supp} V when saturated."""
    rho = check_rho("kl", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    _, _, Vn = _unit_range(Vr)
    _, t, _, saturated = _kl_solve(P, Vn, rho)
    supp, _, Vp = _kl_shifted(P, np.broadcast_to(Vn, P.shape))  # the same merged ties as the solver's
    W = P * np.exp(-t[:, None] * Vp)
    sat_w = np.where(supp & (Vp == 0.0), P, 0.0)
    W = np.where(saturated[:, None], sat_w, W)
    p = W / W.sum(axis=-1, keepdims=True)
    # Guard against rounding (KL = rho is met to ~1e-13 relative, and a rounded p moves KL by ~eps): where
    # KL(p || p0) > rho, mix in the normalised p0, whose KL is k0 = -log sum p0 (0 up to row-sum rounding).
    # KL is convex, so a = (kl - rho) / (kl - k0) gives KL(mix) <= rho; a is ~1e-13 when it is used, and it
    # moves p.V by a (p0.V - p.V).
    a0 = P.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.einsum("ks,ks->k", p, np.where(p > 0, np.log(p / np.where(supp, P, 1.0)), 0.0))
        k0 = -np.log(a0)
        a = np.where(kl > rho, np.clip((kl - rho) / (kl - k0), 0.0, 1.0), 0.0)
    if a.any():
        p = p + a[:, None] * (P / a0[:, None] - p)
    return p.reshape(*shape, P.shape[-1])


# ===== KL penalty (fixed temperature) =============================================================
def _kl_penalty_parts(P: np.ndarray, V: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Shifted Gibbs weights W = p0 exp(-(V - c)/beta) and c = min_{supp} V (so W <= p0, no overflow)."""
    Vb = np.broadcast_to(V, P.shape)
    c = np.where(P > 0, Vb, np.inf).min(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):  # off the support the exponent may overflow; masked
        W = np.where(P > 0, P * np.exp(-(Vb - c[:, None]) / beta), 0.0)
    return W, c


def kl_penalty_support(P0: np.ndarray, V: np.ndarray, beta: float, validate: bool = True) -> np.ndarray:
    """inf_p p.V + beta KL(p || p0) = -beta log E_p0[exp(-V / beta)], computed with a stable shift."""
    beta = check_rho("kl-penalty", beta)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    W, c = _kl_penalty_parts(P, Vr, beta)
    return (c - beta * np.log(W.sum(axis=-1))).reshape(shape)


def kl_penalty_worst_case(P0: np.ndarray, V: np.ndarray, beta: float, validate: bool = True) -> np.ndarray:
    """The minimiser of p.V + beta KL(p || p0): p* proportional to p0 exp(-V / beta)."""
    beta = check_rho("kl-penalty", beta)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    W, _ = _kl_penalty_parts(P, Vr, beta)
    return (W / W.sum(axis=-1, keepdims=True)).reshape(*shape, P.shape[-1])


# ===== chi-square =================================================================================
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
    rho = check_rho("chi2", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    if rho == 0.0:
        return np.einsum("ks,...ks->k", P, Vr if Vr.ndim == 2 else Vr[None]).reshape(shape)
    return _chi2_solve(P, Vr, rho)[0].reshape(shape)


def chi2_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p*_j = p0_j (eta* - V_j)_+ / E_p0[(eta* - V)_+]; p0 restricted to argmin_{supp} V if eta* = min."""
    rho = check_rho("chi2", rho)
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


# ===== shared-V fast path (the Bellman case) ======================================================
# One V for every row lets each support function work on a transposed copy of the kernel: the TV
# dual becomes a short loop over the highest (or lowest) valued states, and the KL dual needs one
# exact exponential pass per row after a shared-temperature warm start. Results agree with the
# general functions above to rounding (the tests check this and compare both with cvxpy).
_TV_CHECK_EVERY = 8  # steps between checks for rows that are still active
_TV_FINISH_FRACTION = 1 / 32  # finish row by row once this few rows are still active
_KL_GRID = 5  # shared inverse temperatures in the warm-start grid, a factor _KL_GRID_RATIO apart
_KL_GRID_RATIO = 2.0**0.75
_KL_MAX_PASSES = 6  # exact per-row passes before the remaining rows go to the general solver
_KL_CHUNK = 512  # rows per block in a per-row pass (keeps the block in cache)
_KL_REL_TOL = 1e-14  # accepted model error, relative to 1 + max |V|
_EPS = float(np.finfo(np.float64).eps)


class SharedKernel:
    """A fixed kernel of shape (..., S), prepared once for support functions whose V is shared by all rows.

    Guarantees: the kernel is validated (when asked) and held read-only; derived layouts (transposed,
    logarithm, float32 copy) are built lazily, once, and never change, so results equal those of the
    general functions up to rounding. This is the per-game workspace of value iteration.
    """

    def __init__(self, P0: np.ndarray, validate: bool = True) -> None:
        P = np.asarray(P0, dtype=np.float64)
        if P.ndim < 1 or P.shape[-1] < 1:
            raise UncertaintySetError(f"P0 must have shape (..., S) with S >= 1; got {P.shape}")
        if validate:
            from reference.game import GameError, check_stochastic

            try:
                check_stochastic("P0", P)
            except GameError as exc:
                raise UncertaintySetError(str(exc)) from exc
        self.out_shape: tuple[int, ...] = tuple(P.shape[:-1])
        flat = P.reshape(-1, P.shape[-1])
        if flat.flags.writeable or not flat.flags.c_contiguous:
            flat = np.array(flat, order="C")  # a private copy: the cache must never go stale
            flat.setflags(write=False)
        self.P: np.ndarray = flat
        self._cache: dict[str, np.ndarray] = {}

    @property
    def n_rows(self) -> int:
        """K, the number of rows (distributions) in the kernel."""
        return int(self.P.shape[0])

    @property
    def n_states(self) -> int:
        """S, the number of successor states."""
        return int(self.P.shape[1])

    def _get(self, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        arr = self._cache.get(key)
        if arr is None:
            arr = build()
            arr.setflags(write=False)
            self._cache[key] = arr
        return arr

    @property
    def transposed(self) -> np.ndarray:
        """P as (S, K), C-contiguous: the successor state's column of every row is one contiguous row."""
        return self._get("PT", lambda: np.ascontiguousarray(self.P.T))

    @property
    def transposed32(self) -> np.ndarray:
        """A float32 copy of `transposed`, used only for the KL warm start (never for a result)."""
        return self._get("PT32", lambda: self.transposed.astype(np.float32))

    @property
    def log_kernel(self) -> np.ndarray:
        """log P (K, S), with -inf where P is 0."""

        def build() -> np.ndarray:
            with np.errstate(divide="ignore"):
                return np.log(self.P)

        return self._get("logP", build)

    @property
    def row_sums(self) -> np.ndarray:
        """The sum of every row (1 within the validation tolerance)."""
        return self._get("rowsum", lambda: self.P.sum(axis=-1))

    def nominal(self, V: np.ndarray) -> np.ndarray:
        """p0.V for every row, shape (K,)."""
        return V @ self.transposed

    def support_min(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: min of V over supp(p0), and the p0-mass of the states attaining it (ties included)."""
        K = self.n_rows
        PT = self.transposed
        vmin = np.empty(K)
        pmin = np.zeros(K)
        found = np.zeros(K, dtype=bool)
        order = np.argsort(V, kind="stable")
        vals = V[order]
        starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
        ends = np.r_[starts[1:], vals.size]
        for lo, hi in zip(starts, ends, strict=True):
            mass = PT[order[lo]].copy() if hi - lo == 1 else PT[order[lo:hi]].sum(axis=0)
            new = (mass > 0) & ~found
            vmin[new] = vals[lo]
            pmin[new] = mass[new]
            found |= new
            if found.all():
                break
        return vmin, pmin


def _shared_v(kernel: SharedKernel, V: np.ndarray) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (kernel.n_states,):
        raise UncertaintySetError(f"V has shape {V.shape}; a shared V has shape (S,) = {(kernel.n_states,)}")
    if not np.isfinite(V).all():
        idx = int(np.flatnonzero(~np.isfinite(V))[0])
        raise UncertaintySetError(f"V has a non-finite value {float(V[idx])!r} at index ({idx},)")
    return V


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


def _kl_warm_start(
    kernel: SharedKernel, V: np.ndarray, rho: float, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starting inverse temperatures and brackets (t0, lo, hi) for the KL dual of `rows`.

    KL(q_t || p0) is evaluated for every row at a few shared t (one float32 matrix product), and log t
    is interpolated (cubic Hermite in log KL) between the two grid points around rho. This is a
    heuristic only: the exact passes that follow test every result against their own brackets.
    """
    G = _KL_GRID
    # the scale of V: its std, or its range where the std underflows (V constant up to ~1e-160 offsets)
    scale = float(V.std())
    if not (scale > 0.0 and math.isfinite(1.0 / scale)):
        scale = float(V.max() - V.min())
    if not (scale > 0.0 and math.isfinite(1.0 / scale)):
        scale = 1.0
    tg = math.sqrt(2.0 * rho) / scale * _KL_GRID_RATIO ** (np.arange(G) - (G - 1) / 2)
    vmin = V.min()
    Y = V - V.mean()
    E = np.exp(-np.outer(tg, V - vmin))
    B = np.concatenate([E, E * Y, E * Y * Y]).astype(np.float32)
    PT32 = kernel.transposed32
    Mg = B @ PT32 if rows.size == kernel.n_rows else B @ PT32[:, rows]
    n = rows.size
    t0 = np.full(n, tg[(G - 1) // 2])
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        M0 = Mg[:G]
        f = (-tg[:, None]).astype(np.float32) * (Mg[G : 2 * G] / M0 + np.float32(V.mean() - vmin)) - np.log(M0)
        ok = (M0 > 1e-30).all(axis=0) & np.isfinite(f).all(axis=0)
        n_le = np.count_nonzero(f <= rho, axis=0)
        sel = np.flatnonzero(ok)
        # log KL and its slope d log KL / d log t = t^2 Var / KL at the grid points around rho
        g0 = np.clip(n_le[sel] - 1, 0, G - 2)
        fa, fb = f[g0, sel].astype(np.float64), f[g0 + 1, sel].astype(np.float64)
        sl = []
        for g, fg in ((g0, fa), (g0 + 1, fb)):
            m0 = Mg[g, sel].astype(np.float64)
            m1 = Mg[G + g, sel] / m0
            var = Mg[2 * G + g, sel] / m0 - m1 * m1
            sl.append(tg[g] ** 2 * var / fg)
        sa, sb = sl
        wa, wb = np.log(fa), np.log(fb)
    lr = math.log(rho)
    good = np.isfinite(wa) & np.isfinite(wb) & (sa > 0) & (sb > 0) & (wb > wa)
    sel, g0, wa, wb, sa, sb, nl = sel[good], g0[good], wa[good], wb[good], sa[good], sb[good], n_le[sel[good]]
    below, above, mid = nl == 0, nl == G, (nl > 0) & (nl < G)
    # outside the grid: follow the local power law KL ~ t^slope from the nearest end
    t0[sel[below]] = tg[0] * np.exp(np.clip((lr - wa[below]) / sa[below], -4.0, 0.0))
    hi[sel[below]] = tg[0] * (1 + 1e-4)
    t0[sel[above]] = tg[-1] * np.exp(np.clip((lr - wb[above]) / sb[above], 0.0, 4.0))
    lo[sel[above]] = tg[-1] * (1 - 1e-4)
    s, g, h = sel[mid], g0[mid], (wb - wa)[mid]
    x = (lr - wa[mid]) / h
    x2, x3 = x * x, x * x * x
    u0, u1 = np.log(tg[g]), np.log(tg[g + 1])
    ut = (2 * x3 - 3 * x2 + 1) * u0 + (x3 - 2 * x2 + x) * h / sa[mid] + (3 * x2 - 2 * x3) * u1 + (x3 - x2) * h / sb[mid]
    lo[s], hi[s] = tg[g] * (1 - 1e-4), tg[g + 1] * (1 + 1e-4)
    t0[s] = np.clip(np.exp(ut), lo[s], hi[s])
    return t0, lo, hi


def _kl_pass(
    kernel: SharedKernel, V: np.ndarray, rows: np.ndarray, t: np.ndarray, shift: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Exact moments sum_s p0(s) exp(-t (V(s) - vmin_row)) cols[s, :] for every row, at that row's t."""
    from scipy.linalg.blas import dger

    LP = kernel.log_kernel
    full = rows.size == kernel.n_rows
    out = np.empty((rows.size, cols.shape[1]))
    b = _KL_CHUNK
    buf = np.empty((min(b, rows.size), kernel.n_states))
    negV = -(V - V.min())
    ones = np.ones(kernel.n_states)
    for i in range(0, rows.size, b):
        n = min(b, rows.size - i)
        X = buf[:n]
        if full:
            X[...] = LP[i : i + n]
        else:
            np.take(LP, rows[i : i + n], axis=0, out=X)
        XT = X.T  # Fortran view: dger updates it in place
        dger(1.0, negV, t[i : i + n], a=XT, overwrite_a=True)
        sh = shift[i : i + n]
        if sh.any():
            dger(1.0, ones, t[i : i + n] * sh, a=XT, overwrite_a=True)
        np.exp(X, out=X)
        np.matmul(X, cols, out=out[i : i + n])
    return out


def _kl_shared(kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """KL support for a shared V, equal to :func:`kl_support` up to rounding (model error <= 1e-14 scale).

    Saturated rows give min over supp(p0). For the others, each exact pass at a per-row t yields the
    cumulants of V under q_t up to order 4; the quartic model of log E exp(-t V) is maximised near t and
    accepted when a bound on its Taylor remainder (|kappa_5| <= 3.5 L^3 Var) is below 1e-14 (1 + max|V|).
    Rows not accepted after a few passes go to the general bracketed Newton solver.
    """
    if rho == 0.0:
        return kernel.nominal(V)
    vmin, pmin = kernel.support_min(V)
    with np.errstate(divide="ignore"):
        cap = -np.log(pmin)
    sigma = vmin.copy()
    act = np.flatnonzero((rho < cap) & (pmin < kernel.row_sums))
    if act.size == 0:
        return sigma
    gmin = V.min()
    L = float(V.max() - gmin)  # bounds every row's spread of V over its support
    shift = vmin[act] - gmin
    c = float(V.mean())
    Y = V - c
    cols = np.stack([np.ones_like(Y), Y, Y * Y, Y**3, Y**4], axis=1)
    tolabs = _KL_REL_TOL * (1.0 + float(np.abs(V).max()))
    t, lo, hi = _kl_warm_start(kernel, V, rho, act)
    todo = np.arange(act.size)
    for _ in range(_KL_MAX_PASSES):
        if todo.size == 0:
            break
        rows = act[todo]
        tt = t[todo]
        Mo = _kl_pass(kernel, V, rows, tt, shift[todo], cols)
        vm = vmin[rows]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            m = Mo[:, 1:] / Mo[:, :1]
            m1, m2, m3, m4 = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
            m1s = m1 * m1
            k2 = np.maximum(m2 - m1s, 0.0)
            k3 = m3 - m1 * (3.0 * m2 - 2.0 * m1s)
            k4 = m4 - m1 * (4.0 * m3 - m1 * (6.0 * m2 - 3.0 * m1s)) - 3.0 * k2 * k2
            k1 = m1 + (c - vm)  # mean of V - vmin_row under q_t
            L0 = np.log(Mo[:, 0])
            f = -tt * k1 - L0  # KL(q_t || p0)
            below = f < rho
            lo[todo[below]] = np.maximum(lo[todo[below]], tt[below])
            hi[todo[~below]] = np.minimum(hi[todo[~below]], tt[~below])
            lot, hit = lo[todo], hi[todo]
            # Newton for log KL against log t (exact in the small-t regime KL ~ t^2 Var / 2), step clipped
            slope = tt * tt * k2 / f
            step = np.clip((math.log(rho) - np.log(f)) / slope, -3.0, 3.0)
            t_newton = tt * np.exp(step)
            # maximise the quartic model of h(t + d) = vmin - (log M(t + d) + rho) / (t + d) by Newton in d:
            # log M(t + d) ~ L0 - k1 d + k2 d^2/2 - k3 d^3/6 + k4 d^4/24, and h'(t + d) = 0 where f = rho
            d = t_newton - tt
            c3, c4 = k3 / 6.0, k4 / 24.0
            for _ in range(4):
                Lp = -k1 + d * (k2 - d * (3.0 * c3 - d * 4.0 * c4))
                Lm = L0 + d * (-k1 + d * (0.5 * k2 - d * (c3 - d * c4)))
                fpm = (tt + d) * (k2 - d * (6.0 * c3 - d * 12.0 * c4))
                d = d + (rho - ((tt + d) * Lp - Lm)) / fpm
            Lp = -k1 + d * (k2 - d * (3.0 * c3 - d * 4.0 * c4))
            Lm = L0 + d * (-k1 + d * (0.5 * k2 - d * (c3 - d * c4)))
            fpm = (tt + d) * (k2 - d * (6.0 * c3 - d * 12.0 * c4))
            tn = tt + d
            resid = rho - (tn * Lp - Lm)  # the model's KL misses rho by this much at tn
            val = vm - Lp - resid / tn  # = vm - (Lm + rho) / tn, without dividing rounding errors by a small t
            ad = np.abs(d)
            err = (3.5 / 120.0 * L**3) * k2 * np.exp(L * ad) * (ad * ad) * (ad * ad) * ad / tn  # Taylor remainder
            err += resid * resid / (2.0 * tn * fpm)  # distance of the model's h from its maximum
            err += 8.0 * _EPS * (1.0 + np.abs(L0) + tt * np.abs(k1)) / tn  # rounding in log M, over t
            inside = np.isfinite(tn) & (tn > lot) & (tn < hit)
            ok = np.isfinite(val) & (k2 > 0) & (fpm > 0) & (ad <= 0.25 * tt) & (err <= tolabs) & inside
        sigma[rows[ok]] = val[ok]
        nxt = np.where(inside & (ad <= tt), tn, t_newton)
        bisect = np.where(np.isfinite(hit), np.where(lot > 0, np.sqrt(lot * hit), 0.25 * hit), 4.0 * tt)
        good = np.isfinite(nxt) & (nxt > lot) & (nxt < hit)
        t[todo] = np.where(good, nxt, bisect)
        todo = todo[~ok]
    if todo.size:
        rows = act[todo]
        sigma[rows] = _kl_solve(kernel.P[rows], V, rho)[0]
    return sigma


def _kl_penalty_shared(kernel: SharedKernel, V: np.ndarray, beta: float) -> np.ndarray:
    """-beta log E_p0 exp(-V / beta) with one shared exponential; rows where it underflows are redone exactly."""
    gmin = V.min()
    M = np.exp(-(V - gmin) / beta) @ kernel.transposed
    sigma = np.empty(kernel.n_rows)
    good = M > 1e-250
    sigma[good] = gmin - beta * np.log(M[good])
    if not good.all():
        rows = np.flatnonzero(~good)
        W, cmin = _kl_penalty_parts(kernel.P[rows], V, beta)
        sigma[rows] = cmin - beta * np.log(W.sum(axis=-1))
    return sigma


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


def support_shared(name: str, kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """sigma(V) for every row of a prepared kernel and one V shared by all rows; shape kernel.out_shape.

    Equals the general support function of the set up to rounding; this is the value-iteration fast path.
    """
    rho = check_rho(name, rho)
    V = _shared_v(kernel, V)
    if name == "contamination":
        out = (1.0 - rho) * kernel.nominal(V) + rho * V.min()
    elif name == "tv":
        out = _tv_shared(kernel, V, rho)
    elif name == "kl":
        c, s, Vn = _unit_range(V)
        out = c + s * _kl_shared(kernel, Vn, rho)
    elif name == "kl-penalty":
        out = _kl_penalty_shared(kernel, V, rho)
    else:
        out = _chi2_shared(kernel, V, rho)
    return out.reshape(kernel.out_shape)


# ===== the set objects ============================================================================
_SUPPORT: dict[str, Callable[..., np.ndarray]] = {
    "contamination": contamination_support,
    "tv": tv_support,
    "kl": kl_support,
    "chi2": chi2_support,
    "kl-penalty": kl_penalty_support,
}
_WORST: dict[str, Callable[..., np.ndarray]] = {
    "contamination": contamination_worst_case,
    "tv": tv_worst_case,
    "kl": kl_worst_case,
    "chi2": chi2_worst_case,
    "kl-penalty": kl_penalty_worst_case,
}


@dataclass(frozen=True)
class UncertaintySet:
    """An (s,a)-rectangular uncertainty set of one kind and radius; rho is validated on creation.

    For "kl-penalty" (the penalised operator inf_p p.V + beta KL(p||p0) used by the neural code),
    ``rho`` holds the temperature beta > 0; its support plays the role of sigma everywhere.
    """

    name: str
    rho: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rho", check_rho(self.name, self.rho))

    def support(self, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        """sigma(V) for every row of P0: the worst-case expectation of V over the set."""
        return _SUPPORT[self.name](P0, V, self.rho, validate=validate)

    def support_shared(self, kernel: SharedKernel, V: np.ndarray) -> np.ndarray:
        """sigma(V) for every row of a prepared kernel, V of shape (S,) shared by all rows (fast path)."""
        return support_shared(self.name, kernel, V, self.rho)

    def worst_case(self, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        """A minimiser p* of p.V over the set, for every row of P0 (rows sum to 1)."""
        return _WORST[self.name](P0, V, self.rho, validate=validate)

    def primal(self, p0: np.ndarray, V: np.ndarray) -> tuple[float, np.ndarray]:
        """Solve min p.V over the set for one p0 with cvxpy; for verification only."""
        return primal_support(self.name, p0, V, self.rho)

    def distance(self, p: np.ndarray, p0: np.ndarray) -> float:
        """The divergence D(p, p0) that defines the set (inf where p is not << p0 for kl/chi2)."""
        return divergence(self.name, p, p0)

    def __str__(self) -> str:
        return f"{self.name}(rho={self.rho:g})"


def make_set(name: str, rho: float) -> UncertaintySet:
    """Build an uncertainty set by name; raises naming the allowed names or rho range."""
    return UncertaintySet(name, rho)


def divergence(name: str, p: np.ndarray, p0: np.ndarray) -> float:
    """D(p, p0) for the named set: contamination gives the smallest rho with p in the rho-ball."""
    p = np.asarray(p, dtype=np.float64)
    p0 = np.asarray(p0, dtype=np.float64)
    if name == "tv":
        return float(0.5 * np.abs(p - p0).sum())
    if name == "contamination":
        # smallest rho with p = (1-rho) p0 + rho q, q >= 0: rho >= 1 - p_j/p0_j for all j with p0_j > 0
        supp = p0 > 0
        return float(max(0.0, np.max(1.0 - p[supp] / p0[supp]))) if supp.any() else 0.0
    supp = p0 > 0
    if np.any(p[~supp] > 1e-15):
        return math.inf
    ps, qs = p[supp], p0[supp]
    if name == "kl":
        nz = ps > 0
        return float(np.sum(ps[nz] * np.log(ps[nz] / qs[nz])))
    if name == "chi2":
        return float(np.sum((ps - qs) ** 2 / qs))
    if name == "kl-penalty":
        raise UncertaintySetError("kl-penalty is a penalty, not a ball: it has no radius to measure against")
    raise UncertaintySetError(f"unknown uncertainty set {name!r}; choose one of {', '.join(SET_NAMES)}")


def primal_support(name: str, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[float, np.ndarray]:
    """min_p p.V over the set around one p0 (shape (S,)), solved by cvxpy/Clarabel to ~1e-9.

    For "kl-penalty" it minimises p.V + beta KL(p || p0) instead. Returns (value, p).
    This is the independent check of the closed forms, not a fast path.
    """
    import cvxpy as cp

    rho = check_rho(name, rho)
    p0 = np.asarray(p0, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if p0.ndim != 1 or V.shape != p0.shape:
        raise UncertaintySetError(f"primal_support takes p0 and V of shape (S,); got {p0.shape} and {V.shape}")
    S = p0.shape[0]
    p = cp.Variable(S, nonneg=True)
    cons = [cp.sum(p) == 1]
    objective = V @ p
    supp = np.flatnonzero(p0 > 0)
    off = np.flatnonzero(p0 <= 0)
    if name == "contamination":
        q = cp.Variable(S, nonneg=True)
        cons += [cp.sum(q) == 1, p == (1 - rho) * p0 + rho * q]
    elif name == "tv":
        cons += [0.5 * cp.norm1(p - p0) <= rho]
    elif name in ("kl", "chi2") and rho == 0.0:
        cons += [p == p0]  # the ball of radius 0 is exactly {p0}; conic solvers are degenerate there
    elif name == "kl":
        if off.size:
            cons += [p[off] == 0]
        cons += [cp.sum(cp.rel_entr(p[supp], p0[supp])) <= rho]
    elif name == "kl-penalty":
        if off.size:
            cons += [p[off] == 0]
        objective = V @ p + rho * cp.sum(cp.rel_entr(p[supp], p0[supp]))
    elif name == "chi2":
        if off.size:
            cons += [p[off] == 0]
        cons += [cp.sum_squares(cp.multiply(1.0 / np.sqrt(p0[supp]), p[supp] - p0[supp])) <= rho]
    prob = cp.Problem(cp.Minimize(objective), cons)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=500)
    except cp.SolverError:
        prob.solve(solver=cp.SCS, eps=1e-10, max_iters=200000)
    if p.value is None or prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"cvxpy failed on the {name} primal (status {prob.status})")
    pv = np.maximum(np.asarray(p.value, dtype=np.float64), 0.0)
    return float(prob.value), pv
