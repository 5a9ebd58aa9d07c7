"""The report's figures: ood.png (grouped bars per test environment), learning_curves.png, profiles.png and rho.png
(score against rho, drawn by :mod:`drigm.rho_curves`). Every file is written atomically as PNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from drigm import stats
from drigm.collect import AVERAGE, Collected, seed_means
from drigm.comparisons import rho_of
from drigm.figures import png_bytes
from drigm.rho_curves import plot_rho_curves, rho_families
from drigm.stats import cell
from reference.atomic_io import atomic_write_bytes


def plot_ood(col: Collected, metrics: list[tuple[str, str]], path: Path) -> None:
    """Grouped bars (one group per test environment plus the average, one bar per method, SE error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in col.methods() if m in col.results]
    tests = [t.name for t in col.proto.tests] + ([AVERAGE] if len(col.proto.tests) > 1 else [])
    shown = [metrics[0], ("returns", "return")] if metrics[0][0] == "won" else [metrics[0]]
    width_in = min(16.0, max(6.0, 0.18 * len(tests) * max(1, len(methods)) + 2.0))  # readable, never a banner
    fig, axes = plt.subplots(len(shown), 1, figsize=(width_in, 4.5 * len(shown)), squeeze=False)
    axes = axes[:, 0]
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")  # one distinct colour per method
    width = 0.8 / max(1, len(methods))
    for ax, (key, label) in zip(axes, shown, strict=True):
        for i, m in enumerate(methods):
            cells = [cell(seed_means(col, m, t, key)) if seed_means(col, m, t, key) else None for t in tests]
            x = np.arange(len(tests)) + (i - (len(methods) - 1) / 2) * width
            h = [c.mean if c else np.nan for c in cells]
            err = [c.se if c and c.se is not None else 0.0 for c in cells]
            ax.bar(x, h, width, yerr=err, capsize=2, label=m, color=palette(i % palette.N))
        ax.set_xticks(np.arange(len(tests)))
        ax.set_xticklabels(tests, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"{col.proto.name} ({col.proto.scale} scale): mean over seeds, error bars = standard error")
    axes[-1].legend(fontsize=7, ncol=min(5, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    atomic_write_bytes(path, png_bytes(fig), make_parents=True)
    plt.close(fig)


def plot_curves(col: Collected, path: Path) -> None:
    """Training return (the mean of recent episodes) against env steps: mean over seeds per method, with a
    second panel of the training win rate when the runs logged one (smax)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("return_mean", "training return (recent mean)")]
    if any("win_rate" in r["curve"] for rs in col.results.values() for r in rs.values()):
        panels.append(("win_rate", "training win rate (recent battles)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for m in col.methods():
            curves = [r["curve"] for r in col.results.get(m, {}).values() if r["curve"]["step"] and key in r["curve"]]
            if not curves:
                continue
            grid = np.unique(np.concatenate([c["step"] for c in curves]))
            ys = np.stack([np.interp(grid, c["step"], c[key]) for c in curves])
            ax.plot(grid, ys.mean(axis=0), label=f"{m} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.15)
        ax.set_xlabel("training env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{col.proto.name} ({col.proto.scale} scale): mean over seeds, band = min..max", fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig), make_parents=True)
    plt.close(fig)


def plot_profiles(col: Collected, label: str, profiles: dict[str, stats.Profile], path: Path) -> None:
    """Performance profiles: the fraction of runs (seed x test episode) with a value > tau against tau, one line
    per method, band = pointwise 95% stratified bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = plt.get_cmap("tab10" if len(profiles) <= 10 else "tab20")
    for i, (m, p) in enumerate(profiles.items()):
        colour = palette(i % palette.N)
        ax.plot(p.taus, p.fraction, label=m, color=colour)
        if p.lo is not None and p.hi is not None:
            ax.fill_between(p.taus, p.lo, p.hi, alpha=0.15, color=colour)
    ax.set_xlabel(f"{label} threshold tau")
    ax.set_ylabel(f"fraction of runs with {label} > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{col.proto.name} ({col.proto.scale} scale): performance profiles, band = 95% bootstrap CI")
    atomic_write_bytes(path, png_bytes(fig), make_parents=True)
    plt.close(fig)


def rho_curve_points(col: Collected, test: str, key: str) -> dict[str, list[tuple[float, float, float]]]:
    """{family: [(rho, mean, se), ...]} on one test environment (or AVERAGE) for every family with 2+ rhos."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for fam, pts in rho_families(list(col.results), rho_of(col.proto)).items():
        row = []
        for rho, m in pts:
            vals = seed_means(col, m, test, key)
            if vals:
                c = cell(vals)
                row.append((rho, c.mean, c.se if c.se is not None else 0.0))
        if len(row) >= 2:
            out[fam] = row
    return out


def rho_report(col: Collected, key: str, tests: list[str], dest: Path, summary: dict[str, Any]) -> None:
    """``rho.png`` (score against rho per test environment) and ``summary["rho_curves"]`` when a family has 2+ rhos."""
    curves = {t: rho_curve_points(col, t, key) for t in tests}
    fams = sorted({f for per in curves.values() for f in per})
    if not fams:
        return
    plot_rho_curves({f: {t: curves[t].get(f, []) for t in tests} for f in fams}, tests, key, dest / "rho.png")
    summary["rho_curves"] = {t: {f: [list(p) for p in pts] for f, pts in per.items()} for t, per in curves.items()}
    atomic_write_bytes(dest / "summary.json", (json.dumps(summary, indent=1) + "\n").encode(), make_parents=True)
