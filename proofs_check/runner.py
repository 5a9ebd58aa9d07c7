"""Run registered properties through Hypothesis, programmatically, and collect one result per property.

Profiles: ``ci`` (a fixed seed per property, CI-sized example counts) and ``thorough`` (random seeds, ten
times the examples). Hypothesis's example database lives in ``.hypothesis/proofs_check`` at the repository
root (gitignored), or where the environment variable ``PROOFS_CHECK_DB`` points; failures found once are
replayed first on the next run.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings, target
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.errors import UnsatisfiedAssumption

from proofs_check.properties import REGISTRY, ConfirmationError, FalsifiedError, Property, get_property, to_jsonable


@dataclass(frozen=True)
class Profile:
    """How hard to search: a multiplier on each property's CI example count, and whether seeds are fixed."""

    name: str
    factor: float
    fixed_seed: bool
    description: str


SEARCH_ATTEMPTS = 3  # independent searches for a counterexample before it is reported as not found
MIN_VALID_FRACTION = 0.2
"""A theorem holds only if at least this fraction of the examples its check was given were valid (not rejected by
an ``assume``): a property that rejects nearly everything has tested nearly nothing, so it fails instead."""

PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", 1.0, True, "fixed seeds, CI-sized example counts (under 5 minutes on 2 cores)"),
    "thorough": Profile("thorough", 10.0, False, "random seeds, ten times the examples"),
}


