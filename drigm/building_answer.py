"""The building answer, rendered from the committed results (never typed by hand).

Reads ``experiments/results/building-overview-<preset>.json`` (written by ``drigm report ... --overview``) for each
building preset that has one, and the scores of the paper's own released networks played through drigm
(``experiments/results/paper-checkpoints/summary.json``, written by ``experiments/paper_checkpoints.py``), and
renders, in the paper's units, the blocks of ``docs/results/building.md`` (the full tables) and the README's one
table. Each block sits between ``<!-- building-answer:NAME:start -->`` and ``<!-- building-answer:NAME:end -->``;
:func:`write` replaces the blocks and :func:`stale` names those that differ from what the results give.

``experiments/building_answer.py`` is the command line; ``drigm demo`` prints the README's block. Only json and
pathlib are imported: no torch, no report machinery.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (drigm is installed in editable mode; the committed results live beside it)."""
RESULTS = ROOT / "experiments" / "results"
README = ROOT / "README.md"
DOC = ROOT / "docs" / "results" / "building.md"
DOC_LINK = "docs/results/building.md"
"""Where the README's table links to (relative to the repository root)."""

BEST_LOOP = "paper"
"""The preset of the README's table: the current best loop (the paper's loop with its LSTM agent)."""

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
CK_KEYS = ("paper-tucson", "paper-newyork", "held-out-tucson", "held-out-climates")
"""The four day sets of the released networks' summary, in the order of :data:`DAY_SETS`."""
DAY_SETS = ("paper's Tucson days", "paper's New York days", "held-out Tucson days", "held-out days, 5 other climates")
# the README's table: the methods of the best loop, the non-robust one first, then the robust one and its control
README_METHODS = ("qmix-none", "qmix-paper-tv", "qmix-paper-tv-rho0.0")
README_ROBUST, README_NONE, README_CONTROL = "qmix-paper-tv", "qmix-none", "qmix-paper-tv-rho0.0"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    """A markdown table, or the sentence `empty` when there is no data row (a table is never emitted empty)."""
    if not rows:
        return empty
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {list(row)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    n = len(c.get("values", []))
    se = c.get("se")
    return f"{c['mean']:.3f} +- {se:.3f} (n={n})" if se is not None else f"{c['mean']:.3f} (n={n})"


def _diff(c: dict[str, Any] | None, t_key: str = "t_ci") -> str:
    """A paired difference with its Student-t 95% CI, bold where the interval excludes 0."""
    if not c or c.get(t_key) is None:
        return ""
    lo, hi = c[t_key]
    text = f"{c['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def _values(c: dict[str, Any] | None) -> str:
    return ", ".join(f"{v:.3f}" for v in c["values"]) if c and c.get("values") else ""


@dataclass
class Results:
    """The committed results the answer is built from: the released networks' summary and each preset's overview."""

    checkpoints: dict[str, Any] | None
    overviews: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, results: Path = RESULTS) -> Results:
        """Read the committed files under `results` (a missing file is a missing source, not an error)."""
        results = Path(results)
        if not results.is_dir():
            raise FileNotFoundError(
                f"no committed results at {results}: the building answer needs drigm's repository (an editable install)"
            )
        ck_path = results / "paper-checkpoints" / "summary.json"
        ck = json.loads(ck_path.read_text()) if ck_path.is_file() else None
        overviews = {}
        for preset, _ in LOOPS:
            path = results / f"building-overview-{preset}.json"
            if path.is_file():
                overviews[preset] = json.loads(path.read_text())
        return cls(ck, overviews)

    def released(self, method: str) -> dict[str, Any] | None:
        """The released networks' cells of one method (keys :data:`CK_KEYS`), or None."""
        return (self.checkpoints or {}).get("methods", {}).get(method)

    def preset_cells(self, preset: str, method: str) -> list[dict[str, Any] | None] | None:
        """A preset's four cells of one method, in the order of :data:`DAY_SETS`, or None without its runs."""
        ov = self.overviews.get(preset)
        if ov is None or ov["scores"].get(SEASONAL, {}).get(method) is None:
            return None
        scores, ny = ov["scores"], ov.get("paper_scope_scores", {}).get(CLIMATE, {})
        return [
            scores[SEASONAL].get(method),
            ny.get(method),
            scores.get(HELD_SEASON, {}).get(method),
            scores.get(HELD_CLIMATE, {}).get(method),
        ]

    def cells(self, source: str, method: str) -> list[dict[str, Any] | None] | None:
        """One method's four cells from one source ('checkpoints' or a preset), or None."""
        if source == "checkpoints":
            ck = self.released(method)
            return None if not ck else [ck.get(k) for k in CK_KEYS]
        return self.preset_cells(source, method)

    def versus(self, preset: str, protocol: str, robust: str, ref: str) -> dict[str, Any] | None:
        """A preset's paired comparison of `robust` with `ref` (non-robust or a control) on one protocol, or None."""
        ov = self.overviews.get(preset) or {}
        if ref == README_NONE:
            return ov.get("versus_none", {}).get(protocol, {}).get(robust)
        return ov.get("versus_control", {}).get(protocol, {}).get(robust, {}).get(ref)


