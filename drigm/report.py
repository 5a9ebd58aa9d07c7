"""Aggregate a protocol's sweep results over seeds into results.md, summary.json, ood.png and learning_curves.png.

Statistics are over training seeds: each seed contributes the mean of its test episodes on a test environment;
a cell gives the mean over seeds, the standard error (sample std / sqrt(n)) and a 95% percentile bootstrap CI
of the mean over seeds (10,000 resamples from a fixed seed, so reports are reproducible; :func:`drigm.stats.cell`).
The "average" column first averages a seed's means over the test environments (the paper's aggregate per shift),
then over seeds.

Every job the sweeps requested (``sweep.json``) is accounted for (:mod:`drigm.collect`): finished, failed, stale,
unfinished or missing; cells with fewer seeds than requested are marked. All outputs are written atomically.

This module writes the markdown and JSON (:func:`report` per protocol, :func:`overview` over day sets that share
their runs) and holds the ``drigm report`` command. The rest lives beside it: collecting results
(:mod:`drigm.collect`), comparisons with matched controls (:mod:`drigm.comparisons`), the robust statistics section
(:mod:`drigm.report_stats`), the plots (:mod:`drigm.report_plots`, :mod:`drigm.rho_curves`) and choosing rho on
validation (:mod:`drigm.rho_selection`); the names they held when they were here are importable from here still.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from drigm import stats
from drigm.collect import (
    AVERAGE,
    DEFAULT_OUT,
    Collected,
    collect,
    compatible_tests,
    detect_scale,
    episode_scores,
    main_metric,
    metrics_of,
    requested_jobs,
    rescore,
    seed_means,
)
from drigm.comparisons import (
    average_improvement,
    controls,
    excludes_zero,
    paired_average_diffs,
    run_improvement,
    versus,
)
from drigm.config import ConfigError
from drigm.markdown import ci_text, md_table, point_cis
from drigm.protocol import Protocol, ProtocolError, load_protocol, parse_method
from drigm.report_plots import plot_curves, plot_ood, plot_profiles, rho_curve_points, rho_report
from drigm.report_stats import CVAR_ALPHA, PROFILE_TAUS, stats_section
from drigm.rho_curves import plot_rho_curves
from drigm.rho_selection import MIN_SELECT_SEEDS, rho_selection
from drigm.stats import Cell, bootstrap_ci, cell
from reference.atomic_io import atomic_write_bytes

__all__ = [
    "AVERAGE",
    "BOOTSTRAP_SAMPLES",
    "BOOTSTRAP_SEED",
    "CVAR_ALPHA",
    "DEFAULT_RESULTS",
    "MIN_SELECT_SEEDS",
    "PROFILE_TAUS",
    "Cell",
    "Collected",
    "bootstrap_ci",
    "cell",
    "collect",
    "detect_scale",
    "difference_verdict",
    "episode_scores",
    "main_metric",
    "metrics_of",
    "overview",
    "paper_row",
    "paper_scope",
    "parse_exclude_seeds",
    "plot_curves",
    "plot_ood",
    "plot_profiles",
    "report",
    "requested_jobs",
    "rescore",
    "seed_means",
]

DEFAULT_RESULTS = Path("experiments/results")
BOOTSTRAP_SAMPLES = stats.DEFAULT_REPS  # 10,000 resamples
BOOTSTRAP_SEED = stats.DEFAULT_SEED  # 12345


def paper_row(method: str) -> tuple[str, str | None]:
    """(algo, paper row key) of a method: 'none' for non-robust runs, the set for exact and paper targets at the
    protocol's rho (both compare with the paper's row), 'groupdr' for groupdr-paper (the paper's GroupDR, with its
    climates), None for controls, other radii and the leak-free variants (the paper has none)."""
    try:
        algo, target, set_name, rho = parse_method(method)
    except ProtocolError:
        return method.split("-")[0], None
    if target == "none":
        return algo, "none"
    if target in ("exact", "paper") and rho is None:
        return algo, set_name
    if target == "groupdr-paper":  # the paper's GroupDR: its climates, as its code builds it
        return algo, "groupdr"
    return algo, None


def _describe_scale(col: Collected) -> str:
    """One sentence on the scale the runs were trained at: steps, batch, replay, agent, exploration, test episodes."""
    proto = col.proto
    found = [r for per in col.results.values() for r in per.values()]
    some = next((r for r in found if r["job"]["target"] == "none"), found[0] if found else None)
    if some is None:
        return f"scale `{proto.scale}` (no finished runs)"
    c = some["config"]
    ep_len = max((max(t["lengths"]) for t in some["tests"].values()), default=0)
    eps = f" (about {c['steps'] / ep_len:.0f} episodes of {ep_len} steps)" if ep_len else ""
    lc = c["learner"]
    full_steps = load_protocol(proto.path, "full", preset=proto.preset).run.get("steps")
    of_full = (
        f" = {100 * c['steps'] / full_steps:.1f}% of the full-scale protocol's {full_steps}"
        if proto.scale != "full" and isinstance(full_steps, int)
        else ""
    )
    unit = "transitions" if lc.get("replay", "episodes") == "transitions" else "episodes"
    seeds = (
        f"the episode seeds {proto.explicit_test_seeds}, repeats counted"
        if proto.explicit_test_seeds is not None
        else "the same episode seeds for every method and seed"
    )
    preset = f"preset `{proto.preset}`; " if proto.preset is not None else ""
    return (
        f"{preset}scale `{proto.scale}`: {c['steps']} training env steps per run{eps}{of_full}; "
        f"batch {lc['batch_size']} {unit}, "
        f"replay {lc['buffer_size']} {unit}, one training phase every {lc['update_every']} steps (non-TV runs); "
        f"agent {c['agent']['arch']} hidden {c['agent']['hidden']} history {c['agent']['history']}"
        f"{'' if c['agent'].get('shared', True) else ', one network per agent'}; "
        f"epsilon annealed over {c['explore']['eps_anneal_steps']} steps; {proto.eval_episodes} greedy test "
        f"episodes per test environment ({seeds})"
    )


def paper_scope(proto: Protocol) -> str:
    """The test environment whose cells stand beside the paper's (its ``paper.test``), or AVERAGE (the mean over
    the protocol's tests) where the paper's cell is that average."""
    assert proto.paper is not None
    return str(proto.paper.get("test") or AVERAGE)


def _scope_text(proto: Protocol) -> str:
    """How the paper's column is scoped, as a table header says it (an average over n test envs, or one env)."""
    scope = paper_scope(proto)
    return f"{len(proto.tests)} test env avg" if scope == AVERAGE else f"{scope} alone"


