"""Uncertainty sets: one module per set, one registry (docs/theory.md section 2).

For a nominal distribution p0 over S next states and a value vector V, the support function is
``sigma(V) = inf_{p in U(p0)} p . V``. Every closed form is vectorised: ``P0`` has shape ``(..., S)`` and ``V``
has shape ``(S,)`` (shared by every row, the Bellman case) or a shape that broadcasts against ``P0``; the result
has shape ``P0.shape[:-1]``.

Each set lives in one module that exports a :class:`SetSpec` (``reference/sets/tv.py`` holds everything about
TV: its radius, support, worst case, cvxpy primal, divergence, fast path and the sample rules that ``drigm``
regresses on). Adding a set is one module plus one line in :data:`SPECS` below; everything else (validation,
the CLI's choices, the neural targets, the property tests) reads the registry. :func:`primal_support` solves the
defining convex program with cvxpy, for verification only.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from reference.sets import chi2, contamination, kl, kl_penalty, tv
from reference.sets._base import (
    NOMINAL_RULE,
    NUMPY_OPS,
    Ops,
    Radius,
    SampleRule,
    SetSpec,
    SharedKernel,
    UncertaintySetError,
    _shared_v,
)
from reference.sets.chi2 import chi2_dual_optimum, chi2_support, chi2_worst_case
from reference.sets.contamination import contamination_support, contamination_worst_case
from reference.sets.kl import kl_support, kl_worst_case
from reference.sets.kl_penalty import kl_penalty_support, kl_penalty_worst_case
from reference.sets.tv import tv_quantile, tv_support, tv_worst_case

__all__ = [
    "BUILTIN_SETS",
    "ENTRY_POINT_GROUP",
    "NOMINAL_RULE",
    "NUMPY_OPS",
    "RHO_RANGES",
    "SET_NAMES",
    "SPECS",
    "Ops",
    "Radius",
    "SampleRule",
    "SetSpec",
    "SharedKernel",
    "UncertaintySet",
    "UncertaintySetError",
    "check_rho",
    "chi2_dual_optimum",
    "chi2_support",
    "chi2_worst_case",
    "contamination_support",
    "contamination_worst_case",
    "divergence",
    "get_spec",
    "kl_penalty_support",
    "kl_penalty_worst_case",
    "kl_support",
    "kl_worst_case",
    "load_set",
    "make_set",
    "primal_support",
    "register_set",
    "resolve_set",
    "sample_rule",
    "set_source",
    "sets_with_rule",
    "support_shared",
    "tv_quantile",
    "tv_support",
    "tv_worst_case",
    "unregister_set",
]

# ===== the registry: one line per set =============================================================
SPECS: dict[str, SetSpec] = {
    spec.name: spec
    for spec in (
        contamination.SPEC,
        tv.SPEC,
        kl.SPEC,
        kl_penalty.SPEC,
        chi2.SPEC,
    )
}
SET_NAMES: tuple[str, ...] = tuple(SPECS)
"""The built-in sets (registry order); sets loaded from outside are added to :data:`SPECS` only."""
BUILTIN_SETS: frozenset[str] = frozenset(SET_NAMES)
RHO_RANGES: dict[str, tuple[float, float]] = {name: (s.radius.lo, s.radius.hi) for name, s in SPECS.items()}
ENTRY_POINT_GROUP = "drigm.sets"
"""The entry-point group through which installed packages offer their sets (one entry point per SetSpec)."""
_SOURCES: dict[str, str] = {name: "built-in" for name in SPECS}


def get_spec(name: str) -> SetSpec:
    """The registered set `name` (an installed ``drigm.sets`` entry point of that name is loaded on first use);
    raises UncertaintySetError listing the known sets otherwise."""
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None and isinstance(name, str):
        spec = _from_entry_points(name)
    if spec is None:
        raise UncertaintySetError(f"unknown uncertainty set {name!r}; choose one of {', '.join(SPECS)}")
    return spec


# ===== sets from outside: entry points and module:ATTRIBUTE =======================================
def register_set(spec: object, source: str) -> SetSpec:
    """Add `spec` (loaded from `source`) to :data:`SPECS`; idempotent for the same object.

    Refuses, naming both, anything that is not a SetSpec, a name clash with a built-in set or with another loaded
    set, and a spec whose radius names another set.
    """
    if not isinstance(spec, SetSpec):
        raise UncertaintySetError(f"{source} is a {type(spec).__name__}, not a reference.sets.SetSpec")
    name = spec.name
    if not isinstance(name, str) or not name or ":" in name:
        raise UncertaintySetError(f"{source}: SetSpec.name must be a non-empty string without ':'; got {name!r}")
    if name in BUILTIN_SETS:
        raise UncertaintySetError(
            f"{source} defines a set named {name!r}, which clashes with the built-in set {name!r}; rename it"
        )
    known = SPECS.get(name)
    if known is not None and known is not spec:
        raise UncertaintySetError(
            f"{source} defines a set named {name!r}, which clashes with the set {name!r} already loaded from "
            f"{_SOURCES.get(name, '?')}; rename one of them"
        )
    if spec.radius.set_name != name:
        raise UncertaintySetError(f"{source}: SetSpec {name!r} has a Radius for set {spec.radius.set_name!r}")
    SPECS[name] = spec
    _SOURCES[name] = source
    return spec


def set_source(name: str) -> str:
    """Where the registered set `name` came from: "built-in", ``module:ATTRIBUTE`` or an entry point."""
    return _SOURCES.get(name, "registered directly in SPECS")


def unregister_set(name: str) -> None:
    """Remove a set loaded from outside (tests); built-in sets cannot be removed."""
    if name in BUILTIN_SETS:
        raise UncertaintySetError(f"{name!r} is a built-in set; it cannot be unregistered")
    SPECS.pop(name, None)
    _SOURCES.pop(name, None)


def load_set(ref: str) -> SetSpec:
    """Import ``module:ATTRIBUTE``, check that it is a SetSpec and register it; one-line errors for bad input."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise UncertaintySetError(f"{ref!r} is neither a known set nor module:ATTRIBUTE (e.g. mypkg.sets:SPEC)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UncertaintySetError(f"cannot import module {module_name!r} (from {ref!r}): {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say so in one line
        raise UncertaintySetError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UncertaintySetError(f"module {module_name!r} has no attribute {attr!r}") from None
        obj = getattr(obj, part)
    return register_set(obj, ref)


def _from_entry_points(name: str) -> SetSpec | None:
    """Load the installed ``drigm.sets`` entry point called `name`, if any; None when there is none. Two entry
    points of that name, or one whose SetSpec carries another name, are refused (nothing is registered)."""
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    values = sorted({ep.value for ep in found})
    if len(values) > 1:
        raise UncertaintySetError(
            f"two installed drigm.sets entry points are named {name!r} ({', '.join(values)}); uninstall one"
        )
    if not found:
        return None
    ep = found[0]
    source = f"entry point {ep.name!r} ({ep.value})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise UncertaintySetError(f"cannot load {source}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, SetSpec) and obj.name != name:
        raise UncertaintySetError(f"{source} holds the set {obj.name!r}; the entry point must be named so")
    return register_set(obj, source)