def _sources(res: Results) -> list[tuple[str, str]]:
    out = [("checkpoints", "the paper's released networks, played in drigm")]
    return out + [(p, f"drigm `{p}`: {what}") for p, what in LOOPS if p in res.overviews]


def render_table(res: Results) -> str:
    """Every method of the paper's table that drigm has, from each source, beside the paper's cells."""
    rows = []
    for method, label, paper in METHODS:
        for source, who in _sources(res):
            cells = res.cells(source, method)
            if cells is None:
                continue
            pt, pn = (f"{paper[0]:.3f}", f"{paper[1]:.3f}") if paper else ("", "")
            c = [_fmt(x) for x in cells]
            rows.append([label, who, c[0], pt, c[1], pn, c[2], c[3]])
    header = ["method", "trained by", DAY_SETS[0], "paper", DAY_SETS[1], "paper", DAY_SETS[2], DAY_SETS[3]]
    return md_table(header, rows, "No building results are committed yet.")


def render_released_match(res: Results, full: int = 5) -> str:
    """One sentence: how far the released networks' means are from the paper's cells, for the methods whose
    `full` seeds are all released (the paper's cells are means over its 5 seeds)."""
    gaps, names, partial = [], [], []
    for method, label, paper in METHODS:
        ck = res.released(method)
        if ck is None or paper is None:
            continue
        cells = [ck.get(k) for k in CK_KEYS[:2]]
        if any(c is None or len(c.get("values", [])) != full for c in cells):
            partial.append(label)
            continue
        names.append(label)
        gaps += [abs(c["mean"] - ref) for c, ref in zip(cells, paper, strict=True) if c is not None]
    if not gaps:
        return "No released network with all its seeds has been scored yet."
    text = (
        f"For the {len(names)} methods whose {full} seeds are released ({'; '.join(names)}), the means of their "
        f"networks played through drigm differ from the paper's {len(gaps)} cells by at most {max(gaps):.4f}."
    )
    if partial:
        text += f" Not compared (fewer seeds released): {'; '.join(partial)}."
    return text


def render_checkpoint_controls(res: Results) -> str:
    """The released networks' paired per-seed comparisons (robust minus its control or non-robust), t 95% CIs."""
    rows = []
    for comp in (res.checkpoints or {}).get("comparisons", []):
        cells = [_diff(comp.get(k)) for k in CK_KEYS]
        if any(cells):
            n = max(len(comp[k]["diffs"]) for k in CK_KEYS if comp.get(k))
            rows.append([f"{comp['label']} (n={n})", *cells])
    return md_table(["released networks", *DAY_SETS], rows, "No paired comparison of the released networks yet.")


def render_versus(res: Results, preset: str = BEST_LOOP) -> str:
    """A preset's robust TV 0.2 against non-robust QMIX and its rho = 0 control on each day set, paired by seed."""
    rows = []
    labels = (
        (SEASONAL, "the paper's Tucson days"),
        (CLIMATE, "the paper's climate days (5 climates)"),
        (HELD_SEASON, "held-out Tucson days"),
        (HELD_CLIMATE, "held-out days, 5 other climates"),
    )
    ov = res.overviews.get(preset)
    for protocol, label in labels:
        if ov is None:
            break
        scores = ov["scores"].get(protocol, {})
        means = [scores.get(m) for m in (README_ROBUST, README_NONE, README_CONTROL)]
        vn = res.versus(preset, protocol, README_ROBUST, README_NONE)
        vc = res.versus(preset, protocol, README_ROBUST, README_CONTROL)
        if not any(means):
            continue
        n = " / ".join(str(len(c.get("values", []))) if c else "0" for c in means)
        rows.append([label, *(f"{c['mean']:.3f}" if c else "" for c in means), _diff(vn, "t_ci"), _diff(vc, "t_ci"), n])
    header = [
        "day set",
        "TV 0.2",
        "non-robust",
        "rho = 0 control",
        "TV minus non-robust",
        "TV minus control",
        "seeds (TV / non-robust / control)",
    ]
    return md_table(header, rows, f"No `{preset}` runs of paper TV 0.2 are committed yet.")