def _paper_section(col: Collected, key: str) -> tuple[list[str], dict[str, Any]]:
    """results.md lines and summary data beside the paper: per method, ours (in the paper's SE convention) and the
    paper's cell, and whether the two mean +- SE intervals overlap."""
    paper = col.proto.paper
    assert paper is not None
    ddof = int(paper.get("se_ddof", 1))
    scope = paper_scope(col.proto)
    where = "the average over this protocol's test environments" if scope == AVERAGE else f"{scope} alone"
    lines = [
        f"## Beside the paper ({paper['shift']}; {paper.get('note', '')})",
        "",
        f"Ours: {where} (per seed, then mean +- SE over seeds, SE = "
        f"std(ddof={ddof}) / sqrt(n), the paper's convention). "
        "`exact` and `paper` targets both sit beside the paper's row for their set. "
        "A cell *matches* when the two mean +- SE intervals overlap.",
        "",
    ]
    rows: list[list[str]] = []
    verdicts: dict[str, Any] = {"match": [], "differ": []}
    for m in col.methods():
        vals = seed_means(col, m, scope, key)
        if not vals:
            continue
        algo, row = paper_row(m)
        ref = None if row is None else paper["rows"].get(row, {}).get(algo)
        ours = cell(vals, ddof=ddof)
        if ref is None:
            rows.append([m, ours.fmt(), "n/a", "n/a"])
            continue
        pm, pse = float(ref[0]), float(ref[1])
        gap = abs(ours.mean - pm)
        ok = gap <= pse + (ours.se or 0.0)
        verdicts["match" if ok else "differ"].append(m)
        rows.append([m, ours.fmt(), f"{pm:.3f} +- {pse:.3f}", f"{'yes' if ok else 'no'} (diff {ours.mean - pm:+.3f})"])
        verdicts.setdefault("cells", {})[m] = {"ours": ours.__dict__, "paper": [pm, pse], "match": ok}
    lines.append(md_table(["method", f"ours ({_scope_text(col.proto)})", "paper", "matches"], rows))
    lines += [
        "",
        f"Within the paper's error bars: {', '.join(verdicts['match']) or 'none'}. "
        f"Not within: {', '.join(verdicts['differ']) or 'none'}.",
        "",
    ]
    return lines, verdicts


