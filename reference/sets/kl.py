"""KL: U(p0) = {p << p0 : KL(p || p0) <= rho}, rho >= 0 (docs/theory.md section 2).

sigma(V) = sup_{beta > 0} -beta log E_p0 exp(-V / beta) - beta rho, solved row by row in the inverse
temperature t = 1 / beta (bracketed Newton on log KL against log t). Value iteration's shared-V fast path
(a float32 warm start, then exact per-row passes with a certified quartic model) is kept because the
benchmark target of at most 20x the nominal sweep (benchmarks/README.md) is missed without it. The neural
learners have no KL-ball rule (its sample form needs the dual temperature per (s, a)); they use kl-penalty.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reference.sets._base import (
    _EPS,
    Radius,
    SetSpec,
    SharedKernel,
    _kl_shifted,
    _prepare,
    _rows,
    _unit_range,
    chi2_step,
    restricted_to_support,
    support_direction,
)

RADIUS = Radius("kl", 0.0, math.inf, meaning="the KL radius")
_KL_TOL = 1e-13  # relative accuracy of KL(q_t || p0) = rho in the general solver
_KL_MAX_ITER = 200
_KL_TINY_RHO = 1e-12  # below this radius KL's rounding floor matters; a small-rho expansion is exact to O(rho^1.5)
_KL_GRID = 5  # shared inverse temperatures in the warm-start grid, a factor _KL_GRID_RATIO apart
_KL_GRID_RATIO = 2.0**0.75
_KL_MAX_PASSES = 6  # exact per-row passes before the remaining rows go to the general solver
_KL_CHUNK = 512  # rows per block in a per-row pass (keeps the block in cache)
_KL_REL_TOL = 1e-14  # accepted model error, relative to 1 + max |V|


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


def kl_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sup_{beta > 0} -beta log E_p0[exp(-V / beta)] - beta rho; min over supp(p0) when beta* -> 0."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    c, s, Vn = _unit_range(Vr)
    return (c + s * _kl_solve(P, Vn, rho)[0]).reshape(shape)


def kl_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p* proportional to p0 exp(-V / beta*); p0 restricted to argmin_{supp} V when saturated."""
    rho = RADIUS.check(rho)
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
    # KL(p || p0) > rho, mix in p0 (normalised), whose KL is 0. KL is convex, so a = (kl - rho) / kl gives
    # KL(mix) <= rho; a is ~1e-13 when it is used, and it moves p.V by a (p0.V - p.V). The KL is taken against
    # the normalised row p0 / sum p0: a row summing to 1 - 3e-16 adds -log(sum p0) = 3e-16 to the KL against the
    # raw row, which at rho ~1e-15 alone would pull p* a third of the way back to p0. For a tilted row the KL
    # is -t E_p[Vp] - log M (_kl_eval, accurate at any t), not the sum p log(p / p0), which cancels
    # catastrophically near the rounding floor; saturated rows keep the direct sum.
    a0 = P.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.einsum("ks,ks->k", p, np.where(p > 0, np.log(p / np.where(supp, P, 1.0)), 0.0))
        tilted = ~saturated & (t > 0)
        if tilted.any():
            kl[tilted] = _kl_eval(P[tilted], Vp[tilted], t[tilted])[3]
        kl = kl + np.log(a0)  # against the normalised p0
        a = np.where(kl > rho, np.clip((kl - rho) / kl, 0.0, 1.0), 0.0)
    if a.any():
        p = p + a[:, None] * (P / a0[:, None] - p)
    return p.reshape(*shape, P.shape[-1])


def kl_divergence(p: np.ndarray, p0: np.ndarray) -> float:
    """KL(p || p0), inf where p is not absolutely continuous with respect to p0."""
    on = restricted_to_support(p, p0)
    if on is None:
        return math.inf
    ps, qs = on
    nz = ps > 0
    return float(np.sum(ps[nz] * np.log(ps[nz] / qs[nz])))


def kl_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[Any, list[Any]]:
    """min p.V subject to p << p0 and KL(p || p0) <= rho (p = p0 at rho = 0, where conic solvers degenerate)."""
    if rho == 0.0:
        return V @ p, [p == p0]
    supp, off = np.flatnonzero(p0 > 0), np.flatnonzero(p0 <= 0)
    cons = [p[off] == 0] if off.size else []
    return V @ p, [*cons, cp.sum(cp.rel_entr(p[supp], p0[supp])) <= rho]


def kl_step(rho: float, p0: np.ndarray, q: np.ndarray) -> float:
    """The largest t in [0, 1] (a hair inside) with KL((1 - t) p0 + t q || p0) <= rho, q << p0, by bisection."""
    t_chi2 = chi2_step(rho, p0, q)  # KL <= chi2, so this t is feasible; near rho = 0 it is also nearly the boundary
    if t_chi2 == 1.0 or rho < 1e-6:
        return t_chi2
    supp = p0 > 0
    x = q[supp] / p0[supp] - 1.0

    def kl(t: float) -> float:  # sum p0 [(1 + t x) log(1 + t x) - t x], each term >= 0 (no cancellation in the sum)
        y = t * x
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 log 0 = 0 where q puts no mass (t = 1, y = -1)
            xlogx = np.where(y > -1.0, (1.0 + y) * np.log1p(y), 0.0)
        return float(np.sum(p0[supp] * (xlogx - y)))

    if kl(1.0) <= rho:
        return 1.0
    lo, hi = t_chi2, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kl(mid) <= rho else (lo, mid)
    return lo * (1.0 - 1e-9)


def kl_member(p0: np.ndarray, rho: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """(1 - t) p0 + t q, q on supp(p0), t at (a hair inside) the ball's boundary along that segment."""
    q = support_direction(p0, rng, boundary)
    t = kl_step(rho, p0, q)
    return (1.0 - t) * p0 + t * q


# ===== shared-V fast path =========================================================================
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


def _kl_support_shared(kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    c, s, Vn = _unit_range(V)
    return c + s * _kl_shared(kernel, Vn, rho)


SPEC = SetSpec(
    name="kl",
    summary="KL ball KL(p || p0) <= rho",
    radius=RADIUS,
    support=kl_support,
    worst_case=kl_worst_case,
    primal=kl_primal,
    divergence=kl_divergence,
    member=kl_member,
    test_top=20.0,
    support_shared=_kl_support_shared,
)
