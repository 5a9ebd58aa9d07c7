"""What every uncertainty set must pass, as functions of a :class:`~reference.sets.SetSpec` (numpy and cvxpy only).

``drigm verify`` runs these on a researcher's own set (and on every built-in one); each returns a
:class:`CheckResult` with a verdict ("passed", "FAILED", or "not applicable" when the set lacks what the check
needs: no primal, no divergence, no sample rule), the worst error seen and the tolerance it was held to.

- :func:`check_primal`: the closed-form support function against the cvxpy primal on random rows (dense, sparse,
  deterministic) at radii including both ends of the range (a finite top where the range is unbounded);
- :func:`check_worst_case`: the worst case is a distribution inside the set that attains the support function;
- :func:`check_members`: the sampler's members lie inside the set, and none has a value below the support function;
- :func:`check_fast_path`: the shared-V fast path equals the general support function;
- :func:`check_properties`: docs/theory.md section 2 (monotone, translation-equivariant, concave, below the nominal,
  monotone in the radius) as Hypothesis properties; a failure's shrunk counterexample is written as a game file
  that ``python -m reference solve`` reads back, beside a JSON of the property's inputs;
- :func:`check_rules`: every sample rule's expected continuation at its exact auxiliary value equals its operator
  (the support function for exact rules), and that value minimises the expected auxiliary loss.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reference.atomic_io import atomic_write_text
from reference.sets import NUMPY_OPS, SampleRule, SetSpec, solve_primal

PASSED, FAILED, NOT_APPLICABLE, SKIPPED = "passed", "FAILED", "not applicable", "skipped"
ROW_KINDS = ("dense", "sparse", "deterministic")
PRIMAL_TOL = 1e-6  # of the scale of V: cvxpy/Clarabel's accuracy, as in proofs_check's sigma_matches_primal
EXACT_TOL = 1e-8  # of the scale of V: closed forms keep ~15 digits; this leaves room for sums over 6 states
MEMBER_TOL = 1e-9  # relative slack on D(p, p0) <= rho


@dataclass
class CheckResult:
    """One check's verdict, the worst (scaled) error it saw, the tolerance, and the first failure in words."""

    name: str
    verdict: str
    worst_error: float | None = None
    tolerance: float | None = None
    cases: int = 0
    detail: str = ""
    counterexample: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True unless the verdict is FAILED (not applicable and skipped checks do not fail a run)."""
        return self.verdict != FAILED

    def as_json(self) -> dict[str, Any]:
        """The result as plain JSON types."""
        return {
            "check": self.name,
            "verdict": self.verdict,
            "worst_error": _jsonable(self.worst_error),
            "tolerance": self.tolerance,
            "cases": self.cases,
            "detail": self.detail,
            "counterexample": _jsonable(self.counterexample),
            "files": self.files,
        }


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # "inf" / "nan": JSON has no such numbers
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


class _Tracker:
    """Accumulates the worst scaled error of a check and its first failure."""

    def __init__(self, name: str, tol: float) -> None:
        self.name, self.tol = name, tol
        self.worst = 0.0
        self.cases = 0
        self.failure: str = ""
        self.example: dict[str, Any] | None = None

    def see(self, err: float, what: str, example: dict[str, Any]) -> None:
        self.cases += 1
        err = float(err) if not math.isnan(err) else math.inf
        self.worst = max(self.worst, err)
        if err > self.tol and not self.failure:
            self.failure, self.example = what, example

    def fail(self, what: str, example: dict[str, Any]) -> None:
        self.cases += 1
        self.worst = math.inf
        if not self.failure:
            self.failure, self.example = what, example

    def guarded(self, what: str, example: dict[str, Any], fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None after recording a failure when the set's own code raises (a set's exception is its
        failure, never a traceback of the check)."""
        try:
            with np.errstate(all="ignore"):
                return fn(*args)
        except Exception as exc:
            self.fail(f"{what} raised {exc!r}", example)
            return None

    def result(self) -> CheckResult:
        if not self.failure and self.cases == 0:  # nothing was checked: never a pass
            return CheckResult(self.name, NOT_APPLICABLE, detail="no case could be checked")
        verdict = FAILED if self.failure else PASSED
        return CheckResult(self.name, verdict, self.worst, self.tol, self.cases, self.failure, self.example)