def difference_verdict(mean: float, digits: int = 3) -> str:
    """The label of a mean difference exact - paper as the report prints it (`digits` decimals): "tie" when it
    prints as zero (0.000 or -0.000), else which side is higher."""
    if round(mean, digits) == 0:
        return "tie"
    return "exact higher" if mean > 0 else "paper higher"


def _exact_vs_paper(col: Collected, key: str) -> list[str]:
    """results.md lines: per algo-set, the exact target minus the paper's on the same seeds (empty without pairs)."""
    rows = []
    for m in col.methods():
        if "-exact-" not in m:
            continue
        other = m.replace("-exact-", "-paper-")
        a, b = col.results.get(m, {}), col.results.get(other, {})
        common = sorted(set(a) & set(b))
        if not common:
            continue
        diffs = []
        for s in common:
            ea = np.mean([np.mean(t[key]) for t in a[s]["tests"].values() if key in t])
            eb = np.mean([np.mean(t[key]) for t in b[s]["tests"].values() if key in t])
            diffs.append(float(ea - eb))
        c = cell(diffs)
        better = difference_verdict(c.mean)
        sig = excludes_zero(c.ci) and excludes_zero(stats.t_interval(diffs))
        rows.append(
            [m.replace("-exact", ""), str(len(common)), c.fmt(), f"{better}{' (both CIs exclude 0)' if sig else ''}"]
        )
    if not rows:
        return []
    return [
        "## Exact targets against the paper's targets (same seeds, same test episodes)",
        "",
        "Difference exact - paper of the average over test environments, per seed, then mean +- SE [bootstrap CI]; "
        "a difference counts where the bootstrap CI and the Student-t CI (`drigm.stats.t_interval`) both exclude 0.",
        "",
        md_table(["algo-set", "seeds", "exact - paper", "verdict"], rows),
        "",
    ]


def _random_reference(col: Collected) -> list[str]:
    """A near-random reference from the runs' own first logged training returns (epsilon close to 1)."""
    first = [
        (r["curve"]["return_mean"][0], r["curve"]["step"][0], r["config"]["explore"])
        for per in col.results.values()
        for r in per.values()
        if r["curve"]["step"]
    ]
    if not first:
        return []
    ret = float(np.mean([f[0] for f in first]))
    step = max(f[1] for f in first)
    ex = first[0][2]
    eps = ex["eps_start"] + min(1.0, step / max(1, ex["eps_anneal_steps"])) * (ex["eps_finish"] - ex["eps_start"])
    score = f" (score {col.proto.score(ret):.3f})" if col.proto.score is not None else ""
    return [
        "## Near-random reference",
        "",
        f"Mean training return over each run's first {step:.0f} env steps (epsilon >= {eps:.2f}, near-uniform "
        f"random joint actions on the training environment), over all runs: {ret:.1f}{score}.",
        "",
    ]


def parse_exclude_seeds(text: str | None) -> frozenset[tuple[str, int]]:
    """``METHOD:SEED[,METHOD:SEED...]`` as a set of (method, seed); ConfigError naming the first bad item."""
    out = set()
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        method, sep, seed = item.rpartition(":")
        try:
            if not sep or not method:
                raise ValueError
            out.add((method, int(seed)))
        except ValueError:
            raise ConfigError(f"--exclude-seeds: {item!r} is not METHOD:SEED (e.g. qmix-groupdr:0)") from None
    return frozenset(out)


def _excluded_lines(cols: list[Collected]) -> list[str]:
    """Markdown naming the runs left out on request (empty when none were)."""
    per: dict[str, set[int]] = {}
    for c in cols:
        for j in c.excluded:
            per.setdefault(j.method, set()).add(j.seed)
    if not per:
        return []
    items = [f"- {m}: seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))}" for m, s in per.items()]
    return ["## Excluded on request (--exclude-seeds)", "", "These runs enter no figure on this page:", "", *items, ""]


