"""How often does the README's theory command pass? Consecutive runs of chosen properties, as a user runs them.

    python benchmarks/proofs_check_stability.py [--runs 20] [--only c3_per_agent_robustification,...]

Each round runs every chosen property twice: once as ``python -m proofs_check --profile ci`` does (fixed seeds,
with an example database that persists across rounds, as a user's ``.hypothesis`` folder does), and once with
random seeds at the same example count (what a changed strategy or another Hypothesis version would draw).
It prints one line per run and a pass count per property and mode; exit status 0 when every run passed.
The database is a temporary folder, never the user's. Issue 31: C3 failed 4 runs of 4 before its search and
confirmation shared one definition; tests/test_proofs_check.py runs this at a small count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import os  # noqa: E402

from proofs_check import REGISTRY  # noqa: E402
from proofs_check.runner import run_property  # noqa: E402

DEFAULT = ("c3_per_agent_robustification",)
"""The properties whose stability issue 31 asks for."""


def stability(names: list[str], runs: int, db_dir: Path) -> dict[tuple[str, str], list[bool]]:
    """Pass/fail of `runs` rounds per (property, mode); mode ``ci`` (fixed seeds, persistent database) or
    ``random`` (random seeds, no database, the ci example count)."""
    os.environ["PROOFS_CHECK_DB"] = str(db_dir)
    by_name = {p.name: p for p in REGISTRY}
    out: dict[tuple[str, str], list[bool]] = {}
    for k in range(runs):
        for name in names:
            prop = by_name[name]
            for mode in ("ci", "random"):
                t0 = time.perf_counter()
                if mode == "ci":
                    res = run_property(prop, "ci", database=True)
                else:
                    res = run_property(prop, "thorough", max_examples=prop.ci_examples, database=False)
                out.setdefault((name, mode), []).append(res.passed)
                verdict = "pass" if res.passed else f"FAIL: {res.detail}"
                print(f"[{k + 1}/{runs}] {name} {mode}: {verdict} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--only", default=",".join(DEFAULT), help="comma-separated property names")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    known = {p.name for p in REGISTRY}
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown property name(s) {unknown}; known: {', '.join(sorted(known))}")
    if a.runs < 1:
        ap.error(f"--runs={a.runs} must be >= 1")
    with tempfile.TemporaryDirectory(prefix="proofs-check-db-") as tmp:
        result = stability(names, a.runs, Path(tmp))
    print()
    for (name, mode), passed in result.items():
        print(f"{name} {mode}: {sum(passed)}/{len(passed)} passed")
    return 0 if all(all(p) for p in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