# ===== what the checks draw =======================================================================
def check_radii(spec: SetSpec, n_inner: int = 2) -> list[float]:
    """Both ends of the set's radius range (``test_top`` where it is unbounded; just above an open lower end) and
    `n_inner` radii inside, spaced geometrically from 1% to half of the range: a wide range's small radii are where
    a ball still binds (a KL ball of radius 7 holds nearly every row's minimum, one of radius 0.2 does not)."""
    lo, top = spec.radius.lo, min(spec.radius.hi, spec.test_top)
    bottom = lo + 1e-3 * (top - lo) if spec.radius.open_low else lo
    fractions = np.geomspace(0.01, 0.5, n_inner) if n_inner > 1 else np.array([0.1] * n_inner)
    inner = [float(bottom + (top - bottom) * f) for f in fractions]
    return [float(bottom), float(top), *inner]


def random_rows(seed: int, n: int, max_states: int = 6) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`n` (kind, p0, V): dense, sparse and deterministic rows over 1..max_states states; every other V has ties."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = ROW_KINDS[k % 3]
        S = int(rng.integers(1, max_states + 1)) if k >= 3 else max(2, max_states // 2)
        p = rng.dirichlet(np.full(S, 0.7))
        if kind == "sparse" and S > 1:
            p = np.where(rng.random(S) < 0.4, 0.0, p)
            p[rng.integers(S)] += 0.1
            p /= p.sum()
        elif kind == "deterministic":
            p = np.eye(S)[rng.integers(S)]
        V = rng.normal(size=S) * 3.0
        if k % 2 == 0:
            V = np.round(V)
        out.append((kind, p, V))
    return out


def _scale(*arrays: Any) -> float:
    return max([1.0] + [float(np.max(np.abs(a))) for a in arrays if np.size(a)])


def _sigma(spec: SetSpec, p0: np.ndarray, V: np.ndarray, rho: float) -> float:
    return float(np.asarray(spec.support(p0, V, rho)).reshape(-1)[0])


def primal_at(spec: SetSpec, p: np.ndarray, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[float, float]:
    """(objective, largest constraint violation) of the set's cvxpy primal at the point p; (nan, inf) on failure."""
    import cvxpy as cp

    x = cp.Variable(p0.shape[0], nonneg=True)
    x.value = np.maximum(np.asarray(p, dtype=float), 0.0)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            objective, cons = spec.primal(cp, x, p0, V, rho)
            value = float(np.asarray(objective.value))
            viol = max([0.0] + [float(np.max(np.asarray(c.violation()))) for c in cons])
    except Exception:
        return math.nan, math.inf
    return value, viol if not math.isnan(viol) else math.inf


def _inside(spec: SetSpec, p: np.ndarray, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[bool, str]:
    """Whether p is a distribution inside U(p0): by the divergence (balls), else by the primal's constraints."""
    if np.any(p < -1e-12) or abs(float(p.sum()) - 1.0) > 1e-9:
        return False, f"not a distribution (min {p.min():.3g}, sum {p.sum():.12g})"
    if spec.divergence is not None:
        d = float(spec.divergence(np.maximum(p, 0.0), p0))
        if not d <= rho * (1.0 + MEMBER_TOL) + 1e-12:
            return False, f"D(p, p0) = {d:.6g} > rho = {rho:.6g}"
        return True, ""
    if spec.primal is None:
        return True, "unchecked"  # callers report membership as not checked, never as passed
    _, viol = primal_at(spec, p, p0, V, rho)
    if not viol <= 1e-9 * (1.0 + rho):
        return False, f"violates the primal's constraints by {viol:.3g}"
    return True, ""


def _value(spec: SetSpec, p: np.ndarray, p0: np.ndarray, V: np.ndarray, rho: float) -> float:
    """What p costs in the support function's infimum: p.V for a ball, the primal's objective for a penalty."""
    if spec.divergence is not None or spec.primal is None:
        return float(np.maximum(p, 0.0) @ V)
    return primal_at(spec, p, p0, V, rho)[0]


# ===== the checks =================================================================================
def check_primal(spec: SetSpec, n_rows: int = 12, seed: int = 0) -> CheckResult:
    """The closed form equals the cvxpy primal (within PRIMAL_TOL of the scale of V) on random rows and radii.

    Where they differ with the closed form below, it still passes when its own worst case satisfies the primal's
    constraints and attains it in the primal's objective (cvxpy stopped early above the optimum): the witness is
    judged by the primal, never by the set's own divergence.
    """

    name = "closed form = cvxpy primal"
    if spec.primal is None:
        return CheckResult(name, NOT_APPLICABLE, detail="the set has no cvxpy primal")
    t = _Tracker(name, PRIMAL_TOL)
    for rho in check_radii(spec):
        for kind, p0, V in random_rows(seed, n_rows):
            example = {"p0": p0, "V": V, "rho": rho, "rows": kind}
            closed = t.guarded("the support function", example, _sigma, spec, p0, V, rho)
            if closed is None:
                continue
            example["closed_form"] = closed
            try:
                primal, _ = solve_primal(spec, p0, V, rho)
            except Exception as exc:
                t.fail(f"cvxpy failed on {kind} row p0={np.round(p0, 4)}, rho={rho:g}: {exc}", example)
                continue
            err = abs(closed - primal) / _scale(V)
            if err > PRIMAL_TOL and closed < primal:
                p_star = t.guarded("worst_case", example, spec.worst_case, p0, V, rho)
                if p_star is None:
                    continue
                p_star = np.asarray(p_star, dtype=float).reshape(-1)
                objective, viol = primal_at(spec, p_star, p0, V, rho)
                distribution = bool(np.all(p_star >= -1e-12)) and abs(float(p_star.sum()) - 1.0) <= 1e-9
                if distribution and viol <= 1e-9 * (1.0 + rho) and abs(objective - closed) <= PRIMAL_TOL * _scale(V):
                    err = 0.0  # the closed form is attained by a primal-feasible point: cvxpy is inaccurate here
            t.see(
                err,
                f"{kind} row p0={np.round(p0, 4).tolist()}, V={np.round(V, 4).tolist()}, rho={rho:g}: closed form "
                f"{closed:.9g} != primal {primal:.9g}",
                {**example, "cvxpy": primal},
            )
    return t.result()


def check_worst_case(spec: SetSpec, n_rows: int = 30, seed: int = 1) -> CheckResult:
    """Every worst case is a distribution inside the set whose value equals the support function (EXACT_TOL)."""
    name = "worst case inside the set, attains sigma"
    if spec.divergence is None and spec.primal is None:
        return CheckResult(name, NOT_APPLICABLE, detail="neither a divergence nor a primal says what is inside")
    t = _Tracker(name, EXACT_TOL)
    for rho in check_radii(spec, 3):
        for kind, p0, V in random_rows(seed, n_rows):
            example = {"p0": p0, "V": V, "rho": rho, "rows": kind}
            p_star = t.guarded("worst_case", example, spec.worst_case, p0, V, rho)
            sig = None if p_star is None else t.guarded("the support function", example, _sigma, spec, p0, V, rho)
            if sig is None:
                continue
            p_star = np.asarray(p_star, dtype=float).reshape(-1)
            example.update({"p_star": p_star, "sigma": sig})
            ok, why = _inside(spec, p_star, p0, V, rho)
            if not ok:
                t.fail(f"{kind} row p0={np.round(p0, 4).tolist()}, rho={rho:g}: p* {why}", example)
                continue
            value = _value(spec, p_star, p0, V, rho)
            t.see(
                abs(value - sig) / _scale(V),
                f"{kind} row p0={np.round(p0, 4).tolist()}, V={np.round(V, 4).tolist()}, rho={rho:g}: p* has value "
                f"{value:.9g}, sigma is {sig:.9g}",
                example,
            )
    return t.result()


def check_members(spec: SetSpec, n_rows: int = 30, seed: int = 2) -> CheckResult:
    """The sampler's members (boundary and interior) lie inside the set and none is below sigma (EXACT_TOL)."""
    name = "sampler members inside, none below sigma"
    if spec.member is None:
        return CheckResult(name, NOT_APPLICABLE, detail="the set has no member sampler")
    rng = np.random.default_rng(seed)
    t = _Tracker(name, EXACT_TOL)
    unchecked = 0
    for rho in check_radii(spec, 3):
        for kind, p0, V in random_rows(seed, n_rows):
            base = {"p0": p0, "V": V, "rho": rho, "rows": kind}
            sig = t.guarded("the support function", base, _sigma, spec, p0, V, rho)
            if sig is None:
                continue
            for boundary in (True, False):
                p = t.guarded("member", base, spec.member, p0, rho, rng, boundary)
                if p is None:
                    continue
                p = np.asarray(p, dtype=float)
                example = {**base, "member": p, "boundary": boundary}
                ok, why = _inside(spec, p, p0, V, rho)
                if why == "unchecked":
                    unchecked += 1
                if not ok:
                    t.fail(f"{kind} row p0={np.round(p0, 4).tolist()}, rho={rho:g}: a member is {why}", example)
                    continue
                below = (sig - _value(spec, p, p0, V, rho)) / _scale(V)
                t.see(
                    max(below, 0.0),
                    f"{kind} row p0={np.round(p0, 4).tolist()}, V={np.round(V, 4).tolist()}, rho={rho:g}: a member "
                    f"has value {sig - below * _scale(V):.9g} below sigma {sig:.9g}, the infimum over the set",
                    example,
                )
    res = t.result()
    if unchecked:
        res.detail = (
            f"{unchecked} members' membership unchecked (the set has neither a divergence nor a primal); only "
            "'none below sigma' was checked for them"
        ) + (f"; {res.detail}" if res.detail else "")
    return res


def check_fast_path(spec: SetSpec, seed: int = 3) -> CheckResult:
    """The shared-V fast path equals the general support function on random kernels (EXACT_TOL)."""
    from reference.sets import SharedKernel

    name = "shared-V fast path = support"
    if spec.support_shared is None:
        return CheckResult(name, NOT_APPLICABLE, detail="the set has no shared-V fast path")
    rng = np.random.default_rng(seed)
    t = _Tracker(name, EXACT_TOL)
    for rho in check_radii(spec, 3):
        for S in (1, 2, 5):
            P0 = rng.dirichlet(np.full(S, 0.7), size=12)
            P0[::3] = np.eye(S)[rng.integers(S, size=P0[::3].shape[0])]
            V = np.round(rng.normal(size=S) * 3.0, 1)
            example = {"P0": P0, "V": V, "rho": rho}
            fast = t.guarded("support_shared", example, spec.support_shared, SharedKernel(P0), V, rho)
            slow = None if fast is None else t.guarded("support", example, spec.support, P0, V, rho)
            if slow is None:
                continue
            err = float(np.max(np.abs(np.asarray(fast).reshape(-1) - np.asarray(slow).reshape(-1)))) / _scale(V)
            t.see(err, f"rho={rho:g}, S={S}: fast path differs by {err:.3g}", example)
    return t.result()


# ===== THEORY's properties, by Hypothesis ==========================================================
@dataclass(frozen=True)
class Property:
    """A property of the support function over a draw (p0, V, W, c, rho, rho2); `check` returns the violation."""

    name: str
    statement: str
    check: Callable[[SetSpec, dict[str, Any]], tuple[float, dict[str, Any]]]
    needs: str = ""


def _p_monotone(spec: SetSpec, d: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    W = d["V"] + np.abs(d["W"])
    a, b = _sigma(spec, d["p0"], d["V"], d["rho"]), _sigma(spec, d["p0"], W, d["rho"])
    return (a - b) / _scale(d["V"], W), {"V_le": W, "sigma_V": a, "sigma_W": b}


def _p_translation(spec: SetSpec, d: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    c = d["c"]
    a, b = _sigma(spec, d["p0"], d["V"], d["rho"]), _sigma(spec, d["p0"], d["V"] + c, d["rho"])
    return abs(b - a - c) / _scale(d["V"], c), {"sigma_V": a, "sigma_V_plus_c": b}


def _p_concave(spec: SetSpec, d: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    V, W, p0, rho = d["V"], d["W"], d["p0"], d["rho"]
    mid = _sigma(spec, p0, 0.5 * (V + W), rho)
    a, b = _sigma(spec, p0, V, rho), _sigma(spec, p0, W, rho)
    return (0.5 * (a + b) - mid) / _scale(V, W), {"sigma_mid": mid, "sigma_V": a, "sigma_W": b}


def _p_below_nominal(spec: SetSpec, d: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    p0, V, rho = d["p0"], d["V"], d["rho"]
    s, nominal = _sigma(spec, p0, V, rho), float(p0 @ V)
    err = (s - nominal) / _scale(V)
    if spec.divergence is not None and rho == spec.radius.lo == 0.0:
        err = abs(s - nominal) / _scale(V)  # a ball of radius 0 is {p0}
    return err, {"sigma": s, "nominal": nominal}


def _p_monotone_radius(spec: SetSpec, d: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    p0, V = d["p0"], d["V"]
    r1, r2 = sorted((d["rho"], d["rho2"]))
    s1, s2 = _sigma(spec, p0, V, r1), _sigma(spec, p0, V, r2)
    err = (s2 - s1) if spec.divergence is not None else (s1 - s2)  # a penalty's temperature: the other way
    return err / _scale(V), {"rho_small": r1, "rho_large": r2, "sigma_small": s1, "sigma_large": s2}


PROPERTIES: tuple[Property, ...] = (
    Property("sigma monotone", "V <= W implies sigma(V) <= sigma(W)", _p_monotone),
    Property("sigma translation-equivariant", "sigma(V + c) = sigma(V) + c", _p_translation),
    Property("sigma concave", "sigma((V + W) / 2) >= (sigma(V) + sigma(W)) / 2", _p_concave),
    Property("sigma below nominal", "sigma(V) <= p0.V (= at radius 0 for a ball)", _p_below_nominal),
    Property(
        "sigma monotone in radius",
        "a ball: non-increasing in rho; a penalty: non-decreasing in its temperature",
        _p_monotone_radius,
    ),
)


def _draws(spec: SetSpec, max_states: int = 6) -> Any:
    """The Hypothesis strategy of property inputs: p0 (dense, sparse, deterministic), V, W, c, rho, rho2."""
    from hypothesis import strategies as st

    radii = check_radii(spec, 2)
    lo, top = min(radii), max(radii)
    rho = st.one_of(st.sampled_from(radii), st.floats(lo, top, allow_nan=False))
    reals = st.one_of(st.integers(-10, 10).map(float), st.floats(-10, 10, allow_nan=False, allow_subnormal=False))

    @st.composite
    def draw(data: Any) -> dict[str, Any]:
        S = data(st.integers(1, max_states))
        kind = data(st.sampled_from(ROW_KINDS))
        if kind == "deterministic":
            w = np.zeros(S)
            w[data(st.integers(0, S - 1))] = 1.0
        else:
            w = np.array(data(st.lists(st.integers(0 if kind == "sparse" else 1, 6), min_size=S, max_size=S)), float)
            if w.sum() == 0:
                w[0] = 1.0
        vec = st.lists(reals, min_size=S, max_size=S).map(lambda xs: np.array(xs, dtype=float))
        return {
            "rows": kind,
            "p0": w / w.sum(),
            "V": data(vec),
            "W": data(vec),
            "c": data(reals),
            "rho": data(rho),
            "rho2": data(rho),
        }

    return draw()


class _PropertyViolationError(Exception):
    """Raised inside a Hypothesis run when a draw violates the property (a set's own AssertionError is not one)."""


def check_property(
    spec: SetSpec, prop: Property, max_examples: int = 100, out_dir: Path | None = None, set_ref: str | None = None
) -> CheckResult:
    """Hold `prop` on `max_examples` Hypothesis draws (derandomised); a failure reports the shrunk draw and, with
    `out_dir`, writes it as a game file plus JSON (:func:`write_counterexample`)."""
    from hypothesis import HealthCheck, given, settings

    t = _Tracker(prop.name, EXACT_TOL)
    last: dict[str, Any] = {}

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(_draws(spec))
    def run(d: dict[str, Any]) -> None:
        with np.errstate(all="ignore"):
            err, values = prop.check(spec, d)
        t.worst = max(t.worst, err if not math.isnan(err) else math.inf)
        t.cases += 1
        if not err <= EXACT_TOL:
            last.clear()
            last.update({**d, **values, "violation": err})
            raise _PropertyViolationError(prop.name)

    try:
        run()
    except _PropertyViolationError:
        pass
    except Exception as exc:  # the set's own code raised on a valid draw: that is a failure of the set
        return CheckResult(prop.name, FAILED, math.inf, EXACT_TOL, t.cases, f"the support function raised {exc!r}")
    if not last:
        if t.cases == 0:
            return CheckResult(prop.name, NOT_APPLICABLE, detail="no draw could be checked")
        return CheckResult(prop.name, PASSED, t.worst, EXACT_TOL, t.cases)
    ex = dict(last)  # the shrunk counterexample: Hypothesis replays the minimal failing draw last
    detail = (
        f"{prop.statement} fails (violation {ex['violation']:.3g}) at p0={np.round(ex['p0'], 6).tolist()}, "
        f"V={np.round(ex['V'], 6).tolist()}, "
        + (f"rho={ex['rho_small']:g} -> {ex['rho_large']:g}" if "rho_large" in ex else f"rho={ex['rho']:g}")
    )
    res = CheckResult(prop.name, FAILED, t.worst, EXACT_TOL, t.cases, detail, ex)
    if out_dir is not None:
        res.files = write_counterexample(spec, prop, ex, out_dir, set_ref or spec.name)
    return res


def counterexample_game(p0: np.ndarray, V: np.ndarray, gamma: float = 0.0) -> Any:
    """A one-agent, one-action game whose every state moves by p0 and pays V: at gamma = 0 its values are V, and
    one Bellman step of the set's operator from V is r + gamma sigma(V) (the solver replays sigma on p0)."""
    from reference.game import Game

    S = p0.size
    P = np.broadcast_to(p0, (S, 1, S)).copy()
    return Game(P=P, R=np.asarray(V, dtype=float).reshape(S, 1), gamma=gamma, name="counterexample")


def write_counterexample(spec: SetSpec, prop: Property, ex: dict[str, Any], out_dir: Path, set_ref: str) -> list[str]:
    """Write `ex` as ``<out_dir>/<set>-<property>.npz`` (read back by :func:`reference.game.load_game`) and .json."""
    from reference.game import load_game, save_game

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{spec.name}-{prop.name.replace(' ', '-')}"
    game = counterexample_game(np.asarray(ex["p0"]), np.asarray(ex["V"]), gamma=0.5)
    path = save_game(game, stem.with_suffix(".npz"))
    back = load_game(path)  # the file must be one the solver reads
    assert np.allclose(back.P, game.P) and np.allclose(back.R, game.R)
    record = {
        "set": spec.name,
        "property": prop.name,
        "statement": prop.statement,
        "inputs": _jsonable(ex),
        "game": str(path),
        "replay": f"python -m reference solve {path} --set {set_ref} --rho {float(ex['rho'])!r}",
        "not_in_the_game": [k for k in ("W", "c", "rho2", "rho_small", "rho_large") if k in ex],
        "note": "every state of the game moves by p0 and pays V (one agent, one action)",
    }
    json_path = stem.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(record, indent=1) + "\n")
    return [str(path), str(json_path)]


def check_properties(
    spec: SetSpec, max_examples: int = 100, out_dir: Path | None = None, set_ref: str | None = None
) -> Iterator[CheckResult]:
    """Every property of :data:`PROPERTIES`, one result each."""
    for prop in PROPERTIES:
        yield check_property(spec, prop, max_examples, out_dir, set_ref)


# ===== the sample rules (numpy) ===================================================================
def _rule_cases(spec: SetSpec, seed: int, n: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    radii = check_radii(spec, 3)
    for k, (kind, p0, V) in enumerate(random_rows(seed, n)):
        yield kind, p0, V, radii[k % len(radii)]


def expected_continuation(rule: SampleRule, p0: np.ndarray, V: np.ndarray, rho: float) -> tuple[float, Any]:
    """E_{s' ~ p0} of the rule's continuation with m_hat = min V, the shift c = min of V on supp(p0) and the aux at
    ``exact_aux``; returns (that expectation, the aux)."""
    shift = float(V[p0 > 0].min())
    aux = None if rule.exact_aux is None else np.asarray(rule.exact_aux(p0, V, rho, shift), dtype=float)
    cont = rule.continuation(NUMPY_OPS, V, aux, V.min(), rho, shift)
    return float(np.sum(np.where(p0 > 0, p0 * np.broadcast_to(cont, V.shape), 0.0))), aux


def check_rule_expectation(spec: SetSpec, kind: str, rule: SampleRule, n: int = 40, seed: int = 4) -> CheckResult:
    """With s' ~ p0 and the aux at ``exact_aux``, the expected continuation equals the rule's operator, and for an
    exact rule the operator is the support function (EXACT_TOL of the scale of V)."""
    name = f"{kind} rule: E[continuation] = " + ("sigma" if kind == "exact" else "its operator")
    if rule.needs_aux and rule.exact_aux is None:
        return CheckResult(name, FAILED, detail="the rule needs an auxiliary value but has no exact_aux")
    t = _Tracker(name, EXACT_TOL)
    for rows, p0, V, rho in _rule_cases(spec, seed, n):
        got, aux = expected_continuation(rule, p0, V, rho)
        want = float(np.asarray(rule.operator(p0, V, rho)).reshape(-1)[0])
        ex = {"p0": p0, "V": V, "rho": rho, "rows": rows, "aux": aux, "expected": got, "operator": want}
        t.see(abs(got - want) / _scale(V), f"{rows} row, rho={rho:g}: E[continuation] {got:.9g} != {want:.9g}", ex)
        if kind == "exact":
            sig = _sigma(spec, p0, V, rho)
            t.see(abs(want - sig) / _scale(V), f"{rows} row, rho={rho:g}: operator {want:.9g} != sigma {sig:.9g}", ex)
    return t.result()


def check_rule_aux_minimises(spec: SetSpec, kind: str, rule: SampleRule, n: int = 40, seed: int = 5) -> CheckResult:
    """``exact_aux`` minimises the expected auxiliary loss: no move of any output (+-1e-3, +-0.1 relative) lowers it."""
    name = f"{kind} rule: exact aux minimises its loss"
    if not rule.needs_aux:
        return CheckResult(name, NOT_APPLICABLE, detail="the rule has no auxiliary value")
    if rule.aux_loss is None or rule.exact_aux is None:
        return CheckResult(name, FAILED, detail="the rule needs an auxiliary value but has no aux_loss/exact_aux")
    t = _Tracker(name, 1e-9)
    for rows, p0, V, rho in _rule_cases(spec, seed, n):
        shift = float(V[p0 > 0].min())
        aux = np.asarray(rule.exact_aux(p0, V, rho, shift), dtype=float)
        if not np.all(np.isfinite(aux)):  # e.g. chi2 at rho = 0: the optimum is at infinity
            continue

        def expected(
            a: np.ndarray, p0: np.ndarray = p0, V: np.ndarray = V, rho: float = rho, s: float = shift
        ) -> float:
            return float(np.sum(np.where(p0 > 0, p0 * rule.aux_loss(NUMPY_OPS, V, a, rho, s), 0.0)))

        base = expected(aux)
        flat = aux.reshape(-1)
        worst = 0.0
        for i in range(flat.size):
            for step in (1e-3, -1e-3, 0.1, -0.1):
                moved = flat.copy()
                moved[i] += step * max(1.0, abs(flat[i]))
                if rule.aux_outputs[i % len(rule.aux_outputs)] == "spread" and moved[i] <= 0:
                    continue
                drop = (base - expected(moved.reshape(aux.shape))) / (1.0 + abs(base))
                worst = max(worst, drop if not math.isnan(drop) else math.inf)
        t.see(
            worst,
            f"{rows} row p0={np.round(p0, 4).tolist()}, V={np.round(V, 4).tolist()}, rho={rho:g}: a move of the aux "
            f"lowers the expected loss by {worst:.3g} (relative)",
            {"p0": p0, "V": V, "rho": rho, "aux": aux},
        )
    return t.result()


def check_rules(spec: SetSpec, n: int = 40) -> Iterator[CheckResult]:
    """Both numpy checks for every sample rule the set registers; one not-applicable result when it has none."""
    if not spec.rules:
        yield CheckResult("sample rule", NOT_APPLICABLE, detail="the set registers no sample rule (no neural target)")
        return
    for kind, rule in spec.rules.items():
        yield check_rule_expectation(spec, kind, rule, n)
        yield check_rule_aux_minimises(spec, kind, rule, n)