def report(
    protocol: str | Path,
    out_root: Path = DEFAULT_OUT,
    results_root: Path = DEFAULT_RESULTS,
    scale: str | None = None,
    preset: str | None = None,
    exclude: frozenset[tuple[str, int]] = frozenset(),
) -> dict[str, Any]:
    """Write results.md, summary.json, ood.png and learning_curves.png for a protocol; return the summary. The
    (method, seed) runs in `exclude` enter no figure and are listed as excluded.

    They go to ``results_root/<protocol>/`` (``results_root/<protocol>/<preset>/`` for a protocol with presets).
    """
    out_root = Path(out_root).resolve()
    scale = scale or detect_scale(str(protocol), out_root, preset)
    col = collect(str(protocol), out_root, scale, preset, exclude)
    proto = col.proto
    dest = Path(results_root) / proto.name
    if proto.preset is not None:
        dest = dest / proto.preset
    metrics = metrics_of(col)
    tests = [t.name for t in proto.tests] + ([AVERAGE] if len(proto.tests) > 1 else [])
    summary: dict[str, Any] = {
        "protocol": proto.name,
        "scale": scale,
        "preset": proto.preset,
        "metrics": {},
        "missing": [],
        "failed": [],
        "excluded": [[j.method, j.seed] for j in col.excluded],
    }
    md = [
        f"# {proto.name}: results",
        "",
        proto.description,
        "",
        f"Scale: {_describe_scale(col)}. Statistics over training seeds: mean +- standard error "
        f"[95% bootstrap CI, {BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}]; SE and CI need 2+ seeds.",
        "",
        *_excluded_lines([col]),
    ]
    incompatible = {
        name: t["incompatible"]
        for per in col.results.values()
        for r in per.values()
        for name, t in r["tests"].items()
        if "incompatible" in t
    }
    for key, label in metrics:
        md += [f"## {label}", ""]
        rows = []
        for m in col.methods():
            want = len(col.seeds_of(m))
            row = [m]
            for t in tests:
                vals = seed_means(col, m, t, key)
                summary["metrics"].setdefault(key, {}).setdefault(m, {})[t] = cell(vals).__dict__ if vals else None
                if not vals:
                    row.append("incompatible" if t in incompatible else "missing")
                else:
                    partial = f" (n={len(vals)}/{want})" if len(vals) < want else f" (n={len(vals)})"
                    row.append(cell(vals).fmt() + partial)
            rows.append(row)
        md += [md_table(["method", *tests], rows), ""]
    if proto.paper is not None:
        key = proto.paper.get("metric", "score")
        if key in dict(metrics):
            lines, verdicts = _paper_section(col, key)
            md += lines
            summary["paper_comparison"] = verdicts
    md += _exact_vs_paper(col, metrics[0][0] if metrics[0][0] != "won" else "won")
    md += _random_reference(col)
    main_key, main_label = main_metric(col)
    profiles: dict[str, stats.Profile] = {}
    compat = [t.name for t in proto.tests if t.name not in incompatible]
    if col.results and compat:
        lines, summary["stats"], profiles = stats_section(col, main_key, main_label, compat)
        md += lines
    problems = (
        [f"- missing: {j.method} seed {j.seed}" for j in col.missing]
        + [
            f"- unfinished (a training checkpoint exists; re-run the sweep to resume): {j.method} seed {j.seed}"
            for j in col.unfinished
        ]
        + [f"- failed: {j.method} seed {j.seed}: {msg}" for j, msg in col.failed]
        + [f"- stale/invalid results file (rerun the sweep): {j.method} seed {j.seed}" for j in col.stale]
    )
    notes = [f"- test environment {name!r} not evaluated: {msg}" for name, msg in incompatible.items()]
    summary["missing"] = [[j.method, j.seed] for j in col.missing + col.unfinished + col.stale]
    summary["failed"] = [[j.method, j.seed, msg] for j, msg in col.failed]
    md += ["## Completeness", ""]
    n_done = sum(len(v) for v in col.results.values())
    md.append(f"{n_done} of {len(col.requested)} requested runs have valid results.")
    md += ["", *problems] if problems else []
    md += ["", *notes] if notes else []
    md += ["", "Plots: `ood.png` (grouped bars per test environment), `learning_curves.png`, `profiles.png`.", ""]
    atomic_write_bytes(dest / "results.md", "\n".join(md).encode(), make_parents=True)
    atomic_write_bytes(dest / "summary.json", (json.dumps(summary, indent=1) + "\n").encode(), make_parents=True)
    if col.results:
        plot_ood(col, metrics, dest / "ood.png")
        plot_curves(col, dest / "learning_curves.png")
        rho_report(col, metrics[0][0], tests, dest, summary)
    if profiles:
        plot_profiles(col, main_label, profiles, dest / "profiles.png")
    summary["results_dir"] = str(dest)
    summary["complete"] = not problems
    return summary


