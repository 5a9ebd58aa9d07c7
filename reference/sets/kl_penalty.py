"""kl-penalty: the penalised operator inf_p p.V + beta KL(p || p0) = -beta log E_p0 exp(-V / beta), beta > 0.

Not a ball: ``rho`` holds the temperature beta (the reference solver's convention; ``drigm`` reads it from
``target.beta``). Its exact sample rule learns psi(s, a) = E[exp(-(V_hat(s') - c) / beta) | s, a] by a squared
loss relative to a shift c (the batch minimum of V_hat), so that every regression target lies in (0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reference.sets._base import Array, Ops, Radius, SampleRule, SetSpec, SharedKernel, _prepare, _rows

RADIUS = Radius("kl-penalty", 0.0, math.inf, open_low=True, symbol="beta", meaning="the temperature beta")


def _kl_penalty_parts(P: np.ndarray, V: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Shifted Gibbs weights W = p0 exp(-(V - c)/beta) and c = min_{supp} V (so W <= p0, no overflow)."""
    Vb = np.broadcast_to(V, P.shape)
    c = np.where(P > 0, Vb, np.inf).min(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):  # off the support the exponent may overflow; masked
        W = np.where(P > 0, P * np.exp(-(Vb - c[:, None]) / beta), 0.0)
    return W, c


def kl_penalty_support(P0: np.ndarray, V: np.ndarray, beta: float, validate: bool = True) -> np.ndarray:
    """inf_p p.V + beta KL(p || p0) = -beta log E_p0[exp(-V / beta)], computed with a stable shift."""
    beta = RADIUS.check(beta)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    W, c = _kl_penalty_parts(P, Vr, beta)
    return (c - beta * np.log(W.sum(axis=-1))).reshape(shape)


def kl_penalty_worst_case(P0: np.ndarray, V: np.ndarray, beta: float, validate: bool = True) -> np.ndarray:
    """The minimiser of p.V + beta KL(p || p0): p* proportional to p0 exp(-V / beta)."""
    beta = RADIUS.check(beta)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    W, _ = _kl_penalty_parts(P, Vr, beta)
    return (W / W.sum(axis=-1, keepdims=True)).reshape(*shape, P.shape[-1])


def kl_penalty_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, beta: float) -> tuple[Any, list[Any]]:
    """min p.V + beta KL(p || p0) over distributions p << p0."""
    supp, off = np.flatnonzero(p0 > 0), np.flatnonzero(p0 <= 0)
    cons = [p[off] == 0] if off.size else []
    return V @ p + beta * cp.sum(cp.rel_entr(p[supp], p0[supp])), cons


def kl_penalty_member(p0: np.ndarray, beta: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """A p << p0: no set constrains it (a penalty), so any such p is a witness; drawn as in the KL ball of
    radius beta."""
    from reference.sets.kl import kl_member

    return kl_member(p0, beta, rng, boundary)


# ===== shared-V fast path (kept: a value-iteration sweep is ~100x slower without it, bench_set_registry.py) ===
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


# ===== sample rule ================================================================================
def _log_psi(ops: Ops, raw: Array, beta: float, shift: Any) -> Array:
    # the net outputs the soft-min u = c - beta log psi in value units, so psi = exp((c - u) / beta) > 0 always
    return (shift - raw[..., 0]) / beta


def _exact(ops: Ops, v: Array, log_psi: Any, m_hat: Any, beta: float, shift: Any) -> Array:
    return shift - beta * log_psi


def _psi_loss(ops: Ops, v: Array, log_psi: Any, beta: float, shift: Any) -> Array:
    # (psi - exp(-(V_hat - c)/beta))^2, psi = exp(log_psi) continued linearly above log_psi = 0 (no overflow); with
    # c <= V_hat every target is <= 1, so the loss increases above 0 and its minimiser, the conditional mean, stays
    psi = ops.where(log_psi <= 0, ops.exp(ops.clamp_max(log_psi, 0.0)), 1.0 + log_psi)
    d = psi - ops.exp(-(v - shift) / beta)
    return d * d


def kl_penalty_log_psi(P0: np.ndarray, V: np.ndarray, beta: float, shift: float) -> np.ndarray:
    """log E_p0[exp(-(V - c) / beta)] per row, for a shift c <= min V on the support."""
    W, c = _kl_penalty_parts(np.asarray(P0, dtype=float).reshape(-1, np.shape(P0)[-1]), np.asarray(V, float), beta)
    out = np.log(W.sum(axis=-1)) - (c - shift) / beta
    return out.reshape(np.shape(P0)[:-1])


EXACT = SampleRule(
    formula="c - beta log psi",
    continuation=_exact,
    operator=lambda P0, V, beta: kl_penalty_support(P0, V, beta, validate=False),
    aux_outputs=("value",),
    aux_loss=_psi_loss,
    aux_view=_log_psi,
    aux_meaning="psi(s, a) = E[exp(-(V_hat(s') - c) / beta)], by a squared loss (c = batch minimum of V_hat)",
    exact_aux=kl_penalty_log_psi,
    needs_shift=True,
    homogeneous=False,
)

SPEC = SetSpec(
    name="kl-penalty",
    summary="the KL penalty inf_p p.V + beta KL(p || p0) (rho holds beta)",
    radius=RADIUS,
    support=kl_penalty_support,
    worst_case=kl_penalty_worst_case,
    primal=kl_penalty_primal,
    divergence=None,
    member=kl_penalty_member,
    support_shared=_kl_penalty_shared,
    test_top=100.0,
    rules={"exact": EXACT},
)