def resolve_set(text: str) -> str:
    """The registered name of `text`: a known or installed set name, or ``module:ATTRIBUTE`` (loaded here)."""
    if isinstance(text, str) and ":" in text:
        return load_set(text).name
    return get_spec(text).name


def sets_with_rule(kind: str) -> tuple[str, ...]:
    """The registered sets that have a sample rule of this kind ("exact" or "paper"), in registry order."""
    return tuple(name for name, spec in SPECS.items() if kind in spec.rules)


def sample_rule(kind: str, set_name: str) -> SampleRule:
    """The sample rule of target kind "none" (any set), "exact" or "paper" for a set; raises naming the options."""
    if kind == "none":
        return NOMINAL_RULE
    spec = get_spec(set_name)
    rule = spec.rules.get(kind)
    if rule is None:
        with_kind = sets_with_rule(kind)
        raise UncertaintySetError(
            f"set {set_name!r} has no {kind!r} sample rule; sets with one: {', '.join(with_kind) or 'none'}"
        )
    return rule


def check_rho(set_name: str, rho: float) -> float:
    """Return `rho` as a float if it lies in the set's allowed range, else raise naming that range."""
    return get_spec(set_name).radius.check(rho)


def support_shared(name: str, kernel: SharedKernel, V: np.ndarray, rho: float) -> np.ndarray:
    """sigma(V) for every row of a prepared kernel and one V shared by all rows; shape kernel.out_shape.

    The set's fast path where it has one, else its general support function on the kernel's rows; the tests
    compare the two on random kernels, and ``benchmarks/bench_set_registry.py`` prints what each fast path saves.
    """
    spec = get_spec(name)
    rho = spec.radius.check(rho)
    V = _shared_v(kernel, V)
    if spec.support_shared is not None:
        out = spec.support_shared(kernel, V, rho)
    else:
        out = spec.support(kernel.P, V, rho, validate=False)
    return np.asarray(out).reshape(kernel.out_shape)