def render_seeds(res: Results, preset: str = BEST_LOOP) -> str:
    """Per-seed scores (in the order of the seeds) of a preset's runs and of the released networks."""
    rows = []
    for method, label, _ in METHODS:
        for source, who in (("checkpoints", "released networks"), (preset, f"drigm `{preset}`")):
            cells = res.cells(source, method)
            if cells is not None and (source == "checkpoints" or method in README_METHODS):
                rows.append([label, who, *(_values(c) for c in cells)])
    return md_table(["method", "trained by", *DAY_SETS], rows, "No per-seed scores are committed yet.")


def render_readme(res: Results, preset: str = BEST_LOOP) -> str:
    """The README's one table: the main methods of the best loop beside the paper, and their paired differences."""
    rows = []
    for method, label, paper in METHODS:
        if method not in README_METHODS:
            continue
        cells = res.preset_cells(preset, method)
        if cells is None:  # the paper's row stands only beside drigm's
            continue
        if paper is not None:
            rows.append(
                [
                    f"{label}, the paper's table (5 seeds)",
                    f"{paper[0]:.3f}",
                    f"{paper[1]:.3f}",
                    "not tested",
                    "not tested",
                ]
            )
        rows.append([f"{label}, drigm `{preset}`", *(_fmt(c) for c in cells)])
    for ref in (README_NONE, README_CONTROL):
        diffs = [res.versus(preset, p, README_ROBUST, ref) for p in (SEASONAL, HELD_SEASON, HELD_CLIMATE)]
        if any(diffs):
            name = "non-robust" if ref == README_NONE else "its rho = 0 control"
            cells = [_diff(d) for d in diffs]
            rows.append([f"paper TV 0.2 minus {name}, paired by seed", cells[0], "n/a", cells[1], cells[2]])
    table = md_table(["QMIX", *DAY_SETS], rows, f"No `{preset}` results are committed yet.")
    return (
        f"{table}\n\nScore = (R + 9000) / 9000 with R the sum of the six agents' rewards (the paper's units; higher is "
        "better); mean +- SE over seeds (n = seeds); differences: mean [Student-t 95% CI] over seeds, bold where it "
        "excludes 0 (n/a: the report pairs seeds on the five climates of the paper's days, not on New York alone). "
        "Held-out days are 200-364, which the paper never tests. Every method, source and comparison: "
        f"[{DOC_LINK}]({DOC_LINK})."
    )


RENDERERS: dict[str, dict[str, Callable[[Results], str]]] = {
    "readme": {"readme": render_readme},
    "doc": {
        "released-match": render_released_match,
        "checkpoint-controls": render_checkpoint_controls,
        "versus": render_versus,
        "seeds": render_seeds,
        "table": render_table,
    },
}
"""Per document ('readme', 'doc'), its generated blocks and what renders each."""


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of block `name`."""
    return f"<!-- building-answer:{name}:start -->", f"<!-- building-answer:{name}:end -->"


def blocks(res: Results, doc: str) -> dict[str, str]:
    """Every generated block of one document ('readme' or 'doc'), rendered from `res`."""
    if doc not in RENDERERS:
        raise ValueError(f"unknown document {doc!r}; known: {sorted(RENDERERS)}")
    return {name: fn(res) for name, fn in RENDERERS[doc].items()}


def _split(text: str, name: str, where: str) -> tuple[str, str, str]:
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{where} needs the markers {start} ... {end} exactly once, in that order")
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    return head, body, tail


def replace_blocks(text: str, new: dict[str, str], where: str = "the document") -> str:
    """`text` with each named block's body replaced by its new content."""
    for name, block in new.items():
        head, _, tail = _split(text, name, where)
        start, end = markers(name)
        text = f"{head}{start}\n{block}\n{end}{tail}"
    return text


def stale(text: str, new: dict[str, str], where: str = "the document") -> list[str]:
    """The names of the blocks of `text` that differ from the rendered ones."""
    return [name for name, block in new.items() if _split(text, name, where)[1].strip() != block.strip()]


def documents(readme: Path = README, doc: Path = DOC) -> dict[str, Path]:
    """The documents that carry generated blocks, by their key in :data:`RENDERERS`."""
    return {"readme": readme, "doc": doc}
