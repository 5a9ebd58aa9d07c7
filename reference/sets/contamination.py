"""Contamination: U(p0) = {(1 - rho) p0 + rho q : q any distribution}, rho in [0, 1] (docs/theory.md section 2).

sigma(V) = (1 - rho) p0.V + rho min_S V, attained by moving rho of mass onto argmin V. Its exact sample rule
needs m_hat (an estimate of min_S V); the paper's shortcut drops that term.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference.sets._base import Array, Ops, Radius, SampleRule, SetSpec, SharedKernel, _prepare, _rows

RADIUS = Radius("contamination", 0.0, 1.0, meaning="the contaminated mass")


def contamination_support(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """sigma(V) = (1 - rho) p0.V + rho min_S V, exactly (min over all states, not only supp p0)."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    return (1.0 - rho) * np.einsum("...s,...s->...", P0, V) + rho * V.min(axis=-1)


def contamination_worst_case(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
    """p* = (1 - rho) p0 + rho delta_{argmin V} (the first argmin on ties)."""
    rho = RADIUS.check(rho)
    P0, V = _prepare(P0, V, validate)
    P, Vr, shape = _rows(P0, V)
    out = (1.0 - rho) * P
    idx = np.argmin(Vr, axis=-1)
    if Vr.ndim == 1:
        out[:, idx] += rho
    else:
        out[np.arange(out.shape[0]), idx] += rho
    return out.reshape(*shape, P.shape[-1])


def contamination_divergence(p: np.ndarray, p0: np.ndarray) -> float:
    """The smallest rho with p = (1 - rho) p0 + rho q for some distribution q: max_j (1 - p_j / p0_j)_+."""
    supp = p0 > 0
    return float(max(0.0, np.max(1.0 - p[supp] / p0[supp]))) if supp.any() else 0.0


def contamination_primal(cp: Any, p: Any, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[Any, list[Any]]:
    """min p.V subject to p = (1 - rho) p0 + rho q with q a distribution."""
    q = cp.Variable(p0.shape[0], nonneg=True)
    return V @ p, [cp.sum(q) == 1, p == (1 - rho) * p0 + rho * q]


def contamination_member(p0: np.ndarray, rho: float, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """(1 - rho) p0 + rho q with q a vertex (boundary) or a random distribution."""
    S = p0.size
    q = np.eye(S)[rng.integers(S)] if boundary else rng.dirichlet(np.ones(S))
    return (1.0 - rho) * p0 + rho * q


def _contamination_shared(kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """The same formula on the transposed kernel (value iteration's layout): ~4x faster than the general einsum."""
    return (1.0 - rho) * kernel.nominal(V) + rho * V.min()


# ===== sample rules ===============================================================================
def _exact(ops: Ops, v: Array, aux: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    return (1.0 - rho) * v + rho * m_hat


def _paper(ops: Ops, v: Array, aux: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    return (1.0 - rho) * v


def paper_contamination_operator(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    """(1 - rho) p0.V per row: the paper shortcut in expectation (nominal play at discount gamma (1 - rho))."""
    RADIUS.check(rho)
    return (1.0 - rho) * np.einsum("...s,...s->...", np.asarray(P0, dtype=float), np.asarray(V, dtype=float))


EXACT = SampleRule(
    formula="(1 - rho) V_hat(s') + rho m_hat",
    continuation=_exact,
    operator=lambda P0, V, rho: contamination_support(P0, V, rho, validate=False),
    needs_m_hat=True,
    affine=lambda rho, m_hat: (1.0 - rho, rho * m_hat),
)
PAPER = SampleRule(
    formula="(1 - rho) V_hat(s')  (paper shortcut: exact only if min V = 0, optimistic when V < 0)",
    continuation=_paper,
    operator=paper_contamination_operator,
    affine=lambda rho, m_hat: (1.0 - rho, 0.0),
)

SPEC = SetSpec(
    name="contamination",
    summary="(1 - rho) p0 + rho q, q any distribution",
    radius=RADIUS,
    support=contamination_support,
    worst_case=contamination_worst_case,
    primal=contamination_primal,
    divergence=contamination_divergence,
    member=contamination_member,
    support_shared=_contamination_shared,
    test_top=1.0,
    rules={"exact": EXACT, "paper": PAPER},
)
