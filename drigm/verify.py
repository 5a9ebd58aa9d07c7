"""``drigm verify SET [--quick|--thorough] [--json FILE]``: hold any uncertainty set to what drigm's own sets pass.

SET is a built-in name, the name of an installed ``drigm.sets`` entry point, or ``module:ATTRIBUTE`` (a
:class:`reference.sets.SetSpec`). The numpy/cvxpy checks live in :mod:`reference.set_checks`; this module adds the
torch ones (every sample rule gives the same numbers on numpy arrays and torch tensors; the neural fixed point of
VDN, QMIX and QTRAN under the exact-expectation harness equals the reference solver's Q*_rob within 1e-3) and the
command: a table of checks with a verdict and the worst error of each. Exit status 0 when no check failed, 1 when
one did, 2 on bad input (unknown set or module, an attribute that is not a SetSpec, a name clash with a built-in).
A check the set cannot take (no primal, no sample rule) is "not applicable"; a check that a mode leaves out (the
neural fixed point under --quick) is "skipped"; neither is ever "passed".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reference import set_checks as sc
from reference.atomic_io import atomic_write_text
from reference.sets import SampleRule, SetSpec, get_spec, resolve_set

HARNESS_TOL = 1e-3
HARNESS_UPDATES = {"vdn": 1200, "qmix": 4800, "qtran": 2400}  # as tests/test_exact_harness.py


@dataclass(frozen=True)
class Mode:
    """How many cases each check draws, and which mixers the neural fixed point runs."""

    name: str
    primal_rows: int
    rows: int
    examples: int
    rule_cases: int
    mixers: tuple[str, ...]


MODES = {
    "quick": Mode("quick", 6, 15, 40, 20, ()),
    "default": Mode("default", 12, 30, 100, 40, ("vdn",)),
    "thorough": Mode("thorough", 24, 60, 400, 80, ("vdn", "qmix", "qtran")),
}


# ===== the torch checks ===========================================================================
def check_rule_torch(spec: SetSpec, kind: str, rule: SampleRule, seed: int = 3) -> sc.CheckResult:
    """The rule's continuation and aux loss agree on numpy arrays and float64 torch tensors (1e-12 relative)."""
    import torch

    from drigm.targets import TORCH_OPS
    from reference.sets import NUMPY_OPS

    name = f"{kind} rule: numpy = torch"
    t = sc._Tracker(name, 1e-12)
    rng = np.random.default_rng(seed)

    def as_t(x: object) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float64)

    for rho in sc.check_radii(spec, 2):
        v = rng.normal(size=64) * 2
        aux = rng.normal(size=(64, len(rule.aux_outputs))) if rule.needs_aux else None
        if aux is not None:
            aux[:, [i for i, o in enumerate(rule.aux_outputs) if o == "spread"]] **= 2
        shift = m = float(v.min())
        try:
            view_np = rule.aux_view(NUMPY_OPS, aux, rho, shift) if aux is not None else None
            view_t = rule.aux_view(TORCH_OPS, as_t(aux), rho, as_t(shift)) if aux is not None else None
            pairs = [
                (
                    rule.continuation(NUMPY_OPS, v, view_np, m, rho, shift),
                    rule.continuation(TORCH_OPS, as_t(v), view_t, as_t(m), rho, as_t(shift)),
                )
            ]
            if rule.aux_loss is not None:
                pairs.append(
                    (
                        rule.aux_loss(NUMPY_OPS, v, view_np, rho, shift),
                        rule.aux_loss(TORCH_OPS, as_t(v), view_t, rho, as_t(shift)),
                    )
                )
        except Exception as exc:
            t.fail(f"rho={rho:g}: the rule raised {exc!r}", {"rho": rho})
            continue
        for a, b in pairs:
            a = np.broadcast_to(np.asarray(a, dtype=float), v.shape)
            b = np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b, dtype=float)
            err = float(np.nanmax(np.abs(a - b) / (1.0 + np.abs(a)))) if a.shape == b.shape else math.inf
            if np.any(np.isnan(a) != np.isnan(b)):
                err = math.inf
            t.see(err, f"rho={rho:g}: numpy and torch differ by {err:.3g}", {"rho": rho, "v": v})
    return t.result()


def harness_radius(spec: SetSpec) -> float:
    """The radius the neural fixed point runs at: 0.3 (beta: 1.0) where the range holds it, else mid-range."""
    want = 0.3 if spec.radius.symbol == "rho" else 1.0
    lo, top = spec.radius.lo, min(spec.radius.hi, spec.test_top)
    inside = (lo < want if spec.radius.open_low else lo <= want) and want <= top
    return want if inside else 0.5 * (lo + top)


