"""Score against rho: which runs form a robust family's rho curve, and its plot (``rho.png`` of a report).

A family is ``algo-target-set`` (exact or paper targets; ``discount`` controls form their own curve beside
contamination's). Its points are its methods at every rho the sweeps trained: an untagged method sits at the
protocol's rho for (set, algo), a tagged one at its tag's rho. Contamination at rho = 0 is the non-robust target
with the same schedule, so ``algo-none`` is that curve's (and the discount curve's) rho = 0 point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drigm.figures import png_bytes
from drigm.protocol import DISCOUNT_SETS, ProtocolError, parse_method
from reference.atomic_io import atomic_write_bytes

RhoOf = Callable[[str, str], float | None]
"""(set, algo) -> the protocol's rho for that pair, or None when it has none."""


def rho_families(methods: Sequence[str], rho_of: RhoOf) -> dict[str, list[tuple[float, str]]]:
    """{family: [(rho, method), ...] sorted by rho} for every family with at least two points.

    A method whose rho cannot be known (untagged, and the protocol has no rho for its pair) is left out.
    """
    fams: dict[str, dict[float, str]] = {}
    for m in methods:
        try:
            algo, target, set_name, rho = parse_method(m)
        except ProtocolError:
            continue
        if target in ("none", "schedule") or set_name is None:  # a schedule control has a set but no rho
            continue
        if rho is None:
            rho = rho_of(set_name, algo)
            if rho is None:
                continue
        fams.setdefault(f"{algo}-{target}-{set_name}", {})[float(rho)] = m
    for fam, pts in fams.items():
        algo, _, set_name, _ = parse_method(fam)
        none = f"{algo}-none"
        if set_name in DISCOUNT_SETS and none in methods and 0.0 not in pts:
            pts[0.0] = none
    return {f: sorted(p.items()) for f, p in sorted(fams.items()) if len(p) >= 2}


def rho_set_of(family: str) -> str:
    """The uncertainty set a rho family belongs to, as :func:`parse_method` reads it (``qmix-exact-tv`` -> ``tv``,
    ``qtran-exact-kl-penalty`` -> ``kl-penalty``)."""
    return str(parse_method(family)[2])


def plot_rho_curves(
    curves: dict[str, dict[str, list[tuple[float, float, float]]]], tests: Sequence[str], ylabel: str, path: Path
) -> None:
    """One panel per (uncertainty set, test environment): mean +- SE over seeds against rho, one line per family.

    `curves` is {family: {test: [(rho, mean, se), ...]}}; written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one row of panels per uncertainty set: contamination radii (<= 0.02) and TV radii (<= 0.5) on one axis
    # would squeeze the contamination curves against rho = 0
    sets = sorted({rho_set_of(f) for f in curves})
    ncols = max(len(tests), 1)
    fig, axes = plt.subplots(max(len(sets), 1), ncols, figsize=(3.6 * ncols, 3.0 * max(len(sets), 1)), squeeze=False)
    colour = {fam: f"C{i % 10}" for i, fam in enumerate(curves)}  # one colour per family in every panel
    seen: dict[str, Any] = {}
    for row, set_name in zip(axes, sets or [""], strict=False):
        for ax, test in zip(row, tests, strict=False):
            for fam, per in curves.items():
                pts = per.get(test, [])
                if rho_set_of(fam) != set_name or not pts:
                    continue
                x = [p[0] for p in pts]
                y = [p[1] for p in pts]
                e = [p[2] for p in pts]
                style: dict[str, Any] = {"linestyle": "--"} if "-discount-" in fam else {}
                style["color"] = colour[fam]
                h = ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=fam, **style)
                seen.setdefault(fam, h)
            ax.set_title(f"{test}: {set_name}" if set_name else test, fontsize=9)
            ax.set_xlabel("rho")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=min(4, len(seen)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write_bytes(Path(path), png_bytes(fig), make_parents=True)
    plt.close(fig)
