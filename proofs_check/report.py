"""The report: a plain-text table with one row per property, the counterexample games, and the JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proofs_check.runner import MIN_VALID_FRACTION, PropertyResult
from reference.atomic_io import atomic_write_text

_DETAIL_WIDTH = 96


def verdict(res: PropertyResult) -> str:
    """'holds' / 'FAILS' for theorems, 'found' / 'NOT FOUND' for counterexamples."""
    if res.kind == "theorem":
        return "holds" if res.passed else "FAILS"
    return "found" if res.passed else "NOT FOUND"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _detail(res: PropertyResult) -> str:
    if res.worst_gap is not None and res.passed:
        w = res.worst_gap
        side = "optimistic" if w.get("optimistic") else "pessimistic"
        return f"worst gap {abs(w['gap']):.4g} ({w['relative_gap']:.3g} of max|V|, {side}); " + res.detail
    return res.detail


def format_table(results: Sequence[PropertyResult], profile: str = "ci") -> str:
    """The main table: property, kind, docs/theory.md section, examples, valid fraction (examples / (examples +
    rejected); a theorem below runner.MIN_VALID_FRACTION fails), verdict, detail."""
    head = ("property", "kind", "sec", "examples", "valid", "verdict", "time", "detail")
    rows = [
        (
            r.name,
            r.kind,
            r.section,
            str(r.examples),
            f"{r.valid_fraction:.0%}",
            verdict(r),
            f"{r.seconds:.1f}s",
            _clip(_detail(r), _DETAIL_WIDTH),
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = [f"proofs_check: docs/theory.md sections 2-5, profile {profile}", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    n_fail = sum(not r.passed for r in results)
    total = sum(r.seconds for r in results)
    lines.append("")
    lines.append(f"valid = examples / (examples + rejected by assume); a theorem needs >= {MIN_VALID_FRACTION:.0%}")
    lines.append(
        f"{len(results) - n_fail}/{len(results)} passed in {total:.1f}s"
        + (f"; {n_fail} FAILED: {', '.join(r.name for r in results if not r.passed)}" if n_fail else "")
    )
    return "\n".join(lines)


def _array(x: Any) -> str:
    return np.array2string(np.asarray(x, dtype=float), precision=4, suppress_small=True, max_line_width=110)


def format_game(record: dict[str, Any], indent: str = "    ") -> str:
    """A small game: shapes, gamma, set, then P and R arrays and the values that show the point."""
    lines = [
        f"{indent}S={record['S']} actions={record['n_actions']} gamma={record['gamma']:.4g} "
        f"{record['set']}(rho={record['rho']:.4g}) [{record.get('family')}/{record.get('kernel')}]"
    ]
    for key in ("P", "R"):
        body = _array(record[key]).replace("\n", "\n" + indent + "   ")
        lines.append(f"{indent}{key} = {body}")
    for k, v in (record.get("values") or {}).items():
        lines.append(f"{indent}{k}: " + _value_text(v).replace("\n", "\n" + indent + "  "))
    return "\n".join(lines)


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and v:
        try:
            return _array(v)
        except (TypeError, ValueError):  # ragged lists (utilities of agents with different action counts)
            return "[" + ", ".join(_value_text(x) for x in v) + "]"
    return str(v)


def format_counterexamples(results: Sequence[PropertyResult]) -> str:
    """Every confirmed counterexample's shrunk game, and every failed theorem's shrunk falsifying example."""
    blocks = []
    for r in results:
        if r.kind == "counterexample" and r.counterexample is not None:
            blocks.append(f"{r.name} (shrunk, confirmed by the exact solver):\n{format_game(r.counterexample)}")
        elif not r.passed and r.falsifying is not None and "P" in r.falsifying:
            blocks.append(f"{r.name} FAILS on (shrunk):\n{format_game(r.falsifying)}")
        elif not r.passed and r.falsifying is not None:
            blocks.append(f"{r.name} FAILS on (shrunk): {json.dumps(r.falsifying)[:2000]}")
    return "\n\n".join(blocks)


def format_report(results: Sequence[PropertyResult], profile: str = "ci") -> str:
    """The table, then the games."""
    games = format_counterexamples(results)
    return format_table(results, profile) + ("\n\n" + games if games else "")


def write_json(results: Sequence[PropertyResult], path: str | os.PathLike[str]) -> Path:
    """Write the list of objects of docs/game-format.md to `path` atomically (temporary file, then os.replace)."""
    payload = json.dumps([r.to_json() for r in results], indent=1, allow_nan=False, default=_default)
    return atomic_write_text(path, payload, make_parents=True)


def _default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