def get_profile(name: str) -> Profile:
    """The named profile; raises ValueError naming the known profiles."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass
class PropertyResult:
    """The outcome of one property: the docs/game-format.md keys (name, kind, examples, passed) plus details."""

    name: str
    kind: str
    section: str
    claim: str
    examples: int
    passed: bool
    seconds: float
    detail: str
    counterexample: dict[str, Any] | None = None
    falsifying: dict[str, Any] | None = None
    worst_gap: dict[str, Any] | None = None
    error: str | None = None
    rejected: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def valid_fraction(self) -> float:
        """examples / (examples + rejected): the share of drawn examples that the check did not reject (1 if none)."""
        total = self.examples + self.rejected
        return self.examples / total if total else 1.0

    def to_json(self) -> dict[str, Any]:
        """The docs/game-format.md object: name, kind, examples, passed (+ counterexample), plus extra keys."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "examples": self.examples,
            "passed": self.passed,
            "section": self.section,
            "claim": self.claim,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "rejected": self.rejected,
            "valid_fraction": round(self.valid_fraction, 4),
        }
        if self.kind == "counterexample":
            out["counterexample"] = self.counterexample
        for key in ("falsifying", "worst_gap", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def database_path() -> Path:
    """Where Hypothesis keeps examples: $PROOFS_CHECK_DB, else <repo>/.hypothesis/proofs_check."""
    env = os.environ.get("PROOFS_CHECK_DB")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    root = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return root / ".hypothesis" / "proofs_check"


def _settings(n: int, db: ExampleDatabase | None, shrink: bool) -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if shrink:
        phases.append(Phase.shrink)
    return settings(
        max_examples=max(1, n),
        deadline=None,
        database=db,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=phases,
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )


def _hypothesis(
    label: str,
    prop: Property,
    body: Callable[[Any], None],
    n: int,
    profile: Profile,
    db: ExampleDatabase | None,
    shrink: bool,
    attempt: int = 0,
) -> None:
    body._hypothesis_internal_add_digest = label.encode()  # type: ignore[attr-defined]  # one db key per property
    test = given(prop.strategy)(body)
    if profile.fixed_seed:
        test = seed(zlib.crc32(f"{label}#{attempt}".encode() if attempt else label.encode()))(test)
    test = _settings(n, db, shrink)(test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow inside exp() that numpy then discards
        test()


def _summary(case: Any) -> str:
    return case.summary() if hasattr(case, "summary") else ""


def _record(case: Any, values: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if case is None and not values:
        return None
    out = dict(case.to_dict()) if hasattr(case, "to_dict") else {}
    if values:
        out["values"] = to_jsonable(values)
    return out


def run_property(
    prop: Property | str,
    profile: str = "ci",
    *,
    max_examples: int | None = None,
    database: bool = True,
    shrink: bool = True,
) -> PropertyResult:
    """Run one property under Hypothesis and return its result; never raises for a failing property."""
    prop = get_property(prop) if isinstance(prop, str) else prop
    prof = get_profile(profile)
    n = max_examples if max_examples is not None else max(1, math.ceil(prop.ci_examples * prof.factor))
    db = DirectoryBasedExampleDatabase(str(database_path())) if database else None
    counts = {"examples": 0, "rejected": 0}
    last_failure: dict[str, Any] = {"case": None}
    worst: dict[str, Any] = {"value": -math.inf, "info": None, "case": None}
    start = time.perf_counter()

    def counted(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        def body(case: Any) -> None:
            try:
                fn(case)
            except UnsatisfiedAssumption:
                counts["rejected"] += 1
                raise
            except BaseException:
                counts["examples"] += 1
                last_failure["case"] = case  # Hypothesis re-runs the shrunk example last
                raise
            counts["examples"] += 1

        return body

    def measured(case: Any) -> None:
        assert prop.measure is not None
        value, info = prop.measure(case)
        target(value, label=prop.name)
        if value > worst["value"]:
            worst.update(value=value, info=info, case=case)

    falsified: FalsifiedError | None = None
    error: BaseException | None = None
    try:
        if prop.measure is not None:  # first look for the worst gap (Hypothesis targets it), then shrink one
            _hypothesis(f"{prop.name}:measure", prop, counted(measured), n, prof, db, shrink=False)
        # a counterexample search that comes back empty is retried with fresh seeds (fixed ones under ci)
        attempts = SEARCH_ATTEMPTS if prop.kind == "counterexample" else 1
        for attempt in range(attempts):
            _hypothesis(prop.name, prop, counted(prop.check), n, prof, db, shrink, attempt)
    except FalsifiedError as exc:
        falsified = exc
    except Exception as exc:  # a crash in a theorem is a failure of that theorem, reported by type
        error = exc

    res = PropertyResult(
        name=prop.name,
        kind=prop.kind,
        section=prop.section,
        claim=prop.claim,
        examples=counts["examples"],
        passed=False,
        seconds=0.0,
        detail="",
        rejected=counts["rejected"],
    )
    if worst["info"] is not None:
        info = worst["info"]
        res.worst_gap = {**to_jsonable(info), "game": _record(worst["case"])}
    if prop.kind == "theorem":
        if falsified is not None:
            res.detail = f"FALSIFIED: {falsified.message}; {_summary(falsified.case)}".rstrip("; ")
            res.falsifying = _record(falsified.case, falsified.values) or {"message": falsified.message}
        elif error is not None:
            res.detail = f"{type(error).__name__}: {_first_line(error)}; {_summary(last_failure['case'])}".rstrip("; ")
            res.error = res.detail
            res.falsifying = _record(last_failure["case"])
        elif res.valid_fraction < MIN_VALID_FRACTION:
            res.detail = (
                f"TOO FEW VALID EXAMPLES: {res.examples} of {res.examples + res.rejected} "
                f"({res.valid_fraction:.0%}) passed the check's assumptions, below the bound {MIN_VALID_FRACTION:.0%}"
            )
            res.error = res.detail
        else:
            res.passed = True
            res.detail = prop.claim
    else:
        if falsified is not None:
            found = falsified
            falsified = _reduce(prop, falsified)
            try:
                assert prop.confirm is not None
                try:
                    res.counterexample = prop.confirm(falsified)
                except ConfirmationError:
                    if falsified is found:
                        raise
                    # the reduction can lose what made the found case a counterexample: confirm the found one
                    res.counterexample = prop.confirm(found)
                    falsified = found
                res.passed = True
                res.detail = f"{falsified.message}; {_summary(falsified.case)}"
            except ConfirmationError as exc:
                res.detail = f"found but not confirmed: {exc}"
                res.error = res.detail
                res.falsifying = _record(falsified.case, falsified.values)
            except Exception as exc:
                res.detail = f"confirmation crashed: {type(exc).__name__}: {_first_line(exc)}"
                res.error = res.detail
        elif error is not None:
            res.detail = f"{type(error).__name__}: {_first_line(error)}"
            res.error = res.detail
        else:
            res.detail = f"NOT FOUND in {counts['examples']} examples"
    res.seconds = time.perf_counter() - start
    return res


def _reduce(prop: Property, found: FalsifiedError, budget: int = 60) -> FalsifiedError:
    """Greedily remove states and actions from a shrunk counterexample while the property still fails."""
    current = found
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        reductions = current.case.reductions() if hasattr(current.case, "reductions") else []
        for smaller in reductions:
            tries += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    prop.check(smaller)
            except FalsifiedError as exc:
                current, progress = exc, True
                break
            except Exception:  # a reduced game the check cannot handle is simply not used
                pass
            if tries >= budget:
                break
    return current


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else repr(exc)


def select(names: Iterable[str] | None = None, kind: str | None = None) -> list[Property]:
    """Registered properties in order, optionally only the named ones (unknown names raise KeyError)."""
    props = list(REGISTRY) if not names else [get_property(n) for n in names]
    return [p for p in props if kind is None or p.kind == kind]


def run_all(
    profile: str = "ci",
    names: Iterable[str] | None = None,
    *,
    progress: bool = True,
    database: bool = True,
) -> list[PropertyResult]:
    """Run every registered property (or the named ones) under `profile`; progress goes to stderr."""
    get_profile(profile)
    props = select(names)
    results: list[PropertyResult] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(props), file=sys.stderr, unit="property", dynamic_ncols=True)
    try:
        for prop in props:
            if bar is not None:
                bar.set_postfix_str(prop.name)
            results.append(run_property(prop, profile, database=database))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results