def overview(
    protocols: list[str],
    out_root: Path,
    results_root: Path,
    name: str,
    scale: str,
    preset: str | None = None,
    select_on: str | None = None,
    min_select_seeds: int = MIN_SELECT_SEEDS,
    exclude: frozenset[tuple[str, int]] = frozenset(),
) -> Path:
    """One page over several protocols that share their runs (day sets of one experiment): every method's score on
    each, the paper's numbers beside them where the protocol has them, and each robust method against its
    algorithm's non-robust run on the same seeds. Writes ``results_root/NAME.md`` and ``NAME.json``.

    `select_on` names a validation protocol sharing the runs: for each rho curve the rho with the best validation
    score is chosen there (never on a test day set) among the radii with `min_select_seeds`+ seeds there, and its
    test scores are reported beside the controls. The (method, seed) runs in `exclude` enter no figure (validation
    included) and are listed as excluded."""
    if min_select_seeds < 1:
        raise ConfigError(f"--min-select-seeds must be at least 1, got {min_select_seeds}")
    cols = [collect(p, Path(out_root).resolve(), scale, preset, exclude) for p in protocols]
    methods = list(dict.fromkeys(m for c in cols for m in c.methods()))
    key = "score" if all(c.proto.score is not None for c in cols) else "returns"
    data: dict[str, Any] = {"protocols": [c.proto.name for c in cols], "scale": scale, "preset": preset, "metric": key}
    data["excluded"] = sorted({(j.method, j.seed) for c in cols for j in c.excluded})
    header = ["method"]
    for c in cols:
        header.append(f"{c.proto.name}: {c.proto.description}")
        if c.proto.paper is not None:
            header.append(f"paper ({c.proto.paper['shift']}) beside ours ({_scope_text(c.proto)})")
    rows = []
    for m in methods:
        row = [m]
        for c in cols:
            ddof = int(c.proto.paper.get("se_ddof", 1)) if c.proto.paper is not None else 1
            vals = seed_means(c, m, AVERAGE, key)
            ours = cell(vals, ddof=ddof) if vals else None
            data.setdefault("scores", {}).setdefault(c.proto.name, {})[m] = ours.__dict__ if ours else None
            row.append(f"{ours.fmt()} (n={len(vals)})" if ours else "missing")
            if c.proto.paper is not None:
                algo, prow = paper_row(m)
                ref = None if prow is None else c.proto.paper["rows"].get(prow, {}).get(algo)
                scope = paper_scope(c.proto)
                pvals = vals if scope == AVERAGE else seed_means(c, m, scope, key)
                beside = cell(pvals, ddof=ddof) if pvals else None
                if beside is not None and scope != AVERAGE:
                    data.setdefault("paper_scope_scores", {}).setdefault(c.proto.name, {})[m] = beside.__dict__
                if ref is None or beside is None:
                    row.append("n/a" if ref is None else f"{ref[0]:.3f} +- {ref[1]:.3f}")
                else:
                    ok = abs(beside.mean - ref[0]) <= ref[1] + (beside.se or 0.0)
                    ours_txt = "" if scope == AVERAGE else f"; ours {beside.mean:.3f} +- {beside.se or 0.0:.3f}"
                    row.append(f"{ref[0]:.3f} +- {ref[1]:.3f} ({'matches' if ok else 'differs'}{ours_txt})")
        rows.append(row)
    md = [
        f"# {name}: {', '.join(data['protocols'])} ({scale} scale{'' if preset is None else f', preset {preset}'})",
        "",
        "Every column is the same trained runs (one per method and seed), tested on a different day set. "
        f"Cells: the {key} averaged over the day set's test environments per seed, then mean +- SE over seeds "
        "[95% bootstrap CI]; where the paper reports the column, SE uses its convention (std(ddof=0) / sqrt(n)) "
        "and 'matches' means the two mean +- SE intervals overlap.",
        "",
        *_excluded_lines(cols),
        md_table(header, rows),
        "",
        "## Does robust training beat its matched control?",
        "",
        "Per seed: the robust method's average minus its control's (same algorithm, same seed, same test days), "
        "then mean +- SE [95% bootstrap CI] over the paired seeds. Controls, closest first "
        "(`drigm.protocol.matched_controls`): contamination against the discount control (non-robust at gamma "
        "(1 - rho), the same horizon cut without robustness) and against non-robust training (its rho = 0 member); "
        "other sets against the same target at rho = 0 (same schedule, same dual network), against the schedule "
        "control (`schedule`: non-robust training with the set's update schedule, no dual network) and against "
        "non-robust training; rho = 0 runs against the schedule control and non-robust training; discount and "
        "schedule runs against non-robust training; every exact and paper target also "
        "against non-robust training with double Q-learning (`doubleq`), where it ran.",
        "",
    ]
    vrows = []
    for m in methods:
        for c in cols:
            for base in controls(c, m):
                diffs, common = paired_average_diffs(c, m, base, key)
                if not diffs:
                    continue
                d, t_ci, verdict = versus(diffs)
                entry = {**d.__dict__, "t_ci": t_ci, "verdict": verdict, "n_pairs": len(common)}
                poi = average_improvement(c, m, base, key)
                poi_text = "n/a"
                if poi is not None:
                    entry["paired_improvement"] = stats.as_dict(poi)
                    poi_text = point_cis(poi.p, poi.ci, poi.t_ci, ".2f")
                runs = run_improvement(c, m, base, key, compatible_tests(c, m))
                runs_text = "n/a"
                if runs is not None:
                    entry["improvement"] = stats.as_dict(runs)
                    runs_text = point_cis(runs.p, runs.ci, None, ".2f")
                data.setdefault("versus_control", {}).setdefault(c.proto.name, {}).setdefault(m, {})[base] = entry
                if base.endswith("-none"):
                    data.setdefault("versus_none", {}).setdefault(c.proto.name, {})[m] = entry
                vrows.append(
                    [m, base, c.proto.name, str(len(common)), d.fmt(), ci_text(t_ci), runs_text, poi_text, verdict]
                )
    header = [
        "method",
        "control",
        "day set",
        "paired seeds",
        f"{key}: method - control",
        "t 95% CI",
        "P(X > Y) over runs [CI]",
        "paired P(improvement) [CI] t [CI]",
    ]
    md += [
        md_table([*header, "verdict"], vrows),
        "",
        "P(X > Y) over runs: rliable's probability of improvement (per test environment, the Mann-Whitney statistic "
        "of the method's runs against the control's, unpaired, averaged over the environments; CI: runs resampled "
        "within each environment, `drigm.stats.probability_of_improvement_runs`). "
        "Paired P(improvement): per paired seed and test environment, P(X > Y) + 0.5 P(X = Y) over all pairs of the "
        "two runs' test episodes, averaged over environments and paired seeds; CI: paired seeds resampled, t: the "
        "Student-t interval of the per-seed values, not clipped to [0, 1] "
        "(`drigm.stats.probability_of_improvement`). t 95% CI: the Student-t interval of the paired mean "
        "(`drigm.stats.t_interval`); the percentile bootstrap is too narrow with few seeds (3 seeds give 10 distinct "
        "resamples), so a difference counts only where both intervals exclude 0.",
        "",
    ]
    curves = {c.proto.name: rho_curve_points(c, AVERAGE, key) for c in cols}
    fams = sorted({f for per in curves.values() for f in per})
    if fams:
        rho_png = Path(results_root) / f"{name}-rho.png"
        plot_rho_curves(
            {f: {day: curves[day].get(f, []) for day in curves} for f in fams},
            list(curves),
            key,
            rho_png,
        )
        data["rho_curves"] = {day: {f: [list(p) for p in pts] for f, pts in per.items()} for day, per in curves.items()}
        md += [
            "## Score against rho",
            "",
            f"`{rho_png.name}`: per day set, the {key} (average over its test environments, mean +- SE over seeds) "
            "of each family at every rho trained; contamination's rho = 0 point is non-robust training.",
            "",
        ]
    if select_on is not None:
        val = collect(select_on, Path(out_root).resolve(), scale, preset, exclude)
        if val.proto.name in data["protocols"]:
            raise ConfigError(f"--select-on {select_on!r} is one of the reported day sets; validation must differ")
        lines, data["rho_selected"] = rho_selection(val, cols, key, min_select_seeds)
        md += lines
    missing = list(dict.fromkeys((j.method, j.seed) for c in cols for j in c.missing + c.unfinished))
    if missing:
        per: dict[str, list[int]] = {}
        for m, seed in missing:
            per.setdefault(m, []).append(seed)
        md += ["## Not yet run", "", *[f"- {m}: seeds {', '.join(map(str, sorted(s)))}" for m, s in per.items()], ""]
    dest = Path(results_root) / f"{name}.md"
    atomic_write_bytes(dest, "\n".join(md).encode(), make_parents=True)
    atomic_write_bytes(dest.with_suffix(".json"), (json.dumps(data, indent=1) + "\n").encode(), make_parents=True)
    return dest


if __name__ == "__main__":
    raise SystemExit("drigm.report is a library module: run `drigm report ...` (or `python -m drigm report ...`)")
