"""Aggregate a protocol's sweep results over seeds into results.md, summary.json, ood.png and learning_curves.png.

Statistics are over training seeds: each seed contributes the mean of its test episodes on a test environment;
a cell gives the mean over seeds, the standard error (sample std / sqrt(n)) and a 95% percentile bootstrap CI
of the mean over seeds (10,000 resamples from a fixed seed, so reports are reproducible). The "average" column
first averages a seed's means over the test environments (the paper's aggregate per shift), then over seeds.

Every job the sweeps requested (``sweep.json``) is accounted for: finished, failed (an ``.error.txt`` file),
stale/invalid (a results file that does not match the protocol any more) or missing; cells with fewer seeds
than requested are marked. All outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drigm import stats
from drigm.checkpoint import atomic_write_bytes
from drigm.config import ConfigError
from drigm.figures import png_bytes
from drigm.protocol import SCALES, Job, Protocol, ProtocolError, load_protocol, matched_controls, parse_method
from drigm.results_store import DEFAULT_OUT, is_finished, result_dir, result_path, train_dir
from drigm.rho_curves import plot_rho_curves, rho_families

DEFAULT_RESULTS = Path("experiments/results")
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 12345
AVERAGE = "average"
MIN_SELECT_SEEDS = 3  # a radius with fewer validation seeds cannot be chosen (the rho grid runs 3+ seeds per radius)


@dataclass
class Cell:
    """One statistic over seeds: per-seed values, mean, standard error and bootstrap CI (None where undefined)."""

    values: list[float]
    mean: float
    se: float | None
    ci: tuple[float, float] | None

    def fmt(self, digits: int = 3) -> str:
        """``mean +- se [lo, hi]`` (with n/a where a statistic needs two seeds)."""
        se = f" +- {self.se:.{digits}f}" if self.se is not None else " +- n/a"
        ci = f" [{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]" if self.ci is not None else ""
        return f"{self.mean:.{digits}f}{se}{ci}"


def bootstrap_ci(
    values: list[float], rng: np.random.Generator, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of `values` (resampling with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    means = x[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def cell(values: list[float], seed: int = BOOTSTRAP_SEED, ddof: int = 1) -> Cell:
    """Mean, standard error (std with `ddof` / sqrt(n)) and seeded bootstrap 95% CI over `values` (SE and CI need
    at least two values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return Cell(list(map(float, x)), float(x.mean()), None, None)
    se = float(x.std(ddof=ddof) / math.sqrt(x.size))
    return Cell(list(map(float, x)), float(x.mean()), se, bootstrap_ci(values, np.random.default_rng(seed)))


@dataclass
class Collected:
    """The results found for a protocol at one scale, and what is missing."""

    proto: Protocol
    requested: list[Job]
    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # method -> seed -> results
    missing: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    stale: list[Job] = field(default_factory=list)
    unfinished: list[Job] = field(default_factory=list)
    excluded: list[Job] = field(default_factory=list)  # requested, but left out on request (--exclude-seeds)

    def methods(self) -> list[str]:
        """Requested methods, in request order."""
        return list(dict.fromkeys(j.method for j in self.requested))

    def seeds_of(self, method: str) -> list[int]:
        """Requested seeds of `method`."""
        return [j.seed for j in self.requested if j.method == method]


def detect_scale(protocol: str, out_root: Path, preset: str | None = None) -> str:
    """The only scale with results for `protocol` (at `preset`) under `out_root`; ConfigError when none or several."""
    proto = load_protocol(protocol, preset=preset)
    name = proto.name
    prefix = "" if proto.preset is None else f"{proto.preset}/"
    found = [s for s in SCALES if (result_dir(out_root, name, prefix + s) / "sweep.json").is_file()]
    if not found:
        raise ConfigError(f"no sweep results for protocol {name!r} under {str(out_root)!r}; run `drigm sweep` first")
    if len(found) > 1:
        raise ConfigError(
            f"protocol {name!r} has results at several scales {found} under {str(out_root)!r}; pass --scale"
        )
    return found[0]


def requested_jobs(protocol: str, out_root: Path, scale: str, preset: str | None = None) -> tuple[Protocol, list[Job]]:
    """The protocol and the jobs its sweeps requested (its sweep.json); ConfigError when that file is absent or
    malformed."""
    proto = load_protocol(protocol, scale, preset=preset)
    manifest = result_dir(out_root, proto.name, proto.label) / "sweep.json"
    if not manifest.is_file():
        raise ConfigError(f"{str(manifest)!r} does not exist: no sweep of {proto.name!r} at scale {scale!r} was run")
    try:
        raw = json.loads(manifest.read_text())["jobs"]
        jobs = [Job(j["algo"], j["target"], j["set"], j["rho"], int(j["seed"]), j.get("tag", "")) for j in raw]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ConfigError(f"{str(manifest)!r} is malformed: {str(exc)[:200]}") from None
    return proto, jobs


def collect(
    protocol: str,
    out_root: Path,
    scale: str,
    preset: str | None = None,
    exclude: frozenset[tuple[str, int]] = frozenset(),
) -> Collected:
    """Load every requested job's results (sweep.json), classifying the rest as missing, failed or stale; the
    (method, seed) pairs in `exclude` are set aside as excluded and enter no statistic."""
    proto, jobs = requested_jobs(protocol, out_root, scale, preset)
    col = Collected(proto, [j for j in jobs if (j.method, j.seed) not in exclude])
    col.excluded = [j for j in jobs if (j.method, j.seed) in exclude]
    for job in col.requested:
        path = result_path(out_root, proto.name, proto.label, job)
        err = path.with_suffix(".error.txt")
        if is_finished(path, proto, job):
            col.results.setdefault(job.method, {})[job.seed] = rescore(json.loads(path.read_text()), proto)
        elif err.is_file():
            lines = err.read_text().strip().splitlines()
            col.failed.append((job, lines[-1] if lines else "unknown error"))
        elif path.is_file():
            col.stale.append(job)
        elif (train_dir(out_root, job, proto.job_config(job)) / "checkpoint.pt").is_file():
            col.unfinished.append(job)
        else:
            col.missing.append(job)
    return col


def rescore(result: dict[str, Any], proto: Protocol) -> dict[str, Any]:
    """`result` with every test's per-episode scores recomputed from its returns by the protocol's score now (so a
    change of units, such as the paper's per-agent sum, rebuilds from the stored returns; no run is retrained)."""
    if proto.score is None:
        return result
    for t in result["tests"].values():
        if "returns" in t:
            t["score"] = [proto.score(float(x)) for x in t["returns"]]
    result["score_label"] = proto.score.label
    return result


def metrics_of(col: Collected) -> list[tuple[str, str]]:
    """(key, label) of the reported metrics: the score (or return), the return, and the win rate when defined."""
    out = []
    if col.proto.score is not None:
        out.append(("score", col.proto.score.label))
    out.append(("returns", "return"))
    any_won = any("won" in t for per in col.results.values() for r in per.values() for t in r["tests"].values())
    if any_won:
        out.insert(0, ("won", "win rate"))
    return out


def seed_means(col: Collected, method: str, test: str, key: str) -> list[float]:
    """Per-seed mean of metric `key` on test environment `test` (AVERAGE: the mean over the test environments)."""
    out = []
    for _, r in sorted(col.results.get(method, {}).items()):
        if test == AVERAGE:
            vals = [np.mean(np.asarray(t[key], dtype=np.float64)) for t in r["tests"].values() if key in t]
            if len(vals) < sum("incompatible" not in t for t in r["tests"].values()):
                continue  # a seed lacking the metric on some test env cannot enter the average
            if vals:
                out.append(float(np.mean(vals)))
        elif key in r["tests"].get(test, {}):
            out.append(float(np.mean(np.asarray(r["tests"][test][key], dtype=np.float64))))
    return out


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


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _describe_scale(col: Collected) -> str:
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
    atomic_write_bytes(path, png_bytes(fig))
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
    atomic_write_bytes(path, png_bytes(fig))
    plt.close(fig)


def paper_scope(proto: Protocol) -> str:
    """The test environment whose cells stand beside the paper's (its ``paper.test``), or AVERAGE (the mean over
    the protocol's tests) where the paper's cell is that average."""
    assert proto.paper is not None
    return str(proto.paper.get("test") or AVERAGE)


def _scope_text(proto: Protocol) -> str:
    scope = paper_scope(proto)
    return f"{len(proto.tests)} test env avg" if scope == AVERAGE else f"{scope} alone"


def _paper_section(col: Collected, key: str) -> tuple[list[str], dict[str, Any]]:
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
    lines.append(_md_table(["method", f"ours ({_scope_text(col.proto)})", "paper", "matches"], rows))
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
        sig = _excludes_zero(c.ci) and _excludes_zero(stats.t_interval(diffs))
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
        _md_table(["algo-set", "seeds", "exact - paper", "verdict"], rows),
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


CVAR_ALPHA = 0.1
PROFILE_TAUS = 101


def main_metric(col: Collected) -> tuple[str, str]:
    """(key, label) of the main metric: the normalised score when the protocol defines one, else the return."""
    return ("score", col.proto.score.label) if col.proto.score is not None else ("returns", "return")


def episode_scores(col: Collected, method: str, key: str, tests: list[str]) -> tuple[list[int], np.ndarray | None]:
    """The seeds of `method` with metric `key` on every test environment in `tests`, and their per-episode values
    as an array (envs, seeds, episodes) with envs in the order of `tests` (None when no seed has them all)."""
    seeds, rows = [], []
    for s, r in sorted(col.results.get(method, {}).items()):
        if all(key in r["tests"].get(t, {}) for t in tests):
            seeds.append(s)
            rows.append([r["tests"][t][key] for t in tests])
    if not seeds:
        return [], None
    return seeds, np.asarray(rows, dtype=np.float64).transpose(1, 0, 2)


def _ci_text(ci: tuple[float, float] | list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "[n/a]"


def _point_cis(point: float, ci: tuple[float, float] | None, t_ci: tuple[float, float] | None, fmt: str) -> str:
    """``point [bootstrap CI] t [Student-t CI]``, the point formatted with `fmt` (e.g. ``+.3f``)."""
    return f"{point:{fmt}} {_ci_text(ci)} t {_ci_text(t_ci)}"


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


def _stats_section(
    col: Collected, key: str, label: str, compat: list[str]
) -> tuple[list[str], dict[str, Any], dict[str, stats.Profile]]:
    """results.md lines, summary data and performance profiles of the main metric (:mod:`drigm.stats`): IQM and
    mean with stratified bootstrap CIs, worst-case columns, P(improvement) over matched controls."""
    scopes = compat + ([AVERAGE] if len(compat) > 1 else [])
    envs_of = {**{t: [t] for t in compat}, AVERAGE: compat}
    methods = [m for m in col.methods() if m in col.results]
    boot = {"resamples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "level": stats.CI_LEVEL}
    data: dict[str, Any] = {"metric": key, "label": label, "bootstrap": boot, "cvar_alpha": CVAR_ALPHA}
    seeds_txt = ", the protocol's listed test days, repeats counted" if col.proto.explicit_test_seeds else ""
    md = [
        f"## Robust statistics of the {label}",
        "",
        'Computed by `drigm.stats` (our own numpy code) as Agarwal et al. (NeurIPS 2021, "Deep RL at the edge of '
        'the statistical precipice") and their `rliable` package define them; a test checks the point estimates '
        "and intervals against rliable on the same score matrices. The unit of these statistics is the **run**: "
        f"one trained seed's mean {label} over its test episodes{seeds_txt} on a test environment (a task). The "
        f"average column takes the test environments {', '.join(compat)} as the tasks.",
        "",
        "- **IQM**: the 25% trimmed mean of the run scores (seeds x test environments): "
        "`scipy.stats.trim_mean(x, 0.25)`, which cuts int(0.25 n) values from each end (rliable's "
        "`aggregate_iqm`). **Mean**: the mean of the same run scores.",
        f"- **CIs** of IQM and mean: 95% percentile intervals of rliable's stratified bootstrap ({BOOTSTRAP_SAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}): in each test environment the runs are resampled with replacement, "
        "independently across environments. n/a with one seed.",
        "- **P(X > Y) over runs** (rliable's probability of improvement) of a method X over a matched control Y "
        "(`drigm.protocol.matched_controls`): in each test environment, the Mann-Whitney statistic of X's runs "
        "against Y's runs (the fraction of (x run, y run) pairs with x > y, ties counting one half; runs are not "
        "paired), averaged over the environments; CI: X's and Y's runs resampled independently within each "
        "environment.",
        "- **Seed-paired comparison** (a second figure, where pairing by seed is meaningful: the matched controls "
        "share each seed's environments and initialisation): for each seed in both and each test environment, "
        "P(X > Y) + 0.5 P(X = Y) over all pairs of the two runs' test episodes; averaged over the environments, "
        "then over the paired seeds. CI: paired seeds resampled; t: the Student-t interval of the per-seed values "
        "(not clipped to [0, 1]), the small-sample check, since the bootstrap of 3-5 seeds is too narrow. The "
        "paired mean difference is X's mean minus Y's, per seed, averaged likewise.",
        "- **Worst environment** (over episodes): the minimum over test environments of the environment's mean "
        "over seeds and episodes (the CI takes the minimum in each bootstrap resample); `summary.json` also gives "
        "each seed's own worst environment (`per_seed_worst`).",
        f"- **CVaR{CVAR_ALPHA:.0%}**: for each seed and test environment, the mean of the worst {CVAR_ALPHA:.0%} of "
        f"its test episodes (lower tail of the empirical distribution, fractional: with k = {CVAR_ALPHA} n, the "
        "floor(k) smallest values plus (k - floor k) times the next, divided by k); then the mean over test "
        "environments per seed, and mean +- SE [bootstrap CI] over seeds as in the tables above.",
        "- **Performance profiles** (`profiles.png`): the fraction of runs (seed x test episode, pooled over the "
        "test environments) with a value > tau, band = pointwise 95% stratified bootstrap interval.",
        "",
    ]
    scored: dict[str, tuple[list[int], np.ndarray]] = {}
    for m in methods:
        seeds, a = episode_scores(col, m, key, compat)
        if a is not None:
            scored[m] = (seeds, a)
    for agg, title in (("iqm", "IQM"), ("mean", "Mean")):
        rows = []
        for m in methods:
            row = [m]
            for scope in scopes:
                seeds, a = episode_scores(col, m, key, envs_of[scope])
                if a is None:
                    data.setdefault(agg, {}).setdefault(m, {})[scope] = None
                    row.append("missing")
                    continue
                e = stats.interval_estimate(stats.run_scores(a), agg, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
                entry = {**stats.as_dict(e), "seeds": seeds, "episodes": int(a.shape[2])}
                data.setdefault(agg, {}).setdefault(m, {})[scope] = entry
                row.append(f"{e.fmt()} (n={len(seeds)})")
            rows.append(row)
        md += [
            f"### {title} of run scores [95% stratified bootstrap CI over runs] (n = seeds)",
            "",
            _md_table(["method", *scopes], rows),
            "",
        ]
    rows = []
    for m, (seeds, a) in scored.items():
        worst = stats.worst_mean(a, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
        worst_env = compat[int(np.argmin(a.mean(axis=(1, 2))))]
        per_seed = [
            float(np.mean([stats.cvar(a[e, i], CVAR_ALPHA) for e in range(a.shape[0])])) for i in range(a.shape[1])
        ]
        cv = cell(per_seed)
        env_means = a.mean(axis=2)  # (envs, seeds)
        data.setdefault("worst_case", {})[m] = {
            "seeds": seeds,
            "worst_env": worst_env,
            "worst_env_mean": stats.as_dict(worst),
            "per_seed_worst": {  # each seed's own worst test environment, for per-seed comparisons
                str(s): {"env": compat[int(np.argmin(env_means[:, i]))], "mean": float(env_means[:, i].min())}
                for i, s in enumerate(seeds)
            },
            "cvar": {"alpha": CVAR_ALPHA, **cv.__dict__},
        }
        rows.append([m, str(len(seeds)), worst_env, worst.fmt(), cv.fmt()])
    md += [
        "### Worst case",
        "",
        _md_table(["method", "seeds", "worst environment", "its mean [CI]", f"CVaR{CVAR_ALPHA:.0%} +- SE [CI]"], rows),
        "",
    ]
    rows, prow = [], []
    data["improvement"], data["paired_improvement"] = [], []
    for m in methods:
        for ctrl in _controls(col, m):
            for scope in scopes:
                entry: dict[str, Any] = {"method": m, "control": ctrl, "test": scope}
                runs = _run_improvement(col, m, ctrl, key, envs_of[scope])
                if runs is None:
                    data["improvement"].append({**entry, "n_x": 0, "n_y": 0})
                    rows.append([m, ctrl, scope, "0", "0", "n/a"])
                else:
                    data["improvement"].append({**entry, **stats.as_dict(runs)})
                    rows.append(
                        [m, ctrl, scope, str(runs.n_x), str(runs.n_y), _point_cis(runs.p, runs.ci, None, ".3f")]
                    )
                imp = _improvement(col, m, ctrl, key, envs_of[scope])
                if imp is None:
                    data["paired_improvement"].append({**entry, "n_pairs": 0})
                    prow.append([m, ctrl, scope, "0", "n/a", "n/a"])
                    continue
                data["paired_improvement"].append({**entry, **stats.as_dict(imp)})
                prow.append(
                    [
                        m,
                        ctrl,
                        scope,
                        str(imp.n_pairs),
                        _point_cis(imp.p, imp.ci, imp.t_ci, ".3f"),
                        _point_cis(imp.mean_diff, imp.mean_diff_ci, imp.mean_diff_t_ci, "+.3f"),
                    ]
                )
    md += ["### Probability of improvement over matched controls: P(X > Y) over runs (rliable)", ""]
    md += (
        [_md_table(["method", "control", "test", "runs of X", "runs of Y", "P(X > Y) [CI]"], rows), ""]
        if rows
        else ["No method has a matched control with results.", ""]
    )
    md += ["### Seed-paired comparison with matched controls (episodes, paired by seed)", ""]
    md += (
        [
            _md_table(
                [
                    "method",
                    "control",
                    "test",
                    "paired seeds",
                    "paired P(improvement) [CI] t [CI]",
                    "paired mean diff [CI] t [CI]",
                ],
                prow,
            ),
            "",
        ]
        if prow
        else ["No method has a matched control with results.", ""]
    )
    profiles: dict[str, stats.Profile] = {}
    if scored:
        pooled = np.concatenate([a.ravel() for _, a in scored.values()])
        taus = np.linspace(pooled.min(), pooled.max(), PROFILE_TAUS)
        profiles = stats.performance_profile(
            {m: a for m, (_, a) in scored.items()}, taus, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED
        )
        data["profiles"] = {m: {**stats.as_dict(p), "seeds": scored[m][0]} for m, p in profiles.items()}
    return md, data, profiles


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
    atomic_write_bytes(path, png_bytes(fig))
    plt.close(fig)


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
        md += [_md_table(["method", *tests], rows), ""]
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
        lines, summary["stats"], profiles = _stats_section(col, main_key, main_label, compat)
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
    atomic_write_bytes(dest / "results.md", "\n".join(md).encode())
    atomic_write_bytes(dest / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    if col.results:
        plot_ood(col, metrics, dest / "ood.png")
        plot_curves(col, dest / "learning_curves.png")
        _rho_report(col, metrics[0][0], tests, dest, summary)
    if profiles:
        plot_profiles(col, main_label, profiles, dest / "profiles.png")
    summary["results_dir"] = str(dest)
    summary["complete"] = not problems
    return summary


def _rho_of(proto: Protocol) -> Any:
    """(set, algo) -> the protocol's rho, or None where it defines none."""
    return lambda set_name, algo: proto.rho.get(set_name, {}).get(algo)


def _controls(col: Collected, method: str) -> list[str]:
    """The matched controls of `method` that have results in `col` (closest first; none for a foreign label)."""
    try:
        algo, _, set_name, _ = parse_method(method)
    except ProtocolError:
        return []
    rho_default = None if set_name is None else _rho_of(col.proto)(set_name, algo)
    return [c for c in matched_controls(method, rho_default) if c in col.results and c != method]


def _paired_average_diffs(col: Collected, method: str, control: str, key: str) -> tuple[list[float], list[int]]:
    """Per paired seed: `method`'s average over the test environments minus `control`'s; and the seeds."""
    a, b = col.results.get(method, {}), col.results.get(control, {})
    diffs, common = [], []
    for s in sorted(set(a) & set(b)):
        ra, rb = _seed_average(a[s], key), _seed_average(b[s], key)
        if ra is not None and rb is not None:
            diffs.append(ra - rb)
            common.append(s)
    return diffs, common


def _compatible_tests(col: Collected, method: str) -> list[str]:
    """The protocol's test environments on which no run of `method` was incompatible."""
    return [
        t.name
        for t in col.proto.tests
        if not any("incompatible" in r["tests"].get(t.name, {}) for r in col.results.get(method, {}).values())
    ]


def _average_improvement(col: Collected, method: str, control: str, key: str) -> stats.Improvement | None:
    """P(improvement) of `method` over `control` on all compatible test environments, paired by seed (None without
    paired seeds)."""
    return _improvement(col, method, control, key, _compatible_tests(col, method))


def _run_improvement(
    col: Collected, method: str, control: str, key: str, tests: list[str]
) -> stats.RunImprovement | None:
    """rliable's P(X > Y) over runs of `method` over `control` on the test environments `tests` (the tasks); None
    when either has no run with the metric on all of them."""
    _, ax = episode_scores(col, method, key, tests)
    _, ay = episode_scores(col, control, key, tests)
    if ax is None or ay is None:
        return None
    return stats.probability_of_improvement_runs(
        stats.run_scores(ax), stats.run_scores(ay), BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED
    )


def _improvement(col: Collected, method: str, control: str, key: str, tests: list[str]) -> stats.Improvement | None:
    """P(improvement) of `method` over `control` on the test environments `tests`, paired by seed (None when no
    seed has both runs' metric on all of them)."""
    sx, ax = episode_scores(col, method, key, tests)
    sy, ay = episode_scores(col, control, key, tests)
    if ax is None or ay is None or not set(sx) & set(sy):
        return None
    x = {s: ax[:, i, :] for i, s in enumerate(sx)}
    y = {s: ay[:, i, :] for i, s in enumerate(sy)}
    return stats.probability_of_improvement(x, y, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)


def _seed_average(result: dict[str, Any], key: str) -> float | None:
    """One run's metric `key` averaged over its test environments' episode means (None if an environment lacks it)."""
    tests = [t for t in result["tests"].values() if "incompatible" not in t]
    if not tests or any(key not in t for t in tests):
        return None
    return float(np.mean([np.mean(t[key]) for t in tests]))


def _rho_selection(
    val: Collected, cols: list[Collected], key: str, min_seeds: int = MIN_SELECT_SEEDS
) -> tuple[list[str], dict[str, Any]]:
    """Overview lines and data: per rho curve, the rho with the highest validation score (the average over `val`'s
    test environments, mean over seeds; ties go to the smaller rho), and that run's scores on each day set, paired
    with its closest matched control there. Only radii with at least `min_seeds` validation seeds compete (listed
    as excluded otherwise), on the seeds they all share. A curve with fewer than two such radii is listed with
    ``chosen_rho`` None, never dropped."""
    data: dict[str, Any] = {"validation": val.proto.name, "min_seeds": min_seeds, "families": {}}
    rows = []
    for fam, all_pts in rho_families(list(val.results), _rho_of(val.proto)).items():
        pts = [(r, m) for r, m in all_pts if len(val.results.get(m, {})) >= min_seeds]
        excluded = {r: len(val.results.get(m, {})) for r, m in all_pts if (r, m) not in pts}
        cand = []
        if pts:
            # compared on the seeds every competing radius has, so that no radius wins by its seeds
            common = sorted(set.intersection(*(set(val.results.get(m, {})) for _, m in pts)))
            for rho, m in pts:
                per_seed = [_seed_average(val.results[m][s], key) for s in common]
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
            ctrl = next(iter(_controls(c, chosen)), None)
            diffs = _paired_average_diffs(c, chosen, ctrl, key)[0] if ctrl else []
            d, t_ci = (cell(diffs), stats.t_interval(diffs)) if diffs else (None, None)
            entry["tests"][c.proto.name] = {
                "score": cell(vals).__dict__ if vals else None,
                "control": ctrl,
                "versus_control": {**d.__dict__, "t_ci": t_ci} if d else None,
            }
            text = f"{cell(vals).fmt()} (n={len(vals)})" if vals else "missing"
            if d is not None:
                text += f"; vs {ctrl}: {d.fmt()} t {_ci_text(t_ci)}"
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
        lines += [_md_table(header, rows), ""]
    if not any(e["chosen_rho"] is not None for e in data["families"].values()):
        lines += [f"No rho curve has validation results at two or more radii with {min_seeds}+ seeds yet.", ""]
    return lines, data


def _rho_curve_points(col: Collected, test: str, key: str) -> dict[str, list[tuple[float, float, float]]]:
    """{family: [(rho, mean, se), ...]} on one test environment (or AVERAGE) for every family with 2+ rhos."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for fam, pts in rho_families(list(col.results), _rho_of(col.proto)).items():
        row = []
        for rho, m in pts:
            vals = seed_means(col, m, test, key)
            if vals:
                c = cell(vals)
                row.append((rho, c.mean, c.se if c.se is not None else 0.0))
        if len(row) >= 2:
            out[fam] = row
    return out


def _rho_report(col: Collected, key: str, tests: list[str], dest: Path, summary: dict[str, Any]) -> None:
    """``rho.png`` (score against rho per test environment) and ``summary["rho_curves"]`` when a family has 2+ rhos."""
    curves = {t: _rho_curve_points(col, t, key) for t in tests}
    fams = sorted({f for per in curves.values() for f in per})
    if not fams:
        return
    plot_rho_curves({f: {t: curves[t].get(f, []) for t in tests} for f in fams}, tests, key, dest / "rho.png")
    summary["rho_curves"] = {t: {f: [list(p) for p in pts] for f, pts in per.items()} for t, per in curves.items()}
    atomic_write_bytes(dest / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())


def _excludes_zero(ci: tuple[float, float] | None) -> bool:
    """Whether an interval exists and lies wholly above or wholly below 0."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def _versus(diffs: list[float]) -> tuple[Cell, tuple[float, float] | None, str]:
    """The paired differences' cell, their Student-t 95% interval, and a verdict that says plainly whether the
    bootstrap CI excludes 0 and whether the t interval (the small-sample check) agrees."""
    c, t_ci = cell(diffs), stats.t_interval(diffs)
    if c.ci is None or t_ci is None:
        return c, t_ci, "n/a (needs 2+ paired seeds)"
    if _excludes_zero(c.ci):
        word = "higher" if c.mean > 0 else "LOWER"
        if _excludes_zero(t_ci):
            return c, t_ci, f"robust {word} (both CIs exclude 0)"
        return c, t_ci, f"robust {word} by the bootstrap CI only (the t CI includes 0: too few seeds to tell)"
    return c, t_ci, "no clear difference (the bootstrap CI includes 0)"


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
        _md_table(header, rows),
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
            for base in _controls(c, m):
                diffs, common = _paired_average_diffs(c, m, base, key)
                if not diffs:
                    continue
                d, t_ci, verdict = _versus(diffs)
                entry = {**d.__dict__, "t_ci": t_ci, "verdict": verdict, "n_pairs": len(common)}
                poi = _average_improvement(c, m, base, key)
                poi_text = "n/a"
                if poi is not None:
                    entry["paired_improvement"] = stats.as_dict(poi)
                    poi_text = _point_cis(poi.p, poi.ci, poi.t_ci, ".2f")
                runs = _run_improvement(c, m, base, key, _compatible_tests(c, m))
                runs_text = "n/a"
                if runs is not None:
                    entry["improvement"] = stats.as_dict(runs)
                    runs_text = _point_cis(runs.p, runs.ci, None, ".2f")
                data.setdefault("versus_control", {}).setdefault(c.proto.name, {}).setdefault(m, {})[base] = entry
                if base.endswith("-none"):
                    data.setdefault("versus_none", {}).setdefault(c.proto.name, {})[m] = entry
                vrows.append(
                    [m, base, c.proto.name, str(len(common)), d.fmt(), _ci_text(t_ci), runs_text, poi_text, verdict]
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
        _md_table([*header, "verdict"], vrows),
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
    curves = {c.proto.name: _rho_curve_points(c, AVERAGE, key) for c in cols}
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
        lines, data["rho_selected"] = _rho_selection(val, cols, key, min_select_seeds)
        md += lines
    missing = list(dict.fromkeys((j.method, j.seed) for c in cols for j in c.missing + c.unfinished))
    if missing:
        per: dict[str, list[int]] = {}
        for m, seed in missing:
            per.setdefault(m, []).append(seed)
        md += ["## Not yet run", "", *[f"- {m}: seeds {', '.join(map(str, sorted(s)))}" for m, s in per.items()], ""]
    dest = Path(results_root) / f"{name}.md"
    atomic_write_bytes(dest, "\n".join(md).encode())
    atomic_write_bytes(dest.with_suffix(".json"), (json.dumps(data, indent=1) + "\n").encode())
    return dest


def report_parser(prog: str = "drigm report") -> argparse.ArgumentParser:
    """The argument parser of ``drigm report``."""
    p = argparse.ArgumentParser(prog=prog, description="Aggregate a protocol's sweep results over seeds.")
    p.add_argument(
        "protocol",
        help="a protocol name (experiments/protocols/NAME.yaml) or a path; several joined by commas are reported "
        "one by one (and together with --overview)",
    )
    p.add_argument("--scale", choices=SCALES, default=None, help="default: the only scale with results")
    p.add_argument("--preset", default=None, help="a named training preset of the protocol (default: its own)")
    p.add_argument("--out-root", type=Path, default=DEFAULT_OUT, help="the sweep's root (default experiments/runs)")
    p.add_argument("--results-root", type=Path, default=DEFAULT_RESULTS, help="default experiments/results")
    p.add_argument(
        "--overview",
        default=None,
        metavar="NAME",
        help="also write RESULTS_ROOT/NAME.md: the protocols side by side (they must share their runs)",
    )
    p.add_argument(
        "--select-on",
        default=None,
        metavar="PROTOCOL",
        help="with --overview: choose each rho curve's rho on this validation protocol (sharing the runs) and "
        "report the chosen runs' test scores",
    )
    p.add_argument(
        "--min-select-seeds",
        type=int,
        default=MIN_SELECT_SEEDS,
        metavar="N",
        help=f"with --select-on: a radius competes once it has N+ validation seeds (default {MIN_SELECT_SEEDS})",
    )
    p.add_argument(
        "--exclude-seeds",
        default=None,
        metavar="METHOD:SEED,...",
        help="leave these runs out of every figure (listed as excluded), e.g. qmix-groupdr:0 for a diverged seed; "
        "write to another --results-root so that the full report stays",
    )
    p.add_argument(
        "--overview-only",
        action="store_true",
        help="with --overview: write only the overview, not each protocol's report",
    )
    return p


def _check_excluded(names: list[str], args: argparse.Namespace, exclude: frozenset[tuple[str, int]]) -> None:
    """ConfigError naming every (method, seed) of `exclude` that no reported protocol requested (a typo would
    otherwise exclude nothing, silently)."""
    out_root = Path(args.out_root).resolve()
    found: set[tuple[str, int]] = set()
    for name in names + ([args.select_on] if args.select_on else []):
        scale = args.scale or detect_scale(name, out_root, args.preset)
        found |= {(j.method, j.seed) for j in requested_jobs(name, out_root, scale, args.preset)[1]}
    unmatched = sorted(exclude - found)
    if unmatched:
        items = ", ".join(f"{m}:{s}" for m, s in unmatched)
        raise ConfigError(f"--exclude-seeds {items}: no such run was requested by {', '.join(names)}")


def report_main(argv: list[str]) -> int:
    """``drigm report PROTOCOL``: 0 when the report is complete, 1 when runs are missing/failed, 2 on errors."""
    args = report_parser().parse_args(argv)
    names = [n.strip() for n in args.protocol.split(",") if n.strip()]
    complete = True
    try:
        if args.overview_only and not args.overview:
            raise ConfigError("--overview-only needs --overview NAME")
        if args.select_on is not None and not args.overview:
            raise ConfigError(
                f"--select-on {args.select_on!r} chooses rho inside an overview: it needs --overview NAME"
            )
        if args.overview is not None and (
            not args.overview or args.overview in (".", "..") or any(c in args.overview for c in "/\\\0")
        ):
            raise ConfigError(
                f"--overview {args.overview!r} must be a plain file name (no '/', '..'): the overview is written "
                "inside --results-root"
            )
        if args.exclude_seeds is not None and not args.exclude_seeds.strip(" ,"):
            raise ConfigError(f"--exclude-seeds {args.exclude_seeds!r}: no runs given (METHOD:SEED, ...)")
        exclude = parse_exclude_seeds(args.exclude_seeds)
        if exclude:
            _check_excluded(names, args, exclude)
        for name in [] if args.overview_only else names:
            s = report(name, args.out_root, args.results_root, args.scale, args.preset, exclude)
            print((Path(s["results_dir"]) / "results.md").read_text())
            if not s["complete"]:
                complete = False
                print(
                    f"drigm report: {name}: {len(s['missing'])} run(s) missing, {len(s['failed'])} failed",
                    file=sys.stderr,
                )
        if args.overview:
            scale = args.scale or detect_scale(names[0], Path(args.out_root).resolve(), args.preset)
            path = overview(
                names, args.out_root, args.results_root, args.overview, scale, args.preset,
                select_on=args.select_on, min_select_seeds=args.min_select_seeds, exclude=exclude,
            )  # fmt: skip
            print(path.read_text())
    except ConfigError as exc:
        print(f"drigm report: error: {exc}", file=sys.stderr)
        return 2
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(report_main(sys.argv[1:]))
