"""What every uncertainty-set module shares: validation, row layouts, the prepared kernel, and the two specs.

A set module (``reference/sets/<name>.py``) exports one :class:`SetSpec`: the exact half (radius range and
meaning, support function, worst case, cvxpy primal, divergence, optional shared-V fast path) and its
:class:`SampleRule` per target kind, the per-sample formula that :mod:`drigm` regresses on. Rules are written
once over :class:`Ops`, a handful of elementwise operations that numpy arrays (:data:`NUMPY_OPS`, here) and
torch tensors (``drigm.targets.TORCH_OPS``) both provide, so ``reference`` stays free of torch and the formula
the learner uses is the one the tests check against the exact support function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Array = Any  # a numpy array or a torch tensor: rules only use operators and Ops methods on it


class UncertaintySetError(ValueError):
    """An uncertainty set name, radius or argument is invalid."""


# ===== the radius =================================================================================
@dataclass(frozen=True)
class Radius:
    """The allowed range of a set's parameter ``rho`` and what it means; :meth:`check` validates a value."""

    set_name: str
    lo: float
    hi: float
    open_low: bool = False  # rho > lo (kl-penalty's temperature) instead of rho >= lo
    symbol: str = "rho"  # how the set's own formulas name the parameter held in ``rho``
    meaning: str = "the radius"

    def describe(self) -> str:
        """The allowed range in words, e.g. "[0, 1]" or "> 0 (finite)"."""
        if math.isfinite(self.hi):
            return f"{'(' if self.open_low else '['}{self.lo:g}, {self.hi:g}]"
        return f"{'>' if self.open_low else '>='} {self.lo:g} (finite)"

    def check(self, rho: float) -> float:
        """Return rho as a float if it lies in the range, else raise UncertaintySetError naming the range."""
        try:
            r = float(rho)
        except (TypeError, ValueError) as exc:
            raise UncertaintySetError(f"rho={rho!r} is not a number") from exc
        bad = math.isnan(r) or math.isinf(r) or r < self.lo or r > self.hi or (self.open_low and r == self.lo)
        if bad:
            if self.symbol != "rho":
                raise UncertaintySetError(
                    f"rho={r!r} is out of range for set {self.set_name!r}: rho is {self.meaning}, "
                    f"allowed {self.symbol} {self.describe()}"
                )
            raise UncertaintySetError(
                f"rho={r!r} is out of range for set {self.set_name!r}: allowed rho {self.describe()}"
            )
        return r


# ===== row layouts ================================================================================
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


# unit-range helpers shared by kl and chi2
_MIN_TIE = 4.0 * float(np.finfo(np.float64).eps)  # unit-range gaps above a row's min below this are ties (kl, chi2)
_EPS = float(np.finfo(np.float64).eps)


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


def support_direction(p0: np.ndarray, rng: np.random.Generator, boundary: bool) -> np.ndarray:
    """A distribution q on supp(p0): a vertex (one state) if `boundary`, else a random interior point."""
    supp = np.flatnonzero(p0 > 0)
    q = np.zeros(p0.size)
    if boundary:
        q[rng.choice(supp)] = 1.0
    else:
        q[supp] = rng.dirichlet(np.ones(supp.size))
    return q


def chi2_step(rho: float, p0: np.ndarray, q: np.ndarray) -> float:
    """The largest t in [0, 1] (a hair inside) with chi2((1 - t) p0 + t q, p0) = t^2 chi2(q, p0) <= rho."""
    supp = p0 > 0
    chi2 = float(np.sum((q[supp] - p0[supp]) ** 2 / p0[supp]))
    return 1.0 if chi2 <= rho else math.sqrt(rho / chi2) * (1.0 - 1e-9)