# ===== the set objects ============================================================================
@dataclass(frozen=True)
class UncertaintySet:
    """An (s,a)-rectangular uncertainty set of one kind and radius; the name and rho are validated on creation.

    For "kl-penalty" (the penalised operator inf_p p.V + beta KL(p||p0) used by the neural code),
    ``rho`` holds the temperature beta > 0; its support plays the role of sigma everywhere.
    """

    name: str
    rho: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rho", get_spec(self.name).radius.check(self.rho))  # loads an entry point

    @property
    def spec(self) -> SetSpec:
        """The registered spec of this set."""
        return SPECS[self.name]

    def support(self, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        """sigma(V) for every row of P0: the worst-case expectation of V over the set."""
        return self.spec.support(P0, V, self.rho, validate=validate)

    def support_shared(self, kernel: SharedKernel, V: np.ndarray) -> np.ndarray:
        """sigma(V) for every row of a prepared kernel, V of shape (S,) shared by all rows (fast path)."""
        return support_shared(self.name, kernel, V, self.rho)

    def worst_case(self, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        """A minimiser p* of p.V over the set, for every row of P0 (rows sum to 1)."""
        return self.spec.worst_case(P0, V, self.rho, validate=validate)

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
    spec = get_spec(name)
    if spec.divergence is None:
        raise UncertaintySetError(f"{name} is a penalty, not a ball: it has no radius to measure against")
    return spec.divergence(np.asarray(p, dtype=np.float64), np.asarray(p0, dtype=np.float64))


def primal_support(name: str, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[float, np.ndarray]:
    """min_p p.V over the set around one p0 (shape (S,)), solved by cvxpy/Clarabel to ~1e-9.

    For "kl-penalty" it minimises p.V + beta KL(p || p0) instead. Returns (value, p).
    This is the independent check of the closed forms, not a fast path.
    """
    return solve_primal(get_spec(name), p0, V, rho)


def solve_primal(spec: SetSpec, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[float, np.ndarray]:
    """:func:`primal_support` for the set `spec` itself (registered or not): the infimum of its cvxpy primal."""
    import cvxpy as cp

    name = spec.name
    rho = spec.radius.check(rho)
    p0 = np.asarray(p0, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if p0.ndim != 1 or V.shape != p0.shape:
        raise UncertaintySetError(f"primal_support takes p0 and V of shape (S,); got {p0.shape} and {V.shape}")
    p = cp.Variable(p0.shape[0], nonneg=True)
    objective, cons = spec.primal(cp, p, p0, V, rho)
    prob = cp.Problem(cp.Minimize(objective), [cp.sum(p) == 1, *cons])
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
