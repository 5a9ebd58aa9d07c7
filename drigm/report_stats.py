"""The robust statistics section of a protocol's results.md (computed by :mod:`drigm.stats`): IQM and mean of run
scores with stratified bootstrap CIs, the worst case, P(X > Y) over matched controls (over runs, and paired by
seed) and the performance profiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drigm import stats
from drigm.collect import AVERAGE, Collected, episode_scores
from drigm.comparisons import controls, improvement, run_improvement
from drigm.markdown import md_table, point_cis
from drigm.stats import cell

CVAR_ALPHA = 0.1


PROFILE_TAUS = 101


def stats_section(
    col: Collected, key: str, label: str, compat: list[str]
) -> tuple[list[str], dict[str, Any], dict[str, stats.Profile]]:
    """results.md lines, summary data and performance profiles of the main metric (:mod:`drigm.stats`): IQM and
    mean with stratified bootstrap CIs, worst-case columns, P(improvement) over matched controls."""
    scopes = compat + ([AVERAGE] if len(compat) > 1 else [])
    envs_of = {**{t: [t] for t in compat}, AVERAGE: compat}
    methods = [m for m in col.methods() if m in col.results]
    boot = {"resamples": stats.DEFAULT_REPS, "seed": stats.DEFAULT_SEED, "level": stats.CI_LEVEL}
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
        f"- **CIs** of IQM and mean: 95% percentile intervals of rliable's stratified bootstrap ({stats.DEFAULT_REPS} "
        f"resamples, seed {stats.DEFAULT_SEED}): in each test environment the runs are resampled with replacement, "
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
                e = stats.interval_estimate(stats.run_scores(a), agg, stats.DEFAULT_REPS, stats.DEFAULT_SEED)
                entry = {**stats.as_dict(e), "seeds": seeds, "episodes": int(a.shape[2])}
                data.setdefault(agg, {}).setdefault(m, {})[scope] = entry
                row.append(f"{e.fmt()} (n={len(seeds)})")
            rows.append(row)
        md += [
            f"### {title} of run scores [95% stratified bootstrap CI over runs] (n = seeds)",
            "",
            md_table(["method", *scopes], rows),
            "",
        ]
    rows = []
    for m, (seeds, a) in scored.items():
        worst = stats.worst_mean(a, stats.DEFAULT_REPS, stats.DEFAULT_SEED)
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
        md_table(["method", "seeds", "worst environment", "its mean [CI]", f"CVaR{CVAR_ALPHA:.0%} +- SE [CI]"], rows),
        "",
    ]
    rows, prow = [], []
    data["improvement"], data["paired_improvement"] = [], []
    for m in methods:
        for ctrl in controls(col, m):
            for scope in scopes:
                entry: dict[str, Any] = {"method": m, "control": ctrl, "test": scope}
                runs = run_improvement(col, m, ctrl, key, envs_of[scope])
                if runs is None:
                    data["improvement"].append({**entry, "n_x": 0, "n_y": 0})
                    rows.append([m, ctrl, scope, "0", "0", "n/a"])
                else:
                    data["improvement"].append({**entry, **stats.as_dict(runs)})
                    rows.append([m, ctrl, scope, str(runs.n_x), str(runs.n_y), point_cis(runs.p, runs.ci, None, ".3f")])
                imp = improvement(col, m, ctrl, key, envs_of[scope])
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
                        point_cis(imp.p, imp.ci, imp.t_ci, ".3f"),
                        point_cis(imp.mean_diff, imp.mean_diff_ci, imp.mean_diff_t_ci, "+.3f"),
                    ]
                )
    md += ["### Probability of improvement over matched controls: P(X > Y) over runs (rliable)", ""]
    md += (
        [md_table(["method", "control", "test", "runs of X", "runs of Y", "P(X > Y) [CI]"], rows), ""]
        if rows
        else ["No method has a matched control with results.", ""]
    )
    md += ["### Seed-paired comparison with matched controls (episodes, paired by seed)", ""]
    md += (
        [
            md_table(
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
            {m: a for m, (_, a) in scored.items()}, taus, stats.DEFAULT_REPS, stats.DEFAULT_SEED
        )
        data["profiles"] = {m: {**stats.as_dict(p), "seeds": scored[m][0]} for m, p in profiles.items()}
    return md, data, profiles