def restricted_to_support(p: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(p, p0) on supp(p0), or None when p puts mass (> 1e-15) off it (kl and chi2 are then infinite)."""
    supp = p0 > 0
    if np.any(p[~supp] > 1e-15):
        return None
    return p[supp], p0[supp]


# ===== the prepared kernel (value iteration's shared-V case) =======================================
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


# ===== sample rules ===============================================================================
class Ops(Protocol):
    """The elementwise operations a :class:`SampleRule` may use besides + - * / and comparisons."""

    def minimum(self, a: Array, b: Array) -> Array: ...
    def relu(self, x: Array) -> Array: ...
    def exp(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def where(self, cond: Array, a: Array, b: Array) -> Array: ...
    def clamp_max(self, x: Array, hi: float) -> Array: ...
    def indicator(self, cond: Array, like: Array) -> Array: ...  # cond as 0/1 in like's dtype


class _NumpyOps:
    """:class:`Ops` over numpy arrays."""

    def minimum(self, a: Array, b: Array) -> Array:
        return np.minimum(a, b)

    def relu(self, x: Array) -> Array:
        return np.maximum(x, 0.0)

    def exp(self, x: Array) -> Array:
        return np.exp(x)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        return np.where(cond, a, b)

    def clamp_max(self, x: Array, hi: float) -> Array:
        return np.minimum(x, hi)

    def indicator(self, cond: Array, like: Array) -> Array:
        return np.asarray(cond, dtype=np.asarray(like).dtype)


NUMPY_OPS: Ops = _NumpyOps()

#: continuation(ops, v, aux, m_hat, rho, shift) -> the sample continuation value, v's shape
Continuation = Callable[[Ops, Array, Any, Any, float, Any], Array]
#: aux_loss(ops, v, aux, rho, shift) -> elementwise loss whose conditional minimiser is the aux the rule needs
AuxLoss = Callable[[Ops, Array, Any, float, Any], Array]
#: aux_view(ops, raw, rho, shift) -> the aux the formulas take, from the net's raw outputs (..., n_outputs)
AuxView = Callable[[Ops, Array, float, Any], Any]


def _first_output(ops: Ops, raw: Array, rho: float, shift: Any) -> Array:
    return raw[..., 0]


@dataclass(frozen=True)
class SampleRule:
    """How a learner turns sampled V_hat(s') into a target continuation y = r + gamma * continuation.

    Guarantee checked by the tests for every registered rule: with s' ~ p0, m_hat = min V and the auxiliary
    estimate at ``exact_aux(p0, V, rho)`` (a minimiser of the expected ``aux_loss``), the expected continuation
    equals ``operator(p0, V, rho)``: the set's support function for exact rules, the shortcut's own operator
    for the paper's. Capabilities the learner reads instead of set names: ``needs_m_hat``, ``needs_shift``,
    ``aux_outputs`` (empty: no auxiliary net), ``affine`` (lambda-returns allowed), ``homogeneous``.
    """

    formula: str
    continuation: Continuation
    operator: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    #: per auxiliary output: "value" (in V_hat's units, loc + scale h) or "spread" (>= 0, scale exp h)
    aux_outputs: tuple[str, ...] = ()
    aux_loss: AuxLoss | None = None
    aux_view: AuxView = _first_output
    aux_meaning: str = ""
    exact_aux: Callable[[np.ndarray, np.ndarray, float, float], Any] | None = None
    needs_m_hat: bool = False
    needs_shift: bool = False  # the aux is learned relative to c = the batch minimum of V_hat (kl-penalty)
    #: (slope, offset) with continuation = slope V_hat + offset, given (rho, m_hat); None if not affine
    affine: Callable[[float, Any], tuple[Any, Any]] | None = None
    homogeneous: bool = True  # continuation(c V) = c continuation(V) for c > 0, so rewards may be rescaled

    @property
    def needs_aux(self) -> bool:
        """True when the rule needs an auxiliary estimate learned by ``aux_loss``."""
        return bool(self.aux_outputs)


def _nominal_continuation(ops: Ops, v: Array, aux: Any, m_hat: Any, rho: float, shift: Any) -> Array:
    return v


def _nominal_operator(P0: np.ndarray, V: np.ndarray, rho: float) -> np.ndarray:
    return np.einsum("...s,...s->...", np.asarray(P0, dtype=float), np.asarray(V, dtype=float))


#: the non-robust rule (target kind "none"), the same for every set
NOMINAL_RULE = SampleRule(
    formula="V_hat(s')",
    continuation=_nominal_continuation,
    operator=_nominal_operator,
    affine=lambda rho, m_hat: (1.0, 0.0),
)


# ===== the set spec ===============================================================================
Primal = Callable[[Any, Any, np.ndarray, np.ndarray, float], tuple[Any, list[Any]]]


@dataclass(frozen=True)
class SetSpec:
    """Everything about one uncertainty set: register it in ``reference/sets/__init__.py`` (one line).

    ``primal(cp, p, p0, V, rho)`` returns (objective, constraints) of min_p over the set for a cvxpy variable p
    (p >= 0 and sum p = 1 are added by the caller). ``divergence`` is None for a penalty (no ball). ``member``
    draws random members of the set (penalties: any p << p0). ``support_shared`` is an optional fast path for one
    V shared by every row of a prepared kernel; without it the general ``support`` runs on the kernel's rows.
    ``test_top`` is a finite upper end of rho for random tests.
    """

    name: str
    summary: str
    radius: Radius
    support: Callable[..., np.ndarray]
    worst_case: Callable[..., np.ndarray]
    primal: Primal
    divergence: Callable[[np.ndarray, np.ndarray], float] | None
    #: member(p0, rho, rng, boundary) -> a random p in U(p0), on (or a hair inside) its boundary if `boundary`;
    #: built from the set's definition, not from its worst case, so property tests can use it as a witness
    member: Callable[[np.ndarray, float, np.random.Generator, bool], np.ndarray]
    test_top: float
    support_shared: Callable[[SharedKernel, np.ndarray, float], np.ndarray] | None = None
    rules: Mapping[str, SampleRule] = field(default_factory=dict)

    @property
    def is_ball(self) -> bool:
        """True for a set {p : D(p, p0) <= rho}; False for a penalty (kl-penalty)."""
        return self.divergence is not None
