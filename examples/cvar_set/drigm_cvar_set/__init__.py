"""The CVaR set U(p0) = {p : p <= p0 / (1 - rho)}, rho in [0, 0.95]: no next state may gain more than a factor
1 / (1 - rho) of its nominal probability (a likelihood-ratio ball; rho = 0 is {p0}).

sigma(V) = CVaR at level alpha = 1 - rho of V's lower tail: fill the lowest values of V first, each up to its cap
p0 / alpha. Its sample rule is Rockafellar-Uryasev's dual, sigma = max_eta eta - E[(eta - V)_+] / alpha, whose
optimal eta is an alpha-quantile of V, learned by a pinball loss. drigm ships no such set; ``drigm verify cvar``
checks this one against the exact solver.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference.sets import Radius, SampleRule, SetSpec, UncertaintySetError

RADIUS = Radius("cvar", 0.0, 0.95, meaning="one minus the CVaR level alpha")


def _rows(P0: Any, V: Any, validate: bool) -> tuple[np.ndarray, np.ndarray]:
    P0, V = np.broadcast_arrays(np.asarray(P0, dtype=float), np.asarray(V, dtype=float))
    if validate and (np.any(P0 < 0) or np.any(np.abs(P0.sum(axis=-1) - 1.0) > 1e-8) or not np.isfinite(V).all()):
        raise UncertaintySetError("P0 rows must be distributions and V finite")
    return P0, V


def cvar_worst_case(P0: Any, V: Any, rho: float, validate: bool = True) -> np.ndarray:
    """The minimiser of p.V over the set, per row: the lowest values filled first, each up to p0 / (1 - rho)."""
    rho = RADIUS.check(rho)
    P0, V = _rows(P0, V, validate)
    order = np.argsort(V, axis=-1, kind="stable")
    cap = np.take_along_axis(P0, order, axis=-1) / (1.0 - rho)
    before = np.cumsum(cap, axis=-1) - cap
    take = np.minimum(cap, np.maximum(1.0 - before, 0.0))
    out = np.empty_like(take)
    np.put_along_axis(out, order, take, axis=-1)
    return out


def cvar_support(P0: Any, V: Any, rho: float, validate: bool = True) -> np.ndarray:
    """sigma(V) per row: the lower CVaR of V at level 1 - rho under p0; shape of P0 and V broadcast, less S."""
    P0, V = _rows(P0, V, validate)
    return np.sum(cvar_worst_case(P0, V, rho, validate=False) * V, axis=-1)


def cvar_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[Any, list[Any]]:
    """min p.V subject to (1 - rho) p <= p0 (p >= 0 and sum p = 1 are added by drigm)."""
    return V @ p, [(1.0 - rho) * p <= p0]


def cvar_divergence(p: np.ndarray, p0: np.ndarray) -> float:
    """The smallest rho with p <= p0 / (1 - rho): 1 - min over supp(p) of p0 / p (1 when p leaves supp(p0))."""
    on = p > 0
    return float(max(0.0, 1.0 - np.min(p0[on] / p[on])))


def cvar_member(p0: np.ndarray, rho: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """A vertex of the set (states filled to their cap in a random order), or a point between two vertices."""

    def vertex() -> np.ndarray:
        return cvar_worst_case(p0, rng.permutation(p0.size).astype(float), rho, validate=False)

    p = vertex()
    if not boundary:
        t = rng.random()
        p = t * p + (1.0 - t) * vertex()
    return p


def cvar_quantile(P0: Any, V: Any, rho: float, shift: Any = None) -> np.ndarray:
    """eta* per row: the smallest value v of V with P0(V <= v) >= 1 - rho (an alpha-quantile of V under p0)."""
    P0, V = _rows(P0, V, False)
    order = np.argsort(V, axis=-1, kind="stable")
    cum = np.cumsum(np.take_along_axis(P0, order, axis=-1), axis=-1)
    first = np.argmax(cum >= (1.0 - rho) - 1e-12, axis=-1)
    return np.take_along_axis(np.take_along_axis(V, order, axis=-1), first[..., None], axis=-1)[..., 0]


def _continuation(ops: Any, v: Any, eta: Any, m_hat: Any, rho: float, shift: Any) -> Any:
    return eta - ops.relu(eta - v) / (1.0 - rho)


def _pinball(ops: Any, v: Any, eta: Any, rho: float, shift: Any) -> Any:
    u = v - eta  # u ((1 - rho) - 1[u < 0]): its minimiser over eta is the (1 - rho)-quantile
    return u * ((1.0 - rho) - ops.indicator(u < 0, u))


EXACT = SampleRule(
    formula="eta - (eta - V_hat(s'))_+ / (1 - rho)",
    continuation=_continuation,
    operator=lambda P0, V, rho: cvar_support(P0, V, rho, validate=False),
    aux_outputs=("value",),
    aux_loss=_pinball,
    aux_meaning="eta(s, a), the (1 - rho)-quantile of V_hat(s'), by a pinball loss",
    exact_aux=cvar_quantile,
)

SPEC = SetSpec(
    name="cvar",
    summary="CVaR (likelihood-ratio) set p <= p0 / (1 - rho)",
    radius=RADIUS,
    support=cvar_support,
    worst_case=cvar_worst_case,
    primal=cvar_primal,
    divergence=cvar_divergence,
    member=cvar_member,
    test_top=0.95,
    rules={"exact": EXACT},
)
