"""The result tables of docs/results/other-protocols.md, generated from the committed reports (never typed by hand).

Reads each protocol's ``experiments/results/<protocol>[/<scale>]/summary.json`` (written by ``drigm report``) and
renders, per protocol and metric, the mean over training seeds on every test environment, with the runs still
missing or failed. ``--write`` replaces the blocks between ``<!-- protocol-results:NAME:start -->`` and
``<!-- protocol-results:NAME:end -->`` in the document; ``--check`` exits 1 when a block differs from what the
committed results give (a test runs it), 2 when a block's markers are missing.

    python experiments/other_protocols_doc.py [--write | --check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drigm.building_answer import md_table  # noqa: E402
from reference.atomic_io import atomic_write_text  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
DOC = ROOT / "docs" / "results" / "other-protocols.md"

# block name -> (results directory under RESULTS, [(metric key, metric label, number format)])
TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "smax-full": ("smax-3s_vs_5z-noise", [("won", "greedy win rate", ".2f"), ("returns", "return", ".2f")]),
    "smax-reduced": ("smax-3s_vs_5z-noise/reduced", [("won", "greedy win rate", ".2f")]),
    "cogen": ("cogen-renewables", [("returns", "return", ".3g")]),
    "evcharging": ("evcharging-shift", [("returns", "return", ".3g")]),
}


def _cell(c: dict[str, Any] | None, fmt: str) -> str:
    """Mean over seeds, +- its standard error where there are 2+ seeds, and the seed count."""
    if not c or c.get("mean") is None:
        return ""
    n = len(c.get("values") or [])
    se = c.get("se")
    return f"{c['mean']:{fmt}} +- {se:{fmt}} (n={n})" if se is not None else f"{c['mean']:{fmt}} (n={n})"


def render(summary: dict[str, Any], metrics: list[tuple[str, str, str]], source: str) -> str:
    """One protocol's block: a table per metric (methods x test environments) and the runs not yet in it."""
    parts = [f"From `{source}` (protocol `{summary.get('protocol')}`, scale `{summary.get('scale')}`)."]
    for key, label, fmt in metrics:
        by_method = summary.get("metrics", {}).get(key) or {}
        tests: list[str] = []
        for cells in by_method.values():
            tests += [t for t in cells if t not in tests]
        rows = [[m] + [_cell(cells.get(t), fmt) for t in tests] for m, cells in by_method.items()]
        table = md_table(["method", *tests], rows, f"No run has results for {label} yet.")
        parts.append(f"**{label}** (mean over training seeds; n = seeds):\n\n{table}")
    missing = [f"{m} seed {s} (missing)" for m, s in summary.get("missing", [])]
    failed = [f"{m} seed {s} (failed)" for m, s, *_ in summary.get("failed", [])]
    if missing or failed:
        parts.append("Requested runs not in the tables: " + ", ".join(missing + failed) + ".")
    return "\n\n".join(parts)


def blocks(results: Path = RESULTS) -> dict[str, str]:
    """Every generated block of the document, rendered from the committed summaries under `results`."""
    out = {}
    for name, (sub, metrics) in TABLES.items():
        path = results / sub / "summary.json"
        out[name] = render(json.loads(path.read_text()), metrics, f"experiments/results/{sub}/summary.json")
    return out


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of block `name`."""
    return f"<!-- protocol-results:{name}:start -->", f"<!-- protocol-results:{name}:end -->"


def _split(text: str, name: str) -> tuple[str, str, str]:
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the document needs the markers {start} ... {end} exactly once, in that order")
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    return head, body, tail


def main(argv: list[str] | None = None, results: Path = RESULTS, doc: Path = DOC) -> int:
    """``--write`` the blocks into `doc`, or ``--check`` them: 0 when current, 1 when stale, 2 on missing markers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="replace the generated blocks in the document")
    g.add_argument("--check", action="store_true", help="exit 1 when a generated block is stale")
    args = p.parse_args(argv)
    text = doc.read_text()
    new = blocks(results)
    try:
        stale = [name for name, body in new.items() if _split(text, name)[1].strip() != body.strip()]
    except ValueError as exc:
        print(f"{doc}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print(f"{doc}: stale generated blocks {stale}; run python experiments/other_protocols_doc.py --write")
            return 1
        return 0
    for name, body in new.items():
        head, _, tail = _split(text, name)
        start, end = markers(name)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    atomic_write_text(doc, text)
    print(f"{doc}: {len(stale)} block(s) updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
