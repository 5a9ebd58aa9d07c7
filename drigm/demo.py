"""``drigm demo`` (what ``make demo`` runs): the toolkit's promise in four parts, each printed under a header.

1. ``solver``: the exact solver on ``tabular:robust_vs_nominal``, a game whose nominal greedy policy is not
   robust-optimal (:func:`solver_demo`; deterministic).
2. ``tabular``: non-robust and robust QMIX trained on that game, the solver certifying the robust one
   (:func:`drigm.run.demo`; the demo fails when the certification does).
3. ``answer``: the building answer rebuilt from the committed results, in the paper's units, with its CIs
   (:func:`drigm.building_answer.render_readme`; deterministic, the README's table).
4. ``building``: a short building run that shows progress (:func:`building_demo`).

The building run: both runs use the building-seasonal protocol's reduced-scale settings
(experiments/protocols/_building.yaml) with a shorter budget: they train on Tucson (Hot_Dry) days 0..199 and are
evaluated greedily on held-out days 200..364 in Tucson (seasonal shift) and in Honolulu (climate + season shift),
every method on the same days.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from drigm.building_answer import RESULTS, Results, render_readme
from drigm.checkpoint import atomic_write_bytes
from drigm.evaluation import evaluate_on
from drigm.protocol import Job, TestEnv, load_protocol, test_episode_seeds

DEMO_TESTS = (
    ("Tucson (train climate, days 200-364)", "building:Tucson"),
    ("Honolulu (days 200-364)", "building:Honolulu"),
)
DEMO_METHODS = (
    ("non-robust QMIX", Job("qmix", "none", None, None, 0)),
    ("robust QMIX (exact TV, rho=0.2)", Job("qmix", "exact", "tv", 0.2, 0)),
)


@dataclass
class DemoRow:
    """One method's per-test-environment normalised scores (per test episode) and their mean and standard error."""

    method: str
    run_dir: str
    scores: dict[str, list[float]]

    def mean_se(self, test: str) -> tuple[float, float]:
        """Mean and standard error over the test episodes (days) of one test environment."""
        x = np.asarray(self.scores[test], dtype=np.float64)
        return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


@dataclass
class DemoResult:
    """The demo's outcome: one row per method, the markdown table, the plot's path and the wall time."""

    rows: list[DemoRow]
    tests: list[str]
    table: str
    plot: Path
    seconds: float
    episodes: int


