"""The README's building answer, generated from the committed reports (never typed by hand).

Reads ``experiments/results/building-overview-<preset>.json`` (written by ``drigm report ... --overview``) for each
building preset that has one, and the scores of the paper's own released networks played through drigm
(``experiments/results/paper-checkpoints/summary.json``, written by ``experiments/paper_checkpoints.py``), and
renders the tables that stand beside the paper, in the paper's units. ``--write`` replaces the block between the
README's ``<!-- building-answer:start -->`` and ``<!-- building-answer:end -->`` markers; ``--check`` exits 1 when
the README's block differs from what the committed results give (a test runs it).

    python experiments/building_answer.py [--write | --check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
README = ROOT / "README.md"
START, END = "<!-- building-answer:start -->", "<!-- building-answer:end -->"

# (preset, what it is): the training loops whose runs stand beside the paper, newest first
LOOPS = (
    ("paper", "the paper's loop, its LSTM agent"),
    ("paper-mlp", "the paper's loop, MLP window"),
    ("paper-mlp-joint", "the paper's loop and team-wide exploration, MLP window"),
    ("paper-mlp-v1", "old loop (before issue 30)"),
)
# (method label, row name, the paper's (Tucson, New York) cells or None): the methods of the paper's table that
# drigm has run. The paper's table, in its code's units (climate + season = New York alone), means over 5 seeds.
METHODS = (
    ("qmix-none", "QMIX", (0.895, 0.478)),
    ("qmix-paper-contamination", "QMIX, paper contamination 0.008", (0.911, 0.500)),
    ("qmix-exact-contamination", "QMIX, exact contamination 0.008", (0.911, 0.500)),
    ("qmix-paper-tv", "QMIX, paper TV 0.2", (0.916, 0.520)),
    ("qmix-exact-tv", "QMIX, exact TV 0.2", (0.916, 0.520)),
    ("qmix-paper-tv-rho0.0", "QMIX, paper TV 0.0 (control)", None),
    ("qmix-groupdr-paper", "QMIX, the paper's GroupDR", (0.499, 0.383)),
    ("vdn-none", "VDN", (0.877, 0.440)),
    ("vdn-paper-tv", "VDN, paper TV 0.5", (0.898, 0.627)),
    ("vdn-paper-tv-rho0.0", "VDN, paper TV 0.0 (control)", None),
    ("qtran-none", "QTRAN", (0.816, 0.654)),
    ("qtran-paper-tv", "QTRAN, paper TV 0.2", (0.861, 0.733)),
    ("qtran-paper-tv-rho0.0", "QTRAN, paper TV 0.0 (control)", None),
)
SEASONAL, CLIMATE, HELD_SEASON, HELD_CLIMATE = (
    "building-paper-seasonal",
    "building-paper-climate",
    "building-seasonal",
    "building-climate",
)
HEADER = (
    "| method | trained by | paper's Tucson days | paper | paper's New York days | paper | held-out Tucson days | "
    "held-out days, 5 other climates |\n|---|---|---|---|---|---|---|---|"
)


def _fmt(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    n = len(c.get("values", []))
    se = c.get("se")
    return f"{c['mean']:.3f} +- {se:.3f} (n={n})" if se is not None else f"{c['mean']:.3f} (n={n})"


def _overview(preset: str) -> dict[str, Any] | None:
    path = RESULTS / f"building-overview-{preset}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _checkpoints() -> dict[str, Any] | None:
    path = RESULTS / "paper-checkpoints" / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _cells(source: str, method: str, ov: dict[str, Any] | None, ck: dict[str, Any] | None) -> list[str] | None:
    """(Tucson, New York, held-out Tucson, held-out climates) cells of one method from one source, or None."""
    if source == "checkpoints":
        cells = (ck or {}).get("methods", {}).get(method)
        if not cells:
            return None
        return [_fmt(cells.get(k)) for k in ("paper-tucson", "paper-newyork", "held-out-tucson", "held-out-climates")]
    if ov is None or ov["scores"].get(SEASONAL, {}).get(method) is None:
        return None
    scores, ny = ov["scores"], ov.get("paper_scope_scores", {}).get(CLIMATE, {})
    return [
        _fmt(scores[SEASONAL].get(method)),
        _fmt(ny.get(method)),
        _fmt(scores.get(HELD_SEASON, {}).get(method)),
        _fmt(scores.get(HELD_CLIMATE, {}).get(method)),
    ]


def render() -> str:
    """The README block: every method of the paper's table that drigm has, from each source, beside the paper."""
    ck = _checkpoints()
    sources = [("checkpoints", "the paper's released networks, played in drigm", None)]
    sources += [(preset, f"drigm `{preset}`: {what}", _overview(preset)) for preset, what in LOOPS]
    lines = [HEADER]
    for method, label, paper in METHODS:
        for source, who, ov in sources:
            cells = _cells(source, method, ov, ck)
            if cells is None:
                continue
            pt, pn = (f"{paper[0]:.3f}", f"{paper[1]:.3f}") if paper else ("", "")
            lines.append(f"| {label} | {who} | {cells[0]} | {pt} | {cells[1]} | {pn} | {cells[2]} | {cells[3]} |")
    return "\n".join(lines)


def _split(text: str) -> tuple[str, str, str]:
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    return head, body, tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README's block")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's block is out of date")
    a = ap.parse_args(argv)
    block = render()
    if not (a.write or a.check):
        print(block)
        return 0
    head, body, tail = _split(README.read_text())
    if a.check:
        if body.strip() != block.strip():
            print(
                "README.md's building answer differs from the committed results: run "
                "python experiments/building_answer.py --write",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
