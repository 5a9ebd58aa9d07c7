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
_KL_TOL = 1e-13
_KL_MAX_ITER = 200


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
def _kl_solve(P: np.ndarray, V: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve the KL dual row by row. Returns (sigma, t, vmin_supp, saturated) with t = 1/beta*.

    saturated rows have rho >= -log p0(argmin over supp), where sigma = min_{supp p0} V (beta -> 0).
    Other rows solve KL(q_t || p0) = rho for t, q_t proportional to p0 exp(-t (V - vmin)).
    """
    K = P.shape[0]
    Vb = np.broadcast_to(V, P.shape)
    supp = P > 0
    vmin = np.where(supp, Vb, np.inf).min(axis=-1)
    Vp = np.where(supp, Vb - vmin[:, None], 0.0)  # >= 0 on the support
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
    Pa, Va, sa = P[active], Vp[active], spread[active]

    def kl_and_slope(tt: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W = Pa[rows] * np.exp(-tt[:, None] * Va[rows])
        M = W.sum(axis=-1)
        q = W / M[:, None]
        mean = np.einsum("ks,ks->k", q, Va[rows])
        var = np.einsum("ks,ks->k", q, (Va[rows] - mean[:, None]) ** 2)
        kl = -tt * mean - np.log(M)
        return kl, tt * var, M

    # bracket t in [lo, hi] with KL(lo) < rho <= KL(hi); KL is increasing in t from 0
    lo = np.zeros(active.size)
    hi = 1.0 / sa
    all_rows = np.arange(active.size)
    for _ in range(_KL_MAX_ITER):
        kl, _, _ = kl_and_slope(hi, all_rows)
        short = kl < rho
        if not short.any():
            break
        lo[short] = hi[short]
        hi[short] *= 4.0
    tt = 0.5 * (lo + hi)
    todo = all_rows
    for _ in range(_KL_MAX_ITER):
        kl, slope, _ = kl_and_slope(tt[todo], todo)
        f = kl - rho
        solved = np.abs(f) <= _KL_TOL
        todo, f, slope = todo[~solved], f[~solved], slope[~solved]
        if todo.size == 0:
            break
        below = f < 0
        lo[todo[below]] = tt[todo[below]]
        hi[todo[~below]] = tt[todo[~below]]
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = tt[todo] - f / slope
        mid = 0.5 * (lo[todo] + hi[todo])
        ok = np.isfinite(newton) & (newton > lo[todo]) & (newton < hi[todo])
        nxt = np.where(ok, newton, mid)
        stalled = hi[todo] - lo[todo] <= 4 * np.finfo(np.float64).eps * hi[todo]
        tt[todo] = np.where(stalled, tt[todo], nxt)
        todo = todo[~stalled]
        if todo.size == 0:
            break
    # dual objective at the solved t: a valid lower bound at any t, and second-order accurate
    M = np.einsum("ks,ks->k", Pa, np.exp(-tt[:, None] * Va))
    sigma[active] = vmin[active] - (np.log(M) + rho) / tt
    t[active] = tt
    return sigma, t, vmin, saturated


def kl_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sup_{beta > 0} -beta log E_p0[exp(-V / beta)] - beta rho; min over supp(p0) when beta* -> 0."""
    rho = check_rho("kl", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    return _kl_solve(P, Vr, rho)[0].reshape(shape)


def kl_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p* proportional to p0 exp(-V / beta*); p0 restricted to argmin_{supp} V when saturated."""
    rho = check_rho("kl", rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    _, t, vmin, saturated = _kl_solve(P, Vr, rho)
    Vb = np.broadcast_to(Vr, P.shape)
    supp = P > 0
    Vp = np.where(supp, Vb - vmin[:, None], 0.0)
    W = P * np.exp(-t[:, None] * Vp)
    sat_w = np.where(supp & (Vp == 0.0), P, 0.0)
    W = np.where(saturated[:, None], sat_w, W)
    return (W / W.sum(axis=-1, keepdims=True)).reshape(*shape, P.shape[-1])


# ===== KL penalty (fixed temperature) =============================================================
def _kl_penalty_parts(P: np.ndarray, V: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Shifted Gibbs weights W = p0 exp(-(V - c)/beta) and c = min_{supp} V (so W <= p0, no overflow)."""
    Vb = np.broadcast_to(V, P.shape)
    c = np.where(P > 0, Vb, np.inf).min(axis=-1)
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
def _chi2_solve(P: np.ndarray, V: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximise g(eta) = eta - sqrt(1+rho) sqrt(E_p0[(eta - V)_+^2]) exactly, row by row.

    Between consecutive sorted values of V, g has a closed-form stationary point; clamping it into
    its segment and taking the best segment gives the exact maximum. Returns (sigma, eta*).
    """
    K = P.shape[0]
    c2 = 1.0 + rho
    Ps, Vs, _ = _sorted_rows(P, V, descending=False)
    supp_any = Ps > 0
    first = np.argmax(supp_any, axis=-1)
    vmin = np.take_along_axis(Vs, first[:, None], axis=-1)[:, 0]
    X = Vs - vmin[:, None]  # shift for numerical stability; sigma is translation-equivariant
    A = np.cumsum(Ps, axis=-1)
    B = np.cumsum(Ps * X, axis=-1)
    Cq = np.cumsum(Ps * X * X, axis=-1)
    upper = np.concatenate([X[:, 1:], np.full((K, 1), np.inf)], axis=-1)
    lower = X
    D = np.maximum(A * Cq - B * B, 0.0)
    denom = c2 * A - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = B / A + np.sqrt(D / (A * A * denom))
    eta = np.where(denom > 0, stat, upper)
    eta = np.where(A > 0, eta, upper)  # no mass yet: g(eta) = eta is increasing
    eta = np.clip(eta, lower, upper)
    finite = np.isfinite(eta)
    e = np.where(finite, eta, 0.0)
    Q = np.maximum(A * e * e - 2.0 * B * e + Cq, 0.0)
    g = np.where(finite, e - np.sqrt(c2 * Q), -np.inf)
    best = np.argmax(g, axis=-1)
    rows = np.arange(K)
    return g[rows, best] + vmin, eta[rows, best] + vmin


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
    _, eta = _chi2_solve(P, Vr, rho)
    Vb = np.broadcast_to(Vr, P.shape)
    W = P * np.maximum(eta[:, None] - Vb, 0.0)
    tot = W.sum(axis=-1)
    supp = P > 0
    vmin = np.where(supp, Vb, np.inf).min(axis=-1)
    at_min = np.where(supp & (Vb == vmin[:, None]), P, 0.0)
    degenerate = tot <= 1e-300
    W = np.where(degenerate[:, None], at_min, W)
    return (W / W.sum(axis=-1, keepdims=True)).reshape(*shape, P.shape[-1])


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