def _table(rows: list[DemoRow], tests: list[str]) -> str:
    lines = ["| method | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]
    for r in rows:
        cells = [f"{m:.3f} +- {se:.3f}" for m, se in (r.mean_se(t) for t in tests)]
        lines.append(f"| {r.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SCORE_AXIS = "score (R + 9000) / 9000, R = the 6 agents' rewards summed (the paper's units)"
"""The y axis of the demo plot: the building protocols' score, in the seed paper's units."""


def _plot(rows: list[DemoRow], tests: list[str], path: Path, episodes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        stats = [r.mean_se(t) for t in tests]
        x = np.arange(len(tests)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, [s[0] for s in stats], width, yerr=[s[1] for s in stats], capsize=3, label=r.method)
    ax.set_xticks(np.arange(len(tests)))
    ax.set_xticklabels(tests, fontsize=8)
    ax.set_ylabel(SCORE_AXIS)
    ax.set_title(f"QMIX on building after {episodes} training days (error bars: SE over test days)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def building_demo(
    out: Path = Path("runs/demo-building"),
    seed: int = 0,
    episodes: int = 16,
    test_episodes: int = 4,
    progress: bool = True,
) -> DemoResult:
    """Train non-robust and exact-TV QMIX on building for `episodes` days each, test both under shift, print a table.

    Deterministic for a seed on CPU. Writes the runs and ``demo.png`` under `out` (previous demo runs there are
    replaced) and returns the scores; nothing is asserted about which method wins at this tiny budget.
    """
    from drigm.envs.building import NATIVE_LEVELS
    from drigm.run import Trainer, load_run

    if episodes < 2 or test_episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 2 and test_episodes={test_episodes} >= 1")
    start = time.perf_counter()
    proto = load_protocol("building-seasonal", "reduced", preset="drigm")
    assert proto.score is not None
    steps = episodes * 288
    seeds = test_episode_seeds(proto.eval_seed, test_episodes)
    train_kwargs = dict(proto.run["env"].get("kwargs", {}))  # the action levels etc. of the training env
    tests = [
        TestEnv(label, {"name": name, "episode_limit": None, "kwargs": {**train_kwargs, "days": "200:365"}})
        for label, name in DEMO_TESTS
    ]
    levels = proto.run["env"].get("kwargs", {}).get("n_levels", NATIVE_LEVELS)
    print(
        f"drigm building demo: QMIX on SustainGym building (6 zones x {levels} power levels, one day = 288 steps), "
        f"trained {episodes} days in Tucson, tested on {test_episodes} held-out days per climate.",
        flush=True,
    )
    rows: list[DemoRow] = []
    for label, job in DEMO_METHODS:
        job = replace(job, seed=seed)
        cfg = proto.job_config(job)
        run_dir = Path(out) / job.method
        cfg = replace(
            cfg,
            steps=steps,
            out=str(run_dir),
            progress=progress,
            learner=replace(cfg.learner, batch_size=4, buffer_size=episodes),
            explore=replace(cfg.explore, eps_anneal_steps=steps * 2 // 3),
            log_interval=288,
            checkpoint_interval=steps,
        )
        cfg.validate()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"\n[{label}] training {steps} steps -> {run_dir}", flush=True)
        Trainer(cfg, run_dir).train()
        trainer, _ = load_run(run_dir, device="cpu")
        scores = {t.name: evaluate_on(trainer, t, seeds, proto.score)["score"] for t in tests}
        rows.append(DemoRow(label, str(run_dir), scores))
    names = [t.name for t in tests]
    table = _table(rows, names)
    plot = Path(out) / "demo.png"
    _plot(rows, names, plot, episodes)
    seconds = time.perf_counter() - start
    print(f"\n{proto.score.label}, mean +- SE over {test_episodes} test days:\n\n{table}")
    print(f"\nplot: {plot} ({seconds:.0f} s in total)")
    return DemoResult(rows, names, table, plot, seconds, episodes)


def demo_summary(result: DemoResult) -> dict[str, Any]:
    """The demo's result as plain data (method -> test -> mean, se)."""
    return {
        r.method: {t: dict(zip(("mean", "se"), r.mean_se(t), strict=True)) for t in result.tests} for r in result.rows
    }


PARTS = ("solver", "tabular", "answer", "building")
"""The demo's parts, in the order ``drigm demo`` runs them."""
PART_TITLES = {
    "solver": "the exact solver: the nominal greedy policy is not robust-optimal",
    "tabular": "robust QMIX learns the robust-optimal policy, and the solver certifies it",
    "answer": "the building answer, rebuilt from the committed results",
    "building": "a short building run",
}


@dataclass
class SolverRow:
    """One policy of the solver demo: its joint action in s0 and its exact values in s0."""

    policy: str
    action_s0: tuple[int, ...]
    nominal_value: float
    robust_value: float
    robust_optimal: bool


def solver_demo(rho: float = 0.2) -> tuple[list[SolverRow], float, str]:
    """The exact solver on robust_vs_nominal under TV(`rho`): the nominal and robust greedy policies, their values.

    Returns the rows, V*_rob(s0) and the printed table. Uses reference/ only (robust and nominal value iteration,
    robust policy evaluation); a policy counts as robust-optimal within 1% of V*_rob in every state, as in
    ``drigm evaluate``.
    """
    from reference.bellman import evaluate_under_kernel, nominal_value_iteration, policy_evaluation, value_iteration
    from reference.game import robust_vs_nominal_game
    from reference.sets import make_set

    game = robust_vs_nominal_game()
    uset = make_set("tv", rho)
    robust = value_iteration(game, uset)
    v_star = robust.V
    tol = 0.01 * max(1.0, float(np.max(np.abs(v_star))))
    rows = []
    for label, solved in (("nominal greedy (V*_nom)", nominal_value_iteration(game)), ("robust greedy", robust)):
        policy = np.asarray(solved.greedy, dtype=np.int64)
        v_rob = policy_evaluation(game, uset, policy).V
        v_nom = evaluate_under_kernel(game, policy)
        rows.append(
            SolverRow(
                label,
                tuple(int(a) for a in policy[0]),
                float(v_nom[0]),
                float(v_rob[0]),
                bool(np.all(v_rob >= v_star - tol)),
            )
        )
    header = f"{'policy':26s} {'a(s0)':6s} {'V^pi_nom(s0)':>12s} {'V^pi_rob(s0)':>12s}  robust-optimal"
    lines = [
        f"robust_vs_nominal (2 agents x 2 actions, 4 states, gamma {game.gamma}) under {uset}: exact values in s0",
        header,
        "-" * len(header),
    ]
    for r in rows:
        a0 = "(" + ",".join(map(str, r.action_s0)) + ")"
        lines.append(
            f"{r.policy:26s} {a0:6s} {r.nominal_value:12.3f} {r.robust_value:12.3f}  "
            f"{'yes' if r.robust_optimal else 'no'}"
        )
    bound = robust.error_bound
    where = "< 1e-9" if bound < 1e-9 else f"{bound:.1e}"
    lines.append(f"V*_rob(s0) = {float(v_star[0]):.3f} (robust value iteration, certified error bound {where})")
    return rows, float(v_star[0]), "\n".join(lines)


def answer_demo(results: Path = RESULTS) -> str:
    """The README's building table, rebuilt from the committed results under `results`."""
    return render_readme(Results.load(results))


def run_demo(
    parts: tuple[str, ...] = PARTS,
    out: Path = Path("runs/demo"),
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Run the chosen parts of the demo in order, each under a header; 1 when the tabular certification fails."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown demo part(s) {unknown}; known: {', '.join(PARTS)}")
    start = time.perf_counter()
    status = 0
    chosen = [p for p in PARTS if p in parts]  # in the demo's order, each once
    for i, part in enumerate(chosen):
        print(f"\n{'=' * 100}\n[{i + 1}/{len(chosen)}] {part}: {PART_TITLES[part]}\n{'=' * 100}", flush=True)
        if part == "solver":
            print(solver_demo()[2], flush=True)
        elif part == "tabular":
            from drigm.run import demo

            if not demo(Path(out) / "tabular", seed=seed, progress=progress):
                status = 1
        elif part == "answer":
            print(answer_demo(), flush=True)
        else:
            building_demo(Path(out) / "building", seed=seed, progress=progress)
    print(f"\ndrigm demo: {time.perf_counter() - start:.0f} s; {'FAILED' if status else 'done'}", flush=True)
    return status