def check_fixed_point(spec: SetSpec, mixer: str, updates: int | None = None, seed: int = 0) -> sc.CheckResult:
    """The real Learner with `mixer` and the set's exact rule, driven by exact expectations on
    ``additive_control_game``, ends within HARNESS_TOL (relative, sup norm) of the reference Q*_rob."""
    name = f"neural fixed point ({mixer})"
    if "exact" not in spec.rules:
        return sc.CheckResult(name, sc.NOT_APPLICABLE, detail="the set has no exact sample rule")
    if spec.radius.symbol not in ("rho", "beta"):
        return sc.CheckResult(
            name, sc.NOT_APPLICABLE, detail=f"drigm's target reads rho or beta; the set names {spec.radius.symbol!r}"
        )
    import torch

    from drigm.exact_harness import ExactHarness, harness_config, reference_q
    from reference.game import additive_control_game

    torch.set_num_threads(1)
    radius = harness_radius(spec)
    target = {"kind": "exact", "set": spec.name, spec.radius.symbol: radius}
    game = additive_control_game()
    t = sc._Tracker(name, HARNESS_TOL)
    try:
        harness = ExactHarness(game, harness_config(game, mixer, target), seed=seed)
        harness.run(HARNESS_UPDATES[mixer] if updates is None else updates, lr_decay_from=0.8)
        res = harness.result(target)
    except Exception as exc:
        t.fail(f"the learner raised {type(exc).__name__}: {exc}", {"target": target})
        return t.result()
    nominal = reference_q(game, {"kind": "none"})
    gap = float(np.max(np.abs(res.q_ref - nominal)) / max(1.0, np.max(np.abs(res.q_ref))))
    t.see(
        res.rel_error,
        f"{spec.radius.symbol}={radius:g}: ||Q_tot - Q*_rob|| / ||Q*_rob|| = {res.rel_error:.3g} after "
        f"{res.updates} updates",
        {"target": target, "q_tot": res.q_tot, "q_ref": res.q_ref},
    )
    out = t.result()
    if out.verdict == sc.PASSED:
        out.detail = f"{spec.radius.symbol}={radius:g}; Q*_rob is {gap:.3g} (relative) from the nominal Q*"
    return out


# ===== the run ====================================================================================
def run_checks(
    spec: SetSpec, mode: Mode, out_dir: Path | None = None, set_ref: str | None = None
) -> Iterator[sc.CheckResult]:
    """Every check of `mode` on `spec`, in table order."""
    yield sc.check_primal(spec, mode.primal_rows)
    yield sc.check_worst_case(spec, mode.rows)
    yield sc.check_members(spec, mode.rows)
    yield sc.check_fast_path(spec)
    yield from sc.check_properties(spec, mode.examples, out_dir, set_ref)
    if not spec.rules:
        yield sc.CheckResult("sample rule", sc.NOT_APPLICABLE, detail="the set registers no sample rule")
    for kind, rule in spec.rules.items():
        yield sc.check_rule_expectation(spec, kind, rule, mode.rule_cases)
        yield sc.check_rule_aux_minimises(spec, kind, rule, mode.rule_cases)
        yield check_rule_torch(spec, kind, rule)
    for mixer in ("vdn", "qmix", "qtran"):
        if mixer in mode.mixers:
            yield check_fixed_point(spec, mixer)
        else:
            skipped = "--thorough" if mode.name == "default" else "the default mode (vdn) or --thorough"
            yield sc.CheckResult(
                f"neural fixed point ({mixer})", sc.SKIPPED, detail=f"not run in {mode.name} mode; use {skipped}"
            )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def print_table(spec_name: str, source: str, mode: Mode, results: list[sc.CheckResult], seconds: float) -> None:
    """The table of checks, then every failure's detail and counterexample files, then the overall verdict."""
    print(f"drigm verify {spec_name} ({source}), {mode.name} mode")
    width = max(len(r.name) for r in results)
    print(f"  {'check'.ljust(width)}  {'verdict':<14}  {'worst error':>11}  {'tolerance':>9}  {'cases':>5}")
    for r in results:
        print(
            f"  {r.name.ljust(width)}  {r.verdict:<14}  {_fmt(r.worst_error):>11}  {_fmt(r.tolerance):>9}  {r.cases:>5}"
        )
    for r in results:
        if r.verdict in (sc.NOT_APPLICABLE, sc.SKIPPED):
            print(f"{r.verdict} {r.name}: {r.detail}")
    failed = [r for r in results if r.verdict == sc.FAILED]
    for r in failed:
        print(f"FAILED {r.name}: {r.detail}")
        for f in r.files:
            print(f"  counterexample written to {f}")
    counts = {v: sum(r.verdict == v for r in results) for v in (sc.PASSED, sc.FAILED, sc.NOT_APPLICABLE, sc.SKIPPED)}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    print(f"{'FAILED' if failed else 'PASSED'}: {summary} ({seconds:.1f} s)")


def add_verify_parser(sub: Any) -> None:
    """Register ``drigm verify`` on the subparsers of the drigm CLI."""
    v = sub.add_parser("verify", help="check an uncertainty set (yours or a built-in) against the exact solver")
    v.add_argument("set", help="a built-in set, an installed drigm.sets entry point, or module:ATTRIBUTE (a SetSpec)")
    speed = v.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer cases, no neural fixed point (seconds)")
    speed.add_argument("--thorough", action="store_true", help="more cases, VDN, QMIX and QTRAN fixed points (minutes)")
    v.add_argument("--json", type=Path, metavar="FILE", help="also write every check's result to FILE")
    v.add_argument(
        "--counterexamples",
        type=Path,
        default=Path("drigm-verify-counterexamples"),
        metavar="DIR",
        help="where a failed property writes its counterexample game (default ./drigm-verify-counterexamples)",
    )


def verify_main(args: argparse.Namespace) -> int:
    """Run ``drigm verify``: 0 when no check failed, 1 otherwise (bad input raises UncertaintySetError: exit 2)."""
    start = time.perf_counter()
    name = resolve_set(args.set)
    spec = get_spec(name)
    from reference.sets import set_source

    mode = MODES["quick" if args.quick else "thorough" if args.thorough else "default"]
    results = list(run_checks(spec, mode, args.counterexamples, args.set))
    seconds = time.perf_counter() - start
    print_table(name, set_source(name), mode, results, seconds)
    ok = all(r.ok for r in results)
    if args.json is not None:
        record = {
            "set": name,
            "source": set_source(name),
            "mode": mode.name,
            "passed": ok,
            "seconds": seconds,
            "checks": [r.as_json() for r in results],
        }
        atomic_write_text(args.json, json.dumps(record, indent=1, allow_nan=False, default=str) + "\n")
    sys.stdout.flush()
    return 0 if ok else 1
