"""Choosing rho on validation: for each rho curve, the rho with the best score on a validation protocol that shares
the runs (never on a test day set), and the chosen run's scores on each day set beside its closest matched control.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drigm import stats
from drigm.collect import AVERAGE, Collected, seed_average, seed_means
from drigm.comparisons import controls, paired_average_diffs, rho_of
from drigm.markdown import ci_text, md_table
from drigm.rho_curves import rho_families
from drigm.stats import cell

MIN_SELECT_SEEDS = 3  # a radius with fewer validation seeds cannot be chosen (the rho grid runs 3+ seeds per radius)


def rho_selection(
    val: Collected, cols: list[Collected], key: str, min_seeds: int = MIN_SELECT_SEEDS
) -> tuple[list[str], dict[str, Any]]:
    """Overview lines and data: per rho curve, the rho with the highest validation score (the average over `val`'s
    test environments, mean over seeds; ties go to the smaller rho), and that run's scores on each day set, paired
    with its closest matched control there. Only radii with at least `min_seeds` validation seeds compete (listed
    as excluded otherwise), on the seeds they all share. A curve with fewer than two such radii is listed with
    ``chosen_rho`` None, never dropped."""
    data: dict[str, Any] = {"validation": val.proto.name, "min_seeds": min_seeds, "families": {}}
    rows = []
    for fam, all_pts in rho_families(list(val.results), rho_of(val.proto)).items():
        pts = [(r, m) for r, m in all_pts if len(val.results.get(m, {})) >= min_seeds]
        excluded = {r: len(val.results.get(m, {})) for r, m in all_pts if (r, m) not in pts}
        cand = []
        if pts:
            # compared on the seeds every competing radius has, so that no radius wins by its seeds
            common = sorted(set.intersection(*(set(val.results.get(m, {})) for _, m in pts)))
            for rho, m in pts:
                per_seed = [seed_average(val.results[m][s], key) for s in common]
                vals = [v for v in per_seed if v is not None]
                if vals and len(vals) == len(common):
                    cand.append((rho, m, float(np.mean(vals)), len(vals)))
        entry: dict[str, Any] = {
            "chosen_rho": None,
            "chosen": None,
            "validation": {str(r): {"method": m, "mean": v, "n": n} for r, m, v, n in cand},
            "excluded": {str(r): n for r, n in excluded.items()},
            "tests": {},
        }
        by_rho = ", ".join(f"{r:g}: {v:.3f} (n={n})" for r, _, v, n in cand)
        if excluded:
            by_rho += ("; " if by_rho else "") + "too few seeds: "
            by_rho += ", ".join(f"{r:g} (n={n})" for r, n in sorted(excluded.items()))
        data["families"][fam] = entry
        if len(cand) < 2:  # listed, so that a curve still short of seeds is visible, but nothing is chosen
            rows.append([fam, by_rho, f"none: fewer than 2 radii with {min_seeds}+ seeds", *["-" for _ in cols]])
            continue
        rho, chosen, _, _ = max(cand, key=lambda c: (c[2], -c[0]))
        entry["chosen_rho"], entry["chosen"] = rho, chosen
        row = [fam, by_rho, f"{rho:g}"]
        for c in cols:
            vals = seed_means(c, chosen, AVERAGE, key)
            ctrl = next(iter(controls(c, chosen)), None)
            diffs = paired_average_diffs(c, chosen, ctrl, key)[0] if ctrl else []
            d, t_ci = (cell(diffs), stats.t_interval(diffs)) if diffs else (None, None)
            entry["tests"][c.proto.name] = {
                "score": cell(vals).__dict__ if vals else None,
                "control": ctrl,
                "versus_control": {**d.__dict__, "t_ci": t_ci} if d else None,
            }
            text = f"{cell(vals).fmt()} (n={len(vals)})" if vals else "missing"
            if d is not None:
                text += f"; vs {ctrl}: {d.fmt()} t {ci_text(t_ci)}"
            elif ctrl is None and vals:
                text += "; it is the control"
            row.append(text)
        rows.append(row)
    lines = [
        f"## Rho chosen on validation ({val.proto.name})",
        "",
        f"{val.proto.description} For each rho curve, the rho with the highest validation {key} (average over the "
        f"validation environments, mean over the seeds every competing radius has: n) is chosen there, never on a "
        f"day set below; a radius competes once it has {min_seeds} or more validation seeds. Then the chosen "
        "run's score on each day set and its paired difference with its closest matched control: mean +- SE "
        "[bootstrap CI] t [Student-t CI].",
        "",
    ]
    if rows:
        header = ["family", f"validation {key} by rho", "chosen rho", *[c.proto.name for c in cols]]
        lines += [md_table(header, rows), ""]
    if not any(e["chosen_rho"] is not None for e in data["families"].values()):
        lines += [f"No rho curve has validation results at two or more radii with {min_seeds}+ seeds yet.", ""]
    return lines, data
